#!/usr/bin/env python3
"""knflow benchmarks (driver for bench/run.sh; Python 3 standard library only).

1. GET of one cached workflow: knflow against nginx serving the same bytes, with wrk.
2. Start-up with many stored workflows: exec -> first 200 on /readyz, and resident memory, with
   an empty data directory as the baseline.

Everything listens on 127.0.0.1 only, every duration is bounded, and every process started is
stopped on exit. Benchmarks are not tests: the run reports figures and ratios against a baseline
measured in the same run; it fails only when the measurement itself is broken (a non-2xx answer,
different bytes, a daemon that does not start).
"""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import datetime
import hashlib
import http.client
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from benchlib import BenchError, CLK_TCK, MIB, child_pids, die_with_parent, free_port, git_info, machine, mib, proc_status, verdict  # noqa: E402
WORKFLOW_PATH = "/api/v1/namespaces/default/workflows/order-pipeline"

# Headers knflow puts on every answer (docs/api.md); nginx adds the same ones so that both answers
# carry (almost) the same bytes, not only the same body.
SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy",
     "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
     "form-action 'self'; frame-ancestors 'none'"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Processes

class Children:
    """Every process this run starts; stopped at exit whatever happens."""

    def __init__(self, pid_file: Path):
        self.pid_file = pid_file
        self.procs: list[subprocess.Popen] = []
        self.lock = threading.Lock()

    def spawn(self, argv: list[str], log_path: Path, **kw) -> subprocess.Popen:
        out = open(log_path, "ab")
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, preexec_fn=die_with_parent, **kw)
        finally:
            out.close()
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
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLK_TCK


