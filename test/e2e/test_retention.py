"""Retention in the real daemon: finished runs beyond --retention-runs are pruned in batches of
200 while the daemon keeps serving (a pruning round that needed more than one batch once crashed
the daemon)."""

import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from daemon import Daemon  # noqa: E402

NS = "/api/v1/namespaces/default"
QUICK = json.dumps({
    "apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "quick"},
    "spec": {"do": [{"name": "only", "set": {"done": True}}]},
})


class RetentionTest(unittest.TestCase):
    def test_many_batches_are_pruned_while_serving(self):
        with Daemon("--retention-runs", "10", "--retention-interval", "2") as d:
            d.start()
            status, _, body = d.call("POST", NS + "/workflows", QUICK)
            self.assertEqual(status, 201, body)
            for i in range(650):  # more than three batches of 200 to prune
                status, _, body = d.call("POST", NS + "/workflows/quick:invoke", "{}")
                self.assertEqual(status, 200, body)
            deadline = time.monotonic() + 60
            count = None
            while time.monotonic() < deadline:
                self.assertIsNone(d.proc.poll(), d.output())
                status, listed = d.json("GET", NS + "/runs?workflow=quick&limit=1000")
                self.assertEqual(status, 200)
                count = len(listed["items"])
                if count <= 10:
                    break
                time.sleep(0.5)
            self.assertEqual(count, 10)
            self.assertEqual(d.stop(), 0, d.output())


if __name__ == "__main__":
    unittest.main(verbosity=2)
