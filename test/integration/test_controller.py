"""The cluster controller (`knflow controller`) against a real kube-apiserver with the garbage
collector (test/kubeenv): Workflows applied with kubectl become Knative Services, Sequences,
Parallels and Triggers with labels and ownerReferences, exactly what `knflow render` prints; a spec
change updates them, a removed function's Service is pruned; children patched Ready make the
Workflow Ready with its address; invalid or cluster-incompatible specs get Valid=False and nothing
applied; deleting the Workflow lets the garbage collector delete the children; a no-op window
makes zero writes; a concurrent writer's change is undone; a 409 on the status write is retried.
Leader election and apiserver restarts are in test_controller_leader.py."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
from pathlib import Path

SOURCE_DIR = Path(os.environ.get("KNFLOW_SOURCE_DIR", Path(__file__).resolve().parents[2]))
BIN = os.environ.get("KNFLOW_BIN", str(SOURCE_DIR / "build" / "dev" / "knflow"))
sys.path.insert(0, str(SOURCE_DIR / "test" / "kubeenv"))
from kubeenv import KubeEnv  # noqa: E402

# (apiVersion path, plural) of every kind the controller owns.
KINDS = {
    "Service": ("serving.knative.dev/v1", "services"),
    "Sequence": ("flows.knative.dev/v1", "sequences"),
    "Parallel": ("flows.knative.dev/v1", "parallels"),
    "Trigger": ("eventing.knative.dev/v1", "triggers"),
}
WORKFLOWS = "/apis/knflow.dev/v1alpha1"


class NotYet(Exception):
    """The apiserver cannot answer that yet (e.g. just restarted, a CRD not served again)."""


def wait_for(what, fn, timeout=30.0, interval=0.2):
    """Calls fn until it returns something true; returns it, or fails after `timeout` seconds
    with the last value seen. NotYet, and a TypeError or KeyError from reading an object that is
    not there yet, count as a false value."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = fn()
        except (NotYet, TypeError, KeyError) as e:  # an object or field not there (yet)
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


class Controller:
    """One `knflow controller` process, its log in a temporary file, its /metrics and /healthz."""

    def __init__(self, kube: KubeEnv, *args: str, namespace: str | None = None,
                 lease: str | None = "knflow-controller", identity: str | None = None,
                 resync: float = 600, env: dict[str, str] | None = None):
        self.kube = kube
        self.log_file = tempfile.NamedTemporaryFile(prefix="knflow-controller-", suffix=".log",
                                                    delete=False)
        cmd = [BIN, "controller", "--kubeconfig", kube.kubeconfig, "--metrics-listen",
               "127.0.0.1:0", "--resync", str(resync)]
        if lease is not None:  # None: the default name
            cmd += ["--lease-name", lease]
        if namespace:
            cmd += ["--namespace", namespace]
        if identity:
            cmd += ["--identity", identity]
        cmd += list(args)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, env=dict(os.environ, **(env or {})))
        m = wait_for("the controller's metrics address",
                     lambda: re.search(r"metrics=127\.0\.0\.1:(\d+)", self.log()) or self._check(),
                     timeout=30)
        self.port = int(m.group(1))

    def _check(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"knflow controller exited with {self.proc.returncode}:\n{self.log()}")
        return None

    def log(self) -> str:
        return Path(self.log_file.name).read_text(errors="replace")

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
            return r.read().decode()

    def health(self) -> dict:
        return json.loads(self.get("/healthz"))

    def metrics(self) -> dict[str, float]:
        """Every sample as {'name{labels}': value}."""
        out = {}
        for line in self.get("/metrics").splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def writes(self) -> float:
        """Every write this process sent (apply, prune, status; any result)."""
        return sum(v for k, v in self.metrics().items()
                   if k.startswith("knflow_controller_writes_total"))

    def wait_leading(self, timeout=40.0):
        wait_for("leadership and synced caches",
                 lambda: self._check() or (lambda h: h["leader"] and h["synced"])(self.health()),
                 timeout=timeout)

    def stop(self, sig=signal.SIGTERM, timeout=30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"knflow controller did not stop in {timeout} s:\n{self.log()}")
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        self.kill()
        self.log_file.close()
        os.unlink(self.log_file.name)


