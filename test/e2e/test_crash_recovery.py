"""Durable runs survive `kill -9`: a load generator invokes a workflow while the daemon is
SIGKILLed at a random moment and restarted on the same data directory; a sink records every
CloudEvent the runs deliver. Afterwards no accepted invoke is lost, every run completed exactly
once, duplicates are only at-least-once redeliveries (same CloudEvent id) of runs that were in
flight at the kill, and nothing was dead-lettered. Plus one targeted case: a call in flight at
the kill runs again with the same id and its interrupted attempt is marked cancelled."""

import json
import os
import random
import re
import signal
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request
from collections import Counter, defaultdict

sys.path.insert(0, os.path.dirname(__file__))
from daemon import Daemon, alive, wait_until  # noqa: E402
from ledger_sink import LedgerSink  # noqa: E402

NS = "default"
RUNS = 200                 # invokes per scenario
SEEDS = (11, 2024, 777)    # one scenario per seed, each with a fresh data dir
WORKERS = 4                # concurrent invokers
PACE = 0.04                # each invoker pauses up to this many seconds between invokes
LOAD_BUDGET = 45           # seconds the generator may take to get every invoke accepted
DRAIN_BUDGET = 60          # seconds the runs get to finish after the load
STEP_PATHS = {("/step-a", None): "/do/0", ("/step-c", None): "/do/1",
              ("/step-b", "left"): "/do/3/fork/0", ("/step-b", "right"): "/do/3/fork/1"}
TERMINAL = ("completed", "faulted", "cancelled")
RETRY = "{limit: 10, backoff: constant, delay: PT0.1S}"


def ledger_workflow(name, sink):
    return f"""apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata: {{name: {name}}}
spec:
  functions:
    step-a: {{url: "{sink.url('/step-a')}"}}
    step-b: {{url: "{sink.url('/step-b')}"}}
    step-c: {{url: "{sink.url('/step-c')}"}}
  reply: {{uri: "{sink.url('/final')}"}}
  deadLetter: {{uri: "{sink.url('/dead')}"}}
  do:
    - name: first
      call: step-a
      retry: {RETRY}
    - name: second
      call: step-c
      retry: {RETRY}
    - name: pause
      wait: PT0.3S
    - name: both
      fork:
        join: all
        branches:
          - name: left
            input: '${{ {{key: .key, branch: "left"}} }}'
            call: step-b
            retry: {RETRY}
          - name: right
            input: '${{ {{key: .key, branch: "right"}} }}'
            call: step-b
            retry: {RETRY}
    - name: result
      set: {{key: '${{ .[0].key }}', done: true}}
"""


def slow_workflow(name, sink):
    return f"""apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata: {{name: {name}}}
spec:
  functions:
    slow: {{url: "{sink.url('/slow')}"}}
    step-b: {{url: "{sink.url('/step-b')}"}}
  reply: {{uri: "{sink.url('/final')}"}}
  deadLetter: {{uri: "{sink.url('/dead')}"}}
  do:
    - name: slow-call
      call: slow
      retry: {RETRY}
    - name: after
      call: step-b
      retry: {RETRY}
"""


def replyless_workflow(name, sink):
    """Two calls and no `reply`: the commit of the last step also writes the run's end."""
    return f"""apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata: {{name: {name}}}
spec:
  functions:
    step-a: {{url: "{sink.url('/step-a')}"}}
    step-c: {{url: "{sink.url('/step-c')}"}}
  deadLetter: {{uri: "{sink.url('/dead')}"}}
  do:
    - name: first
      call: step-a
      retry: {RETRY}
    - name: last
      call: step-c
      retry: {RETRY}
"""


# --- processes ------------------------------------------------------------------------------

