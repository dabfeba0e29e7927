"""The README's order-pipeline example as a user sees it: `knflow serve --apply
examples/order-pipeline.yaml` starts the example's Python functions itself; a synchronous invoke
answers the final event; a big order goes to manual review; a bad order is refused with every
schema violation; the CLI lists the runs and shows one; the run's logs hold the functions'
lines; SIGTERM stops the daemon with exit 0 and leaves no function process behind."""

import json
import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from daemon import BIN, SOURCE_DIR, Daemon, wait_until  # noqa: E402

EXAMPLE = os.path.join(SOURCE_DIR, "examples", "order-pipeline.yaml")
FUNCTIONS = ("validate", "charge", "reserve", "notify_email", "notify_sms", "review")
INVOKE = "/api/v1/namespaces/shop/workflows/order-pipeline:invoke"

ORDER = {"order": {"id": "o-1", "amount": 42.5,
                   "items": [{"sku": "BOOK-1", "quantity": 2}, {"sku": "PEN-7", "quantity": 1}]}}
BIG_ORDER = {"order": {"id": "o-2", "amount": 5000, "items": [{"sku": "TV-1", "quantity": 1}]}}
BAD_ORDER = {"order": {"id": "", "amount": -1, "items": []}}


def proc_stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1])  # state, parent pid
    except OSError:
        return None


def alive(pid):
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(root):
    """Pids of the live processes below `root`, from /proc."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat and stat[0] != "Z":
                parent[int(entry)] = stat[1]
    found, frontier = set(), {root}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier and p not in found}
        found |= frontier
    return found


def function_processes(daemon_pid):
    """{script name: pid} of the example's functions the daemon runs."""
    out = {}
    for pid in descendants(daemon_pid):
        cmd = cmdline(pid)
        for name in FUNCTIONS:
            if f"examples/functions/{name}.py" in cmd:
                out[name] = pid
    return out


