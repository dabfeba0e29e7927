"""The C++ Kubernetes client (src/kube) against a real kube-apiserver and etcd (test/kubeenv).

The checks live in a Catch2 driver, kube_integration_driver (test/kube/integration/); this file
starts the control plane, runs the driver with KUBECONFIG, KNFLOW_KUBE_SERVER, KNFLOW_KUBE_TOKEN
and KNFLOW_KUBE_CA, and does what only the harness can: restarting the apiserver while the driver
watches. The driver asks by writing NAME.request into KNFLOW_DRIVER_DIR and waits for NAME.done.

Two control planes: a default one (watch cache on, so bookmarks flow) for everything but the
compaction test, and one with --watch-cache=false and a 1 s etcd compaction interval, where a watch
from an old resourceVersion really gets 410 Gone."""

import os
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

SOURCE_DIR = Path(os.environ.get("KNFLOW_SOURCE_DIR", Path(__file__).resolve().parents[2]))
BINARY_DIR = Path(os.environ.get("KNFLOW_BINARY_DIR", SOURCE_DIR / "build" / "dev"))
DRIVER = BINARY_DIR / "test" / "kube_integration_driver"
sys.path.insert(0, str(SOURCE_DIR / "test" / "kubeenv"))
from kubeenv import KubeEnv  # noqa: E402

DRIVER_TIMEOUT = 420  # seconds for one run of the driver


def run_driver(test: unittest.TestCase, kube: KubeEnv, tags: str) -> None:
    """Runs the driver's test cases matching `tags`, serving its requests, and fails the test
    unless every case passed."""
    if not os.access(DRIVER, os.X_OK):
        test.fail(f"{DRIVER} is missing: build the target kube_integration_driver")
    with tempfile.TemporaryDirectory(prefix="knflow-kube-driver-") as folder:
        requests = Path(folder)
        env = {**os.environ, **kube.env(), "KNFLOW_DRIVER_DIR": folder}
        proc = subprocess.Popen([str(DRIVER), tags, "--durations", "yes"], env=env)
        deadline = time.monotonic() + DRIVER_TIMEOUT
        try:
            while proc.poll() is None:
                for request in sorted(requests.glob("*.request")):
                    what = request.stem
                    request.unlink()
                    if what == "restart-apiserver":
                        print("harness: restarting kube-apiserver", file=sys.stderr, flush=True)
                        kube.restart_apiserver()
                    else:
                        test.fail(f"the driver asked for something unknown: {what}")
                    (requests / f"{what}.done").write_text("done\n")
                if time.monotonic() > deadline:
                    test.fail(f"the driver ran longer than {DRIVER_TIMEOUT} s")
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        test.assertEqual(proc.returncode, 0, f"kube_integration_driver {tags} failed (see above)")


class KubeClientTest(unittest.TestCase):
    def test_client_against_a_real_apiserver(self):
        """Verbs, pagination, conflicts, apply, status, Leases, TLS, tokens, rate limit, watches,
        the informer with bookmarks, and recovery after an apiserver restart."""
        with KubeEnv() as kube:
            run_driver(self, kube, "[kube-it]~[gone]")

    def test_informer_relists_after_compaction(self):
        """A watch from a compacted resourceVersion gets 410; the relist's synthetic deletes."""
        with KubeEnv(watch_cache=False, etcd_compaction_interval="1s") as kube:
            run_driver(self, kube, "[gone]")


if __name__ == "__main__":
    unittest.main(verbosity=2)
