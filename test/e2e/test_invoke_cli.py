"""`knflow invoke` and `knflow runs` run as a user would, the real binary against a real daemon
whose workflows (namespace `audit`, not the default) call a tiny HTTP function in this process:
a synchronous invoke with `-d @file.json` prints the answer; `--async` prints the run id and a
hint that works as printed; a call that keeps answering 503 shows its retries and error in
`knflow runs get`; attempts in a loop are told apart by their path; a faulted run's message names
the error and the step path; `knflow runs NAME -n NS` lists that workflow's runs."""

import http.server
import json
import os
import pty
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from daemon import BIN, Daemon, free_port  # noqa: E402

NS = "audit"
DEADLINE = 60  # seconds: generous bounds for polling, never an assertion on speed


class Function(http.server.BaseHTTPRequestHandler):
    """The workflows' function. /greet answers {"hello": name}; /shout the body in upper case,
    with the request's Content-Type; /down always 503; /flaky answers 503 to the first two
    deliveries of each event (by ce-id), then echoes the data."""

    lock = threading.Lock()
    seen = {}

    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/greet":
            self.answer(200, json.dumps({"hello": json.loads(data)["name"]}).encode())
        elif self.path == "/shout":
            self.answer(200, data.upper(), self.headers["Content-Type"])
        elif self.path == "/down":
            self.answer(503, b"overloaded", "text/plain")
        elif self.path == "/flaky":
            with Function.lock:
                n = Function.seen[self.headers["ce-id"]] = Function.seen.get(self.headers["ce-id"], 0) + 1
            self.answer(503, b"busy", "text/plain") if n <= 2 else self.answer(200, data)
        else:
            self.answer(404, b"no such function", "text/plain")

    def answer(self, status, body, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def workflow(name, do, functions=None, **spec):
    return json.dumps({"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                       "metadata": {"name": name, "namespace": NS},
                       "spec": {"functions": functions or {}, "do": do, **spec}})


FAST_RETRY = {"limit": 2, "backoff": "constant", "delay": "PT0.01S", "jitter": False}


class InvokeCliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.function = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Function)
        threading.Thread(target=cls.function.serve_forever, daemon=True).start()
        fn = f"http://127.0.0.1:{cls.function.server_address[1]}"
        # A 10 MB string (the "big" workflow) takes jq most of the default 1 s on a busy machine.
        cls.d = Daemon("--expression-timeout", "30")
        cls.d.start()
        docs = [
            workflow("greet", [{"name": "say", "call": "greeter"}],
                     {"greeter": {"url": fn + "/greet"}}),
            workflow("shout", [{"name": "say", "call": "shouter"}],
                     {"shouter": {"url": fn + "/shout"}}),
            workflow("charge", [{"name": "pay", "call": "bank", "retry": FAST_RETRY}],
                     {"bank": {"url": fn + "/down"}}),
            workflow("reserve", [{"name": "lines", "for": {"each": "item", "in": "${ .items }"},
                                  "do": [{"name": "hold", "call": "stock",
                                          "retry": {**FAST_RETRY, "limit": 3}}]}],
                     {"stock": {"url": fn + "/flaky"}}),
            workflow("big", [{"name": "grow", "set": {"big": '${ "x" * 10000000 }'}}]),
            workflow("slow", [{"name": "nap", "wait": "PT3S"}]),
            workflow("named", [{"name": "pick", "set": {"name": "${ .name }"}}]),
            workflow("typed", [{"name": "noop", "set": {}}],
                     input={"schema": {"type": "object", "required": ["amount"]}}),
            workflow("a-workflow-named-longer-than-the-column", [{"name": "noop", "set": {}}]),
            workflow("shouty", [{"name": "boom", "raise": {"type": "runtime", "status": 500,
                                                          "title": "${ .title }",
                                                          "detail": "${ .detail }"}}]),
            workflow("denied", [{"name": "login", "raise": {"type": "authentication", "status": 401,
                                                            "title": "wrong password"}}]),
            workflow("loopfail", [{"name": "lines", "for": {"each": "item", "in": "${ .items }"},
                                   "do": [{"name": "check", "if": "${ $item > 2 }",
                                           "raise": {"type": "validation", "status": 422,
                                                     "title": "too big",
                                                     "detail": '${ "item \\($item) is over 2" }'}}]}]),
        ]
        for doc in docs:
            status, _, body = cls.d.call("POST", f"/api/v1/namespaces/{NS}/workflows", doc)
            if status != 201:
                raise RuntimeError(f"creating a workflow answered {status}: {body}")
        cls.tmp = tempfile.TemporaryDirectory(prefix="knflow-cli-")

    @classmethod
    def tearDownClass(cls):
        cls.d.close()
        cls.function.shutdown()
        cls.function.server_close()
        cls.tmp.cleanup()

    def cli(self, *args, flags=True, env=None):
        """Runs the knflow binary; with `flags`, pointed at the daemon by --server and
        --token-file, else only by the environment given."""
        base = {k: v for k, v in os.environ.items()
                if not k.startswith("KNFLOW_") and k != "XDG_DATA_HOME"}
        base["HOME"] = self.tmp.name  # no token of the user's own daemon is ever picked up
        argv = [BIN, *args]
        if flags:
            argv += ["--server", self.d.base, "--token-file", os.path.join(self.d.data_dir, "token")]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=DEADLINE,
                           env={**base, **(env or {})})
        return r.returncode, r.stdout, r.stderr

    def run_of(self, run_id, phases=("completed", "faulted", "cancelled")):
        """The run from the API once it is in one of `phases`."""
        deadline = time.monotonic() + DEADLINE
        while True:
            status, run = self.d.json("GET", f"/api/v1/namespaces/{NS}/runs/{run_id}")
            self.assertEqual(status, 200, run)
            if run["phase"] in phases or time.monotonic() > deadline:
                self.assertIn(run["phase"], phases, run)
                return run
            time.sleep(0.05)

    @staticmethod
    def attempt_rows(out):
        """The `runs get` attempts table (the one with an ATTEMPT column) as dicts keyed by its
        header."""
        lines = next(block for block in out.split("\n\n") if " ATTEMPT " in block.split("\n", 1)[0])
        lines = lines.splitlines()
        header = lines[0].split()
        return [dict(zip(header, line.split(None, len(header) - 1))) for line in lines[1:] if line]

    def test_sync_invoke_with_data_from_a_file(self):
        data = os.path.join(self.tmp.name, "input.json")
        with open(data, "w") as f:
            json.dump({"name": "ada"}, f)
        code, out, err = self.cli("invoke", "greet", "-n", NS, "-d", "@" + data)
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out), {"hello": "ada"})
        self.assertRegex(err, r"^run \S+ completed\n$")
        run_id = err.split()[1]
        self.assertEqual(self.run_of(run_id)["phase"], "completed")

        code, out, err = self.cli("invoke", "greet", "-n", NS, "-d", '{"name": "bob"}')
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out), {"hello": "bob"})

        code, _, err = self.cli("invoke", "greet", "-n", NS, "-d", "@/nonexistent/input.json")
        self.assertEqual(code, 2)
        self.assertIn("cannot read /nonexistent/input.json", err)
        code, _, err = self.cli("invoke", "greet", "-n", NS, "-d", "-")
        self.assertEqual(code, 2, err)
        self.assertIn('-d - would send the text "-"; read the data from standard input with -d @-',
                      err)

    def test_json_data_with_a_byte_order_mark(self):
        """A file an editor saved with a UTF-8 byte order mark was refused by the daemon as
        invalid JSON at line 1, column 1 (`knflow validate` reads such files)."""
        path = os.path.join(self.tmp.name, "bom.json")
        with open(path, "wb") as f:
            f.write(b'\xef\xbb\xbf{"name": "bom"}')
        code, out, err = self.cli("invoke", "named", "-n", NS, "-d", "@" + path)
        self.assertEqual(code, 0, out + err)
        self.assertEqual(json.loads(out), {"name": "bom"})

    def test_text_data_with_its_content_type(self):
        """--content-type sends text as text; the function gets it and its answer comes back as
        they are (the CLI sent every input as application/json)."""
        code, out, err = self.cli("invoke", "shout", "-n", NS, "-d", "hello\tworld",
                                  "--content-type", "text/plain; charset=utf-8")
        self.assertEqual((code, out), (0, "HELLO\tWORLD\n"), err)
        code, out, err = self.cli("invoke", "shout", "-n", NS, "-d", "<a/>", "--content-type",
                                  "application/xml")
        self.assertEqual((code, out), (0, "<A/>\n"), err)
        code, _, err = self.cli("invoke", "shout", "-n", NS, "--content-type", "text/plain")
        self.assertEqual(code, 2, err)  # the default data, {}, is JSON
        self.assertIn("needs the data", err)
        for bad in ("", "text", "text/plain\r\nX-Evil: 1"):
            with self.subTest(content_type=bad):
                code, _, err = self.cli("invoke", "shout", "-n", NS, "-d", "x", "--content-type", bad)
                self.assertEqual(code, 2, err)
                self.assertIn("is not a media type", err)
        # Control characters reach a pipe as they are, a terminal as escapes (lines kept).
        data = "a\x1b[31mb\x07\r\nc\rd"
        code, out, err = self.cli("invoke", "shout", "-n", NS, "-d", data, "--content-type",
                                  "text/plain")
        # (Read as text, with universal newlines: \r\n and \r read as \n.)
        self.assertEqual((code, out), (0, "A\x1b[31MB\x07\nC\nD\n"), err)
        leader, follower = pty.openpty()
        try:
            argv = [BIN, "invoke", "shout", "-n", NS, "-d", data, "--content-type", "text/plain",
                    "--server", self.d.base, "--token-file",
                    os.path.join(self.d.data_dir, "token")]
            proc = subprocess.run(argv, stdout=follower, stderr=subprocess.PIPE, timeout=DEADLINE)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            os.close(follower)
            follower = None
            seen = b""
            while True:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # EIO: the terminal's other side is closed and drained
                    break
                if not chunk:
                    break
                seen += chunk
        finally:
            if follower is not None:
                os.close(follower)
            os.close(leader)
        # (The terminal itself writes its line ends as \r\n.)
        self.assertEqual(seen, b"A\\x1b[31MB\\x07\r\r\nC\\x0dD\r\n")

    def test_a_run_that_outlasts_the_timeout_exits_4_and_goes_on(self):
        """It exited 0, as a completed run does: `knflow invoke ... && use-the-result` went on
        without a result."""
        code, out, err = self.cli("invoke", "slow", "-n", NS, "--timeout", "0.2")
        self.assertEqual(code, 4, err)
        run_id = json.loads(out)["runId"]
        self.assertTrue(err.startswith(f"run {run_id} is running; see: knflow runs get {run_id}"),
                        err)
        self.run_of(run_id, ("running", "waiting"))  # it goes on,
        self.run_of(run_id)  # and ends: completed
        # Asked for with --async, the same answer is a success.
        code, out, err = self.cli("invoke", "slow", "-n", NS, "--async")
        self.assertEqual(code, 0, err)
        # And a run that ends within the wait is a completed one.
        code, out, err = self.cli("invoke", "slow", "-n", NS, "--timeout", "30")
        self.assertEqual(code, 0, err)
        self.assertRegex(err, r"^run \S+ completed\n$")

    def test_async_invoke_prints_a_hint_that_works_as_printed(self):
        env = {"KNFLOW_SERVER": self.d.base, "KNFLOW_DATA_DIR": self.d.data_dir}
        code, out, err = self.cli("invoke", "greet", "-n", NS, "-d", '{"name": "eve"}', "--async",
                                  flags=False, env=env)
        self.assertEqual(code, 0, err)
        run_id = json.loads(out)["runId"]
        self.assertEqual(err, f"run {run_id} is running; see: knflow runs get {run_id} -n {NS}\n")
        self.run_of(run_id)

        # Given as flags, --server and --token-file are in the hint too: it works as printed
        # without the environment (it went to 127.0.0.1:8080 without them).
        code, out, err = self.cli("invoke", "greet", "-n", NS, "-d", '{"name": "eve"}', "--async")
        self.assertEqual(code, 0, err)
        hint = shlex.split(err.split("see: ", 1)[1])
        self.assertEqual(hint[:3], ["knflow", "runs", "get"])
        self.assertIn("--server", hint)
        self.assertIn("--token-file", hint)
        self.run_of(hint[3])
        code, out, err = self.cli(*hint[1:], flags=False)
        self.assertEqual(code, 0, err)
        self.assertIn(f"Run:       {hint[3]}", out)

        # The first hint, run as printed, with the daemon and token found through the environment.
        code, out, err = self.cli("runs", "get", run_id, "-n", NS, flags=False, env=env)
        self.assertEqual(code, 0, err)
        self.assertIn(f"Run:       {run_id}", out)
        self.assertIn(f"Workflow:  {NS}/greet", out)
        self.assertIn("Phase:     completed", out)
        self.assertIn('Output:    {"hello":"eve"}', out)
        rows = self.attempt_rows(out)
        self.assertEqual([(r["STEP"], r["PATH"], r["ATTEMPT"], r["PHASE"], r["HTTP"]) for r in rows],
                         [("say", "/do/0", "1", "completed", "200")], out)

        # Without -n the run is looked up in `default`, and the message says so.
        code, _, err = self.cli("runs", "get", run_id)
        self.assertEqual(code, 1)
        self.assertIn("404", err)
        self.assertIn("does not exist in default", err)

    def test_failing_call_shows_retries_and_error(self):
        code, out, err = self.cli("invoke", "charge", "-n", NS)
        self.assertEqual(code, 1, out + err)
        self.assertEqual(out, "")
        first = err.splitlines()[0]
        self.assertIn("503", first)
        self.assertIn("Call to bank failed", first)
        self.assertIn("503", first.split("Call to bank failed", 1)[1])  # the function's answer
        self.assertRegex(err, r"\n  at: +/do/0\n")
        self.assertRegex(err, r"\n  type: +communication, status 503\n")
        run_id = next(line.split()[-1] for line in err.splitlines() if line.startswith("  run:"))
        self.assertIn(f"\n  see:     knflow runs get {run_id} -n {NS} --server {self.d.base} "
                      f"--token-file {os.path.join(self.d.data_dir, 'token')}\n", err)
        self.assertIn(f"\n  request: /api/v1/namespaces/{NS}/workflows/charge:invoke\n", err)

        run = self.run_of(run_id, ("faulted",))
        self.assertEqual(len(run["attempts"]), 3, run)  # the first attempt and two retries
        code, out, err = self.cli("runs", "get", run_id, "-n", NS)
        self.assertEqual(code, 0, err)
        self.assertIn("Phase:     faulted", out)
        self.assertRegex(out, r"\nError: +Call to bank failed: .*503")
        self.assertIn("\nAt:        /do/0 (step pay)\n", out)
        self.assertIn("\nType:      communication, status 503\n", out)
        rows = self.attempt_rows(out)
        self.assertEqual([(r["STEP"], r["PATH"], r["ATTEMPT"], r["PHASE"], r["HTTP"]) for r in rows],
                         [("pay", "/do/0", str(n), "faulted", "503") for n in (1, 2, 3)], out)
        for r in rows:
            self.assertIn("Call to bank failed", r["ERROR"])

    def test_a_redriven_run_marks_which_redrive_made_each_attempt(self):
        """Redriven twice, a call's attempts go on being numbered: the API says which drive made
        each one (`drive`, 0 for the first) and the run how often it was redriven; `runs get`
        marks the redrives' attempts."""
        code, out, err = self.cli("invoke", "charge", "-n", NS)
        self.assertEqual(code, 1, out + err)
        run_id = next(line.split()[-1] for line in err.splitlines() if line.startswith("  run:"))
        first = self.run_of(run_id, ("faulted",))
        self.assertNotIn("redriveCount", first)
        self.assertTrue(all("drive" not in a for a in first["attempts"]), first["attempts"])
        redriven_at = []
        for _ in range(2):
            status, _, body = self.d.call("POST", f"/api/v1/namespaces/{NS}/runs/{run_id}:retry")
            self.assertEqual(status, 202, body)
            run = self.run_of(run_id, ("faulted",))
            redriven_at.append(run["startedAt"])
        self.assertEqual((run["redriveCount"], run["redrivenAt"]), (2, redriven_at[1]))
        self.assertEqual([(a["attempt"], a["drive"]) for a in run["attempts"]],
                         [(1, 0), (2, 0), (3, 0), (4, 1), (5, 1), (6, 1), (7, 2), (8, 2), (9, 2)])
        code, out, err = self.cli("runs", "get", run_id, "-n", NS)
        self.assertEqual(code, 0, err)
        self.assertIn("\nRedrives:  2\n", out)
        marks = re.findall(r"(?m)^pay +/do/0 +(\d+(?: \(redrive \d\))?) +faulted ", out)
        self.assertEqual(marks, ["1", "2", "3", "4 (redrive 1)", "5 (redrive 1)", "6 (redrive 1)",
                                 "7 (redrive 2)", "8 (redrive 2)", "9 (redrive 2)"], out)

    def test_runs_cancel_retry_delete_and_logs(self):
        """The run routes that act on one run, from the CLI: cancel a waiting run, redrive it,
        cancel it again, refuse to delete it running and delete it once finished; print a run's
        log lines, and a workflow's (`knflow logs`); a verb may follow the options, and a workflow
        named like a verb is listed with --workflow."""
        echo = os.path.join(os.path.dirname(__file__), "..", "engine", "fixtures", "echo_function.py")
        for doc in (workflow("napper", [{"name": "nap", "wait": "PT1H"}]),
                    workflow("retry", [{"name": "say", "call": "echo"}],
                             {"echo": {"local": {"command": ["python3", os.path.abspath(echo)]}}})):
            status, _, body = self.d.call("POST", f"/api/v1/namespaces/{NS}/workflows", doc)
            self.assertEqual(status, 201, body)
        code, out, err = self.cli("invoke", "napper", "-n", NS, "--async")
        self.assertEqual(code, 0, err)
        run_id = json.loads(out)["runId"]

        code, out, err = self.cli("runs", "delete", run_id, "-n", NS)
        self.assertEqual((code, out), (1, ""), err)
        self.assertIn("409 Conflict: The run has not finished; cancel it first.", err)
        code, out, err = self.cli("runs", "-n", NS, "cancel", run_id)
        self.assertEqual((code, out), (0, f"Run {run_id} cancelled.\n"), err)
        code, out, err = self.cli("runs", "cancel", run_id, "-n", NS)
        self.assertEqual((code, out), (1, ""), err)
        self.assertIn("409 Conflict: The run has already finished.", err)
        code, out, err = self.cli("runs", "retry", run_id, "-n", NS)
        self.assertEqual((code, out), (0, f"Run {run_id} is running again from the step where it "
                                          "stopped.\n"), err)
        self.assertIn(f"knflow runs get {run_id} -n {NS}", err)
        self.assertEqual(self.run_of(run_id, ("running",))["redriveCount"], 1)
        code, out, err = self.cli("runs", "retry", run_id, "-n", NS)
        self.assertEqual(code, 1, err)
        self.assertIn("409 Conflict: Only a faulted or cancelled run can be retried; this one is "
                      "running.", err)
        code, out, err = self.cli("runs", "cancel", run_id, "-n", NS)
        self.assertEqual((code, out), (0, f"Run {run_id} cancelled.\n"), err)
        code, out, err = self.cli("runs", "logs", run_id, "-n", NS)
        self.assertEqual((code, out), (0, ""), err)
        self.assertIn(f"No log lines of run {run_id}", err)
        code, out, err = self.cli("runs", "delete", run_id, "-n", NS)
        self.assertEqual((code, out), (0, f"Run {run_id} deleted (it was cancelled).\n"), err)
        status, _, _ = self.d.call("GET", f"/api/v1/namespaces/{NS}/runs/{run_id}")
        self.assertEqual(status, 404)

        # A run of a workflow with a local function has its lines; the workflow named "retry" is
        # listed with --workflow (a positional "retry" is the verb).
        code, out, err = self.cli("invoke", "retry", "-n", NS, "-d", '{"n": 1}')
        self.assertEqual(code, 0, err)
        code, out, err = self.cli("runs", "-n", NS, "--workflow", "retry", "-o", "json")
        self.assertEqual(code, 0, err)
        [listed] = json.loads(out)["items"]
        code, out, err = self.cli("runs", "logs", listed["id"], "-n", NS)
        self.assertEqual(code, 0, err)
        self.assertRegex(out, r"(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z echo stdout echo: listening on "
                              r"\d+ pid=\d+$")
        code, out, err = self.cli("runs", "logs", listed["id"], "-n", NS, "-o", "json")
        self.assertEqual(code, 0, err)
        lines = [json.loads(line) for line in out.splitlines()]
        self.assertTrue(any(line["function"] == "echo" and "listening" in line["text"]
                            for line in lines), lines)
        # The workflow's lines, all its runs': `knflow logs WORKFLOW`.
        code, out, err = self.cli("logs", "retry", "-n", NS)
        self.assertEqual(code, 0, err)
        self.assertRegex(out, r"(?m)^\S+Z echo stdout echo: listening on \d+ pid=\d+$")
        code, out, err = self.cli("logs", "napper", "-n", NS)
        self.assertEqual((code, out), (0, ""), err)
        self.assertIn("No log lines of workflow napper", err)
        code, out, err = self.cli("logs", "nothing-here", "-n", NS)
        self.assertEqual((code, out), (1, ""), err)
        self.assertIn("404 Not Found", err)
        self.assertNotIn("knflow logs WORKFLOW", err)
        # A run's logs asked for without an id, or by a workflow's name, point at the workflow's.
        code, out, err = self.cli("runs", "logs", "-n", NS)
        self.assertEqual((code, out), (2, ""), err)
        self.assertIn("the ID argument is missing", err)
        self.assertIn("A workflow's logs, of every run: knflow logs WORKFLOW.", err)
        code, out, err = self.cli("runs", "logs", "retry", "-n", NS)
        self.assertEqual((code, out), (1, ""), err)
        self.assertIn('400 Bad Request: "retry" in the path is not a run id', err)
        self.assertIn("A workflow's logs, of every run: knflow logs WORKFLOW.", err)
        code, out, err = self.cli("runs", "retry", "-n", NS)
        self.assertEqual(code, 2, err)
        self.assertIn("knflow runs retry: the ID argument is missing", err)
        # A misspelt verb: Boost's "too many positional options" said neither what nor how.
        code, out, err = self.cli("runs", "canel", run_id, "-n", NS)
        self.assertEqual((code, out), (2, ""), err)
        self.assertIn("knflow runs: too many arguments: it takes only WORKFLOW", err)
        self.assertIn("knflow runs get|cancel|retry|delete|logs ID", err)

    def test_attempts_in_a_loop_are_told_apart_by_path(self):
        code, out, err = self.cli("invoke", "reserve", "-n", NS, "-d", '{"items": [1, 2]}')
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out), [{"items": [1, 2]}, {"items": [1, 2]}])
        run_id = err.split()[1]
        run = self.run_of(run_id, ("completed",))
        paths = sorted({a["path"] for a in run["attempts"]})
        self.assertEqual(len(paths), 2, run)  # one per iteration
        code, out, err = self.cli("runs", "get", run_id, "-n", NS)
        self.assertEqual(code, 0, err)
        rows = self.attempt_rows(out)
        for path in paths:
            mine = [(r["STEP"], r["ATTEMPT"], r["PHASE"], r["HTTP"]) for r in rows if r["PATH"] == path]
            self.assertEqual(sorted(mine), [("hold", "1", "faulted", "503"), ("hold", "2", "faulted", "503"),
                                            ("hold", "3", "completed", "200")], out)

    def test_faulted_run_message_names_the_error_and_the_step_path(self):
        code, out, err = self.cli("invoke", "loopfail", "-n", NS, "-d", '{"items": [1, 3]}')
        self.assertEqual(code, 1, out + err)
        lines = err.splitlines()
        self.assertEqual(lines[0], "knflow: 422 Run faulted: too big: item 3 is over 2", err)
        run_id = next(line.split()[-1] for line in lines if line.startswith("  run:"))
        error = self.run_of(run_id, ("faulted",))["error"]
        self.assertTrue(error["instance"].startswith("/do/0/for/1"), error)  # the second item
        self.assertIn(f"  at:      {error['instance']}", lines)
        self.assertIn("  type:    validation, status 422", lines)

        code, out, err = self.cli("runs", "get", run_id, "-n", NS)
        self.assertEqual(code, 0, err)
        self.assertIn("\nError:     too big: item 3 is over 2\n", out)
        self.assertIn(f"\nAt:        {error['instance']} (step check)\n", out)
        self.assertIn("No call attempts", out)

    def test_a_run_that_faulted_with_401_is_not_a_refused_token(self):
        """A run's own 401 was answered as 401 (without the WWW-Authenticate RFC 9110 asks of
        one), and the CLI said the token had been refused. Now the gateway's 502, the run's
        status in error.status, and no word of the token."""
        code, out, err = self.cli("invoke", "denied", "-n", NS)
        self.assertEqual(code, 1, out + err)
        self.assertEqual(err.splitlines()[0], "knflow: 502 Run faulted: wrong password", err)
        self.assertIn("  type:    authentication, status 401", err.splitlines())
        self.assertNotIn("token:", err)
        status, headers, body = self.d.call("POST", f"/api/v1/namespaces/{NS}/workflows/denied:invoke",
                                            "{}")
        self.assertEqual(status, 502, body)
        problem = json.loads(body)
        self.assertEqual((problem["status"], problem["error"]["status"]), (502, 401), body)

    def test_control_characters_of_run_data_reach_no_terminal_raw(self):
        """A title or detail from the event data was printed as it was: escape sequences
        recoloured or retitled the terminal, and a newline broke the step table's row."""
        data = json.dumps({"title": "\x1b[31mRED\x1b[0m\x07", "detail": "line1\nline2 \x1b]0;t\x07\x7f\u0085"})
        code, out, err = self.cli("invoke", "shouty", "-n", NS, "-d", data)
        self.assertEqual(code, 1, out + err)
        self.assertIn("knflow: 500 Run faulted: \\x1b[31mRED\\x1b[0m\\x07: "
                      "line1\\nline2 \\x1b]0;t\\x07\\x7f\\u0085\n", err)
        run_id = next(line.split()[-1] for line in err.splitlines() if line.startswith("  run:"))
        code, out, err = self.cli("runs", "get", run_id, "-n", NS)
        self.assertEqual(code, 0, err)
        for text in (out, err):
            self.assertNotIn("\x1b", text)
            self.assertNotIn("\x07", text)
            self.assertNotIn("\x7f", text)
            self.assertNotIn("\u0085", text)
        [row] = [line for line in out.splitlines() if line.startswith("boom ")]
        self.assertTrue(row.endswith("\\x07\\x7f\\u0085"), row)  # one line

    def test_runs_lists_one_workflows_runs(self):
        ids = []
        for name in ("eve", "max"):
            code, _, err = self.cli("invoke", "greet", "-n", NS, "-d", json.dumps({"name": name}))
            self.assertEqual(code, 0, err)
            ids.append(err.split()[1])
        code, _, err = self.cli("invoke", "charge", "-n", NS)
        self.assertEqual(code, 1)
        code, out, err = self.cli("runs", "greet", "-n", NS)
        self.assertEqual(code, 0, err)
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["ID", "WORKFLOW", "PHASE", "STARTED", "FINISHED"])
        listed = {line.split()[0]: line.split()[1:3] for line in lines[1:] if line.strip()}
        for run_id in ids:
            self.assertEqual(listed.get(run_id), ["greet", "completed"], out)
        self.assertEqual({wf for wf, _ in listed.values()}, {"greet"}, out)

        # None: said on stderr, as kubectl says it, with no table.
        code, out, err = self.cli("runs", "never-invoked", "-n", NS)
        self.assertEqual((code, out), (0, ""), err)
        self.assertEqual(err, f"No runs found in namespace {NS} of workflow never-invoked; no "
                              "workflow of that name exists there either.\n")
        code, out, err = self.cli("runs", "typed", "-n", NS)  # it exists, never invoked
        self.assertEqual((code, out), (0, ""), err)
        self.assertEqual(err, f"No runs found in namespace {NS} of workflow typed.\n")

        # A name as long as DNS-1123 allows keeps its column apart from the next.
        long_name = "a-workflow-named-longer-than-the-column"
        code, _, err = self.cli("invoke", long_name, "-n", NS)
        self.assertEqual(code, 0, err)
        code, out, err = self.cli("runs", long_name, "-n", NS)
        self.assertEqual(code, 0, err)
        self.assertEqual([line.split()[1:3] for line in out.splitlines()[1:]],
                         [[long_name, "completed"]], out)

        # `get` may come after the options, as kubectl users write it, abbreviated ones too.
        for options in (["-n", NS], ["--name", NS], [f"--namespace={NS}"]):
            code, out, err = self.cli("runs", *options, "get", ids[0])
            self.assertEqual(code, 0, err)
            self.assertIn(f"Run:       {ids[0]}", out)
        # After `--`, `get` is a workflow's name.
        code, out, err = self.cli("runs", "-n", NS, "--server", self.d.base, "--token-file",
                                  os.path.join(self.d.data_dir, "token"), "--", "get", flags=False)
        self.assertEqual(code, 0, err)
        self.assertEqual(out.splitlines()[1:], [], out)

        code, out, err = self.cli("runs", "-n", NS, "--phase", "faulted")
        self.assertEqual(code, 0, err)
        rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
        self.assertTrue(rows, out)
        self.assertEqual({r[2] for r in rows}, {"faulted"}, out)

        # -o json and the time filters, as the API has them (the CLI had neither).
        code, out, err = self.cli("runs", "greet", "-n", NS, "-o", "json")
        self.assertEqual(code, 0, err)
        listed = json.loads(out)
        self.assertLessEqual(set(ids), {r["id"] for r in listed["items"]})
        first = min(r["createdAt"] for r in listed["items"])
        code, out, err = self.cli("runs", "greet", "-n", NS, "-o", "json", "--created-before", first)
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["items"], [])
        last = max(r["createdAt"] for r in listed["items"])
        code, out, err = self.cli("runs", "greet", "-n", NS, "--created-after", last)
        self.assertEqual(code, 0, err)
        self.assertEqual(out.splitlines()[1:], [], out)  # after it: exclusive, as the API's
        # Said by the option's name, before anything is sent (the daemon's 400 named its query
        # parameter, createdAfter, and how to escape a + in a query).
        code, _, err = self.cli("runs", "-n", NS, "--created-after", "yesterday")
        self.assertEqual(code, 2, err)
        self.assertIn('--created-after must be an RFC 3339 date-time, got "yesterday"', err)
        self.assertNotIn("createdAfter", err)
        code, _, err = self.cli("runs", "-n", NS, "--created-before", "2026-02-30T00:00:00Z")
        self.assertEqual(code, 2, err)
        self.assertIn("--created-before", err)
        code, _, err = self.cli("logs", "greet", "-n", NS, "--since", "5m")
        self.assertEqual(code, 2, err)
        self.assertIn('--since must be an RFC 3339 date-time, got "5m"', err)
        # Empty (an unset shell variable) is no filter, as the daemon takes it.
        code, _, err = self.cli("runs", "-n", NS, "--created-after", "")
        self.assertEqual(code, 0, err)
        code, _, err = self.cli("runs", "-n", NS, "-o", "yaml")
        self.assertEqual(code, 2, err)

    def test_runs_pages_and_invoke_timeouts(self):
        for name in ("ann", "bob", "cy"):
            code, _, err = self.cli("invoke", "greet", "-n", NS, "-d", json.dumps({"name": name}))
            self.assertEqual(code, 0, err)
        seen = []
        code, out, err = self.cli("runs", "greet", "-n", NS, "--limit", "2")
        while True:
            self.assertEqual(code, 0, err)
            seen += [line.split()[0] for line in out.splitlines()[1:] if line.strip()]
            more = re.search(r"--continue (\S+)", err)
            if not more:
                break
            code, out, err = self.cli("runs", "greet", "-n", NS, "--limit", "2", "--continue",
                                      more.group(1))
        status, listing = self.d.json("GET", f"/api/v1/namespaces/{NS}/runs?workflow=greet&limit=1000")
        self.assertEqual(status, 200, listing)
        self.assertEqual(seen, [r["id"] for r in listing["items"]])
        self.assertGreaterEqual(len(seen), 3)
        # A refused token is said once (the query's one error is also the problem's detail).
        code, _, err = self.cli("runs", "greet", "-n", NS, "--continue", "garbage")
        self.assertEqual(code, 1, err)
        self.assertEqual(err.count("continue token is not one this server issued"), 1, err)

        for bad in ("inf", "nan", "-1"):
            code, _, err = self.cli("invoke", "greet", "-n", NS, "--timeout", bad)
            self.assertEqual(code, 2, err)
            self.assertIn("--timeout must be a number of seconds", err)
        # A missing positional argument is named as the usage line writes it.
        for args, missing in ((("invoke",), "NAME"), (("runs", "get"), "ID")):
            code, _, err = self.cli(*args, "-n", NS)
            self.assertEqual(code, 2, err)
            self.assertTrue(err.startswith(f"knflow {' '.join(args)}: the {missing} argument is "
                                           "missing\n"), err)
        # A huge timeout is sent capped, without an exponent; the run answers as usual.
        code, out, err = self.cli("invoke", "greet", "-n", NS, "--timeout", "1e300", "-d",
                                  json.dumps({"name": "dee"}))
        self.assertEqual(code, 0, err)

    def test_arguments_are_sent_as_names_not_as_url_syntax(self):
        """A name, run id or filter goes into the request as itself (escaped): a `/`, `?`, `&` or
        space in one cannot reach another endpoint or add a parameter (`runs get ID/logs` printed
        an empty run and exited 0; a namespace with a space was reported as no daemon)."""
        code, out, err = self.cli("invoke", "greet", "-n", NS, "-d", json.dumps({"name": "ida"}))
        self.assertEqual(code, 0, err)
        run_id = err.split()[1]
        for args, message in [
                (("runs", "get", run_id + "/logs", "-n", NS), f'"{run_id}/logs" in the path is not a run id'),
                (("runs", "get", "x?phase=running", "-n", NS), '"x?phase=running" in the path is not a run id'),
                (("runs", "get", "a b", "-n", NS), '"a b" in the path is not a run id'),
                (("invoke", "greet?mode=async", "-n", NS), '"greet?mode=async" in the path is not'),
                (("invoke", "greet", "-n", "Bad NS"), 'Namespace "Bad NS" in the path is not a '
                 "DNS-1123 label (lower-case letters, digits and '-', at most 63 characters)"),
                (("invoke", "Bad_Name", "-n", NS), 'Name "Bad_Name" in the path is not a DNS-1123 '
                 "label"),
                # A long one is quoted by its beginning and length, not repeated whole.
                (("runs", "get", "x" * 5000, "-n", NS), f'"{"x" * 64}..." (5000 bytes) in the path '
                 "is not a run id"),
                (("runs", "-n", NS, "--phase", "running&limit=abc"), 'not a phase: "running&limit=abc"'),
                (("runs", "greet&phase=x", "-n", NS), 'got "greet&phase=x"')]:
            with self.subTest(args=args):
                code, out, err = self.cli(*args)
                self.assertEqual(code, 1, out + err)
                self.assertEqual(out, "")
                self.assertIn(message, err)
        for args, missing in ((("runs", "get", ""), "ID"), (("invoke", ""), "NAME")):
            code, _, err = self.cli(*args, "-n", NS)
            self.assertEqual(code, 2, err)
            self.assertTrue(err.startswith(f"knflow {' '.join(args[:-1])}: the {missing} argument is "
                                           "empty\n"), err)

    def test_bad_options_are_usage_errors_that_say_why(self):
        """Options the daemon cannot be asked about are refused before any request, with the
        reason (exit 2): `-d @DIR` invoked the workflow with no data and exited 0, `--limit -1`
        listed a page of 1000, `-o yaml` printed text."""
        code, out, err = self.cli("invoke", "greet", "-n", NS, "-d", "@" + self.tmp.name)
        self.assertEqual(code, 2, out + err)
        self.assertEqual(err, f"knflow invoke: cannot read {self.tmp.name}: Is a directory\n")
        code, _, err = self.cli("invoke", "greet", "-n", NS, "-d", "@/nonexistent/input.json")
        self.assertEqual(code, 2, err)
        self.assertEqual(err, "knflow invoke: cannot read /nonexistent/input.json: "
                              "No such file or directory\n")
        # A workflow given as NAME and as --workflow: Boost's words said it was repeated.
        code, _, err = self.cli("runs", "echo", "--workflow", "slow", "-n", NS)
        self.assertEqual(code, 2, err)
        self.assertIn("knflow runs: --workflow is given more than once (the WORKFLOW argument is "
                      "--workflow too); give it once", err)
        code, _, err = self.cli("runs", "--workflow", "echo", "--workflow", "slow", "-n", NS)
        self.assertEqual(code, 2, err)
        self.assertIn("knflow runs: option '--workflow' cannot be specified more than once", err)
        # /dev/zero was read until memory ran out; reading stops past 64 MiB.
        code, out, err = self.cli("invoke", "greet", "-n", NS, "-d", "@/dev/zero")
        self.assertEqual(code, 2, out + err)
        self.assertEqual(err, "knflow invoke: cannot read /dev/zero: it holds more than 67108864 "
                              "bytes (64 MiB), the most knflow reads from a file\n")
        for limit in ("-1", "0"):
            code, out, err = self.cli("runs", "-n", NS, "--limit", limit)
            self.assertEqual(code, 2, out + err)
            self.assertEqual(err, f"knflow runs: --limit must be a positive number of runs, got {limit}\n")
        code, out, err = self.cli("runs", "get", "some-id", "-n", NS, "-o", "yaml")
        self.assertEqual(code, 2, out + err)
        self.assertEqual(err, "knflow runs get: --output must be text or json, got yaml\n")
        code, out, err = self.cli("invoke", "greet", "-n", NS, "-d", "@")
        self.assertEqual(code, 2, out + err)
        self.assertEqual(err, "knflow invoke: -d @ names no file: give -d @FILE, or -d @- for "
                              "standard input\n")
        # No input is not the same as an empty file: an empty body would start the run with null.
        empty = os.path.join(self.tmp.name, "empty.json")
        open(empty, "w").close()
        code, out, err = self.cli("invoke", "greet", "-n", NS, "-d", "@" + empty)
        self.assertEqual(code, 2, out + err)
        self.assertEqual(err, f"knflow invoke: the input data is empty (@{empty}); give JSON, such "
                              "as {} or null\n")
        # A --server that is not an http:// or https:// URL is bad usage, not "no daemon".
        for server in ("localhost:8080", "ftp://127.0.0.1:8080", "http://", "http://h:1/?x=1"):
            with self.subTest(server=server):
                code, out, err = self.cli("runs", "-n", NS, "--server", server, flags=False)
                self.assertEqual(code, 2, out + err)
                self.assertEqual(err, "knflow runs: --server must be the daemon's http:// or "
                                      "https:// URL, such as http://127.0.0.1:8080; got "
                                      f'"{server}"\n')
        # A port out of range, not digits, or credentials in the URL are usage errors too: they
        # were said as "no answer from the daemon" (exit 3).
        for server, wrong in (("http://127.0.0.1:99999", 'has the port "99999", which is not a '
                               "number from 1 to 65535"),
                              ("http://127.0.0.1:0", 'has the port "0", which is not a number from '
                               "1 to 65535"),
                              ("http://127.0.0.1:abc", "has \"abc\" after the host's ':', where a "
                               "port (digits) goes"),
                              ("http://127.0.0.1:8080abc", "has \"abc\" after the host's ':', "
                               "where a port (digits) goes"),
                              ("http://u:p@127.0.0.1:8080", 'holds credentials ("u:p@"), which are '
                               "not sent: the token goes in --token-file or $KNFLOW_TOKEN")):
            with self.subTest(server=server):
                code, out, err = self.cli("runs", "-n", NS, "--server", server, flags=False)
                self.assertEqual(code, 2, out + err)
                self.assertEqual(err, f'knflow runs: --server "{server}" {wrong}\n')
        code, out, err = self.cli("runs", "-n", NS, flags=False, env={"KNFLOW_SERVER": "localhost"})
        self.assertEqual(code, 2, out + err)
        self.assertIn("$KNFLOW_SERVER must be the daemon's http:// or https:// URL", err)
        # https is spoken (for a daemon behind a TLS proxy): this daemon's plain port fails the
        # handshake, which the CLI reports as no answer, naming it.
        server = self.d.base.replace("http://", "https://")
        code, out, err = self.cli("runs", "-n", NS, "--server", server, flags=False)
        self.assertEqual(code, 3, out + err)
        self.assertTrue(err.startswith(f"knflow: no answer from the daemon at {server}: TLS "
                                       f"handshake with {server.removeprefix('https://')} "
                                       "failed: "), err)
        self.assertIn("\n  (is https right there? `knflow serve` itself speaks plain HTTP: https "
                      "reaches it only through a TLS proxy)\n", err)

    def test_schema_errors_name_where_and_lost_output_is_an_error(self):
        """An input schema's error at the data's root was a bare line with no place (the CLI
        says "(root)" for the empty pointer, as `knflow validate` does); output to a full disk
        exited 0 with the result lost."""
        code, out, err = self.cli("invoke", "typed", "-n", NS, "-d", "[1]")
        self.assertEqual(code, 1, out + err)
        self.assertIn("\n  (root): must be object, not array\n", err)
        code, out, err = self.cli("invoke", "typed", "-n", NS, "-d", "{}")
        self.assertEqual(code, 1, out + err)
        self.assertIn("\n  /amount: is required\n", err)
        for args in (("invoke", "named", "-n", NS),
                     ("runs", "-n", NS)):
            with self.subTest(args=args), open("/dev/full", "w") as full:
                r = subprocess.run([BIN, *args, "--server", self.d.base, "--token-file",
                                    os.path.join(self.d.data_dir, "token")],
                                   stdout=full, stderr=subprocess.PIPE, text=True, timeout=DEADLINE)
                self.assertEqual(r.returncode, 3, r.stderr)
                # The reason when the failed write was the last (invoke flushes its result at
                # once: the reason is gone by the time it is noticed).
                self.assertRegex(r.stderr, f"knflow {args[0]}: cannot write to standard output"
                                           "(: No space left on device)?\n")

    def test_large_answers_and_bodies(self):
        """An answer over the HTTP client's default 8 MiB (a run's output may be 64 MiB) is read,
        not reported as "no daemon"; a body far over the daemon's --max-body-bytes, which the
        daemon cuts off after its 413, gets that 413 (it was lost in the reset of the rest of
        the send, and the CLI could only guess)."""
        code, out, err = self.cli("invoke", "big", "-n", NS)
        self.assertEqual(code, 0, err)
        self.assertEqual(len(json.loads(out)["big"]), 10_000_000)
        code, out, err = self.cli("runs", "get", err.split()[1], "-n", NS, "-o", "json")
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["phase"], "completed")

        body = os.path.join(self.tmp.name, "huge.json")
        text = '{"pad": "' + "x" * (50 << 20) + '"}'
        with open(body, "w") as f:
            f.write(text)
        code, out, err = self.cli("invoke", "greet", "-n", NS, "-d", "@" + body)
        os.remove(body)
        self.assertEqual(code, 1, out + err)
        self.assertIn("knflow: 413 Content Too Large: The request body is larger than 1048576 bytes.",
                      err)

    def test_an_answer_that_is_not_the_daemons_is_reported_not_a_crash(self):
        """Another server at --server (or a proxy's page) answers 200 with something else: the
        command says so and exits 3 (it aborted with an uncaught exception, exit -6)."""
        class Other(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.do_GET()

            def do_GET(self):
                prefix = self.path.split("/api/", 1)[0]
                body = {"/html": b"<html>a login page</html>", "/list": b'{"items": 5}',
                        "/array": b"[1, 2]", "/404": b"<!DOCTYPE html><title>Not found</title>" +
                        b"x" * 5000, "/empty404": b""}[prefix]
                self.send_response(404 if prefix.endswith("404") else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Other)
        threading.Thread(target=other.serve_forever, daemon=True).start()
        try:
            base = f"http://127.0.0.1:{other.server_address[1]}"
            for prefix, snippet in (("/html", "<html>a login page</html>"), ("/list", '{"items": 5}'),
                                    ("/array", "[1, 2]")):
                for args, what in ((("runs",), "a run list"), (("runs", "get", "some-id"), "a run")):
                    with self.subTest(prefix=prefix, args=args):
                        code, out, err = self.cli(*args, "-n", NS, flags=False,
                                                  env={"KNFLOW_SERVER": base + prefix, "KNFLOW_TOKEN": "t"})
                        self.assertEqual(code, 3, out + err)
                        self.assertEqual(out, "")
                        self.assertIn(f"knflow: the answer from {base + prefix} is not {what}: {snippet}", err)
            # Another server's refusal (a wrong port): its URL and a question, not its whole page.
            code, out, err = self.cli("runs", "-n", NS, flags=False,
                                      env={"KNFLOW_SERVER": base + "/404", "KNFLOW_TOKEN": "t"})
            self.assertEqual(code, 3, out + err)
            self.assertEqual(err, f"knflow: {base}/404 answered 404, not with a JSON problem: "
                                  "<!DOCTYPE html><title>Not found</title>" + "x" * 161 + "...\n"
                                  "  (is --server or $KNFLOW_SERVER the knflow daemon's URL?)\n")
            code, out, err = self.cli("runs", "-n", NS, flags=False,
                                      env={"KNFLOW_SERVER": base + "/empty404", "KNFLOW_TOKEN": "t"})
            self.assertEqual(code, 3, out + err)
            self.assertEqual(err, f"knflow: {base}/empty404 answered 404 with no body\n"
                                  "  (is --server or $KNFLOW_SERVER the knflow daemon's URL?)\n")
            # An invoke's 200 without the run's id is not taken for a completed run.
            code, out, err = self.cli("invoke", "greet", "-n", NS, flags=False,
                                      env={"KNFLOW_SERVER": base + "/html", "KNFLOW_TOKEN": "t"})
            self.assertEqual(code, 3, out + err)
            self.assertEqual(out, "")
            self.assertIn(f"the answer from {base}/html is not a run's (no Knflow-Run-Id header)", err)
        finally:
            other.shutdown()
            other.server_close()

    def test_the_log_pager_stops_at_the_lines_there_were_when_it_began(self):
        """A function writing on keeps `metadata.continue` coming: the pager stops at lines read
        after the second of the first answer's Date (it paged for ever), and at a page that cannot
        move on (the same token again) from a server that is not the daemon."""
        class Logs(http.server.BaseHTTPRequestHandler):
            pages = 0

            def do_GET(self):
                # Page k: one line stamped 300 ms after the one before, from the Date's second on.
                k = int(self.path.rsplit("continue=tok-", 1)[1]) if "continue=tok-" in self.path else 0
                Logs.pages += 1
                ms = 300 * k
                line = {"function": "f", "time": f"2026-12-03T10:00:{ms // 1000:02d}.{ms % 1000:03d}Z",
                        "stream": "stdout", "text": f"line {k}"}
                token = "tok-0" if self.path.startswith("/stuck") else f"tok-{k + 1}"
                body = json.dumps({"metadata": {"continue": token}, "items": [line]}).encode()
                self.send_response(200)
                self.send_header("Date", "Thu, 03 Dec 2026 10:00:00 GMT")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Logs)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            base = f"http://127.0.0.1:{server.server_address[1]}"
            code, out, err = self.cli("logs", "w", "-n", NS, flags=False,
                                      env={"KNFLOW_SERVER": base, "KNFLOW_TOKEN": "t"})
            self.assertEqual(code, 0, err)
            self.assertEqual([line.split()[-1] for line in out.splitlines()], ["0", "1", "2", "3"])
            self.assertEqual(Logs.pages, 5)
            Logs.pages = 0
            code, out, err = self.cli("runs", "logs", "01a23c65-c07a-78a0-b30d-a78d39a29a4f", "-n",
                                      NS, flags=False,
                                      env={"KNFLOW_SERVER": base + "/stuck", "KNFLOW_TOKEN": "t"})
            self.assertEqual(code, 0, err)
            self.assertEqual(Logs.pages, 2)  # tok-0, then tok-0 again
        finally:
            server.shutdown()
            server.server_close()

    def test_no_daemon_and_bad_token(self):
        url = f"http://127.0.0.1:{free_port()}"
        code, _, err = self.cli("invoke", "greet", "-n", NS, flags=False, env={"KNFLOW_SERVER": url})
        self.assertEqual(code, 3, err)
        self.assertIn(f"no answer from the daemon at {url}", err)

        code, _, err = self.cli("runs", "-n", NS, flags=False,
                                env={"KNFLOW_SERVER": self.d.base, "KNFLOW_TOKEN": "not-the-token"})
        self.assertEqual(code, 1, err)
        self.assertIn("401", err)
        self.assertIn("the one from $KNFLOW_TOKEN was refused", err)
        # One that cannot be sent is a usage error saying so (it was "no answer from the daemon").
        code, _, err = self.cli("runs", "-n", NS, flags=False,
                                env={"KNFLOW_SERVER": self.d.base, "KNFLOW_TOKEN": "x\r\nX: 1"})
        self.assertEqual(code, 2, err)
        self.assertIn("$KNFLOW_TOKEN holds a character a bearer token cannot have", err)

        # /dev/zero as the token file was read until memory ran out; now it is refused at 1 MiB.
        # A file the user named that cannot be read is a usage error, as `-d @FILE` is (the
        # request went without a token, and the daemon's 401 said why).
        code, _, err = self.cli("runs", "-n", NS, "--server", self.d.base,
                                "--token-file", "/dev/zero", flags=False)
        self.assertEqual(code, 2, err)
        self.assertIn("knflow runs: --token-file: cannot read token file /dev/zero: it holds more "
                      "than 1048576 bytes", err)
        missing = os.path.join(self.tmp.name, "no-such-token")
        code, _, err = self.cli("invoke", "quick", "-n", NS, flags=False,
                                env={"KNFLOW_SERVER": self.d.base, "KNFLOW_TOKEN_FILE": missing})
        self.assertEqual(code, 2, err)
        self.assertIn(f"knflow invoke: $KNFLOW_TOKEN_FILE: cannot read token file {missing}", err)
        # The default file may be missing: the 401 says which file was tried.
        code, _, err = self.cli("runs", "-n", NS, flags=False,
                                env={"KNFLOW_SERVER": self.d.base,
                                     "KNFLOW_DATA_DIR": self.tmp.name})
        self.assertEqual(code, 1, err)
        self.assertIn("401", err)
        self.assertIn("cannot read token file", err)

    def test_token_files_read_as_the_daemon_reads_them(self):
        """The CLI takes the token the daemon would accept from the same file: indented comments
        and blank lines are skipped, spaces trimmed (it sent the comment and got a 401). Without
        HOME it looks where `knflow serve` keeps its data then, ./knflow-data."""
        with open(os.path.join(self.d.data_dir, "token")) as f:
            token = f.read().split()[0]
        path = os.path.join(self.tmp.name, "tokens")
        with open(path, "w") as f:
            f.write(f"  # the CI's token\n   \n\t{token}  # rotated monthly\n")
        code, out, err = self.cli("runs", "-n", NS, "--server", self.d.base, "--token-file", path,
                                  flags=False)
        self.assertEqual(code, 0, out + err)
        # A token no client could send: said (it went out and got a 400 about the request's HTTP).
        with open(path, "w") as f:
            f.write("# ok\ntok\x01en\n")
        code, out, err = self.cli("runs", "-n", NS, "--server", self.d.base, "--token-file", path,
                                  flags=False)
        self.assertEqual(code, 2, out + err)
        self.assertEqual(err, f"knflow runs: --token-file: token file {path}: line 2 holds a "
                              "character a bearer token cannot have (a space, a control character "
                              "or a non-ASCII one; `#` after a space starts a comment)\n")
        cwd = tempfile.mkdtemp(dir=self.tmp.name)
        os.mkdir(os.path.join(cwd, "knflow-data"))
        with open(os.path.join(cwd, "knflow-data", "token"), "w") as f:
            f.write(token + "\n")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("KNFLOW_") and k not in ("XDG_DATA_HOME", "HOME")}
        r = subprocess.run([BIN, "runs", "-n", NS, "--server", self.d.base], capture_output=True,
                           text=True, timeout=DEADLINE, env=env, cwd=cwd)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
