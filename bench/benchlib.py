"""What the benchmark drivers (knflow_bench.py, engine_bench.py, cluster_bench.py) share: the
machine and checkout they describe, process and CPU readings from /proc, and small formatting
helpers. Python 3 standard library only; not a test."""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    pass


def die_with_parent() -> None:
    """A subprocess preexec_fn: if the driver is killed outright, the kernel sends the child
    SIGTERM (PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def cpu_busy_ticks() -> int:
    """Busy CPU ticks of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields[:8]) - (fields[3] + fields[4])


def child_pids(parent: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            pids.append(int(entry))
    return pids


def machine() -> dict:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    return {"nproc": os.cpu_count(),
            "nproc_cmd": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
            "cpu": cpu, "mem_gib": mem / (1024 ** 3), "kernel": platform.release()}


def git_info() -> dict:
    def git(*a):
        r = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True)
        return r.stdout.rstrip() if r.returncode == 0 else ""
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "dirty_files": [line[3:] for line in dirty.splitlines()]}


def mib(x: float) -> str:
    return f"{x / MIB:.1f} MiB"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**MISSED**"


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]
