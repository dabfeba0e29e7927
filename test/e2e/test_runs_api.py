"""The runs API of the real daemon: async invoke, list with filters, get, cancel, retry, delete,
input schema refusal, query parameters checked, time filters compared as instants, and the broker
endpoint starting triggered workflows (503 when a run cannot start, repeats not started twice)."""

import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(__file__))
from daemon import Daemon, LocalFunction  # noqa: E402

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


def failing_then_held(release):
    """A function whose first delivery of each event fails at once (500) and whose later ones (a
    redrive's) are held in flight until `release` is set."""
    deliveries = {}

    def respond(path, headers, body):
        n = deliveries[headers["ce-id"]] = deliveries.get(headers["ce-id"], 0) + 1
        if n > 1:
            release.wait(60)
        return 500, '{"error": "down"}'

    return LocalFunction(respond)


class RunsApiTest(unittest.TestCase):
    def setUp(self):
        self.d = Daemon()
        self.d.start()
        for doc in (WAITER, FAILER):
            status, _, body = self.d.call("POST", NS + "/workflows", doc, content_type="application/yaml")
            self.assertEqual(status, 201, body)

    def tearDown(self):
        self.d.close()

    def one_call_workflow(self, name, url):
        """Stores workflow NAME: one step calling the function at URL."""
        doc = json.dumps({"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                          "metadata": {"name": name},
                          "spec": {"functions": {"f": {"url": url}},
                                   "do": [{"name": "call", "call": "f"}]}})
        status, _, body = self.d.call("POST", NS + "/workflows", doc)
        self.assertEqual(status, 201, body)

    def wait_phase(self, run_id, phases, limit=30):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            status, run = self.d.json("GET", f"{NS}/runs/{run_id}")
            self.assertEqual(status, 200)
            if run["phase"] in phases:
                return run
            time.sleep(0.05)
        self.fail(f"run {run_id} never reached {phases}")

    def test_a_run_route_the_store_fails_under_says_why(self):
        # A lock another process held past the busy timeout (or a full disk, damaged pages) was
        # a bare 500 "internal", its reason only in the log, and a failed read was not counted.
        status, _, body = self.d.call("POST", NS + "/workflows/waiter:invoke?mode=async",
                                      '{"n": 1}')
        self.assertEqual(status, 202, body)
        run_id = json.loads(body)["runId"]
        status, _, body = self.d.call("POST", f"{NS}/runs/{run_id}:cancel")
        self.assertEqual(status, 200, body)
        self.wait_phase(run_id, {"cancelled"})
        locker = sqlite3.connect(os.path.join(self.d.data_dir, "knflow.db"), timeout=30,
                                 isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            status, headers, body = self.d.call("DELETE", f"{NS}/runs/{run_id}")
            # A workflow's write too: it was a 500, not worth sending again.
            w_status, w_headers, w_body = self.d.call("POST", NS + "/workflows", FAILER.replace(
                "name: failer", "name: failer-two"), content_type="application/yaml")
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        self.assertEqual((w_status, w_headers.get("Retry-After")), (503, "1"), w_body)
        self.assertIn("The workflow could not be stored now: ", w_body)
        self.assertEqual(status, 503, body)
        problem = json.loads(body)
        self.assertEqual(problem["type"].rsplit("/", 1)[-1], "storage")
        self.assertIn("The run store is locked by another process (", problem["detail"])
        self.assertEqual(headers["Retry-After"], "1")
        status, _, text = self.d.call("GET", "/metrics")
        self.assertRegex(text, r'(?m)^knflow_sqlite_errors_total\{operation="write"\} [1-9]')
        status, _, _ = self.d.call("DELETE", f"{NS}/runs/{run_id}")
        self.assertEqual(status, 200)  # nothing lost: done once the lock is gone

    def test_run_reads_do_not_wait_for_a_write_held_by_a_lock(self):
        # Run reads went through the writer strand: behind a write waiting out the busy timeout
        # for another process's lock (or a long commit, a prune batch), every GET of a run waited
        # too. They read on a connection of their own now.
        status, _, body = self.d.call("POST", NS + "/workflows/waiter:invoke?mode=async",
                                      '{"n": 1}')
        self.assertEqual(status, 202, body)
        run_id = json.loads(body)["runId"]
        locker = sqlite3.connect(os.path.join(self.d.data_dir, "knflow.db"), timeout=30,
                                 isolation_level=None)
        write = {}

        def held_write():
            write["answer"] = self.d.call("POST", NS + "/workflows", FAILER.replace(
                "name: failer", "name: failer-two"), content_type="application/yaml")

        writer = threading.Thread(target=held_write)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            writer.start()
            time.sleep(1)  # the write is waiting for the lock (up to 5 s)
            status, run = self.d.json("GET", f"{NS}/runs/{run_id}")
            listed, listing = self.d.json("GET", NS + "/runs?workflow=waiter")
            logged, _, _ = self.d.call("GET", f"{NS}/runs/{run_id}/logs")
            answered_while_held = writer.is_alive()
        finally:
            locker.execute("ROLLBACK")
            locker.close()
            writer.join()
        self.assertTrue(answered_while_held, "the reads waited for the held write")
        self.assertEqual((status, run["id"], run["phase"]), (200, run_id, "running"))
        self.assertEqual((listed, [r["id"] for r in listing["items"]]), (200, [run_id]))
        self.assertEqual(logged, 200)
        # The lock was released within the write's busy timeout: it was then done.
        self.assertEqual(write["answer"][0], 201, write["answer"][2])

    def test_the_list_is_in_created_order_for_runs_started_at_once(self):
        # createdAt was taken when the request was read, the list's order (seq) when the run was
        # stored: runs started at the same moment on two threads came out of createdAt order, and
        # a client polling with createdAfter could miss one.
        self.one_call_workflow("quick", "http://127.0.0.1:9/")  # refused at once: the run ends

        def starts():
            for _ in range(25):
                status, _, body = self.d.call("POST", NS + "/workflows/quick:invoke?mode=async", "{}")
                self.assertEqual(status, 202, body)

        threads = [threading.Thread(target=starts) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        status, listing = self.d.json("GET", NS + "/runs?workflow=quick&limit=1000")
        self.assertEqual(status, 200)
        created = [r["createdAt"] for r in listing["items"]]
        self.assertEqual(len(created), 400)
        self.assertEqual(created, sorted(created, reverse=True))
        for run in listing["items"][:3]:
            status, full = self.d.json("GET", f"{NS}/runs/{run['id']}")
            self.assertEqual(full["startedAt"], full["createdAt"])
            self.assertGreaterEqual(full["attempts"][0]["startedAt"], full["createdAt"])

    def test_async_invoke_cancel_delete(self):
        status, headers, body = self.d.call("POST", NS + "/workflows/waiter:invoke?mode=async", '{"n": 1}')
        self.assertEqual(status, 202, body)
        run_id = json.loads(body)["runId"]
        self.assertEqual(headers["Location"], f"{NS}/runs/{run_id}")
        status, _, body = self.d.call("DELETE", f"{NS}/runs/{run_id}")
        self.assertEqual(status, 409, body)  # still running
        status, listing = self.d.json("GET", NS + "/runs?workflow=waiter&phase=running")
        self.assertEqual([r["id"] for r in listing["items"]], [run_id])
        # A UUID is read in either case (RFC 9562 §4): the id in upper case names the same run.
        status, run = self.d.json("GET", f"{NS}/runs/{run_id.upper()}")
        self.assertEqual((status, run["id"]), (200, run_id))
        status, _, body = self.d.call("POST", f"{NS}/runs/{run_id.upper()}:cancel")
        self.assertEqual(status, 200, body)  # the wait stops at once: the answer says how it ended
        self.assertEqual(json.loads(body)["phase"], "cancelled", body)
        run = self.wait_phase(run_id, {"cancelled"})
        self.assertIn("finishedAt", run)
        status, _, body = self.d.call("POST", f"{NS}/runs/{run_id}:cancel")
        self.assertEqual(status, 409, body)
        status, _, _ = self.d.call("DELETE", f"{NS}/runs/{run_id}")
        self.assertEqual(status, 200)
        status, _, _ = self.d.call("GET", f"{NS}/runs/{run_id}")
        self.assertEqual(status, 404)
        # What is no UUID names no run that could exist: 400 saying so (it was 404, as for a
        # run deleted), on every route of a run.
        for method, path in (("GET", "not-a-uuid"), ("GET", "%00"), ("DELETE", "x"),
                             ("POST", "x:cancel"), ("POST", "x:retry"), ("GET", "x/logs"),
                             ("GET", run_id[:-1] + "g")):
            status, _, body = self.d.call(method, f"{NS}/runs/{path}")
            self.assertEqual(status, 400, (method, path, body))
            self.assertEqual(json.loads(body)["type"].rsplit("/", 1)[-1], "invalid-run-id", body)

    def test_a_run_of_data_nested_as_deep_as_allowed_reads_as_yaml(self):
        """Found by fuzzing: the YAML view parsed the run's JSON with the data's own depth bound,
        which the run's fields around the data went past: 500."""
        deep = '{"n": 1, "deep": ' + "[" * 998 + "1" + "]" * 998 + "}"
        status, headers, body = self.d.call("POST", NS + "/workflows/waiter:invoke?mode=async",
                                            deep)
        self.assertEqual(status, 202, body)
        run_id = headers["Knflow-Run-Id"]
        status, headers, body = self.d.call("GET", f"{NS}/runs/{run_id}",
                                            headers={"Accept": "application/yaml"})
        self.assertEqual((status, headers["Content-Type"]), (200, "application/yaml"), body[:300])
        self.assertRegex(body, f'(?m)^id: "?{run_id}"?$')
        self.d.call("POST", f"{NS}/runs/{run_id}:cancel")

    def test_accept_is_honoured_before_a_run_is_touched(self):
        yaml_ = {"Accept": "application/yaml"}
        html = {"Accept": "text/html"}
        status, _, body = self.d.call("POST", NS + "/workflows/waiter:invoke?mode=async", '{"n": 1}',
                                      headers=html)
        self.assertEqual(status, 406, body)
        status, listing = self.d.json("GET", NS + "/runs?workflow=waiter")
        self.assertEqual(listing["items"], [])  # refused before the run started
        status, headers, body = self.d.call("POST", NS + "/workflows/waiter:invoke?mode=async",
                                            '{"n": 1}', headers=yaml_)
        self.assertEqual((status, headers["Content-Type"]), (202, "application/yaml"), body)
        run_id = headers["Knflow-Run-Id"]
        self.assertRegex(body, f'(?m)^runId: "?{run_id}"?$')  # quoted when it starts with digits
        for method, path in (("POST", f"{run_id}:cancel"), ("POST", f"{run_id}:retry"),
                             ("DELETE", run_id)):
            status, _, body = self.d.call(method, f"{NS}/runs/{path}", headers=html)
            self.assertEqual(status, 406, (method, path, body))
        self.assertEqual(self.d.json("GET", f"{NS}/runs/{run_id}")[1]["phase"], "running")
        status, headers, body = self.d.call("POST", f"{NS}/runs/{run_id}:cancel", headers=yaml_)
        self.assertEqual((status, headers["Content-Type"]), (200, "application/yaml"), body)
        self.assertIn("phase: cancelled", body)
        status, headers, body = self.d.call("DELETE", f"{NS}/runs/{run_id}", headers=yaml_)
        self.assertEqual((status, headers["Content-Type"]), (200, "application/yaml"), body)
        self.assertRegex(body, f'(?m)^id: "?{run_id}"?$')
        # Accept on two lines is one list (RFC 9110 §5.3): the second line counts too.
        conn = http.client.HTTPConnection("127.0.0.1", self.d.port, timeout=30)
        try:
            conn.putrequest("GET", NS + "/workflows/waiter")
            conn.putheader("Authorization", "Bearer " + self.d.token)
            conn.putheader("Accept", "application/json;q=0.1")
            conn.putheader("Accept", "application/yaml")
            conn.endheaders()
            reply = conn.getresponse()
            body = reply.read().decode()
            self.assertEqual((reply.status, reply.getheader("Content-Type")),
                             (200, "application/yaml"), body)
        finally:
            conn.close()

    def test_a_delete_racing_a_retry_never_removes_a_running_run(self):
        """Retry and two deletes close together on a faulted run, many times: a delete answers 200
        only for a run that has finished, so never for one a retry has just redriven (the delete
        read the phase, then deleted in a second store operation, and a redrive in between was
        deleted while it ran), and of two deletes only one answers 200 (both did)."""
        release = threading.Event()
        function = failing_then_held(release)
        try:
            self.one_call_workflow("downstream", function.url)
            outcomes = set()
            with ThreadPoolExecutor(3) as pool:
                for i in range(40):
                    status, headers, body = self.d.call("POST", NS + "/workflows/downstream:invoke", "{}")
                    self.assertEqual(status, 500, body)
                    run = f"{NS}/runs/{headers['Knflow-Run-Id']}"
                    # A retry takes more steps than a delete (it may wait for the run's coroutine
                    # to let go, then reads and redrives); sent together, the deletes can win every
                    # time on some machines. The deletes go out up to 10 ms after the retry, so that
                    # they also meet it in the middle of its redrive.
                    retry = pool.submit(lambda: self.d.call("POST", run + ":retry")[0])
                    time.sleep((0, 0.001, 0.002, 0.005, 0.01)[i % 5])
                    deletes = [pool.submit(lambda: self.d.call("DELETE", run)[0]) for _ in range(2)]
                    answers = [retry.result()] + [d.result() for d in deletes]
                    outcomes.add(tuple(answers))
                    self.assertLessEqual(answers[1:].count(200), 1, answers)
                    if answers[0] == 202:  # redriven, and held in its call: still running
                        self.assertNotIn(200, answers[1:], answers)
                        status, found = self.d.json("GET", run)
                        self.assertEqual((status, found["phase"]), (200, "running"), found)
            self.assertIn(202, [answers[0] for answers in outcomes])  # the race was run
        finally:
            release.set()
            function.close()

    def test_of_two_retries_at_once_the_refused_one_says_why(self):
        """Two retries of a faulted run at once: one redrives it, the other is 409 and names the
        phase the run is in now (it said \"this one is faulted\", the phase read before)."""
        release = threading.Event()
        function = failing_then_held(release)
        try:
            self.one_call_workflow("twice", function.url)
            with ThreadPoolExecutor(2) as pool:
                for _ in range(20):
                    status, headers, body = self.d.call("POST", NS + "/workflows/twice:invoke", "{}")
                    self.assertEqual(status, 500, body)
                    retry = f"{NS}/runs/{headers['Knflow-Run-Id']}:retry"
                    answers = sorted(pool.map(lambda _: self.d.call("POST", retry)[::2], range(2)))
                    self.assertEqual([status for status, _ in answers], [202, 409], answers)
                    self.assertIn("this one is running", answers[1][1])
        finally:
            release.set()
            function.close()

    def test_a_function_answering_bytes_that_are_not_text_leaves_its_run_readable(self):
        """A function's answer that is not UTF-8: as a success it faults the call (502, not
        retried: the engine carries data as JSON or text); in an error answer its start is quoted
        in the error with the bytes shown as U+FFFD. Every answer about the runs is JSON (the run
        list, the run, a sync invoke's problem answered invalid JSON, one such run made `knflow
        runs` abort, and a restart faulted a running one as unreadable)."""
        function = LocalFunction(lambda path, headers, body: (500 if path == "/fail" else 200,
                                                              b"\xff\xfe binary"))
        try:
            for name, path in (("bytes", "/ok"), ("badbytes", "/fail")):
                self.one_call_workflow(name, function.url + path)
            status, _, raw = self.raw_call("POST", NS + "/workflows/bytes:invoke")
            self.assertEqual(status, 502, raw)
            self.assertIn("not UTF-8 text", json.loads(raw.decode())["error"]["detail"])
            status, headers, raw = self.raw_call("POST", NS + "/workflows/badbytes:invoke")
            self.assertEqual(status, 500, raw)
            problem = json.loads(raw.decode())  # valid UTF-8, and JSON
            self.assertIn("\ufffd\ufffd binary", problem["error"]["detail"], problem)
            failed = headers["Knflow-Run-Id"]

            status, _, raw = self.raw_call("GET", NS + "/runs")
            self.assertEqual(status, 200, raw)
            listed = {r["workflow"]: r for r in json.loads(raw.decode())["items"]}
            self.assertIn("\ufffd\ufffd binary", listed["badbytes"]["error"]["detail"], listed)
            self.assertEqual(listed["bytes"]["phase"], "faulted", listed)
            status, _, raw = self.raw_call("GET", f"{NS}/runs/{failed}")
            self.assertEqual(status, 200, raw)
            run = json.loads(raw.decode())
            self.assertIn("\ufffd\ufffd binary", json.dumps(run, ensure_ascii=False), run)
        finally:
            function.close()

    def test_numbers_reach_the_function_and_the_answer_as_they_were_sent(self):
        """Doubles keep their value and their usual form on the way through a run: a function
        receives, and a sync invoke and the run show, `42.5`, not Boost.JSON 1.81's
        `4.25E1`; 17 significant digits survive (its parser read 0.30000000000000004 one unit in
        the last place off); an integral double stays a double (`5000.0`)."""
        received = []

        def echo(path, headers, body):
            received.append(body.decode())
            return 200, body

        function = LocalFunction(echo)
        sent = ('{"price":42.5,"ratio":0.30000000000000004,"big":5000.0,"tiny":1e-07,'
                '"huge":1e+300,"odd":8750541415622993.0,"n":3}')
        try:
            self.one_call_workflow("numbers", function.url)
            req = urllib.request.Request(self.d.base + NS + "/workflows/numbers:invoke",
                                         data=sent.encode(), method="POST")
            req.add_header("Authorization", "Bearer " + self.d.token)
            req.add_header("Content-Type", "application/json")
            with urllib.request.urlopen(req, timeout=30) as r:
                answer, run_id = r.read().decode(), r.headers["Knflow-Run-Id"]
            self.assertEqual(received, [sent])
            self.assertEqual(answer, sent)
            status, _, raw = self.raw_call("GET", f"{NS}/runs/{run_id}")
            self.assertEqual(status, 200, raw)
            # The run's input and output, the step's output, its attempt's input and output.
            self.assertEqual(raw.decode().count(sent), 5, raw)
        finally:
            function.close()

    def raw_call(self, method, path):
        """(status, headers, body bytes): the body not decoded, so a test sees invalid UTF-8."""
        req = urllib.request.Request(self.d.base + path, data=b"{}" if method == "POST" else None,
                                     method=method)
        req.add_header("Authorization", "Bearer " + self.d.token)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

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
            # The token is good for this list's filters only.
            status, problem = self.d.json("GET", NS + "/runs?limit=2&continue=" + cont)
            self.assertEqual(status, 400, problem)
            self.assertEqual([e["parameter"] for e in problem["errors"]], ["continue"])
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
        self.assertEqual(json.loads(body)["type"].rsplit("/", 1)[-1], "not-a-cloudevent")
        # Binary mode without ce-specversion names it (it was told to send a CloudEvent).
        partial = {k: v for k, v in headers.items() if k != "ce-specversion"}
        status, _, body = self.d.call("POST", NS + "/broker", '{"n": 3}', headers=partial)
        self.assertEqual(status, 400, body)
        problem = json.loads(body)
        self.assertEqual(problem["type"].rsplit("/", 1)[-1], "malformed-event")
        self.assertEqual(problem["detail"], "The CloudEvent is malformed: the required attribute "
                         "specversion is missing (a binary-mode event's ce-specversion header, "
                         "1.0); it has ce-id, ce-source, ce-type.")
        # So at invoke, which takes plain data too: as data, the event's id, source, type and
        # extensions were replaced without a word.
        status, _, body = self.d.call("POST", NS + "/workflows/waiter:invoke?mode=async",
                                      '{"n": 3}', headers=dict(partial, **{"ce-tenant": "acme"}))
        self.assertEqual(status, 400, body)
        self.assertEqual(json.loads(body)["detail"], "The CloudEvent is malformed: the required "
                         "attribute specversion is missing (a binary-mode event's ce-specversion "
                         "header, 1.0); it has ce-id, ce-source, ce-type, ce-tenant.")

        # An empty filter value matches any value, as a Knative Trigger's does (it matched only
        # an empty one); a missing extension still fails it.
        doc = json.dumps({"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                          "metadata": {"name": "any-type"},
                          "spec": {"trigger": {"filter": {"source": "/any", "type": "",
                                                          "subject": ""}},
                                   "do": [{"name": "keep", "set": {"ok": True}}]}})
        status, _, body = self.d.call("POST", NS + "/workflows", doc)
        self.assertEqual(status, 201, body)
        trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        headers = {"ce-specversion": "1.0", "ce-id": "e-any", "ce-source": "/any",
                   "ce-type": "com.example.whatever", "traceparent": trace}
        status, _, body = self.d.call("POST", NS + "/broker", '{"n": 3}', headers=headers)
        self.assertEqual(status, 202, body)
        [run] = json.loads(body)["runs"]
        self.assertEqual(run["workflow"], "any-type")
        # The traceparent header continues the caller's trace (only an extension did).
        status, got = self.d.json("GET", f"{NS}/runs/{run['runId']}")
        self.assertTrue(got["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-"), got)

    def test_the_input_schema_judges_the_data_the_run_gets(self):
        """Text data stays a string in the run, and the schema judged it as JSON: `123` sent as
        text/plain was refused by `{type: string}` and `{"a":1}` as text passed `{type: object}`,
        at `:invoke` and at the broker."""
        doc = json.dumps({"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                          "metadata": {"name": "texty"},
                          "spec": {"input": {"schema": {"type": "string"}},
                                   "trigger": {"filter": {"type": "com.example.text"}},
                                   "do": [{"name": "keep", "set": "${ . }"}]}})
        status, _, body = self.d.call("POST", NS + "/workflows", doc)
        self.assertEqual(status, 201, body)
        status, _, body = self.d.call("POST", NS + "/workflows/texty:invoke", "123",
                                      content_type="text/plain")
        self.assertEqual((status, body), (200, '"123"'))  # the string, which `set` kept as JSON
        status, _, body = self.d.call("POST", NS + "/workflows/texty:invoke", "123")
        self.assertEqual(status, 400, body)  # as JSON, the number 123
        # An empty Content-Type is as none: JSON (it kept the text as a string).
        status, _, body = self.d.call("POST", NS + "/workflows/texty:invoke", "123",
                                      content_type="")
        self.assertEqual(status, 400, body)
        # One that is no media type is refused, as a binary-mode event's is (it kept a string).
        status, _, body = self.d.call("POST", NS + "/workflows/texty:invoke", "123",
                                      content_type="application/json, text/plain")
        self.assertEqual(status, 400, body)
        self.assertIn("not a media type", body)
        # White space around a parameter's `;` is HTTP's (it was refused as a control character).
        status, _, body = self.d.call("POST", NS + "/workflows/texty:invoke", "123",
                                      content_type="text/plain;\tcharset=utf-8")
        self.assertEqual((status, body), (200, '"123"'))
        headers = {"ce-specversion": "1.0", "ce-id": "t-1", "ce-source": "/test",
                   "ce-type": "com.example.text"}
        status, _, body = self.d.call("POST", NS + "/broker", "123", content_type="text/plain",
                                      headers=headers)
        self.assertEqual(status, 202, body)
        answer = json.loads(body)
        self.assertEqual([r["workflow"] for r in answer["runs"]], ["texty"], answer)
        self.assertEqual(answer.get("rejected", []), [], answer)

    def test_an_emit_whose_subject_no_cloudevent_may_hold_faults_before_sending(self):
        doc = json.dumps({"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                          "metadata": {"name": "bad-subject"},
                          "spec": {"do": [{"name": "tell", "emit": {
                              "type": "com.example.told", "source": "/test",
                              "subject": '${ "line\\nbreak" }'}}]}})
        status, _, body = self.d.call("POST", NS + "/workflows", doc)
        self.assertEqual(status, 201, body)
        status, _, body = self.d.call("POST", NS + "/workflows/bad-subject:invoke", "{}")
        self.assertEqual(status, 400, body)
        error = json.loads(body)["error"]
        self.assertEqual((error["title"], error["instance"]), ("Invalid event", "/do/0"), error)
        self.assertIn("the attribute subject holds a character CloudEvents forbids (U+000A",
                      error["detail"])
        # And such an event sent to the daemon is refused, naming the attribute.
        headers = {"ce-specversion": "1.0", "ce-id": "c-1", "ce-source": "/test",
                   "ce-type": "com.example.tick", "ce-subject": "a%00b"}
        status, _, body = self.d.call("POST", NS + "/broker", "{}", headers=headers)
        self.assertEqual(status, 400, body)
        self.assertIn("the attribute subject holds a character CloudEvents forbids (U+0000",
                      json.loads(body)["detail"])

    def test_an_emit_reaches_a_daemon_listening_on_another_loopback_address(self):
        """It was sent to 127.0.0.1 whatever loopback address the daemon listened on."""
        other = Daemon()
        other.args[other.args.index("--listen") + 1] = f"127.0.0.2:{other.port}"
        other.base = f"http://127.0.0.2:{other.port}"
        other.start()
        try:
            for doc in (
                    {"metadata": {"name": "teller"},
                     "spec": {"do": [{"name": "tell", "emit": {"type": "com.example.told",
                                                               "source": "/test"}}]}},
                    {"metadata": {"name": "listener"},
                     "spec": {"trigger": {"filter": {"type": "com.example.told"}},
                              "do": [{"name": "keep", "set": {"heard": True}}]}}):
                doc.update({"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow"})
                status, _, body = other.call("POST", NS + "/workflows", json.dumps(doc))
                self.assertEqual(status, 201, body)
            status, _, body = other.call("POST", NS + "/workflows/teller:invoke", "{}")
            self.assertEqual(status, 200, body)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                status, listing = other.json("GET", NS + "/runs?workflow=listener")
                if [r["phase"] for r in listing["items"]] == ["completed"]:
                    break
                time.sleep(0.1)
            self.assertEqual([r["phase"] for r in listing["items"]], ["completed"], listing)
        finally:
            other.close()

    def test_an_emit_matching_its_own_trigger_ends_after_255_hops(self):
        """Each emitted event had a new id and no hop count, so a workflow whose emit matched its
        own trigger ran for ever. The broker now counts hops as Knative's does
        (knativebrokerttl): 255 runs, then the event is dropped."""
        doc = json.dumps({"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                          "metadata": {"name": "echoer"},
                          "spec": {"trigger": {"filter": {"type": "com.example.loop"}},
                                   "do": [{"name": "again", "emit": {"type": "com.example.loop",
                                                                     "source": "/loop"}}]}})
        status, _, body = self.d.call("POST", NS + "/workflows", doc)
        self.assertEqual(status, 201, body)
        headers = {"ce-specversion": "1.0", "ce-id": "l-1", "ce-source": "/test",
                   "ce-type": "com.example.loop"}
        status, _, body = self.d.call("POST", NS + "/broker", "{}", headers=headers)
        self.assertEqual(status, 202, body)
        deadline = time.monotonic() + 120
        while "Dropped an event with no broker hops left" not in self.d.output():
            self.assertLess(time.monotonic(), deadline, self.d.output()[-3000:])
            time.sleep(0.1)
        status, listing = self.d.json("GET", NS + "/runs?workflow=echoer&limit=1000")
        self.assertEqual(len(listing["items"]), 255)
        # An event with no hops left starts nothing; one with one hop left starts a run that sees
        # none left.
        headers.update({"ce-id": "l-2", "ce-knativebrokerttl": "0"})
        status, _, body = self.d.call("POST", NS + "/broker", "{}", headers=headers)
        self.assertEqual((status, json.loads(body)["runs"]), (202, []), body)
        self.assertIn("knativebrokerttl is 0: it has no broker hops left", body)
        headers.update({"ce-id": "l-3", "ce-knativebrokerttl": "1", "ce-type": "com.example.tick"})
        status, _, body = self.d.call("POST", NS + "/broker", '{"n": 0}', headers=headers)
        [run] = json.loads(body)["runs"]
        status, got = self.d.json("GET", f"{NS}/runs/{run['runId']}")
        self.assertEqual(got["input"]["event"]["knativebrokerttl"], "0", got)

    def test_a_repeat_after_a_kill_does_not_start_a_second_run(self):
        """The broker's memory of the runs it started survives a kill -9 and a restart (it is
        recorded with each run's insert), so a sender that delivers the event again after losing
        the daemon gets the run it already has."""
        headers = {"ce-specversion": "1.0", "ce-id": "e-kill", "ce-source": "/test",
                   "ce-type": "com.example.tick"}
        status, _, body = self.d.call("POST", NS + "/broker", '{"n": 3}', headers=headers)
        self.assertEqual(status, 202, body)
        [first] = json.loads(body)["runs"]
        self.d.stop(signal.SIGKILL)
        self.d.start()
        status, _, body = self.d.call("POST", NS + "/broker", '{"n": 3}', headers=headers)
        self.assertEqual(status, 202, body)
        self.assertEqual(json.loads(body)["runs"],
                         [{"workflow": "waiter", "runId": first["runId"], "duplicate": True}])
        status, listing = self.d.json("GET", NS + "/runs?workflow=waiter")
        self.assertEqual([r["id"] for r in listing["items"]], [first["runId"]])
        # Another event id is another event.
        headers["ce-id"] = "e-kill-2"
        status, _, body = self.d.call("POST", NS + "/broker", '{"n": 3}', headers=headers)
        self.assertNotIn("duplicate", json.loads(body)["runs"][0])

    def test_a_repeat_after_a_delete_or_pruning_starts_a_run_again(self):
        """The broker forgets the runs that DELETE or retention removed, as docs/api.md says, and
        as a restart does (a repeat got `duplicate` with the id of a run that answered 404)."""
        headers = {"ce-specversion": "1.0", "ce-id": "e-del", "ce-source": "/test",
                   "ce-type": "com.example.tick"}

        def deliver():
            status, _, body = self.d.call("POST", NS + "/broker", '{"n": 3}', headers=headers)
            self.assertEqual(status, 202, body)
            [run] = json.loads(body)["runs"]
            return run

        def end(run_id):
            status, _, body = self.d.call("POST", f"{NS}/runs/{run_id}:cancel")
            self.assertEqual(status, 200, body)

        first = deliver()
        self.assertEqual(deliver(), {**first, "duplicate": True})
        end(first["runId"])
        status, _, body = self.d.call("DELETE", f"{NS}/runs/{first['runId']}")
        self.assertEqual(status, 200, body)
        second = deliver()
        self.assertNotIn("duplicate", second)
        self.assertNotEqual(second["runId"], first["runId"])
        self.assertEqual(deliver(), {**second, "duplicate": True})
        end(second["runId"])

        # Retention: keep one finished run, pruned every 50 ms.
        self.assertEqual(self.d.stop(), 0, self.d.tail())
        self.d.args += ["--retention-runs", "1", "--retention-interval", "0.05"]
        self.d.start()
        self.assertEqual(deliver(), {**second, "duplicate": True})  # seeded from the store
        status, _, body = self.d.call("POST", NS + "/workflows/failer:invoke", '{"n": 1}')
        self.assertEqual(status, 422, body)  # a newer finished run: the second one is pruned
        deadline = time.monotonic() + 30
        while self.d.call("GET", f"{NS}/runs/{second['runId']}")[0] != 404:
            self.assertLess(time.monotonic(), deadline, "never pruned")
            time.sleep(0.05)
        third = deliver()
        self.assertNotIn("duplicate", third)
        self.assertNotEqual(third["runId"], second["runId"])

    def test_a_shutdown_answers_a_waiting_invoke_and_the_run_resumes(self):
        """SIGTERM while a synchronous invoke waits for a run: the invoke answers 202 with the run
        going on (the drain closed its connection unanswered after --shutdown-timeout, and the exit
        waited for the invoke's own timeout), and the run resumes at the next start."""
        answer = {}

        def invoke():
            answer["reply"] = self.d.call("POST", NS + "/workflows/waiter:invoke?timeout=25",
                                          '{"n": 1}')

        caller = threading.Thread(target=invoke)
        caller.start()
        deadline = time.monotonic() + 30
        while not self.d.json("GET", NS + "/runs?workflow=waiter&phase=running")[1]["items"]:
            self.assertLess(time.monotonic(), deadline, "the run never started")
            time.sleep(0.05)
        self.assertEqual(self.d.stop(signal.SIGTERM), 0, self.d.output())
        caller.join(30)
        status, _, body = answer["reply"]
        self.assertEqual(status, 202, body)
        run_id = json.loads(body)["runId"]
        self.d.start()
        status, run = self.d.json("GET", f"{NS}/runs/{run_id}")
        self.assertEqual((status, run["phase"]), (200, "running"))

    def test_a_client_that_leaves_a_waiting_invoke_frees_its_connection(self):
        """Three synchronous invokes of a 30 s run whose clients hang up: their connections are
        freed at once and the runs go on. They were held until the runs ended or the invoke timed
        out, so clients that gave up on slow runs could take every --max-connections slot."""
        request = (f"POST {NS}/workflows/waiter:invoke?timeout=25 HTTP/1.1\r\n"
                   f"Host: 127.0.0.1\r\nAuthorization: Bearer {self.d.token}\r\n"
                   "Content-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"n\": 1}").encode()

        def connections():
            status, _, text = self.d.call("GET", "/metrics")
            self.assertEqual(status, 200)
            [line] = [l for l in text.splitlines() if l.startswith("knflow_http_connections ")]
            return float(line.split()[1])

        clients = []
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", self.d.port))
            s.sendall(request)
            clients.append(s)
        deadline = time.monotonic() + 30
        while len(self.d.json("GET", NS + "/runs?workflow=waiter&phase=running")[1]["items"]) < 3:
            self.assertLess(time.monotonic(), deadline, "the invokes never started their runs")
            time.sleep(0.05)
        self.assertGreaterEqual(connections(), 4)  # the three invokes wait, and this request
        for s in clients:
            s.close()
        # Freed at once, not after the invokes' 25 s (a connection this test made a moment ago may
        # still be counted).
        deadline = time.monotonic() + 10
        while connections() > 2:
            self.assertLess(time.monotonic(), deadline, "the connections stayed taken:\n" + self.d.tail())
            time.sleep(0.05)
        status, runs = self.d.json("GET", NS + "/runs?workflow=waiter")
        self.assertEqual(status, 200)
        self.assertEqual(sorted(r["phase"] for r in runs["items"]), ["running"] * 3)

    def test_one_daemon_per_data_directory(self):
        """A second daemon on the same data directory (on another port) is refused: it resumed the
        first one's runs while they went on. The database and the token are the owner's alone."""
        def second_daemon():
            other = Daemon(data_dir=self.d.data_dir)
            other.start(wait_ready=False)
            try:
                return other.proc.wait(30), other.output()
            finally:
                other.close()

        code, output = second_daemon()
        self.assertEqual(code, 2, output)
        self.assertIn(f"another knflow serve (pid {self.d.proc.pid}) uses the data directory "
                      f"{self.d.data_dir}", output)
        self.assertEqual(self.d.call("GET", "/readyz")[0], 200)  # the first one is untouched
        for name in ("knflow.db", "knflow.db-wal", "knflow.db-shm", "token", "lock"):
            mode = os.stat(os.path.join(self.d.data_dir, name)).st_mode & 0o777
            self.assertEqual(mode, 0o600, name)
        self.assertEqual(os.stat(self.d.data_dir).st_mode & 0o777, 0o700)
        # The lock file deleted (by a clean-up of stale files, say) does not let a second one in:
        # the directory itself is locked too.
        os.remove(os.path.join(self.d.data_dir, "lock"))
        code, output = second_daemon()
        self.assertEqual(code, 2, output)
        self.assertIn(f"uses the data directory {self.d.data_dir}", output)
        self.assertEqual(self.d.call("GET", "/readyz")[0], 200)
        # Once the first one is gone, the directory is free (kill -9 included).
        self.d.stop(signal.SIGKILL)
        self.d.start()

    def test_one_daemon_per_database_file(self):
        """A knflow.db that links to another daemon's passed the data directory's lock: two
        daemons resumed each other's runs, and through a hard link each kept a WAL of its own
        beside its name, damaging the file. The file is locked too, whichever name opened it."""
        status, _, body = self.d.call("POST", NS + "/workflows/waiter:invoke?mode=async",
                                      '{"n": 1}')
        self.assertEqual(status, 202, body)
        run_id = json.loads(body)["runId"]
        db = os.path.join(self.d.data_dir, "knflow.db")
        for link in (os.symlink, os.link):
            other_dir = tempfile.mkdtemp(prefix="knflow-linked-")
            try:
                link(db, os.path.join(other_dir, "knflow.db"))
                other = Daemon(data_dir=other_dir)
                other.start(wait_ready=False)
                try:
                    code, output = other.proc.wait(30), other.output()
                finally:
                    other.close()
                self.assertEqual(code, 2, output)
                self.assertIn("another knflow serve uses the database file "
                              f"{os.path.join(other_dir, 'knflow.db')}", output)
                if link is os.symlink:
                    self.assertIn(f"({os.path.realpath(db)})", output)
                self.assertNotIn("Resumed", output)
            finally:
                shutil.rmtree(other_dir)
            # The owner's run goes on where it was.
            status, run = self.d.json("GET", f"{NS}/runs/{run_id}")
            self.assertEqual((status, run["phase"]), (200, "running"))
        self.assertEqual(self.d.call("GET", "/readyz")[0], 200)

    def test_event_data_that_is_not_text_is_refused(self):
        """The engine carries event data as JSON or text, inside the run's stored JSON state: data
        or a Content-Type that is not UTF-8 is 400 and starts no run (such a run was stored
        unreadable: its GET answered invalid JSON, and a restart faulted it)."""
        sleeper = json.dumps({"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                              "metadata": {"name": "sleeper"},
                              "spec": {"do": [{"name": "nap", "wait": "PT30S"}]}})
        status, _, body = self.d.call("POST", NS + "/workflows", sleeper)
        self.assertEqual(status, 201, body)
        binary = {"ce-specversion": "1.0", "ce-id": "b-1", "ce-source": "/test", "ce-type": "t"}
        structured = json.dumps({"specversion": "1.0", "id": "s-1", "source": "/test", "type": "t",
                                 "datacontenttype": "application/octet-stream", "data_base64": "//4="})
        for name, body, content_type, headers, problem_type in [
                ("plain data", b"\xff\xfe", "application/octet-stream", {}, "malformed-document"),
                ("binary mode", b"\xff\xfe", "application/octet-stream", binary, "malformed-event"),
                ("structured mode", structured, "application/cloudevents+json", {}, "malformed-event"),
                ("plain Content-Type", "hi", "text/\xffplain", {}, "malformed-document"),
                ("binary Content-Type", "hi", "text/\xffplain", binary, "malformed-event")]:
            with self.subTest(name):
                self.assert_refused(NS + "/workflows/sleeper:invoke?mode=async", body, content_type,
                                    headers, problem_type, "UTF-8")
        status, listing = self.d.json("GET", NS + "/runs?workflow=sleeper")
        self.assertEqual(listing["items"], [])
        # The broker reads events the same way.
        status, _, text = self.d.call("POST", NS + "/broker", b"\xff", content_type="application/octet-stream",
                                      headers=binary)
        self.assertEqual(status, 400, text)
        # Text of any type is still data.
        status, _, text = self.d.call("POST", NS + "/workflows/sleeper:invoke?mode=async", "h\u00e9",
                                      content_type="text/plain")
        self.assertEqual(status, 202, text)

    def assert_refused(self, target, body, content_type, headers, problem_type, phrase):
        """POST target answers 400 with a problem of that type whose detail says `phrase`."""
        status, _, text = self.d.call("POST", target, body, content_type=content_type, headers=headers)
        self.assertEqual(status, 400, text)
        problem = json.loads(text)
        self.assertEqual(problem["type"], "https://knflow.dev/problems/" + problem_type, text)
        self.assertIn(phrase, problem["detail"])

    def test_data_declared_json_must_be_json_in_every_mode(self):
        """Data whose media type says JSON must parse, whatever carries it (a CloudEvent's such
        data became a string, and a plain body's too when its Content-Type was not lower case)."""
        binary = {"ce-specversion": "1.0", "ce-id": "j-1", "ce-source": "/test", "ce-type": "t"}
        structured = json.dumps({"specversion": "1.0", "id": "j-2", "source": "/test", "type": "t",
                                 "datacontenttype": "application/json",
                                 "data_base64": "e2JhZA=="})  # {bad
        for name, body, content_type, headers, problem_type in [
                ("plain, upper case", "{bad", "Application/JSON", {}, "malformed-document"),
                ("binary mode", "{bad", "application/json", binary, "malformed-event"),
                ("binary mode, +json", "{bad", "application/vnd.example+json; charset=utf-8", binary,
                 "malformed-event"),
                ("structured mode", structured, "application/cloudevents+json", {}, "malformed-event")]:
            with self.subTest(name):
                self.assert_refused(NS + "/workflows/failer:invoke", body, content_type, headers,
                                    problem_type, "not valid JSON")
        status, listing = self.d.json("GET", NS + "/runs?workflow=failer")
        self.assertEqual(listing["items"], [])
        # Valid JSON data in binary mode still runs; data of another type stays a string.
        status, _, text = self.d.call("POST", NS + "/workflows/failer:invoke", '{"n": 5}', headers=binary)
        self.assertEqual(json.loads(text)["error"]["detail"], "n was 5", text)
        status, _, text = self.d.call("POST", NS + "/workflows/failer:invoke?mode=async", "{bad",
                                      content_type="text/plain", headers={**binary, "ce-id": "j-3"})
        self.assertEqual(status, 202, text)
        status, run = self.d.json("GET", f"{NS}/runs/{json.loads(text)['runId']}")
        self.assertEqual(run["input"]["data"], "{bad")

    def invalid_query(self, method, target, parameters, body=None):
        """Asserts a 400 invalid-query naming exactly these parameters; returns the problem."""
        status, headers, text = self.d.call(method, target, body)
        self.assertEqual(status, 400, text)
        self.assertEqual(headers["Content-Type"], "application/problem+json")
        problem = json.loads(text)
        self.assertEqual(problem["type"], "https://knflow.dev/problems/invalid-query", text)
        self.assertEqual([e["parameter"] for e in problem["errors"]], parameters, text)
        return problem

    def test_invoke_query_is_checked(self):
        for query, parameters in [("timeout=nan", ["timeout"]), ("timeout=-1", ["timeout"]),
                                  ("timeout=soon", ["timeout"]), ("timeout=", ["timeout"]),
                                  ("mode=asynk", ["mode"]), ("mode=async&timeout=nan", ["timeout"]),
                                  ("mode=ASYNC&timeout=-inf", ["mode", "timeout"])]:
            with self.subTest(query=query):
                problem = self.invalid_query("POST", NS + "/workflows/waiter:invoke?" + query,
                                             parameters, '{"n": 1}')
                for error in problem["errors"]:
                    self.assertIn(error["parameter"], error["detail"])
        # Nothing was started by the refused requests.
        status, listing = self.d.json("GET", NS + "/runs?workflow=waiter")
        self.assertEqual(listing["items"], [])
        status, _, body = self.d.call("POST", NS + "/workflows/waiter:invoke?mode=sync&timeout=0",
                                      '{"n": 1}')
        self.assertEqual(status, 202, body)  # timeout 0: the run goes on

    def test_statuses_about_the_request_itself_are_answered_as_a_gateways(self):
        """A run's 413 or 431 (an emit's event the broker refused as too large) told the client
        to shrink a request that was fine, and its 408 (a timeout) that it may send it again,
        which would start the run again: 502 and 504, the run's status kept in error.status."""
        for status, answered in [(413, 502), (431, 502), (414, 502), (421, 502), (415, 502),
                                 (505, 502), (408, 504), (422, 422)]:
            name = f"raises-{status}"
            doc = json.dumps({"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                              "metadata": {"name": name},
                              "spec": {"do": [{"name": "fail", "raise": {
                                  "type": "runtime", "status": status, "title": "Refused"}}]}})
            code, _, body = self.d.call("POST", NS + "/workflows", doc)
            self.assertEqual(code, 201, body)
            with self.subTest(status=status):
                code, _, body = self.d.call("POST", NS + f"/workflows/{name}:invoke", "{}")
                self.assertEqual(code, answered, body)
                self.assertEqual(json.loads(body)["error"]["status"], status, body)

    def test_invoke_timeout_inf_is_capped_not_zero(self):
        # A timeout too large to wait for is the cap, so the answer is the run's result, not an
        # early 202 (the failer faults at once, with 422).
        for timeout in ("inf", "1e300", "1e400", "999999999999"):
            with self.subTest(timeout=timeout):
                status, headers, body = self.d.call(
                    "POST", NS + "/workflows/failer:invoke?timeout=" + timeout, '{"n": 2}')
                self.assertEqual(status, 422, body)
                self.assertEqual(json.loads(body)["error"]["detail"], "n was 2")

    def test_run_list_query_is_checked(self):
        self.invalid_query("GET", NS + "/runs?createdAfter=yesterday", ["createdAfter"])
        self.invalid_query("GET", NS + "/runs?createdBefore=2026-11-30T09:02:20", ["createdBefore"])
        self.invalid_query("GET", NS + "/runs?createdAfter=2026-02-30T00:00:00Z", ["createdAfter"])
        self.invalid_query("GET", NS + "/runs?workflow=Waiter", ["workflow"])
        self.invalid_query("GET", NS + "/runs?limit=0&phase=running,sleeping&continue=x&workflow=a_b",
                           ["workflow", "phase", "limit", "continue"])
        self.invalid_query("GET", NS + "/workflows/waiter/logs?since=garbage", ["since"])
        status, body = self.d.json("GET", NS + "/workflows/waiter/logs?since=2026-11-30T10:02:20%2B01:00")
        self.assertEqual((status, body), (200, {"metadata": {}, "items": []}))
        status, _, body = self.d.call("GET", NS + "/runs?limit=99999999999999999999999")
        self.assertEqual(status, 200, body)  # lowered to the largest page, like any large limit

    def test_time_filters_compare_instants_whatever_the_offset(self):
        ids = []
        for i in range(3):
            status, _, body = self.d.call("POST", NS + "/workflows/waiter:invoke?mode=async", json.dumps({"n": i}))
            self.assertEqual(status, 202, body)
            ids.append(json.loads(body)["runId"])
        created = {}
        for run_id in ids:
            status, run = self.d.json("GET", f"{NS}/runs/{run_id}")
            created[run_id] = datetime.strptime(run["createdAt"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=timezone.utc)

        def listed(**filters):
            query = urllib.parse.urlencode({"workflow": "waiter", **filters})
            status, listing = self.d.json("GET", NS + "/runs?" + query)
            self.assertEqual(status, 200, listing)
            return sorted(r["id"] for r in listing["items"])

        def forms(instant):
            """The same instant written four ways."""
            ms = "milliseconds"
            return [instant.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                    if instant.microsecond == 0 else
                    instant.astimezone(timezone.utc).isoformat(timespec=ms).replace("+00:00", "Z"),
                    instant.astimezone(timezone(timedelta(hours=1))).isoformat(timespec=ms),
                    instant.astimezone(timezone(-timedelta(hours=5, minutes=30))).isoformat(timespec=ms),
                    instant.astimezone(timezone(timedelta(hours=9))).isoformat(timespec="microseconds")]

        before_all = min(created.values()) - timedelta(hours=2)
        after_all = max(created.values()) + timedelta(hours=2)
        for form in forms(before_all):
            with self.subTest(createdAfter=form):
                self.assertEqual(listed(createdAfter=form), sorted(ids))
                self.assertEqual(listed(createdBefore=form), [])
        for form in forms(after_all):
            with self.subTest(createdBefore=form):
                self.assertEqual(listed(createdBefore=form), sorted(ids))
                self.assertEqual(listed(createdAfter=form), [])
        # At a run's own instant: every way of writing it selects the same runs as the Z form
        # (exclusive bounds; runs created in the same millisecond fall on the same side).
        for run_id in ids:
            z, *others = forms(created[run_id])
            for form in others:
                with self.subTest(run=run_id, form=form):
                    self.assertNotIn(run_id, listed(createdAfter=form))
                    self.assertEqual(listed(createdAfter=form), listed(createdAfter=z))
                    self.assertEqual(listed(createdBefore=form), listed(createdBefore=z))
        # A + left unencoded in the URL arrives as a space; it still means +01:00.
        plus = before_all.astimezone(timezone(timedelta(hours=1))).isoformat(timespec="seconds")
        status, listing = self.d.json("GET", NS + "/runs?workflow=waiter&createdAfter=" + plus)
        self.assertEqual(status, 200, listing)
        self.assertEqual(sorted(r["id"] for r in listing["items"]), sorted(ids))


TRIGGERED = """apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata: {{name: {name}}}
spec:
{schema}  trigger: {{filter: {{type: com.example.order}}}}
  do:
    - {{name: nap, wait: PT30S}}
"""


class MaxActiveRunsTest(unittest.TestCase):
    def test_invokes_at_the_same_moment_never_pass_the_limit(self):
        """Each start checked the limit before its run was stored and counted it after, so
        invokes arriving together all passed: 228 runs in flight with --max-active-runs 10."""
        d = Daemon("--max-active-runs", "10")
        d.start()
        try:
            status, _, body = d.call("POST", NS + "/workflows", WAITER, content_type="application/yaml")
            self.assertEqual(status, 201, body)

            def invoke(i):
                return d.call("POST", NS + "/workflows/waiter:invoke?mode=async",
                              json.dumps({"n": i}))[0]

            with ThreadPoolExecutor(max_workers=64) as pool:
                statuses = list(pool.map(invoke, range(300)))
            self.assertEqual(statuses.count(202), 10, statuses)
            self.assertEqual(statuses.count(503), 290, statuses)
            status, _, text = d.call("GET", "/metrics")
            self.assertIn("knflow_runs_in_flight 10\n", text)
        finally:
            d.close()


class BrokerOverloadTest(unittest.TestCase):
    """The broker tells the truth when a run cannot start: one run at most in flight."""

    def setUp(self):
        self.d = Daemon("--max-active-runs", "1")
        self.d.start()
        for name, schema in (("alpha", ""), ("beta", ""),
                             ("picky", "  input: {schema: {type: object, required: [n]}}\n")):
            doc = TRIGGERED.format(name=name, schema=schema)
            status, _, body = self.d.call("POST", NS + "/workflows", doc, content_type="application/yaml")
            self.assertEqual(status, 201, body)

    def tearDown(self):
        self.d.close()

    def deliver(self, event_id, data='{"m": 1}'):
        headers = {"ce-specversion": "1.0", "ce-id": event_id, "ce-source": "/shop",
                   "ce-type": "com.example.order"}
        status, headers, body = self.d.call("POST", NS + "/broker", data, headers=headers)
        return status, headers, json.loads(body)

    def runs_of(self, workflow):
        status, listing = self.d.json("GET", NS + "/runs?workflow=" + workflow)
        self.assertEqual(status, 200)
        return [r["id"] for r in listing["items"]]

    def test_503_until_every_matching_workflow_has_its_run(self):
        # alpha starts and takes the only slot; beta cannot start now; picky never can (no `n`).
        status, headers, problem = self.deliver("e-1")
        self.assertEqual(status, 503, problem)
        self.assertEqual(headers["Content-Type"], "application/problem+json")
        self.assertIn("Retry-After", headers)
        self.assertEqual(problem["type"], "https://knflow.dev/problems/delivery-incomplete")
        self.assertEqual([r["workflow"] for r in problem["runs"]], ["alpha"])
        alpha = problem["runs"][0]["runId"]
        self.assertEqual([(r["workflow"], r["status"]) for r in problem["notStarted"]], [("beta", 503)])
        self.assertEqual([(r["workflow"], r["status"], r["type"]) for r in problem["rejected"]],
                         [("picky", 400, "https://knflow.dev/problems/input-schema")])

        # The sender delivers the same event again: alpha is not started twice.
        status, _, problem = self.deliver("e-1")
        self.assertEqual(status, 503, problem)
        self.assertEqual(problem["runs"], [{"workflow": "alpha", "runId": alpha, "duplicate": True}])
        self.assertEqual([r["workflow"] for r in problem["notStarted"]], ["beta"])
        self.assertEqual(self.runs_of("alpha"), [alpha])
        self.assertEqual(self.runs_of("beta"), [])

        # Another event while alpha's run holds the slot: nothing starts, and the sender is told.
        status, _, problem = self.deliver("e-2")
        self.assertEqual(status, 503, problem)
        self.assertEqual(problem["runs"], [])
        self.assertEqual([r["workflow"] for r in problem["notStarted"]], ["alpha", "beta"])

        # The slot frees; the sender's retries of e-1 get it delivered, once per workflow.
        status, _, body = self.d.call("POST", f"{NS}/runs/{alpha}:cancel")
        self.assertEqual(status, 200, body)
        for _ in range(200):
            status, _, answer = self.deliver("e-1")
            if status != 503:
                break
            time.sleep(0.05)
        self.assertEqual(status, 202, answer)
        self.assertEqual(answer["accepted"], True)
        runs = {r["workflow"]: r for r in answer["runs"]}
        self.assertEqual(sorted(runs), ["alpha", "beta"])
        self.assertEqual(runs["alpha"], {"workflow": "alpha", "runId": alpha, "duplicate": True})
        self.assertNotIn("duplicate", runs["beta"])
        # picky can never take this event: reported, not worth a retry.
        self.assertEqual([r["workflow"] for r in answer["rejected"]], ["picky"])
        self.assertEqual(self.runs_of("alpha"), [alpha])
        self.assertEqual(self.runs_of("beta"), [runs["beta"]["runId"]])
        self.assertEqual(self.runs_of("picky"), [])
        self.assertIn("Failed to start a triggered run", self.d.output())


if __name__ == "__main__":
    unittest.main(verbosity=2)
