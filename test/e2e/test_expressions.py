"""Expressions against the real daemon: validation stays bounded; hostile jq programs (runaway,
memory bomb, jq crash, deep result, catastrophic regex, halt) fault their own step with an
`expression` error while other runs are served and the workers stay bounded; after kill -9 the
workers are gone and every run reads back."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from daemon import BIN, Daemon, alive, wait_until  # noqa: E402

NS = "/api/v1/namespaces/default"


def doc(name, steps):
    return {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": name},
            "spec": {"do": steps}}


def children(pid):
    """Process ids whose parent is `pid` (the daemon's jq workers)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except OSError:
                pass
    return out


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def sanitized(pid):
    """Whether the process runs under AddressSanitizer, whose shadow memory and quarantine of
    freed blocks (256 MiB) make its RSS say nothing about the daemon's own bounds."""
    with open(f"/proc/{pid}/maps") as f:
        return any("libasan" in line for line in f)


# Hostile expressions, each the `set` of a one-step workflow, and what its run's error says.
HOSTILE = [
    ("spin", "def f: f; f", "exceeded the 1000 ms time limit"),
    ("bomb", "[range(1e9)]", "exceeded the"),  # the time or the memory limit, whichever first
    ("crash", "[range(5)] | .[nan:1]", "the expression worker died"),  # jq 1.6 aborts
    ("deep", "reduce range(2000) as $i (null; [.])", "nested more than 1000 levels deep"),
    ("redos", "\"a\" * 40 + \"b\" | test(\"^(a+)+$\")", "Regex failure"),
    ("halt", "halt", "the expression halted before its first result"),
    ("bye", "\"bye\" | halt_error", ": bye"),
]


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

    def test_validation_compiles_as_the_workers_do_without_home(self):
        # libjq reads $HOME/.jq into every program it compiles. The workers that run expressions
        # have no environment, so a function defined there validated and then faulted every run.
        with tempfile.TemporaryDirectory() as home:
            with open(os.path.join(home, ".jq"), "w") as f:
                f.write("def knflow_from_home: 42;\n")
            body = json.dumps(doc("home", [{"name": "s", "set": "${ knflow_from_home }"}]))
            with Daemon(env={"HOME": home}) as d:
                d.start()
                for path in ("/api/v1/validate", NS + "/workflows"):
                    status, problem = d.json("POST", path, body)
                    self.assertEqual(status, 422, problem)
                    [error] = problem["errors"]
                    self.assertEqual(error["pointer"], "/spec/do/0/set")
                    self.assertIn("knflow_from_home/0 is not defined", error["detail"])
            # The CLI validates as the daemon does.
            path = os.path.join(home, "home.json")
            with open(path, "w") as f:
                f.write(body)
            cli = subprocess.run([BIN, "validate", "-f", path], capture_output=True, text=True,
                                 env=dict(os.environ, HOME=home))
            self.assertEqual(cli.returncode, 1, cli.stdout + cli.stderr)
            self.assertIn("knflow_from_home/0 is not defined", cli.stdout + cli.stderr)

    def test_apply_files_compile_without_home_and_functions_still_get_it(self):
        # `serve --apply` checks its files in the daemon's own process, at start: jq must not
        # read $HOME/.jq there either. HOME is set again afterwards, for the local functions.
        script = ("import http.server, json, os\n"
                  "class H(http.server.BaseHTTPRequestHandler):\n"
                  "    def do_POST(self):\n"
                  "        self.rfile.read(int(self.headers.get('Content-Length') or 0))\n"
                  "        body = json.dumps({'home': os.environ.get('HOME')}).encode()\n"
                  "        self.send_response(200)\n"
                  "        self.send_header('Content-Type', 'application/json')\n"
                  "        self.send_header('Content-Length', str(len(body)))\n"
                  "        self.end_headers()\n"
                  "        self.wfile.write(body)\n"
                  "    def log_message(self, *args):\n"
                  "        pass\n"
                  "http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H)"
                  ".serve_forever()\n")
        with tempfile.TemporaryDirectory() as home:
            with open(os.path.join(home, ".jq"), "w") as f:
                f.write("def knflow_from_home: 42;\n")
            bad = os.path.join(home, "bad.json")
            with open(bad, "w") as f:
                json.dump(doc("home", [{"name": "s", "set": "${ knflow_from_home }"}]), f)
            with Daemon("--apply", bad, env={"HOME": home}) as d:
                d.start(wait_ready=False)
                self.assertEqual(d.proc.wait(60), 2, d.output())
                self.assertIn("Refused a workflow to apply", d.output())
                self.assertIn("knflow_from_home/0 is not defined", d.output())
            good = os.path.join(home, "good.json")
            where = doc("where", [{"name": "s", "call": "where"}])
            where["spec"]["functions"] = {"where": {"local": {"command": ["python3", "-c", script]}}}
            with open(good, "w") as f:
                json.dump(where, f)
            with Daemon("--apply", good, env={"HOME": home}) as d:
                d.start()
                status, _, body = d.call("POST", NS + "/workflows/where:invoke", "{}")
                self.assertEqual(status, 200, body)
                self.assertEqual(json.loads(body), {"home": home})

    def test_a_long_validation_holds_no_other_request(self):
        # Compiling takes 10-20 ms per distinct expression. It used to run on the thread serving
        # the request, and connections share a few threads: /readyz could wait seconds behind a
        # large workflow. Now the workflow's compiles run on a worker process of their own.
        steps = [{"name": f"s{i}", "set": "${ .field_" + str(i) + " + 1 }"} for i in range(400)]
        steps.append({"name": "bad", "set": "${ .a | }"})
        body = json.dumps(doc("large", steps))
        with Daemon() as d:
            d.start()
            answer = {}

            def create():
                # 400 compiles take several seconds, ten times as long with ASan on a busy machine.
                answer["created"] = d.json("POST", NS + "/workflows", body, timeout=300)

            writer = threading.Thread(target=create)
            writer.start()
            # Once the request is being validated (its compiles have started), every other
            # request is served meanwhile, whichever connection thread it lands on.
            self.assertTrue(wait_until(lambda: len(children(d.proc.pid)) >= 1, 30))
            for _ in range(4):
                status, _, _ = d.call("GET", "/readyz")
                self.assertEqual(status, 200)
                status, listed = d.json("GET", NS + "/workflows")
                self.assertEqual(status, 200, listed)
            self.assertTrue(writer.is_alive(), "the validation ended before the other requests")
            writer.join(300)
            status, problem = answer["created"]
            self.assertEqual(status, 422, problem)
            self.assertEqual([e["pointer"] for e in problem["errors"]], ["/spec/do/400/set"])

    def test_a_validation_whose_client_went_away_stops_compiling(self):
        # Its 400 expressions held the validation worker for seconds after the client had gone
        # (1,000 of them: about 15 s of a core), for an answer nobody read.
        steps = [{"name": f"s{i}", "set": "${ .gone_" + str(i) + " + 1 }"} for i in range(400)]
        body = json.dumps(doc("abandoned", steps)).encode()
        with Daemon() as d:
            d.start()
            stopped = "Stopped compiling a workflow's expressions: the client went away"
            for k, path in enumerate(("/api/v1/validate", NS + "/workflows"), start=1):
                with socket.create_connection(("127.0.0.1", d.port)) as s:
                    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                              f"{d.token}\r\nContent-Type: application/json\r\n"
                              f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                    time.sleep(0.2)  # its compiles begin (400 take seconds)
                self.assertTrue(wait_until(lambda: d.output().count(stopped) == k, 60), d.tail())
            status, _ = d.json("GET", NS + "/workflows/abandoned")
            self.assertEqual(status, 404)  # nothing written for a client that left

    def test_hostile_expressions_fault_their_step_and_the_daemon_keeps_serving(self):
        with Daemon() as d:
            d.start()
            for name, program, _ in HOSTILE:
                status, problem = d.json("POST", NS + "/workflows", json.dumps(doc(name, [
                    {"name": "run", "set": "${ " + program + " }"}])))
                self.assertEqual(status, 201, problem)
            status, problem = d.json("POST", NS + "/workflows", json.dumps(doc("fine", [
                {"name": "text", "set": "${ {s: ([55296, 0, 1114111] | implode), n: [nan, 1e1000]} }"},
                {"name": "nap", "wait": "PT30S"}])))
            self.assertEqual(status, 201, problem)

            runs = {}
            for name, _, _ in HOSTILE:
                status, run = d.json("POST", NS + f"/workflows/{name}:invoke?mode=async", "{}")
                self.assertEqual(status, 202, run)
                runs[name] = run["runId"]
            # While they run (two workers, one second each at most), other runs are served.
            status, run = d.json("POST", NS + "/workflows/fine:invoke?mode=async", "{}")
            self.assertEqual(status, 202, run)
            fine = run["runId"]

            def finished():
                views = {n: d.json("GET", f"{NS}/runs/{r}")[1] for n, r in runs.items()}
                return views if all(v["phase"] == "faulted" for v in views.values()) else None

            views = wait_until(finished, 60)
            self.assertTrue(views, "every hostile run faults")
            for name, program, message in HOSTILE:
                error = views[name]["error"]
                self.assertEqual(error["type"],
                                 "https://serverlessworkflow.io/spec/1.0.0/errors/expression", error)
                self.assertEqual(error["instance"], "/do/0/set")
                self.assertIn(message, error["detail"])
            # Waiting, past its expression: its `set` is journaled (it may still have been queued
            # behind the runaways when they faulted).
            def past_set():
                _, view = d.json("GET", f"{NS}/runs/{fine}")
                done = [s for s in view.get("steps", []) if s["path"] == "/do/0"]
                return view if done and done[0]["phase"] == "completed" else None

            view = wait_until(past_set, 60)
            self.assertTrue(view, "the fine run's set never completed")
            self.assertEqual(view["phase"], "running")

            # The runs' two workers, and the one that compiled the workflows at validation.
            workers = children(d.proc.pid)
            self.assertLessEqual(len(workers), 3)
            if not sanitized(d.proc.pid):
                self.assertLess(rss_kib(d.proc.pid), 200 * 1024)
                for pid in workers:
                    self.assertLess(rss_kib(pid), 256 * 1024)
            status, value = d.json("POST", NS + "/workflows/halt:invoke", "{}")
            self.assertEqual(status, 400, value)  # and expressions still run

            # kill -9: the workers die with the daemon; every run reads back after a restart.
            d.stop(signal.SIGKILL)
            self.assertTrue(wait_until(lambda: not any(alive(pid) for pid in workers), 10))
            with Daemon(data_dir=d.data_dir) as again:
                again.start()
                for name, run_id in runs.items():
                    status, view = again.json("GET", f"{NS}/runs/{run_id}")
                    self.assertEqual(status, 200)
                    self.assertEqual(view["phase"], "faulted")
                status, view = again.json("GET", f"{NS}/runs/{fine}")
                self.assertEqual(status, 200)
                self.assertIn(view["phase"], ("running", "waiting"))
                self.assertEqual(view["steps"][0]["output"]["s"], "\ufffd\u0000\U0010ffff")

if __name__ == "__main__":
    unittest.main(verbosity=2)
