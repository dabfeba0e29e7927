"""The Helm chart (manifests/helm/knflow) against a real kube-apiserver (test/kubeenv): it lints and
renders with its default values and with `watchNamespace`; its CRD is manifests/crds' own file
(a symlink helm follows when it loads and packages the chart); `helm install` creates the
ServiceAccount, RBAC, Secret, Service and Deployment, and the Workflow CRD; `helm upgrade` keeps
the generated API token. No kubelet runs, so the pods never start: instead the real daemon runs
here with the Deployment's own arguments, the Secret's token and a token of the chart's
ServiceAccount, and does its whole job with exactly the chart's RBAC (the apiserver also runs
OwnerReferencesPermissionEnforcement): it mirrors Workflows, applies and prunes their Knative
objects, writes their status, holds its Lease and serves REST writes. `kubectl auth can-i` shows
what the ServiceAccount may not do, and `helm uninstall` removes what the chart created."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import re
import shutil
import sys
import tarfile
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "e2e"))
sys.path.insert(0, str(HERE.parent / "kubeenv"))
from daemon import Daemon  # noqa: E402
from kubeenv import KubeEnv, source_dir  # noqa: E402
from test_controller import MEDIA, load_yaml_docs, wait_for  # noqa: E402

SOURCE_DIR = source_dir()
CHART = SOURCE_DIR / "manifests" / "helm" / "knflow"
CRD = SOURCE_DIR / "manifests" / "crds" / "knflow.dev_workflows.yaml"
NS = "knflow-system"
SA = f"system:serviceaccount:{NS}:knflow"

kube: KubeEnv = None  # type: ignore[assignment]  # started by setUpModule


def setUpModule():
    global kube
    # Helm installs the Workflow CRD from the chart, so the environment leaves it out. With
    # OwnerReferencesPermissionEnforcement (on in OpenShift, for example), an ownerReference with
    # blockOwnerDeletion needs `update` on the owner's finalizers.
    kube = KubeEnv(knflow_crds=False, apiserver_args=[
        "--enable-admission-plugins=OwnerReferencesPermissionEnforcement"]).start()


def tearDownModule():
    kube.stop()


def render(*args: str) -> list[dict]:
    """`helm template` of the chart as release `knflow` in knflow-system, as objects."""
    out = kube.helm("template", "knflow", str(CHART), "-n", NS, *args).stdout
    return load_yaml_docs(kube, out)


def by_kind(docs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def rules_of(kinds: dict[str, list[dict]]) -> list[dict]:
    return [r for k in ("ClusterRole", "Role") for role in kinds.get(k, []) for r in role["rules"]]


def can(verb: str, resource: str, *args: str, who: str = SA) -> bool:
    r = kube.kubectl("auth", "can-i", verb, resource, f"--as={who}", *args, check=False)
    answer = r.stdout.strip()
    if answer not in ("yes", "no"):
        raise AssertionError(f"kubectl auth can-i {verb} {resource}: {r.stdout}{r.stderr}")
    return answer == "yes"


def get(resource: str, name: str, ns: str | None = None) -> dict | None:
    args = ["get", resource, name, "-o", "json"] + (["-n", ns] if ns else [])
    r = kube.kubectl(*args, check=False)
    if r.returncode != 0:
        if "NotFound" in r.stderr:
            return None
        raise AssertionError(r.stderr)
    return json.loads(r.stdout)


def secret_token(ns: str, name: str) -> str:
    return base64.b64decode(get("secret", name, ns)["data"]["token"]).decode()


@contextlib.contextmanager
def daemon_as(test: unittest.TestCase, release: str, ns: str, service_account: str):
    """knflow serve as the release's pod would run it (see start_daemon_as); prints its log when
    the block fails, and stops it (SIGTERM, exit 0) when the block succeeds."""
    d = start_daemon_as(release, ns, service_account)
    test.addCleanup(close_daemon, d)
    try:
        yield d
    except BaseException:
        print(f"----- knflow serve's log\n{d.output()}", file=sys.stderr)
        raise
    code = d.stop()
    test.assertEqual(code, 0, d.output())


def start_daemon_as(release: str, ns: str, service_account: str) -> Daemon:
    """Starts knflow serve here as the pod would run: the installed Deployment's arguments (with a
    local address and data folder), the chart's Secret as the token file, and a kubeconfig with a
    token of the chart's ServiceAccount (TokenRequest API) instead of the pod's mounted one."""
    args = container(get("deployment", release, ns))["args"]
    assert args[0] == "serve", args
    work = Path(tempfile.mkdtemp(prefix="knflow-helm-"))
    data = work / "data"
    data.mkdir(mode=0o700)
    token_file = data / "token"  # where Daemon reads the API token from
    token_file.write_text(secret_token(ns, f"{release}-api-token") + "\n")
    sa_token = kube.kubectl("create", "token", service_account, "-n", ns,
                            "--duration=1h").stdout.strip()
    kubeconfig = work / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: kubeenv
  cluster: {{server: "{kube.server}", certificate-authority: "{kube.ca_file}"}}
users:
- name: {service_account}
  user: {{token: "{sa_token}"}}
contexts:
- name: sa
  context: {{cluster: kubeenv, user: {service_account}, namespace: {ns}}}
current-context: sa
""")
    local = []
    for a in args[1:]:
        name = a.split("=", 1)[0]
        if name in ("--listen", "--data-dir"):
            continue  # Daemon gives its own
        local.append(f"--token-file={token_file}" if name == "--token-file" else a)
    d = Daemon(*local, "--kubeconfig", str(kubeconfig), data_dir=str(data))
    d.work = work
    try:
        d.start()
    except Exception:
        close_daemon(d)
        raise
    return d


