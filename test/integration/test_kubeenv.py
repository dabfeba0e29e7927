"""The real Kubernetes test environment itself (test/kubeenv): etcd, kube-apiserver and
kube-controller-manager start; the Knative CRDs are established; a Knative Service's status is
written through the status subresource; the garbage collector cascades an owner's deletion; the
apiserver restarts on the same port with the same certificates and token."""

import json
import os
import ssl
import sys
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

SOURCE_DIR = Path(os.environ.get("KNFLOW_SOURCE_DIR", Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(SOURCE_DIR / "test" / "kubeenv"))
from kubeenv import KubeEnv  # noqa: E402

NAMESPACE = "default"


def knative_service(name, owner=None):
    obj = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "kubeenv-test"}},
        "spec": {"template": {"spec": {"containers": [{"image": "example.com/echo:1"}]}}},
    }
    if owner:
        obj["metadata"]["ownerReferences"] = [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"]}]
    return obj


KSVC = f"/apis/serving.knative.dev/v1/namespaces/{NAMESPACE}/services"
CONFIGMAPS = f"/api/v1/namespaces/{NAMESPACE}/configmaps"


class KubeEnvTest(unittest.TestCase):
    kube: KubeEnv

    @classmethod
    def setUpClass(cls):
        cls.kube = KubeEnv(controller_manager=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.kube.stop()

    def create(self, path, obj):
        status, body = self.kube.request("POST", path, obj)
        self.assertEqual(status, 201, body)
        return body

    def test_knative_crds_are_established(self):
        crds = json.loads(self.kube.kubectl("get", "crd", "-o", "json").stdout)["items"]
        names = {c["metadata"]["name"] for c in crds}
        for name in ("services.serving.knative.dev", "sequences.flows.knative.dev",
                     "parallels.flows.knative.dev", "triggers.eventing.knative.dev",
                     "brokers.eventing.knative.dev"):
            self.assertIn(name, names)
        self.assertNotIn("pingsources.sources.knative.dev", names)  # needs a conversion webhook
        self.assertEqual(len(self.kube.crd_names), len(names))
        for crd in crds:
            conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
            self.assertEqual(conditions.get("Established"), "True", crd["metadata"]["name"])

    def test_tls_is_verified_with_the_generated_ca(self):
        with urllib.request.urlopen(urllib.request.Request(
                self.kube.server + "/version", headers={"Authorization": "Bearer " + self.kube.token}),
                context=ssl.create_default_context(cafile=self.kube.ca_file), timeout=10) as r:
            self.assertEqual(r.status, 200)
        with self.assertRaises(urllib.error.URLError) as caught:  # the system CAs do not know it
            urllib.request.urlopen(self.kube.server + "/version", timeout=10,
                                   context=ssl.create_default_context())
        self.assertIsInstance(caught.exception.reason, ssl.SSLCertVerificationError)
        status, _ = self.kube.request("GET", "/api/v1/namespaces", timeout=10)
        self.assertEqual(status, 200)

    def test_status_subresource_and_garbage_collection(self):
        owner = self.create(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap",
                                         "metadata": {"name": "gc-owner"}, "data": {"k": "v"}})
        svc = self.create(KSVC, knative_service("gc-child", owner))
        generation = svc["metadata"]["generation"]

        # Play the Knative controller's part: Ready through the status subresource.
        status = {"observedGeneration": generation, "url": "http://gc-child.default.example.com",
                  "conditions": [{"type": "Ready", "status": "True",
                                  "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        self.kube.kubectl("patch", "services.serving.knative.dev", "gc-child", "-n", NAMESPACE,
                          "--subresource=status", "--type=merge",
                          "-p", json.dumps({"status": status}))
        code, got = self.kube.request("GET", f"{KSVC}/gc-child")
        self.assertEqual(code, 200, got)
        self.assertEqual(got["status"]["observedGeneration"], generation)
        self.assertEqual(got["status"]["conditions"][0]["type"], "Ready")
        self.assertEqual(got["status"]["conditions"][0]["status"], "True")
        self.assertEqual(got["metadata"]["generation"], generation)  # status does not bump it

        # Writing the main resource ignores status: only the subresource changes it.
        got["status"]["conditions"][0]["status"] = "False"
        code, put = self.kube.request("PUT", f"{KSVC}/gc-child", got)
        self.assertEqual(code, 200, put)
        self.assertEqual(put["status"]["conditions"][0]["status"], "True")

        # Deleting the owner: the garbage collector deletes the Service.
        code, body = self.kube.request("DELETE", f"{CONFIGMAPS}/gc-owner")
        self.assertEqual(code, 200, body)
        deadline = time.monotonic() + 60
        while True:
            code, _ = self.kube.request("GET", f"{KSVC}/gc-child")
            if code == 404:
                break
            self.assertEqual(code, 200)
            if time.monotonic() > deadline:
                self.fail("the garbage collector did not delete the owned Service within 60 s:\n"
                          + self.kube.log("kube-controller-manager")[-3000:])
            time.sleep(0.2)

    def test_restart_apiserver(self):
        self.create(KSVC, knative_service("survives-restart"))
        server, ca = self.kube.server, Path(self.kube.ca_file).read_bytes()
        started = time.monotonic()
        self.kube.restart_apiserver()
        print(f"apiserver restarted in {time.monotonic() - started:.1f} s", file=sys.stderr)
        self.assertEqual(self.kube.server, server)
        self.assertEqual(Path(self.kube.ca_file).read_bytes(), ca)  # same certificate
        out = self.kube.kubectl("get", "services.serving.knative.dev", "-n", NAMESPACE,
                                "-o", "jsonpath={.items[*].metadata.name}").stdout
        self.assertIn("survives-restart", out.split())
        code, body = self.kube.request("GET", KSVC)
        self.assertEqual(code, 200, body)
        self.kube.request("DELETE", f"{KSVC}/survives-restart")

    def test_kubectl_and_helm_are_the_pinned_versions(self):
        out = json.loads(self.kube.kubectl("version", "-o", "json").stdout)
        self.assertTrue(out["serverVersion"]["gitVersion"].startswith("v1.34."), out)
        helm = self.kube.helm("version", "--short").stdout
        self.assertTrue(helm.startswith("v3."), helm)


if __name__ == "__main__":
    unittest.main()
