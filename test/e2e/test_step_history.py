"""A run's step history (`steps` in GET .../runs/{id}, the STEP table of `knflow runs get`) from the
real daemon: every kind of step that ran, in the order they started, with skips, a switch's
decision, a caught error, a wait's deadline, the step a run faulted at and the loop around it, a
wait cancelled, and the same history read back after a kill -9 and a restart."""

import json
import os
import signal
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from daemon import BIN, Daemon, wait_until  # noqa: E402

NS = "/api/v1/namespaces/default"

TOUR = """apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata: {name: tour}
spec:
  do:
    - {name: init, set: {n: 0}}
    - {name: skip-me, if: '${ false }', set: {never: true}}
    - name: route
      switch:
        - {when: '${ .n > 5 }', then: finish}
        - {then: continue}
    - name: count
      while: '${ .n < 2 }'
      maxIterations: 5
      do:
        - {name: bump, set: '${ .n += 1 }'}
    - name: guarded
      try:
        - {name: boom, raise: {type: runtime, status: 500, title: Boom}}
      catch:
        as: err
        do:
          - {name: handle, set: '${ {handled: $err.title, n: .n} }'}
    - {name: pause, wait: PT0.1S}
    - {name: finish, set: '${ . + {done: true} }'}
"""

LOOP_FAULT = """apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata: {name: loop-fault}
spec:
  do:
    - name: check-all
      for: {each: item, in: '${ .items }'}
      do:
        - {name: check, if: '${ $item > 1 }', raise: {type: validation, status: 422, title: Too big}}
"""

EACH = """apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata: {name: each}
spec:
  do:
    - name: split
      fork:
        join: each
        branches:
          - {name: one, set: {n: 1}}
          - {name: two, set: {n: 2}}
    - {name: double, set: '${ {n: (.n * 2)} }'}
"""

RETRIED = """apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata: {name: retried}
spec:
  do:
    - name: guarded
      try:
        - {name: boom, raise: {type: runtime, status: 500, title: Boom}}
      catch:
        retry: {limit: 2, backoff: constant, delay: PT0.01S}
        do:
          - {name: handle, set: {handled: true}}
"""

BACKOFF = """apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata: {name: backoff}
spec:
  functions:
    gone: {url: "http://127.0.0.1:1/"}
  do:
    - name: reach
      call: gone
      retry: {limit: 3, backoff: constant, delay: PT1H}
"""

NAP = """apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata: {name: nap}
spec:
  do:
    - {name: first, set: {a: 1}}
    - {name: sleep, wait: PT1H}
"""


def table(out, first_header):
    """The rows of the `runs get` table whose header starts with these words, as dicts."""
    for block in out.split("\n\n"):
        lines = [line for line in block.splitlines() if line.strip()]
        if lines and lines[0].split()[:len(first_header)] == first_header:
            header = lines[0].split()
            return [dict(zip(header, line.split(None, len(header) - 1))) for line in lines[1:]]
    raise AssertionError(f"no table {first_header} in:\n{out}")


