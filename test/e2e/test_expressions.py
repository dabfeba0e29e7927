"""Expressions against the real daemon: validation stays bounded, and hostile jq programs fault
their own step with an `expression` error while the daemon keeps serving."""

import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from daemon import Daemon  # noqa: E402

NS = "/api/v1/namespaces/default"


def doc(name, steps):
    return {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": name},
            "spec": {"do": steps}}


class ExpressionsTest(unittest.TestCase):
    def test_a_long_expression_is_refused_at_once_and_the_daemon_keeps_serving(self):
        # jq 1.6 compiles `.+.+…+.` in time that grows with the square of its length, in the
        # daemon's own process when validating: 100 KB took minutes and then overflowed the stack.
        chain = ".+" * 50000 + "."
        with Daemon() as d:
            d.start()
            for path in ("/api/v1/validate", NS + "/workflows"):
                started = time.monotonic()
                status, problem = d.json("POST", path, json.dumps(doc("long", [
                    {"name": "add", "set": "${ " + chain + " }"}])))
                self.assertEqual(status, 422, problem)
                self.assertLess(time.monotonic() - started, 5)
                [error] = problem["errors"]
                self.assertEqual(error["pointer"], "/spec/do/0/set")
                self.assertIn("is 100003 bytes long, more than the limit of 4096 bytes",
                              error["detail"])
                self.assertLess(len(error["detail"]), 300)  # the expression is not quoted whole
            status, _, _ = d.call("GET", "/readyz")
            self.assertEqual(status, 200)
            self.assertIsNone(d.proc.poll(), d.output())


if __name__ == "__main__":
    unittest.main(verbosity=2)
