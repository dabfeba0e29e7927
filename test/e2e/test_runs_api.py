"""The runs API of the real daemon: async invoke, list with filters, get, cancel, retry, delete,
input schema refusal, and the broker endpoint starting triggered workflows."""

import json
import os
import sqlite3
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from daemon import Daemon  # noqa: E402

WAITER = """apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata: {name: waiter}
spec:
  input:
    schema: {type: object, required: [n], properties: {n: {type: integer, minimum: 0}}}
  trigger: {filter: {type: com.example.tick}}
  do:
    - {name: nap, wait: PT30S}
"""

FAILER = """apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata: {name: failer}
spec:
  do:
    - {name: check, set: '${ {n: .n} }'}
    - {name: fail, raise: {type: validation, status: 422, title: Refused, detail: '${ "n was " + (.n|tostring) }'}}
"""

NS = "/api/v1/namespaces/default"


class RunsApiTest(unittest.TestCase):
    def setUp(self):
        self.d = Daemon()
        self.d.start()
        for doc in (WAITER, FAILER):
            status, _, body = self.d.call("POST", NS + "/workflows", doc, content_type="application/yaml")
            self.assertEqual(status, 201, body)

    def tearDown(self):
        self.d.close()

    def wait_phase(self, run_id, phases, limit=30):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            status, run = self.d.json("GET", f"{NS}/runs/{run_id}")
            self.assertEqual(status, 200)
            if run["phase"] in phases:
                return run
            time.sleep(0.05)
        self.fail(f"run {run_id} never reached {phases}")

    def test_async_invoke_cancel_delete(self):
        status, headers, body = self.d.call("POST", NS + "/workflows/waiter:invoke?mode=async", '{"n": 1}')
        self.assertEqual(status, 202, body)
        run_id = json.loads(body)["runId"]
        self.assertEqual(headers["Location"], f"{NS}/runs/{run_id}")
        status, _, body = self.d.call("DELETE", f"{NS}/runs/{run_id}")
        self.assertEqual(status, 409, body)  # still running
        status, listing = self.d.json("GET", NS + "/runs?workflow=waiter&phase=running")
        self.assertEqual([r["id"] for r in listing["items"]], [run_id])
        status, _, body = self.d.call("POST", f"{NS}/runs/{run_id}:cancel")
        self.assertEqual(status, 202, body)
        run = self.wait_phase(run_id, {"cancelled"})
        self.assertIn("finishedAt", run)
        status, _, body = self.d.call("POST", f"{NS}/runs/{run_id}:cancel")
        self.assertEqual(status, 409, body)
        status, _, _ = self.d.call("DELETE", f"{NS}/runs/{run_id}")
        self.assertEqual(status, 200)
        status, _, _ = self.d.call("GET", f"{NS}/runs/{run_id}")
        self.assertEqual(status, 404)

    def test_sync_fault_and_retry(self):
        status, headers, body = self.d.call("POST", NS + "/workflows/failer:invoke", '{"n": 7}')
        self.assertEqual(status, 422, body)
        problem = json.loads(body)
        self.assertEqual(problem["error"]["detail"], "n was 7")
        run_id = headers["Knflow-Run-Id"]
        status, run = self.d.json("GET", f"{NS}/runs/{run_id}")
        self.assertEqual(run["phase"], "faulted")
        self.assertEqual(run["error"]["instance"], "/do/1")
        status, _, body = self.d.call("POST", f"{NS}/runs/{run_id}:retry")
        self.assertEqual(status, 202, body)
        self.wait_phase(run_id, {"faulted"})
        status, listing = self.d.json("GET", NS + "/runs?phase=faulted")
        self.assertIn(run_id, [r["id"] for r in listing["items"]])
        # The run keeps the definition it started with, without the workflow's status (which says
        # nothing about how it runs): read from the file, as a resume or the redrive above reads it.
        db = sqlite3.connect(f"file:{os.path.join(self.d.data_dir, 'knflow.db')}?mode=ro", uri=True)
        try:
            (text,) = db.execute("SELECT definition_json FROM runs WHERE id = ?", (run_id,)).fetchone()
        finally:
            db.close()
        definition = json.loads(text)
        status, served = self.d.json("GET", NS + "/workflows/failer")
        self.assertIn("status", served)
        del served["status"]
        self.assertEqual(definition, served)

    def test_input_schema_and_paging(self):
        status, _, body = self.d.call("POST", NS + "/workflows/waiter:invoke", '{"n": -1}')
        self.assertEqual(status, 400, body)
        self.assertEqual([e["pointer"] for e in json.loads(body)["errors"]], ["/n"])
        status, _, body = self.d.call("POST", NS + "/workflows/waiter:invoke", '{"n": ')
        self.assertEqual(status, 400, body)
        ids = set()
        for i in range(5):
            status, _, body = self.d.call("POST", NS + "/workflows/waiter:invoke?mode=async", json.dumps({"n": i}))
            self.assertEqual(status, 202, body)
            ids.add(json.loads(body)["runId"])
        seen, target = [], NS + "/runs?workflow=waiter&limit=2"
        for _ in range(10):
            status, page = self.d.json("GET", target)
            seen += [r["id"] for r in page["items"]]
            cont = page["metadata"].get("continue")
            if not cont:
                break
            target = NS + "/runs?workflow=waiter&limit=2&continue=" + cont
        self.assertEqual(sorted(seen), sorted(ids))
        status, _, _ = self.d.call("GET", NS + "/runs?phase=sleeping")
        self.assertEqual(status, 400)

    def test_broker_starts_matching_workflows(self):
        headers = {"ce-specversion": "1.0", "ce-id": "e-1", "ce-source": "/test", "ce-type": "com.example.tick"}
        status, _, body = self.d.call("POST", NS + "/broker", '{"n": 3}', headers=headers)
        self.assertEqual(status, 202, body)
        runs = json.loads(body)["runs"]
        self.assertEqual([r["workflow"] for r in runs], ["waiter"])
        headers["ce-type"] = "com.example.other"
        status, _, body = self.d.call("POST", NS + "/broker", '{"n": 3}', headers=headers)
        self.assertEqual(json.loads(body)["runs"], [])
        status, _, body = self.d.call("POST", NS + "/broker", '{"n": 3}')
        self.assertEqual(status, 400, body)  # not a CloudEvent


if __name__ == "__main__":
    unittest.main(verbosity=2)