def close_daemon(d: Daemon) -> None:
    d.close()
    shutil.rmtree(d.work, ignore_errors=True)


class ChartRenderTest(unittest.TestCase):
    def test_lints_with_default_values_and_a_watched_namespace(self):
        for values in ([], ["--set", "watchNamespace=team-a"],
                       ["--set", "persistence.enabled=true", "--set", "replicas=1"]):
            with self.subTest(values=values):
                out = kube.helm("lint", "--strict", str(CHART), *values).stdout
                self.assertIn("0 chart(s) failed", out)

    def test_default_values_render_cluster_wide_rbac_and_a_locked_down_deployment(self):
        kinds = by_kind(render())
        self.assertEqual(sorted(kinds), ["ClusterRole", "ClusterRoleBinding", "Deployment", "Role",
                                         "RoleBinding", "Secret", "Service", "ServiceAccount"])
        # The only Role is the Lease's, in the release's namespace.
        (role,) = kinds["Role"]
        self.assertEqual(role["metadata"]["namespace"], NS)
        self.assertEqual({r["apiGroups"][0] for r in role["rules"]}, {"coordination.k8s.io"})
        (binding,) = kinds["ClusterRoleBinding"]
        self.assertEqual(binding["subjects"],
                         [{"kind": "ServiceAccount", "name": "knflow", "namespace": NS}])
        self.assertEqual(binding["roleRef"]["name"], kinds["ClusterRole"][0]["metadata"]["name"])

        (deployment,) = kinds["Deployment"]
        c = container(deployment)
        pod = deployment["spec"]["template"]["spec"]
        self.assertEqual(pod["serviceAccountName"], "knflow")
        self.assertEqual(c["image"], "knflow:0.1.0")
        self.assertEqual(c["args"][0], "serve")
        self.assertIn("--mode=cluster", c["args"])
        self.assertIn("--leader-election=true", c["args"])
        self.assertIn(f"--lease-namespace={NS}", c["args"])
        self.assertIn("--lease-name=knflow", c["args"])
        self.assertIn("--anonymous-health", c["args"])  # the probes send no token
        self.assertFalse([a for a in c["args"] if a.startswith("--watch-namespace")])
        self.assertEqual(c["livenessProbe"]["httpGet"]["path"], "/healthz")
        self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/readyz")
        pod_security = pod["securityContext"]
        self.assertEqual((pod_security["runAsUser"], pod_security["runAsNonRoot"]), (65532, True))
        self.assertTrue(c["securityContext"]["readOnlyRootFilesystem"])
        self.assertFalse(c["securityContext"]["allowPrivilegeEscalation"])
        self.assertEqual(c["securityContext"]["capabilities"], {"drop": ["ALL"]})
        self.assertIn("memory", c["resources"]["limits"])
        volumes = {v["name"]: v for v in pod["volumes"]}
        self.assertIn("emptyDir", volumes["data"])
        self.assertEqual(volumes["api-token"]["secret"]["secretName"], "knflow-api-token")
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        self.assertEqual(mounts["/var/lib/knflow"], "data")
        self.assertIn("--token-file=/etc/knflow/tokens/token", c["args"])
        self.assertEqual(mounts["/etc/knflow/tokens"], "api-token")
        (service,) = kinds["Service"]
        self.assertEqual([(p["port"], p["targetPort"]) for p in service["spec"]["ports"]],
                         [(8080, "http")])
        (secret,) = kinds["Secret"]
        self.assertEqual(len(base64.b64decode(secret["data"]["token"])), 48)

    def test_watch_namespace_renders_a_role_there_instead_of_a_cluster_role(self):
        kinds = by_kind(render("--set", "watchNamespace=team-a"))
        self.assertNotIn("ClusterRole", kinds)
        self.assertNotIn("ClusterRoleBinding", kinds)
        roles = {r["metadata"]["namespace"]: r for r in kinds["Role"]}
        self.assertEqual(set(roles), {"team-a", NS})
        default_rules = rules_of(by_kind(render()))
        self.assertEqual([r for r in rules_of(kinds) if r not in roles[NS]["rules"]],
                         [r for r in default_rules if r not in roles[NS]["rules"]])
        bindings = {b["metadata"]["namespace"]: b for b in kinds["RoleBinding"]}
        self.assertEqual(bindings["team-a"]["subjects"][0]["namespace"], NS)
        self.assertIn("--watch-namespace=team-a", container(kinds["Deployment"][0])["args"])

    def test_no_rule_has_a_wildcard(self):
        for values in ([], ["--set", "watchNamespace=team-a"]):
            for rule in rules_of(by_kind(render(*values))):
                for key in ("apiGroups", "resources", "verbs"):
                    self.assertNotIn("*", rule[key], rule)

    def test_token_persistence_and_leader_election_values(self):
        kinds = by_kind(render("--set", "apiToken.value=s3cret"))
        self.assertEqual(base64.b64decode(kinds["Secret"][0]["data"]["token"]), b"s3cret")
        annotations = kinds["Deployment"][0]["spec"]["template"]["metadata"]["annotations"]
        self.assertIn("checksum/api-token", annotations)  # a new token rolls the pods

        kinds = by_kind(render("--set", "apiToken.existingSecret=mine",
                               "--set", "apiToken.existingSecretKey=tokens"))
        self.assertNotIn("Secret", kinds)
        volume = {v["name"]: v for v in
                  kinds["Deployment"][0]["spec"]["template"]["spec"]["volumes"]}["api-token"]
        self.assertEqual(volume["secret"]["secretName"], "mine")
        self.assertEqual(volume["secret"]["items"], [{"key": "tokens", "path": "token"}])

        kinds = by_kind(render("--set", "persistence.enabled=true"))
        (claim,) = kinds["PersistentVolumeClaim"]
        deployment = kinds["Deployment"][0]
        self.assertEqual(deployment["spec"]["strategy"]["type"], "Recreate")
        volume = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}["data"]
        self.assertEqual(volume["persistentVolumeClaim"]["claimName"], claim["metadata"]["name"])

        kinds = by_kind(render("--set", "leaderElection.enabled=false"))
        self.assertEqual([r["metadata"]["name"] for r in kinds.get("Role", [])], [])
        self.assertIn("--leader-election=false", container(kinds["Deployment"][0])["args"])
        self.assertEqual(kinds["Deployment"][0]["spec"]["strategy"]["type"], "Recreate")

        for values, message in (
                (["persistence.enabled=true", "replicas=2"], "persistence.enabled needs replicas"),
                (["leaderElection.enabled=false", "replicas=2"], "needs replicas: 1")):
            args = [a for v in values for a in ("--set", v)]
            r = kube.helm("template", "knflow", str(CHART), *args, check=False)
            self.assertNotEqual(r.returncode, 0, values)
            self.assertIn(message, r.stderr)

    def test_the_chart_crd_is_the_manifest_itself(self):
        with tempfile.TemporaryDirectory() as tmp:
            kube.helm("package", str(CHART), "-d", tmp)
            (package,) = Path(tmp).glob("knflow-*.tgz")
            with tarfile.open(package) as tar:
                packaged = tar.extractfile("knflow/crds/knflow.dev_workflows.yaml").read()
        self.assertEqual(packaged, CRD.read_bytes())
        out = kube.helm("template", "knflow", str(CHART), "--include-crds").stdout
        self.assertIn("name: workflows.knflow.dev", out)

    def test_app_version_is_the_project_version(self):
        chart = (CHART / "Chart.yaml").read_text()
        project = (SOURCE_DIR / "CMakeLists.txt").read_text()
        app = re.search(r'^appVersion: "([^"]+)"', chart, re.M).group(1)
        self.assertEqual(app, re.search(r"project\(knflow VERSION (\S+)", project).group(1))


