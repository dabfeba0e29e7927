"""kill -9 inside every construct: one daemon runs a workflow per construct, each held inside it
(a function that does not answer before the kill), the daemon is SIGKILLed and restarted on the
same data directory, and every run must then end as it would have without the kill: the right
phase and output, no completed step run again, waits, joins, loops, retries, catch handlers and
switch decisions going on where they were, one reply per run, one dead letter."""

import json
import os
import re
import signal
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from daemon import Daemon, LocalFunction, wait_until  # noqa: E402

NS = "/api/v1/namespaces/default"
TERMINAL = ("completed", "faulted", "cancelled")


class Functions:
    """Every function of the test on one local HTTP server, told apart by path. Before `open()`,
    a request to a held path is not answered (it is in flight when the daemon is killed); after,
    it is answered at once. Records every request: (path, ce-id, JSON body)."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        self.opened = threading.Event()
        self.server = LocalFunction(self.respond)
        self.url = self.server.url

    def respond(self, path, headers, raw):
        body = json.loads(raw) if raw else None
        with self.lock:
            self.requests.append((path, headers.get("ce-id"), body))
            n = sum(1 for p, _, _ in self.requests if p == path)
        status, answer = self.answer(path, n, body)
        return status, json.dumps(answer)

    def hold(self):
        self.opened.wait(120)

    def answer(self, path, n, body):
        if path == "/gate":  # held until opened, then an echo
            self.hold()
            return 200, body
        if path == "/flaky":  # fails once, then held, then an echo
            if n == 1:
                return 503, {"error": "busy"}
            self.hold()
            return 200, body
        if path == "/down":
            return 503, {"error": "down"}
        if path == "/lettered":  # fails, then held, then fails for good
            if n == 2:
                self.hold()
            return 503, {"error": "still down"}
        return 200, body  # /echo, /heard, the reply and dead-letter sinks

    def open(self):
        self.opened.set()

    def to(self, path):
        with self.lock:
            return [(ce_id, body) for p, ce_id, body in self.requests if p == path]

    def close(self):
        self.open()
        self.server.close()


def workflow(name, fn, steps, extra=""):
    return f"""apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata: {{name: {name}}}
spec:
  functions:
    echo: {{url: "{fn.url}/echo"}}
    gate: {{url: "{fn.url}/gate"}}
    flaky: {{url: "{fn.url}/flaky"}}
    down: {{url: "{fn.url}/down"}}
    lettered: {{url: "{fn.url}/lettered"}}
    heard: {{url: "{fn.url}/heard"}}
  reply: {{uri: "{fn.url}/reply-{name}"}}
{extra}  do:
{steps}"""


# name -> (steps, input)
WORKFLOWS = {
    "waiting": ("""    - {name: before, call: echo}
    - {name: nap, wait: PT5S}
    - {name: after, set: '${ . + {woke: true} }'}
""", {"w": 1}),
    "joined": ("""    - name: both
      fork:
        branches:
          - {name: quick, call: echo, input: '${ {branch: 0} }'}
          - {name: held, call: gate, input: '${ {branch: 1} }'}
    - {name: after, set: '${ {joined: .} }'}
""", {}),
    "first": ("""    - name: either
      fork:
        join: any
        branches:
          - {name: held, call: gate, input: '${ {branch: 0} }'}
          - name: failing
            raise: {type: runtime, status: 500, title: Broken}
""", {}),
    "each": ("""    - name: split
      fork:
        join: each
        branches:
          - {name: quick, call: echo, input: '${ {branch: 0} }'}
          - {name: held, call: gate, input: '${ {branch: 1} }'}
    - {name: tag, call: echo, input: '${ {tagged: .branch} }'}
""", {}),
    "looped": ("""    - name: items
      for: {each: x, in: '${ .items }', concurrency: 2}
      do:
        - {name: fast, if: '${ $x != 3 }', call: echo, input: '${ {item: $x} }'}
        - {name: slow, if: '${ $x == 3 }', call: gate, input: '${ {item: $x} }'}
""", {"items": [1, 2, 3, 4, 5]}),
    "counted": ("""    - name: count
      while: '${ .n < 4 }'
      maxIterations: 4
      do:
        - {name: inc, set: '${ {n: (.n + 1)} }'}
        - {name: fast, if: '${ .n != 3 }', call: echo}
        - {name: slow, if: '${ .n == 3 }', call: gate}
