#!/usr/bin/env python3
"""Standalone engine benchmarks (driver for bench/engine_run.sh; Python 3 standard library only).

Against an echo function (nginx answering every POST with a fixed JSON body) and a function that
answers after 50 ms (bench/delay_function.cpp), with `knflow serve --threads 2` on its own data
directory:

1. per-step overhead: synchronous invokes of workflows of N sequential calls at half of their
   measured maximum throughput, against N direct POSTs to the function at the same call rate
   (both at a constant rate from an open-loop generator, bench/open_loop.cpp);
2. throughput: 1-step invokes per second / direct POSTs per second (same wrk settings), and as
   its ceiling the same ratio through nginx as a plain reverse proxy;
3. fork scaling: one fork (join all) of K branches each calling the 50 ms function, latency of
   an invoke / latency with one branch;
4. memory: RSS idle, with 1,000 runs in flight (a `wait`), and with 10,000 finished runs stored
   (in the process that ran them, then after a restart).

Everything listens on 127.0.0.1, every duration is bounded, every process started is stopped on
exit. Benchmarks are not tests: ratios are against baselines measured in the same run; the run
fails only when the measurement itself is broken (a non-2xx answer, a daemon that does not start).

It follows the conventions of bench/knflow_bench.py (process handling, quiet-machine wait, doc
layout) but does not depend on it.
"""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import datetime
import http.client
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from benchlib import BenchError, CLK_TCK, MIB, child_pids, cpu_busy_ticks, die_with_parent, free_port, git_info, int_list, machine, mib, proc_status, verdict  # noqa: E402
NS_PATH = "/api/v1/namespaces/default"
SECTION = "## Standalone engine"
NOTES_BEGIN = "<!-- engine-analysis:begin -->"
NOTES_END = "<!-- engine-analysis:end -->"


# ---------------------------------------------------------------------------------------------
# Processes, /proc, HTTP and wrk helpers. The same conventions as bench/knflow_bench.py (kept
# separate so that this driver runs on its own).


def log(msg: str) -> None:
    print(f"[engine-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Children:
    """Every process this run starts (PIDs also appended to a file for engine_run.sh)."""

    def __init__(self, pid_file: Path):
        self.pid_file = pid_file
        self.procs: list[subprocess.Popen] = []
        self.lock = threading.Lock()

    def spawn(self, argv: list[str], log_path: Path) -> subprocess.Popen:
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        with self.lock:
            self.procs.append(proc)
            with open(self.pid_file, "a") as f:
                f.write(f"{proc.pid}\n")
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if proc.poll() is None:
            try:
                proc.send_signal(sig)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with self.lock:
            if proc in self.procs:
                self.procs.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc, timeout=5.0)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the given processes (all their threads)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def request(port: int, method: str, path: str, token: str | None, body: bytes | None = None,
            content_type: str | None = None, conn: http.client.HTTPConnection | None = None,
            timeout: float = 30.0) -> tuple[int, bytes]:
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if content_type:
        headers["Content-Type"] = content_type
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        if own:
            conn.close()


class Knflow:
    """One `knflow serve --threads T` on its own data directory."""

    def __init__(self, children: Children, binary: str, data_dir: Path, threads: int, name: str):
        self.children, self.binary, self.data_dir = children, binary, data_dir
        self.threads, self.name = threads, name
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"{name}.log"

    def argv(self, port) -> list[str]:
        return [self.binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir",
                str(self.data_dir), "--threads", str(self.threads)]

    @property
    def token(self) -> str:
        return (self.data_dir / "token").read_text().strip()

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc = self.children.spawn(self.argv(self.port), self.log_path)
        deadline = time.monotonic() + timeout
        token_file = self.data_dir / "token"
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name}: exited with {self.proc.returncode}; "
                                 f"see {self.log_path}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: not ready after {timeout} s; see {self.log_path}")
            token = token_file.read_text().strip() if token_file.exists() else ""
            if token:
                try:
                    if request(self.port, "GET", "/readyz", token, timeout=5)[0] == 200:
                        return
                except (OSError, http.client.HTTPException):
                    pass
            time.sleep(0.01)

    def stop(self) -> None:
        assert self.proc is not None
        code = self.children.stop(self.proc, signal.SIGTERM)
        self.proc = None
        if code != 0:
            raise BenchError(f"{self.name}: exit code {code} after SIGTERM; see {self.log_path}")

    def rss(self) -> dict[str, int]:
        assert self.proc is not None
        return proc_status(self.proc.pid)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def parse_wrk(out: str) -> dict:
    def pct(p: str) -> float:
        m = re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
        if not m:
            raise BenchError(f"no {p}% line in wrk output:\n{out}")
        return float(m.group(1)) * _UNITS_MS[m.group(2)]

    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    reqs = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", out, re.M)
    if not rps or not reqs:
        raise BenchError(f"cannot parse wrk output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": float(rps.group(1)), "requests": int(reqs.group(1)),
            "p50_ms": pct("50"), "p75_ms": pct("75"), "p90_ms": pct("90"), "p99_ms": pct("99"),
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
            "socket_errors_text": sock.group(0) if sock else ""}


def wait_for_quiet(args) -> tuple[float, float]:
    """Waits (at most --quiet-wait s) until the machine, our servers idle, uses under
    --quiet-cores; returns (seconds waited, cores busy in the last one-second sample)."""
    t0 = time.monotonic()
    while True:
        b0 = cpu_busy_ticks()
        time.sleep(1.0)
        busy = (cpu_busy_ticks() - b0) / CLK_TCK
        waited = time.monotonic() - t0
        if busy <= args.quiet_cores or waited >= args.quiet_wait:
            return waited, busy


# ---------------------------------------------------------------------------------------------
# Functions: nginx echo (and nginx as a reverse proxy in front of it) and the delay function

def start_nginx(children: Children, nginx_bin: str, tmp: Path, name: str, what: str,
                workers: int, servers) -> tuple[subprocess.Popen, int, Path, list[str]]:
    """One nginx under $tmp/NAME (its own prefix, pid file and logs): the shared settings, then
    servers(port), the text of its upstream and server blocks; returns once every worker runs."""
    base = tmp / name
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
        (base / d).mkdir(parents=True, exist_ok=True)
    for p in (tmp, base):
        os.chmod(p, 0o755)
    port = free_port()
    conf = f"""# Written by bench/engine_bench.py for one run: {what}.
daemon off;
master_process on;
worker_processes {workers};
pid {base}/nginx.pid;
error_log {base}/logs/error.log warn;
events {{
  worker_connections 1024;
}}
http {{
  access_log off;
  client_body_temp_path {base}/client_body;
  proxy_temp_path {base}/proxy;
  fastcgi_temp_path {base}/fastcgi;
  uwsgi_temp_path {base}/uwsgi;
  scgi_temp_path {base}/scgi;
  tcp_nodelay on;
  keepalive_timeout 60s;
  keepalive_requests 1000000;
  server_tokens off;
{servers(port)}}}
"""
    conf_path = base / "nginx.conf"
    conf_path.write_text(conf)
    argv = [nginx_bin, "-p", str(base), "-c", str(conf_path), "-e", str(base / "logs/error.log")]
    test = subprocess.run(argv + ["-t"], capture_output=True, text=True)
    if test.returncode != 0:
        raise BenchError(f"nginx -t failed ({name}): {test.stderr.strip()}")
    proc = children.spawn(argv, tmp / f"{name}.log")
    wait_listening(proc, port, name.replace("-", " "))
    deadline = time.monotonic() + 5
    while len(child_pids(proc.pid)) < workers and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc, port, conf_path, argv


def start_echo_nginx(children: Children, nginx_bin: str, tmp: Path, workers: int
                     ) -> tuple[subprocess.Popen, int, Path, list[str]]:
    return start_nginx(children, nginx_bin, tmp, "echo-nginx", "the echo function", workers,
                       lambda port: f"""  server {{
    listen 127.0.0.1:{port};
    location / {{
      default_type application/json;
      return 200 '{{"ok":true}}';
    }}
  }}
""")


def start_proxy_nginx(children: Children, nginx_bin: str, tmp: Path, workers: int,
                      echo_port: int) -> tuple[subprocess.Popen, int, Path, list[str]]:
    """nginx as a plain reverse proxy in front of the echo function, keeping its upstream
    connections open: the reference ceiling of the throughput ratio."""
    return start_nginx(children, nginx_bin, tmp, "proxy-nginx",
                       "a plain reverse proxy in front of the echo function", workers,
                       lambda port: f"""  upstream echo {{
    server 127.0.0.1:{echo_port};
    keepalive 64;
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
""")


