#!/usr/bin/env python3
"""Cluster controller benchmark (driver for bench/cluster_run.sh; Python 3 standard library only).

In one run, against a real kube-apiserver + etcd (test/kubeenv's KubeEnv, no Knative controllers)
and the release `knflow controller` (no leader election, default client rate limit QPS 20 /
burst 30, default 2 workers, resync every 10 s):

1. throughput: N = 100, then N = 1,000 Workflows (examples/cluster-sequence.yaml, one name per
   index, each batch in its own namespace) are created at once by a threaded keep-alive client;
   time until every one has all its Knative objects and status.observedGeneration ==
   metadata.generation (seen by LIST calls), against N × (writes per Workflow, counted by the
   controller's /metrics) ÷ QPS;
2. a 60 s no-op window: the controller's writes (its /metrics), the apiserver's write requests
   (its /metrics) and the resourceVersion of every Workflow and owned object; target 0 writes;
3. memory: controller RSS per cached Workflow against the Workflow's JSON size (and with the
   owned objects its informers also cache);
4. the published Argo Workflows controller figure (default settings) for comparison.

Everything listens on 127.0.0.1, every duration is bounded, every process started is stopped on
exit. Benchmarks are not tests: the run fails only when the measurement itself is broken.
It follows the conventions of bench/engine_bench.py (process handling, doc layout) but does not
depend on it.
"""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import copy
import datetime
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from benchlib import BenchError, CLK_TCK, cpu_busy_ticks, die_with_parent, git_info, int_list, machine, mib, proc_status, verdict  # noqa: E402
sys.path.insert(0, str(ROOT / "test" / "kubeenv"))
from kubeenv import KubeEnv  # noqa: E402

SECTION = "## Cluster controller"
BEGIN = "<!-- cluster-bench:begin -->"
END = "<!-- cluster-bench:end -->"
NOTES_BEGIN = "<!-- cluster-analysis:begin -->"
NOTES_END = "<!-- cluster-analysis:end -->"

WORKFLOWS = ("knflow.dev/v1alpha1", "workflows")
# (apiVersion, plural) of every kind the controller owns (render::rendered_kinds()).
KINDS = {
    "Service": ("serving.knative.dev/v1", "services"),
    "Sequence": ("flows.knative.dev/v1", "sequences"),
    "Parallel": ("flows.knative.dev/v1", "parallels"),
    "Trigger": ("eventing.knative.dev/v1", "triggers"),
}
OUR_GROUPS = {"knflow.dev", "serving.knative.dev", "flows.knative.dev", "eventing.knative.dev"}
WRITE_VERBS = {"APPLY", "PATCH", "PUT", "POST", "CREATE", "UPDATE", "DELETE", "DELETECOLLECTION"}
MANAGED_BY = "app.kubernetes.io/managed-by=knflow"
WORKFLOW_LABEL = "knflow.dev/workflow"

# The published Argo Workflows figure (see the section's text).
ARGO = {
    "per_min": 270,
    "queued_n": 5000, "queued_min": 17,
    "url": "https://cnoe.io/blog/argo-workflow-scalability",
    "docs_url": "https://argo-workflows.readthedocs.io/en/latest/scaling/",
}


def log(msg: str) -> None:
    print(f"[cluster-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Processes and /proc


class Children:
    """Every process this run starts (PIDs also appended to a file for cluster_run.sh)."""

    def __init__(self, pid_file: Path):
        self.pid_file = pid_file
        self.procs: list[subprocess.Popen] = []

    def record(self, pid: int) -> None:
        with open(self.pid_file, "a") as f:
            f.write(f"{pid}\n")

    def spawn(self, argv: list[str], log_path: Path) -> subprocess.Popen:
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        self.procs.append(proc)
        self.record(proc.pid)
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 20.0) -> int:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc, timeout=5.0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def child_pids_by_name(parent: int) -> dict[str, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1:stat.rfind(")")]
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            out[comm] = int(entry)
    return out


# ---------------------------------------------------------------------------------------------
# The apiserver: keep-alive HTTPS clients with the admin token

class Api:
    """One keep-alive HTTPS connection to the apiserver (one per thread)."""

    def __init__(self, kube: KubeEnv, timeout: float = 120):
        u = urllib.parse.urlsplit(kube.server)
        self.host, self.port = u.hostname, u.port
        self.ctx = ssl.create_default_context(cafile=kube.ca_file)
        self.token = kube.token
        self.timeout = timeout
        self.conn: http.client.HTTPSConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json", accept: str = "application/json"
                ) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx,
                                                        timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def get_json(self, path: str) -> dict:
        status, body = self.request("GET", path)
        if status != 200:
            raise BenchError(f"GET {path}: {status} {body[:300]!r}")
        return json.loads(body)

    def close(self) -> None:
        if self.conn:
            self.conn.close()
            self.conn = None


def collection(api_version: str, plural: str, ns: str) -> str:
    prefix = "/api/" if "/" not in api_version else "/apis/"
    return f"{prefix}{api_version}/namespaces/{ns}/{plural}"


def list_all(api: Api, api_version: str, plural: str, ns: str, selector: str = "") -> tuple[list, int]:
    """Every item of a collection (pages of 2,000) and the bytes the apiserver sent."""
    items, cont, total = [], "", 0
    while True:
        q = {"limit": "2000"}
        if cont:
            q["continue"] = cont
        if selector:
            q["labelSelector"] = selector
        status, body = api.request("GET", collection(api_version, plural, ns) + "?" +
                                   urllib.parse.urlencode(q))
        if status != 200:
            raise BenchError(f"LIST {plural} in {ns}: {status} {body[:300]!r}")
        total += len(body)
        doc = json.loads(body)
        items += doc.get("items") or []
        cont = (doc.get("metadata") or {}).get("continue") or ""
        if not cont:
            return items, total


def json_size(obj: dict) -> int:
    """Bytes of an object as the apiserver serialises it (compact JSON, UTF-8)."""
    return len(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())


def apiserver_metrics(api: Api) -> dict:
    """apiserver_request_total and the request duration sums for the kinds we use, by
    (verb, resource, subresource)."""
    status, body = api.request("GET", "/metrics", accept="text/plain")
    if status != 200:
        raise BenchError(f"GET /metrics of the apiserver: {status}")
    out: dict = {}
    pat = re.compile(r'^(apiserver_request_total|apiserver_request_duration_seconds_sum|'
                     r'apiserver_request_duration_seconds_count)\{(.*)\} (\S+)$')
    for line in body.decode().splitlines():
        m = pat.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if labels.get("group") not in OUR_GROUPS:
            continue
        key = f"{m.group(1)}|{labels.get('verb')}|{labels.get('resource')}|{labels.get('subresource', '')}"
        out[key] = out.get(key, 0.0) + float(m.group(3))
    return out


def metric_delta(a: dict, b: dict) -> dict:
    return {k: b.get(k, 0.0) - a.get(k, 0.0) for k in set(a) | set(b)
            if abs(b.get(k, 0.0) - a.get(k, 0.0)) > 1e-12}


def apiserver_summary(delta: dict) -> dict:
    """Requests and mean latency by verb/resource/subresource, from a metric_delta."""
    rows: dict = {}
    for key, v in delta.items():
        name, verb, res, sub = key.split("|")
        r = rows.setdefault(f"{verb} {res}{'/' + sub if sub else ''}",
                            {"verb": verb, "requests": 0.0, "sum": 0.0, "count": 0.0})
        if name == "apiserver_request_total":
            r["requests"] += v
        elif name.endswith("_sum"):
            r["sum"] += v
        else:
            r["count"] += v
    for r in rows.values():
        r["mean_ms"] = r["sum"] / r["count"] * 1000 if r["count"] else None
    return dict(sorted(rows.items()))


def writes_of(summary: dict) -> int:
    return int(round(sum(r["requests"] for r in summary.values() if r["verb"] in WRITE_VERBS)))


# ---------------------------------------------------------------------------------------------
# The controller

