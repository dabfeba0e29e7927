"""Local functions (local.command) of the real daemon, with real processes: a function that
crashes is restarted and the restart shows in /metrics; after `kill -9` of the daemon its
function dies with it (PR_SET_PDEATHSIG) and the next daemon on the same data directory kills
what was left of the function's process group (a child the function started); SIGTERM while a
run waits for a function that does not listen yet stops the daemon at once, and the run resumes
at the next start; control characters a function writes to stderr reach the daemon's log only
escaped; a function finds the namespace's broker in K_SINK, and an event it posts there with
KNFLOW_SINK_TOKEN starts a triggered workflow, while that token opens nothing else."""

import json
import os
import re
import socket
import sys
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from daemon import SOURCE_DIR, Daemon, alive, wait_until  # noqa: E402

NS = "/api/v1/namespaces/default"
ECHO_DIR = os.path.join(SOURCE_DIR, "test", "engine", "fixtures")  # echo_function.py
E2E_DIR = os.path.join(SOURCE_DIR, "test", "e2e")                 # sink_function.py
DEADLINE = 30  # seconds anything below may take; polled, never timed

ECHOER = """apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata: {name: echoer}
spec:
  functions:
    echo:
      env: {SPAWN_CHILD: "1"}
      local: {command: [python3, echo_function.py]}
  do:
    - {name: say, call: echo}
"""

PRODUCER = """apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata: {name: producer}
spec:
  functions:
    forward:
      local: {command: [python3, sink_function.py]}
  do:
    - {name: send, call: forward}
"""

SILENT = """apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata: {name: silent}
spec:
  functions:
    mute:
      local: {command: [sleep, "600"]}
  do:
    - {name: call, call: mute}
"""

CONSUMER = """apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata: {name: consumer}
spec:
  trigger: {filter: {type: test.sink.forwarded}}
  do:
    - {name: keep, set: '${ {got: .order} }'}
"""


def function_get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.read().decode()


def crash(port):
    """POST /crash: the function exits with 3 while handling it, so there is no answer."""
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/crash", data=b"", method="POST")
        urllib.request.urlopen(req, timeout=10).read()
    except (urllib.error.URLError, ConnectionError, socket.timeout):
        pass