def build_cpp(tmp: Path, name: str) -> tuple[Path, list[str]]:
    """Compiles bench/NAME.cpp into $tmp/NAME (seconds; no CMake target needed)."""
    out = tmp / name
    cxx = os.environ.get("CXX", "c++")
    argv = [cxx, "-O2", "-std=c++20", "-pthread", "-o", str(out), str(ROOT / f"bench/{name}.cpp")]
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        raise BenchError(f"compiling bench/{name}.cpp failed:\n{res.stderr}")
    return out, argv


def start_delay_function(children: Children, tmp: Path, binary: Path, delay_ms: float
                         ) -> tuple[subprocess.Popen, int, list[str]]:
    # The binary lives under $tmp, so its command line names $tmp: the backstop in
    # engine_run.sh kills only recorded PIDs whose command line does.
    port = free_port()
    argv = [str(binary), "--port", str(port), "--delay-ms", f"{delay_ms:g}"]
    proc = children.spawn(argv, tmp / "delay-function.log")
    wait_listening(proc, port, "delay function")
    return proc, port, argv


def wait_listening(proc: subprocess.Popen, port: int, name: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"{name} did not listen within {timeout} s")
            time.sleep(0.01)


# ---------------------------------------------------------------------------------------------
# Workflows

def seq_workflow(n: int, echo_url: str) -> dict:
    return {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
            "metadata": {"name": f"seq-{n}"},
            "spec": {"functions": {"echo": {"url": echo_url}},
                     "do": [{"name": f"s{i}", "call": "echo"} for i in range(n)]}}


def fork_workflow(k: int, slow_url: str) -> dict:
    return {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
            "metadata": {"name": f"fork-{k}"},
            "spec": {"functions": {"slow": {"url": slow_url}},
                     "do": [{"name": "fan", "fork": {
                         "join": "all",
                         "branches": [{"name": f"b{i}", "call": "slow"} for i in range(k)]}}]}}


def wait_workflow(seconds: int) -> dict:
    return {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
            "metadata": {"name": f"wait-{seconds}s"},
            "spec": {"do": [{"name": "pause", "wait": f"PT{seconds}S"}]}}


def create(kn: Knflow, doc: dict) -> None:
    status, body = request(kn.port, "POST", f"{NS_PATH}/workflows", kn.token,
                           json.dumps(doc).encode(), "application/json")
    if status != 201:
        raise BenchError(f"create {doc['metadata']['name']}: {status} {body[:400]!r}")


def invoke_path(name: str, mode: str | None = None) -> str:
    return f"{NS_PATH}/workflows/{name}:invoke" + (f"?mode={mode}" if mode else "")


def metrics(kn: Knflow) -> dict[str, float]:
    status, body = request(kn.port, "GET", "/metrics", kn.token)
    if status != 200:
        raise BenchError(f"/metrics: {status}")
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            pass
    return out


def runs_state(kn: Knflow) -> tuple[float, float, float]:
    """(in flight, started, finished) from the daemon's run metrics."""
    m = metrics(kn)
    finished = sum(v for k, v in m.items() if k.startswith("knflow_runs_finished_total"))
    return m.get("knflow_runs_in_flight", 0.0), m.get("knflow_runs_started_total", 0.0), finished


# ---------------------------------------------------------------------------------------------
# Load: wrk with a Lua script (POST {} with the token) for the throughput and unloaded runs, the
# open-loop generator (bench/open_loop.cpp) for the half-load runs

def write_lua(tmp: Path, name: str, token: str | None) -> Path:
    lines = ['wrk.method = "POST"', 'wrk.body = "{}"',
             'wrk.headers["Content-Type"] = "application/json"']
    if token:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {token}"')
    path = tmp / f"{name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def measured(args, pids, quiet: bool, argv: list[str], timeout: float
             ) -> tuple[subprocess.CompletedProcess, dict]:
    """Runs one load generator (argv) with the bookkeeping every measured run shares: waits for
    a quiet machine (if quiet), then reads the CPU time of the servers (pids(), from /proc), of
    the generator (a child: getrusage) and of the whole machine around it; "other_cores" is what
    the rest of the machine used meanwhile, in cores."""
    waited, background = wait_for_quiet(args) if quiet and args.quiet_wait > 0 else (0.0, 0.0)
    pid_list = pids()
    cpu0 = [cpu_seconds([p]) for p in pid_list]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0 = cpu_busy_ticks()
    t0 = time.monotonic()
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                         preexec_fn=die_with_parent)
    elapsed = time.monotonic() - t0
    busy1 = cpu_busy_ticks()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1 = [cpu_seconds([p]) for p in pid_list]
    r = {"cpu_s": [b - a for a, b in zip(cpu0, cpu1)],
         "client_cpu_s": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)}
    machine_busy = (busy1 - busy0) / CLK_TCK
    r["other_cores"] = max(0.0, (machine_busy - sum(r["cpu_s"]) - r["client_cpu_s"]) / elapsed)
    r["background_cores"] = background
    r["quiet_waited_s"] = waited
    return res, r


def run_wrk(args, url: str, script: Path, duration: float, pids, threads: int,
            connections: int, quiet: bool = True) -> dict:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(duration)}s", "--latency",
            "-s", str(script), url]
    res, book = measured(args, pids, quiet, argv, duration + 60)
    if res.returncode != 0:
        raise BenchError(f"wrk failed ({res.returncode}): {res.stderr}")
    r = parse_wrk(res.stdout)
    if r["non2xx"]:
        raise BenchError(f"{url}: {r['non2xx']} answers were not 2xx:\n{res.stdout}")
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                  res.stdout)
    r["timeouts"] = int(m.group(4)) if m else 0
    if r["socket_errors"] > r["timeouts"]:
        raise BenchError(f"{url}: {r['socket_errors_text']}\n{res.stdout}")
    if r["timeouts"]:
        # wrk counts a request unanswered after 2 s as a timeout: a stalled machine, not a
        # broken measurement; kept and shown in the table of runs.
        log(f"  warning: {r['timeouts']} requests took over 2 s ({url})")
    r.update(book)
    r["threads"], r["connections"], r["duration"] = threads, connections, int(duration)
    return r


def open_loop_argv(binary: Path | str, url: str, token: str | None, rate: float, duration: float,
                   warmup: float, connections: int) -> list[str]:
    return [str(binary), "--url", url, "--rate", f"{rate:.1f}", "--duration", str(duration),
            "--warmup", f"{warmup:g}", "--connections", str(connections),
            *(["--header", f"Authorization: Bearer {token}"] if token else []),
            "--body", "{}", "--content-type", "application/json"]


def run_open_loop(args, binary: Path, url: str, token: str | None, rate: float,
                  duration: float, pids) -> dict:
    """bench/open_loop.cpp at a constant `rate`: request i due at t0 + i / rate, latency from
    its due time to its answer (coordinated omission corrected)."""
    argv = open_loop_argv(binary, url, token, rate, duration, args.latency_warmup,
                          args.latency_connections)
    res, book = measured(args, pids, True, argv, args.latency_warmup + duration + 60)
    if res.returncode != 0:
        raise BenchError(f"open-loop generator failed ({res.returncode}): {res.stderr.strip()}")
    try:
        g = json.loads(res.stdout)
    except json.JSONDecodeError:
        raise BenchError(f"cannot parse the open-loop generator's output:\n{res.stdout}")
    if g["non2xx"]:
        raise BenchError(f"{url}: {g['non2xx']} answers were not 2xx")
    errors = {k: x for k, x in g["errors"].items() if k != "timeout" and x}
    if errors:
        raise BenchError(f"{url}: open-loop generator errors {errors}")
    if g["errors"]["timeout"]:
        # Still unanswered 10 s after the last was due: a stalled machine, not a broken
        # measurement; kept and shown in the table of runs.
        log(f"  warning: {g['errors']['timeout']} requests unanswered after 10 s ({url})")
    lat = g["latency_ms"]
    r = {"rps": g["rate"], "target_rps": g["target_rate"], "requests": g["requests"],
         "p50_ms": lat["p50"], "p75_ms": lat["p75"], "p90_ms": lat["p90"], "p99_ms": lat["p99"],
         "p999_ms": lat["p999"], "max_ms": lat["max"], "mean_ms": lat["mean"],
         "lateness_ms": g["lateness_ms"], "timeouts": g["errors"]["timeout"],
         "connections": args.latency_connections, "connections_used": g["connections_used"],
         "reconnects": g["reconnects"], "max_queued": g["max_queued"],
         "generator_cpu_s": g["cpu_s"], "duration": duration, "warmup": args.latency_warmup}
    r.update(book)
    return r