""", {"n": 0}),
    "retried": ("""    - name: guarded
      try:
        - {name: ask, call: flaky}
      catch:
        errors: {type: communication}
        retry: {limit: 3, backoff: constant, delay: PT0.1S}
""", {"r": 1}),
    "handled": ("""    - name: guarded
      try:
        - {name: ask, call: down}
      catch:
        errors: {type: communication}
        retry: {limit: 1, backoff: constant, delay: PT0.1S}
        do:
          - {name: fallback, call: gate, input: '${ {handled: $error.instance} }'}
""", {}),
    "routed": ("""    - {name: before, call: echo}
    - name: route
      switch:
        - when: '${ .k == 1 }'
          then: one
        - then: two
    - {name: one, call: gate, output: '${ {went: "one"} }', then: end}
    - {name: two, set: {went: two}}
""", {"k": 1}),
    "told": ("""    - name: tell
      emit: {type: com.example.told, source: /crash-test, data: {n: 1}}
    - {name: held, call: gate}
""", {"t": 1}),
    "lettered": ("""    - {name: ask, call: lettered, retry: {limit: 1, backoff: constant, delay: PT0.1S}}
""", {"l": 1}),
}

LISTENER = """apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata: {{name: listener}}
spec:
  trigger: {{filter: {{type: com.example.told}}}}
  functions: {{heard: {{url: "{url}/heard"}}}}
  do:
    - {{name: hear, call: heard}}