def cpu_ticks_total() -> tuple[int, int]:
    """(busy, all) CPU ticks of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    return total - idle, total


# ---------------------------------------------------------------------------------------------
# HTTP helpers (stdlib)

def request(port: int, method: str, path: str, token: str | None, body: bytes | None = None,
            content_type: str | None = None, conn: http.client.HTTPConnection | None = None,
            timeout: float = 10.0) -> tuple[int, bytes]:
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
        data = resp.read()
        return resp.status, data
    finally:
        if own:
            conn.close()


def raw_get(port: int, path: str, auth: str) -> tuple[bytes, bytes]:
    """One GET as wrk sends it; returns (head, body) exactly as received."""
    req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {auth}\r\n\r\n"
           ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise BenchError(f"port {port}: connection closed before the head")
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if not m:
            raise BenchError(f"port {port}: no Content-Length in {head!r}")
        length = int(m.group(1))
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n", body


# ---------------------------------------------------------------------------------------------
# knflow

class Knflow:
    def __init__(self, children: Children, binary: str, data_dir: Path, threads: int, name: str):
        self.children = children
        self.binary = binary
        self.data_dir = data_dir
        self.threads = threads
        self.name = name
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"{name}.log"
        self.starts = 0

    def argv(self, port: int) -> list[str]:
        return [self.binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir",
                str(self.data_dir), "--threads", str(self.threads)]

    @property
    def token(self) -> str:
        return (self.data_dir / "token").read_text().strip()

    def start(self, poll_interval: float = 0.002, timeout: float = 60.0) -> dict:
        """Starts the daemon; returns exec->ready wall time and the daemon's own load time."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        t0 = time.monotonic()
        self.proc = self.children.spawn(self.argv(self.port), self.log_path)
        self.starts += 1
        token_file = self.data_dir / "token"
        token = None
        conn = None
        polls = 0
        while True:
            now = time.monotonic()
            if now - t0 > timeout:
                raise BenchError(f"{self.name}: not ready after {timeout} s; see {self.log_path}")
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name}: exited with {self.proc.returncode}; "
                                 f"see {self.log_path}")
            if token is None:
                if not token_file.exists():
                    time.sleep(poll_interval)
                    continue
                token = token_file.read_text().strip()
                if not token:
                    token = None
                    time.sleep(poll_interval)
                    continue
            polls += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                status, _ = request(self.port, "GET", "/readyz", token, conn=conn)
                if status == 200:
                    t_ready = time.monotonic()
                    break
                if status not in (503,):
                    raise BenchError(f"{self.name}: /readyz answered {status}")
            except (ConnectionError, OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(poll_interval)
        if conn is not None:
            conn.close()
        wall_ms = (t_ready - t0) * 1000
        load_ms = None
        count = None
        deadline = time.monotonic() + 2
        while load_ms is None and time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(log_offset)
                text = f.read().decode(errors="replace")
            # The line's fields by name: more than count and ms may be on it (loaded=).
            m = re.search(r'msg="Loaded workflows, ready"(.*)', text)
            fields = dict(re.findall(r' (\w+)=(\d+)', m.group(1))) if m else {}
            if "count" in fields and "ms" in fields:
                count, load_ms = int(fields["count"]), int(fields["ms"])
            else:
                time.sleep(0.01)
        return {"wall_ms": wall_ms, "load_ms": load_ms, "count": count, "polls": polls}

    def stop(self) -> dict:
        assert self.proc is not None
        t0 = time.monotonic()
        code = self.children.stop(self.proc, signal.SIGTERM)
        out = {"exit_code": code, "stop_ms": (time.monotonic() - t0) * 1000}
        self.proc = None
        if code != 0:
            raise BenchError(f"{self.name}: exit code {code} after SIGTERM; see {self.log_path}")
        return out

    def rss(self) -> dict[str, int]:
        assert self.proc is not None
        return proc_status(self.proc.pid)


# ---------------------------------------------------------------------------------------------
# nginx

def start_nginx(children: Children, nginx_bin: str, tmp: Path, body_file: Path, workers: int,
                ) -> tuple[subprocess.Popen, int, Path, list[str]]:
    base = tmp / "nginx"
    www = base / "www"
    target = www / WORKFLOW_PATH.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(body_file.read_bytes())
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
        (base / d).mkdir(exist_ok=True)
    # nginx started as root runs its workers as nobody: they must be able to read the file.
    for p in (tmp, base):
        os.chmod(p, 0o755)
    for dirpath, dirnames, filenames in os.walk(www):
        os.chmod(dirpath, 0o755)
        for fn in filenames:
            os.chmod(os.path.join(dirpath, fn), 0o644)
    port = free_port()
    headers = "\n".join(f"      add_header {k} \"{v}\" always;" for k, v in SECURITY_HEADERS)
    conf = f"""# Written by bench/knflow_bench.py for one run.
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
  types {{ }}
  default_type application/json;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  open_file_cache max=16 inactive=60s;
  open_file_cache_valid 60s;
  keepalive_timeout 60s;
  keepalive_requests 1000000;
  server_tokens off;
  server {{
    listen 127.0.0.1:{port};
    root {www};
    location = {WORKFLOW_PATH} {{
{headers}
    }}
  }}
}}
"""
    conf_path = base / "nginx.conf"
    conf_path.write_text(conf)
    argv = [nginx_bin, "-p", str(base), "-c", str(conf_path), "-e", str(base / "logs/error.log")]
    test = subprocess.run(argv + ["-t"], capture_output=True, text=True)
    if test.returncode != 0:
        raise BenchError(f"nginx -t failed: {test.stderr.strip()}")
    proc = children.spawn(argv, tmp / "nginx.log")
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            raise BenchError(f"nginx exited with {proc.returncode}; see {tmp / 'nginx.log'} "
                             f"and {base / 'logs/error.log'}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError("nginx did not listen within 10 s")
            time.sleep(0.01)
    # Wait until every worker is up, so that both take connections from the first request.
    deadline = time.monotonic() + 5
    while len(child_pids(proc.pid)) < workers and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc, port, conf_path, argv


# ---------------------------------------------------------------------------------------------
# wrk

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
    return {
        "rps": float(rps.group(1)),
        "requests": int(reqs.group(1)),
        "p50_ms": pct("50"), "p75_ms": pct("75"), "p90_ms": pct("90"), "p99_ms": pct("99"),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
        "socket_errors_text": sock.group(0) if sock else "",
    }


def wait_for_quiet(args) -> tuple[float, float]:
    """Waits (at most --quiet-wait s) until the rest of the machine uses under --quiet-cores.

    Returns (seconds waited, cores busy in the last one-second sample). Called between runs, when
    the servers are idle, so what it sees is other people's work."""
    t0 = time.monotonic()
    while True:
        b0, _ = cpu_ticks_total()
        time.sleep(1.0)
        b1, _ = cpu_ticks_total()
        busy = (b1 - b0) / CLK_TCK
        waited = time.monotonic() - t0
        if busy <= args.quiet_cores or waited >= args.quiet_wait:
            return waited, busy


def run_wrk(args, url: str, auth: str, duration: int, server_pids, threads: int | None = None,
            connections: int | None = None) -> dict:
    argv = ["wrk", f"-t{threads or args.wrk_threads}", f"-c{connections or args.connections}",
            f"-d{duration}s", "--latency", "-H", f"Authorization: {auth}", url]
    waited, background = wait_for_quiet(args) if args.quiet_wait > 0 else (0.0, 0.0)
    pids = server_pids()
    cpu0 = cpu_seconds(pids)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = os.getloadavg()[0]
    busy0, all0 = cpu_ticks_total()
    t0 = time.monotonic()
    res = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60,
                         preexec_fn=die_with_parent)
    elapsed = time.monotonic() - t0
    busy1, all1 = cpu_ticks_total()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1 = cpu_seconds(pids)
    if res.returncode != 0:
        raise BenchError(f"wrk failed ({res.returncode}): {res.stderr}")
    r = parse_wrk(res.stdout)
    r["server_cpu_s"] = cpu1 - cpu0
    r["wrk_cpu_s"] = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    r["cpu_us_per_req"] = r["server_cpu_s"] * 1e6 / max(1, r["requests"])
    r["loadavg_before"] = load0
    r["quiet_waited_s"] = waited
    r["background_cores"] = background
    # CPU used on the machine by anything but the server and wrk (other people's builds...),
    # in cores: the figures are only comparable when this is about the same for both servers.
    machine_busy_s = (busy1 - busy0) / CLK_TCK
    r["other_cores"] = max(0.0, (machine_busy_s - r["server_cpu_s"] - r["wrk_cpu_s"]) / elapsed)
    r["raw"] = res.stdout
    if r["non2xx"]:
        raise BenchError(f"{url}: {r['non2xx']} answers were not 2xx:\n{res.stdout}")
    return r


# ---------------------------------------------------------------------------------------------
# Part 1: GET of one cached workflow, knflow vs nginx

def bench_get(args, children: Children, tmp: Path) -> dict:
    log("part 1: GET of one cached workflow, knflow vs nginx")
    kn = Knflow(children, args.knflow, tmp / "get-data", args.threads, "knflow-get")
    kn.start()
    token = kn.token
    auth = f"Bearer {token}"
    yaml_text = (ROOT / "examples/order-pipeline.yaml").read_text()
    # The example lives in namespace "shop"; a create under /namespaces/default must not name
    # another namespace (422), so the benchmark copy says "default".
    yaml_text = re.sub(r"(?m)^  namespace: shop$", "  namespace: default", yaml_text)
    status, body = request(kn.port, "POST", "/api/v1/namespaces/default/workflows", token,
                           yaml_text.encode(), "application/yaml")
    if status != 201:
        raise BenchError(f"create order-pipeline: {status} {body[:500]!r}")
    status, body = request(kn.port, "GET", WORKFLOW_PATH, token)
    if status != 200:
        raise BenchError(f"GET {WORKFLOW_PATH}: {status}")
    body_file = tmp / "order-pipeline.json"
    body_file.write_bytes(body)
    log(f"  body: {len(body)} bytes, sha256 {hashlib.sha256(body).hexdigest()[:16]}")

    ngx, ngx_port, conf_path, ngx_argv = start_nginx(children, args.nginx, tmp, body_file,
                                                    args.threads)
    kn_url = f"http://127.0.0.1:{kn.port}{WORKFLOW_PATH}"
    ngx_url = f"http://127.0.0.1:{ngx_port}{WORKFLOW_PATH}"

    # Same bytes: both bodies must equal the saved file.
    heads = {}
    for name, port in (("knflow", kn.port), ("nginx", ngx_port)):
        head, got = raw_get(port, WORKFLOW_PATH, auth)
        if not head.startswith(b"HTTP/1.1 200"):
            raise BenchError(f"{name}: {head.splitlines()[0]!r}")
        if got != body:
            raise BenchError(f"{name}: body differs from the saved file ({len(got)} bytes)")
        heads[name] = head
    log(f"  answers: knflow {len(heads['knflow'])}+{len(body)} bytes, "
        f"nginx {len(heads['nginx'])}+{len(body)} bytes (head+body)")

    servers = {
        "knflow": (kn_url, lambda: [kn.proc.pid]),
        "nginx": (ngx_url, lambda: [ngx.pid, *child_pids(ngx.pid)]),
    }
    runs: dict[str, list[dict]] = {"knflow": [], "nginx": []}
    for name in ("knflow", "nginx"):
        url, pids = servers[name]
        log(f"  warm-up {name} ({args.warmup} s)")
        run_wrk(args, url, auth, args.warmup, pids)
    for rnd in range(args.rounds):
        for name in ("knflow", "nginx"):
            url, pids = servers[name]
            r = run_wrk(args, url, auth, args.duration, pids)
            r["round"] = rnd + 1
            runs[name].append(r)
            log(f"  {name} run {rnd + 1}: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.3f} ms, "
                f"p99 {r['p99_ms']:.3f} ms, server CPU {r['cpu_us_per_req']:.1f} us/req, "
                f"other CPU {r['other_cores']:.2f} cores (waited {r['quiet_waited_s']:.0f} s "
                f"for {r['background_cores']:.2f})")
    unloaded = {}
    if args.unloaded_duration > 0:
        for name in ("knflow", "nginx"):
            url, pids = servers[name]
            r = run_wrk(args, url, auth, args.unloaded_duration, pids, threads=1, connections=1)
            unloaded[name] = r
            log(f"  {name} unloaded (-t1 -c1): {r['rps']:.0f} req/s, p50 {r['p50_ms']:.3f} ms, "
                f"p99 {r['p99_ms']:.3f} ms")
    rss = kn.rss()
    children.stop(ngx, signal.SIGQUIT)
    kn.stop()
    best = {name: max(rs, key=lambda r: r["rps"]) for name, rs in runs.items()}
    wrk_cmd = shlex.join(["wrk", f"-t{args.wrk_threads}", f"-c{args.connections}",
                          f"-d{args.duration}s", "--latency", "-H",
                          "Authorization: Bearer <token>", "<url>"])
    return {
        "body_bytes": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "head_bytes": {k: len(v) for k, v in heads.items()},
        "heads": {k: v.decode(errors="replace") for k, v in heads.items()},
        "runs": runs,
        "best": best,
        "unloaded": unloaded,
        "knflow_rss_after": rss,
        "nginx_conf": conf_path.read_text(),
        "commands": {
            "knflow": shlex.join(kn.argv(0)).replace(str(tmp), "$TMP").replace(
                "127.0.0.1:0", "127.0.0.1:$PORT"),
            "nginx": shlex.join(ngx_argv).replace(str(tmp), "$TMP"),
            "wrk": wrk_cmd,
            "warmup": wrk_cmd.replace(f"-d{args.duration}s", f"-d{args.warmup}s"),
            "unloaded": shlex.join(["wrk", "-t1", "-c1", f"-d{args.unloaded_duration}s",
                                    "--latency", "-H", "Authorization: Bearer <token>", "<url>"]),
        },
    }


# ---------------------------------------------------------------------------------------------
# Part 2: start-up and memory with many stored workflows

def workflow_doc(template: dict, i: int) -> bytes:
    spec = json.loads(json.dumps(template["spec"]))
    # Distinct name and one distinct url per workflow (the charge function calls an endpoint).
    spec["functions"]["charge"] = {"url": f"https://payments.internal/charge/{i:05d}",
                                   "timeout": "PT30S"}
    doc = {
        "apiVersion": template["apiVersion"],
        "kind": template["kind"],
        "metadata": {"name": f"order-pipeline-{i:05d}", "namespace": "default",
                     "labels": dict(template["metadata"].get("labels", {}))},
        "spec": spec,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def seed(kn: Knflow, template: dict, count: int, clients: int) -> dict:
    token = kn.token
    local = threading.local()
    path = "/api/v1/namespaces/default/workflows"

    def create(i: int) -> int:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", kn.port, timeout=30)
        body = workflow_doc(template, i)
        errors = []
        for attempt in range(3):
            try:
                status, answer = request(kn.port, "POST", path, token, body, "application/json",
                                         conn=conn)
                break
            except (OSError, http.client.HTTPException) as e:
                errors.append(repr(e))
                conn.close()
                conn = local.conn = http.client.HTTPConnection("127.0.0.1", kn.port, timeout=30)
                if kn.proc is None or kn.proc.poll() is not None:
                    break
        else:
            status = None
        if status is None or errors and status == 409:
            alive = kn.proc is not None and kn.proc.poll() is None
            tail = kn.log_path.read_text(errors="replace")[-1500:]
            raise BenchError(f"create #{i}: {'; '.join(errors)} (knflow "
                             f"{'still running' if alive else f'exited with {kn.proc.returncode}'}"
                             f"); end of {kn.log_path.name}:\n{tail}")
        if errors:
            log(f"  create #{i} needed {len(errors) + 1} attempts: {'; '.join(errors)}")
        if status != 201:
            raise BenchError(f"create #{i}: {status} {answer[:300]!r}")
        return len(answer)

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        sizes = list(pool.map(create, range(count)))
    secs = time.monotonic() - t0
    return {"json_bytes": sum(sizes), "seconds": secs, "creates_per_s": count / secs,
            "mean_bytes": sum(sizes) / count}


def walk(kn: Knflow) -> dict:
    token = kn.token
    conn = http.client.HTTPConnection("127.0.0.1", kn.port, timeout=30)
    items = pages = received = 0
    cont = None
    t0 = time.monotonic()
    try:
        while True:
            q = {"limit": "1000"}
            if cont:
                q["continue"] = cont
            status, body = request(kn.port, "GET", "/api/v1/workflows?" + urllib.parse.urlencode(q),
                                   token, conn=conn)
            if status != 200:
                raise BenchError(f"list page {pages + 1}: {status} {body[:300]!r}")
            doc = json.loads(body)
            pages += 1
            items += len(doc["items"])
            received += len(body)
            cont = doc.get("metadata", {}).get("continue")
            if not cont:
                break
    finally:
        conn.close()
    return {"items": items, "pages": pages, "bytes": received,
            "ms": (time.monotonic() - t0) * 1000}


def measure_restarts(kn: Knflow, n: int, expect: int) -> list[dict]:
    out = []
    for k in range(n):
        r = kn.start(poll_interval=0.002)
        if r["count"] is not None and r["count"] != expect:
            raise BenchError(f"{kn.name}: loaded {r['count']} workflows, expected {expect}")
        r["rss_ready"] = kn.rss()["VmRSS"]
        w = walk(kn)
        if w["items"] != expect:
            raise BenchError(f"{kn.name}: list walk saw {w['items']} items, expected {expect}")
        st = kn.rss()
        r["rss_walk"] = st["VmRSS"]
        r["hwm"] = st["VmHWM"]
        r["walk"] = w
        r.update(kn.stop())
        out.append(r)
        log(f"  {kn.name} start {k + 1}/{n}: ready {r['wall_ms']:.1f} ms (daemon load "
            f"{r['load_ms']} ms), RSS {r['rss_ready'] / MIB:.1f} MiB -> {r['rss_walk'] / MIB:.1f} "
            f"MiB after walk ({w['pages']} pages, {w['ms']:.0f} ms), stop {r['stop_ms']:.0f} ms")
    return out


def bench_startup(args, children: Children, tmp: Path, template: dict) -> dict:
    log(f"part 2: start-up and memory with {args.workflows} stored workflows")
    kn = Knflow(children, args.knflow, tmp / "startup-data", args.threads, "knflow-startup")
    kn.start()
    log(f"  seeding {args.workflows} workflows with {args.seed_clients} keep-alive clients")
    s = seed(kn, template, args.workflows, args.seed_clients)
    log(f"  seeded in {s['seconds']:.1f} s ({s['creates_per_s']:.0f}/s), "
        f"{s['json_bytes']} bytes of JSON ({s['json_bytes'] / MIB:.1f} MiB)")
    seeded_rss = kn.rss()
    kn.stop()
    db_bytes = sum(p.stat().st_size for p in kn.data_dir.glob("knflow.db*"))
    loaded = measure_restarts(kn, args.restarts, args.workflows)

    log("  baseline: the same daemon with an empty data directory")
    empty = Knflow(children, args.knflow, tmp / "empty-data", args.threads, "knflow-empty")
    empty.start()
    empty.stop()
    baseline = measure_restarts(empty, args.restarts, 0)
    return {"seed": s, "seeded_rss": seeded_rss, "db_bytes": db_bytes, "loaded": loaded,
            "empty": baseline,
            "command": shlex.join(kn.argv(0)).replace(str(tmp), "$TMP").replace(
                "127.0.0.1:0", "127.0.0.1:$PORT")}


# ---------------------------------------------------------------------------------------------
# Report


def tool_versions(args) -> dict:
    def first_line(argv):
        r = subprocess.run(argv, capture_output=True, text=True)
        return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr) else "?"
    return {"knflow": first_line([args.knflow, "version"]),
            "nginx": first_line([args.nginx, "-v"]).replace("nginx version: ", ""),
            "wrk": first_line(["wrk", "--version"]).split(" [")[0],
            "python": platform.python_version()}


def ms(x: float) -> str:
    return f"{x:.3f} ms" if x < 10 else f"{x:.1f} ms"


def evaluate(get: dict | None, st: dict | None) -> dict:
    v = {}
    if get:
        k, n = get["best"]["knflow"], get["best"]["nginx"]
        v["rps_ratio"] = k["rps"] / n["rps"]
        v["p50_ratio"] = k["p50_ms"] / n["p50_ms"]
        v["p99_ratio"] = k["p99_ms"] / n["p99_ms"]
        v["cpu_ratio"] = k["cpu_us_per_req"] / n["cpu_us_per_req"]
        v["rps_ok"] = v["rps_ratio"] >= 0.5
        v["p50_ok"] = v["p50_ratio"] <= 1.5
    if st:
        walls = [r["wall_ms"] for r in st["loaded"]]
        v["ready_median_ms"] = statistics.median(walls)
        v["ready_max_ms"] = max(walls)
        v["ready_ok"] = v["ready_max_ms"] < 1000
        v["rss_limit"] = 2 * st["seed"]["json_bytes"] + 20 * MIB
        v["rss_max"] = max(max(r["rss_ready"], r["rss_walk"]) for r in st["loaded"])
        v["rss_ok"] = v["rss_max"] <= v["rss_limit"]
    return v


def render_get(get: dict, v: dict) -> str:
    k, n = get["best"]["knflow"], get["best"]["nginx"]
    lines = [
        "| | knflow | nginx | knflow / nginx | target | |",
        "|---|---:|---:|---:|---|---|",
        f"| requests/s | {k['rps']:,.0f} | {n['rps']:,.0f} | {v['rps_ratio']:.2f}× | ≥ 0.5× | "
        f"{verdict(v['rps_ok'])} |",
        f"| latency p50 | {ms(k['p50_ms'])} | {ms(n['p50_ms'])} | {v['p50_ratio']:.2f}× | ≤ 1.5× | "
        f"{verdict(v['p50_ok'])} |",
        f"| latency p99 | {ms(k['p99_ms'])} | {ms(n['p99_ms'])} | {v['p99_ratio']:.2f}× | | |",
        f"| server CPU per request | {k['cpu_us_per_req']:.1f} µs | {n['cpu_us_per_req']:.1f} µs | "
        f"{v['cpu_ratio']:.2f}× | | |",
        f"| answer bytes (head + body) | {get['head_bytes']['knflow']} + {get['body_bytes']} | "
        f"{get['head_bytes']['nginx']} + {get['body_bytes']} | | | |",
    ]
    u = get.get("unloaded") or {}
    if u:
        uk, un = u["knflow"], u["nginx"]
        lines += [
            f"| unloaded (`-t1 -c1`): requests/s | {uk['rps']:,.0f} | {un['rps']:,.0f} | "
            f"{uk['rps'] / un['rps']:.2f}× | | |",
            f"| unloaded (`-t1 -c1`): latency p50 | {ms(uk['p50_ms'])} | {ms(un['p50_ms'])} | "
            f"{uk['p50_ms'] / un['p50_ms']:.2f}× | | |",
            f"| unloaded (`-t1 -c1`): latency p99 | {ms(uk['p99_ms'])} | {ms(un['p99_ms'])} | "
            f"{uk['p99_ms'] / un['p99_ms']:.2f}× | | |",
        ]
    lines += ["", "Every measured run (the better of each pair is in the table above), and the unloaded "
              "ones:", "",
              "| run | server | requests/s | p50 | p75 | p90 | p99 | server CPU | wrk CPU | "
              "other CPU (cores) | busy before (cores) |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rounds = max(len(get["runs"]["knflow"]), len(get["runs"]["nginx"]))
    rows = []
    for i in range(rounds):
        for name in ("knflow", "nginx"):
            if i < len(get["runs"][name]):
                rows.append((str(i + 1), name, get["runs"][name][i]))
    for name, r in (get.get("unloaded") or {}).items():
        rows.append(("unloaded", name, r))
    for label, name, r in rows:
        lines.append(
            f"| {label} | {name} | {r['rps']:,.0f} | {ms(r['p50_ms'])} | {ms(r['p75_ms'])} | "
            f"{ms(r['p90_ms'])} | {ms(r['p99_ms'])} | {r['server_cpu_s']:.2f} s | "
            f"{r['wrk_cpu_s']:.2f} s | {r['other_cores']:.2f} | {r['background_cores']:.2f} |")
    return "\n".join(lines)


def render_startup(st: dict, v: dict) -> str:
    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    def rng(rows, key, fmt):
        vals = [r[key] for r in rows]
        return f"{fmt(statistics.median(vals))} ({fmt(min(vals))} – {fmt(max(vals))})"

    L, E = st["loaded"], st["empty"]

    def ms(x: float) -> str:
        return f"{x:.1f} ms"
    n = len(L)
    lines = [
        f"| median of {n} starts (min – max) | {st['loaded'][0]['count']:,} workflows | "
        f"empty data dir (baseline) | target | |",
        "|---|---:|---:|---|---|",
        f"| exec → first 200 on `/readyz` | {rng(L, 'wall_ms', ms)} | {rng(E, 'wall_ms', ms)} | "
        f"< 1 s | {verdict(v['ready_ok'])} |",
        f"| daemon's own load time (`Loaded workflows, ready ms=`) | "
        f"{rng(L, 'load_ms', lambda x: f'{x:.0f} ms')} | "
        f"{rng(E, 'load_ms', lambda x: f'{x:.0f} ms')} | | |",
        f"| RSS after ready | {rng(L, 'rss_ready', mib)} | {rng(E, 'rss_ready', mib)} | "
        f"≤ {mib(v['rss_limit'])} | {verdict(max(r['rss_ready'] for r in L) <= v['rss_limit'])} |",
        f"| RSS after walking `GET /api/v1/workflows?limit=1000` | {rng(L, 'rss_walk', mib)} | "
        f"{rng(E, 'rss_walk', mib)} | ≤ {mib(v['rss_limit'])} | "
        f"{verdict(max(r['rss_walk'] for r in L) <= v['rss_limit'])} |",
        f"| RSS above the empty baseline, after the walk | "
        f"{mib(med(L, 'rss_walk') - med(E, 'rss_walk'))} | | | |",
        f"| list walk ({L[0]['walk']['pages']} pages) | "
        f"{rng([r['walk'] for r in L], 'ms', lambda x: f'{x:.0f} ms')} | | | |",
        f"| SIGTERM → exit 0 | {rng(L, 'stop_ms', lambda x: f'{x:.0f} ms')} | "
        f"{rng(E, 'stop_ms', lambda x: f'{x:.0f} ms')} | | |",
        "",
        f"- JSON of the workflows as served (sum of the create answers): "
        f"{st['seed']['json_bytes']:,} bytes ({mib(st['seed']['json_bytes'])}, "
        f"{st['seed']['mean_bytes']:.0f} bytes each); RSS limit = 2 × that + 20 MiB = "
        f"{mib(v['rss_limit'])}.",
        f"- SQLite files on disk (`knflow.db*`): {mib(st['db_bytes'])}.",
        f"- Seeding: {st['seed']['seconds']:.1f} s ({st['seed']['creates_per_s']:.0f} creates/s); "
        f"RSS of the daemon that served the creates: {mib(st['seeded_rss']['VmRSS'])} "
        f"(peak {mib(st['seeded_rss']['VmHWM'])}).",
        f"- Peak RSS (VmHWM) of the restarted daemon after the walk: "
        f"{mib(max(r['hwm'] for r in L))}.",
    ]
    return "\n".join(lines)


def shown(text: str, args) -> str:
    """A command or file as printed in the doc: no temporary or checkout paths."""
    text = text.replace(str(Path(args.tmp) / "knflow"), args.knflow_shown)
    text = text.replace(str(args.tmp), "$TMP").replace(str(ROOT) + "/", "")
    return re.sub(r"listen 127\.0\.0\.1:\d+;", "listen 127.0.0.1:$PORT;", text)


def render_doc(args, get, st, v, meta, notes: str) -> str:
    m, g, tv = meta["machine"], meta["git"], meta["tools"]
    stale = ""
    m_commit = re.search(r"commit ([0-9a-f]+)", tv["knflow"])
    if m_commit and not g["commit"].startswith(m_commit.group(1)):
        stale = (" The binary was built at an earlier commit than the checkout (others were "
                 "committing meanwhile).")
    dirty = ""
    if g["dirty_files"]:
        dirty = (" The working tree had uncommitted changes (not in the binary unless built after "
                 "them) in "
                 + ", ".join(f"`{f}`" for f in g["dirty_files"][:8])
                 + (" …" if len(g["dirty_files"]) > 8 else "") + ".")
    out = [
        "# Benchmarks",
        "",
        "Benchmarks are not tests: they never run in CI, and their absolute figures depend on the",
        "machine and on whatever else it was doing. Each run measures its own baseline (nginx for",
        "HTTP, an empty data directory for start-up) and reports ratios against it.",
        "",
        "## How to run",
        "",
        "```sh",
        "KNFLOW_BENCH_DEPS=1 scripts/install-deps.sh   # wrk and nginx-light (Debian)",
        "cmake --preset release && cmake --build --preset release",
        "bench/run.sh                  # 2-3 minutes on a quiet machine; rewrites its sections",
        "bench/run.sh --no-doc         # print the tables only",
        "bench/run.sh --help           # durations, connections, counts",
        "bench/profile.sh perf         # where knflow's CPU goes under the same load",
        "bench/profile.sh callgrind    # instructions and calls (malloc, locks) per request",
        "```",
        "",
        "`bench/run.sh` checks the tools and hands over to `bench/knflow_bench.py` (Python 3 standard",
        "library). Everything listens on 127.0.0.1, runs under one temporary directory, and every",
        "process it starts (knflow, nginx, wrk) is stopped on exit, however the run ends. It runs a copy",
        "of `build/release/knflow` taken at the start, so a rebuild meanwhile changes nothing. The part",
        "of this file between the `analysis` markers is written by hand and kept by the script, and so",
        "is every section another benchmark writes here (such as \"Standalone engine\").",
        "On a busy machine a run takes longer: before each wrk run it waits up to 60 s for other",
        "work to calm down (`--quiet-wait`), and says in the tables how busy the machine was.",
        "`bench/run.sh --from-json FILE` rewrites its sections from the figures a `--json FILE` run",
        "saved.",
        "",
        "## Method",
        "",
        "**HTTP GET vs nginx.** knflow (release build, `--threads "
        f"{args.threads}`, a fresh data directory) stores",
        "`examples/order-pipeline.yaml` (posted as `application/yaml` to namespace `default`, so the",
        "example's `namespace: shop` is changed to `default`), and the body of one",
        f"`GET {WORKFLOW_PATH}` is saved byte for byte. Debian's nginx",
        "serves that file at the same path from a configuration written for the run (below). Fairness:",
        "",
        "- same bytes: both bodies are compared with the saved file before measuring; nginx also adds",
        "  knflow's four security headers, so the heads differ only by nginx's `ETag`,",
        "  `Last-Modified`, `Accept-Ranges` and `Connection` (nginx's head is the longer one);",
        f"- same load: identical wrk settings (`-t{args.wrk_threads} -c{args.connections} "
        f"-d{args.duration}s --latency`), the same",
        "  `Authorization` header sent to both (nginx ignores it, knflow checks it on every request);",
        f"- same parallelism: nginx runs `worker_processes {args.threads}`, as many as knflow's threads;",
        "  keep-alive is unlimited on both (`keepalive_requests 1000000`), access logging is off, and",
        "  nginx caches the open file (`open_file_cache`) as knflow serves from memory;",
        f"- same machine: wrk shares the {m['nproc']} cores with the server under test, for both;",
        f"- order: one {args.warmup} s warm-up of each, then {args.rounds} rounds of knflow, nginx",
        "  interleaved; the better run (by requests/s) of each server is reported, with its latencies;",
        "- requests/s, p50 and p99 come from wrk's `--latency` output; server CPU per request is the",
        "  user + system time of the server's processes (knflow; nginx master and workers) from",
        "  `/proc/PID/stat` over the run, divided by the requests wrk counted; \"other CPU\" is what the",
        "  rest of the machine used meanwhile (`/proc/stat` busy time minus server and wrk), in cores:",
        "  runs are comparable only when it is about the same for both servers. Before each run the",
        f"  script waits (up to {args.quiet_wait:.0f} s) until the idle machine is busy with less than "
        f"{args.quiet_cores} cores",
        "  (\"busy before\": what it measured last);",
        f"- then one `wrk -t1 -c1 -d{args.unloaded_duration}s` run per server gives the latency of a request",
        "  that never waits behind another (informative, no target).",
        "",
        f"**Start-up and memory.** {args.workflows:,} distinct workflows (the order pipeline with the name",
        "`order-pipeline-NNNNN` and the `charge` function replaced by a distinct `url`) are created over",
        f"HTTP by {args.seed_clients} keep-alive clients; the JSON size is the sum of the create answers",
        "(the stored objects, as served). The daemon is stopped with SIGTERM, then started "
        f"{args.restarts} times:",
        "exec → first 200 on `/readyz` is wall time from just before `fork`/`exec` to the first 200,",
        "polled every 2 ms (a refused connection is retried, a 503 means not yet loaded); the daemon's",
        "own figure, the `ms=` of its `Loaded workflows, ready` line, covers opening SQLite and",
        "loading the cache only. RSS is `VmRSS` from `/proc/PID/status` once ready, and again after",
        "walking every page of `GET /api/v1/workflows?limit=1000`. The baseline is the same binary and",
        "flags with an empty data directory (created by one start first, then measured the same way).",
        "MiB = 2^20 bytes.",
        "",
        "## Results",
        "",
        f"- date: {meta['date']}",
        f"- machine: {m['nproc_cmd']} CPUs (`nproc`), {m['cpu']}, {m['mem_gib']:.1f} GiB memory, "
        f"Linux {m['kernel']}",
        f"- measured binary: `{tv['knflow']}`, release build; checkout at `{g['commit'][:12]}` "
        f"({g['subject']}).{stale}{dirty}",
        f"- tools: {tv['nginx']}, {tv['wrk']}, Python {tv['python']}",
        f"- load average (1 min) just before the run: {meta['loadavg'][0]:.2f} (other work on the "
        "machine disturbs every figure; see the \"other CPU\" column).",
    ]
    if get:
        out += ["", "### HTTP GET vs nginx", "", render_get(get, v)]
    if st:
        out += ["", "### Start-up and memory", "", render_startup(st, v)]
    missed = []
    if get and not v["rps_ok"]:
        missed.append(f"knflow served {v['rps_ratio']:.2f}× nginx's requests/s (target ≥ 0.5×)")
    if get and not v["p50_ok"]:
        missed.append(f"knflow's p50 latency was {v['p50_ratio']:.2f}× nginx's (target ≤ 1.5×)")
    if st and not v["ready_ok"]:
        missed.append(f"the slowest start took {v['ready_max_ms']:.0f} ms to ready (target < 1 s)")
    if st and not v["rss_ok"]:
        missed.append(f"RSS reached {mib(v['rss_max'])}, above the {mib(v['rss_limit'])} limit")
    out += ["", "### Targets", ""]
    if get:
        busiest = max(r["other_cores"] for r in get["best"].values())
        if busiest > 0.3:
            out += [f"**Disturbed run:** other work on the machine used up to {busiest:.2f} cores "
                    "during the reported HTTP measurements (\"other CPU\" above); their figures "
                    "say little. Run again on a quiet machine.", ""]
    if missed:
        out += ["Missed in this run: " + "; ".join(missed) + ". See the analysis below."]
    else:
        out += ["Every target was met in this run."]
    out += ["", "<!-- analysis:begin -->", notes.strip("\n"), "<!-- analysis:end -->"]
    out += ["", "## Commands", "", "```sh"]
    if get:
        c = get["commands"]
        out += ["# HTTP GET vs nginx ($TMP is the run's temporary directory, $TMP/knflow a copy of",
                "# build/release/knflow taken at the start)",
                shown(c["knflow"], args), shown(c["nginx"], args), f"{c['warmup']}   # warm-up, once per server",
                f"{c['wrk']}   # {args.rounds} times per server, interleaved"]
        if get.get("unloaded"):
            out += [f"{c['unloaded']}   # once per server, after the measured runs"]
    if st:
        out += ["# Start-up and memory", shown(st["command"], args)]
    out += [f"# this run", "bench/run.sh " + " ".join(shlex.quote(a) for a in args.passed), "```"]
    if get:
        out += ["", "<details><summary>nginx configuration and both answer heads</summary>", "",
                "```nginx", shown(get["nginx_conf"], args).rstrip(), "```", "",
                "```http", get["heads"]["knflow"].rstrip(), "```", "",
                "```http", get["heads"]["nginx"].rstrip(), "```", "", "</details>"]
    return "\n".join(out).replace("\n\n\n", "\n\n") + "\n"


DEFAULT_NOTES = "No analysis written yet for this machine."
OWN_SECTIONS = ("## How to run", "## Method", "## Results", "## Commands")


def write_doc(doc: Path, render) -> None:
    """Rewrites this script's part of doc and keeps every "## " section it does not own.

    Other benchmarks (bench/engine_run.sh) keep their own sections in the same file, after ours;
    the file is re-read right before writing so that a section written meanwhile survives."""
    text = doc.read_text() if doc.exists() else ""
    starts = [m.start() for m in re.finditer(r"^## ", text, re.M)] + [len(text)]
    foreign = []
    for a, b in zip(starts, starts[1:]):
        chunk = text[a:b]
        if not chunk.startswith(OWN_SECTIONS):
            foreign.append(chunk.rstrip("\n") + "\n")
    out = render(read_notes(doc))
    if foreign:
        out = out.rstrip("\n") + "\n\n" + "\n".join(foreign)
    doc.write_text(out)


def read_notes(path: Path) -> str:
    if not path.exists():
        return DEFAULT_NOTES
    text = path.read_text()
    m = re.search(r"<!-- analysis:begin -->\n(.*?)<!-- analysis:end -->", text, re.S)
    return m.group(1) if m else DEFAULT_NOTES


# ---------------------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--knflow", default=str(ROOT / "build/release/knflow"))
    p.add_argument("--nginx", default="/usr/sbin/nginx")
    p.add_argument("--tmp", help="empty temporary directory (bench/run.sh makes one)")
    p.add_argument("--threads", type=int, default=2, help="knflow --threads = nginx workers")
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run")
    p.add_argument("--warmup", type=int, default=3, help="seconds of the warm-up wrk run")
    p.add_argument("--rounds", type=int, default=2, help="measured runs per server")
    p.add_argument("--unloaded-duration", type=int, default=5,
                   help="seconds of one extra wrk -t1 -c1 run per server (latency without "
                        "queueing; 0 skips it)")
    p.add_argument("--quiet-wait", type=float, default=60,
                   help="before each wrk run, wait up to this many seconds for the rest of the "
                        "machine to go quiet (0: do not wait)")
    p.add_argument("--quiet-cores", type=float, default=0.2,
                   help="quiet: the machine, servers idle, is busy with at most this many cores")
    p.add_argument("--workflows", type=int, default=10000)
    p.add_argument("--seed-clients", type=int, default=4)
    p.add_argument("--restarts", type=int, default=5)
    p.add_argument("--only", choices=["get", "startup"], help="run one part only")
    p.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    p.add_argument("--doc", default=str(ROOT / "docs/benchmarks.md"))
    p.add_argument("--json", help="also write every figure to this JSON file")
    p.add_argument("--from-json", help="measure nothing: rewrite the doc from a file that --json "
                                       "wrote")
    args = p.parse_args(argv)
    # the command line as typed, without the options run.sh adds
    cleaned, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--knflow", "--nginx", "--tmp", "--from-json"):
            skip = True
            continue
        if a.startswith(("--knflow=", "--nginx=", "--tmp=", "--from-json=")):
            continue
        cleaned.append(a)
    args.passed = cleaned

    if args.from_json:
        data = json.loads(Path(args.from_json).read_text())
        saved = data.get("args", {})
        for key in ("threads", "wrk_threads", "connections", "duration", "warmup", "rounds",
                    "unloaded_duration", "quiet_wait", "quiet_cores", "workflows",
                    "seed_clients", "restarts", "passed"):
            if key in saved:
                setattr(args, key, saved[key])
        get, st, meta = data["get"], data["startup"], data["meta"]
        args.tmp = saved.get("tmp")
        if not args.tmp and get:
            args.tmp = re.search(r"pid (\S+)/nginx/nginx\.pid", get["nginx_conf"]).group(1)
        args.knflow_shown = saved.get("knflow_shown", "build/release/knflow")
        v = evaluate(get, st)
        doc = Path(args.doc)
        write_doc(doc, lambda notes: render_doc(args, get, st, v, meta, notes))
        log(f"wrote {doc} from {args.from_json}")
        return 0

    if not args.tmp:
        import tempfile
        args.tmp = tempfile.mkdtemp(prefix="knflow-bench.")
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    # Run a private copy, so that a rebuild of build/release during the run changes nothing.
    args.knflow_shown = args.knflow
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
    get = st = None
    try:
        if args.only in (None, "get"):
            get = bench_get(args, children, tmp)
        if args.only in (None, "startup"):
            template = json.loads((tmp / "order-pipeline.json").read_bytes()) if get else None
            if template is None:
                # --only startup: make the template the same way part 1 does.
                kn = Knflow(children, args.knflow, tmp / "template-data", args.threads, "tmpl")
                kn.start()
                y = re.sub(r"(?m)^  namespace: shop$", "  namespace: default",
                           (ROOT / "examples/order-pipeline.yaml").read_text())
                status, body = request(kn.port, "POST", "/api/v1/namespaces/default/workflows",
                                       kn.token, y.encode(), "application/yaml")
                if status != 201:
                    raise BenchError(f"create template: {status}")
                template = json.loads(body)
                kn.stop()
            st = bench_startup(args, children, tmp, template)
    except BenchError as e:
        log(f"error: {e}")
        return 1
    finally:
        children.stop_all()
    meta["loadavg_end"] = os.getloadavg()

    v = evaluate(get, st)
    print()
    if get:
        print("## HTTP GET vs nginx\n")
        print(render_get(get, v))
        print()
    if st:
        print("## Start-up and memory\n")
        print(render_startup(st, v))
        print()
    if args.json:
        def strip(o):
            if isinstance(o, dict):
                return {k: strip(x) for k, x in o.items() if k != "raw"}
            if isinstance(o, list):
                return [strip(x) for x in o]
            return o
        saved_args = {k: x for k, x in vars(args).items() if k != "from_json"}
        Path(args.json).write_text(json.dumps(strip({"meta": meta, "get": get, "startup": st,
                                                     "verdict": v, "args": saved_args}),
                                              indent=2))
    if not args.no_doc:
        doc = Path(args.doc)
        write_doc(doc, lambda notes: render_doc(args, get, st, v, meta, notes))
        log(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