def latency_duration(args, rate: float) -> int:
    # Enough requests for a p99 (at least --latency-requests), within [--latency-duration, 30 s].
    return int(max(args.latency_duration, min(30, math.ceil(args.latency_requests / rate))))


# ---------------------------------------------------------------------------------------------
# SQLite: the cost of one small commit on the same disk, as knflow opens its database

def sqlite_commit_cost(directory: Path, n: int) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "commit.db"
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL) STRICT")
        payload = "x" * 200
        times = []
        for i in range(n + 50):
            t0 = time.perf_counter()
            con.execute("BEGIN")
            con.execute("INSERT INTO t (v) VALUES (?)", (payload,))
            con.execute("COMMIT")
            if i >= 50:  # the first 50 warm the page cache and the WAL
                times.append(time.perf_counter() - t0)
        fs = subprocess.run(["df", "-T", str(directory)], capture_output=True, text=True
                            ).stdout.splitlines()[-1].split()
    finally:
        con.close()
    times.sort()
    return {"n": n, "mean_ms": statistics.fmean(times) * 1000,
            "p50_ms": times[len(times) // 2] * 1000, "p99_ms": times[int(len(times) * 0.99)] * 1000,
            "max_ms": times[-1] * 1000,
            "total_s": sum(times), "fs": fs[1] if len(fs) > 1 else "?",
            "sqlite": sqlite3.sqlite_version}


# ---------------------------------------------------------------------------------------------
# Parts 1 and 2: throughput and per-step overhead

def bench_calls(args, children, tmp, kn: Knflow, ngx_port: int, ngx_pids, proxy_port: int,
                proxy_pids, open_loop: Path) -> dict:
    token = kn.token
    kn_pids = lambda: [kn.proc.pid, *ngx_pids()]  # noqa: E731  (knflow first, then nginx)
    proxied_pids = lambda: kn_pids() + proxy_pids()  # noqa: E731  (the proxy's last)
    direct_url = f"http://127.0.0.1:{ngx_port}/echo"
    proxy_url = f"http://127.0.0.1:{proxy_port}/echo"
    post_kn = write_lua(tmp, "post-knflow", token)
    post_direct = write_lua(tmp, "post-direct", token)
    urls = {n: f"http://127.0.0.1:{kn.port}{invoke_path(f'seq-{n}')}" for n in args.steps}
    # Interleaved in this order; the proxy is the reference ceiling (no target).
    targets = (("knflow", urls[1], post_kn, kn_pids),
               ("direct", direct_url, post_direct, kn_pids),
               ("proxy", proxy_url, post_direct, proxied_pids))

    log("part 2: throughput, 1-step invokes vs direct POSTs to the echo function, and through "
        "nginx as a reverse proxy")
    for name, url, script, pids in targets:
        log(f"  warm-up {name} ({args.warmup} s)")
        run_wrk(args, url, script, args.warmup, pids, args.wrk_threads, args.connections,
                quiet=False)
    runs: dict[str, list[dict]] = {name: [] for name, *_ in targets}
    for rnd in range(args.rounds):
        for name, url, script, pids in targets:
            r = run_wrk(args, url, script, args.duration, pids, args.wrk_threads,
                        args.connections)
            r["round"] = rnd + 1
            runs[name].append(r)
            if name == "proxy":
                r["proxy_cpu_s"] = sum(r["cpu_s"][-len(proxy_pids()):])
                log(f"  {name} run {rnd + 1}: {r['rps']:,.0f} req/s, p50 {r['p50_ms']:.3f} ms, "
                    f"p99 {r['p99_ms']:.3f} ms, proxy nginx CPU {r['proxy_cpu_s']:.2f} s, echo "
                    f"nginx CPU {sum(r['cpu_s'][1:]) - r['proxy_cpu_s']:.2f} s, other "
                    f"{r['other_cores']:.2f} cores")
                continue
            log(f"  {name} run {rnd + 1}: {r['rps']:,.0f} req/s, p50 {r['p50_ms']:.3f} ms, "
                f"p99 {r['p99_ms']:.3f} ms, knflow CPU {r['cpu_s'][0]:.2f} s, nginx CPU "
                f"{sum(r['cpu_s'][1:]):.2f} s, other {r['other_cores']:.2f} cores")
    best = {name: max(rs, key=lambda r: r["rps"]) for name, rs in runs.items()}

    log("part 1: per-step overhead at half load")
    max_rps = {1: best["knflow"]["rps"]}
    max_runs = {1: best["knflow"]}
    for n in args.steps:
        if n == 1:
            continue
        r = run_wrk(args, urls[n], post_kn, args.duration, kn_pids, args.wrk_threads,
                    args.connections)
        max_rps[n], max_runs[n] = r["rps"], r
        log(f"  seq-{n} maximum: {r['rps']:,.0f} invokes/s ({r['rps'] * n:,.0f} calls/s)")
    steps = {}
    for n in args.steps:
        rate = max_rps[n] / 2
        k = run_open_loop(args, open_loop, urls[n], token, rate, latency_duration(args, rate),
                          kn_pids)
        d = run_open_loop(args, open_loop, direct_url, token, rate * n,
                          latency_duration(args, rate * n), kn_pids)
        ov50 = (k["p50_ms"] - n * d["p50_ms"]) / n
        ov99 = (k["p99_ms"] - n * d["p99_ms"]) / n
        steps[n] = {"max_rps": max_rps[n], "knflow": k, "direct": d,
                    "overhead_p50_ms": ov50, "overhead_p99_ms": ov99}
        log(f"  seq-{n} at {k['rps']:,.0f}/s ({k['rps'] / max_rps[n]:.2f} of max; "
            f"{k['connections_used']} conns, sent late {k['lateness_ms']['mean']:.3f} ms): "
            f"p50 {k['p50_ms']:.3f} ms p99 {k['p99_ms']:.3f} ms; direct at {d['rps']:,.0f}/s: "
            f"p50 {d['p50_ms']:.3f} ms p99 {d['p99_ms']:.3f} ms; overhead per step p50 "
            f"{ov50:.3f} ms p99 {ov99:.3f} ms")
    unloaded = {}
    if args.unloaded_duration > 0:
        # Informative: one request at a time (wrk -t1 -c1), no queueing behind other runs.
        d = run_wrk(args, direct_url, post_direct, args.unloaded_duration, kn_pids, 1, 1)
        unloaded["direct"] = d
        for n in args.steps:
            k = run_wrk(args, urls[n], post_kn, args.unloaded_duration, kn_pids, 1, 1)
            unloaded[n] = {"knflow": k, "overhead_p50_ms": (k["p50_ms"] - n * d["p50_ms"]) / n,
                           "overhead_p99_ms": (k["p99_ms"] - n * d["p99_ms"]) / n}
            log(f"  unloaded seq-{n}: p50 {k['p50_ms']:.3f} ms p99 {k['p99_ms']:.3f} ms "
                f"(direct p50 {d['p50_ms']:.3f} ms): overhead per step p50 "
                f"{unloaded[n]['overhead_p50_ms']:.3f} ms")
    return {"runs": runs, "best": best, "max_runs": max_runs, "steps": steps,
            "unloaded": unloaded}


# ---------------------------------------------------------------------------------------------
# Part 3: fork scaling

def bench_fork(args, kn: Knflow, delay_port: int) -> dict:
    log(f"part 3: fork scaling, K = {args.fork} branches of a {args.delay_ms:g} ms function")
    token = kn.token
    ks = [1, *[k for k in args.fork if k != 1]]
    conn = http.client.HTTPConnection("127.0.0.1", kn.port, timeout=60)

    def invoke(k: int) -> float:
        t0 = time.perf_counter()
        status, body = request(kn.port, "POST", invoke_path(f"fork-{k}"), token, b"{}",
                               "application/json", conn=conn)
        dt = time.perf_counter() - t0
        if status != 200:
            raise BenchError(f"invoke fork-{k}: {status} {body[:300]!r}")
        if len(json.loads(body)) != k:
            raise BenchError(f"invoke fork-{k}: expected {k} branch outputs, got {body[:200]!r}")
        return dt * 1000

    # Direct baseline: K concurrent POSTs to the delay function from K keep-alive connections.
    local = threading.local()

    def direct_one(_):
        c = getattr(local, "conn", None)
        if c is None:
            c = local.conn = http.client.HTTPConnection("127.0.0.1", delay_port, timeout=60)
        status, _ = request(delay_port, "POST", "/", None, b"{}", "application/json", conn=c)
        if status != 200:
            raise BenchError(f"delay function: {status}")

    pool = concurrent.futures.ThreadPoolExecutor(max(ks))

    def direct(k: int) -> float:
        t0 = time.perf_counter()
        list(pool.map(direct_one, range(k)))
        return (time.perf_counter() - t0) * 1000

    try:
        for k in ks:  # warm-up: connections opened, first-use paths taken
            for _ in range(3):
                invoke(k)
                direct(max(ks))
        if args.quiet_wait > 0:
            wait_for_quiet(args)
        lat = {k: [] for k in ks}
        dlat = {k: [] for k in ks}
        cpu0 = cpu_seconds([kn.proc.pid])
        for _ in range(args.fork_invokes):  # interleaved, so that disturbances hit every K
            for k in ks:
                lat[k].append(invoke(k))
            for k in ks:
                dlat[k].append(direct(k))
        cpu1 = cpu_seconds([kn.proc.pid])
    finally:
        pool.shutdown()
        conn.close()

    def summary(xs):
        xs = sorted(xs)
        return {"p50": statistics.median(xs), "p90": xs[int(len(xs) * 0.9)], "min": xs[0],
                "max": xs[-1]}
    out = {"ks": ks, "invokes": args.fork_invokes, "knflow": {k: summary(v) for k, v in lat.items()},
           "direct": {k: summary(v) for k, v in dlat.items()},
           "knflow_cpu_s": cpu1 - cpu0, "branches_total": args.fork_invokes * sum(ks)}
    base = out["knflow"][1]["p50"]
    for k in ks:
        s = out["knflow"][k]
        log(f"  fork-{k}: p50 {s['p50']:.1f} ms p90 {s['p90']:.1f} ms, {s['p50'] / base:.3f}× "
            f"1 branch; direct {out['direct'][k]['p50']:.1f} ms")
    return out


# ---------------------------------------------------------------------------------------------
# Part 4: memory

def wait_runs(kn: Knflow, predicate, timeout: float, what: str) -> tuple[float, float, float]:
    deadline = time.monotonic() + timeout
    while True:
        state = runs_state(kn)
        if predicate(*state):
            return state
        if time.monotonic() > deadline:
            raise BenchError(f"{kn.name}: {what} not reached after {timeout:.0f} s "
                             f"(in flight {state[0]:.0f}, started {state[1]:.0f}, "
                             f"finished {state[2]:.0f})")
        time.sleep(0.2)


def start_async(kn: Knflow, workflow: str, count: int, clients: int) -> float:
    """Starts `count` runs with ?mode=async from `clients` keep-alive connections; returns seconds."""
    token = kn.token
    local = threading.local()
    path = invoke_path(workflow, "async")

    def one(i: int) -> None:
        c = getattr(local, "conn", None)
        if c is None:
            c = local.conn = http.client.HTTPConnection("127.0.0.1", kn.port, timeout=30)
        for attempt in range(200):
            status, body = request(kn.port, "POST", path, token, b"{}", "application/json",
                                   conn=c)
            if status == 202:
                return
            if status == 503:  # --max-active-runs reached: let some finish
                time.sleep(0.05)
                continue
            raise BenchError(f"async invoke {workflow} #{i}: {status} {body[:300]!r}")
        raise BenchError(f"async invoke {workflow} #{i}: still 503 after 200 attempts")

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(count)))
    return time.monotonic() - t0


