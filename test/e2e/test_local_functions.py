"""Local functions (local.command) of the real daemon, with real processes: a function that
crashes is restarted and the restart shows in /metrics; after `kill -9` of the daemon its
function dies with it (PR_SET_PDEATHSIG) and the next daemon on the same data directory kills
what was left of the function's process group (a child the function started); SIGTERM while a
run waits for a function that does not listen yet stops the daemon at once, and the run resumes
at the next start; control characters a function writes to stderr reach the daemon's log only
escaped; a function finds the namespace's broker in K_SINK, and an event it posts there with
KNFLOW_SINK_TOKEN starts a triggered workflow, while that token opens nothing else; the logs
routes page the lines of every function of a workflow in arrival order, by `limit` and by size,
with `since`, and refuse a bad `limit` or a foreign `continue`; the functions route shows each
function's process, its restarts, how it last ended and why its start failed."""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
from datetime import datetime, timedelta

sys.path.insert(0, os.path.dirname(__file__))
from daemon import (BIN, SOURCE_DIR, Daemon, LocalFunction, alive, wait_until,  # noqa: E402
                    workflow, zombie)

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

PAIR = """apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata: {name: pair}
spec:
  functions:
    a: {local: {command: [python3, echo_function.py]}}
    b: {local: {command: [python3, echo_function.py]}}
  do:
    - {name: first, call: a}
    - {name: second, call: b}
    - {name: nap, wait: PT10M}
"""

