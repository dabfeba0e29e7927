#!/usr/bin/env python3
"""A real Kubernetes control plane for knflow's integration tests: etcd and kube-apiserver
(optionally kube-controller-manager with only the garbage collector and namespace controllers) on
free loopback ports, in a temporary folder, with the Knative CRDs and `manifests/crds/` installed.
Test tooling only; Python 3.11 standard library only.

    from kubeenv import KubeEnv
    with KubeEnv(controller_manager=True) as kube:
        kube.kubectl("get", "crd")

or from a shell:

    python3 test/kubeenv/kubeenv.py run [--controller-manager] -- CMD ARGS...
    python3 test/kubeenv/kubeenv.py shell [--controller-manager]

The binaries come from test/kubeenv/build.sh's cache (or the folder in $KNFLOW_KUBE_BIN).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping, Sequence

HERE = Path(__file__).resolve().parent
BUILD_SH = HERE / "build.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm")
# Needs a conversion webhook, which nothing serves here.
SKIPPED_KNATIVE_CRDS = ("pingsource.yaml",)


class KubeEnvError(RuntimeError):
    """The environment could not be found, started or used."""


class CommandError(subprocess.CalledProcessError):
    """A kubectl or helm command failed; its message includes what the command printed."""

    def __str__(self) -> str:
        out = (self.stderr or "").strip() or (self.output or "").strip()
        return f"{' '.join(map(str, self.cmd))} exited with {self.returncode}: {out}"


def source_dir() -> Path:
    """The repository: $KNFLOW_SOURCE_DIR, or the one this file is in."""
    env = os.environ.get("KNFLOW_SOURCE_DIR")
    return Path(env).resolve() if env else HERE.parent.parent


def shared_dir() -> Path:
    """The steering repository's shared/ folder, beside the repository."""
    env = os.environ.get("KNFLOW_SHARED_DIR")
    return Path(env).resolve() if env else source_dir().parent / "shared"