def settled_rss(kn: Knflow, settle: float) -> dict[str, int]:
    time.sleep(settle)
    st = kn.rss()
    st["children_rss"] = sum(proc_status(p).get("VmRSS", 0) for p in child_pids(kn.proc.pid))
    st["children"] = len(child_pids(kn.proc.pid))
    return st


def count_runs(kn: Knflow) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", kn.port, timeout=60)
    total, cont = 0, None
    try:
        while True:
            q = "limit=1000" + (f"&continue={cont}" if cont else "")
            status, body = request(kn.port, "GET", f"{NS_PATH}/runs?{q}", kn.token, conn=conn)
            if status != 200:
                raise BenchError(f"list runs: {status} {body[:300]!r}")
            doc = json.loads(body)
            total += len(doc["items"])
            cont = doc.get("metadata", {}).get("continue")
            if not cont:
                return total
    finally:
        conn.close()


def bench_memory(args, children, tmp, ngx_port: int) -> dict:
    log(f"part 4: memory, {args.inflight} runs in flight, {args.finished} finished runs stored")
    out: dict = {}
    # In flight: a workflow that only waits.
    kn = Knflow(children, args.knflow, tmp / "mem-inflight-data", args.threads, "knflow-inflight")
    kn.start()
    create(kn, wait_workflow(args.wait_seconds))
    kn.stop()
    kn.start()
    idle = settled_rss(kn, args.settle)
    secs = start_async(kn, f"wait-{args.wait_seconds}s", args.inflight, args.clients)
    state = wait_runs(kn, lambda f, s, d: s >= args.inflight, 30, "all runs started")
    busy = settled_rss(kn, args.settle)
    in_flight_seen = runs_state(kn)[0]
    if in_flight_seen < args.inflight:
        raise BenchError(f"only {in_flight_seen:.0f} runs in flight when measuring; raise "
                         f"--wait-seconds")
    log(f"  idle {idle['VmRSS'] / MIB:.1f} MiB; {args.inflight} runs started in {secs:.1f} s, "
        f"in flight {in_flight_seen:.0f}: {busy['VmRSS'] / MIB:.1f} MiB")
    wait_runs(kn, lambda f, s, d: f == 0 and d >= args.inflight, args.wait_seconds + 60,
              "all waits finished")
    after = settled_rss(kn, args.settle)
    kn.stop()
    out["inflight"] = {"idle": idle, "busy": busy, "after": after, "start_s": secs,
                       "in_flight": in_flight_seen, "count": args.inflight}
    log(f"  after they finished: {after['VmRSS'] / MIB:.1f} MiB")

    # Finished: 1-step runs against the echo function.
    kn = Knflow(children, args.knflow, tmp / "mem-finished-data", args.threads, "knflow-finished")
    kn.start()
    create(kn, seq_workflow(1, f"http://127.0.0.1:{ngx_port}/echo"))
    kn.stop()
    kn.start()
    idle = settled_rss(kn, args.settle)
    secs = start_async(kn, "seq-1", args.finished, args.clients)
    state = wait_runs(kn, lambda f, s, d: f == 0 and d >= args.finished, 300, "all runs finished")
    done = settled_rss(kn, args.settle)
    log(f"  idle {idle['VmRSS'] / MIB:.1f} MiB; {args.finished} runs in {secs:.1f} s "
        f"(finished {state[2]:.0f}): {done['VmRSS'] / MIB:.1f} MiB")
    kn.stop()
    db_bytes = sum(p.stat().st_size for p in kn.data_dir.glob("knflow.db*"))
    kn.start()
    restarted = settled_rss(kn, args.settle)
    stored = count_runs(kn)
    kn.stop()
    if stored != args.finished:
        raise BenchError(f"{stored} runs stored after the restart, expected {args.finished}")
    log(f"  after a restart with {stored} stored runs: {restarted['VmRSS'] / MIB:.1f} MiB")
    out["finished"] = {"idle": idle, "done": done, "restarted": restarted, "run_s": secs,
                       "count": args.finished, "stored": stored, "db_bytes": db_bytes}
    out["commands"] = {"knflow": shlex.join(kn.argv(0))}
    return out


# ---------------------------------------------------------------------------------------------
# Report

def ms(x: float) -> str:
    if abs(x) < 1:
        return f"{x:.3f} ms"
    return f"{x:.2f} ms" if abs(x) < 10 else f"{x:.1f} ms"


def kib(x: float) -> str:
    return f"{x / 1024:.1f} KiB" if abs(x) >= 1024 else f"{x:.0f} B"


def evaluate(args, calls, fork, mem, commit) -> dict:
    v: dict = {}
    if calls:
        v["tp_ratio"] = calls["best"]["knflow"]["rps"] / calls["best"]["direct"]["rps"]
        v["tp_ok"] = v["tp_ratio"] >= 0.4
        if "proxy" in calls["best"]:  # absent from files written before it was measured
            v["proxy_ratio"] = calls["best"]["proxy"]["rps"] / calls["best"]["direct"]["rps"]
        v["p50_limit"] = 0.25 + commit["mean_ms"]
        for n, s in calls["steps"].items():
            s["p50_ok"] = s["overhead_p50_ms"] <= v["p50_limit"]
            s["p99_ok"] = s["overhead_p99_ms"] <= 2.0
    if fork:
        base = fork["knflow"][1]["p50"]
        v["fork"] = {k: fork["knflow"][k]["p50"] / base for k in fork["ks"] if k != 1}
        v["fork_ok"] = {k: r <= 1.1 for k, r in v["fork"].items()}
    return v