PAGE_BYTES = 1 << 20  # what a logs page's items stay within (but for a page of one line)

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

    def test_a_call_retried_after_its_function_crashed_reaches_the_restarted_process(self):
        """The function dies while handling a call and is restarted on a new port: the call's
        retries go to where it listens now (they went to the dead port until the limit ran
        out)."""
        with tempfile.TemporaryDirectory() as tmp, Daemon("--functions-dir", ECHO_DIR) as d:
            d.start()
            doc = ("apiVersion: knflow.dev/v1alpha1\nkind: Workflow\nmetadata: {name: flaky}\n"
                   "spec:\n  functions:\n    echo:\n"
                   f"      env: {{CRASH_ONCE: '{os.path.join(tmp, 'crashed')}'}}\n"
                   "      local: {command: [python3, echo_function.py]}\n"
                   "  do:\n    - name: say\n      call: echo\n"
                   "      retry: {limit: 20, backoff: constant, delay: PT0.2S, jitter: false}\n")
            self.create(d, doc)
            # Echoed as application/octet-stream: text, which the answer gives as it came.
            self.assertEqual(self.invoke(d, "flaky", {"n": 1}), {"n": 1})
            self.assertTrue(os.path.exists(os.path.join(tmp, "crashed")))

    def functions(self, d, name):
        """{function: item} of GET .../workflows/NAME/functions."""
        status, listed = d.json("GET", f"{NS}/workflows/{name}/functions")
        self.assertEqual(status, 200, listed)
        self.assertEqual((listed["apiVersion"], listed["kind"]), ("knflow.dev/v1alpha1", "FunctionList"))
        return {item["name"]: item for item in listed["items"]}

    def test_the_functions_route_shows_each_process_its_restarts_and_its_start_error(self):
        """What the processes of a workflow's local functions are doing: a function no call has
        needed yet, one running (then crashed and started again, counted), one whose start fails
        (its error and when it is tried again); a function at a url is not listed."""
        broken = ("apiVersion: knflow.dev/v1alpha1\nkind: Workflow\nmetadata: {name: states}\n"
                  "spec:\n  functions:\n"
                  "    echo: {local: {command: [python3, echo_function.py]}}\n"
                  "    later: {local: {command: [python3, echo_function.py]}}\n"
                  "    outside: {url: 'http://127.0.0.1:9/'}\n"
                  "    broken:\n      env: {EXIT_AT_START: '4'}\n"
                  "      local: {command: [python3, echo_function.py]}\n"
                  "  do:\n    - {name: say, call: echo}\n"
                  "    - name: fail\n      try: [{name: call, call: broken}]\n"
                  "      catch: {as: e}\n"
                  "    - {name: never, if: '${ false }', call: later}\n")
        with Daemon("--functions-dir", ECHO_DIR) as d:
            d.start()
            self.create(d, broken)
            self.assertEqual(self.functions(d, "states"), {
                "broken": {"name": "broken", "phase": "notStarted"},
                "echo": {"name": "echo", "phase": "notStarted"},
                "later": {"name": "later", "phase": "notStarted"}})
            status, _, body = d.call("POST", f"{NS}/workflows/states:invoke", "{}")
            self.assertEqual(status, 200, body)

            listed = self.functions(d, "states")
            self.assertEqual(sorted(listed), ["broken", "echo", "later"])
            self.assertEqual(listed["later"], {"name": "later", "phase": "notStarted"})
            echo = listed["echo"]
            self.assertEqual((echo["phase"], echo["revision"], echo["restarts"]), ("running", 1, 0))
            self.assertRegex(echo["url"], r"^http://127\.0\.0\.1:\d+$")
            self.assertRegex(echo["readyAt"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertNotIn("lastExit", echo)
            port = int(echo["url"].rsplit(":", 1)[1])
            self.assertEqual([p for p, _ in self.listening_of(d, "states")], [port])
            self.assertTrue(alive(echo["pid"]))
            # Between its tries it backs off (each try a moment in `starting`).
            seen = [None]
            self.assertTrue(wait_until(lambda: seen.__setitem__(0, self.functions(d, "states")[
                "broken"]) or seen[0]["phase"] == "backingOff", DEADLINE), seen)
            bad = seen[0]
            self.assertIn("exited with 4 before accepting connections", bad["lastError"])
            self.assertIn("echo: refusing to start", bad["lastError"])
            self.assertRegex(bad["nextAttemptAt"], r"Z$")
            self.assertNotIn("pid", bad)
            self.assertNotIn("url", bad)

            # A crash: started again on another port, counted, and how it ended is kept.
            crash(port)
            self.assertTrue(wait_until(lambda: self.functions(d, "states")["echo"].get("restarts")
                                       == 1 and self.functions(d, "states")["echo"]["phase"]
                                       == "running", DEADLINE), self.functions(d, "states"))
            echo = self.functions(d, "states")["echo"]
            self.assertEqual(echo["lastExit"], "exited with 3")
            self.assertNotEqual(echo["url"], f"http://127.0.0.1:{port}")
            # The failed start is tried again in the background, and counted too.
            self.assertTrue(wait_until(lambda: self.functions(d, "states")["broken"]["restarts"] >= 1,
                                       DEADLINE), self.functions(d, "states"))

            # What the API answers is what its contract (docs/openapi.json) describes.
            with open(os.path.join(SOURCE_DIR, "docs", "openapi.json")) as f:
                item = json.load(f)["components"]["schemas"]["FunctionList"]["properties"][
                    "items"]["items"]
            for answered in [*listed.values(), echo, bad]:
                self.assertLessEqual(set(answered), set(item["properties"]), answered)
                self.assertLessEqual(set(item["required"]), set(answered), answered)
                self.assertIn(answered["phase"], item["properties"]["phase"]["enum"])
            # The same from the CLI: a row per function.
            def cli(*args):
                r = subprocess.run([BIN, *args, "--server", d.base, "--token-file",
                                    os.path.join(d.data_dir, "token")], capture_output=True,
                                   text=True, timeout=DEADLINE)
                return r.returncode, r.stdout, r.stderr
            code, out, err = cli("functions", "states")
            self.assertEqual(code, 0, err)
            rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
            self.assertEqual(out.split()[:7], ["FUNCTION", "REVISION", "PHASE", "PID", "RESTARTS",
                                               "SINCE", "LAST"])
            self.assertEqual(sorted(rows), ["broken", "echo", "later"])
            self.assertEqual(rows["later"][1:6], ["-", "notStarted", "-", "-", "-"])
            self.assertEqual(rows["echo"][1:3], ["1", "running"])
            self.assertIn("exited with 3", out)
            self.assertIn("echo: refusing to start", out)
            code, out, err = cli("functions", "states", "-o", "json")
            self.assertEqual(code, 0, err)
            self.assertEqual(json.loads(out)["kind"], "FunctionList")
            code, out, err = cli("functions", "nothing")
            self.assertEqual((code, out), (1, ""), err)
            self.assertIn("404 Not Found", err)
            status, _, body = d.call("GET", f"{NS}/workflows/nothing/functions")
            self.assertEqual(status, 404, body)
            status, _, body = d.call("GET", "/api/v1/namespaces/Default/workflows/states/functions")
            self.assertEqual(status, 400, body)

    def listening_of(self, d, name):
        """[(port, pid)] of every start of an echo function of workflow NAME, from its logs."""
        status, logs = d.json("GET", f"{NS}/workflows/{name}/logs")
        self.assertEqual(status, 200, logs)
        return [(int(m.group(1)), int(m.group(2))) for line in logs["items"]
                if (m := re.search(r"echo: listening on (\d+) pid=(\d+)", line["text"]))]

    def test_a_replace_that_leaves_the_spec_alone_keeps_the_functions_processes(self):
        """An idempotent re-apply (the same YAML again, or new labels) stopped every function
        process of the workflow, and its next call started them cold; a Knative Service's
        metadata change makes no new revision. A change of the spec still replaces them."""
        with Daemon("--functions-dir", ECHO_DIR) as d:
            d.start()
            self.create(d, ECHOER)
            self.invoke(d, "echoer", {"n": 1})
            pid = self.functions(d, "echoer")["echo"]["pid"]
            relabelled = ECHOER.replace("metadata: {name: echoer}",
                                        "metadata: {name: echoer, labels: {tier: gold}}")
            for doc in (ECHOER, relabelled):
                status, _, body = d.call("PUT", NS + "/workflows/echoer", doc,
                                         content_type="application/yaml")
                self.assertEqual(status, 200, body)
                listed = self.functions(d, "echoer")["echo"]
                self.assertEqual((listed["phase"], listed["pid"]), ("running", pid))
                self.invoke(d, "echoer", {"n": 2})
                self.assertEqual(self.functions(d, "echoer")["echo"]["pid"], pid)
            changed = relabelled.replace('SPAWN_CHILD: "1"', 'SPAWN_CHILD: "1", EXTRA: "x"')
            self.assertNotEqual(changed, relabelled)
            status, _, body = d.call("PUT", NS + "/workflows/echoer", changed,
                                     content_type="application/yaml")
            self.assertEqual(status, 200, body)
            self.invoke(d, "echoer", {"n": 3})
            self.assertNotEqual(self.functions(d, "echoer")["echo"]["pid"], pid)

    def test_a_released_process_is_listed_until_it_is_gone(self):
        """A process that ignores SIGTERM holds its port for the stop grace (5 s) after an
        update released it: it was listed nowhere meanwhile."""
        stubborn = ECHOER.replace('SPAWN_CHILD: "1"', 'IGNORE_SIGTERM: "1"')
        with Daemon("--functions-dir", ECHO_DIR) as d:
            d.start()
            self.create(d, stubborn)
            self.invoke(d, "echoer", {"n": 1})
            pid = self.functions(d, "echoer")["echo"]["pid"]
            status, _, body = d.call("PUT", NS + "/workflows/echoer",
                                     stubborn.replace('IGNORE_SIGTERM: "1"',
                                                      'IGNORE_SIGTERM: "1", EXTRA: "x"'),
                                     content_type="application/yaml")
            self.assertEqual(status, 200, body)
            status, listed = d.json("GET", f"{NS}/workflows/echoer/functions")
            self.assertEqual(status, 200, listed)
            stopping = [i for i in listed["items"] if i.get("retired")]
            self.assertEqual([(i["name"], i["phase"], i["pid"]) for i in stopping],
                             [("echo", "stopping", pid)], listed)
            self.assertNotIn("url", stopping[0])
            # Gone once the grace is over (killed), and no longer listed.
            self.assertTrue(wait_until(lambda: not alive(pid), DEADLINE))
            self.assertTrue(wait_until(lambda: not any(
                i.get("retired") for i in d.json("GET", f"{NS}/workflows/echoer/functions")[1][
                    "items"]), DEADLINE))

    def test_the_open_files_limit_is_raised_for_connections_and_not_for_functions(self):
        """A soft limit of open files (1,024 for most shells and services) ran out before
        --max-connections did: idle connections left new ones unanswered and calls faulted. The
        daemon raises it to the hard limit; its function processes start with the one it was
        started with; and --max-connections is lowered to leave room within a hard limit."""
        def soft_limit(pid):
            with open(f"/proc/{pid}/limits") as f:
                line = next(line for line in f if line.startswith("Max open files"))
            return int(line.split()[3])

        d = Daemon("--functions-dir", ECHO_DIR)
        d.args = ["prlimit", "--nofile=200:4096", "--", *d.args]
        with d:
            d.start()
            self.assertEqual(soft_limit(d.proc.pid), 4096)
            self.create(d, ECHOER)
            status, _, body = d.call("POST", f"{NS}/workflows/echoer:invoke", "{}")
            self.assertEqual(status, 200, body)
            self.assertEqual(soft_limit(self.functions(d, "echoer")["echo"]["pid"]), 200)
            self.assertNotIn("Lowered --max-connections", d.output())

        d = Daemon()
        d.args = ["prlimit", "--nofile=256:256", "--", *d.args]
        with d:
            d.start()
            self.assertIn('msg="Lowered --max-connections to fit the open files limit" '
                          'requested=1024 maxConnections=192 openFilesLimit=256', d.output())
            # Past the 192, a connection is answered 503 at once, not left unanswered; a client
            # connected before goes on being served.
            kept = socket.create_connection(("127.0.0.1", d.port))
            idle = [socket.create_connection(("127.0.0.1", d.port)) for _ in range(191)]
            try:
                late = socket.create_connection(("127.0.0.1", d.port))
                late.settimeout(DEADLINE)
                self.assertTrue(late.recv(100).startswith(b"HTTP/1.1 503"))
                late.close()
                kept.settimeout(DEADLINE)
                kept.sendall(f"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                             f"{d.token}\r\n\r\n".encode())
                self.assertTrue(kept.recv(100).startswith(b"HTTP/1.1 200"))
            finally:
                for c in idle:
                    c.close()
                kept.close()

    def test_a_runs_logs_hold_what_its_function_printed_before_answering(self):
        """Lines are stamped when the daemon reads them, which may come after the run ended on
        the answer the function wrote after them: a run's logs missed some of its own lines (14
        runs of 40 in review, 1,849 lines of 12,000)."""
        with Daemon("--functions-dir", ECHO_DIR) as d:
            d.start()
            self.create(d, "apiVersion: knflow.dev/v1alpha1\nkind: Workflow\n"
                           "metadata: {name: chatty}\nspec:\n  functions:\n    echo:\n"
                           "      env: {PRINT_LINES: '200'}\n"
                           "      local: {command: [python3, echo_function.py]}\n"
                           "  do:\n    - {name: say, call: echo}\n")

            def lines_of(route):
                lines, cont = [], None
                while True:
                    status, page = d.json("GET", route + "?limit=1000"
                                          + (f"&continue={cont}" if cont else ""))
                    self.assertEqual(status, 200, page)
                    lines += [line["text"] for line in page["items"]]
                    cont = page.get("metadata", {}).get("continue")
                    if not cont:
                        return lines

            for k in range(20):
                status, headers, body = d.call("POST", f"{NS}/workflows/chatty:invoke",
                                               json.dumps({"k": k}))
                self.assertEqual(status, 200, body)
                mine = {f'echo: {{"k":{k}}} {i}' for i in range(200)}
                # Once the daemon has read them all (2,000 lines are kept: check each run now).
                self.assertTrue(wait_until(lambda: mine <= set(lines_of(
                    f"{NS}/workflows/chatty/logs")), DEADLINE))
                lines = lines_of(f"{NS}/runs/{headers['Knflow-Run-Id']}/logs")
                self.assertEqual(mine - set(lines), set(), f"run {k} misses some of its lines")

    def test_a_runs_logs_hold_its_own_calls_lines_not_those_of_another_run_meanwhile(self):
        """A run's logs are what its functions printed while its calls of them were under way:
        before, they were every line in the run's lifetime, so a run waiting in a `wait` showed
        what other runs' calls printed meanwhile."""
        with Daemon("--functions-dir", ECHO_DIR) as d:
            d.start()
            self.create(d, "apiVersion: knflow.dev/v1alpha1\nkind: Workflow\n"
                           "metadata: {name: paced}\nspec:\n  functions:\n    echo:\n"
                           "      env: {PRINT_LINES: '2'}\n"
                           "      local: {command: [python3, echo_function.py]}\n"
                           "  do:\n    - {name: first, call: echo}\n"
                           "    - {name: pause, wait: PT60S, if: '${ contains(\"a\") }'}\n"
                           "    - {name: second, call: echo}\n")

            def lines_of(run_id, prefix="echo: {"):
                status, page = d.json("GET", f"{NS}/runs/{run_id}/logs")
                self.assertEqual(status, 200, page)
                return [line["text"] for line in page["items"] if line["text"].startswith(prefix)]

            status, _, body = d.call("POST", f"{NS}/workflows/paced:invoke?mode=async",
                                     json.dumps({"who": "a"}))
            self.assertEqual(status, 202, body)
            a = json.loads(body)["runId"]

            def first_attempt():
                status, run = d.json("GET", f"{NS}/runs/{a}")
                done = [t for t in run["attempts"] if t["phase"] == "completed"]
                return done[0] if done else None
            attempt = wait_until(first_attempt, DEADLINE)
            # B's calls come after the second that follows A's first call (the lines a call's
            # answer may outrun), while A waits.
            ended = datetime.fromisoformat(attempt["finishedAt"].replace("Z", "+00:00"))
            while datetime.now(ended.tzinfo) < ended + timedelta(seconds=1.2):
                time.sleep(0.1)
            status, headers, body = d.call("POST", f"{NS}/workflows/paced:invoke",
                                           json.dumps({"who": "b"}))
            self.assertEqual(status, 200, body)
            b = headers["Knflow-Run-Id"]

            mine_a = ['echo: {"who":"a"} 0', 'echo: {"who":"a"} 1']
            mine_b = ['echo: {"who":"b"} 0', 'echo: {"who":"b"} 1'] * 2
            self.assertTrue(wait_until(lambda: lines_of(b) == mine_b, DEADLINE), lines_of(b))
            self.assertEqual(lines_of(a), mine_a)  # still waiting: none of B's lines
            # What the process printed as it started is A's: A's call waited for that start.
            self.assertEqual(len(lines_of(a, "echo: listening on")), 1)
            self.assertEqual(lines_of(b, "echo: listening on"), [])

            # The workflow's logs hold both.
            status, page = d.json("GET", f"{NS}/workflows/paced/logs")
            self.assertEqual(status, 200, page)
            texts = [line["text"] for line in page["items"] if line["text"].startswith("echo: {")]
            self.assertEqual(texts, mine_a + mine_b)
            status, _, body = d.call("POST", f"{NS}/runs/{a}:cancel")
            self.assertEqual(status, 200, body)
            self.assertEqual(lines_of(a), mine_a)

    def test_killed_daemon_leaves_no_function_behind(self):
        first = Daemon("--functions-dir", ECHO_DIR)
        second = None
        leftovers = []
        try:
            first.start()
            self.create(first, ECHOER)
            self.assertEqual(self.invoke(first, "echoer", {"n": 1}), {"n": 1})  # text, as it came
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
            self.assertEqual(self.invoke(first, "echoer", {"n": 2}), {"n": 2})
            self.assertTrue(wait_until(lambda: not alive(child), DEADLINE),
                            "the crashed function's child survived its restart")
            child = int(function_get(port, "/child"))
            leftovers += [pid, child]
            records = os.path.join(first.data_dir, "function-processes")
            [record] = os.listdir(records)
            with open(os.path.join(records, record)) as f:
                self.assertRegex(f.read(), rf"(?m)^{pid} \d+ \d+$")

            # kill -9: the function dies with the daemon; its child is still in its group. The
            # daemon is left a zombie (not reaped) until the next one has started: a zombie runs
            # no more, and its record was once taken for a running daemon's.
            first.proc.kill()
            self.assertTrue(wait_until(lambda: zombie(first.proc.pid), DEADLINE))
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
            first.proc.wait()

            # The workflow still works; SIGTERM stops its new function and leaves no record.
            self.assertEqual(self.invoke(second, "echoer", {"n": 3}), {"n": 3})
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

    def test_a_call_in_flight_keeps_its_process_through_an_update_and_a_delete(self):
        # An update used to stop the workflow's processes at once, failing the calls in flight;
        # runs of the old and the new definition then stopped each other's process at every call;
        # and after a delete, a run still going started the process again for good.
        with tempfile.TemporaryDirectory() as tmp, Daemon("--functions-dir", ECHO_DIR) as d:
            d.start()
            release = os.path.join(tmp, "release")
            def holder(greeting):
                return json.dumps({
                    "apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                    "metadata": {"name": "holder"},
                    "spec": {"functions": {"echo": {
                        "env": {"HOLD_UNTIL": release, "GREETING": greeting},
                        "local": {"command": ["python3", "echo_function.py"]}}},
                        "do": [{"name": "first", "call": "echo"},
                               {"name": "second", "call": "echo"}]}})

            def lines(pattern):
                status, logs = d.json("GET", NS + "/workflows/holder/logs")
                self.assertEqual(status, 200, logs)
                return [int(m.group(1)) for line in logs["items"]
                        if (m := re.search(pattern, line["text"]))]

            def run_until_held(greeting_pids):
                status, run = d.json("POST", NS + "/workflows/holder:invoke?mode=async",
                                     json.dumps({"n": 1}))
                self.assertEqual(status, 202, run)
                self.assertTrue(wait_until(lambda: len(lines(r"holding pid=(\d+)")) >
                                           greeting_pids, DEADLINE), d.output())
                return run["runId"], lines(r"holding pid=(\d+)")[-1]

            def finished(run_id):
                def phase():
                    _, view = d.json("GET", f"{NS}/runs/{run_id}")
                    return view if view["phase"] not in ("pending", "running") else None
                view = wait_until(phase, DEADLINE)
                self.assertTrue(view, f"run {run_id} did not finish:\n{d.output()}")
                return view

            status, _, body = d.call("POST", NS + "/workflows", holder("a"))
            self.assertEqual(status, 201, body)
            old_run, old_pid = run_until_held(0)
            # The workflow changes while its run is in the first call.
            status, _, body = d.call("PUT", NS + "/workflows/holder", holder("b"))
            self.assertEqual(status, 200, body)
            self.assertTrue(alive(old_pid), "the update stopped the call in flight")
            # The functions route lists the process the old run's call holds after the current
            # definition's (which no call has needed yet), as retired (it was not listed).
            status, listed = d.json("GET", NS + "/workflows/holder/functions")
            self.assertEqual(status, 200, listed)
            current, kept = listed["items"]
            self.assertEqual(current, {"name": "echo", "phase": "notStarted"})
            self.assertEqual((kept["name"], kept["retired"], kept["revision"], kept["phase"],
                              kept["pid"]), ("echo", True, 1, "running", old_pid), kept)
            r = subprocess.run([BIN, "functions", "holder", "--server", d.base, "--token-file",
                                os.path.join(d.data_dir, "token")], capture_output=True,
                               text=True, timeout=DEADLINE)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual([line.split()[:4] for line in r.stdout.splitlines()],
                             [["FUNCTION", "REVISION", "PHASE", "PID"],
                              ["echo", "-", "notStarted", "-"],
                              ["echo", "1(retired)", "running", str(old_pid)]])
            with open(release, "w"):
                pass
            view = finished(old_run)
            self.assertEqual(view["phase"], "completed", view)
            # A run of the new definition gets its own process; once no call of the old
            # definition holds the old one, it stops.
            os.remove(release)
            new_run, new_pid = run_until_held(1)
            self.assertNotEqual(new_pid, old_pid)
            self.assertTrue(wait_until(lambda: not alive(old_pid), DEADLINE), d.output())
            # Stopped: no longer listed, once the daemon has seen it end (listed as stopping
            # until then; its end may be seen a moment after the process is gone).
            def listed_alone():
                status, listed = d.json("GET", NS + "/workflows/holder/functions")
                self.assertEqual(status, 200, listed)
                return listed["items"] if len(listed["items"]) == 1 else None

            self.assertTrue(wait_until(listed_alone, DEADLINE), d.output())
            [current] = listed_alone()
            self.assertEqual((current["phase"], current["revision"], current["pid"]),
                             ("running", 2, new_pid), current)
            self.assertNotIn("retired", current)

            # Deleted while its run is in the first call: that call ends normally, the second
            # is served too, and no process of the workflow is left once the run is over.
            status, _, body = d.call("DELETE", NS + "/workflows/holder")
            self.assertEqual(status, 200, body)
            self.assertTrue(alive(new_pid), "the delete stopped the call in flight")
            # Made again meanwhile: it starts with no lines, and what the deleted one's
            # processes print for its run (the second call too) is not shown as its own (it
            # was: the new workflow's logs showed the old process's lines, for good).
            status, _, body = d.call("POST", NS + "/workflows", holder("c"))
            self.assertEqual(status, 201, body)
            self.assertEqual(lines(r"pid=(\d+)"), [])
            with open(release, "w"):
                pass
            view = finished(new_run)
            self.assertEqual(view["phase"], "completed", view)
            self.assertTrue(wait_until(lambda: not alive(new_pid), DEADLINE), d.output())
            self.assertTrue(wait_until(lambda: "Released local function" in d.output()
                                       and not self.function_pids(d), DEADLINE), d.output())
            self.assertEqual(lines(r"pid=(\d+)"), [])

    def function_pids(self, d):
        """Process ids of the daemon's children that run echo_function.py."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    command = f.read()
            except OSError:
                continue
            if parent == d.proc.pid and b"echo_function.py" in command:
                found.append(int(entry))
        return found

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
            # The attempt that waited for the start was left under way by the shutdown, and the
            # next start marked it interrupted (not faulted or cancelled as by a user).
            first_attempt = run["attempts"][0]
            self.assertEqual((first_attempt["phase"], first_attempt["error"]["title"]),
                             ("cancelled", "Interrupted"), first_attempt)
            [pid] = wait_until(lambda: self.recorded_groups(second), DEADLINE)
            stopping = time.monotonic()
            self.assertEqual(second.stop(), 0, second.output())
            self.assertLess(time.monotonic() - stopping, 10, second.output())
            self.assertFalse(alive(pid))
        finally:
            for daemon in (second, first):
                if daemon:
                    daemon.close()

    def test_a_shutdown_during_a_call_leaves_its_attempt_to_be_marked_interrupted(self):
        # It was written `cancelled` "Cancelled: the call was abandoned: its run or branch was
        # cancelled", as if a user had cancelled the run.
        release = threading.Event()
        calls = []

        def respond(path, headers, body):
            calls.append(path)
            if len(calls) == 1:
                release.wait(DEADLINE)
            return 200, '{"ok": true}'
        function = LocalFunction(respond)
        first = second = None
        try:
            first = Daemon()
            first.start()
            self.create(first, workflow("held", function.url))
            status, _, body = first.call("POST", f"{NS}/workflows/held:invoke?mode=async", "{}")
            self.assertEqual(status, 202, body)
            run_id = json.loads(body)["runId"]
            self.assertTrue(wait_until(lambda: calls, DEADLINE))
            self.assertEqual(first.stop(), 0, first.output())
            release.set()
            second = Daemon(data_dir=first.data_dir)
            second.start()

            def finished():
                status, run = second.json("GET", f"{NS}/runs/{run_id}")
                return run if run["phase"] == "completed" else None
            run = wait_until(finished, DEADLINE)
            self.assertTrue(run, second.output())
            interrupted, sent_again = run["attempts"]
            self.assertEqual((interrupted["phase"], interrupted["error"]["title"]),
                             ("cancelled", "Interrupted"), interrupted)
            self.assertEqual((sent_again["attempt"], sent_again["phase"]), (2, "completed"))
        finally:
            release.set()
            for daemon in (second, first):
                if daemon:
                    daemon.close()
            function.close()

    def test_a_call_that_timed_out_during_the_start_no_longer_holds_the_process(self):
        # The call's step timeout ended the run, but the call kept its hold on the function until
        # the start itself ended (30 s later): a delete meanwhile left the process running to
        # the end of the start timeout, and the failed start was then retried once more.
        d = Daemon()
        try:
            d.start()
            self.create(d, SILENT.replace("name: silent", "name: silent1").replace(
                "call: mute}", "call: mute, timeout: PT1S}"))
            status, _, body = d.call("POST", f"{NS}/workflows/silent1:invoke", "{}")
            self.assertEqual(status, 504, body)  # the step's 408, answered as a gateway's
            self.assertEqual(json.loads(body)["error"]["status"], 408, body)
            # Says where the time went.
            waited = ("the step or run deadline passed while local function mute was "
                      "starting (its process did not listen yet)")
            self.assertEqual(json.loads(body)["error"]["detail"],
                             waited.replace("the step or run deadline",
                                            'the timeout of step "call" (PT1S)'), body)
            # The wait is the step's attempt, as a request Knative's activator holds during a
            # cold start: its times show the second the step waited, and its error why it ended.
            # (Before, the step had no attempt at all, so no times either.)
            status, runs = d.json("GET", f"{NS}/runs?workflow=silent1")
            self.assertEqual(status, 200, runs)
            status, run = d.json("GET", f"{NS}/runs/{runs['items'][0]['id']}")
            self.assertEqual(status, 200, run)
            [attempt] = run["attempts"]
            self.assertEqual((attempt["path"], attempt["attempt"], attempt["phase"]),
                             ("/do/0", 1, "faulted"), attempt)
            self.assertEqual(attempt["error"]["detail"], waited, attempt)
            self.assertNotIn("httpStatus", attempt)
            took = (datetime.fromisoformat(attempt["finishedAt"].replace("Z", "+00:00")) -
                    datetime.fromisoformat(attempt["startedAt"].replace("Z", "+00:00")))
            self.assertGreaterEqual(took.total_seconds(), 0.99, attempt)
            [step] = run["steps"]
            self.assertEqual((step["phase"], step["attempts"]), ("faulted", 1), step)
            self.assertEqual(step["startedAt"], attempt["startedAt"], step)
            [pid] = wait_until(lambda: self.recorded_groups(d), DEADLINE)
            self.assertTrue(alive(pid))  # the workflow exists: its function goes on starting

            status, _, body = d.call("DELETE", f"{NS}/workflows/silent1")
            self.assertEqual(status, 200, body)
            # Polled for less than the 30 s start timeout, after which the old code stopped it.
            self.assertTrue(wait_until(lambda: not alive(pid), 10),
                            f"the deleted workflow's function still starts:\n{d.output()}")
            self.assertTrue(wait_until(lambda: self.recorded_groups(d) == [], DEADLINE))  # reaped
            deleted = d.output().index("Deleted workflow")
            self.assertNotIn("Spawned local function", d.output()[deleted:])
        finally:
            d.close()

    def test_a_call_waiting_for_the_start_shows_its_attempt_and_a_cancel_ends_it(self):
        with Daemon() as d:
            d.start()
            self.create(d, SILENT.replace("name: silent", "name: silent2"))
            status, _, body = d.call("POST", f"{NS}/workflows/silent2:invoke?mode=async", "{}")
            self.assertEqual(status, 202, body)
            run_id = json.loads(body)["runId"]

            def attempts():
                status, run = d.json("GET", f"{NS}/runs/{run_id}")
                self.assertEqual(status, 200, run)
                return run["attempts"]
            # The process never listens (for 30 s): meanwhile the step's attempt is under way.
            [attempt] = wait_until(attempts, DEADLINE)
            self.assertEqual((attempt["path"], attempt["phase"]), ("/do/0", "running"), attempt)
            self.assertNotIn("finishedAt", attempt)

            status, _, body = d.call("POST", f"{NS}/runs/{run_id}:cancel")
            self.assertEqual(status, 200, body)
            status, run = d.json("GET", f"{NS}/runs/{run_id}")
            self.assertEqual(run["phase"], "cancelled", run)
            [attempt] = run["attempts"]
            self.assertEqual(attempt["phase"], "cancelled", attempt)
            self.assertEqual(attempt["error"]["status"], 499, attempt)
            self.assertEqual(run["steps"][0]["phase"], "cancelled", run)

    def test_a_local_functions_dead_letter_names_the_function_not_its_port(self):
        # knativeerrordest was the process's URL, a port that changes with every start (and was
        # local:NAME when a run resumed after the daemon's restart, so one event went to the
        # dead-letter sink under two names).
        got = []
        sink = LocalFunction(lambda path, headers, body: got.append(dict(headers)) or (202, ""))
        try:
            with Daemon("--functions-dir", ECHO_DIR) as d:
                d.start()
                self.create(d, json.dumps({
                    "apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                    "metadata": {"name": "refused"},
                    "spec": {"functions": {"picky": {
                        "env": {"ANSWER_STATUS": "400"},
                        "local": {"command": ["python3", "echo_function.py"]}}},
                        "deadLetter": {"uri": sink.url + "/dead"},
                        "do": [{"name": "ask", "call": "picky"}]}}))
                status, _, body = d.call("POST", f"{NS}/workflows/refused:invoke", "{}")
                self.assertEqual(status, 400, body)
                self.assertTrue(wait_until(lambda: got, DEADLINE))
                [headers] = got
                self.assertEqual(headers["ce-knativeerrordest"], "local:picky", headers)
                self.assertEqual(headers["ce-knativeerrorcode"], "400", headers)
        finally:
            sink.close()

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
            self.assertEqual(d.stop(), 0, d.tail())
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


class LogsPagingTest(unittest.TestCase):
    """Both functions of `pair` run while a run of it naps; the tests write lines from them in
    batches, each batch read by the daemon before the next is written, so arrival order is
    known."""

    def setUp(self):
        self.d = Daemon("--functions-dir", ECHO_DIR)
        self.addCleanup(self.d.close)
        self.d.start()
        status, _, body = self.d.call("POST", NS + "/workflows", PAIR,
                                      content_type="application/yaml")
        self.assertEqual(status, 201, body)
        status, _, body = self.d.call("POST", f"{NS}/workflows/pair:invoke?mode=async", "{}")
        self.assertEqual(status, 202, body)
        self.run_id = json.loads(body)["runId"]
        self.ports = {}
        for name in ("a", "b"):
            self.ports[name] = wait_until(lambda: self.port_of(name), DEADLINE)
            self.assertTrue(self.ports[name], f"function {name} never listened:\n{self.d.output()}")
        # Both startup lines of both functions, so that no line arrives after the batches below.
        self.assertTrue(wait_until(lambda: len(self.walk(NS + "/workflows/pair/logs")) == 4,
                                   DEADLINE), self.walk(NS + "/workflows/pair/logs"))

    def page(self, target):
        status, _, text = self.d.call("GET", target)
        self.assertEqual(status, 200, text)
        return text, json.loads(text)

    def walk(self, target, pages=None):
        """Every line of a logs route, following `continue` (at most 100 pages)."""
        lines = []
        cont = None
        for _ in range(100):
            sep = "&" if "?" in target else "?"
            text, body = self.page(target + (sep + "continue=" + cont if cont else ""))
            if pages is not None:
                pages.append((len(text.encode()), body))
            lines += body["items"]
            cont = body.get("metadata", {}).get("continue")
            if not cont:
                return lines
        self.fail(f"{target} had more than 100 pages")

    def port_of(self, name):
        for line in self.walk(NS + "/workflows/pair/logs"):
            m = re.search(r"echo: listening on (\d+)", line["text"])
            if m and line["function"] == name:
                return int(m.group(1))
        return None

    def spam(self, name, query, until):
        """POST /spam?QUERY to function NAME; waits until the daemon has read its lines, which is
        when `until(lines of NAME)` holds."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.ports[name]}/spam?{query}",
                                     data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            self.assertEqual(r.status, 200)
        self.assertTrue(wait_until(lambda: until([line for line in self.walk(
            NS + "/workflows/pair/logs") if line["function"] == name]), DEADLINE),
            f"the lines of {name} never arrived")

    def spam_in_turns(self):
        """Three lines from a, three from b, three from a again: 9 spam lines, 13 in all."""
        def spam_lines(n):
            return lambda lines: sum(line["text"].startswith("spam ") for line in lines) == n

        self.spam("a", "n=3", spam_lines(3))
        self.spam("b", "n=3", spam_lines(3))
        self.spam("a", "n=3", spam_lines(6))
        return [(f, f"spam {i}") for f in "aba" for i in range(3)]

    def test_pages_of_limit_lines_walk_every_line_once_in_arrival_order(self):
        expected = self.spam_in_turns()
        for route in (f"{NS}/workflows/pair/logs", f"{NS}/runs/{self.run_id}/logs"):
            with self.subTest(route=route):
                _, whole = self.page(route + "?limit=1000")
                self.assertEqual(whole.get("metadata"), {}, whole)  # no more pages
                self.assertEqual(len(whole["items"]), 13, whole)
                pages = []
                walked = self.walk(route + "?limit=2", pages)
                self.assertEqual(walked, whole["items"])  # each line once, none lost
                self.assertEqual([len(body["items"]) for _, body in pages], [2] * 6 + [1])
                self.assertEqual([(line["function"], line["text"]) for line in walked
                                  if line["text"].startswith("spam ")], expected)

    def test_since_pages_from_an_instant(self):
        self.spam_in_turns()
        whole = self.walk(f"{NS}/workflows/pair/logs")
        since = next(line["time"] for line in whole
                     if (line["function"], line["text"]) == ("b", "spam 0"))
        later = [line for line in whole if line["time"] >= since]
        self.assertLess(len(later), len(whole))
        for route in (f"{NS}/workflows/pair/logs", f"{NS}/runs/{self.run_id}/logs"):
            with self.subTest(route=route):
                pages = []
                walked = self.walk(route + "?limit=2&since=" + since, pages)
                self.assertEqual(walked, later)
                self.assertEqual([len(body["items"]) for _, body in pages][:-1],
                                 [2] * (len(pages) - 1))
                self.assertGreaterEqual(len(pages), 3)  # b's three lines and a's last three

    def test_a_page_of_large_lines_is_cut_by_size(self):
        # 8,000 bytes of U+0001 each: 48,000 bytes of JSON escapes (\u0001) per line.
        self.spam("a", "n=40&len=8000&hex=01",
                  lambda lines: sum(line["text"].startswith("\x01") for line in lines) == 40)
        pages = []
        walked = self.walk(f"{NS}/workflows/pair/logs", pages)
        self.assertEqual(sum(line["text"] == "\x01" * 8000 for line in walked), 40)
        self.assertEqual(len(walked), 44, [line["text"][:20] for line in walked])
        self.assertGreater(len(pages), 1)
        for size, body in pages:
            self.assertLessEqual(size, PAGE_BYTES + 200)  # items, metadata and braces
        # Full pages: the next line would not have fitted.
        for size, _ in pages[:-1]:
            self.assertGreater(size, PAGE_BYTES - 48_100)

    def invalid_query(self, target, parameters):
        status, headers, text = self.d.call("GET", target)
        self.assertEqual(status, 400, text)
        self.assertEqual(headers["Content-Type"], "application/problem+json")
        problem = json.loads(text)
        self.assertEqual(problem["type"], "https://knflow.dev/problems/invalid-query", text)
        self.assertEqual([e["parameter"] for e in problem["errors"]], parameters, text)
        for error in problem["errors"]:
            self.assertIn(error["parameter"], error["detail"])

    def test_a_bad_limit_or_a_foreign_continue_is_refused(self):
        status, _, body = self.d.call("POST", NS + "/workflows", workflow("other"))
        self.assertEqual(status, 201, body)
        workflow_logs = f"{NS}/workflows/pair/logs"
        run_logs = f"{NS}/runs/{self.run_id}/logs"
        _, first = self.page(workflow_logs + "?limit=1")
        token = first["metadata"]["continue"]
        _, first = self.page(run_logs + "?limit=1")
        run_token = first["metadata"]["continue"]
        for route in (workflow_logs, run_logs):
            for limit in ("0", "-1", "x", "1.5", ""):
                with self.subTest(route=route, limit=limit):
                    self.invalid_query(route + "?limit=" + limit, ["limit"])
            for cont in ("x", "1", "1-", token + "0", token[:-1] + "z"):
                with self.subTest(route=route, cont=cont):
                    self.invalid_query(route + "?continue=" + cont, ["continue"])
            self.invalid_query(route + "?since=soon&limit=0&continue=x",
                               ["since", "limit", "continue"])
        # A token is good only for the route and the workflow or run it came from.
        self.invalid_query(run_logs + "?continue=" + token, ["continue"])
        self.invalid_query(f"{NS}/workflows/other/logs?continue=" + token, ["continue"])
        self.invalid_query(workflow_logs + "?continue=" + run_token, ["continue"])
        status, _, body = self.d.call("POST", f"{NS}/workflows/pair:invoke?mode=async", "{}")
        self.assertEqual(status, 202, body)
        self.invalid_query(f"{NS}/runs/{json.loads(body)['runId']}/logs?continue=" + run_token,
                           ["continue"])
        # Its own token goes on; a limit above the largest page is lowered to it.
        _, body = self.page(f"{workflow_logs}?continue={token}&limit=99999999999999999999")
        self.assertEqual(len(body["items"]), 3, body)
        _, body = self.page(f"{run_logs}?continue={run_token}")
        self.assertEqual(len(body["items"]), 3, body)


if __name__ == "__main__":
    unittest.main(verbosity=2)