class ExampleTest(unittest.TestCase):
    def test_order_pipeline_as_the_readme_shows_it(self):
        d = Daemon("--apply", EXAMPLE, "--functions-dir", SOURCE_DIR)
        functions = {}
        try:
            d.start()
            # /readyz may answer before --apply is done (see the test below); wait for it here
            # so that the rest of the example is still checked.
            self.assertTrue(wait_until(
                lambda: d.call("GET", "/api/v1/namespaces/shop/workflows/order-pipeline")[0] == 200,
                15), "the applied workflow never appeared")

            # A synchronous invoke answers the final event in binary mode.
            status, headers, body = d.call("POST", INVOKE, json.dumps(ORDER))
            self.assertEqual(status, 200, body)
            self.assertEqual(body, '{"order":"o-1","receipt":"rcpt-o-1","reserved":2,'
                                   '"notified":["email","sms"]}')
            headers = {k.lower(): v for k, v in headers.items()}
            for attr in ("ce-type", "ce-id", "ce-source", "ce-specversion"):
                self.assertTrue(headers.get(attr), f"{attr} missing: {headers}")
            run_id = headers["knflow-run-id"]

            # A big order is routed to a person.
            status, headers, body = d.call("POST", INVOKE, json.dumps(BIG_ORDER))
            self.assertEqual(status, 200, body)
            self.assertEqual(json.loads(body), {"order": "o-2", "queued": "manual-review"})
            big_run_id = {k.lower(): v for k, v in headers.items()}["knflow-run-id"]

            # An order violating the input schema: 400 with every violation, and no run.
            status, headers, body = d.call("POST", INVOKE, json.dumps(BAD_ORDER))
            self.assertEqual(status, 400, body)
            self.assertTrue(headers.get("Content-Type", "").startswith("application/problem+json"))
            problem = json.loads(body)
            self.assertEqual(problem["status"], 400)
            self.assertEqual({e["pointer"] for e in problem["errors"]},
                             {"/order/id", "/order/amount", "/order/items"}, problem)

            # The run's logs hold the lines its functions wrote.
            status, logs = d.json("GET", f"/api/v1/namespaces/shop/runs/{run_id}/logs")
            self.assertEqual(status, 200, logs)
            by_function = {}
            for line in logs["items"]:
                by_function.setdefault(line["function"], []).append(line["text"])
            for name in ("validate", "charge", "reserve", "email", "sms"):
                self.assertTrue(any("POST" in t for t in by_function.get(name, [])),
                                f"no request line from {name}: {logs}")

            # The CLI, run as a user would: both commands at once (a hung one fails the test).
            token_file = os.path.join(d.data_dir, "token")
            common = ["-n", "shop", "--server", d.base, "--token-file", token_file]
            commands = {"knflow runs -n shop": [BIN, "runs", *common],
                        "knflow runs get ID -n shop": [BIN, "runs", "get", run_id, *common]}
            started = time.monotonic()
            procs = {k: subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True) for k, c in commands.items()}
            outputs = {}
            try:
                for k, p in procs.items():
                    out, err = p.communicate(timeout=max(1, 60 - (time.monotonic() - started)))
                    outputs[k] = (p.returncode, out, err)
            finally:
                for p in procs.values():
                    if p.poll() is None:
                        p.kill()
                        p.wait()
            code, out, err = outputs["knflow runs -n shop"]
            self.assertEqual(code, 0, err)
            rows = [line for line in out.splitlines()[1:] if line.strip()]
            self.assertTrue(out.startswith("ID"), out)
            self.assertEqual(len(rows), 2, out)  # the refused order started no run
            for rid in (run_id, big_run_id):
                self.assertTrue(any(r.startswith(rid) and " completed " in r for r in rows), out)
            code, out, err = outputs["knflow runs get ID -n shop"]
            self.assertEqual(code, 0, err)
            self.assertIn(f"Run:       {run_id}", out)
            self.assertIn("Workflow:  shop/order-pipeline", out)
            self.assertIn("Phase:     completed", out)
            self.assertIn('Output:    {"order":"o-1","receipt":"rcpt-o-1","reserved":2,'
                          '"notified":["email","sms"]}', out)
            # The step history, then the attempts of the calls (the table with ATTEMPT).
            history, attempts = out.split("\nSTEP ")[1:]
            self.assertEqual([line.split()[0] for line in history.splitlines()[1:] if line],
                             ["validate", "route", "charge", "reserve-items", "reserve", "reserve",
                              "notify", "send-email", "send-sms"], out)
            steps = [line.split()[0] for line in attempts.splitlines()[1:] if line]
            self.assertEqual(sorted(steps),
                             sorted(["validate", "charge", "reserve", "reserve", "send-email",
                                     "send-sms"]), out)

            # SIGTERM: exit 0, and every function process the daemon started is gone.
            functions = function_processes(d.proc.pid)
            self.assertEqual(set(functions), set(FUNCTIONS), functions)
            self.assertEqual(d.stop(signal.SIGTERM), 0, d.output())
            left = wait_until(lambda: [p for p in functions.values() if alive(p)] or None, 1)
            self.assertIsNone(left, f"function processes outlived the daemon: {left}")
            self.assertIn("Stopped knflow", d.output())

        except BaseException:
            sys.stderr.write(f"\n--- daemon output ---\n{d.output()[-6000:] if d.proc else ''}\n")
            raise
        finally:
            if d.proc and d.proc.poll() is None:
                functions = {**function_processes(d.proc.pid), **functions}
            d.close()
            for pid in functions.values():
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)

    def test_the_try_catch_example_falls_back_standalone(self):
        """examples/try-catch.yaml named a fallback function that did not exist, and its partner
        was an https URL, which standalone mode cannot call (an error its catch did not match)."""
        example = os.path.join(SOURCE_DIR, "examples", "try-catch.yaml")
        with Daemon("--apply", example, "--functions-dir", SOURCE_DIR) as d:
            d.start()
            path = "/api/v1/namespaces/default/workflows/quote"
            self.assertTrue(wait_until(lambda: d.call("GET", path)[0] == 200, 30))
            status, _, body = d.call("POST", path + ":invoke", '{"id": "q-1", "weight": 3}')
            self.assertEqual(status, 200, body)
            self.assertEqual(json.loads(body), {"id": "q-1", "price": 9.9, "source": "fallback"})
            status, _, body = d.call("POST", path + ":invoke", '{"id": "q-2", "weight": 300}')
            self.assertEqual(status, 422, body)
            self.assertEqual(json.loads(body)["error"]["title"], "No quote")
            self.assertEqual(d.stop(), 0, d.tail())

    def test_applied_workflow_is_there_once_ready(self):
        """`serve --apply FILE`: once /readyz answers 200 the workflow can be invoked."""
        with Daemon("--apply", EXAMPLE, "--functions-dir", SOURCE_DIR) as d:
            d.start()  # returns when /readyz answers 200
            status, _, body = d.call("GET", "/api/v1/namespaces/shop/workflows/order-pipeline")
            self.assertEqual(status, 200, "/readyz answered 200 before the --apply workflow was "
                                          f"stored: {body}\n{d.output()}")
            self.assertEqual(d.stop(), 0, d.tail())


if __name__ == "__main__":
    unittest.main(verbosity=2)