class ChartInstallTest(unittest.TestCase):
    """Release `knflow` in knflow-system with the default values (cluster-wide)."""

    @classmethod
    def setUpClass(cls):
        assert get("crd", "workflows.knflow.dev") is None  # the chart brings it
        kube.helm("install", "knflow", str(CHART), "-n", NS, "--create-namespace")
        kube.kubectl("wait", "--for", "condition=established", "--timeout=60s",
                     "crd/workflows.knflow.dev")
        kube.kubectl("create", "namespace", "media")

    def test_install_creates_the_objects_and_the_crd(self):
        crd = get("crd", "workflows.knflow.dev")
        self.assertEqual(crd["spec"]["names"]["shortNames"], ["kfw"])
        deployment = get("deployment", "knflow", NS)
        self.assertIn("--mode=cluster", container(deployment)["args"])
        self.assertIsNotNone(get("serviceaccount", "knflow", NS))
        self.assertEqual(get("service", "knflow", NS)["spec"]["ports"][0]["port"], 8080)
        self.assertEqual(len(secret_token(NS, "knflow-api-token")), 48)
        binding = get("clusterrolebinding", f"{NS}-knflow")
        self.assertEqual(binding["subjects"][0]["name"], "knflow")
        self.assertIsNotNone(get("rolebinding", "knflow-leader-election", NS))
        notes = kube.helm("status", "knflow", "-n", NS).stdout
        self.assertIn("kubectl -n knflow-system get secret knflow-api-token", notes)

    def test_upgrade_keeps_the_generated_token(self):
        before = secret_token(NS, "knflow-api-token")
        kube.helm("upgrade", "knflow", str(CHART), "-n", NS, "--set", "logLevel=debug")
        self.assertIn("--log-level=debug", container(get("deployment", "knflow", NS))["args"])
        self.assertEqual(secret_token(NS, "knflow-api-token"), before)
        kube.helm("upgrade", "knflow", str(CHART), "-n", NS, "--reset-values")
        self.assertIn("--log-level=info", container(get("deployment", "knflow", NS))["args"])
        self.assertEqual(secret_token(NS, "knflow-api-token"), before)

    def test_service_account_may_do_its_job_and_no_more(self):
        allowed = [
            ("list", "workflows.knflow.dev", "-A"), ("watch", "workflows.knflow.dev", "-A"),
            ("create", "workflows.knflow.dev", "-n", "media"),
            ("update", "workflows.knflow.dev", "--subresource=status", "-n", "media"),
            ("update", "workflows.knflow.dev", "--subresource=finalizers", "-n", "media"),
            ("create", "services.serving.knative.dev", "-n", "media"),
            # Whether an object of a rendered name that is not knflow's exists (NotOwned).
            ("get", "services.serving.knative.dev", "-n", "media"),
            ("patch", "sequences.flows.knative.dev", "-n", "media"),
            ("delete", "parallels.flows.knative.dev", "-n", "media"),
            ("watch", "triggers.eventing.knative.dev", "-A"),
            ("update", "leases.coordination.k8s.io/knflow", "-n", NS),
            ("create", "leases.coordination.k8s.io", "-n", NS),
        ]
        refused = [
            ("get", "secrets", "-A"), ("get", "secrets", "-n", NS), ("delete", "namespaces"),
            ("create", "deployments.apps", "-n", "media"), ("create", "pods", "-n", "media"),
            ("patch", "workflows.knflow.dev", "-n", "media"),  # status is the controller's
            ("patch", "workflows.knflow.dev", "--subresource=status", "-n", "media"),
            ("update", "services.serving.knative.dev", "--subresource=status", "-n", "media"),
            ("create", "brokers.eventing.knative.dev", "-n", "media"),
            ("update", "leases.coordination.k8s.io/other", "-n", NS),
            ("create", "leases.coordination.k8s.io", "-n", "media"),
            ("create", "events", "-n", NS),
            ("escalate", "clusterroles.rbac.authorization.k8s.io"),
            ("*", "*", "-A"),
        ]
        for verb, resource, *args in allowed:
            self.assertTrue(can(verb, resource, *args), (verb, resource, *args))
        for verb, resource, *args in refused:
            self.assertFalse(can(verb, resource, *args), (verb, resource, *args))

    def test_daemon_as_the_service_account_reconciles_and_serves(self):
        with daemon_as(self, "knflow", NS, "knflow") as d:
            # kubectl writes: every kind render produces is applied, and the status written.
            doc = load_yaml_docs(kube, MEDIA.read_text())[0]
            kube.kubectl("apply", "-f", "-", input=json.dumps(doc))
            names = {("services.serving.knative.dev", n) for n in
                     ("media-ingest-resize", "media-ingest-tagger", "media-ingest-indexer")}
            names |= {("sequences.flows.knative.dev", "media-ingest"),
                      ("sequences.flows.knative.dev", "media-ingest-index-and-audit"),
                      ("parallels.flows.knative.dev", "media-ingest-fan-out"),
                      ("triggers.eventing.knative.dev", "media-ingest")}
            for resource, name in sorted(names):
                obj = wait_for(f"{resource} {name}", lambda: get(resource, name, "media"))
                ref = obj["metadata"]["ownerReferences"][0]
                self.assertTrue(ref["blockOwnerDeletion"])  # allowed by workflows/finalizers
            wf = wait_for("the status", lambda: (lambda w: w if w.get("status", {}).get(
                "observedGeneration") == 1 else None)(get("workflows.knflow.dev", "media-ingest",
                                                          "media")))
            self.assertEqual({c["type"] for c in wf["status"]["conditions"]},
                             {"Valid", "KnativeReady", "Ready"})
            lease = get("leases.coordination.k8s.io", "knflow", NS)
            self.assertTrue(lease["spec"]["holderIdentity"])

            # A function removed: its Service is pruned (delete).
            pruned = copy.deepcopy(doc)
            del pruned["spec"]["functions"]["tagger"]
            fork = pruned["spec"]["do"][1]["fork"]
            fork["branches"] = [b for b in fork["branches"] if b["name"] != "tag"]
            kube.kubectl("apply", "-f", "-", input=json.dumps(pruned))
            wait_for("the tagger Service pruned",
                     lambda: get("services.serving.knative.dev", "media-ingest-tagger",
                                 "media") is None)

            # REST writes with the chart's token go to the apiserver as the ServiceAccount.
            base = "/api/v1/namespaces/media/workflows"
            body = {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                    "metadata": {"name": "via-rest"},
                    "spec": {"functions": {"greet": {"image": "registry.example/greet:1"}},
                             "do": [{"name": "hello", "call": "greet"}]}}
            status, created = d.json("POST", base, json.dumps(body))
            self.assertEqual(status, 201, created)
            body["spec"]["functions"]["greet"]["image"] = "registry.example/greet:2"
            status, updated = d.json("PUT", base + "/via-rest", json.dumps(body))
            self.assertEqual(status, 200, updated)
            self.assertEqual(updated["metadata"]["generation"], 2)
            wait_for("the REST workflow's Service", lambda: (get(
                "services.serving.knative.dev", "via-rest-greet", "media") or {}).get("spec", {})
                .get("template", {}).get("spec", {}).get("containers", [{}])[0].get("image")
                == "registry.example/greet:2")
            status, _ = d.json("DELETE", base + "/via-rest")
            self.assertEqual(status, 200)
            self.assertIsNone(get("workflows.knflow.dev", "via-rest", "media"))
        log = d.output()
        self.assertIn("Released the lease", log)
        self.assertNotRegex(log.lower(), r"forbidden|\b403\b")