"""


class CrashInsideConstructsTest(unittest.TestCase):
    def setUp(self):
        self.fn = Functions()
        self.d = Daemon()

    def tearDown(self):
        self.d.close()
        self.fn.close()

    def create(self, yaml):
        status, _, body = self.d.call("POST", NS + "/workflows", yaml,
                                      content_type="application/yaml")
        self.assertEqual(status, 201, body)

    def run_of(self, run_id):
        status, run = self.d.json("GET", f"{NS}/runs/{run_id}")
        self.assertEqual(status, 200, run)
        return run

    def attempts(self, run_id):
        """path -> phases of its attempts, in order."""
        out = {}
        for a in self.run_of(run_id)["attempts"]:
            out.setdefault(a["path"], []).append(a["phase"])
        return out

    def test_every_construct_goes_on_where_it_was_after_kill_9(self):
        fn, d = self.fn, self.d
        d.start()
        self.create(LISTENER.format(url=fn.url))
        for name, (steps, _) in WORKFLOWS.items():
            extra = f'  deadLetter: {{uri: "{fn.url}/dead"}}\n' if name == "lettered" else ""
            self.create(workflow(name, fn, steps, extra))
        ids = {}
        for name, (_, data) in WORKFLOWS.items():
            status, run = d.json("POST", f"{NS}/workflows/{name}:invoke?mode=async",
                                 json.dumps(data))
            self.assertEqual(status, 202, run)
            ids[name] = run["runId"]

        # Each run inside its construct, with what it had finished journaled (a call's attempt
        # completes in the commit that journals its step).
        def completed(name, path):
            return self.attempts(ids[name]).get(path, [None])[-1] == "completed"

        def running(name, path):
            return self.attempts(ids[name]).get(path, [None])[-1] == "running"

        ready = {
            "waiting": lambda: completed("waiting", "/do/0"),
            "joined": lambda: completed("joined", "/do/0/fork/0") and running("joined", "/do/0/fork/1"),
            "first": lambda: running("first", "/do/0/fork/0"),
            "each": lambda: completed("each", "/do/0/each/0/1") and running("each", "/do/0/fork/1"),
            # A sliding window: the held third item does not keep the fourth and fifth waiting.
            "looped": lambda: all(completed("looped", f"/do/0/for/{k}/0") for k in (0, 1, 3, 4))
            and running("looped", "/do/0/for/2/1"),
            "counted": lambda: completed("counted", "/do/0/while/1/1")
            and running("counted", "/do/0/while/2/2"),
            "retried": lambda: running("retried", "/do/0/try/1/0"),
            "handled": lambda: running("handled", "/do/0/catch/do/0"),
            "routed": lambda: running("routed", "/do/2"),
            "told": lambda: running("told", "/do/1") and len(fn.to("/heard")) == 1,
            "lettered": lambda: self.attempts(ids["lettered"]).get("/do/0") == ["faulted", "running"],
        }
        for name, check in ready.items():
            self.assertTrue(wait_until(check, 30), f"{name}: {self.attempts(ids[name])}")
        # A change to a workflow does not reach its runs: `routed` keeps the definition it started
        # with (its switch already chose `one`, and would choose `two` now).
        status, current = d.json("GET", f"{NS}/workflows/routed")
        self.assertEqual(status, 200, current)
        current["spec"]["do"][1]["switch"][0]["when"] = "${ .k == 2 }"
        status, _, body = d.call("PUT", f"{NS}/workflows/routed", json.dumps(current))
        self.assertEqual(status, 200, body)
        before = {path: len(fn.to(path)) for path in ("/echo", "/flaky", "/down")}

        d.stop(signal.SIGKILL)
        d.log.close()
        fn.open()
        d.start()

        runs = {}
        for name, run_id in ids.items():
            runs[name] = wait_until(
                lambda: (lambda r: r if r["phase"] in TERMINAL else None)(self.run_of(run_id)), 30)
            self.assertIsNotNone(runs[name], f"{name} did not finish: {self.run_of(run_id)}")
        data = {name: run.get("output", {}).get("data") for name, run in runs.items()}
        for name, run in runs.items():
            if name != "lettered":
                self.assertEqual(run["phase"], "completed", f"{name}: {run}")

        # Calls completed before the kill were not made again; those in flight were, once, with
        # the same event id.
        echoed = [body for _, body in fn.to("/echo")]
        after = sorted(echoed[before["/echo"]:], key=json.dumps)
        self.assertEqual(after, [{"n": 4}, {"tagged": 1}], echoed)

        self.assertEqual(data["waiting"], {"w": 1, "woke": True})
        # Its one completed step is what the resume counts, not the wait under way (unless a slow
        # machine let the wait end before the kill: then it was not resumed).
        resumed = re.search(f'msg="Resumed run" run={ids["waiting"]} .*completedSteps=(\\d+)',
                            d.output())
        if resumed:
            self.assertEqual(resumed.group(1), "1", resumed.group(0))
        started = runs["waiting"]["startedAt"]
        self.assertGreaterEqual(seconds(runs["waiting"]["finishedAt"]) - seconds(started), 5.0)

        self.assertEqual(data["joined"], {"joined": [{"branch": 0}, {"branch": 1}]})
        self.assertEqual(data["first"], {"branch": 0})
        self.assertEqual(data["each"], [{"tagged": 0}, {"tagged": 1}])
        self.assertEqual(data["looped"], [{"item": k} for k in (1, 2, 3, 4, 5)])
        self.assertEqual(data["counted"], {"n": 4})
        gate = [body for _, body in fn.to("/gate")]
        self.assertEqual(gate.count({"n": 3}), 2, gate)  # the held iteration, before and after

        # The try went on with the retry it was in; the catch handler with its error.
        self.assertEqual(data["retried"], {"r": 1})
        flaky = [ce_id.split(":", 1)[1] for ce_id, _ in fn.to("/flaky")]
        self.assertEqual(flaky, ["/do/0/try/0/0", "/do/0/try/1/0", "/do/0/try/1/0"])
        self.assertEqual(before["/down"], 2)
        self.assertEqual(len(fn.to("/down")), 2, "the try list was not run again")
        self.assertEqual(data["handled"], {"handled": "/do/0/try/1/0"})
        handled = [body for body in gate if body and "handled" in body]
        self.assertEqual(handled, [{"handled": "/do/0/try/1/0"}] * 2)

        self.assertEqual(data["routed"], {"went": "one"})
        self.assertEqual(data["told"], {"t": 1})
        self.assertEqual(len(fn.to("/heard")), 1, "the emit was not sent again")

        lettered = runs["lettered"]
        self.assertEqual(lettered["phase"], "faulted", lettered)
        self.assertEqual(lettered["error"]["status"], 503, lettered)
        self.assertEqual(len(fn.to("/dead")), 1)

        # One reply per completed run (`each`: one per output of its join).
        for name in WORKFLOWS:
            replies = [body for _, body in fn.to(f"/reply-{name}")]
            if name == "lettered":
                self.assertEqual(replies, [])
            elif name == "each":
                self.assertEqual(sorted(replies, key=json.dumps), data[name])
            else:
                self.assertEqual(replies, [data[name]], name)
        self.assertEqual(d.stop(), 0, d.output())


def seconds(rfc3339):
    """Seconds since the epoch of an RFC 3339 UTC time with milliseconds."""
    from datetime import datetime
    return datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


if __name__ == "__main__":
    unittest.main(verbosity=2)
