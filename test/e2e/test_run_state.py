"""What a run carries and keeps, against the real daemon: deeply nested data (accepted, answered,
stored and read back after kill -9), a run whose stored state no longer decodes (faulted alone;
the daemon starts and the other runs resume), a retry after the run's own timeout (a fresh
deadline), W3C trace context (validated on the way in, sent with every delivery, the caller's
sampled flag and tracestate kept across a restart), and the bounds
on the data runs hold in memory."""

import http.client
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from daemon import BIN, Daemon, LocalFunction, wait_until  # noqa: E402

NS = "/api/v1/namespaces/default"
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$")


def nested(depth):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


def depth_of(value):
    d = 0
    while isinstance(value, list):
        value = value[0]
        d += 1
    return d


class Function(LocalFunction):
    """A local HTTP function: records every request; `answer(n, body)` decides each answer (n
    counts requests from 1). Returns (status, body), (status, body, seconds to wait first) or
    (status, body, {more headers})."""

    def __init__(self, answer):
        self.requests = []
        self.lock = threading.Lock()

        def respond(path, headers, body):
            with self.lock:
                self.requests.append((path, dict(headers), body))
                n = len(self.requests)
            status, text, *more = answer(n, body)
            headers = next((m for m in more if isinstance(m, dict)), {})
            for pause in (m for m in more if not isinstance(m, dict)):
                time.sleep(pause)
            return status, text, headers

        super().__init__(respond)