class StepHistoryTest(unittest.TestCase):
    def setUp(self):
        self.d = Daemon()
        self.d.start()
        for doc in (TOUR, LOOP_FAULT, NAP, EACH, RETRIED, BACKOFF):
            status, _, body = self.d.call("POST", NS + "/workflows", doc, content_type="application/yaml")
            self.assertEqual(status, 201, body)

    def tearDown(self):
        self.d.close()

    def invoke(self, name, data="{}"):
        status, headers, body = self.d.call("POST", f"{NS}/workflows/{name}:invoke", data)
        return status, headers["Knflow-Run-Id"], body

    def steps(self, run_id):
        status, run = self.d.json("GET", f"{NS}/runs/{run_id}")
        self.assertEqual(status, 200, run)
        return run["steps"]

    def cli(self, *args):
        env = dict(os.environ, KNFLOW_SERVER=self.d.base, KNFLOW_TOKEN=self.d.token)
        r = subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout, r.stderr

    def test_every_step_that_ran_in_order(self):
        status, run_id, body = self.invoke("tour")
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), {"handled": "Boom", "n": 2, "done": True})
        steps = self.steps(run_id)
        self.assertEqual(
            [(s["path"], s["name"], s["kind"], s["phase"]) for s in steps],
            [("/do/0", "init", "set", "completed"),
             ("/do/1", "skip-me", "set", "skipped"),
             ("/do/2", "route", "switch", "completed"),
             ("/do/3", "count", "while", "completed"),
             ("/do/3/while/0/0", "bump", "set", "completed"),
             ("/do/3/while/1/0", "bump", "set", "completed"),
             ("/do/4", "guarded", "try", "completed"),
             # What the try caught (only calls were listed), after what its try ran before it.
             ("/do/4/try/0/0", "boom", "raise", "faulted"),
             ("/do/4/catch/do/0", "handle", "set", "completed"),
             ("/do/5", "pause", "wait", "completed"),
             # The last step ends the run in the same commit, and is journaled all the same.
             ("/do/6", "finish", "set", "completed")])
        by_path = {s["path"]: s for s in steps}
        self.assertEqual(by_path["/do/2"]["then"], "continue")  # a switch's decision
        self.assertEqual(by_path["/do/4"]["caught"]["title"], "Boom")
        self.assertEqual(by_path["/do/4"]["tries"], 1)
        self.assertEqual(by_path["/do/4/try/0/0"]["error"], by_path["/do/4"]["caught"])
        self.assertNotIn("startedAt", by_path["/do/4/try/0/0"])  # its end only: when it was caught
        self.assertIn("until", by_path["/do/5"])
        self.assertEqual(by_path["/do/3/while/1/0"]["output"], {"n": 2})
        self.assertEqual(by_path["/do/6"]["output"], {"handled": "Boom", "n": 2, "done": True})
        for s in steps:
            self.assertLessEqual(s.get("startedAt", s["finishedAt"]), s["finishedAt"], s)
        self.assertGreaterEqual(by_path["/do/5"]["finishedAt"], by_path["/do/5"]["until"])

        code, out, err = self.cli("runs", "get", run_id)
        self.assertEqual(code, 0, err)
        rows = table(out, ["STEP", "PATH", "KIND"])
        self.assertEqual([(r["STEP"], r["PATH"], r["KIND"], r["PHASE"]) for r in rows],
                         [(s["name"], s["path"], s["kind"], s["phase"]) for s in steps])
        self.assertIn("then continue", rows[2]["DETAIL"])
        self.assertIn("caught Boom", rows[6]["DETAIL"])
        self.assertIn("No call attempts", out)

    def test_a_then_loop_in_the_order_its_steps_began(self):
        # Steps of a `then` loop begin in the same millisecond; ties went by path, so the
        # history listed inc, check, inc~2, inc~3, check~2, check~3, ... instead of alternating.
        doc = ("apiVersion: knflow.dev/v1alpha1\nkind: Workflow\nmetadata: {name: spin}\nspec:\n"
               "  do:\n    - {name: init, set: {n: 0}}\n    - {name: inc, set: '${ .n += 1 }'}\n"
               "    - name: check\n      switch:\n        - {when: '${ .n < 5 }', then: inc}\n"
               "        - {then: continue}\n    - {name: fin, set: '${ {n: .n} }'}\n")
        status, _, body = self.d.call("POST", NS + "/workflows", doc, content_type="application/yaml")
        self.assertEqual(status, 201, body)
        status, run_id, body = self.invoke("spin")
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), {"n": 5})
        paths = [s["path"] for s in self.steps(run_id)]
        loop = []
        for k in range(1, 6):
            suffix = "" if k == 1 else f"~{k}"
            loop += [f"/do/1{suffix}", f"/do/2{suffix}"]
        self.assertEqual(paths, ["/do/0"] + loop + ["/do/3"])

    def test_the_steps_every_try_of_a_try_faulted_at(self):
        """Each try a catch.retry ran again is listed with the step it faulted at (only the last,
        which the catch handled, was)."""
        status, run_id, body = self.invoke("retried")
        self.assertEqual(status, 200, body)
        steps = self.steps(run_id)
        self.assertEqual([(s["path"], s["phase"]) for s in steps],
                         [("/do/0", "completed"),
                          ("/do/0/try/0/0", "faulted"),
                          ("/do/0/try/1/0", "faulted"),
                          ("/do/0/try/2/0", "faulted"),
                          ("/do/0/catch/do/0", "completed")])
        for s in steps[1:4]:
            self.assertEqual(s["error"]["title"], "Boom", s)
            self.assertEqual(s["error"]["instance"], s["path"], s)
        self.assertLess(steps[1]["finishedAt"], steps[3]["finishedAt"])
        self.assertEqual(steps[0]["tries"], 3)

    def test_the_step_a_run_faulted_at_and_the_loop_around_it(self):
        status, run_id, body = self.invoke("loop-fault", '{"items": [1, 2, 3]}')
        self.assertEqual(status, 422, body)
        steps = self.steps(run_id)
        phases = {s["path"]: s["phase"] for s in steps}
        self.assertEqual(phases["/do/0/for/0/0"], "skipped")
        self.assertEqual(phases["/do/0/for/1/0"], "faulted")
        self.assertEqual(phases["/do/0"], "faulted")
        faulted = next(s for s in steps if s["path"] == "/do/0/for/1/0")
        self.assertEqual(faulted["error"]["title"], "Too big")
        self.assertEqual(faulted["kind"], "raise")
        # Iterations run one after another; the third never started. The loop comes first.
        self.assertEqual([s["path"] for s in steps], ["/do/0", "/do/0/for/0/0", "/do/0/for/1/0"])

        code, out, err = self.cli("runs", "get", run_id)
        self.assertEqual(code, 0, err)
        self.assertIn("\nAt:        /do/0/for/1/0 (step check)\n", out)
        rows = {r["PATH"]: r for r in table(out, ["STEP", "PATH", "KIND"])}
        self.assertEqual(rows["/do/0/for/1/0"]["PHASE"], "faulted")
        self.assertIn("Too big", rows["/do/0/for/1/0"]["DETAIL"])

    def test_a_fork_with_join_each_and_what_each_output_went_through(self):
        status, run_id, body = self.invoke("each")
        self.assertEqual(status, 200, body)
        steps = {s["path"]: s for s in self.steps(run_id)}
        self.assertEqual({p: (s["name"], s["phase"]) for p, s in steps.items()},
                         {"/do/0": ("split", "completed"),
                          "/do/0/fork/0": ("one", "completed"),
                          "/do/0/fork/1": ("two", "completed"),
                          "/do/0/each/0/1": ("double", "completed"),
                          "/do/0/each/1/1": ("double", "completed")})
        self.assertNotIn("then", steps["/do/0"])  # it has no `then`: the outputs went on
        self.assertEqual(steps["/do/0/each/1/1"]["output"], {"n": 4})

    def test_a_wait_waiting_then_cancelled(self):
        status, _, body = self.d.call("POST", f"{NS}/workflows/nap:invoke?mode=async", "{}")
        self.assertEqual(status, 202, body)
        run_id = json.loads(body)["runId"]
        wait_until(lambda: any(s["path"] == "/do/1" for s in self.steps(run_id)), 30)
        sleep = next(s for s in self.steps(run_id) if s["path"] == "/do/1")
        self.assertEqual(sleep["phase"], "running")
        self.assertEqual(sleep["kind"], "wait")
        self.assertNotIn("finishedAt", sleep)
        self.assertGreater(sleep["until"], sleep["startedAt"])

        status, _, body = self.d.call("POST", f"{NS}/runs/{run_id}:cancel")
        self.assertEqual(status, 200, body)
        steps = self.steps(run_id)
        self.assertEqual([(s["path"], s["phase"]) for s in steps],
                         [("/do/0", "completed"), ("/do/1", "cancelled")])
        self.assertEqual(steps[1]["error"]["title"], "Cancelled")

    def test_a_call_in_its_retry_backoff_then_cancelled(self):
        # Its last attempt faulted, but a retry follows: the step is under way, not faulted.
        status, _, body = self.d.call("POST", f"{NS}/workflows/backoff:invoke?mode=async", "{}")
        self.assertEqual(status, 202, body)
        run_id = json.loads(body)["runId"]
        wait_until(lambda: any(s["path"] == "/do/0" for s in self.steps(run_id)), 30)
        reach = self.steps(run_id)[0]
        self.assertEqual(reach["phase"], "running")
        self.assertEqual(reach["attempts"], 1)
        self.assertNotIn("finishedAt", reach)
        self.assertGreater(reach["retryAt"], reach["startedAt"])
        code, out, err = self.cli("runs", "get", run_id)
        self.assertEqual(code, 0, err)
        row = table(out, ["STEP"])[0]
        self.assertEqual(row["PHASE"], "running")
        self.assertIn("retry at " + reach["retryAt"], row["DETAIL"])
        waiting = reach

        status, _, body = self.d.call("POST", f"{NS}/runs/{run_id}:cancel")
        self.assertEqual(status, 200, body)
        status, run = self.d.json("GET", f"{NS}/runs/{run_id}")
        reach = run["steps"][0]
        self.assertEqual(reach["phase"], "cancelled")
        # Ended by the cancel, not at the attempt's end: the retry it cut short is recorded as an
        # attempt that was not sent.
        self.assertGreater(reach["finishedAt"], run["attempts"][0]["finishedAt"])
        self.assertLessEqual(reach["finishedAt"], run["finishedAt"])
        self.assertNotIn("retryAt", reach)
        self.assertEqual(reach["attempts"], 2)
        self.assertIn("retryAt", run["attempts"][0]["error"])
        not_sent = run["attempts"][1]
        self.assertEqual(not_sent["phase"], "cancelled")
        self.assertEqual(not_sent["error"]["detail"], "not sent: the run was cancelled during the backoff")
        # What the API answers is what its contract (docs/openapi.json) describes.
        with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "openapi.json")) as f:
            schemas = json.load(f)["components"]["schemas"]
        allowed = set(schemas["RunStep"]["properties"])
        for step in [waiting] + run["steps"] + self.steps(self.invoke("tour")[1]):
            self.assertLessEqual(set(step), allowed, step)

    def test_the_history_outlives_a_kill_and_a_resume(self):
        status, _, body = self.d.call("POST", f"{NS}/workflows/nap:invoke?mode=async", "{}")
        run_id = json.loads(body)["runId"]
        wait_until(lambda: any(s["path"] == "/do/1" for s in self.steps(run_id)), 30)
        before = self.steps(run_id)
        self.d.stop(signal.SIGKILL)
        self.d.start()
        after = self.steps(run_id)
        self.assertEqual(after, before)  # the resumed wait keeps its start and deadline


if __name__ == "__main__":
    unittest.main()