class LocalFunctionsTest(unittest.TestCase):
    def create(self, d, *docs):
        for doc in docs:
            status, _, body = d.call("POST", NS + "/workflows", doc, content_type="application/yaml")
            self.assertEqual(status, 201, body)

    def invoke(self, d, name, data):
        status, _, body = d.call("POST", f"{NS}/workflows/{name}:invoke", json.dumps(data))
        self.assertEqual(status, 200, body)
        return json.loads(body)

    def listening(self, d):
        """[(port, pid)] of every start of echoer's function, from its logs, oldest first."""
        status, logs = d.json("GET", NS + "/workflows/echoer/logs")
        self.assertEqual(status, 200, logs)
        found = []
        for line in logs["items"]:
            m = re.search(r"echo: listening on (\d+) pid=(\d+)", line["text"])
            if m:
                found.append((int(m.group(1)), int(m.group(2))))
        return found

    def restarts(self, d):
        status, _, text = d.call("GET", "/metrics")
        self.assertEqual(status, 200)
        m = re.search(r"^knflow_function_restarts_total (\S+)$", text, re.M)
        self.assertIsNotNone(m, text)
        return float(m.group(1))

    def test_killed_daemon_leaves_no_function_behind(self):
        first = Daemon("--functions-dir", ECHO_DIR)
        second = None
        leftovers = []
        try:
            first.start()
            self.create(first, ECHOER)
            self.assertEqual(self.invoke(first, "echoer", {"n": 1}), '{"n":1}')  # echoed as text
            self.assertEqual(self.restarts(first), 0)
            [(port, pid)] = self.listening(first)
            child = int(function_get(port, "/child"))
            leftovers += [pid, child]
            self.assertTrue(alive(child))

            # A crash: the function is started again, and the restart is counted.
            crash(port)
            self.assertTrue(wait_until(lambda: self.restarts(first) == 1, DEADLINE),
                            "knflow_function_restarts_total never reached 1")
            self.assertTrue(wait_until(lambda: len(self.listening(first)) == 2, DEADLINE),
                            first.output())
            port, pid = self.listening(first)[1]
            self.assertEqual(self.invoke(first, "echoer", {"n": 2}), '{"n":2}')
            self.assertTrue(wait_until(lambda: not alive(child), DEADLINE),
                            "the crashed function's child survived its restart")
            child = int(function_get(port, "/child"))
            leftovers += [pid, child]
            records = os.path.join(first.data_dir, "function-processes")
            [record] = os.listdir(records)
            with open(os.path.join(records, record)) as f:
                self.assertRegex(f.read(), rf"(?m)^{pid} \d+ \d+$")

            # kill -9: the function dies with the daemon; its child is still in its group.
            first.proc.kill()
            first.proc.wait()
            self.assertTrue(wait_until(lambda: not alive(pid), DEADLINE),
                            f"function {pid} outlived the daemon killed with SIGKILL")
            self.assertTrue(alive(child), "expected the function's child to outlive it")

            # The next daemon on the same data directory kills what is left of the group.
            second = Daemon("--functions-dir", ECHO_DIR, data_dir=first.data_dir)
            second.start()
            self.assertTrue(wait_until(lambda: not alive(child), DEADLINE),
                            f"the next daemon left {child} running:\n{second.output()}")
            self.assertIn("Killed local functions of a daemon that was killed", second.output())
            self.assertEqual(os.listdir(records), [])

            # The workflow still works; SIGTERM stops its new function and leaves no record.
            self.assertEqual(self.invoke(second, "echoer", {"n": 3}), '{"n":3}')
            [(port, pid)] = self.listening(second)
            leftovers.append(pid)
            self.assertEqual(second.stop(), 0, second.output())
            self.assertFalse(alive(pid))
            self.assertEqual(os.listdir(records), [])
        finally:
            for daemon in (second, first):
                if daemon:
                    daemon.close()
            for pid in leftovers:  # only what this test started, should an assertion have failed
                if alive(pid):
                    os.kill(pid, 9)

    def recorded_groups(self, d):
        """The process groups of the daemon's running functions, from its record file."""
        records = os.path.join(d.data_dir, "function-processes")
        groups = []
        for name in os.listdir(records) if os.path.isdir(records) else []:
            with open(os.path.join(records, name)) as f:
                groups += [int(line.split()[0]) for line in f.read().splitlines()[3:]]
        return groups

    def test_sigterm_while_a_function_starts_stops_the_daemon_at_once(self):
        first = Daemon()
        second = None
        try:
            first.start()
            self.create(first, SILENT)
            status, _, body = first.call("POST", f"{NS}/workflows/silent:invoke?mode=async", "{}")
            self.assertEqual(status, 202, body)
            run_id = json.loads(body)["runId"]
            # The run waits for a function that never listens (the start timeout is 30 s).
            [pid] = wait_until(lambda: self.recorded_groups(first), DEADLINE)

            stopping = time.monotonic()
            self.assertEqual(first.stop(), 0, first.output())
            took = time.monotonic() - stopping
            self.assertLess(took, 10, f"the daemon waited for the start:\n{first.output()}")
            self.assertFalse(alive(pid))

            # The shutdown did not fault the run: the next daemon resumes it.
            second = Daemon(data_dir=first.data_dir)
            second.start()
            status, run = second.json("GET", f"{NS}/runs/{run_id}")
            self.assertEqual(status, 200, run)
            self.assertEqual(run["phase"], "running", run)
            [pid] = wait_until(lambda: self.recorded_groups(second), DEADLINE)
            stopping = time.monotonic()
            self.assertEqual(second.stop(), 0, second.output())
            self.assertLess(time.monotonic() - stopping, 10, second.output())
            self.assertFalse(alive(pid))
        finally:
            for daemon in (second, first):
                if daemon:
                    daemon.close()

    def test_control_characters_of_a_function_do_not_reach_the_daemons_log_raw(self):
        # A failed start's error quotes the function's stderr, and the daemon logs that error.
        script = ("import sys\n"
                  "sys.stderr.write('boom\\rts=2026-01-01T00:00:00.000Z level=error msg=Forged"
                  "\\x1b[2K\\x07\\n')\n"
                  "sys.exit(2)\n")
        doc = json.dumps({
            "apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "noisy"},
            "spec": {"functions": {"fail": {"local": {"command": ["python3", "-c", script]}}},
                     "do": [{"name": "call", "call": "fail"}]}})
        with Daemon() as d:
            d.start()
            self.create(d, doc)
            status, _, body = d.call("POST", f"{NS}/workflows/noisy:invoke", "{}")
            self.assertEqual(status, 503, body)
            self.assertIn("stderr: boom", json.loads(body)["detail"])
            self.assertEqual(d.stop(), 0)
            with open(d.log_path, "rb") as f:
                log = f.read()
            line = next(line for line in log.split(b"\n")
                        if b"Failed to start local function" in line)
            self.assertIn(b"stderr: boom\\rts=2026-01-01T00:00:00.000Z level=error msg=Forged"
                          b"\\u001b[2K\\u0007", line)
            for control in (b"\r", b"\x1b", b"\x07"):
                self.assertNotIn(control, log)

    def test_a_function_posts_to_k_sink_and_starts_a_triggered_workflow(self):
        with Daemon("--functions-dir", E2E_DIR) as d:
            d.start()
            self.create(d, PRODUCER, CONSUMER)
            reply = self.invoke(d, "producer", {"order": "o-7"})
            self.assertEqual(reply["sink"], f"{d.base}{NS}/broker")
            self.assertEqual(reply["brokerStatus"], 202, reply)
            [started] = reply["broker"]["runs"]
            self.assertEqual(started["workflow"], "consumer")

            def finished():
                status, run = d.json("GET", f"{NS}/runs/{started['runId']}")
                self.assertEqual(status, 200, run)
                return run if run["phase"] in ("completed", "faulted", "cancelled") else None

            run = wait_until(finished, DEADLINE)
            self.assertTrue(run, "the triggered run never finished")
            self.assertEqual(run["phase"], "completed", run)
            self.assertEqual(run["output"]["data"], {"got": "o-7"})
            # The function's token is good for its own namespace's broker and nothing else.
            self.assertEqual(reply["otherNamespaceStatus"], 401)
            self.assertEqual(reply["listWorkflowsStatus"], 401)


if __name__ == "__main__":
    unittest.main(verbosity=2)