def children_of(pid):
    """Pids of the live processes whose parent is `pid` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            out.append(int(entry))
    return out


def kill9(daemon):
    """SIGKILLs the daemon; its helper processes must go with it (they are killed by pid if
    they linger, and returned so that the test can report them)."""
    children = children_of(daemon.proc.pid)
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    daemon.log.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(p) for p in children):
        time.sleep(0.02)
    leftovers = [p for p in children if alive(p)]
    for p in leftovers:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    return leftovers


# --- HTTP -----------------------------------------------------------------------------------

class Client:
    def __init__(self, daemon):
        self.base = daemon.base
        self.token = daemon.token

    def request(self, method, path, body=None, timeout=10):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def json(self, method, path, body=None):
        status, text = self.request(method, path, body)
        return status, (json.loads(text) if text.strip().startswith(("{", "[")) else text)

    def runs(self, workflow):
        """Every run of the workflow, following metadata.continue."""
        items, token = [], None
        for _ in range(100):
            path = f"/api/v1/namespaces/{NS}/runs?workflow={workflow}&limit=1000"
            if token:
                path += "&continue=" + token
            status, page = self.json("GET", path)
            if status != 200:
                raise AssertionError(f"listing runs answered {status}: {page}")
            items.extend(page["items"])
            token = page["metadata"].get("continue")
            if not token:
                return items
        raise AssertionError("runs list did not end after 100 pages")

    def metrics(self):
        status, text = self.request("GET", "/metrics")
        if status != 200:
            raise AssertionError(f"/metrics answered {status}")
        values = {}
        self.helps = {}  # name -> HELP text
        for line in text.splitlines():
            if line.startswith("# HELP "):
                _, _, name, rest = line.split(" ", 3)
                self.helps[name] = rest
            elif line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def help(self, name):
        return self.helps.get(name, "")


def output_of(daemon):
    try:
        return daemon.output()
    except OSError:
        return "(no output)"


# --- the load generator ---------------------------------------------------------------------

class LoadGenerator:
    """Sends one async invoke per key from WORKERS threads; retries refused and interrupted
    requests until a 202 comes back (bounded). A request whose answer was lost after it was
    sent may have started a run: its key is recorded as uncertain."""

    def __init__(self, base, token, workflow, keys, budget, seed):
        self.url = f"{base}/api/v1/namespaces/{NS}/workflows/{workflow}:invoke?mode=async"
        self.token = token
        self.keys = list(keys)
        self.deadline = time.monotonic() + budget
        self.lock = threading.Lock()
        self.accepted = {}            # key -> (run id, monotonic time of the 202)
        self.uncertain = Counter()    # key -> requests whose answer was lost
        self.refused = 0              # requests that never reached a live daemon
        self.errors = []              # unexpected answers, keys given up on
        self.next_key = 0
        self.threads = [threading.Thread(target=self._work, args=(random.Random(seed * 100 + i),),
                                         daemon=True) for i in range(WORKERS)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def join(self):
        for t in self.threads:
            t.join(max(0.0, self.deadline - time.monotonic()) + 15)
        return not any(t.is_alive() for t in self.threads)

    def accepted_count(self):
        with self.lock:
            return len(self.accepted)

    def snapshot(self):
        with self.lock:
            return dict(self.accepted), Counter(self.uncertain)

    def _take(self):
        with self.lock:
            if self.next_key >= len(self.keys):
                return None
            key = self.keys[self.next_key]
            self.next_key += 1
            return key

    def _work(self, rnd):
        while (key := self._take()) is not None:
            self._send(key)
            time.sleep(rnd.uniform(0, PACE))  # spreads the load over about a second

    def _send(self, key):
        body = json.dumps({"key": key}).encode()
        for _ in range(2000):
            if time.monotonic() > self.deadline:
                break
            req = urllib.request.Request(self.url, data=body, method="POST")
            req.add_header("Authorization", "Bearer " + self.token)
            req.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    status, text = r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                status, text = e.code, e.read().decode(errors="replace")
            except urllib.error.URLError as e:
                if isinstance(e.reason, ConnectionRefusedError):
                    with self.lock:
                        self.refused += 1
                else:  # sent, answer lost: the run may or may not exist
                    with self.lock:
                        self.uncertain[key] += 1
                time.sleep(0.02)
                continue
            except OSError:  # reading the answer failed
                with self.lock:
                    self.uncertain[key] += 1
                time.sleep(0.02)
                continue
            if status == 202:
                run_id = json.loads(text)["runId"]
                with self.lock:
                    self.accepted[key] = (run_id, time.monotonic())
                return
            if status == 503:  # starting or shutting down: no run was started
                time.sleep(0.05)
                continue
            with self.lock:
                self.errors.append(f"key {key}: invoke answered {status}: {text[:300]}")
            return
        with self.lock:
            self.errors.append(f"key {key}: no 202 within the load budget")


# --- the tests ------------------------------------------------------------------------------

class CrashRecoveryTest(unittest.TestCase):
    def test_ledger_survives_kill_9_under_load(self):
        for seed in SEEDS:
            with self.subTest(seed=seed):
                self.scenario(seed)

    def scenario(self, seed):
        rnd = random.Random(seed)
        kill_after = rnd.randint(20, RUNS - 40)      # accepted invokes before the kill...
        kill_delay = rnd.uniform(0.0, 0.2)           # ...plus this many seconds
        downtime = rnd.uniform(0.0, 0.5)             # seconds the daemon stays dead
        name = f"ledger-{seed}"
        sink = LedgerSink().start()
        d = Daemon()
        gen = None
        try:
            d.start()
            status, _, body = d.call("POST", f"/api/v1/namespaces/{NS}/workflows",
                                     ledger_workflow(name, sink), content_type="application/yaml")
            self.assertEqual(status, 201, body)

            gen = LoadGenerator(d.base, d.token, name, range(RUNS), LOAD_BUDGET, seed).start()
            reached = wait_until(lambda: gen.accepted_count() >= kill_after, LOAD_BUDGET, 0.002)
            self.assertTrue(reached, f"only {gen.accepted_count()} invokes accepted")
            time.sleep(kill_delay)
            kill_at = time.monotonic()
            leftovers = kill9(d)
            accepted_at_kill, uncertain_at_kill = gen.snapshot()
            finals_at_kill = {x.data["key"] for x in sink.deliveries("/final") if x.at < kill_at}
            log_before = d.output()
            time.sleep(downtime)
            d.start()
            resumed = set(re.findall(r'msg="Resumed run" run=([0-9a-f-]+)', d.output()))

            self.assertTrue(gen.join(), "the load generator did not stop")
            accepted, uncertain = gen.snapshot()
            self.assertEqual(gen.errors, [])
            self.assertEqual(len(accepted), RUNS, "every invoke is eventually accepted")

            client = Client(d)

            def all_terminal():
                runs = client.runs(name)
                return runs if all(r["phase"] in TERMINAL for r in runs) else None

            runs = wait_until(all_terminal, DRAIN_BUDGET, 0.2)
            if runs is None:
                pending = [r for r in client.runs(name) if r["phase"] not in TERMINAL]
                self.fail(f"{len(pending)} runs not terminal after {DRAIN_BUDGET}s: {pending[:5]}")
            by_id = {r["id"]: r for r in runs}

            # Runs without an accepted invoke were started by a request whose answer was lost.
            key_of_run = {run_id: key for key, (run_id, _) in accepted.items()}
            orphans = [i for i in by_id if i not in key_of_run]
            for run_id in orphans:
                status, detail = client.json("GET", f"/api/v1/namespaces/{NS}/runs/{run_id}")
                self.assertEqual(status, 200, detail)
                key = detail["input"]["data"]["key"]
                self.assertIn(key, uncertain, f"run {run_id} of key {key}: no answer was lost")
                key_of_run[run_id] = key
            runs_of_key = defaultdict(list)
            for run_id, key in key_of_run.items():
                runs_of_key[key].append(run_id)

            # Every accepted key: exactly one run (more only after a lost answer), completed.
            for key, (run_id, _) in accepted.items():
                self.assertIn(run_id, by_id, f"key {key}: accepted run {run_id} is missing")
                self.assertEqual(by_id[run_id]["phase"], "completed", f"key {key}: {by_id[run_id]}")
                self.assertLessEqual(len(runs_of_key[key]), 1 + uncertain[key],
                                     f"key {key} has runs {runs_of_key[key]}")
            phases = Counter(r["phase"] for r in runs)
            self.assertEqual(sum(phases[p] for p in TERMINAL), len(runs))
            self.assertEqual(phases["completed"], len(runs), dict(phases))

            # The sink: every key's final event arrived; steps carried `<run id>:<path>` ids.
            sink.wait_for(
                lambda ledger: {x.data["key"] for x in ledger if x.path == "/final"}
                >= set(accepted), 10)
            finals = sink.deliveries("/final")
            final_keys = Counter(x.data["key"] for x in finals)
            lost = sorted(set(accepted) - set(final_keys))
            self.assertEqual(lost, [], "final events lost")
            per_run = Counter()       # deliveries per (run id, step or /final)
            first_seen = defaultdict(dict)
            for x in sink.deliveries():
                if x.path == "/dead":
                    continue
                self.assertIsInstance(x.data, dict, x)
                key = x.data.get("key")
                self.assertIn(x.run_id, runs_of_key.get(key, []),
                              f"{x}: its id names no run of key {key}")
                if x.path == "/final":
                    self.assertEqual(x.data, {"key": key, "done": True}, x)
                    per_run[(x.run_id, "/final")] += 1
                    continue
                expected = STEP_PATHS.get((x.path, x.data.get("branch")))
                self.assertIsNotNone(expected, f"unexpected delivery {x}")
                # The id is `<run id>:<step path>`: a redelivery carries the same id.
                self.assertEqual(x.ce_id, f"{x.run_id}:{expected}", x)
                per_run[(x.run_id, expected)] += 1
                first_seen[x.run_id].setdefault(expected, x.at)
            for run_id in by_id:
                for step in ("/do/0", "/do/1", "/do/3/fork/0", "/do/3/fork/1", "/final"):
                    self.assertGreaterEqual(per_run[(run_id, step)], 1, f"{run_id} missed {step}")
                # The durable wait held, also across the restart.
                waited = first_seen[run_id]["/do/3/fork/0"] - first_seen[run_id]["/do/1"]
                self.assertGreaterEqual(waited, 0.28, f"run {run_id} waited only {waited:.3f}s")
            self.assertEqual(sink.deliveries("/dead"), [], "nothing is dead-lettered")

            # Every call's attempts, those begun in the commit of the step before included (the
            # first in the run's insert): none left running, numbered 1, 2, ... in order, every
            # one but the last interrupted (cancelled by the restart) or failed, the last one
            # completed.
            for run_id in by_id:
                status, detail = client.json("GET", f"/api/v1/namespaces/{NS}/runs/{run_id}")
                self.assertEqual(status, 200, detail)
                per_path = defaultdict(list)
                for a in detail["attempts"]:
                    per_path[a["path"]].append(a)
                self.assertEqual(set(per_path), set(STEP_PATHS.values()), detail["attempts"])
                for attempts in per_path.values():
                    self.assertEqual([a["attempt"] for a in attempts],
                                     list(range(1, len(attempts) + 1)), attempts)
                    self.assertEqual(attempts[-1]["phase"], "completed", attempts)
                    for a in attempts[:-1]:
                        self.assertIn(a["phase"], ("cancelled", "faulted"), attempts)

            duplicates = {k: n - 1 for k, n in per_run.items() if n > 1}
            dup_runs = {run_id for run_id, _ in duplicates}
            dup_total = sum(duplicates.values())
            dup_final_keys = sum(n - 1 for n in final_keys.values() if n > 1)
            started_at_kill = set(accepted_at_kill) | set(uncertain_at_kill)
            in_flight = len(started_at_kill - finals_at_kill)

            # Duplicates only come from runs that were in flight at the kill (the restarted
            # daemon resumed them), at most one per call that can be in flight at once (2, the
            # fork) per run.
            self.assertLessEqual(dup_runs, resumed, f"duplicates in runs not resumed: {duplicates}")
            self.assertLessEqual(len(dup_runs), len(resumed))
            self.assertLessEqual(dup_total, 2 * len(resumed), duplicates)
            self.assertLessEqual(len(resumed), len(by_id))
            # ...and by the sink's ledger: accepted (or maybe started) before the kill, final
            # event not yet seen; a run whose final event came just before the kill but whose
            # completion was not yet written is in flight too (it resumes and replies again).
            final_then_resumed = {key_of_run[r] for r in resumed
                                  if key_of_run.get(r) in finals_at_kill}
            self.assertLessEqual(len(dup_runs), in_flight + len(final_then_resumed), duplicates)
            # A run in flight at the kill by the sink's ledger was resumed, unless it had
            # finished and its final event was still on its way to the sink.
            for key in started_at_kill - finals_at_kill:
                if key in accepted_at_kill and accepted_at_kill[key][0] not in resumed:
                    late = [x.at - kill_at for x in finals if x.data["key"] == key]
                    self.assertTrue(late and min(late) < 1.0,
                                    f"key {key} was in flight at the kill but not resumed")

            summary = {"seed": seed, "killAfterAccepted": len(accepted_at_kill),
                       "uncertain": sum(uncertain.values()), "runs": len(by_id),
                       "orphanRuns": len(orphans), "inFlightAtKill": in_flight,
                       "finalThenResumed": len(final_then_resumed),
                       "resumed": len(resumed), "lost": len(lost), "duplicates": dup_total,
                       "runsWithDuplicates": len(dup_runs), "duplicateFinalsPerKey": dup_final_keys,
                       "refusedWhileDown": gen.refused, "downtime": round(downtime, 2)}
            print("\n  kill -9 ledger: " + ", ".join(f"{k}={v}" for k, v in summary.items()),
                  flush=True)

            metrics = client.metrics()
            self.assertEqual(metrics.get("knflow_runs_in_flight"), 0.0)
            self.assertEqual(metrics.get('knflow_runs_finished_total{phase="faulted"}'), 0.0)
            self.assertEqual(metrics.get('knflow_runs_finished_total{phase="cancelled"}'), 0.0)
            # docs/api.md: after a drain, started equals the sum of finished; both count what
            # this process executed, resumed runs included.
            finished = sum(metrics.get(f'knflow_runs_finished_total{{phase="{p}"}}', 0)
                           for p in TERMINAL)
            self.assertEqual(metrics.get("knflow_runs_started_total"), finished)
            self.assertGreaterEqual(finished, len(resumed))
            self.assertLessEqual(finished, len(by_id))
            self.assertEqual(leftovers, [], "helper processes outlived the killed daemon")
            self.assertEqual(d.stop(), 0, d.output())
            return summary
        except BaseException:
            sys.stderr.write(f"\n--- daemon output (seed {seed}) ---\n{output_of(d)[-6000:]}\n")
            if "log_before" in locals():
                sys.stderr.write(f"--- before the kill ---\n{log_before[-3000:]}\n")
            raise
        finally:
            if gen is not None:
                gen.deadline = 0  # stop retrying
                gen.join()
            d.close()
            sink.stop()

    def test_runs_ended_by_their_last_step_survive_kill_9(self):
        """Without `reply` a run's end is written in the commit of its last step: after a kill
        -9 under load every accepted run is completed exactly once, with its output, and its
        attempts are consistent."""
        sink = LedgerSink().start()
        d = Daemon()
        gen = None
        try:
            d.start()
            status, _, body = d.call("POST", f"/api/v1/namespaces/{NS}/workflows",
                                     replyless_workflow("replyless", sink),
                                     content_type="application/yaml")
            self.assertEqual(status, 201, body)
            gen = LoadGenerator(d.base, d.token, "replyless", range(RUNS), LOAD_BUDGET, 5).start()
            self.assertTrue(wait_until(lambda: gen.accepted_count() >= RUNS // 2, LOAD_BUDGET,
                                       0.002))
            self.assertEqual(kill9(d), [])
            d.start()
            self.assertTrue(gen.join(), "the load generator did not stop")
            accepted, uncertain = gen.snapshot()
            self.assertEqual(gen.errors, [])
            self.assertEqual(len(accepted), RUNS)
            client = Client(d)

            def all_terminal():
                runs = client.runs("replyless")
                return runs if all(r["phase"] in TERMINAL for r in runs) else None

            runs = wait_until(all_terminal, DRAIN_BUDGET, 0.2)
            self.assertIsNotNone(runs, "runs not terminal")
            by_id = {r["id"]: r for r in runs}
            self.assertLessEqual(len(by_id), RUNS + sum(uncertain.values()))
            for key, (run_id, _) in accepted.items():
                status, run = client.json("GET", f"/api/v1/namespaces/{NS}/runs/{run_id}")
                self.assertEqual(status, 200, run)
                self.assertEqual(run["phase"], "completed", run)
                self.assertEqual(run["output"]["data"], {"key": key}, run)
                per_path = defaultdict(list)
                for a in run["attempts"]:
                    per_path[a["path"]].append(a)
                self.assertEqual(set(per_path), {"/do/0", "/do/1"}, run["attempts"])
                for attempts in per_path.values():
                    self.assertEqual([a["attempt"] for a in attempts],
                                     list(range(1, len(attempts) + 1)), attempts)
                    self.assertEqual(attempts[-1]["phase"], "completed", attempts)
                    for a in attempts[:-1]:
                        self.assertIn(a["phase"], ("cancelled", "faulted"), attempts)
            delivered = Counter(x.ce_id for x in sink.deliveries())
            for run_id in by_id:
                for path in ("/do/0", "/do/1"):
                    self.assertGreaterEqual(delivered[f"{run_id}:{path}"], 1, run_id)
            self.assertEqual(sink.deliveries("/dead"), [])
            self.assertEqual(client.metrics().get("knflow_runs_in_flight"), 0.0)
            self.assertEqual(d.stop(), 0, d.output())
        except BaseException:
            sys.stderr.write(f"\n--- daemon output ---\n{output_of(d)[-6000:]}\n")
            raise
        finally:
            if gen is not None:
                gen.deadline = 0
                gen.join()
            d.close()
            sink.stop()

    def test_call_in_flight_at_kill_runs_again_with_the_same_id(self):
        sink = LedgerSink(delays={"/slow": 2.0}).start()
        d = Daemon()
        try:
            d.start()
            status, _, body = d.call("POST", f"/api/v1/namespaces/{NS}/workflows",
                                     slow_workflow("slow", sink), content_type="application/yaml")
            self.assertEqual(status, 201, body)
            client = Client(d)
            status, started = client.json(
                "POST", f"/api/v1/namespaces/{NS}/workflows/slow:invoke?mode=async", {"key": "s"})
            self.assertEqual(status, 202, started)
            run_id = started["runId"]
            self.assertTrue(sink.wait_for(lambda l: any(x.path == "/slow" for x in l), 10))
            time.sleep(0.2)  # the call is in flight: the sink answers after 2 s
            self.assertEqual(kill9(d), [])
            self.assertEqual(len(sink.deliveries("/slow")), 1)
            d.start()
            client = Client(d)

            def finished():
                status, run = client.json("GET", f"/api/v1/namespaces/{NS}/runs/{run_id}")
                return run if status == 200 and run["phase"] in TERMINAL else None

            run = wait_until(finished, 30, 0.1)
            self.assertIsNotNone(run, "the resumed run did not finish")
            self.assertEqual(run["phase"], "completed", run)
            self.assertEqual(run["output"]["data"], {"key": "s"})

            slow = sink.deliveries("/slow")
            self.assertEqual(len(slow), 2, slow)
            self.assertEqual({x.ce_id for x in slow}, {f"{run_id}:/do/0"})
            self.assertEqual([x.ce_id for x in sink.deliveries("/step-b")], [f"{run_id}:/do/1"])
            self.assertTrue(sink.wait_for(lambda l: any(x.path == "/final" for x in l), 5))
            self.assertEqual(len(sink.deliveries("/final")), 1)
            self.assertEqual(sink.deliveries("/dead"), [])

            first = [a for a in run["attempts"] if a["path"] == "/do/0"]
            self.assertEqual([(a["attempt"], a["phase"]) for a in first],
                             [(1, "cancelled"), (2, "completed")], run["attempts"])
            self.assertEqual(first[0]["step"], "slow-call")
            self.assertEqual(first[0]["error"]["title"], "Interrupted", first[0])
            self.assertEqual(first[1]["httpStatus"], 200)
            second = [(a["attempt"], a["phase"]) for a in run["attempts"] if a["path"] == "/do/1"]
            self.assertEqual(second, [(1, "completed")])

            # The restarted process resumed the run: docs/api.md counts it as started here.
            metrics = client.metrics()
            self.assertEqual(metrics.get("knflow_runs_in_flight"), 0.0)
            self.assertEqual(metrics.get("knflow_runs_started_total"), 1.0)
            self.assertEqual(metrics.get('knflow_runs_finished_total{phase="completed"}'), 1.0)
            self.assertNotIn("resumed runs not counted", client.help("knflow_runs_started_total"),
                             "the HELP text of knflow_runs_started_total contradicts the value "
                             "(and docs/api.md): a resumed run is counted as started")
            self.assertEqual(d.stop(), 0, d.output())
        except BaseException:
            sys.stderr.write(f"\n--- daemon output ---\n{output_of(d)[-6000:]}\n")
            raise
        finally:
            d.close()
            sink.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
