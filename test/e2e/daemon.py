"""Starts the real knflow binary for end-to-end tests: a fresh data directory, a free port,
and helpers to call it with urllib. Test tooling only."""

import http.server
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

BIN = os.environ.get("KNFLOW_BIN", "build/dev/knflow")
SOURCE_DIR = os.environ.get("KNFLOW_SOURCE_DIR", os.getcwd())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, *args, env=None, data_dir=None):
        self.tmp = tempfile.TemporaryDirectory(prefix="knflow-e2e-")
        self.data_dir = data_dir or os.path.join(self.tmp.name, "data")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.tmp.name, "daemon.log")
        self.args = [BIN, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir,
                     *args]
        self.env = dict(os.environ, **(env or {}))
        self.proc = None

    def start(self, wait_ready=True):
        if getattr(self, "log", None):
            self.log.close()  # started again
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        if wait_ready:
            self.wait_ready()
        return self

    @property
    def token(self):
        with open(os.path.join(self.data_dir, "token")) as f:
            return f.read().strip()

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def tail(self, size=6000):
        """The end of the daemon's log, for a failed assertion's message (the log is gone with
        the temporary directory once the test ends)."""
        return self.output()[-size:]

    def wait_ready(self, limit=60):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.output()}")
            try:
                status, _, _ = self.call("GET", "/readyz")
                if status == 200:
                    return
            except (OSError, FileNotFoundError):
                pass
            time.sleep(0.05)
        raise RuntimeError("daemon not ready in time:\n" + self.output())

    def call(self, method, path, body=None, content_type="application/json", token=True, headers=None,
             timeout=30):
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        if token:
            req.add_header("Authorization", "Bearer " + self.token)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def json(self, method, path, body=None, **kw):
        status, _, text = self.call(method, path, body, **kw)
        return status, (json.loads(text) if text else None)

    def stop(self, sig=signal.SIGTERM, limit=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(limit)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode

    def close(self):
        try:
            if self.proc and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        finally:
            self.log.close() if getattr(self, "log", None) else None
            self.tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def alive(pid):
    """Whether process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def zombie(pid):
    """Whether process `pid` has ended and waits for its parent to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def wait_until(predicate, timeout, interval=0.05):
    """Calls `predicate` every `interval` seconds until it returns something true or `timeout`
    seconds have passed; returns its last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(interval)


def workflow(name, url="http://127.0.0.1:9000"):
    return json.dumps({
        "apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": name},
        "spec": {"functions": {"echo": {"url": url}}, "do": [{"name": "say", "call": "echo"}]},
    })


class LocalFunction:
    """A function on a local HTTP server (127.0.0.1, a free port) for the tests: `respond(path,
    headers, body)` gives (status, JSON text or bytes[, more headers]) for each POST, called on the server's thread for
    that request (so it may block to hold the request in flight). A connection the daemon
    dropped meanwhile is ignored. With `tls=(certificate file, key file)` it serves https, and
    with `client_ca` (a CA file) it requires a client certificate that CA signed."""

    def __init__(self, respond, tls=None, client_ca=None):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, text, *extra = respond(self.path, self.headers, body)
                payload = text if isinstance(text, bytes) else text.encode()
                headers = {"Content-Type": "application/json", **(extra[0] if extra else {})}
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the daemon gave up on this request, or was killed

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if tls:
            import ssl
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            if client_ca:
                context.load_verify_locations(client_ca)
                context.verify_mode = ssl.CERT_REQUIRED
            # The handshake happens in the handler's thread, at its first read, not in accept().
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True,
                                                     do_handshake_on_connect=False)
            scheme = "https"
            # A client that refused the certificate ends its handler with an SSLError: expected.
            self.server.handle_error = lambda request, address: None
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
