"""`knflow serve --kubeconfig`: the REST API over a real kube-apiserver. Workflows written through
the REST API become Workflow custom resources, workflows written with kubectl appear in the REST
API (the cache is fed by the watch), the controller in the daemon compiles them into Knative
objects and writes their status, stale updates get 409, and status changes are kept as history
in SQLite."""

import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
sys.path.insert(0, os.path.join(HERE, "..", "kubeenv"))
from daemon import Daemon  # noqa: E402
from kubeenv import KubeEnv  # noqa: E402

NS = "default"
BASE = f"/api/v1/namespaces/{NS}/workflows"


def cluster_workflow(name, image="registry.example/greet:1", reply=None):
    spec = {
        "functions": {"greet": {"image": image}},
        "do": [{"name": "hello", "call": "greet"}],
    }
    if reply:
        spec["reply"] = reply
    return {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
            "metadata": {"name": name, "labels": {"team": "web"}}, "spec": spec}


def wait_for(what, check, limit=30.0):
    deadline = time.monotonic() + limit
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class ServeClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = KubeEnv(controller_manager=True).start()
        # A HOME with a jq library: libjq reads $HOME/.jq into every program compiled in a
        # process that has one; the daemon's validation must not (it compiles on a jq worker).
        cls.home = tempfile.TemporaryDirectory()
        with open(os.path.join(cls.home.name, ".jq"), "w") as f:
            f.write("def knflow_from_home: true;\n")
        cls.daemon = Daemon("--kubeconfig", cls.env.kubeconfig, "--resync", "5",
                            env={"HOME": cls.home.name})
        try:
            cls.daemon.start()
        except Exception:
            cls.daemon.close()
            cls.env.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            code = cls.daemon.stop()
            assert code == 0, f"daemon exit code {code}:\n{cls.daemon.output()}"
        finally:
            cls.daemon.close()
            cls.env.stop()
            cls.home.cleanup()

    def kube_get(self, resource, name, check=True):
        out = self.env.kubectl("get", resource, name, "-n", NS, "-o", "json", check=check)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def test_rest_writes_are_custom_resources_and_get_knative_objects(self):
        status, created = self.daemon.json("POST", BASE, json.dumps(cluster_workflow("via-rest")))
        self.assertEqual(status, 201, created)
        # The answer is the object the apiserver stored: its uid and resourceVersion.
        stored = self.kube_get("workflows.knflow.dev", "via-rest")
        self.assertEqual(created["metadata"]["uid"], stored["metadata"]["uid"])
        self.assertTrue(created["metadata"]["resourceVersion"])  # the apiserver's, opaque
        self.assertEqual(created["metadata"]["generation"], 1)
        # Read after write through the REST API.
        status, got = self.daemon.json("GET", BASE + "/via-rest")
        self.assertEqual(status, 200)
        self.assertEqual(got["metadata"]["uid"], stored["metadata"]["uid"])
        # The controller in the daemon renders it.
        svc = wait_for("the Service", lambda: self.kube_get("ksvc", "via-rest-greet", check=False))
        self.assertEqual(svc["metadata"]["labels"]["knflow.dev/workflow"], "via-rest")
        self.assertEqual(svc["metadata"]["ownerReferences"][0]["uid"], stored["metadata"]["uid"])
        wait_for("the Sequence", lambda: self.kube_get("sequences.flows.knative.dev", "via-rest",
                                                       check=False))

        # Update with the current resourceVersion, then a stale one: 409 from the apiserver.
        body = cluster_workflow("via-rest", image="registry.example/greet:2")
        body["metadata"]["resourceVersion"] = got["metadata"]["resourceVersion"]
        status, updated = self.daemon.json("PUT", BASE + "/via-rest", json.dumps(body))
        self.assertEqual(status, 200, updated)
        self.assertEqual(updated["metadata"]["generation"], 2)
        status, conflict = self.daemon.json("PUT", BASE + "/via-rest", json.dumps(body))
        self.assertEqual(status, 409, conflict)
        self.assertEqual(conflict["type"].rsplit("/", 1)[-1], "conflict")
        wait_for("the new image", lambda: (self.kube_get("ksvc", "via-rest-greet") or {})
                 .get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0]
                 .get("image") == "registry.example/greet:2")

        # Without managedFields, as every GET answers it: the create's answer, changed and sent
        # back, is taken (it was 422 "unknown field managedFields").
        self.assertNotIn("managedFields", created["metadata"])
        resent = json.loads(json.dumps(created))
        resent["spec"]["functions"]["greet"]["image"] = "registry.example/greet:2"
        resent["spec"]["functions"]["greet"]["env"] = {"MODE": "resent"}
        del resent["metadata"]["resourceVersion"]  # the controller has written status since
        status, answer = self.daemon.json("PUT", BASE + "/via-rest", json.dumps(resent))
        self.assertEqual(status, 200, answer)
        self.assertNotIn("managedFields", answer["metadata"])

        # Delete through the REST API: gone from the apiserver, the REST API, and (through the
        # garbage collector) its Knative objects.
        status, deleted = self.daemon.json("DELETE", BASE + "/via-rest")
        self.assertEqual(status, 200)
        # The deleted object, not only its name (the watch may drop it before the answer).
        self.assertEqual(deleted["spec"]["functions"]["greet"]["image"], "registry.example/greet:2")
        self.assertIsNone(self.kube_get("workflows.knflow.dev", "via-rest", check=False))
        status, _ = self.daemon.json("GET", BASE + "/via-rest")
        self.assertEqual(status, 404)
        wait_for("the Service to be collected",
                 lambda: self.kube_get("ksvc", "via-rest-greet", check=False) is None, limit=60)

    def test_kubectl_writes_appear_in_the_rest_api_with_status_history(self):
        self.env.kubectl("apply", "-f", "-", input=json.dumps(cluster_workflow("via-kubectl")))
        got = wait_for("the mirrored workflow", lambda: (
            lambda r: r[1] if r[0] == 200 else None)(self.daemon.json("GET", BASE + "/via-kubectl")))
        self.assertEqual(got["metadata"]["labels"], {"team": "web"})
        status, listed = self.daemon.json("GET", BASE + "?labelSelector=team%3Dweb")
        self.assertEqual(status, 200)
        self.assertIn("via-kubectl", [i["metadata"]["name"] for i in listed["items"]])
        # The controller's status reaches the cache, and its changes the history.
        wait_for("a status with conditions", lambda: (
            self.daemon.json("GET", BASE + "/via-kubectl")[1].get("status", {}).get("conditions")))
        status, history = self.daemon.json("GET", BASE + "/via-kubectl/history")
        self.assertEqual(status, 200, history)
        self.assertGreaterEqual(len(history["items"]), 1)
        self.env.kubectl("delete", "workflows.knflow.dev", "via-kubectl", "-n", NS)
        wait_for("the mirror to drop it",
                 lambda: self.daemon.json("GET", BASE + "/via-kubectl")[0] == 404)

    def test_a_workflow_deleted_while_no_daemon_watched_leaves_no_copy(self):
        # Its copy and status history stayed in the file, unseen, until a workflow of its name
        # replaced it. A second daemon, with its own file, mirrors the same Workflows.
        second = Daemon("--kubeconfig", self.env.kubeconfig, env={"HOME": self.home.name})
        try:
            second.start()
            self.env.kubectl("apply", "-f", "-", input=json.dumps(cluster_workflow("gone-later")))
            wait_for("the mirrored workflow",
                     lambda: second.json("GET", BASE + "/gone-later")[0] == 200)
            self.assertEqual(second.stop(), 0, second.tail())
            db_path = os.path.join(second.data_dir, "knflow.db")

            def copies():
                with sqlite3.connect(db_path) as db:
                    return [r[0] for r in db.execute(
                        "SELECT name FROM workflows WHERE name = 'gone-later'")]
            self.assertEqual(copies(), ["gone-later"])
            self.env.kubectl("delete", "workflows.knflow.dev", "gone-later", "-n", NS)
            second.start()
            self.assertEqual(copies(), [], second.tail())
            self.assertIn("Removed the copies of workflows deleted while the daemon was not "
                          "watching", second.output())
            self.assertEqual(second.json("GET", BASE + "/gone-later")[0], 404)
            # The Workflows still in the cluster keep theirs.
            status, listed = second.json("GET", BASE)
            self.assertEqual(status, 200, listed)
            with sqlite3.connect(db_path) as db:
                kept = {r[0] for r in db.execute("SELECT name FROM workflows")}
            self.assertEqual(kept, {i["metadata"]["name"] for i in listed["items"]})
            self.assertEqual(second.stop(), 0, second.tail())
        finally:
            second.close()

    def test_the_controller_compiles_expressions_as_the_workers_do(self):
        """A Workflow applied with kubectl is validated by the daemon's controller with its jq
        compiles on the validation worker: off its event loop, and without the daemon's
        $HOME/.jq (a function defined there compiled in the daemon's own process)."""
        doc = cluster_workflow("home-expression")
        doc["spec"]["do"][0]["input"] = "${ knflow_from_home }"
        self.env.kubectl("apply", "-f", "-", input=json.dumps(doc))

        def refused():
            wf = self.kube_get("workflows.knflow.dev", "home-expression", check=False)
            conditions = (wf or {}).get("status", {}).get("conditions", [])
            valid = [c for c in conditions if c["type"] == "Valid"]
            return valid[0] if valid and valid[0]["status"] == "False" else None

        valid = wait_for("Valid=False", refused)
        self.assertEqual(valid["reason"], "InvalidSpec", valid)
        self.assertIn("knflow_from_home/0 is not defined", valid["message"])
        self.assertIn("/spec/do/0/input", valid["message"])
        self.env.kubectl("delete", "workflows.knflow.dev", "home-expression", "-n", NS)

    def test_a_replace_without_resource_version_survives_concurrent_status_writes(self):
        # A PUT without metadata.resourceVersion is unconditional; the apiserver needs a version
        # for a custom resource, so the daemon reads the stored one first. Status writes in
        # between (the controller's; here also a tight loop of the test's own) must not turn it
        # into a 409: the daemon reads again and retries.
        status, _ = self.daemon.json("POST", BASE, json.dumps(cluster_workflow("busy-status")))
        self.assertEqual(status, 201)
        path = f"/apis/knflow.dev/v1alpha1/namespaces/{NS}/workflows/busy-status/status"
        stop = threading.Event()

        def write_status():
            n = 0
            while not stop.is_set():
                n += 1
                self.env.request("PATCH", path, {"status": {"reason": f"busy-{n}"}},
                                 content_type="application/merge-patch+json")

        writer = threading.Thread(target=write_status)
        writer.start()
        try:
            for i in range(20):
                body = cluster_workflow("busy-status", image=f"registry.example/greet:{i}")
                status, answer = self.daemon.json("PUT", BASE + "/busy-status", json.dumps(body))
                self.assertEqual(status, 200, answer)
        finally:
            stop.set()
            writer.join()
        # With the caller's resourceVersion, a stale one is still refused.
        body = cluster_workflow("busy-status")
        body["metadata"]["resourceVersion"] = "1"
        status, problem = self.daemon.json("PUT", BASE + "/busy-status", json.dumps(body))
        self.assertEqual(status, 409, problem)
        self.assertEqual(self.daemon.json("DELETE", BASE + "/busy-status")[0], 200)

    def watches_of(self, group, resource):
        """WATCH requests the apiserver is serving for `resource`, from its own metrics."""
        status, text = self.env.request("GET", "/metrics")
        self.assertEqual(status, 200)
        total = 0
        for line in text.splitlines():
            if (line.startswith("apiserver_longrunning_requests{") and 'verb="WATCH"' in line
                    and f'group="{group}"' in line and f'resource="{resource}"' in line):
                total += int(float(line.rsplit(" ", 1)[1]))
        return total

    def test_one_watch_of_workflows_feeds_the_cache_and_the_controller(self):
        # The garbage collector watches every resource once, brokers included, which knflow does
        # not watch; the daemon adds exactly one watch of Workflows for its REST cache and its
        # controller together (it used to open two).
        wait_for("the daemon's watch", lambda: self.watches_of("knflow.dev", "workflows") >= 1)
        collector = self.watches_of("eventing.knative.dev", "brokers")
        wait_for("one watch of workflows more than the collector's",
                 lambda: self.watches_of("knflow.dev", "workflows") == collector + 1)
        time.sleep(1)  # and it stays one
        self.assertEqual(self.watches_of("knflow.dev", "workflows"), collector + 1)

    def test_refusals_have_clear_answers(self):
        # A construct Knative cannot express is refused by the daemon before the apiserver,
        # naming the step (with a url function it could run standalone: unsupported-mode).
        body = cluster_workflow("needs-engine")
        body["spec"]["functions"]["greet"] = {"url": "http://greet.default.svc"}
        body["spec"]["do"].append({"name": "pause", "wait": "PT1S"})
        status, problem = self.daemon.json("POST", BASE, json.dumps(body))
        self.assertEqual(status, 422, problem)
        self.assertEqual(problem["type"].rsplit("/", 1)[-1], "unsupported-mode")
        self.assertIn("/spec/do/1", json.dumps(problem["errors"]))
        self.assertIn("cluster mode", problem["detail"])
        self.assertIsNone(self.kube_get("workflows.knflow.dev", "needs-engine", check=False))
        # The CRD's own rules still apply (a name the apiserver refuses never gets this far:
        # knflow's validator refuses it first with the same pointer).
        # A namespace the cluster does not have: 404 naming it (it was 500).
        status, problem = self.daemon.json("POST", "/api/v1/namespaces/nonexistent/workflows",
                                           json.dumps(dict(cluster_workflow("lost"),
                                                           metadata={"name": "lost"})))
        self.assertEqual(status, 404, problem)
        self.assertTrue(problem["detail"].startswith('Namespace "nonexistent" does not exist: '),
                        problem)
        # Creating a name twice.
        self.assertEqual(self.daemon.json("POST", BASE, json.dumps(cluster_workflow("twice")))[0], 201)
        status, problem = self.daemon.json("POST", BASE, json.dumps(cluster_workflow("twice")))
        self.assertEqual(status, 409, problem)
        # Invoke has no standalone engine in cluster mode.
        status, problem = self.daemon.json("POST", BASE + "/twice:invoke", "{}")
        self.assertEqual(status, 501, problem)
        self.assertIn("address.url", problem["detail"])
        self.assertEqual(self.daemon.json("DELETE", BASE + "/twice")[0], 200)

    def test_stale_objects_and_preconditions_are_conflicts_not_writes(self):
        # A copy read before its Workflow was deleted and made again, sent back without a
        # resourceVersion, gave the new object its spec; a DeleteOptions body's preconditions
        # were ignored; a dryRun was done for real.
        status, first = self.daemon.json("POST", BASE, json.dumps(cluster_workflow("stale")))
        self.assertEqual(status, 201, first)
        self.assertEqual(self.daemon.json("DELETE", BASE + "/stale")[0], 200)
        wait_for("the delete", lambda: self.kube_get("workflows.knflow.dev", "stale",
                                                     check=False) is None)
        status, again = self.daemon.json("POST", BASE, json.dumps(cluster_workflow("stale")))
        self.assertEqual(status, 201, again)
        old = dict(first, spec=dict(first["spec"],
                                    functions={"greet": {"image": "registry.example/greet:2"}}))
        old["metadata"] = {k: v for k, v in first["metadata"].items() if k != "resourceVersion"}
        status, problem = self.daemon.json("PUT", BASE + "/stale", json.dumps(old))
        self.assertEqual(status, 409, problem)
        self.assertIn("deleted and made again since", problem["detail"])
        self.assertEqual(self.kube_get("workflows.knflow.dev", "stale")["spec"]["functions"],
                         {"greet": {"image": "registry.example/greet:1"}})
        options = {"kind": "DeleteOptions", "apiVersion": "v1",
                   "preconditions": {"uid": first["metadata"]["uid"]}}
        status, problem = self.daemon.json("DELETE", BASE + "/stale", json.dumps(options))
        self.assertEqual(status, 409, problem)
        self.assertEqual([e["pointer"] for e in problem["errors"]], ["/metadata/uid"], problem)
        status, problem = self.daemon.json("DELETE", BASE + "/stale?dryRun=All")
        self.assertEqual(status, 400, problem)
        self.assertIsNotNone(self.kube_get("workflows.knflow.dev", "stale"))
        options["preconditions"]["uid"] = again["metadata"]["uid"]
        status, _ = self.daemon.json("DELETE", BASE + "/stale", json.dumps(options))
        self.assertEqual(status, 200)


if __name__ == "__main__":
    unittest.main(verbosity=2)