def section(args, meta, calls, fork, mem, commit, v, notes: str) -> str:
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
    steps = ", ".join(str(n) for n in args.steps)
    forks = ", ".join(str(k) for k in args.fork)
    # Files written before the reverse proxy was measured hold throughput figures without it.
    with_proxy = not calls or "proxy" in calls["best"]
    o = [
        SECTION, "",
        "How much the engine adds to the functions it calls. Written by `bench/engine_run.sh`",
        "(driver `bench/engine_bench.py`, Python 3 standard library); like the sections above it",
        "is not a test and never runs in CI. Everything listens on 127.0.0.1 under one temporary",
        "directory; every process it starts (knflow, nginx, the delay function, the load",
        "generators) is stopped on exit however the run ends; it runs a copy of",
        "`build/release/knflow` taken at the start.",
        "It rewrites only this section (the part between the `engine-analysis` markers is written",
        "by hand and kept); `bench/run.sh` keeps this section when it rewrites its own.",
        "",
        "```sh",
        "KNFLOW_BENCH_DEPS=1 scripts/install-deps.sh   # wrk and nginx-light (Debian)",
        "cmake --preset release && cmake --build --preset release",
        "bench/engine_run.sh               # about 6 minutes; rewrites this section",
        "bench/engine_run.sh --no-doc      # print the tables only",
        "bench/engine_run.sh --only fork   # one part: calls (1 and 2), fork, memory",
        "bench/engine_run.sh --from-json F # rewrite this section from a --json F run's figures",
        "bench/engine_profile.sh [N]       # perf and strace of seq-N invokes under wrk -t2 -c32",
        "```",
        "",
        "### Method",
        "",
        f"- **Daemon:** `knflow serve --threads {args.threads}` on a fresh data directory, default",
        "  options otherwise (log level `info`: one log line per finished run).",
        f"- **Echo function:** Debian's nginx, `worker_processes {args.threads}`, answering every",
        "  request with `return 200 '{\"ok\":true}'` and `default_type application/json` (no `ce-*`",
        "  headers, so the engine turns the body into the event's data), access log off, unlimited",
        "  keep-alive. Configuration below.",
        f"- **Delay function:** `bench/delay_function.cpp`, compiled for the run (`c++ -O2`), one",
        f"  thread per connection, answers the same body {args.delay_ms:g} ms after each request",
        "  (a blocking sleep per connection, so concurrent requests wait in parallel).",
        f"- **Workflows:** `seq-N`, N ∈ {{{steps}}} sequential `call` steps to the echo function;",
        f"  `fork-K`, one `fork` (`join: all`) of K ∈ {{1, {forks}}} branches each calling the delay",
        f"  function; `wait-{args.wait_seconds}s`, one `wait: PT{args.wait_seconds}S` step.",
        "- **Client:** wrk with a Lua script posting `{}` as `application/json` with the",
        "  `Authorization` header, to `POST .../workflows/NAME:invoke` (synchronous) and, as the",
        "  baseline, straight to the echo function; at half load, the same request from an",
        "  open-loop generator, `bench/open_loop.cpp` (below). Same machine: the client, nginx and",
        f"  knflow share the {m['nproc']} cores. Before each measured run the script waits (up to",
        f"  {args.quiet_wait:g} s) for the rest of the machine to use less than {args.quiet_cores} cores.",
        f"- **Throughput (2):** `wrk -t{args.wrk_threads} -c{args.connections} -d{args.duration}s` on",
        f"  `seq-1` and on the echo function, one {args.warmup} s warm-up each, then {args.rounds} rounds",
        "  interleaved; the better run of each is compared.",
        *(["- **Reverse proxy (2, reference ceiling, no target):** the same wrk load, with the same",
           "  warm-up, in the same interleaved rounds (`seq-1`, echo, proxy), through a second nginx",
           f"  in front of the echo function acting as a plain reverse proxy: `worker_processes {args.threads}`",
           "  like the daemon's `--threads`, `proxy_pass` to an `upstream` with `keepalive 64` (and",
           "  `keepalive_requests 1000000`), `proxy_http_version 1.1`, `proxy_set_header Connection",
           "  \"\"`, access log off, `tcp_nodelay on`. Its better run ÷ the better direct run is the",
           "  share of the direct rate that one HTTP hop through a mature proxy keeps on this",
           "  machine: the ceiling for the ratio of knflow. Configuration below."]
          if with_proxy else []),
        f"- **Per-step overhead (1):** the maximum invokes/s of `seq-N` is the same wrk run (for N = 1,",
        "  the better throughput run). Then `seq-N` is invoked at half that rate (\"half load\") by",
        "  `bench/open_loop.cpp`, an open-loop generator (one thread, Boost.Asio and Beast) compiled",
        "  for the run like the delay function. Request i is due at t0 + i ÷ rate, evenly spaced",
        "  whatever happened to the ones before. At its due time it goes out on an idle keep-alive",
        f"  connection, else on a new one (at most {args.latency_connections}; 4 are opened before the clock starts),",
        "  else it waits first in first out for the next connection to free. Its latency runs from",
        "  its due time to the last byte of its answer, so time spent waiting behind a slow answer",
        "  counts: coordinated omission corrected, as `wrk2 -R` does (wrk2 is not packaged in",
        "  Debian). The direct baseline is the same generator at N × that rate, the rate of calls",
        f"  the function receives from the knflow run. Each run first sends {args.latency_warmup:g} s of requests",
        f"  that are not recorded, then lasts at least {args.latency_duration} s and until about",
        f"  {args.latency_requests:,} requests (at most 30 s). \"Sent late\" is when the generator handed a due",
        "  request to a connection (or queued it when none was free) minus its due time: the",
        "  generator's own precision (an absolute-time timer per due time and no busy wait, so the",
        "  wake-up of a sleeping thread). It is part of every latency: the N direct latencies count",
        "  it N times and the knflow latency once, so the overhead per step is understated by about",
        "  (N − 1) ÷ N of it. Why not wrk: the half-load runs used to be `wrk -t1` with a Lua",
        "  `delay()`, each of C connections pausing a whole number of milliseconds after every",
        "  answer. wrk's timers have millisecond granularity, so the connections woke on the same",
        "  tick and, each sending only after its answer (closed loop), stayed in step: requests",
        "  arrived in bursts. nginx echo paced that way at 2.4 % of its capacity (3,848/s of",
        "  157k/s) answered at p50 0.225 ms, against 0.059 ms one request at a time: the figure",
        "  measured the generator's bursts. A closed-loop client also sends nothing while it waits,",
        "  so a stall delays the requests behind it without their wait being measured (coordinated",
        "  omission). Overhead per step = (knflow latency − N × direct latency) ÷ N, at p50 and at",
        "  p99. Target: p50 ≤ 0.25 ms + one SQLite commit, p99 ≤ 2 ms. Then, for comparison only,",
        f"  one `wrk -t1 -c1 -d{args.unloaded_duration}s` run of the function and of each `seq-N` gives the same",
        "  figures without queueing.",
        f"- **SQLite commit:** Python's sqlite3 ({commit['sqlite'] if commit else '?'}) in the run's"
        " temporary directory (same file",
        "  system as the data directory), `journal_mode=WAL`, `synchronous=NORMAL` as knflow opens",
        f"  its database: {commit['n'] if commit else args.commits:,} transactions of one 200-byte"
        " INSERT each (after 50 unmeasured),",
        "  timed from `BEGIN` to the end of `COMMIT`; the mean is the \"one commit\" of the target.",
        f"- **Fork scaling (3):** one keep-alive client invokes `fork-1`, then each `fork-K`, in turn,",
        f"  {args.fork_invokes} times each after 3 warm-up invokes; ratio = median latency of `fork-K`",
        "  ÷ median of `fork-1` (target ≤ 1.1). For reference, the same client also sends K",
        "  concurrent POSTs straight to the delay function (K keep-alive connections, one thread",
        "  each) and times until all are answered.",
        f"- **Memory (4):** `VmRSS` of the daemon from `/proc/PID/status` ({args.settle:g} s after each",
        "  step; the jq worker processes, if any, are not included). In flight: a daemon whose data",
        f"  directory holds `wait-{args.wait_seconds}s` is restarted (idle), {args.inflight:,} runs are started",
        f"  with `?mode=async` by {args.clients} keep-alive clients, measured once the daemon counts all of",
        "  them in flight (`knflow_runs_in_flight`), and again after they finished. Finished: a",
        f"  daemon holding `seq-1` is restarted (idle), {args.finished:,} runs are started with",
        "  `?mode=async` and measured once all finished; then the daemon is restarted and measured",
        "  idle again, and the stored runs are counted through `GET .../runs`. Per run = difference",
        "  to the idle figure of the same data directory ÷ number of runs. MiB = 2^20 bytes.",
        "",
        "### Results",
        "",
        f"- date: {meta['date']}",
        f"- machine: {m['nproc_cmd']} CPUs (`nproc`), {m['cpu']}, {m['mem_gib']:.1f} GiB memory, "
        f"Linux {m['kernel']}",
        f"- measured binary: `{tv['knflow']}`, release build; checkout at `{g['commit'][:12]}` "
        f"({g['subject']}).{stale}{dirty}",
        f"- tools: {tv['nginx']}, {tv['wrk']}, Python {tv['python']}",
        f"- load average (1 min) at the start: {meta['loadavg'][0]:.2f}; other work on the machine "
        "disturbs every figure (see \"other CPU\").",
        "",
    ]
    if calls:
        b = calls["best"]
        k, d = b["knflow"], b["direct"]
        o += [
            "#### Throughput and per-step overhead", "",
            "| | knflow | direct | ratio | target | |",
            "|---|---:|---:|---:|---|---|",
            f"| 1-step invokes/s vs direct POSTs/s (`wrk -t{args.wrk_threads} -c{args.connections}`) | "
            f"{k['rps']:,.0f} | {d['rps']:,.0f} | {v['tp_ratio']:.3f}× | ≥ 0.4× | "
            f"{verdict(v['tp_ok'])} |",
            f"| latency p50 / p99 at that load | {ms(k['p50_ms'])} / {ms(k['p99_ms'])} | "
            f"{ms(d['p50_ms'])} / {ms(d['p99_ms'])} | | | |",
            f"| knflow CPU per invoke, nginx CPU per request | "
            f"{k['cpu_s'][0] * 1e6 / k['requests']:.0f} µs (+ nginx {sum(k['cpu_s'][1:]) * 1e6 / k['requests']:.0f} µs) | "
            f"{sum(d['cpu_s'][1:]) * 1e6 / d['requests']:.0f} µs | | | |",
        ]
        if "proxy" in b:
            px = b["proxy"]
            o.append(
                "| nginx reverse proxy (`proxy_pass`, keep-alive upstream) ÷ direct: requests/s; "
                "p50 / p99; nginx-proxy CPU per request | "
                f"{px['rps']:,.0f}; {ms(px['p50_ms'])} / {ms(px['p99_ms'])}; "
                f"{px['proxy_cpu_s'] * 1e6 / px['requests']:.0f} µs (+ echo nginx "
                f"{(sum(px['cpu_s'][1:]) - px['proxy_cpu_s']) * 1e6 / px['requests']:.0f} µs) | "
                f"{d['rps']:,.0f} | {v['proxy_ratio']:.3f}× | none: the ceiling | |")
        o += [
            "",
            f"Per-step overhead at half load (target p50 ≤ 0.25 ms + one commit "
            f"= {ms(v['p50_limit'])}; p99 ≤ 2 ms):",
            "",
            "| N steps | max invokes/s | half-load rate (÷ max) | knflow p50 / p99 | direct rate | "
            "direct p50 / p99 | overhead per step p50 | | overhead per step p99 | |",
            "|---:|---:|---|---:|---:|---:|---:|---|---:|---|",
        ]
        for n, s in calls["steps"].items():
            kk, dd = s["knflow"], s["direct"]
            o.append(
                f"| {n} | {s['max_rps']:,.0f} | {kk['rps']:,.0f}/s = {kk['rps'] / s['max_rps']:.2f}× "
                f"({kk['requests']:,} invokes) | "
                f"{ms(kk['p50_ms'])} / {ms(kk['p99_ms'])} | {dd['rps']:,.0f}/s | "
                f"{ms(dd['p50_ms'])} / {ms(dd['p99_ms'])} | {ms(s['overhead_p50_ms'])} | "
                f"{verdict(s['p50_ok'])} | {ms(s['overhead_p99_ms'])} | {verdict(s['p99_ok'])} |")
        u = calls.get("unloaded") or {}
        if u:
            du = u["direct"]
            o += ["", f"For comparison, without queueing (`wrk -t1 -c1 -d{args.unloaded_duration}s`, "
                  "one request at a time; no target): the echo function directly answers at "
                  f"p50 {ms(du['p50_ms'])} / p99 {ms(du['p99_ms'])}.", "",
                  "| N steps | invokes/s | knflow p50 / p99 | overhead per step p50 | p99 |",
                  "|---:|---:|---:|---:|---:|"]
            for n in args.steps:
                kk = u[n]["knflow"]
                o.append(f"| {n} | {kk['rps']:,.0f} | {ms(kk['p50_ms'])} / {ms(kk['p99_ms'])} | "
                         f"{ms(u[n]['overhead_p50_ms'])} | {ms(u[n]['overhead_p99_ms'])} |")
        o += ["",
              f"One SQLite commit (same disk, {commit['fs']}): mean {commit['mean_ms'] * 1000:.0f} µs, "
              f"p50 {commit['p50_ms'] * 1000:.0f} µs, p99 {commit['p99_ms'] * 1000:.0f} µs, max "
              f"{commit['max_ms']:.1f} ms over {commit['n']:,} commits (the mean includes the "
              "automatic WAL checkpoints, with their `fdatasync`).", "",
              "Every run behind these figures (client CPU: wrk's or the open-loop generator's; sent "
              "late: see Method; timeouts: wrk's requests over 2 s, the generator's unanswered 10 s "
              "after the last was due):", "",
              "| run | target | client (wrk threads × conns) | requests/s | p50 | p90 | p99 | "
              "knflow CPU | nginx CPU | client CPU | sent late mean / p99 | other CPU (cores) | "
              "timeouts |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        rows = []
        run_target = {"knflow": "seq-1", "direct": "echo", "proxy": "nginx proxy"}
        for rnd in range(args.rounds):
            for name in ("knflow", "direct", "proxy"):
                if rnd < len(calls["runs"].get(name, [])):
                    rows.append((f"throughput {rnd + 1}", run_target[name],
                                 calls["runs"][name][rnd]))
        for n, r in calls["max_runs"].items():
            if n != 1:
                rows.append(("maximum", f"seq-{n}", r))
        for n, s in calls["steps"].items():
            rows.append(("half load", f"seq-{n}", s["knflow"]))
            rows.append((f"direct for N={n}", "echo", s["direct"]))
        u = calls.get("unloaded") or {}
        if u:
            rows.append(("unloaded", "echo", u["direct"]))
            for n in args.steps:
                rows.append(("unloaded", f"seq-{n}", u[n]["knflow"]))
        for label, target, r in rows:
            kc = f"{r['cpu_s'][0]:.2f} s" if target not in ("echo", "nginx proxy") else "–"
            nc = f"{sum(r['cpu_s'][1:]):.2f} s"
            if "proxy_cpu_s" in r:
                nc += f" (proxy {r['proxy_cpu_s']:.2f} s)"
            if "lateness_ms" in r:  # the open-loop generator
                client = (f"open loop, {r['connections']} conns max "
                          f"({r['connections_used']} used)")
                late = f"{ms(r['lateness_ms']['mean'])} / {ms(r['lateness_ms']['p99'])}"
            else:
                client, late = f"{r['threads']} × {r['connections']}", "–"
            o.append(f"| {label} | {target} | {client} | "
                     f"{r['rps']:,.0f} | {ms(r['p50_ms'])} | {ms(r['p90_ms'])} | "
                     f"{ms(r['p99_ms'])} | {kc} | {nc} | {r['client_cpu_s']:.2f} s | {late} | "
                     f"{r['other_cores']:.2f} | {r['timeouts']} |")
        o.append("")
    if fork:
        base = fork["knflow"][1]["p50"]
        dbase = fork["direct"][1]["p50"]
        o += ["#### Fork scaling", "",
              f"{fork['invokes']} invokes per workflow, one at a time; latency in ms.", "",
              "| K branches | knflow p50 | p90 | min – max | ÷ 1 branch (p50) | target | | "
              "direct K POSTs p50 | ÷ 1 |",
              "|---:|---:|---:|---:|---:|---|---|---:|---:|"]
        for k in fork["ks"]:
            s, dd = fork["knflow"][k], fork["direct"][k]
            if k == 1:
                cells = "1.000× | | "
            else:
                cells = f"{s['p50'] / base:.3f}× | ≤ 1.1× | {verdict(v['fork_ok'][k])}"
            o.append(f"| {k} | {s['p50']:.1f} | {s['p90']:.1f} | {s['min']:.1f} – {s['max']:.1f} | "
                     f"{cells} | {dd['p50']:.1f} | {dd['p50'] / dbase:.3f}× |")
        o += ["", f"knflow CPU over the measured invokes: {fork['knflow_cpu_s']:.2f} s for "
              f"{fork['branches_total']:,} branch calls "
              f"({fork['knflow_cpu_s'] * 1e6 / fork['branches_total']:.0f} µs per branch).", ""]
    if mem:
        fl, fi = mem["inflight"], mem["finished"]
        per_flight = (fl["busy"]["VmRSS"] - fl["idle"]["VmRSS"]) / fl["count"]
        per_done = (fi["done"]["VmRSS"] - fi["idle"]["VmRSS"]) / fi["count"]
        per_restart = (fi["restarted"]["VmRSS"] - fi["idle"]["VmRSS"]) / fi["count"]
        o += ["#### Memory", "",
              "| daemon state | VmRSS | above idle | per run |", "|---|---:|---:|---:|",
              f"| idle, `wait-{args.wait_seconds}s` stored, no runs | {mib(fl['idle']['VmRSS'])} | | |",
              f"| {fl['count']:,} runs in flight (waiting; started in {fl['start_s']:.1f} s) | "
              f"{mib(fl['busy']['VmRSS'])} | {mib(fl['busy']['VmRSS'] - fl['idle']['VmRSS'])} | "
              f"**{kib(per_flight)}** per in-flight run |",
              f"| the same process after they finished | {mib(fl['after']['VmRSS'])} | "
              f"{mib(fl['after']['VmRSS'] - fl['idle']['VmRSS'])} | |",
              f"| idle, `seq-1` stored, no runs | {mib(fi['idle']['VmRSS'])} | | |",
              f"| {fi['count']:,} 1-step runs finished (run in {fi['run_s']:.1f} s), same process | "
              f"{mib(fi['done']['VmRSS'])} | {mib(fi['done']['VmRSS'] - fi['idle']['VmRSS'])} | "
              f"**{kib(per_done)}** per finished run |",
              f"| restarted with the {fi['stored']:,} finished runs stored | "
              f"{mib(fi['restarted']['VmRSS'])} | "
              f"{mib(fi['restarted']['VmRSS'] - fi['idle']['VmRSS'])} | "
              f"**{kib(per_restart)}** per stored run |",
              "",
              f"SQLite files (`knflow.db*`) holding the {fi['count']:,} finished runs: "
              f"{mib(fi['db_bytes'])} ({kib(fi['db_bytes'] / fi['count'])} per run, with the "
              "WAL). Peak RSS (VmHWM) of the in-flight daemon: "
              f"{mib(fl['after']['VmHWM'])}; of the daemon that ran the finished runs: "
              f"{mib(fi['done']['VmHWM'])}. Child processes of the daemon when measured: "
              f"{fl['busy']['children']} ({mib(fl['busy']['children_rss'])}).", ""]
    # Targets summary
    missed, met = [], []
    if calls:
        (met if v["tp_ok"] else missed).append(f"throughput ratio {v['tp_ratio']:.3f}× (≥ 0.4×)")
        for n, s in calls["steps"].items():
            (met if s["p50_ok"] else missed).append(
                f"N={n} p50 overhead {ms(s['overhead_p50_ms'])} (≤ {ms(v['p50_limit'])})")
            (met if s["p99_ok"] else missed).append(
                f"N={n} p99 overhead {ms(s['overhead_p99_ms'])} (≤ 2 ms)")
    if fork:
        for k, r in v["fork"].items():
            (met if v["fork_ok"][k] else missed).append(f"fork K={k} {r:.3f}× (≤ 1.1×)")
    o += ["#### Targets", ""]
    if met:
        o.append("Met: " + "; ".join(met) + ".")
    if missed:
        o += ["", "Missed: " + "; ".join(missed) + ". See the analysis below."]
    warmups = ("knflow, direct, then through the proxy" if calls and "proxy" in calls["best"]
               else "knflow then direct")
    o += ["", NOTES_BEGIN, notes.strip("\n"), NOTES_END, "", "#### Commands", "", "```sh",
          "# $TMP is the run's temporary directory, post.lua the script described above",
          shown(calls_cmd(args), args),
          shown(shlex.join(meta["ngx_argv"]), args),
          *([shown(shlex.join(meta["proxy_argv"]), args)] if "proxy_argv" in meta else []),
          shown(shlex.join(meta["delay_cc"]), args),
          shown(shlex.join(meta["delay_argv"]), args),
          f"wrk -t{args.wrk_threads} -c{args.connections} -d{args.warmup}s --latency -s post.lua <url>"
          f"   # warm-up, {warmups}",
          f"wrk -t{args.wrk_threads} -c{args.connections} -d{args.duration}s --latency -s post.lua <url>"
          f"   # {args.rounds} rounds interleaved; once per seq-N for N > 1",
          *([shown(shlex.join(meta["open_loop_cc"]), args),
             f"$TMP/open_loop --url <url> --rate <R> --duration <{args.latency_duration}..30> --warmup "
             f"{args.latency_warmup:g} --connections {args.latency_connections} --header "
             "'Authorization: Bearer <token>' --body '{}' --content-type application/json"
             "   # half load: seq-N at half its maximum, echo at N × that"]
            if "open_loop_cc" in meta else []),
          f"wrk -t1 -c1 -d{args.unloaded_duration}s --latency -s post.lua <url>   # unloaded, "
          "echo then each seq-N",
          "bench/engine_run.sh " + " ".join(shlex.quote(a) for a in args.passed), "```", "",
          "<details><summary>Echo function (nginx) configuration</summary>", "", "```nginx",
          shown(meta["ngx_conf"], args).rstrip(), "```", "", "</details>"]
    if "proxy_conf" in meta:
        o += ["", "<details><summary>Reverse proxy (nginx) configuration</summary>", "",
              "```nginx", shown(meta["proxy_conf"], args).rstrip(), "```", "", "</details>"]
    return "\n".join(o).replace("\n\n\n", "\n\n") + "\n"


def calls_cmd(args) -> str:
    return shlex.join([args.knflow, "serve", "--listen", "127.0.0.1:$PORT", "--data-dir",
                       "$TMP/<part>-data", "--threads", str(args.threads)])


def shown(text: str, args) -> str:
    text = text.replace(str(Path(args.tmp) / "knflow"), args.knflow_shown)
    text = text.replace(str(args.tmp), "$TMP").replace(str(ROOT) + "/", "")
    text = text.replace("'127.0.0.1:$PORT'", "127.0.0.1:$PORT").replace(
        "'$TMP/<part>-data'", "$TMP/<part>-data")
    text = re.sub(r"--port \d+", "--port $PORT", text)
    text = re.sub(r"server 127\.0\.0\.1:\d+;", "server 127.0.0.1:$ECHO_PORT;", text)
    return re.sub(r"listen 127\.0\.0\.1:\d+;", "listen 127.0.0.1:$PORT;", text)


DEFAULT_NOTES = "No analysis written yet for this machine."


def read_notes(text: str) -> str:
    m = re.search(re.escape(NOTES_BEGIN) + r"\n(.*?)" + re.escape(NOTES_END), text, re.S)
    return m.group(1) if m else DEFAULT_NOTES


def write_section(doc: Path, render) -> None:
    """Replaces this script's section of doc (or appends it), leaving every other byte alone.

    The file is re-read right before writing: others edit the sections above. No newline
    translation (newline=""), so bytes such as the CRLF of the HTTP heads quoted above stay."""
    text = "# Benchmarks\n"
    if doc.exists():
        with open(doc, encoding="utf-8", newline="") as f:
            text = f.read()
    start = text.find("\n" + SECTION + "\n")
    if start < 0:
        new = render(DEFAULT_NOTES)
        out = text.rstrip("\n") + "\n\n" + new
    else:
        start += 1
        m = re.compile(r"^## ", re.M).search(text, start + len(SECTION))
        end = m.start() if m else len(text)
        new = render(read_notes(text[start:end]))
        out = text[:start] + new + ("\n" + text[end:] if end < len(text) else "")
    with open(doc, "w", encoding="utf-8", newline="") as f:
        f.write(out)


# ---------------------------------------------------------------------------------------------

def tool_versions(args) -> dict:
    def first_line(argv):
        r = subprocess.run(argv, capture_output=True, text=True)
        return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr) else "?"
    return {"knflow": first_line([args.knflow, "version"]),
            "nginx": first_line([args.nginx, "-v"]).replace("nginx version: ", ""),
            "wrk": first_line(["wrk", "--version"]).split(" [")[0],
            "python": platform.python_version()}