class ClusterTestCase(unittest.TestCase):
    """One control plane (with the garbage collector) for the whole class; each test uses its own
    namespace and controller."""

    kube: KubeEnv
    controller_manager = True

    @classmethod
    def setUpClass(cls):
        cls.kube = KubeEnv(controller_manager=cls.controller_manager).start()

    @classmethod
    def tearDownClass(cls):
        cls.kube.stop()

    def setUp(self):
        self.controllers: list[Controller] = []

    def tearDown(self):
        failed = not getattr(self._outcome, "success", True)
        for c in self.controllers:
            c.kill()
            if failed:
                print(f"----- controller log ({c.proc.args[-1]}):\n{c.log()[-6000:]}", file=sys.stderr)
            c.close()

    # ---- helpers

    def start_controller(self, *args, **kwargs) -> Controller:
        c = Controller(self.kube, *args, **kwargs)
        self.controllers.append(c)
        return c

    def namespace(self, name: str) -> str:
        self.kube.kubectl("create", "namespace", name)
        return name

    def api(self, method, path, body=None, content_type="application/json"):
        return self.kube.request(method, path, body, content_type=content_type)

    def get(self, path):
        status, body = self.api("GET", path)
        return body if status == 200 else None

    def workflow(self, ns, name):
        return self.get(f"{WORKFLOWS}/namespaces/{ns}/workflows/{name}")

    def child(self, kind, ns, name):
        group_version, plural = KINDS[kind]
        return self.get(f"/apis/{group_version}/namespaces/{ns}/{plural}/{name}")

    def children(self, ns) -> dict[tuple[str, str], dict]:
        """Every owned object in the namespace, by (kind, name)."""
        out = {}
        for kind, (group_version, plural) in KINDS.items():
            path = (f"/apis/{group_version}/namespaces/{ns}/{plural}"
                    "?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dknflow")
            status, body = self.api("GET", path)
            if status != 200:
                raise NotYet(f"GET {path}: {status} {body}")
            for item in body["items"]:
                out[(kind, item["metadata"]["name"])] = item
        return out

    def apply(self, ns, doc: dict):
        """kubectl apply --server-side of a Workflow (as a person would, with their own manager)."""
        self.kube.kubectl("apply", "--server-side", "--field-manager", "tester", "-n", ns,
                          "-f", "-", input=json.dumps(doc))

    def condition(self, ns, name, type_="Ready"):
        wf = self.workflow(ns, name)
        for c in ((wf or {}).get("status") or {}).get("conditions", []):
            if c["type"] == type_:
                return c
        return None

    def wait_condition(self, ns, name, status, reason=None, type_="Ready", generation=None,
                       timeout=30.0):
        def check():
            wf = self.workflow(ns, name)
            if not wf:
                return None
            st = wf.get("status") or {}
            gen = generation if generation is not None else wf["metadata"]["generation"]
            if st.get("observedGeneration") != gen:
                return None
            for c in st.get("conditions", []):
                if c["type"] == type_ and c["status"] == status and (
                        reason is None or c.get("reason") == reason):
                    return wf
            return None
        return wait_for(f"{ns}/{name} {type_}={status} {reason or ''}", check, timeout=timeout)

    def make_ready(self, kind, ns, name, extra=None):
        """Plays the Knative controller: Ready=True for the current generation."""
        obj = self.child(kind, ns, name)
        status = {"observedGeneration": obj["metadata"]["generation"],
                  "conditions": [{"type": "Ready", "status": "True"}]}
        status.update(extra or {})
        group_version, plural = KINDS[kind]
        code, body = self.api("PATCH", f"/apis/{group_version}/namespaces/{ns}/{plural}/{name}/status",
                              {"status": status}, content_type="application/merge-patch+json")
        self.assertEqual(code, 200, body)


def render(path: Path, ns: str, *args: str) -> str:
    """What `knflow render -f path -n ns [args]` prints (a YAML stream)."""
    r = subprocess.run([BIN, "render", "-f", str(path), "-n", ns, *args], capture_output=True,
                       text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"knflow render {path} failed: {r.stderr}")
    return r.stdout


def load_yaml_docs(kube: KubeEnv, text: str) -> list[dict]:
    """YAML → JSON through kubectl (the standard library has no YAML parser)."""
    out = kube.kubectl("create", "--dry-run=client", "-o", "json", "-f", "-", input=text).stdout
    docs, decoder, at = [], json.JSONDecoder(), 0
    while True:  # one JSON document per object, one after the other
        while at < len(out) and out[at].isspace():
            at += 1
        if at == len(out):
            break
        doc, at = decoder.raw_decode(out, at)
        docs += doc["items"] if doc.get("kind") == "List" else [doc]
    return docs