class Controller:
    """`knflow controller` on the KubeEnv, its /metrics and /healthz."""

    def __init__(self, children: Children, argv: list[str], log_path: Path):
        self.children, self.argv, self.log_path = children, argv, log_path
        self.proc = children.spawn(argv, log_path)
        deadline = time.monotonic() + 60
        while True:
            m = re.search(r"metrics=127\.0\.0\.1:(\d+)", self.log())
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                raise BenchError(f"knflow controller exited with {self.proc.returncode}; "
                                 f"see {log_path}")
            if time.monotonic() > deadline:
                raise BenchError(f"knflow controller: no metrics address after 60 s; see {log_path}")
            time.sleep(0.1)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> str:
        for attempt in range(2):
            try:
                self.conn.request("GET", path)
                r = self.conn.getresponse()
                return r.read().decode()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def health(self) -> dict:
        return json.loads(self.get("/healthz"))

    def metrics(self) -> dict[str, float]:
        """Every knflow_controller_* sample as {'name{labels}': value}."""
        out = {}
        for line in self.get("/metrics").splitlines():
            if line.startswith("knflow_controller_"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def rss(self) -> dict[str, int]:
        return proc_status(self.proc.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"knflow controller exited with {self.proc.returncode}; "
                             f"see {self.log_path}")

    def stop(self) -> int:
        self.conn.close()
        return self.children.stop(self.proc)


def writes_by(metrics: dict[str, float]) -> dict[str, float]:
    """knflow_controller_writes_total by 'operation/result'."""
    out = {}
    for k, v in metrics.items():
        if k.startswith("knflow_controller_writes_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', k))
            out[f"{labels.get('operation')}/{labels.get('result')}"] = v
    return out


def reconciles_by(metrics: dict[str, float]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if k.startswith("knflow_controller_reconciles_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', k))
            out[labels.get("result", "?")] = v
    return out


def reconcile_time(metrics: dict[str, float]) -> tuple[float, float]:
    """(sum of seconds, count) of knflow_controller_reconcile_duration_seconds."""
    s = sum(v for k, v in metrics.items()
            if k.startswith("knflow_controller_reconcile_duration_seconds_sum"))
    c = sum(v for k, v in metrics.items()
            if k.startswith("knflow_controller_reconcile_duration_seconds_count"))
    return s, c


def dict_delta(a: dict, b: dict) -> dict:
    return {k: b.get(k, 0) - a.get(k, 0) for k in sorted(set(a) | set(b))
            if b.get(k, 0) - a.get(k, 0)}


# ---------------------------------------------------------------------------------------------
# Workflows

def workflow_template(kube: KubeEnv, path: Path) -> dict:
    """The example as JSON (kubectl reads the YAML; no server change: client dry run)."""
    out = kube.kubectl("create", "--dry-run=client", "-o", "json", "-f", str(path)).stdout
    wf = json.loads(out)
    for k in ("creationTimestamp", "resourceVersion", "uid", "generation"):
        wf.get("metadata", {}).pop(k, None)
    wf.pop("status", None)
    return wf


def rendered_objects(knflow: str, path: Path, name: str) -> list[tuple[str, str]]:
    """(kind, name suffix after the workflow's name) of what `knflow render` prints."""
    r = subprocess.run([knflow, "render", "-f", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"knflow render -f {path}: {r.stderr.strip()}")
    out = []
    for doc in re.split(r"^---\s*$", r.stdout, flags=re.M):
        kind = re.search(r"^kind: (\S+)", doc, re.M)
        meta = re.search(r"^metadata:\n(?:  .*\n)*?  name: (\S+)", doc, re.M)
        if kind and meta:
            obj_name = meta.group(1).strip("'\"")
            if not obj_name.startswith(name):
                raise BenchError(f"rendered {kind.group(1)} {obj_name} does not start with {name}")
            out.append((kind.group(1), obj_name[len(name):]))
    if not out:
        raise BenchError(f"knflow render -f {path} printed no object")
    return out


def workflow_name(base: str, i: int) -> str:
    return f"{base}-{i:04d}"


def create_workflows(kube: KubeEnv, template: dict, ns: str, n: int, threads: int) -> dict:
    """Creates n Workflows named <base>-NNNN in ns, `threads` keep-alive clients at once."""
    base = template["metadata"]["name"]
    bodies = []
    for i in range(n):
        wf = copy.deepcopy(template)
        wf["metadata"]["name"] = workflow_name(base, i)
        wf["metadata"]["namespace"] = ns
        bodies.append(json.dumps(wf, separators=(",", ":")).encode())
    path = collection(*WORKFLOWS, ns)
    errors: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()
    nxt = iter(range(n))

    def run() -> None:
        api = Api(kube)
        try:
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                t = time.monotonic()
                status, body = api.request("POST", path, bodies[i])
                dt = time.monotonic() - t
                with lock:
                    latencies.append(dt)
                    if status != 201:
                        errors.append(f"{status} {body[:200]!r}")
        finally:
            api.close()

    wall0 = time.time()
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(run) for _ in range(threads)]:
            f.result()
    t1 = time.monotonic()
    if errors:
        raise BenchError(f"{len(errors)} creates failed, first: {errors[0]}")
    latencies.sort()
    return {"t0": t0, "t1": t1, "wall0": wall0, "seconds": t1 - t0, "rate": n / (t1 - t0),
            "p50_ms": latencies[len(latencies) // 2] * 1000,
            "max_ms": latencies[-1] * 1000, "bytes_each": len(bodies[0])}


def workflows_converged(items: list) -> int:
    done = 0
    for wf in items:
        st = wf.get("status") or {}
        if st.get("observedGeneration") is not None and \
                st.get("observedGeneration") == wf["metadata"].get("generation"):
            done += 1
    return done


def children_by_workflow(api: Api, ns: str) -> tuple[dict, dict, int]:
    """{workflow: {(kind, name)}}, {(kind, name): object} of every owned object in ns, and the
    bytes the LISTs sent."""
    by_wf: dict = {}
    objs: dict = {}
    total = 0
    for kind, (av, plural) in KINDS.items():
        items, size = list_all(api, av, plural, ns, MANAGED_BY)
        total += size
        for o in items:
            name = o["metadata"]["name"]
            owner = (o["metadata"].get("labels") or {}).get(WORKFLOW_LABEL, "")
            by_wf.setdefault(owner, set()).add((kind, name))
            objs[(kind, name)] = o
    return by_wf, objs, total


def missing_children(by_wf: dict, names: list[str], expected: list[tuple[str, str]]) -> int:
    missing = 0
    for name in names:
        have = by_wf.get(name, set())
        missing += sum(1 for kind, suffix in expected if (kind, name + suffix) not in have)
    return missing


def _log_time(line: str) -> float | None:
    m = re.match(r"ts=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z ", line)
    if not m:
        return None
    t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    return t + (float(m.group(2)) if m.group(2) else 0.0)


def log_writes(text: str, ns: str, wall0: float) -> dict:
    """The controller's own record of its writes in namespace ns (its info lines `Created`,
    `Updated`, `Pruned`, `Updated status`, millisecond timestamps), in seconds since wall0."""
    times, status_times = [], []
    for line in text.splitlines():
        if ' msg="Updated status" ' in line or " msg=\"Updated status\" " in line:
            if f"workflow={ns}/" not in line:
                continue
            t = _log_time(line)
            if t is not None:
                status_times.append(t - wall0)
                times.append(t - wall0)
        elif re.search(r" msg=(Created|Updated|Pruned) ", line) and f"namespace={ns} " in line + " ":
            t = _log_time(line)
            if t is not None:
                times.append(t - wall0)
    times.sort()
    status_times.sort()
    if not times:
        return {}
    out = {"writes": len(times), "first": times[0], "last": times[-1],
           "status_writes": len(status_times),
           "last_status": status_times[-1] if status_times else None,
           "in_first_2s": sum(1 for t in times if t < times[0] + 2.0)}
    if len(times) > 1 and times[-1] > times[0]:
        out["rate"] = (len(times) - 1) / (times[-1] - times[0])
        # the steady part: after the burst's first 2 s
        later = [t for t in times if t >= times[0] + 2.0]
        if len(later) > 1 and later[-1] > later[0]:
            out["steady_rate"] = (len(later) - 1) / (later[-1] - later[0])
    if status_times:
        k = len(status_times)
        out["status_p50"] = status_times[k // 2]
        out["status_p90"] = status_times[min(k - 1, int(k * 0.9))]
    return out


# ---------------------------------------------------------------------------------------------
# Measurements

class Sampler:
    """CPU of the controller, kube-apiserver, etcd, this driver and the rest of the machine."""

    def __init__(self, ctl: Controller, pids: dict[str, int]):
        self.ctl, self.pids = ctl, pids

    def snap(self) -> dict:
        return {"t": time.monotonic(), "busy": cpu_busy_ticks() / CLK_TCK,
                "knflow": self.ctl.cpu(), "apiserver": cpu_seconds(self.pids["kube-apiserver"]),
                "etcd": cpu_seconds(self.pids["etcd"]), "driver": self_cpu()}

    @staticmethod
    def diff(a: dict, b: dict) -> dict:
        d = {k: b[k] - a[k] for k in a}
        d["other_cores"] = max(0.0, (d["busy"] - d["knflow"] - d["apiserver"] - d["etcd"]
                                     - d["driver"]) / d["t"]) if d["t"] > 0 else 0.0
        return d


def controller_snapshot(ctl: Controller) -> dict:
    m = ctl.metrics()
    h = ctl.health()
    return {"writes": writes_by(m), "reconciles": reconciles_by(m), "duration": reconcile_time(m),
            "health": h}


def bench_batch(args, kube: KubeEnv, api: Api, ctl: Controller, sampler: Sampler, template: dict,
                expected: list, n: int) -> dict:
    ns = f"bench-{n}"
    status, body = api.request("POST", "/api/v1/namespaces",
                               json.dumps({"metadata": {"name": ns}}).encode())
    if status != 201:
        raise BenchError(f"creating namespace {ns}: {status} {body[:200]!r}")
    base = template["metadata"]["name"]
    names = [workflow_name(base, i) for i in range(n)]
    time.sleep(args.settle)
    rss_before = ctl.rss()
    c0 = controller_snapshot(ctl)
    a0 = apiserver_metrics(api)
    s0 = sampler.snap()
    log(f"N={n}: creating {n} Workflows in namespace {ns}")
    created = create_workflows(kube, template, ns, n, args.create_threads)
    t0 = created["t0"]
    log(f"N={n}: created in {created['seconds']:.2f} s ({created['rate']:.0f}/s); waiting")
    ideal_guess = n * (len(expected) + 1) / args.qps
    deadline = t0 + args.timeout_factor * ideal_guess + 120
    timeline = []  # (seconds since t0, workflows converged)
    last_list = 0.0
    converged_at = None
    list_seconds = []
    base_status = c0["health"]["statusWrites"]
    last_log = time.monotonic()
    while converged_at is None:
        ctl.check()
        now = time.monotonic()
        if now > deadline:
            raise BenchError(f"N={n}: not converged after {now - t0:.0f} s "
                             f"({timeline[-1][1] if timeline else 0} of {n} done)")
        h = ctl.health()
        status_writes = h["statusWrites"] - base_status
        # Far from done, LIST less often (each LIST of 1,000 Workflows is about 4.5 MB the
        # apiserver encodes and this driver decodes); near the end, every poll interval.
        far = not timeline or timeline[-1][1] < 0.9 * n
        interval = min(args.poll_max, args.poll_interval * max(1.0, n / 200)) if far \
            else args.poll_interval
        if now - last_list >= interval or (status_writes >= n and now - last_list >= 0.2):
            sent = time.monotonic()
            items, _ = list_all(api, *WORKFLOWS, ns)
            answered = time.monotonic()
            list_seconds.append(answered - sent)
            last_list = sent
            done = workflows_converged(items) if len(items) == n else 0
            timeline.append((round(answered - t0, 3), done))
            if done == n:
                by_wf, _, _ = children_by_workflow(api, ns)
                missing = missing_children(by_wf, names, expected)
                if missing == 0:
                    converged_at = answered
                    previous = timeline[-2][0] if len(timeline) > 1 else 0.0
                    resolution = answered - t0 - previous
                else:
                    log(f"N={n}: every status is current but {missing} objects are missing")
            if time.monotonic() - last_log >= 15:
                log(f"N={n}: {done}/{n} converged after {answered - t0:.0f} s "
                    f"(controller: {h['applies']} applies, {h['statusWrites']} status writes)")
                last_log = time.monotonic()
        time.sleep(0.05)
    c1 = controller_snapshot(ctl)
    a1 = apiserver_metrics(api)
    s1 = sampler.snap()
    seconds = converged_at - t0
    log(f"N={n}: converged after {seconds:.2f} s")
    # Late writes: anything the controller writes after convergence, before the next phase.
    time.sleep(args.settle)
    c2 = controller_snapshot(ctl)
    rss_after = ctl.rss()
    from_log = log_writes(ctl.log(), ns, created["wall0"])
    wf_items, wf_bytes = list_all(api, *WORKFLOWS, ns)
    _, objs, child_bytes = children_by_workflow(api, ns)
    writes = dict_delta(c0["writes"], c1["writes"])
    total_writes = sum(writes.values())
    api_summary = apiserver_summary(metric_delta(a0, a1))
    dur_sum = c1["duration"][0] - c0["duration"][0]
    dur_count = c1["duration"][1] - c0["duration"][1]
    wf_sizes = [json_size(o) for o in wf_items]
    child_sizes = [json_size(o) for o in objs.values()]
    no_mf = [json_size({**o, "metadata": {k: v for k, v in o["metadata"].items()
                                          if k != "managedFields"}}) for o in wf_items]
    return {
        "n": n, "namespace": ns, "created": {k: v for k, v in created.items() if k not in ("t0", "t1")},
        "seconds": seconds, "resolution": resolution,
        "from_last_create": converged_at - created["t1"],
        "timeline": timeline, "list_ms_mean": sum(list_seconds) / len(list_seconds) * 1000,
        "log": from_log,
        "polls": len(list_seconds),
        "writes": writes, "total_writes": total_writes, "writes_per_wf": total_writes / n,
        "late_writes": dict_delta(c1["writes"], c2["writes"]),
        "reconciles": dict_delta(c0["reconciles"], c1["reconciles"]),
        "reconcile_mean_ms": dur_sum / dur_count * 1000 if dur_count else None,
        "reconcile_count": dur_count,
        "apiserver": api_summary, "apiserver_writes": writes_of(api_summary),
        "cpu": Sampler.diff(s0, s1),
        "rss_before": rss_before, "rss_after": rss_after,
        "objects": len(objs), "objects_per_wf": len(objs) / n,
        "wf_json_mean": sum(wf_sizes) / n, "wf_json_no_managed_fields_mean": sum(no_mf) / n,
        "child_json_per_wf": sum(child_sizes) / n,
        "list_bytes": wf_bytes + child_bytes,
        # One Workflow and its owned objects as served, for offline analysis (--json only).
        "sample": {"workflow": wf_items[0] if wf_items else None,
                   "children": [o for o in objs.values()
                                if wf_items and (o["metadata"].get("labels") or {}).get(
                                    WORKFLOW_LABEL) == wf_items[0]["metadata"]["name"]]},
    }


def resource_versions(api: Api, namespaces: list[str]) -> dict:
    rv = {}
    for ns in namespaces:
        for wf in list_all(api, *WORKFLOWS, ns)[0]:
            rv[("Workflow", ns, wf["metadata"]["name"])] = wf["metadata"]["resourceVersion"]
        for (kind, name), o in children_by_workflow(api, ns)[1].items():
            rv[(kind, ns, name)] = o["metadata"]["resourceVersion"]
    return rv


def bench_noop(args, api: Api, ctl: Controller, sampler: Sampler, namespaces: list[str],
               workflows: int) -> dict:
    log(f"no-op window: {args.noop_window:g} s, resync every {args.resync:g} s")
    rv0 = resource_versions(api, namespaces)
    c0 = controller_snapshot(ctl)
    a0 = apiserver_metrics(api)
    s0 = sampler.snap()
    t0 = time.monotonic()
    rss_samples = []
    while time.monotonic() - t0 < args.noop_window:
        ctl.check()
        time.sleep(min(5.0, max(0.0, args.noop_window - (time.monotonic() - t0))))
        rss_samples.append(ctl.rss()["VmRSS"])
    c1 = controller_snapshot(ctl)
    a1 = apiserver_metrics(api)
    s1 = sampler.snap()
    rv1 = resource_versions(api, namespaces)
    changed = sorted(f"{k[0]} {k[1]}/{k[2]}" for k in set(rv0) | set(rv1) if rv0.get(k) != rv1.get(k))
    api_summary = apiserver_summary(metric_delta(a0, a1))
    reconciles = dict_delta(c0["reconciles"], c1["reconciles"])
    dur = (c1["duration"][0] - c0["duration"][0], c1["duration"][1] - c0["duration"][1])
    out = {"seconds": s1["t"] - s0["t"], "writes": dict_delta(c0["writes"], c1["writes"]),
           "reconciles": reconciles, "reconciles_total": sum(reconciles.values()),
           "resyncs": sum(reconciles.values()) / workflows if workflows else 0,
           "expected_resyncs": int(args.noop_window // args.resync) if args.resync > 0 else 0,
           "reconcile_mean_ms": dur[0] / dur[1] * 1000 if dur[1] else None,
           "objects_checked": len(rv0), "changed": changed[:20], "changed_count": len(changed),
           "apiserver": api_summary, "apiserver_writes": writes_of(api_summary),
           "cpu": Sampler.diff(s0, s1), "rss_samples": rss_samples, "rss_end": ctl.rss()}
    out["controller_writes"] = int(sum(out["writes"].values()))
    log(f"no-op window: {out['controller_writes']} controller writes, "
        f"{out['apiserver_writes']} apiserver write requests, {len(changed)} resourceVersions "
        f"changed, {out['reconciles_total']:.0f} reconciles")
    return out


def standby_rss(args, api: Api, children: Children, ctl: Controller, tmp: Path) -> dict:
    """A second controller with leader election, on a Lease someone else holds for an hour: it
    syncs its informers and never reconciles. Its RSS is the informers' caches alone."""
    lease = "bench-standby"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": lease, "namespace": "default"},
            "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 3600,
                     "acquireTime": now, "renewTime": now}}
    status, text = api.request("POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases",
                               json.dumps(body).encode())
    if status != 201:
        raise BenchError(f"creating the Lease {lease}: {status} {text[:200]!r}")
    argv = [a for a in ctl.argv if a != "--no-leader-election"] + ["--lease-name", lease]
    log("standby: a controller that syncs its caches and does not lead")
    t0 = time.monotonic()
    sb = Controller(children, argv, tmp / "controller-standby.log")
    try:
        while True:
            sb.check()
            h = sb.health()
            if h["synced"]:
                break
            if time.monotonic() - t0 > 120:
                raise BenchError("standby: caches not synced after 120 s")
            time.sleep(0.1)
        ready = time.monotonic() - t0
        time.sleep(args.settle)
        h = sb.health()
        out = {"ready_s": ready, "rss": sb.rss(), "leader": h["leader"],
               "reconciles": h["reconciles"],
               "writes": h["applies"] + h["prunes"] + h["statusWrites"]}
    finally:
        sb.stop()
    log(f"standby: synced in {out['ready_s']:.1f} s, leader {out['leader']}, "
        f"{out['reconciles']} reconciles, RSS {mib(out['rss']['VmRSS'])}")
    return out


def bench_restart(args, children: Children, ctl: Controller, tmp: Path, workflows: int
                  ) -> tuple[Controller, dict]:
    """Stops the controller and starts a fresh one on the converged cluster: its RSS once its
    caches are synced and its first reconcile of every Workflow is done (no burst behind it),
    and the writes that first pass makes (0 expected)."""
    log("restart: a fresh controller on the converged cluster")
    code = ctl.stop()
    t0 = time.monotonic()
    new = Controller(children, ctl.argv, tmp / "controller-restarted.log")
    deadline = t0 + 120
    while True:
        new.check()
        h = new.health()
        depth = new.metrics().get("knflow_controller_queue_depth", 0)
        if h["synced"] and h["reconciles"] >= workflows and depth == 0:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"restart: not done after 120 s ({h})")
        time.sleep(0.1)
    ready = time.monotonic() - t0
    time.sleep(args.settle)
    h = new.health()
    out = {"stop_code": code, "ready_s": ready, "rss": new.rss(),
           "reconciles": h["reconciles"],
           "writes": h["applies"] + h["prunes"] + h["statusWrites"]}
    log(f"restart: synced and reconciled {h['reconciles']} in {ready:.1f} s, "
        f"{out['writes']} writes, RSS {mib(out['rss']['VmRSS'])}")
    return new, out


FOOTPRINT_CPP = r"""// Written by bench/cluster_bench.py: heap bytes of boost::json values parsed from JSON text
// with the default allocator, as knflow's informers hold them. One JSON document per input
// line; prints "text_bytes heap_bytes allocations" per line, heap = malloc_usable_size of every
// allocation + 8 bytes of glibc chunk header each.
#include <boost/json.hpp>
#include <boost/json/src.hpp>
#include <boost/version.hpp>
#include <malloc.h>
#include <cstdlib>
#include <iostream>
#include <new>
#include <string>
#include <vector>

static long long g_bytes = 0, g_count = 0;
void* operator new(std::size_t n) {
  void* p = std::malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  g_bytes += static_cast<long long>(malloc_usable_size(p));
  ++g_count;
  return p;
}
void operator delete(void* p) noexcept {
  if (p) {
    g_bytes -= static_cast<long long>(malloc_usable_size(p));
    --g_count;
  }
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept { operator delete(p); }

int main() {
  std::cout << "boost " << BOOST_LIB_VERSION << "\n";
  std::vector<boost::json::value> keep;
  keep.reserve(4096);
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    const long long b = g_bytes, c = g_count;
    keep.push_back(boost::json::parse(line));
    const long long db = g_bytes - b, dc = g_count - c;
    std::cout << line.size() << " " << db + 8 * dc << " " << dc << "\n";
  }
}
"""


def footprint(args, tmp: Path, sample: dict) -> dict | None:
    """What one Workflow's cached objects weigh as boost::json values: the Workflow, its owned
    objects, and (approximately) the rendered objects the controller's plan cache keeps (the
    owned objects without status and server metadata). None when the probe cannot be built."""
    if not sample or not sample.get("workflow"):
        return None
    src, binary = tmp / "json_footprint.cpp", tmp / "json_footprint"
    src.write_text(FOOTPRINT_CPP)
    cc = [os.environ.get("CXX", "c++"), "-O2", "-std=c++20", "-o", str(binary), str(src)]
    r = subprocess.run(cc, capture_output=True, text=True)
    if r.returncode != 0:
        log(f"footprint probe not built ({' '.join(cc)}): {r.stderr.strip()[:300]}")
        return None

    def compact(o):
        return json.dumps(o, separators=(",", ":"), ensure_ascii=False)

    def rendered(o):
        m = o["metadata"]
        return {"apiVersion": o["apiVersion"], "kind": o["kind"],
                "metadata": {k: m[k] for k in ("name", "namespace", "labels", "annotations",
                                               "ownerReferences") if k in m},
                "spec": o.get("spec")}
    children = sample["children"]
    lines = [compact(sample["workflow"])] + [compact(c) for c in children] + \
        [compact(rendered(c)) for c in children]
    r = subprocess.run([str(binary)], input="\n".join(lines) + "\n", capture_output=True, text=True)
    if r.returncode != 0:
        log(f"footprint probe failed: {r.stderr.strip()[:300]}")
        return None
    out_lines = r.stdout.splitlines()
    rows = [tuple(int(x) for x in line.split()) for line in out_lines[1:]]
    k = len(children)

    def total(part):
        return {"text": sum(x[0] for x in part), "heap": sum(x[1] for x in part),
                "allocs": sum(x[2] for x in part)}
    out = {"boost": out_lines[0].split()[1], "cc": cc, "workflow": total(rows[:1]),
           "children": total(rows[1:1 + k]), "plan": total(rows[1 + k:]), "objects": k}
    log(f"footprint: Workflow {out['workflow']}, owned {out['children']}, plan {out['plan']}")
    return out


# ---------------------------------------------------------------------------------------------
# Evaluation and the section


def evaluate(args, batches: list[dict], noop: dict | None, idle: dict,
             meta: dict | None = None) -> dict:
    v: dict = {"batches": {}}
    for b in batches:
        ideal = b["n"] * b["writes_per_wf"] / args.qps
        ratio = b["seconds"] / ideal if ideal else float("inf")
        v["batches"][b["n"]] = {"ideal": ideal, "ratio": ratio, "ok": ratio <= 1.2,
                                "per_wf_ms": b["seconds"] / b["n"] * 1000,
                                "per_min": b["n"] / b["seconds"] * 60,
                                "write_rate": b["total_writes"] / b["seconds"]}
    if len(batches) >= 2:
        small, large = batches[0], batches[-1]
        lin = (v["batches"][large["n"]]["per_wf_ms"] / v["batches"][small["n"]]["per_wf_ms"])
        v["linear"] = {"small": small["n"], "large": large["n"], "ratio": lin,
                       "ok": 1 / 1.2 <= lin <= 1.2}
    if noop:
        v["noop_ok"] = noop["controller_writes"] == 0 and noop["apiserver_writes"] == 0 \
            and noop["changed_count"] == 0
        v["noop_resync_ok"] = noop["resyncs"] >= 1
    if batches:
        last = batches[-1]
        per_wf = (last["rss_after"]["VmRSS"] - last["rss_before"]["VmRSS"]) / last["n"]
        v["rss_per_wf"] = per_wf
        v["rss_vs_wf"] = per_wf / last["wf_json_mean"]
        v["rss_vs_all"] = per_wf / (last["wf_json_mean"] + last["child_json_per_wf"])
        v["rss_ok"] = v["rss_vs_wf"] <= 2.0
        v["rss_all_ok"] = v["rss_vs_all"] <= 2.0
        total = sum(b["n"] for b in batches)
        v["rss_total_per_wf"] = (last["rss_after"]["VmRSS"] - idle["VmRSS"]) / total
        rs = (meta or {}).get("restart")
        if rs:
            v["rss_restart_per_wf"] = (rs["rss"]["VmRSS"] - idle["VmRSS"]) / total
    return v


def kib(b: float) -> str:
    return f"{b / 1024:.1f} KiB"


def secs(s: float) -> str:
    return f"{s:.1f} s" if s >= 10 else f"{s:.2f} s"


def section(args, meta: dict, batches: list[dict], noop: dict | None, idle: dict, v: dict,
            notes: str) -> str:
    m, g, tv = meta["machine"], meta["git"], meta["tools"]
    stale = ""
    mc = re.search(r"commit ([0-9a-f]+)", tv["knflow"])
    if mc and not g["commit"].startswith(mc.group(1)):
        stale = " The binary was built at an earlier commit than the checkout."
    dirty = ""
    if g["dirty_files"]:
        dirty = (" Uncommitted changes in the working tree when the run started (in the binary "
                 "only if it was built after them): "
                 + ", ".join(f"`{f}`" for f in g["dirty_files"][:8])
                 + (" …" if len(g["dirty_files"]) > 8 else "") + ".")
    w_min = meta["rendered"] + 1
    o = [
        SECTION, "", BEGIN, "",
        "How fast the cluster controller (`knflow controller`, [controller.md](controller.md))",
        "turns new Workflows into Knative objects, whether a converged cluster costs it any write,",
        "and how much memory its informers need. Written by `bench/cluster_run.sh` (driver",
        "`bench/cluster_bench.py`, Python 3 standard library, reusing `test/kubeenv/kubeenv.py`'s",
        "`KubeEnv`); like the sections above it is not a test and never runs in CI. Everything",
        "listens on 127.0.0.1 under one temporary directory (the KubeEnv folder too); every process",
        "it starts is stopped on exit however the run ends; it runs a copy of the `knflow` binary",
        "taken at the start. It rewrites only this section, between the `cluster-bench` markers",
        "(the part between the `cluster-analysis` markers is written by hand and kept).",
        "",
        "```sh",
        "test/kubeenv/build.sh                     # the Kubernetes binaries, once (cached)",
        "cmake --preset release && cmake --build --preset release",
        "bench/cluster_run.sh                      # about 10 minutes; rewrites this section",
        "bench/cluster_run.sh --no-doc             # print the section only",
        "bench/cluster_run.sh --sizes 100          # a short run",
        "KNFLOW_BIN=build/x/knflow bench/cluster_run.sh   # another binary",
        "bench/cluster_run.sh --from-json F        # rewrite this section from a --json F run",
        "```",
        "",
        "### Method",
        "",
        f"- **Cluster:** `KubeEnv` (etcd {tv.get('etcd', '?')}, kube-apiserver "
        f"{tv.get('apiserver', '?')}, watch cache on, no controller manager, no Knative",
        "  controllers: Knative objects never become Ready, so Workflows stay `Ready=Unknown`,",
        "  which changes nothing for the controller's writes). The admin token is in",
        "  `system:masters`, which API Priority and Fairness exempts: nothing on the server side",
        "  throttles the controller or the driver.",
        f"- **Controller:** `knflow controller --no-leader-election --resync {args.resync:g}` with the",
        f"  defaults otherwise: client rate limit QPS {args.qps:g} / burst {args.burst} (one token bucket",
        f"  for every request of its client but WATCHes: applies, deletes, status PUTs, GETs,",
        f"  LISTs), {args.workers} workers, 2 threads. The",
        f"  resync is {args.resync:g} s (default 600 s) so that the no-op window holds full resyncs; it",
        "  runs during the bursts too (its reconciles find nothing to write and make no request).",
        "- **Workflow:** `examples/cluster-sequence.yaml` (3 image functions, a url function, a",
        "  fork of a call and a two-step branch, a trigger, retries, reply and dead letter) named",
        f"  `media-ingest-NNNN`; it renders to {meta['rendered']} objects "
        f"({', '.join(meta['rendered_kinds'])}), so the least a",
        f"  Workflow costs is {meta['rendered']} server-side applies + 1 status write = {w_min} writes.",
        "- **Throughput (1):** for each N in "
        f"{', '.join(f'{n:,}' for n in args.sizes)} (in that order, each batch in its own",
        f"  namespace, the earlier batches still there), {args.create_threads} threads with one keep-alive",
        "  HTTPS connection each POST the N Workflows straight to the apiserver. From the first",
        "  POST, the driver LISTs the batch's Workflows every "
        f"{args.poll_interval:g} s (every {args.poll_interval:g} s × N/200, at most "
        f"{getattr(args, 'poll_max', 5):g} s, while under",
        "  90 % are done; and at once when the controller's `/healthz` counts N more status",
        "  writes); when every `status.observedGeneration` equals",
        "  `metadata.generation`, it LISTs the four owned kinds (label",
        "  `app.kubernetes.io/managed-by=knflow`) and checks that every Workflow has each of its",
        f"  {meta['rendered']} objects. Converged = the answer to that LIST (so the time is an upper bound,",
        "  off by at most the poll interval). Writes per Workflow = the controller's",
        "  `knflow_controller_writes_total` (apply + prune + status, every result) over the",
        "  batch ÷ N, cross-checked with the apiserver's `apiserver_request_total` (APPLY, PUT",
        "  status). Ratio = converged time ÷ (N × writes per Workflow ÷ QPS); target ≤ 1.2.",
        "  Linear in N: time per Workflow at the largest N ÷ at the smallest, taken as met within",
        "  1.2× either way.",
        f"- **No-op window (2):** {args.settle:g} s after the last batch converged, "
        f"{args.noop_window:g} s with nothing changing: the",
        "  controller's writes (its `/metrics`), the apiserver's write requests on the five kinds",
        "  (its `/metrics`), and the `resourceVersion` of every Workflow and owned object (LIST",
        "  before and after). Target 0. Resyncs in the window = reconciles ÷ Workflows (nothing",
        "  else enqueues a key when nothing changes).",
        "- **Memory (3):** `VmRSS` of the controller (`/proc/PID/status`), "
        f"{args.settle:g} s after each batch converged;",
        "  per cached Workflow = (RSS after the last batch − RSS before it) ÷ its N. JSON size =",
        "  each object as the apiserver returns it in a LIST (compact JSON, `managedFields`",
        "  included), averaged; compared with the Workflow's own JSON (the target) and with",
        "  the Workflow plus its owned objects (the informers watch both; they keep the",
        "  Workflow without `managedFields` and a summary of each owned object). Then, on the converged cluster: a standby controller (leader",
        "  election on, a Lease another holder keeps for an hour) syncs its informers and never",
        "  reconciles: its RSS is the informers' caches alone; and the measured controller is",
        "  stopped and a fresh one started: its RSS once its caches are synced and its first",
        "  reconcile of every Workflow is done (and the writes that pass makes) shows the cache",
        "  without what the bursts left behind. A probe compiled for the run",
        "  (`c++ -O2`, boost::json as knflow uses it) parses one Workflow and its owned objects",
        "  of this run and counts their heap bytes. MiB = 2^20 bytes.",
        "- **Where the time goes:** the controller logs every write at level info with a",
        "  millisecond timestamp (`Created`, `Updated`, `Pruned`, `Updated status`); the driver",
        "  reads them for the batch's namespace: first and last write, the write rate after the",
        "  burst, when each Workflow's status was written.",
        "- **CPU:** user + system time of the controller, kube-apiserver, etcd and this driver",
        "  (`/proc/PID/stat`) over each phase; \"other\" is what the rest of the machine used",
        "  meanwhile (`/proc/stat` busy time minus those), in cores.",
        "",
        "### Results",
        "",
        f"- date: {meta['date']}",
        f"- machine: {m['nproc_cmd']} CPUs (`nproc`), {m['cpu']}, {m['mem_gib']:.1f} GiB memory, "
        f"Linux {m['kernel']}",
        f"- measured binary: `{tv['knflow']}`, release build; checkout at `{g['commit'][:12]}` "
        f"({g['subject']}).{stale}{dirty}",
        f"- tools: kube-apiserver {tv.get('apiserver', '?')}, etcd {tv.get('etcd', '?')}, "
        f"Python {tv['python']}",
        f"- load average (1 min) at the start: {meta['loadavg'][0]:.2f}; other work on the machine "
        "disturbs every figure (see \"other CPU\").",
        "",
    ]
    if batches:
        o += ["#### Throughput", "",
              "| N | created in | converged after (± poll) | writes / Workflow | N × writes ÷ QPS "
              "| ratio | target | | per Workflow | Workflows / min | writes / s |",
              "|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|"]
        for b in batches:
            bv = v["batches"][b["n"]]
            o.append(f"| {b['n']:,} | {secs(b['created']['seconds'])} ({b['created']['rate']:.0f}/s) "
                     f"| {secs(b['seconds'])} (± {b['resolution']:.2f} s) | {b['writes_per_wf']:.2f} | "
                     f"{secs(bv['ideal'])} | {bv['ratio']:.3f} | ≤ 1.2 | {verdict(bv['ok'])} | "
                     f"{bv['per_wf_ms']:.0f} ms | {bv['per_min']:.0f} | {bv['write_rate']:.1f} |")
        if "linear" in v:
            lin = v["linear"]
            o.append(f"| {lin['large']:,} vs {lin['small']:,} | | | | | {lin['ratio']:.3f} | "
                     f"0.83–1.2 (per Workflow) | {verdict(lin['ok'])} | | | |")
        o += ["",
              "Same table for comparison with the published Argo Workflows controller figure:",
              "",
              "| controller | settings | Workflows / min | what a Workflow costs the controller | source |",
              "|---|---|---:|---|---|"]
        for b in batches:
            bv = v["batches"][b["n"]]
            o.append(f"| knflow, N = {b['n']:,} created at once | QPS {args.qps:g} / burst {args.burst}, "
                     f"{args.workers} workers | {bv['per_min']:.0f} | {b['writes_per_wf']:.2f} writes "
                     f"({meta['rendered']} applies + status); bound by QPS: "
                     f"{args.qps * 60 / b['writes_per_wf']:.0f}/min | this run |")
        o.append(f"| Argo Workflows 3.5.4 | QPS 20 / burst 30, 32 workflow workers (defaults) | "
                 f"{ARGO['per_min']} | a pod created, watched and cleaned up, and the Workflow's "
                 f"status updates; {ARGO['queued_n']:,} queued at once took about "
                 f"17–19 min (about {ARGO['queued_n'] / 19:.0f}–{ARGO['queued_n'] / 17:.0f}/min) | "
                 f"[CNOE blog, baseline]({ARGO['url']}) |")
        o += ["",
              "Argo's figure is the highest submission rate its controller kept up with "
              "(\"increasing rate test\", one namespace, default settings: `--qps 20 --burst 30`, "
              f"[Argo's scaling docs]({ARGO['docs_url']})) on Amazon EKS 1.27 with a m5.8xlarge "
              "for the controller, from \"Argo Workflows Controller Scalability Testing on Amazon "
              "EKS\" (Andrew Lee, Vikram Sethi, CNOE, June 2024). Both controllers are bound by the "
              "same client rate limit, but the work per Workflow differs (running a pod there, "
              "compiling into Knative objects here), so the comparison is of the order of "
              "magnitude only.", ""]
        o += ["Per batch: what the controller did until convergence, and the CPU it took.", "",
              "| N | controller writes (operation/result) | apiserver requests on the five kinds "
              "(mean latency) | reconciles (mean duration) | writes after convergence "
              f"(next {args.settle:g} s) | CPU s: knflow / apiserver / etcd / driver | other CPU (cores) |",
              "|---:|---|---|---|---|---|---:|"]
        for b in batches:
            wr = ", ".join(f"{k} {int(x):,}" for k, x in b["writes"].items()) or "none"
            ap = ", ".join(f"{k} {int(r['requests']):,}"
                           + (f" ({r['mean_ms']:.1f} ms)" if r["mean_ms"] is not None
                              and r["verb"] != "WATCH" else "")
                           for k, r in b["apiserver"].items() if r["requests"])
            rc = ", ".join(f"{k} {int(x):,}" for k, x in b["reconciles"].items())
            rm = f" ({b['reconcile_mean_ms']:.0f} ms)" if b["reconcile_mean_ms"] is not None else ""
            late = ", ".join(f"{k} {int(x)}" for k, x in b["late_writes"].items()) or "0"
            c = b["cpu"]
            o.append(f"| {b['n']:,} | {wr} | {ap} | {rc}{rm} | {late} | {c['knflow']:.1f} / "
                     f"{c['apiserver']:.1f} / {c['etcd']:.1f} / {c['driver']:.1f} | "
                     f"{c['other_cores']:.2f} |")
        o += ["", "Progress (Workflows converged, from the LIST polls):", ""]
        for b in batches:
            marks = []
            for frac in (0.1, 0.25, 0.5, 0.75, 0.9, 1.0):
                want = frac * b["n"]
                t = next((t for t, d in b["timeline"] if d >= want), None)
                if t is not None:
                    marks.append(f"{int(frac * 100)} % at {t:.1f} s")
            t10 = next((t for t, d in b["timeline"] if d >= 0.1 * b["n"]), None)
            t90 = next((t for t, d in b["timeline"] if d >= 0.9 * b["n"]), None)
            mid = ""
            if t10 is not None and t90 is not None and t90 > t10:
                rate = 0.8 * b["n"] / (t90 - t10)
                mid = (f"; between 10 % and 90 %: {rate:.2f} Workflows/s = "
                       f"{rate * b['writes_per_wf']:.1f} writes/s")
            o.append(f"- N = {b['n']:,}: " + ", ".join(marks) + mid +
                     f" ({b['polls']} LISTs of the batch's Workflows, {b['list_ms_mean']:.0f} ms each "
                     "on average).")
            lg = b.get("log") or {}
            if lg:
                o.append(
                    f"  The controller's log (its `Created`/`Updated status` lines, ms timestamps): "
                    f"{lg['writes']:,} writes, the first {lg['first']:.2f} s after the first POST, "
                    f"{lg['in_first_2s']} in its first 2 s (the burst), then "
                    f"{lg.get('steady_rate', 0):.2f} writes/s to the last at {lg['last']:.1f} s "
                    f"(QPS {args.qps:g}); half the Workflows had their status written by "
                    f"{lg.get('status_p50', 0):.1f} s, 90 % by {lg.get('status_p90', 0):.1f} s, "
                    f"the last at {lg.get('last_status') or 0:.1f} s, which the LIST saw "
                    f"{b['seconds'] - (lg.get('last_status') or 0):.2f} s later.")
        o.append("")
    if noop:
        ap = ", ".join(f"{k} {int(r['requests']):,}" for k, r in noop["apiserver"].items()
                       if r["requests"]) or "none"
        o += ["#### No-op window", "",
              "| | measured | target | |", "|---|---:|---|---|",
              f"| controller writes in {noop['seconds']:.0f} s (`knflow_controller_writes_total`) | "
              f"{noop['controller_writes']} | 0 | {verdict(noop['controller_writes'] == 0)} |",
              f"| apiserver write requests on the five kinds | {noop['apiserver_writes']} | 0 | "
              f"{verdict(noop['apiserver_writes'] == 0)} |",
              f"| resourceVersions changed (of {noop['objects_checked']:,} objects) | "
              f"{noop['changed_count']} | 0 | {verdict(noop['changed_count'] == 0)} |",
              f"| reconciles in the window | {noop['reconciles_total']:,.0f} | | |",
              f"| full resyncs in the window (reconciles ÷ {sum(b['n'] for b in batches):,} Workflows) | "
              f"{noop['resyncs']:.2f} (every {args.resync:g} s: {noop['expected_resyncs']} expected) | ≥ 1 | "
              f"{verdict(v.get('noop_resync_ok', False))} |",
              ("| mean no-op reconcile | "
               + (f"{noop['reconcile_mean_ms'] * 1000:.0f} µs" if noop["reconcile_mean_ms"]
                  is not None else "–") + " | | |"),
              f"| controller CPU in the window | {noop['cpu']['knflow']:.2f} s "
              f"({noop['cpu']['knflow'] / max(1, noop['reconciles_total']) * 1e6:.0f} µs per reconcile) | | |",
              "",
              f"Apiserver requests on the five kinds during the window: {ap} (the driver's LISTs "
              "before and after are outside it).", ""]
        if noop["changed"]:
            o += ["Changed: " + ", ".join(noop["changed"]) + ".", ""]
    if batches:
        last = batches[-1]
        o += ["#### Memory", "",
              "| controller state | VmRSS | above the previous state | per Workflow |",
              "|---|---:|---:|---:|",
              f"| idle, caches synced, no Workflow | {mib(idle['VmRSS'])} | | |"]
        prev = idle["VmRSS"]
        total = 0
        for b in batches:
            total += b["n"]
            o.append(f"| {total:,} Workflows converged (+ {b['n']:,}) | {mib(b['rss_after']['VmRSS'])} | "
                     f"{mib(b['rss_after']['VmRSS'] - b['rss_before']['VmRSS'])} | "
                     f"{kib((b['rss_after']['VmRSS'] - b['rss_before']['VmRSS']) / b['n'])} |")
            prev = b["rss_after"]["VmRSS"]
        if noop:
            o.append(f"| after the no-op window | {mib(noop['rss_end']['VmRSS'])} | "
                     f"{mib(noop['rss_end']['VmRSS'] - prev)} | |")
        sb = meta.get("standby")
        if sb:
            o.append(f"| a standby controller on the same {total:,} Workflows (leader election, the "
                     f"Lease held by another): informers synced, nothing reconciled "
                     f"({sb['reconciles']} reconciles) | {mib(sb['rss']['VmRSS'])} | "
                     f"{mib(sb['rss']['VmRSS'] - idle['VmRSS'])} above idle | "
                     f"{kib((sb['rss']['VmRSS'] - idle['VmRSS']) / total)} |")
        rs = meta.get("restart")
        if rs:
            o.append(f"| a fresh controller on the same {total:,} Workflows: caches synced, "
                     f"first reconcile of each done ({rs['reconciles']:,} reconciles, "
                     f"{rs['writes']} writes, {rs['ready_s']:.1f} s) | {mib(rs['rss']['VmRSS'])} | "
                     f"{mib(rs['rss']['VmRSS'] - idle['VmRSS'])} above idle | "
                     f"{kib((rs['rss']['VmRSS'] - idle['VmRSS']) / total)} |")
        hwm = (noop or {}).get("rss_end", last["rss_after"])["VmHWM"]
        o += ["",
              f"| per Workflow of the last batch (N = {last['n']:,}) | measured | JSON as served | "
              "RSS ÷ JSON | target | |",
              "|---|---:|---:|---:|---|---|",
              f"| the Workflow alone | {kib(v['rss_per_wf'])} | {kib(last['wf_json_mean'])} | "
              f"{v['rss_vs_wf']:.2f}× | ≤ 2× | {verdict(v['rss_ok'])} |",
              f"| the Workflow and its {last['objects_per_wf']:.0f} owned objects (what the "
              f"informers watch) | {kib(v['rss_per_wf'])} | "
              f"{kib(last['wf_json_mean'] + last['child_json_per_wf'])} | {v['rss_vs_all']:.2f}× | "
              f"≤ 2× | {verdict(v['rss_all_ok'])} |",
              *([f"| the same, in the fresh controller (from idle, ÷ {total:,}) | "
                 f"{kib(v['rss_restart_per_wf'])} | "
                 f"{kib(last['wf_json_mean'] + last['child_json_per_wf'])} | "
                 f"{v['rss_restart_per_wf'] / (last['wf_json_mean'] + last['child_json_per_wf']):.2f}× | | |"]
                if "rss_restart_per_wf" in v else []),
              "",
              f"A Workflow's JSON is {last['wf_json_mean']:,.0f} bytes on average "
              f"({last['wf_json_no_managed_fields_mean']:,.0f} without `managedFields`); its "
              f"{last['objects_per_wf']:.0f} owned objects add {last['child_json_per_wf']:,.0f} bytes. "
              f"Over every batch, from idle: {kib(v['rss_total_per_wf'])} per Workflow. Peak RSS "
              f"(VmHWM) of the controller at the end: {mib(hwm)}.", ""]
        fp = meta.get("footprint")
        if fp:
            w, c, pl = fp["workflow"], fp["children"], fp["plan"]
            parts = w["heap"] + c["heap"] + pl["heap"]
            line = (f"For comparison, what the same objects take as parsed trees (how the "
                    f"controller cached them before it kept compact text and summaries; "
                    f"docs/controller.md, \"Memory\"), from a probe that parses the sample "
                    f"objects of this run with boost::json {fp['boost'].replace('_', '.')} and "
                    f"counts the heap (`malloc_usable_size` + 8 bytes per allocation): the "
                    f"Workflow, {w['text']:,} bytes of JSON, is {w['heap']:,} bytes in "
                    f"{w['allocs']} allocations ({w['heap'] / w['text']:.1f}×); its "
                    f"{fp['objects']} owned objects, {c['text']:,} bytes, are {c['heap']:,} "
                    f"({c['heap'] / c['text']:.1f}×); their rendered form (the owned objects "
                    f"without status and server metadata), {pl['text']:,} bytes, is "
                    f"{pl['heap']:,} ({pl['heap'] / pl['text']:.1f}×). Together "
                    f"{parts / 1024:.1f} KiB per Workflow")
            if sb:
                line += (f"; the standby controller (informers only) measured "
                         f"{kib((sb['rss']['VmRSS'] - idle['VmRSS']) / total)} per Workflow "
                         f"against {(w['heap'] + c['heap']) / 1024:.1f} KiB as trees")
            if rs:
                line += (f", the fresh leader {kib((rs['rss']['VmRSS'] - idle['VmRSS']) / total)}")
            o += [line + ".", ""]
    warnings = meta.get("controller_log_warnings") or []
    startup = meta.get("controller_log_startup_warnings") or []
    o += [f"Controller log: {meta.get('controller_log_lines', 0):,} lines; at level warn or error: "
          f"{meta.get('controller_log_warning_count', len(warnings))} after its caches synced"
          + (" (" + "; ".join(f"`{w[:200]}`" for w in warnings[:3]) + ")" if warnings else "")
          + f", {len(startup)} before"
          + (" (" + "; ".join(f"`{x}`" for x in sorted({re.sub(r'^ts=\S+ ', '', w)[:200] for w in startup})[:2])
             + ")" if startup else "") + ".", ""]
    missed, met = [], []
    for b in batches:
        bv = v["batches"][b["n"]]
        (met if bv["ok"] else missed).append(f"N={b['n']:,} ratio {bv['ratio']:.3f} (≤ 1.2)")
    if "linear" in v:
        (met if v["linear"]["ok"] else missed).append(
            f"linear in N ({v['linear']['ratio']:.3f}× per Workflow)")
    if noop:
        (met if v["noop_ok"] else missed).append(
            f"no-op window {noop['controller_writes']} writes (0)")
    if batches:
        (met if v["rss_ok"] else missed).append(
            f"RSS per Workflow {v['rss_vs_wf']:.2f}× its JSON (≤ 2×)")
        (met if v["rss_all_ok"] else missed).append(
            f"RSS per Workflow {v['rss_vs_all']:.2f}× its JSON with its owned objects (≤ 2×)")
    o += ["#### Targets", ""]
    if met:
        o.append("Met: " + "; ".join(met) + ".")
    if missed:
        o += ["", "Missed: " + "; ".join(missed) + ". See the analysis below."]
    ctl_argv = shown(shlex.join(meta["controller_argv"]), args)
    o += ["", NOTES_BEGIN, notes.strip("\n"), NOTES_END, "", "#### Commands", "", "```sh",
          "# $TMP is the run's temporary directory, $KUBEENV KubeEnv's folder in it",
          ctl_argv,
          *([shown(shlex.join([a for a in meta["controller_argv"] if a != "--no-leader-election"]
                              + ["--lease-name", "bench-standby"]), args)
             + "   # the standby"] if meta.get("standby") else []),
          *([shown(shlex.join(meta["footprint"]["cc"]), args) + "   # the footprint probe"]
            if meta.get("footprint") else []),
          "bench/cluster_run.sh " + " ".join(shlex.quote(a) for a in args.passed), "```", "",
          END]
    return "\n".join(o).replace("\n\n\n", "\n\n") + "\n"


def shown(text: str, args) -> str:
    text = re.sub(re.escape(str(args.tmp)) + r"/knflow-kubeenv-[^/ ]+", "$KUBEENV", text)
    text = re.sub(re.escape(str(Path(args.tmp) / "knflow")) + r"(?=\s|$)", args.knflow_shown, text)
    return text.replace(str(args.tmp), "$TMP").replace(str(ROOT) + "/", "")


DEFAULT_NOTES = "No analysis written yet for this machine."


def read_notes(text: str) -> str:
    m = re.search(re.escape(NOTES_BEGIN) + r"\n(.*?)" + re.escape(NOTES_END), text, re.S)
    return m.group(1) if m else DEFAULT_NOTES


def write_section(doc: Path, render) -> None:
    """Replaces this script's section of doc (from its heading to the end marker), or appends
    it; every other byte stays. The file is re-read right before writing: others edit it."""
    text = "# Benchmarks\n"
    if doc.exists():
        with open(doc, encoding="utf-8", newline="") as f:
            text = f.read()
    start = text.find("\n" + SECTION + "\n")
    if start < 0:
        out = text.rstrip("\n") + "\n\n" + render(DEFAULT_NOTES)
    else:
        start += 1
        end_marker = text.find(END, start)
        if end_marker < 0:
            m = re.compile(r"^## ", re.M).search(text, start + len(SECTION))
            end = m.start() if m else len(text)
        else:
            end = end_marker + len(END)
            if text.startswith("\n", end):
                end += 1
        new = render(read_notes(text[start:end]))
        rest = text[end:]
        out = text[:start] + new + (("\n" + rest.lstrip("\n")) if rest.strip() else "")
    with open(doc, "w", encoding="utf-8", newline="") as f:
        f.write(out)


# ---------------------------------------------------------------------------------------------

def tool_versions(args, kube: KubeEnv | None) -> dict:
    def first_line(argv):
        r = subprocess.run(argv, capture_output=True, text=True)
        text = (r.stdout + r.stderr).strip()
        return text.splitlines()[0] if text else "?"
    out = {"knflow": first_line([args.knflow, "version"]), "python": platform.python_version()}
    if kube is not None:
        out["apiserver"] = first_line([str(kube.bin_dir / "kube-apiserver"), "--version"]).replace(
            "Kubernetes ", "")
        etcd = first_line([str(kube.bin_dir / "etcd"), "--version"])
        out["etcd"] = etcd.replace("etcd Version: ", "v") if etcd.startswith("etcd Version") else etcd
    return out


def rewrite_from_json(args) -> int:
    saved = json.loads(Path(args.from_json).read_text())
    for k, x in saved.get("args", {}).items():
        if k not in ("doc", "no_doc", "from_json", "json"):
            setattr(args, k, x)
    batches = saved["batches"]
    for b in batches:
        b["timeline"] = [tuple(x) for x in b["timeline"]]
    v = evaluate(args, batches, saved["noop"], saved["idle"], saved["meta"])
    render = lambda notes: section(args, saved["meta"], batches, saved["noop"],  # noqa: E731
                                   saved["idle"], v, notes)
    if args.no_doc:
        print(render(DEFAULT_NOTES))
    else:
        write_section(Path(args.doc), render)
        log(f"rewrote the \"{SECTION[3:]}\" section of {args.doc} from {args.from_json}")
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--knflow", default=str(ROOT / "build/release/knflow"))
    p.add_argument("--tmp", help="empty temporary directory (bench/cluster_run.sh makes one)")
    p.add_argument("--sizes", type=int_list, default=[100, 1000],
                   help="N of each batch, in order, comma-separated")
    p.add_argument("--example", default=str(ROOT / "examples/cluster-sequence.yaml"))
    p.add_argument("--qps", type=float, default=20, help="knflow controller --qps")
    p.add_argument("--burst", type=int, default=30, help="knflow controller --burst")
    p.add_argument("--workers", type=int, default=2, help="knflow controller --workers")
    p.add_argument("--resync", type=float, default=10, help="knflow controller --resync (seconds)")
    p.add_argument("--noop-window", type=float, default=60, help="seconds (0: skip)")
    p.add_argument("--create-threads", type=int, default=8)
    p.add_argument("--poll-interval", type=float, default=1.0,
                   help="seconds between LISTs of the batch's Workflows")
    p.add_argument("--poll-max", type=float, default=5.0,
                   help="seconds between those LISTs while under 90 %% of the batch is done "
                        "(poll interval × N/200, at most this)")
    p.add_argument("--settle", type=float, default=5.0,
                   help="seconds before each RSS sample and after each convergence")
    p.add_argument("--timeout-factor", type=float, default=4.0,
                   help="give up on a batch after this × the ideal time + 120 s")
    p.add_argument("--no-restart", dest="restart", action="store_false",
                   help="skip the fresh controller's RSS on the converged cluster")
    p.add_argument("--no-footprint", dest="footprint", action="store_false",
                   help="skip compiling the boost::json footprint probe (c++ and Boost)")
    p.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    p.add_argument("--doc", default=str(ROOT / "docs/benchmarks.md"))
    p.add_argument("--json", help="also write every figure to this JSON file")
    p.add_argument("--from-json", metavar="FILE",
                   help="measure nothing: rewrite the section from the figures a --json run saved")
    args = p.parse_args(argv)
    if args.from_json:
        return rewrite_from_json(args)
    cleaned, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--knflow", "--tmp"):
            skip = True
            continue
        if a.startswith(("--knflow=", "--tmp=")):
            continue
        cleaned.append(a)
    args.passed = cleaned
    if not args.tmp:
        import tempfile
        args.tmp = tempfile.mkdtemp(prefix="knflow-cluster-bench.")
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    args.knflow_shown = os.path.relpath(args.knflow, ROOT) if args.knflow.startswith(
        str(ROOT)) else args.knflow
    copy_path = tmp / "knflow"
    shutil.copy2(args.knflow, copy_path)
    args.knflow = str(copy_path)
    children = Children(tmp / "pids")
    atexit.register(children.stop_all)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda signum, frame: sys.exit(128 + signum))

    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "git": git_info(), "loadavg": os.getloadavg()}
    log(f"load {meta['loadavg'][0]:.2f}; starting kube-apiserver and etcd")
    batches: list[dict] = []
    noop = restart = None
    kube = KubeEnv(controller_manager=False)
    try:
        kube.start()
        pids = child_pids_by_name(os.getpid())
        for name in ("etcd", "kube-apiserver"):
            if name not in pids:
                raise BenchError(f"cannot find the {name} process")
            children.record(pids[name])
        meta["tools"] = tool_versions(args, kube)
        log(f"{meta['tools']['knflow']}; kube-apiserver {meta['tools']['apiserver']}")
        api = Api(kube)
        template = workflow_template(kube, Path(args.example))
        expected = rendered_objects(args.knflow, Path(args.example), template["metadata"]["name"])
        meta["rendered"] = len(expected)
        kinds: dict[str, int] = {}
        for kind, _ in expected:
            kinds[kind] = kinds.get(kind, 0) + 1
        meta["rendered_kinds"] = [f"{c} {k}{'s' if c > 1 else ''}" for k, c in kinds.items()]
        argv_ctl = [args.knflow, "controller", "--kubeconfig", kube.kubeconfig,
                    "--no-leader-election", "--metrics-listen", "127.0.0.1:0",
                    "--resync", f"{args.resync:g}", "--workers", str(args.workers),
                    "--qps", f"{args.qps:g}", "--burst", str(args.burst)]
        meta["controller_argv"] = argv_ctl
        ctl = Controller(children, argv_ctl, tmp / "controller.log")
        deadline = time.monotonic() + 60
        while not (lambda h: h["synced"] and h["leader"])(ctl.health()):
            ctl.check()
            if time.monotonic() > deadline:
                raise BenchError("the controller's caches did not sync in 60 s")
            time.sleep(0.1)
        sampler = Sampler(ctl, pids)
        time.sleep(args.settle)
        idle = ctl.rss()
        ready_lines = len(ctl.log().splitlines())
        log(f"controller ready, idle RSS {mib(idle['VmRSS'])}")
        for n in args.sizes:
            batches.append(bench_batch(args, kube, api, ctl, sampler, template, expected, n))
            b = batches[-1]
            log(f"N={n}: {b['seconds']:.2f} s, {b['writes_per_wf']:.2f} writes per Workflow, "
                f"RSS {mib(b['rss_after']['VmRSS'])}")
        if args.noop_window > 0 and batches:
            noop = bench_noop(args, api, ctl, sampler, [b["namespace"] for b in batches],
                              sum(b["n"] for b in batches))
        lines = ctl.log().splitlines()
        bad = [line for line in lines[ready_lines:]
               if "level=warn" in line or "level=error" in line]
        meta["controller_log_lines"] = len(lines)
        meta["controller_log_startup_warnings"] = [
            line for line in lines[:ready_lines] if "level=warn" in line or "level=error" in line]
        meta["controller_log_warning_count"] = len(bad)
        meta["controller_log_warnings"] = bad[:20]
        if args.restart and batches:
            meta["standby"] = standby_rss(args, api, children, ctl, tmp)
            ctl, restart = bench_restart(args, children, ctl, tmp, sum(b["n"] for b in batches))
            meta["restart"] = restart
        if args.footprint and batches:
            meta["footprint"] = footprint(args, tmp, batches[-1]["sample"])
        code = ctl.stop()
        if code != 0:
            log(f"warning: the controller exited with {code} after SIGTERM")
        api.close()
    except BenchError as e:
        log(f"error: {e}")
        return 1
    finally:
        children.stop_all()
        kube.stop()

    v = evaluate(args, batches, noop, idle, meta)
    render = lambda notes: section(args, meta, batches, noop, idle, v, notes)  # noqa: E731
    print()
    print(render(DEFAULT_NOTES))
    if args.json:
        saved_args = {k: x for k, x in vars(args).items() if k not in ("json", "from_json")}
        Path(args.json).write_text(json.dumps({"meta": meta, "batches": batches, "noop": noop,
                                               "idle": idle, "verdict": v, "args": saved_args},
                                              indent=2, default=str))
    if not args.no_doc:
        write_section(Path(args.doc), render)
        log(f"wrote the \"{SECTION[3:]}\" section of {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