def find_bin_dir() -> Path:
    """The folder with the five binaries: $KNFLOW_KUBE_BIN, else build.sh's cache folder."""
    env = os.environ.get("KNFLOW_KUBE_BIN")
    if env:
        bin_dir = Path(env)
    else:
        r = subprocess.run(["bash", str(BUILD_SH), "--print"], capture_output=True, text=True)
        lines = r.stdout.strip().splitlines()
        if not lines:
            raise KubeEnvError(f"{BUILD_SH} --print failed: {r.stderr.strip()}")
        bin_dir = Path(lines[-1])
    missing = [b for b in BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if missing:
        where = "$KNFLOW_KUBE_BIN" if env else "the build cache"
        raise KubeEnvError(f"Kubernetes test binaries missing in {bin_dir} ({where}): "
                           f"{', '.join(missing)}; run test/kubeenv/build.sh first")
    return bin_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the thread that started it ends, so that a test
    killed outright (ctest's timeout) leaves no etcd or apiserver behind."""
    if _prctl is not None:
        _prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


def _process_id(pid: int) -> str | None:
    """pid and start time: names a process even after its pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return f"{pid} {stat.rsplit(')', 1)[1].split()[19]}"


def _sweep_orphans() -> None:
    """Removes the temp folders of environments whose process was killed outright (SIGKILL
    leaves the folder; PR_SET_PDEATHSIG already ended its programs). Kept folders have no owner
    file and stay."""
    for owner in Path(tempfile.gettempdir()).glob("knflow-kubeenv-*/owner"):
        with contextlib.suppress(OSError, ValueError):
            recorded = owner.read_text().strip()
            if _process_id(int(recorded.split()[0])) != recorded:
                shutil.rmtree(owner.parent, ignore_errors=True)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class _Process:
    """One control-plane program in its own process group, its output appended to a log."""

    def __init__(self, name: str, args: list[str], log: Path, env: Mapping[str, str]):
        self.name, self.args, self.log, self.env = name, args, log, env
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            log.write(f"\n===== kubeenv: starting {self.name} at {time.strftime('%H:%M:%S')}\n"
                      .encode())
            log.flush()
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=dict(self.env),
                                         start_new_session=True, preexec_fn=_die_with_parent)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_running(self) -> None:
        if not self.running():
            code = self.proc.returncode if self.proc else None
            raise KubeEnvError(f"{self.name} exited with {code}")

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # The group too, in case the program left children behind.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.proc = None


class KubeEnv:
    """etcd + kube-apiserver (+ kube-controller-manager) for one test or test class.

    Options:
      controller_manager      also run kube-controller-manager with the `garbagecollector` and
                              `namespace` controllers, so ownerReference cascades and namespace
                              deletion happen. It starts after the CRDs are established (the
                              garbage collector notices CRDs added later within about 30 s).
      watch_cache             False gives `--watch-cache=false`: watches read etcd directly.
      etcd_compaction_interval  e.g. "2s": the apiserver compacts etcd that often (default 5m);
                              with watch_cache=False an old resourceVersion then gets 410 Gone.
      crds                    install manifests/crds/*.yaml and the Knative CRDs (default True).
      knflow_crds             False: leave manifests/crds/ out (the Knative CRDs still come with
                              `crds`), e.g. for the Helm chart to install the Workflow CRD.
      extra_crds              more CRD files or folders to install and wait for.
      apiserver_args          extra kube-apiserver flags, e.g. ["--v=4"].
      keep                    keep the temp folder (logs, etcd data) after stop; also
                              KNFLOW_KUBEENV_KEEP=1. It is kept anyway when start() fails.
      start_timeout           seconds allowed for each program to become ready.

    Call restart_apiserver() from the thread that started the environment: the programs get
    SIGKILL when that thread ends (PR_SET_PDEATHSIG)."""

    def __init__(self, *, controller_manager: bool = False, watch_cache: bool = True,
                 etcd_compaction_interval: str | None = None, crds: bool = True,
                 knflow_crds: bool = True, extra_crds: Sequence[str | os.PathLike] = (),
                 apiserver_args: Sequence[str] = (), keep: bool | None = None,
                 start_timeout: float = 90.0, bin_dir: str | os.PathLike | None = None):
        self.controller_manager = controller_manager
        self.watch_cache = watch_cache
        self.etcd_compaction_interval = etcd_compaction_interval
        self.install_crds = crds
        self.install_knflow_crds = knflow_crds
        self.extra_crds = [Path(p) for p in extra_crds]
        self.apiserver_args = list(apiserver_args)
        self.keep = keep if keep is not None else os.environ.get("KNFLOW_KUBEENV_KEEP") == "1"
        self.start_timeout = start_timeout
        self._bin_dir = Path(bin_dir) if bin_dir else None
        self.workdir: Path | None = None
        self._token = secrets.token_hex(24)
        self._procs: dict[str, _Process] = {}
        self._ssl: ssl.SSLContext | None = None
        self.etcd_port = self.apiserver_port = 0
        self.crd_names: list[str] = []

    # ---- what tests use

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir()
        return self._bin_dir

    @property
    def kubeconfig(self) -> str:
        return str(self._need_workdir() / "kubeconfig")

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def token(self) -> str:
        return self._token

    @property
    def ca_file(self) -> str:
        """The apiserver's self-signed serving certificate bundle (from --cert-dir): the CA that
        clients verify the server with."""
        return str(self._need_workdir() / "certs" / "apiserver.crt")

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    def env(self) -> dict[str, str]:
        """Environment variables that describe this control plane to a child process."""
        return {
            "KUBECONFIG": self.kubeconfig,
            "KNFLOW_KUBE_SERVER": self.server,
            "KNFLOW_KUBE_TOKEN": self.token,
            "KNFLOW_KUBE_CA": self.ca_file,
            "KNFLOW_KUBE_BIN": str(self.bin_dir),
        }

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess:
        """Runs the pinned kubectl against this apiserver; text in and out."""
        return self._run([str(self.bin_dir / "kubectl"), "--kubeconfig", self.kubeconfig, *args],
                         input, check, timeout)

    def helm(self, *args: str, input: str | None = None, check: bool = True,
             timeout: float = 300) -> subprocess.CompletedProcess:
        """Runs the pinned helm against this apiserver, with its config and cache in the temp
        folder."""
        return self._run([str(self.bin_dir / "helm"), "--kubeconfig", self.kubeconfig, *args],
                         input, check, timeout)

    def request(self, method: str, path: str, body: Any = None, *,
                content_type: str = "application/json",
                timeout: float = 30) -> tuple[int, Any]:
        """One HTTPS request to the apiserver with the admin token and TLS verification.
        `body` is sent as JSON unless it is str/bytes. Returns (status, decoded JSON or text)."""
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else (
                body.encode() if isinstance(body, str) else json.dumps(body).encode())
        req = urllib.request.Request(self.server + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/json",
            **({"Content-Type": content_type} if data is not None else {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl_context()) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        text = raw.decode(errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def log(self, name: str) -> str:
        """The whole log of one program ("etcd", "kube-apiserver", "kube-controller-manager")."""
        return (self._need_workdir() / f"{name}.log").read_text(errors="replace")

    # ---- life cycle

    def __enter__(self) -> "KubeEnv":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "KubeEnv":
        bin_dir = self.bin_dir  # fails first, and clearly, when nothing is built
        _sweep_orphans()
        self.workdir = Path(tempfile.mkdtemp(prefix="knflow-kubeenv-"))
        (self.workdir / "owner").write_text(f"{_process_id(os.getpid())}\n")
        try:
            self._prepare()
            self._start_etcd()
            self._start_apiserver(first=True)
            self._write_kubeconfig()
            self._install_crds()
            if self.controller_manager:
                self._start_controller_manager()
        except BaseException as e:
            self._report_failure(e)
            self.keep = True
            self.stop()
            raise
        del bin_dir
        return self

    def stop(self) -> None:
        """Stops everything (SIGTERM, then SIGKILL after 10 s) and removes the temp folder unless
        it is kept. Safe to call twice."""
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self._procs.pop(name, None)
            if proc:
                proc.stop()
        if self.workdir and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        elif self.workdir:
            (self.workdir / "owner").unlink(missing_ok=True)
            print(f"kubeenv: kept {self.workdir}", file=sys.stderr)
        self.workdir = None

    def restart_apiserver(self) -> None:
        """Stops kube-apiserver and starts it again on the same port, with the same etcd,
        certificates and token; returns when it is ready."""
        proc = self._procs["kube-apiserver"]
        proc.stop()
        try:
            self._start_apiserver(first=False)
        except BaseException as e:
            self._report_failure(e)
            raise

    # ---- inside

    def _need_workdir(self) -> Path:
        if self.workdir is None:
            raise KubeEnvError("the environment is not started")
        return self.workdir

    def _run(self, cmd: list[str], input: str | None, check: bool,
             timeout: float) -> subprocess.CompletedProcess:
        work = self._need_workdir()
        env = dict(os.environ, KUBECONFIG=self.kubeconfig,
                   HELM_CACHE_HOME=str(work / "helm" / "cache"),
                   HELM_CONFIG_HOME=str(work / "helm" / "config"),
                   HELM_DATA_HOME=str(work / "helm" / "data"))
        r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                           env=env)
        if check and r.returncode != 0:
            raise CommandError(r.returncode, cmd, r.stdout, r.stderr)
        return r

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=self.ca_file)
        return self._ssl

    def _prepare(self) -> None:
        work = self._need_workdir()
        (work / "certs").mkdir()
        key, pub = work / "sa.key", work / "sa.pub"
        for cmd in (["openssl", "genrsa", "-out", str(key), "2048"],
                    ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise KubeEnvError(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
        # CSV: token,user,uid,"groups"
        (work / "tokens.csv").write_text(f'{self._token},admin,admin,"system:masters"\n')
        os.chmod(work / "tokens.csv", 0o600)

    def _add(self, name: str, args: list[str]) -> _Process:
        proc = _Process(name, [str(self.bin_dir / name), *args], self._need_workdir() / f"{name}.log",
                        os.environ)
        self._procs[name] = proc
        proc.start()
        return proc

    def _wait(self, proc: _Process, what: str, ready) -> None:
        deadline = time.monotonic() + self.start_timeout
        delay = 0.05
        while True:
            proc.check_running()
            with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise KubeEnvError(f"{proc.name}: {what} not ready after {self.start_timeout:.0f} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _start_etcd(self) -> None:
        work = self._need_workdir()
        for attempt in range(3):  # a free port can be taken before etcd binds it
            self.etcd_port, peer = free_port(), free_port()
            client, peer_url = self.etcd_url, f"http://127.0.0.1:{peer}"
            proc = self._add("etcd", [
                "--name", "kubeenv", "--data-dir", str(work / "etcd"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                "--initial-cluster", f"kubeenv={peer_url}",
                "--unsafe-no-fsync", "--log-level", "warn"])

            def healthy() -> bool:
                with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as r:
                    return json.load(r).get("health") == "true"
            try:
                self._wait(proc, "/health", healthy)
                return
            except KubeEnvError:
                if attempt == 2 or "address already in use" not in self.log("etcd"):
                    raise
                proc.stop()
                shutil.rmtree(work / "etcd", ignore_errors=True)

    def _apiserver_args(self) -> list[str]:
        work = self._need_workdir()
        args = [
            "--etcd-servers", self.etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(self.apiserver_port), "--cert-dir", str(work / "certs"),
            "--service-account-key-file", str(work / "sa.pub"),
            "--service-account-signing-key-file", str(work / "sa.key"),
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-cluster-ip-range", "10.0.0.0/24",
            "--authorization-mode", "RBAC",
            "--token-auth-file", str(work / "tokens.csv"),
            "--allow-privileged",
            "--profiling=false",
            # The `kubernetes` Service's endpoints would be 127.0.0.1, which Endpoints refuse.
            "--endpoint-reconciler-type", "none",
            # Without it, SIGTERM waits up to a minute for clients' open watches to end.
            "--shutdown-watch-termination-grace-period", "2s",
        ]
        if not self.watch_cache:
            args.append("--watch-cache=false")
        if self.etcd_compaction_interval:
            args += ["--etcd-compaction-interval", self.etcd_compaction_interval]
        return args + self.apiserver_args

    def _start_apiserver(self, first: bool) -> None:
        for attempt in range(3 if first else 1):
            if first:
                self.apiserver_port = free_port()
            proc = self._add("kube-apiserver", self._apiserver_args())

            def ready() -> bool:
                # The certificate appears when the apiserver has generated it; verify with it.
                if not os.path.exists(self.ca_file):
                    return False
                self._ssl = None
                status, _ = self.request("GET", "/readyz", timeout=5)
                if status != 200:
                    return False
                # The bootstrap controller creates the default namespace shortly after.
                status, _ = self.request("GET", "/api/v1/namespaces/default", timeout=5)
                return status == 200
            try:
                self._wait(proc, "/readyz", ready)
                return
            except KubeEnvError:
                if (not first or attempt == 2
                        or "address already in use" not in self.log("kube-apiserver")):
                    raise
                proc.stop()

    def _write_kubeconfig(self) -> None:
        # The API server's certificate bundle as the CA: clients really verify TLS.
        Path(self.kubeconfig).write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: kubeenv
  cluster:
    server: {self.server}
    certificate-authority: {self.ca_file}
users:
- name: admin
  user:
    token: {self.token}
contexts:
- name: kubeenv
  context:
    cluster: kubeenv
    user: admin
    namespace: default
current-context: kubeenv
""")
        os.chmod(self.kubeconfig, 0o600)

    def _crd_files(self) -> list[Path]:
        files: list[Path] = []
        if self.install_crds:
            if self.install_knflow_crds:
                files += sorted((source_dir() / "manifests" / "crds").glob("*.yaml"))
            knative = shared_dir() / "knative" / "crds"
            if not knative.is_dir():
                raise KubeEnvError(f"the Knative CRDs are not in {knative} "
                                   "(set KNFLOW_SHARED_DIR or KNFLOW_SOURCE_DIR)")
            files += [p for p in sorted(knative.glob("*.yaml"))
                      if p.name not in SKIPPED_KNATIVE_CRDS]
        for p in self.extra_crds:
            files += sorted(p.glob("*.yaml")) if p.is_dir() else [p]
        return files

    def _install_crds(self) -> None:
        files = self._crd_files()
        if not files:
            return
        args = ["apply", "--server-side", "--force-conflicts", "-o", "name"]
        for f in files:
            args += ["-f", str(f)]
        out = self.kubectl(*args).stdout.split()
        self.crd_names = [n for n in out if n.startswith("customresourcedefinition")]
        if self.crd_names:
            self.kubectl("wait", "--for", "condition=established",
                         f"--timeout={int(self.start_timeout)}s", *self.crd_names,
                         timeout=self.start_timeout + 30)

    def _start_controller_manager(self) -> None:
        proc = self._add("kube-controller-manager", [
            "--kubeconfig", self.kubeconfig,
            "--controllers", "garbagecollector,namespace",
            "--leader-elect=false", "--bind-address", "127.0.0.1", "--secure-port", "0",
            "--concurrent-gc-syncs", "5",
        ])
        # No port to probe with --secure-port 0: it is ready when the garbage collector has
        # synced its informers (from then on, a deleted owner's dependents are collected).
        self._wait(proc, "garbage collector",
                   lambda: '"Caches are synced" controller="garbage collector"'
                   in self.log("kube-controller-manager"))

    def _report_failure(self, e: BaseException) -> None:
        if isinstance(e, KeyboardInterrupt) or self.workdir is None:
            return
        lines = [f"kubeenv: start failed: {e}; logs in {self.workdir}"]
        for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
            path = self.workdir / f"{name}.log"
            if path.exists():
                lines += [f"----- last lines of {path}", _tail(path)]
        print("\n".join(lines), file=sys.stderr)


# ---- command line


def _describe(kube: KubeEnv) -> str:
    env = kube.env()
    lines = [f"export {k}={v}" for k, v in env.items()]
    lines.append(f'export PATH="{kube.bin_dir}:$PATH"')
    return "\n".join(lines)


def _env_from_args(a: argparse.Namespace) -> KubeEnv:
    return KubeEnv(controller_manager=a.controller_manager, watch_cache=not a.no_watch_cache,
                   etcd_compaction_interval=a.etcd_compaction_interval, keep=a.keep or None)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_text in (("run", "start the environment, run CMD in it, tear it down"),
                            ("shell", "start the environment, print it, wait for Ctrl-C")):
        s = sub.add_parser(name, help=help_text)
        s.add_argument("--controller-manager", action="store_true",
                       help="also run kube-controller-manager (garbage collector, namespaces)")
        s.add_argument("--no-watch-cache", action="store_true",
                       help="kube-apiserver --watch-cache=false")
        s.add_argument("--etcd-compaction-interval", metavar="DURATION",
                       help='kube-apiserver --etcd-compaction-interval, e.g. "2s"')
        s.add_argument("--keep", action="store_true", help="keep the temp folder and its logs")
        if name == "run":
            s.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    a = p.parse_args(argv)

    # SIGTERM and SIGHUP tear down like Ctrl-C does, and so does the end of whatever started us
    # (a wrapper such as pyenv's shim may be killed instead of this process).
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    if _prctl is not None:
        _prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG

    if a.command == "run":
        cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
        if not cmd:
            p.error("run needs a command: kubeenv.py run -- CMD ARGS...")
    try:
        with _env_from_args(a) as kube:
            env = dict(os.environ, **kube.env())
            env["PATH"] = f"{kube.bin_dir}{os.pathsep}{env.get('PATH', '')}"
            if a.command == "run":
                child = subprocess.Popen(cmd, env=env)
                try:
                    code = child.wait()
                    return 128 - code if code < 0 else code  # killed by a signal: 128 + N
                except KeyboardInterrupt:
                    child.send_signal(signal.SIGTERM)
                    try:
                        child.wait(10)
                    except subprocess.TimeoutExpired:
                        child.kill()
                        child.wait()
                    return 130
            print(_describe(kube))
            print(f"# logs: {kube.workdir}; Ctrl-C stops everything", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                return 0
    except KubeEnvError as e:
        print(f"kubeenv: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