def subset(desired, observed) -> bool:
    if isinstance(desired, dict):
        return isinstance(observed, dict) and all(
            k in observed and subset(v, observed[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(observed, list) and len(desired) == len(observed) and all(
            subset(a, b) for a, b in zip(desired, observed))
    return desired == observed


MEDIA = SOURCE_DIR / "examples" / "cluster-sequence.yaml"


class ControllerTest(ClusterTestCase):
    def test_lifecycle_apply_change_prune_ready_delete(self):
        ns = self.namespace("media")  # the example's own namespace
        c = self.start_controller(namespace=ns, lease="lifecycle")
        c.wait_leading()
        docs = load_yaml_docs(self.kube, MEDIA.read_text())
        self.assertEqual(len(docs), 1)
        wf_doc = docs[0]
        self.apply(ns, wf_doc)
        wf = self.wait_condition(ns, "media-ingest", "Unknown", "Pending")
        uid = wf["metadata"]["uid"]

        # The children are exactly what `knflow render` prints, with labels and an ownerReference.
        expected = {(o["kind"], o["metadata"]["name"]): o
                    for o in load_yaml_docs(self.kube, render(MEDIA, ns))}
        got = wait_for("every rendered object",
                       lambda: (lambda ch: ch if set(ch) == set(expected) else None)(self.children(ns)))
        self.assertEqual(len(got), 7)
        for key, obj in got.items():
            labels = obj["metadata"]["labels"]
            self.assertEqual(labels["app.kubernetes.io/managed-by"], "knflow", key)
            self.assertEqual(labels["knflow.dev/workflow"], "media-ingest", key)
            refs = obj["metadata"]["ownerReferences"]
            self.assertEqual(len(refs), 1, key)
            self.assertEqual(refs[0]["uid"], uid, key)
            self.assertEqual(refs[0]["kind"], "Workflow")
            self.assertTrue(refs[0]["controller"])
            self.assertTrue(subset(expected[key]["spec"], obj["spec"]), key)
        status = self.workflow(ns, "media-ingest")["status"]
        self.assertEqual({c["type"]: c["status"] for c in status["conditions"]},
                         {"Valid": "True", "KnativeReady": "Unknown", "Ready": "Unknown"})

        # Play Knative: every child Ready for its generation → the Workflow is Ready, with the
        # Sequence's address and each Service's url.
        for kind, name in got:
            extra = {}
            if kind == "Service":
                extra = {"url": f"http://{name}.{ns}.example"}
            if (kind, name) == ("Sequence", "media-ingest"):
                extra = {"address": {"url": "http://media-ingest-kn-sequence-0-kn-channel.media"}}
            self.make_ready(kind, ns, name, extra)
        wf = self.wait_condition(ns, "media-ingest", "True", "Ready")
        self.assertEqual(wf["status"]["address"]["url"],
                         "http://media-ingest-kn-sequence-0-kn-channel.media")
        functions = {f["name"]: f for f in wf["status"]["functions"]}
        self.assertEqual(functions["resize"],
                         {"name": "resize", "url": "http://media-ingest-resize.media.example",
                          "ready": True})
        self.assertEqual(functions["audit"]["url"], "http://audit.platform.svc.cluster.local")
        valid_since = self.condition(ns, "media-ingest", "Valid")["lastTransitionTime"]

        # A readiness rule check: a child whose Ready=True is about an older generation does not
        # count. Change the resize image: the Service gets generation 2, the Workflow generation 2.
        changed = copy.deepcopy(wf_doc)
        changed["spec"]["functions"]["resize"]["image"] = "registry.example.com/resize:2"
        self.apply(ns, changed)
        self.wait_condition(ns, "media-ingest", "Unknown", "Pending", generation=2)
        svc = wait_for("the updated Service", lambda: (lambda s: s if s["spec"]["template"]["spec"][
            "containers"][0]["image"] == "registry.example.com/resize:2" else None)(
            self.child("Service", ns, "media-ingest-resize")))
        self.assertEqual(svc["metadata"]["generation"], 2)
        msg = self.condition(ns, "media-ingest")["message"]
        self.assertIn("Service media-ingest-resize: NotObserved: generation 2", msg)
        self.make_ready("Service", ns, "media-ingest-resize", {"url": "http://r2"})
        wf = self.wait_condition(ns, "media-ingest", "True", "Ready", generation=2)
        valid = self.condition(ns, "media-ingest", "Valid")
        self.assertEqual(valid["observedGeneration"], 2)
        self.assertEqual(valid["lastTransitionTime"], valid_since)  # Valid stayed True

        # Remove the tag branch and its function: the tagger Service is pruned.
        pruned = copy.deepcopy(changed)
        del pruned["spec"]["functions"]["tagger"]
        fork = pruned["spec"]["do"][1]["fork"]
        fork["branches"] = [b for b in fork["branches"] if b["name"] != "tag"]
        self.apply(ns, pruned)
        wait_for("the tagger Service pruned",
                 lambda: ("Service", "media-ingest-tagger") not in self.children(ns))
        self.assertIn("Pruned", c.log())
        self.assertEqual(len(self.children(ns)), 6)
        par = self.child("Parallel", ns, "media-ingest-fan-out")
        self.assertEqual(len(par["spec"]["branches"]), 1)

        # Delete the Workflow: the garbage collector deletes every child (ownerReferences).
        self.kube.kubectl("delete", "workflow", "media-ingest", "-n", ns, "--wait=false")
        wait_for("the garbage collector to delete the children", lambda: not self.children(ns),
                 timeout=90, interval=0.5)

    def test_examples_and_cluster_incompatible_ones(self):
        ns = self.namespace("examples")
        c = self.start_controller(namespace=ns, lease="examples")
        c.wait_leading()
        capable, incapable = [], []
        files = sorted((SOURCE_DIR / "examples").glob("*.yaml")) + sorted(
            (SOURCE_DIR / "test" / "render" / "inputs").glob("*.yaml"))
        for path in files:
            for doc in load_yaml_docs(self.kube, path.read_text()):
                doc["metadata"]["namespace"] = ns
                r = subprocess.run([BIN, "render", "-f", "-", "-n", ns], input=json.dumps(doc),
                                   capture_output=True, text=True, timeout=60)
                (capable if r.returncode == 0 else incapable).append((path.name, doc, r.stdout))
                self.apply(ns, doc)
        self.assertGreaterEqual(len(capable), 3)  # hello, cluster-sequence, the render inputs
        self.assertGreaterEqual(len(incapable), 2)  # order-pipeline, loops, try-catch
        expected = set()
        for _, doc, text in capable:
            expected |= {(o["kind"], o["metadata"]["name"]) for o in load_yaml_docs(self.kube, text)}
        wait_for("every capable example's objects",
                 lambda: set(self.children(ns)) == expected, timeout=60)
        for name, doc, _ in capable:
            self.wait_condition(ns, doc["metadata"]["name"], "Unknown", "Pending")
        for name, doc, _ in incapable:
            self.wait_condition(ns, doc["metadata"]["name"], "False", "NotSupportedInCluster",
                                type_="Valid")
            ready = self.condition(ns, doc["metadata"]["name"])
            self.assertEqual((ready["status"], ready["reason"]), ("False", "NotSupportedInCluster"))
            self.assertRegex(self.condition(ns, doc["metadata"]["name"], "Valid")["message"],
                             r"^\d+ errors?: /spec/", name)
        # Nothing of the incapable ones was created.
        owners = {o["metadata"]["labels"]["knflow.dev/workflow"] for o in self.children(ns).values()}
        self.assertFalse(owners & {d["metadata"]["name"] for _, d, _ in incapable})

    def test_a_workflow_neither_mode_runs_says_the_clusters_reasons(self):
        """Image functions (no standalone mode) and a switch (no cluster mode yet): it was
        InvalidSpec, its message starting with the standalone reasons ("has neither url nor
        local"), which mean nothing to a cluster user."""
        ns = self.namespace("neither")
        c = self.start_controller(namespace=ns, lease="neither")
        c.wait_leading()
        self.apply(ns, {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                        "metadata": {"name": "branchy"},
                        "spec": {"functions": {"f": {"image": "registry.example.com/f:1"}},
                                 "do": [{"name": "pick", "switch": [
                                            {"when": "${ .big }", "then": "end"},
                                            {"then": "continue"}]},
                                        {"name": "a", "call": "f"}]}})
        self.wait_condition(ns, "branchy", "False", "NotSupportedInCluster", type_="Valid")
        message = self.condition(ns, "branchy", "Valid")["message"]
        self.assertTrue(message.startswith("1 error: /spec/do/0/switch: step \"pick\": switch "), message)
        self.assertNotIn("neither url nor local", message)

    def test_channel_kind_and_a_lease_of_its_own_namespace(self):
        """`knflow render --channel-kind` picked a production channel, but the controller had no
        such option: it applied InMemoryChannel, and took back a render applied by hand. And
        controllers of different namespaces shared the default Lease: one led, and the other's
        Workflows were never reconciled."""
        ns = self.namespace("kafka")
        channel = ("--channel-kind", "KafkaChannel",
                   "--channel-api-version", "messaging.knative.dev/v1beta1")
        c = self.start_controller(*channel, namespace=ns, lease=None)
        c.wait_leading()
        lease = self.get(f"/apis/coordination.k8s.io/v1/namespaces/default/leases/"
                         f"knflow-controller-{ns}")
        self.assertIsNotNone(lease)
        doc = load_yaml_docs(self.kube, MEDIA.read_text())[0]
        doc["metadata"].pop("namespace", None)  # the example's own is media
        self.apply(ns, doc)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "kafka.json"
            path.write_text(json.dumps(doc))
            expected = {(o["kind"], o["metadata"]["name"]): o
                        for o in load_yaml_docs(self.kube, render(path, ns, *channel))}
        got = wait_for("every rendered object",
                       lambda: (lambda ch: ch if set(ch) == set(expected) else None)(
                           self.children(ns)))
        templates = [o["spec"]["channelTemplate"] for (kind, _), o in got.items()
                     if kind in ("Sequence", "Parallel")]
        self.assertTrue(templates)
        for template in templates:
            self.assertEqual(template, {"apiVersion": "messaging.knative.dev/v1beta1",
                                        "kind": "KafkaChannel"})
        for key, o in expected.items():
            if key[0] in ("Sequence", "Parallel"):
                self.assertEqual(got[key]["spec"]["channelTemplate"], o["spec"]["channelTemplate"])

    def test_an_object_too_large_for_the_cluster_fails_the_apply_and_says_so(self):
        """etcd refuses an object over its request limit (500 "etcdserver: request is too
        large"): the controller applied it again and again, 2 MB each time, and the Workflow got
        no status at all."""
        ns = self.namespace("huge")
        c = self.start_controller(namespace=ns, lease="huge")
        c.wait_leading()
        steps = [{"name": f"s{i}", "call": "f"} for i in range(1000)]
        self.apply(ns, {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                        "metadata": {"name": "huge"},
                        "spec": {"functions": {"f": {"image": "registry.example.com/f:1"}},
                                 "deadLetter": {"uri": "http://dead.example/" + "d" * 1900},
                                 "do": steps}})
        wf = self.wait_condition(ns, "huge", "False", "ApplyFailed", type_="KnativeReady",
                                 timeout=60)
        message = next(x["message"] for x in wf["status"]["conditions"]
                       if x["type"] == "KnativeReady")
        self.assertIn("request is too large", message)
        self.assertIn("more than the cluster stores in one object", message)
        self.assertEqual(self.condition(ns, "huge")["status"], "False")

    def test_invalid_spec_is_refused_until_fixed(self):
        ns = self.namespace("invalid")
        c = self.start_controller(namespace=ns, lease="invalid")
        c.wait_leading()
        # Accepted by the CRD's schema and CEL rules, refused by knflow: a call to a function that
        # is not declared.
        doc = {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
               "metadata": {"name": "typo"},
               "spec": {"functions": {"greet": {"image": "registry.example.com/greet:1"}},
                        "do": [{"name": "hello", "call": "gret"}]}}
        self.apply(ns, doc)
        self.wait_condition(ns, "typo", "False", "InvalidSpec", type_="Valid")
        valid = self.condition(ns, "typo", "Valid")
        self.assertIn("/spec/do/0/call", valid["message"])
        self.assertIn("gret", valid["message"])
        self.assertEqual(self.condition(ns, "typo")["reason"], "InvalidSpec")
        self.assertEqual(self.condition(ns, "typo", "KnativeReady")["reason"], "NotApplied")
        time.sleep(1)
        self.assertEqual(self.children(ns), {})
        invalid = c.metrics()['knflow_controller_reconciles_total{result="invalid"}']
        self.assertGreaterEqual(invalid, 1)
        # Terminal: not retried (no requeue storm); one more reconcile at most per event.
        time.sleep(2)
        self.assertEqual(c.metrics()['knflow_controller_reconciles_total{result="invalid"}'],
                         invalid)
        self.assertEqual(c.metrics()['knflow_controller_reconciles_total{result="retry"}'], 0)

        # Fixed: valid, applied, and Valid's transition time moves.
        doc["spec"]["do"][0]["call"] = "greet"
        self.apply(ns, doc)
        self.wait_condition(ns, "typo", "True", "Valid", type_="Valid", generation=2)
        wait_for("the Service and Sequence",
                 lambda: set(self.children(ns)) == {("Service", "typo-greet"), ("Sequence", "typo")})

    def test_expressions_compile_on_a_worker_without_home(self):
        # libjq reads $HOME/.jq into every program compiled in a process that has one; the engine's
        # workers have no environment. The controller validates on a jq worker of its own, so a
        # function defined there is refused, as `knflow serve` refuses it.
        ns = self.namespace("home")
        with tempfile.TemporaryDirectory() as home:
            with open(os.path.join(home, ".jq"), "w") as f:
                f.write("def knflow_from_home: true;\n")
            c = self.start_controller(namespace=ns, lease="home", env={"HOME": home})
            c.wait_leading()
            doc = {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                   "metadata": {"name": "home-expression"},
                   "spec": {"functions": {"greet": {"url": "http://greet.example.com/"}},
                            "do": [{"name": "hello", "call": "greet",
                                    "input": "${ knflow_from_home }"}]}}
            self.apply(ns, doc)
            self.wait_condition(ns, "home-expression", "False", "InvalidSpec", type_="Valid")
            valid = self.condition(ns, "home-expression", "Valid")
            self.assertIn("/spec/do/0/input", valid["message"])
            self.assertIn("knflow_from_home/0 is not defined", valid["message"])
            self.assertEqual(self.children(ns), {})
            # A program that compiles passes the same worker; then the step's `input` is what
            # cluster mode refuses (docs/cluster.md).
            doc["spec"]["do"][0]["input"] = "${ {order: .id} }"
            self.apply(ns, doc)
            self.wait_condition(ns, "home-expression", "False", "NotSupportedInCluster",
                                type_="Valid", generation=2)
            self.assertEqual(c.stop(), 0, c.log())

    def test_noop_window_makes_zero_writes(self):
        ns = self.namespace("noop")
        c = self.start_controller(namespace=ns, lease="noop", resync=2)
        c.wait_leading()
        docs = load_yaml_docs(self.kube, MEDIA.read_text())
        for i in range(3):
            doc = copy.deepcopy(docs[0])
            doc["metadata"]["name"] = f"wf-{i}"
            doc["metadata"]["namespace"] = ns
            self.apply(ns, doc)
        wait_for("21 objects", lambda: len(self.children(ns)) == 21)
        for i in range(3):
            self.wait_condition(ns, f"wf-{i}", "Unknown", "Pending")
        # Let the watch events of our own writes settle, then measure a 10 s window that holds
        # five resyncs of every Workflow.
        time.sleep(3)
        before_writes = c.writes()
        before_reconciles = c.metrics()['knflow_controller_reconciles_total{result="success"}']
        versions = {k: o["metadata"]["resourceVersion"] for k, o in self.children(ns).items()}
        wf_versions = {i: self.workflow(ns, f"wf-{i}")["metadata"]["resourceVersion"] for i in range(3)}
        time.sleep(10)
        after = c.metrics()
        reconciles = after['knflow_controller_reconciles_total{result="success"}'] - before_reconciles
        self.assertEqual(c.writes(), before_writes, "writes during a no-op window")
        self.assertGreaterEqual(reconciles, 6, "resyncs must have run")  # 15 on an idle machine
        self.assertEqual({k: o["metadata"]["resourceVersion"] for k, o in self.children(ns).items()},
                         versions)
        self.assertEqual({i: self.workflow(ns, f"wf-{i}")["metadata"]["resourceVersion"]
                          for i in range(3)}, wf_versions)
        print(f"no-op window: {c.writes() - before_writes:.0f} writes in 10 s, "
              f"{reconciles:.0f} reconciles", file=sys.stderr)

    def test_concurrent_writer_is_undone(self):
        ns = self.namespace("writer")
        c = self.start_controller(namespace=ns, lease="writer")
        c.wait_leading()
        doc = {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "w"},
               "spec": {"functions": {"f": {"image": "registry.example.com/f:1",
                                            "env": {"MODE": "fast"}}},
                        "do": [{"name": "a", "call": "f"}]}}
        self.apply(ns, doc)
        svc = wait_for("the Service", lambda: self.child("Service", ns, "w-f"))
        self.assertEqual(svc["spec"]["template"]["spec"]["containers"][0]["image"],
                         "registry.example.com/f:1")
        # Someone edits fields the controller set (as `kubectl edit` would: an update) and adds a
        # label of their own.
        svc["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
        del svc["metadata"]["labels"]["knflow.dev/function"]
        svc["metadata"]["labels"]["team"] = "ops"
        self.kube.kubectl("replace", "-f", "-", input=json.dumps(svc))

        def restored():
            s = self.child("Service", ns, "w-f")
            return s if (s["spec"]["template"]["spec"]["containers"][0]["image"] ==
                         "registry.example.com/f:1" and
                         s["metadata"]["labels"].get("knflow.dev/function") == "f") else None
        s = wait_for("the controller to restore its fields", restored)
        self.assertEqual(s["metadata"]["labels"].get("team"), "ops")  # not ours: kept
        self.assertEqual(s["spec"]["template"]["spec"]["containers"][0]["env"],
                         [{"name": "MODE", "value": "fast"}])
        # And it stays restored: no fight, no further writes once settled.
        time.sleep(2)
        writes = c.writes()
        time.sleep(3)
        self.assertEqual(c.writes(), writes)

    def test_objects_it_does_not_control_are_neither_taken_over_nor_pruned(self):
        """A Service of the same name as a rendered one, made by someone else, was taken over by
        the forced apply (image replaced, env dropped, knflow's ownerReference added) and deleted
        with the Workflow; two Workflows whose names render the same Service overwrote each other
        ten times a second; labels alone made an object prunable."""
        ns = self.namespace("owners")
        c = self.start_controller(namespace=ns, lease="owners")
        c.wait_leading()

        def service(name, image, labels=None, owner=None):
            meta = {"name": name, "namespace": ns, "labels": labels or {}}
            if owner:
                meta["ownerReferences"] = [owner]
            return {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": meta,
                    "spec": {"template": {"spec": {"containers": [
                        {"image": image, "env": [{"name": "SECRET_MODE", "value": "on"}]}]}}}}

        def workflow(name, function, image):
            return {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                    "metadata": {"name": name},
                    "spec": {"functions": {function: {"image": image}},
                             "do": [{"name": "s1", "call": function}]}}

        # Someone else's Service, named as the Workflow's function would be.
        self.kube.kubectl("create", "-f", "-", input=json.dumps(service("own-a", "theirs:7")))
        self.apply(ns, workflow("own", "a", "mine:1"))
        wf = self.wait_condition(ns, "own", "False", "NotOwned")
        ready = next(x for x in wf["status"]["conditions"] if x["type"] == "Ready")
        self.assertIn("Service own-a has no controller ownerReference", ready["message"])
        theirs = self.child("Service", ns, "own-a")
        self.assertEqual(theirs["spec"]["template"]["spec"]["containers"][0]["image"], "theirs:7")
        self.assertNotIn("ownerReferences", theirs["metadata"])
        # Once it is gone, the Workflow makes its own (it waited for the next resync, 10 min: no
        # event says an unlabelled object went away).
        self.kube.kubectl("delete", "services.serving.knative.dev", "own-a", "-n", ns)
        mine = wait_for("the Workflow's own Service", lambda: (
            lambda svc: svc if svc and svc["metadata"].get("ownerReferences") else None)(
                self.child("Service", ns, "own-a")), timeout=60)
        self.assertEqual(mine["spec"]["template"]["spec"]["containers"][0]["image"], "mine:1")

        # Two objects someone else's: both named (only the first was), nothing of the Workflow
        # applied (the objects before the first conflict were: two-a here).
        for name in ("two-b", "two-c"):
            self.kube.kubectl("create", "-f", "-", input=json.dumps(service(name, "theirs:7")))
        two = workflow("two", "a", "mine:1")
        two["spec"]["functions"]["b"] = {"image": "mine:1"}
        two["spec"]["functions"]["c"] = {"image": "mine:1"}
        two["spec"]["do"] += [{"name": "s2", "call": "b"}, {"name": "s3", "call": "c"}]
        self.apply(ns, two)
        wf = self.wait_condition(ns, "two", "False", "NotOwned")
        ready = next(x for x in wf["status"]["conditions"] if x["type"] == "Ready")
        self.assertIn("Service two-b has no controller ownerReference", ready["message"])
        self.assertIn("Service two-c has no controller ownerReference", ready["message"])
        self.assertIn("applies nothing of the Workflow meanwhile", ready["message"])
        self.assertIsNone(self.child("Service", ns, "two-a"))
        self.assertIsNone(self.child("Sequence", ns, "two"))

        # Its objects orphaned (what `kubectl delete --cascade=orphan` leaves: the garbage
        # collector takes their ownerReferences away) are adopted by a Workflow of the same name
        # made again (they were NotOwned: no controller). Made here with the controller stopped,
        # so that it cannot put the reference back first, and without the collector, which can
        # miss a reference added a moment before and then delete the object as a dependent.
        uid = self.workflow(ns, "own")["metadata"]["uid"]
        self.assertEqual(c.stop(), 0)
        self.kube.kubectl("patch", "services.serving.knative.dev", "own-a", "-n", ns,
                          "--type=json", "-p", '[{"op":"remove","path":"/metadata/ownerReferences"}]')
        self.kube.kubectl("delete", "workflows.knflow.dev", "own", "-n", ns)
        c = self.start_controller(namespace=ns, lease="owners")
        c.wait_leading()
        self.assertIsNotNone(self.child("Service", ns, "own-a"))
        self.apply(ns, workflow("own", "a", "mine:1"))
        new_uid = wait_for("the new Workflow", lambda: (
            lambda wf: wf["metadata"]["uid"] if wf and wf["metadata"]["uid"] != uid else None)(
                self.workflow(ns, "own")))
        wait_for("the adoption", lambda: [r["uid"] for r in self.child("Service", ns, "own-a")
                                          ["metadata"].get("ownerReferences", [])] == [new_uid]
                 or None)

        # Workflow col's function x-y and workflow col-x's function y both render col-x-y: the
        # first keeps it, the second is told, and nobody writes on.
        self.apply(ns, workflow("col", "x-y", "col-one:1"))
        first = wait_for("col's Service", lambda: self.child("Service", ns, "col-x-y"))
        self.apply(ns, workflow("col-x", "y", "col-two:1"))
        wf = self.wait_condition(ns, "col-x", "False", "NotOwned")
        ready = next(x for x in wf["status"]["conditions"] if x["type"] == "Ready")
        self.assertIn("Service col-x-y is controlled by Workflow col", ready["message"])
        time.sleep(2)
        writes = c.writes()
        time.sleep(3)
        self.assertEqual(c.writes(), writes)
        svc = self.child("Service", ns, "col-x-y")
        self.assertEqual(svc["spec"]["template"]["spec"]["containers"][0]["image"], "col-one:1")
        self.assertEqual(svc["metadata"]["generation"], first["metadata"]["generation"])

        # Labelled as col's, but not controlled by it: not pruned when col changes.
        labels = {"app.kubernetes.io/managed-by": "knflow", "knflow.dev/workflow": "col"}
        self.kube.kubectl("create", "configmap", "keeper", "-n", ns)
        keeper = {"apiVersion": "v1", "kind": "ConfigMap", "name": "keeper", "controller": True,
                  "uid": self.get(f"/api/v1/namespaces/{ns}/configmaps/keeper")["metadata"]["uid"]}
        for name, owner in (("col-extra", None), ("col-other-owner", keeper)):
            self.kube.kubectl("create", "-f", "-",
                              input=json.dumps(service(name, "theirs:7", labels, owner)))
        self.apply(ns, workflow("col", "x-y", "col-one:2"))
        wait_for("col's change", lambda: self.child("Service", ns, "col-x-y")["spec"]["template"]
                 ["spec"]["containers"][0]["image"] == "col-one:2" or None)
        time.sleep(2)
        for name in ("col-extra", "col-other-owner"):
            self.assertIsNotNone(self.child("Service", ns, name), name)

    def test_a_trigger_whose_broker_changes_is_made_again(self):
        """A Trigger's spec.broker cannot change in place (Knative's webhook refuses it as an
        immutable field): the apply sent it all the same, and the Workflow stayed ApplyFailed.
        The Trigger is now deleted and made again. No Knative webhook runs here, so what the test
        sees is the Trigger made again (a new uid) instead of changed."""
        ns = self.namespace("brokers")
        c = self.start_controller(namespace=ns, lease="brokers")
        c.wait_leading()
        doc = {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
               "metadata": {"name": "brk"},
               "spec": {"trigger": {"broker": "default", "filter": {"type": "com.example.a"}},
                        "functions": {"a": {"image": "a:1"}},
                        "do": [{"name": "s1", "call": "a"}]}}
        self.apply(ns, doc)
        first = wait_for("the Trigger", lambda: self.child("Trigger", ns, "brk"))
        self.assertEqual(first["spec"]["broker"], "default")

        doc["spec"]["trigger"]["broker"] = "other"
        doc["spec"]["trigger"]["filter"]["type"] = "com.example.b"
        self.apply(ns, doc)
        again = wait_for("the Trigger made again", lambda: (
            lambda t: t if t and t["metadata"]["uid"] != first["metadata"]["uid"] else None)(
                self.child("Trigger", ns, "brk")))
        self.assertEqual(again["spec"]["broker"], "other")
        self.assertEqual(again["spec"]["filter"]["attributes"], {"type": "com.example.b"})
        wf = self.workflow(ns, "brk")
        self.assertEqual([r["uid"] for r in again["metadata"]["ownerReferences"]],
                         [wf["metadata"]["uid"]])
        self.assertIn("Deleted to make again", c.log())
        self.assertIn('spec.broker changes from \\"default\\" to \\"other\\"', c.log())
        # Settled: the Knative side is Pending (nobody plays Knative here), not failed.
        self.wait_condition(ns, "brk", "Unknown", "Pending", generation=2)

    def test_status_write_conflict_is_retried(self):
        ns = self.namespace("conflict")
        # Three seconds between reading the Workflow and writing its status: a write by someone
        # else in between makes the status PUT fail with 409.
        c = self.start_controller("--status-write-delay", "3", namespace=ns, lease="conflict")
        c.wait_leading()
        doc = {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "cw"},
               "spec": {"functions": {"f": {"url": "http://f.example"}},
                        "do": [{"name": "a", "call": "f"}]}}
        self.apply(ns, doc)
        self.wait_condition(ns, "cw", "Unknown", "Pending", timeout=40)
        conflicts = c.metrics()['knflow_controller_writes_total{operation="status",result="conflict"}']
        self.make_ready("Sequence", ns, "cw")  # the status will change...
        time.sleep(0.5)
        code, body = self.api("PATCH", f"{WORKFLOWS}/namespaces/{ns}/workflows/cw",  # ...under a write
                              {"metadata": {"annotations": {"touched": "yes"}}},
                              content_type="application/merge-patch+json")
        self.assertEqual(code, 200, body)
        self.wait_condition(ns, "cw", "True", "Ready", timeout=40)
        self.assertGreater(
            c.metrics()['knflow_controller_writes_total{operation="status",result="conflict"}'],
            conflicts)
        self.assertIn("Status write conflicted; retrying", c.log())
        self.assertEqual(self.workflow(ns, "cw")["metadata"]["annotations"]["touched"], "yes")


if __name__ == "__main__":
    unittest.main(verbosity=2)