def rewrite_from_json(args) -> int:
    """Renders the section again from a --json file (after a change to the text only)."""
    saved = json.loads(Path(args.from_json).read_text())
    for k, x in saved.get("args", {}).items():
        if k not in ("doc", "no_doc"):
            setattr(args, k, x)
    if "args" not in saved:  # files written before the arguments were saved: defaults
        args.tmp = saved["meta"]["ngx_argv"][2].rsplit("/echo-nginx", 1)[0]
        args.knflow_shown = "build/release/knflow"
        args.knflow = str(Path(args.tmp) / "knflow")
        args.passed = ["--json", args.from_json]

    def ints(d):
        return {int(k) if k.isdigit() else k: x for k, x in d.items()} if d else d
    calls, fork = saved["calls"], saved["fork"]
    if calls and any("lateness_ms" not in s["knflow"] for s in calls["steps"].values()):
        log(f"error: {args.from_json} was written before the half-load runs used the open-loop "
            "generator (no lateness_ms in its calls.steps); this version cannot render it: "
            "check out the commit that wrote it, or measure again")
        return 1
    if calls:
        for key in ("steps", "max_runs", "unloaded"):
            calls[key] = ints(calls.get(key))
    if fork:
        fork["knflow"], fork["direct"] = ints(fork["knflow"]), ints(fork["direct"])
    args.steps = [int(n) for n in args.steps]
    v = evaluate(args, calls, fork, saved["memory"], saved["commit"])
    render = lambda notes: section(args, saved["meta"], calls, fork, saved["memory"],  # noqa: E731
                                   saved["commit"], v, notes)
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
    p.add_argument("--nginx", default="/usr/sbin/nginx")
    p.add_argument("--tmp", help="empty temporary directory (bench/engine_run.sh makes one)")
    p.add_argument("--threads", type=int, default=2, help="knflow --threads = nginx workers")
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--duration", type=int, default=10, help="seconds per throughput run")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2, help="throughput runs per target")
    p.add_argument("--steps", type=int_list, default=[1, 5, 20], help="N of the seq-N workflows")
    p.add_argument("--latency-duration", type=int, default=10,
                   help="minimum seconds of a half-load latency run")
    p.add_argument("--latency-requests", type=int, default=3000,
                   help="a half-load run lasts until about this many requests (30 s at most)")
    p.add_argument("--latency-connections", type=int, default=64,
                   help="most keep-alive connections of the open-loop generator (half load)")
    p.add_argument("--latency-warmup", type=float, default=1,
                   help="seconds of requests sent but not recorded before each half-load run")
    p.add_argument("--unloaded-duration", type=int, default=5,
                   help="seconds of one extra wrk -t1 -c1 run per workflow and of the function "
                        "(latency without queueing, informative; 0 skips them)")
    p.add_argument("--commits", type=int, default=1000, help="SQLite commits timed")
    p.add_argument("--fork", type=int_list, default=[2, 8, 32], help="K of the fork-K workflows")
    p.add_argument("--fork-invokes", type=int, default=40)
    p.add_argument("--delay-ms", type=float, default=50)
    p.add_argument("--inflight", type=int, default=1000)
    p.add_argument("--wait-seconds", type=int, default=30)
    p.add_argument("--finished", type=int, default=10000)
    p.add_argument("--clients", type=int, default=4, help="keep-alive clients for async starts")
    p.add_argument("--settle", type=float, default=1.0, help="seconds before each RSS sample")
    p.add_argument("--quiet-wait", type=float, default=30,
                   help="before each measured wrk run, wait up to this many seconds for the "
                        "rest of the machine to go quiet (0: do not wait)")
    p.add_argument("--quiet-cores", type=float, default=0.2)
    p.add_argument("--only", choices=["calls", "fork", "memory"], help="run one part only")
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
        if a in ("--knflow", "--nginx", "--tmp"):
            skip = True
            continue
        if a.startswith(("--knflow=", "--nginx=", "--tmp=")):
            continue
        cleaned.append(a)
    args.passed = cleaned
    if 1 not in args.steps:
        args.steps = [1, *args.steps]

    if not args.tmp:
        import tempfile
        args.tmp = tempfile.mkdtemp(prefix="knflow-engine-bench.")
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    args.knflow_shown = os.path.relpath(args.knflow, ROOT) if args.knflow.startswith(
        str(ROOT)) else args.knflow
    copy = tmp / "knflow"
    shutil.copy2(args.knflow, copy)
    args.knflow = str(copy)
    children = Children(tmp / "pids")
    atexit.register(children.stop_all)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda signum, frame: sys.exit(128 + signum))

    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "git": git_info(), "tools": tool_versions(args),
            "loadavg": os.getloadavg()}
    log(f"knflow {meta['tools']['knflow']}, {meta['machine']['nproc']} CPUs, "
        f"load {meta['loadavg'][0]:.2f}")
    calls = fork = mem = commit = None
    try:
        ngx, ngx_port, conf_path, ngx_argv = start_echo_nginx(children, args.nginx, tmp,
                                                              args.threads)
        meta["ngx_conf"], meta["ngx_argv"] = conf_path.read_text(), ngx_argv
        ngx_pids = lambda: [ngx.pid, *child_pids(ngx.pid)]  # noqa: E731
        if args.only in (None, "calls"):
            proxy, proxy_port, conf_path, proxy_argv = start_proxy_nginx(
                children, args.nginx, tmp, args.threads, ngx_port)
            meta["proxy_conf"], meta["proxy_argv"] = conf_path.read_text(), proxy_argv
            proxy_pids = lambda: [proxy.pid, *child_pids(proxy.pid)]  # noqa: E731
        delay_bin, cc_argv = build_cpp(tmp, "delay_function")
        delay, delay_port, delay_argv = start_delay_function(children, tmp, delay_bin,
                                                             args.delay_ms)
        meta["delay_argv"], meta["delay_cc"] = delay_argv, cc_argv
        if args.only in (None, "calls", "fork"):
            kn = Knflow(children, args.knflow, tmp / "engine-data", args.threads, "knflow-engine")
            kn.start()
            for n in args.steps:
                create(kn, seq_workflow(n, f"http://127.0.0.1:{ngx_port}/echo"))
            for k in sorted({1, *args.fork}):
                create(kn, fork_workflow(k, f"http://127.0.0.1:{delay_port}/"))
            if args.only in (None, "calls"):
                commit = sqlite_commit_cost(tmp / "sqlite-commit", args.commits)
                log(f"SQLite commit ({commit['fs']}): mean {commit['mean_ms'] * 1000:.0f} µs, "
                    f"p99 {commit['p99_ms'] * 1000:.0f} µs")
                gen_bin, meta["open_loop_cc"] = build_cpp(tmp, "open_loop")
                calls = bench_calls(args, children, tmp, kn, ngx_port, ngx_pids, proxy_port,
                                    proxy_pids, gen_bin)
            if args.only in (None, "fork"):
                fork = bench_fork(args, kn, delay_port)
            kn.stop()
        if args.only in (None, "memory"):
            mem = bench_memory(args, children, tmp, ngx_port)
    except BenchError as e:
        log(f"error: {e}")
        return 1
    finally:
        children.stop_all()

    if calls and commit is None:
        commit = sqlite_commit_cost(tmp / "sqlite-commit", args.commits)
    v = evaluate(args, calls, fork, mem, commit)
    render = lambda notes: section(args, meta, calls, fork, mem, commit, v, notes)  # noqa: E731
    print()
    print(render(DEFAULT_NOTES))
    if args.json:
        def strip(o):
            if isinstance(o, dict):
                return {str(k): strip(x) for k, x in o.items() if k != "raw"}
            if isinstance(o, list):
                return [strip(x) for x in o]
            return o
        saved_args = {k: x for k, x in vars(args).items() if k not in ("json", "from_json")}
        Path(args.json).write_text(json.dumps(strip({"meta": meta, "calls": calls, "fork": fork,
                                                     "memory": mem, "commit": commit,
                                                     "verdict": v, "args": saved_args}),
                                              indent=2))
    if not args.no_doc:
        write_section(Path(args.doc), render)
        log(f"wrote the \"{SECTION[3:]}\" section of {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