class ScopedReleaseTest(unittest.TestCase):
    """Release `scoped` in knflow-scoped watching team-a only (a Role there), then uninstalled."""

    @classmethod
    def setUpClass(cls):
        kube.kubectl("create", "namespace", "team-a")
        kube.kubectl("create", "namespace", "team-b")
        kube.helm("install", "scoped", str(CHART), "-n", "knflow-scoped", "--create-namespace",
                  "--set", "watchNamespace=team-a")
        kube.kubectl("wait", "--for", "condition=established", "--timeout=60s",
                     "crd/workflows.knflow.dev")

    def test_daemon_reconciles_the_watched_namespace_and_uninstall_removes_the_release(self):
        who = "system:serviceaccount:knflow-scoped:scoped-knflow"
        self.assertTrue(can("create", "services.serving.knative.dev", "-n", "team-a", who=who))
        self.assertTrue(can("list", "workflows.knflow.dev", "-n", "team-a", who=who))
        self.assertFalse(can("list", "workflows.knflow.dev", "-n", "team-b", who=who))
        self.assertFalse(can("list", "workflows.knflow.dev", "-A", who=who))
        self.assertFalse(can("update", "leases.coordination.k8s.io/knflow", "-n", NS, who=who))

        with daemon_as(self, "scoped-knflow", "knflow-scoped", "scoped-knflow") as d:
            doc = {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                   "metadata": {"name": "hello", "namespace": "team-a"},
                   "spec": {"functions": {"greet": {"image": "registry.example/greet:1"}},
                            "do": [{"name": "hello", "call": "greet"}]}}
            kube.kubectl("apply", "-f", "-", input=json.dumps(doc))
            wait_for("the Service", lambda: get("services.serving.knative.dev", "hello-greet",
                                                "team-a"))
            wait_for("the status", lambda: (get("workflows.knflow.dev", "hello", "team-a")
                                            .get("status", {}).get("observedGeneration")) == 1)
            self.assertTrue(get("leases.coordination.k8s.io", "scoped-knflow",
                                "knflow-scoped")["spec"]["holderIdentity"])
            # A Workflow elsewhere is not this release's.
            doc["metadata"]["namespace"] = "team-b"
            kube.kubectl("apply", "-f", "-", input=json.dumps(doc))
            status, listed = d.json("GET", "/api/v1/workflows")
            self.assertEqual(status, 200, listed)
            self.assertEqual({(i["metadata"]["namespace"], i["metadata"]["name"])
                              for i in listed["items"]}, {("team-a", "hello")})
            log = d.output()
            # Reading or writing there through the REST API: the daemon serves the namespace it
            # watches only (a GET said "does not exist", and with a broader identity a write
            # reached the cluster and stayed in the mirror for good).
            doc["metadata"]["name"] = "via-rest"
            for method, path, body in (
                    ("POST", "/api/v1/namespaces/team-b/workflows", json.dumps(doc)),
                    ("GET", "/api/v1/namespaces/team-b/workflows/hello", None),
                    ("DELETE", "/api/v1/namespaces/team-b/workflows/hello", None)):
                status, problem = d.json(method, path, body)
                self.assertEqual(status, 404, problem)
                self.assertEqual(problem["detail"], 'Namespace "team-b" is not served by this '
                                 'daemon: it watches "team-a" only (--watch-namespace).')
            self.assertIsNotNone(get("workflows.knflow.dev", "hello", "team-b"))
        self.assertNotRegex(log.lower(), r"forbidden|\b403\b")
        self.assertIsNone(get("services.serving.knative.dev", "hello-greet", "team-b"))

        kube.helm("uninstall", "scoped", "-n", "knflow-scoped")
        gone = [(kind, "scoped-knflow", "knflow-scoped")
                for kind in ("deployment", "service", "serviceaccount")]
        gone += [("secret", "scoped-knflow-api-token", "knflow-scoped"),
                 ("role", "scoped-knflow-leader-election", "knflow-scoped"),
                 ("rolebinding", "scoped-knflow-leader-election", "knflow-scoped"),
                 ("role", "scoped-knflow", "team-a"), ("rolebinding", "scoped-knflow", "team-a")]
        for resource, name, ns in gone:
            self.assertIsNone(get(resource, name, ns), (resource, name, ns))
        self.assertFalse(can("list", "workflows.knflow.dev", "-n", "team-a", who=who))
        # Helm never deletes a CRD (that would delete every Workflow): it stays.
        self.assertIsNotNone(get("crd", "workflows.knflow.dev"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