class RunStateTest(unittest.TestCase):
    def setUp(self):
        self.daemons = []
        self.functions = []

    def tearDown(self):
        for d in self.daemons:
            d.close()
        for f in self.functions:
            f.close()

    def daemon(self, *args, data_dir=None):
        d = Daemon(*args, data_dir=data_dir)
        self.daemons.append(d)
        return d.start()

    def function(self, answer):
        f = Function(answer)
        self.functions.append(f)
        return f

    def create(self, d, doc):
        status, _, body = d.call("POST", NS + "/workflows", json.dumps(doc))
        self.assertEqual(status, 201, body)

    def wait_phase(self, d, run_id, phases, limit=30):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            status, run = d.json("GET", f"{NS}/runs/{run_id}")
            self.assertEqual(status, 200)
            if run["phase"] in phases:
                return run
            time.sleep(0.05)
        self.fail(f"run {run_id} never reached {phases}")

    def test_deep_data_is_accepted_answered_and_read_back_after_kill(self):
        d = self.daemon()
        echo = self.function(lambda n, body: (200, body.decode()))
        self.create(d, {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                        "metadata": {"name": "echo"},
                        "spec": {"functions": {"echo": {"url": echo.url}},
                                 "do": [{"name": "say", "call": "echo"}]}})
        # 40 levels: more than Boost.JSON's default bound of 32, well inside knflow's 1,000.
        status, _, body = d.call("POST", NS + "/workflows/echo:invoke", json.dumps(nested(40)))
        self.assertEqual(status, 200, body)
        self.assertEqual(depth_of(json.loads(body)), 40, "the function's deep answer stays JSON")
        too_deep = "[" * 1001 + "1" + "]" * 1001
        status, _, body = d.call("POST", NS + "/workflows/echo:invoke", too_deep)
        self.assertEqual(status, 400, body)
        self.assertIn("nesting is deeper than the limit of 1000 levels at line 1, column 1001", body)

        self.create(d, {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                        "metadata": {"name": "deep"},
                        "spec": {"do": [{"name": "build", "set": "${ reduce range(40) as $i (1; [.]) }"},
                                        {"name": "nap", "wait": "PT1S"}]}})
        status, run = d.json("POST", NS + "/workflows/deep:invoke?mode=async", "{}")
        self.assertEqual(status, 202, run)
        run_id = run["runId"]
        db = os.path.join(d.data_dir, "knflow.db")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the deep value is in the journal
            with sqlite3.connect(db) as c:
                if c.execute("SELECT count(*) FROM run_journal WHERE run_id = ? AND value_json LIKE ?",
                             (run_id, "%" + "[" * 40 + "%")).fetchone()[0] > 0:
                    break
            time.sleep(0.05)
        else:
            self.fail("the set step never reached the journal")
        d.stop(signal.SIGKILL)

        again = self.daemon(data_dir=d.data_dir)  # starts: the deep journal entry reads back
        done = self.wait_phase(again, run_id, ("completed", "faulted"))
        self.assertEqual(done["phase"], "completed", done)
        self.assertEqual(depth_of(done["output"]["data"]), 40)

    def test_join_each_outputs_at_the_depth_bound_are_refused_and_the_run_reads_back(self):
        """Two branches of a `join: each` fork, each 1,000 levels deep (allowed): at the top level
        the run completed with their 1,001-level array as its output (an answer the daemon
        refuses as input); nested, the run faulted as it should, but its step history, built
        from the fork's outputs, answered 500 on every GET."""
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))  # json reads 1,000 levels
        d = self.daemon()
        deep = "${ reduce range(1000) as $i (1; [.]) }"
        fork = {"name": "f", "fork": {"join": "each", "branches": [{"name": "a", "set": deep},
                                                                   {"name": "b", "set": deep}]}}
        for name, steps in (("top", [fork]), ("nested", [{"name": "d", "do": [fork]}])):
            with self.subTest(name):
                self.create(d, {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                                "metadata": {"name": name}, "spec": {"do": steps}})
                status, _, body = d.call("POST", f"{NS}/workflows/{name}:invoke", "{}")
                self.assertEqual(status, 507, body[:300])
                problem = json.loads(body)
                self.assertEqual(problem["error"]["title"], "Data nested too deep", problem)
                self.assertEqual(problem["error"]["instance"], "/do" if name == "top" else "/do/0")
                status, run = d.json("GET", f"{NS}/runs/{problem['runId']}")
                self.assertEqual(status, 200)
                self.assertEqual(run["phase"], "faulted")
                forks = [s for s in run["steps"] if s["name"] == "f"]
                self.assertTrue(forks, run["steps"])
                self.assertTrue(forks[0]["output"].get("truncated"), forks[0])

    def test_text_that_is_not_utf8_never_reaches_an_answer_or_a_runs_state(self):
        """A 415 and a malformed-event 400 quoted a Content-Type's bytes as they came, and a step's
        error cut `for.in`'s value at a byte count, mid-character: the answer was not UTF-8, and
        the run's error broke `$error` in its catch.do and its resume after a restart."""
        d = self.daemon()
        self.create(d, {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                        "metadata": {"name": "caught"},
                        "spec": {"do": [{"name": "guard", "try": [
                            {"name": "loop", "for": {"in": '${ "\u00e9" * 150 }'},
                             "do": [{"name": "x", "set": {}}]}],
                            "catch": {"do": [{"name": "keep", "set": "${ {detail: $error.detail} }"},
                                             {"name": "nap", "wait": "PT1S"}]}}]}})
        for path, content_type, expected in (("/api/v1/validate", b"text/\xc3", 415),
                                             (f"{NS}/workflows/caught:invoke",
                                              b"application/cloudevents\xff", 400)):
            conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
            conn.putrequest("POST", path)
            conn.putheader("Authorization", "Bearer " + d.token)
            conn.putheader("Content-Type", content_type)
            conn.putheader("Content-Length", "2")
            conn.endheaders(b"{}")
            answer = conn.getresponse()
            body = answer.read()
            conn.close()
            self.assertEqual(answer.status, expected, body)
            self.assertIn("\ufffd", json.loads(body.decode("utf-8"))["detail"])  # strict UTF-8

        status, started = d.json("POST", f"{NS}/workflows/caught:invoke?mode=async", "{}")
        self.assertEqual(status, 202, started)
        db = os.path.join(d.data_dir, "knflow.db")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the catch.do's set is journaled: kill in the wait
            with sqlite3.connect(db) as c:
                if c.execute("SELECT count(*) FROM run_journal WHERE run_id = ? AND path LIKE ?",
                             (started["runId"], "%/catch/do/0")).fetchone()[0] > 0:
                    break
            time.sleep(0.02)
        d.stop(signal.SIGKILL)
        again = self.daemon(data_dir=d.data_dir)
        run = self.wait_phase(again, started["runId"], ("completed", "faulted"))
        self.assertEqual(run["phase"], "completed", run)
        self.assertTrue(run["output"]["data"]["detail"].startswith("for.in gave \"\u00e9"), run)

    def test_run_data_in_memory_is_bounded_per_run_and_in_total(self):
        d = self.daemon("--max-run-data-bytes", "65536", "--max-total-run-data-bytes", "100000",
                        "--max-body-bytes", "8192")
        def keep(name, chars, then):
            return {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                    "metadata": {"name": name},
                    "spec": {"do": [{"name": "keep",  # jq's `join` is quadratic: not that
                                     "set": "${ {kept: (\"x\" * %d)} }" % chars}] + then}}
        def over_its_limit(name, instance, words):
            """Invokes NAME: 507, the run's data limit, at INSTANCE, the detail saying WORDS."""
            status, _, body = d.call("POST", f"{NS}/workflows/{name}:invoke", "{}")
            self.assertEqual(status, 507, body)
            problem = json.loads(body)
            self.assertEqual(problem["error"]["title"], "Run data limit exceeded", problem)
            self.assertEqual(problem["error"]["instance"], instance)
            self.assertIn(words, problem["error"]["detail"])
            return problem
        # Per run: the second copy would take the run past 64 KiB.
        self.create(d, keep("grows", 40000, [{"name": "more", "set": "${ {a: .kept, b: .kept} }"}]))
        problem = over_its_limit("grows", "/do/1", "--max-run-data-bytes")
        status, run = d.json("GET", f"{NS}/runs/{problem['runId']}")
        self.assertEqual(run["phase"], "faulted")
        # The error a catch.do handles is data too: a raise's 100,000-character detail, kept
        # while the handler waits, held the run past its limit (and 20 of them, the total).
        self.create(d, {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                        "metadata": {"name": "catches"},
                        "spec": {"do": [{"name": "guard", "try": [
                            {"name": "fail", "raise": {"type": "runtime", "status": 500,
                                                       "detail": '${ "x" * 100000 }'}}],
                            "catch": {"do": [{"name": "nap", "wait": "PT0.1S"}]}}]}})
        over_its_limit("catches", "/do/0/catch", "the error its catch.do handles")
        # In total: a run waiting with 60,000 characters leaves no room for another one's.
        self.create(d, keep("holds", 60000, [{"name": "nap", "wait": "PT60S"}]))
        status, held = d.json("POST", NS + "/workflows/holds:invoke?mode=async", "{}")
        self.assertEqual(status, 202, held)
        def held_bytes():
            _, _, metrics = d.call("GET", "/metrics")
            return float(re.search(r"^knflow_run_data_bytes (\S+)$", metrics, re.M).group(1))
        deadline = time.monotonic() + 30
        while held_bytes() < 60000 and time.monotonic() < deadline:  # its step has completed
            time.sleep(0.05)
        self.assertGreater(held_bytes(), 60000)
        self.assertLess(held_bytes(), 100000)
        status, _, body = d.call("POST", NS + "/workflows/holds:invoke", "{}")
        self.assertEqual(status, 503, body)
        self.assertEqual(json.loads(body)["error"]["title"], "Run data memory exhausted")
        status, _ = d.json("POST", f"{NS}/runs/{held['runId']}:cancel")
        self.assertEqual(status, 200)
        self.wait_phase(d, held["runId"], ("cancelled",))
        deadline = time.monotonic() + 30  # given back as the run's coroutine returns
        while held_bytes() != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(held_bytes(), 0)

    def test_a_workflow_nested_up_to_the_document_limit_reads_back(self):
        d = self.daemon()
        value = 1
        for _ in range(50):  # the document nests about 55 levels: under the limit of 64
            value = {"v": value}
        doc = {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "tall"},
               "spec": {"do": [{"name": "put", "set": value}]}}
        self.create(d, doc)
        status, got = d.json("GET", NS + "/workflows/tall")
        self.assertEqual(status, 200, got)
        self.assertEqual(got["spec"]["do"][0]["set"], value)
        status, _, body = d.call("POST", NS + "/workflows/tall:invoke", "{}")
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), value)
        d.stop()
        again = self.daemon(data_dir=d.data_dir)  # the stored workflow loads again
        status, got = again.json("GET", NS + "/workflows/tall")
        self.assertEqual(status, 200, got)
        self.assertEqual(got["spec"]["do"][0]["set"], value)

    def test_a_run_whose_state_does_not_decode_is_faulted_alone(self):
        d = self.daemon()
        self.create(d, {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                        "metadata": {"name": "nap"},
                        "spec": {"do": [{"name": "nap", "wait": "PT1S"}]}})
        ids = []
        for _ in range(2):
            status, run = d.json("POST", NS + "/workflows/nap:invoke?mode=async", "{}")
            self.assertEqual(status, 202, run)
            ids.append(run["runId"])
        d.stop(signal.SIGKILL)
        with sqlite3.connect(os.path.join(d.data_dir, "knflow.db")) as c:
            c.execute("UPDATE runs SET input_json = '{' WHERE id = ?", (ids[0],))

        again = self.daemon(data_dir=d.data_dir)
        bad = self.wait_phase(again, ids[0], ("completed", "faulted", "cancelled"))
        self.assertEqual(bad["phase"], "faulted", bad)
        self.assertEqual(bad["error"]["title"], "Run state unreadable", bad)
        status, _, body = again.call("POST", f"{NS}/runs/{ids[0]}:retry")
        self.assertEqual(status, 500, body)  # it cannot run again, and the answer says so
        self.assertIn("does not decode", body)
        good = self.wait_phase(again, ids[1], ("completed", "faulted", "cancelled"))
        self.assertEqual(good["phase"], "completed", good)

    def test_a_run_whose_definition_does_not_decode_still_answers(self):
        """A run whose stored definition no longer decodes (a database edited by hand) is shown
        without its steps, and its logs are an empty list (they answered 500)."""
        d = self.daemon()
        self.create(d, {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                        "metadata": {"name": "nap"},
                        "spec": {"do": [{"name": "nap", "wait": "PT30S"}]}})
        status, run = d.json("POST", NS + "/workflows/nap:invoke?mode=async", "{}")
        self.assertEqual(status, 202, run)
        run_id = run["runId"]
        d.stop(signal.SIGKILL)
        with sqlite3.connect(os.path.join(d.data_dir, "knflow.db")) as c:
            c.execute("UPDATE runs SET definition_json = '{' WHERE id = ?", (run_id,))
        again = self.daemon(data_dir=d.data_dir)
        bad = self.wait_phase(again, run_id, ("completed", "faulted", "cancelled"))
        self.assertEqual((bad["phase"], bad["steps"]), ("faulted", []), bad)
        status, logs = again.json("GET", f"{NS}/runs/{run_id}/logs")
        self.assertEqual((status, logs), (200, {"metadata": {}, "items": []}))

    def test_retry_after_the_run_timeout_gets_a_fresh_deadline(self):
        d = self.daemon()
        # The first request outlives the run's 1 s timeout; later ones answer at once.
        slow_once = self.function(lambda n, body: (200, '{"ok":true}', 5) if n == 1
                                  else (200, '{"ok":true}'))
        self.create(d, {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                        "metadata": {"name": "bounded"},
                        "spec": {"timeout": "PT1S", "functions": {"fn": {"url": slow_once.url}},
                                 "do": [{"name": "ask", "call": "fn"}]}})
        status, run = d.json("POST", NS + "/workflows/bounded:invoke?mode=async", "{}")
        self.assertEqual(status, 202, run)
        run_id = run["runId"]
        first = self.wait_phase(d, run_id, ("completed", "faulted"))
        self.assertEqual(first["phase"], "faulted", first)
        self.assertEqual(first["error"]["type"].rsplit("/", 1)[-1], "timeout", first)

        status, _, body = d.call("POST", f"{NS}/runs/{run_id}:retry")
        self.assertLess(status, 300, body)
        second = self.wait_phase(d, run_id, ("completed", "faulted"))
        self.assertEqual(second["phase"], "completed", second)
        self.assertEqual(len(slow_once.requests), 2)

    def test_a_run_redriven_before_the_redrives_were_listed_marks_what_it_knows(self):
        """A run redriven by an older daemon keeps only its latest redrive ({drive, attemptSeq}):
        the attempts after it are that redrive's, those before it of an earlier drive it cannot
        name (no `drive`; `runs get` says "earlier"); a redrive now goes on from there."""
        down = self.function(lambda n, body: (503, "busy"))
        self.create(d := self.daemon(), {
            "apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "down"},
            "spec": {"functions": {"fn": {"url": down.url}},
                     "do": [{"name": "ask", "call": "fn", "retry": {"limit": 0}}]}})
        status, run = d.json("POST", NS + "/workflows/down:invoke?mode=async", "{}")
        self.assertEqual(status, 202, run)
        run_id = run["runId"]
        self.wait_phase(d, run_id, ("faulted",))
        for _ in range(2):
            status, _, body = d.call("POST", f"{NS}/runs/{run_id}:retry")
            self.assertEqual(status, 202, body)
            self.wait_phase(d, run_id, ("faulted",))
        self.assertEqual(d.stop(), 0, d.tail())
        # As an older daemon wrote it: the second redrive, after attempt 2.
        with sqlite3.connect(os.path.join(d.data_dir, "knflow.db")) as c:
            changed = c.execute("UPDATE run_journal SET value_json = ? WHERE run_id = ? AND "
                                "path = '/redrive'",
                                ('{"drive":2,"attemptSeq":2}', run_id)).rowcount
        self.assertEqual(changed, 1)
        again = self.daemon(data_dir=d.data_dir)
        run = self.wait_phase(again, run_id, ("faulted",))
        self.assertEqual(run["redriveCount"], 2)
        self.assertNotIn("redrivenAt", run)
        self.assertEqual([(a["attempt"], a.get("drive")) for a in run["attempts"]],
                         [(1, None), (2, None), (3, 2)])
        r = subprocess.run([BIN, "runs", "get", run_id, "--server", again.base, "--token-file",
                            os.path.join(again.data_dir, "token")], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(re.findall(r"(?m)^ask +/do/0 +(\d+(?: \(\w+(?: \d)?\))?) +faulted ",
                                    r.stdout), ["1 (earlier)", "2 (earlier)", "3 (redrive 2)"],
                         r.stdout)
        # A redrive now adds to the list it found.
        status, _, body = again.call("POST", f"{NS}/runs/{run_id}:retry")
        self.assertEqual(status, 202, body)
        run = self.wait_phase(again, run_id, ("faulted",))
        self.assertEqual(run["redriveCount"], 3)
        self.assertEqual([(a["attempt"], a.get("drive")) for a in run["attempts"]],
                         [(1, None), (2, None), (3, 2), (4, 3)])

    def test_trace_context_is_validated_and_sent_with_every_delivery(self):
        d = self.daemon()
        sink = self.function(lambda n, body: (200, ""))
        failing = self.function(lambda n, body: (500, '{"oops":true}'))
        fine = self.function(lambda n, body: (200, '{"ok":true}'))
        self.create(d, {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                        "metadata": {"name": "replied"},
                        "spec": {"functions": {"fine": {"url": fine.url}},
                                 "reply": {"uri": sink.url + "/reply"},
                                 "do": [{"name": "ask", "call": "fine"}]}})
        self.create(d, {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                        "metadata": {"name": "lettered"},
                        "spec": {"functions": {"failing": {"url": failing.url}},
                                 "deadLetter": {"uri": sink.url + "/dead"},
                                 "do": [{"name": "ask", "call": "failing",
                                         "retry": {"limit": 0}}]}})

        # A caller's valid trace continues; an invalid one is replaced by a fresh, valid one.
        caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        for name, incoming in (("replied", caller), ("lettered", "00-NOT_A_TRACE_ID_AT_ALL_0123456789-0000000000000000-01")):
            status, _, body = d.call("POST", f"{NS}/workflows/{name}:invoke", "{}",
                                     headers={"traceparent": incoming})
            self.assertIn(status // 100, (2, 4, 5), body)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(sink.requests) < 2:
            time.sleep(0.05)
        by_path = {path: headers for path, headers, _ in sink.requests}
        self.assertEqual(set(by_path), {"/reply", "/dead"})

        reply = TRACEPARENT.match(by_path["/reply"].get("traceparent", ""))
        self.assertIsNotNone(reply, by_path["/reply"])
        self.assertEqual(reply.group(1), "4bf92f3577b34da6a3ce929d0e0e4736")
        call = TRACEPARENT.match(fine.requests[0][1].get("traceparent", ""))
        self.assertEqual(call.group(1), reply.group(1))

        dead = TRACEPARENT.match(by_path["/dead"].get("traceparent", ""))
        self.assertIsNotNone(dead, by_path["/dead"])
        self.assertNotEqual(dead.group(1), "0" * 32)
        call = TRACEPARENT.match(failing.requests[0][1].get("traceparent", ""))
        self.assertEqual(call.group(1), dead.group(1))
        status, runs = d.json("GET", f"{NS}/runs?workflow=lettered")
        self.assertEqual(status, 200)
        status, run = d.json("GET", f"{NS}/runs/{runs['items'][0]['id']}")
        self.assertEqual(status, 200)
        self.assertEqual(TRACEPARENT.match(run["traceparent"]).group(1), dead.group(1), run)

    def test_an_answer_carries_no_foreign_trace_and_two_traceparents_start_a_trace(self):
        d = self.daemon()
        foreign = "00-99999999999999999999999999999999-1111111111111111-01"
        replier = self.function(lambda n, body: (200, '{"r":1}', {
            "ce-specversion": "1.0", "ce-id": "r1", "ce-source": "/fn", "ce-type": "reply.t",
            "ce-traceparent": foreign, "ce-tracestate": "evil=1"}))
        fine = self.function(lambda n, body: (200, '{"ok":true}'))
        self.create(d, {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                        "metadata": {"name": "replier"},
                        "spec": {"functions": {"f": {"url": replier.url}},
                                 "do": [{"name": "ask", "call": "f"}]}})
        self.create(d, {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                        "metadata": {"name": "fine"},
                        "spec": {"functions": {"f": {"url": fine.url}},
                                 "do": [{"name": "ask", "call": "f"}]}})
        # The final event a function sent with its own trace context: the answer had the
        # function's trace id as ce-traceparent.
        status, headers, body = d.call("POST", f"{NS}/workflows/replier:invoke", "{}")
        self.assertEqual((status, headers.get("ce-type"), json.loads(body)), (200, "reply.t", {"r": 1}))
        lowered = {k.lower() for k in headers}
        self.assertNotIn("ce-traceparent", lowered, headers)
        self.assertNotIn("ce-tracestate", lowered, headers)
        # Two traceparent fields name no one trace: a new one (the first was taken).
        first = "00-11111111111111111111111111111111-00f067aa0ba902b7-01"
        second = "00-22222222222222222222222222222222-00f067aa0ba902b7-01"
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
        try:
            conn.putrequest("POST", f"{NS}/workflows/fine:invoke")
            for name, value in (("Authorization", "Bearer " + d.token),
                                ("Content-Type", "application/json"), ("Content-Length", "2"),
                                ("traceparent", first), ("traceparent", second)):
                conn.putheader(name, value)
            conn.endheaders(b"{}")
            answer = conn.getresponse()
            self.assertEqual(answer.status, 200, answer.read())
        finally:
            conn.close()
        call = TRACEPARENT.match(fine.requests[0][1].get("traceparent", ""))
        self.assertIsNotNone(call, fine.requests[0][1])
        self.assertNotIn(call.group(1), ("1" * 32, "2" * 32))

    def test_the_callers_sampled_flag_and_tracestate_go_on_across_a_restart(self):
        d = self.daemon()
        sink = self.function(lambda n, body: (200, ""))
        fine = self.function(lambda n, body: (200, '{"ok":true}'))
        self.create(d, {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                        "metadata": {"name": "paused"},
                        "spec": {"functions": {"fine": {"url": fine.url}},
                                 "reply": {"uri": sink.url + "/reply"},
                                 "do": [{"name": "pause", "wait": "PT1S"},
                                        {"name": "ask", "call": "fine"}]}})

        def invoke(daemon, fields):
            conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
            conn.putrequest("POST", f"{NS}/workflows/paused:invoke?mode=async")
            for name, value in [("Authorization", "Bearer " + daemon.token),
                                ("Content-Type", "application/json"),
                                ("Content-Length", "2"), *fields]:
                conn.putheader(name, value)
            conn.endheaders(b"{}")
            answer = conn.getresponse()
            body = answer.read().decode()
            conn.close()
            self.assertEqual(answer.status, 202, body)
            return json.loads(body)["runId"]

        # Not sampled, with a tracestate in two fields (one list, RFC 9110 §5.3); the daemon is
        # stopped during the wait, so the rest runs from what was stored.
        caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        run_id = invoke(d, [("traceparent", caller), ("tracestate", "congo=t61rcWkgMzE"),
                            ("tracestate", " rojo=00f067aa0ba902b7 ")])
        self.assertEqual(d.stop(), 0, d.tail())
        d = self.daemon(data_dir=d.data_dir)
        run = self.wait_phase(d, run_id, ("completed", "faulted"))
        self.assertEqual(run["phase"], "completed", run)
        unsampled = re.compile(r"^00-4bf92f3577b34da6a3ce929d0e0e4736-([0-9a-f]{16})-00$")
        self.assertRegex(run["traceparent"], unsampled)
        self.assertEqual(run["tracestate"], "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7", run)
        wait_until(lambda: sink.requests, 30)
        for headers in (fine.requests[0][1], sink.requests[0][1]):
            self.assertRegex(headers.get("traceparent", ""), unsampled)
            self.assertEqual(headers.get("tracestate"), "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")

        # A tracestate that cannot be passed on as it came (over 512 bytes), or one that comes
        # with a traceparent that is not valid, is dropped; a new trace is sampled.
        for fields in ([("traceparent", caller), ("tracestate", "a=" + "b" * 600)],
                       [("traceparent", "00-" + "0" * 32 + "-00f067aa0ba902b7-00"),
                        ("tracestate", "congo=t61rcWkgMzE")]):
            run_id = invoke(d, fields)
            run = self.wait_phase(d, run_id, ("completed", "faulted"))
            self.assertNotIn("tracestate", run)
            self.assertNotIn("tracestate", fine.requests[-1][1])
            self.assertNotIn("tracestate", sink.requests[-1][1])
        self.assertTrue(run["traceparent"].endswith("-01"), run)
        self.assertTrue(fine.requests[-1][1]["traceparent"].endswith("-01"))


if __name__ == "__main__":
    unittest.main()
