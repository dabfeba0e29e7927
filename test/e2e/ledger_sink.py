"""A CloudEvents sink for end-to-end tests, standard library only: an HTTP server on 127.0.0.1
that records every event it receives in a thread-safe ledger and answers 200 with the event
echoed back in binary mode, so that it serves both as a workflow's function (`call` steps POST
binary CloudEvents with `Prefer: reply`) and as a `spec.reply` or `spec.deadLetter` destination.
Test tooling only."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Delivery:
    """One request the sink received."""

    __slots__ = ("path", "ce_id", "ce_type", "ce_source", "data", "at", "headers")

    def __init__(self, path, headers, data, at):
        self.path = path
        self.headers = headers
        self.ce_id = headers.get("ce-id")
        self.ce_type = headers.get("ce-type")
        self.ce_source = headers.get("ce-source")
        self.data = data
        self.at = at  # time.monotonic() when the request arrived

    @property
    def run_id(self):
        """The run id in a call's event id (`<run id>:<step path>`), else None."""
        return self.ce_id.split(":", 1)[0] if self.ce_id and ":" in self.ce_id else None

    @property
    def step_path(self):
        return self.ce_id.split(":", 1)[1] if self.ce_id and ":" in self.ce_id else None

    def __repr__(self):
        return f"Delivery({self.path} id={self.ce_id} data={json.dumps(self.data)})"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the daemon opens up to 64 pooled connections per origin at once
    allow_reuse_address = True


class LedgerSink:
    """Records every request; `delays` maps a path to the seconds to sleep before answering
    (the request is recorded when it arrives, before the delay)."""

    def __init__(self, delays=None):
        self.delays = dict(delays or {})
        self._lock = threading.Lock()
        self._ledger = []
        self._arrived = threading.Condition(self._lock)
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30  # an idle keep-alive connection frees its thread after this

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    data = json.loads(body) if body else None
                except ValueError:
                    data = body.decode(errors="replace")
                path = self.path.split("?", 1)[0]
                sink._record(Delivery(path, headers, data, time.monotonic()))
                delay = sink.delays.get(path)
                if delay:
                    time.sleep(delay)
                out = body or b"null"
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.send_header("ce-specversion", "1.0")
                    self.send_header("ce-id", headers.get("ce-id", "sink"))
                    self.send_header("ce-source", headers.get("ce-source", "/ledger-sink"))
                    self.send_header("ce-type", headers.get("ce-type", "dev.knflow.test.sink"))
                    self.end_headers()
                    self.wfile.write(out)
                except OSError:
                    pass  # the caller went away (a killed daemon): the delivery is recorded

            def log_message(self, fmt, *args):
                pass

            def handle(self):
                try:
                    super().handle()
                except OSError:
                    pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def _record(self, delivery):
        with self._lock:
            self._ledger.append(delivery)
            self._arrived.notify_all()

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def url(self, path):
        return self.base + path

    def deliveries(self, path=None):
        """A snapshot of the ledger, optionally only one path."""
        with self._lock:
            return [d for d in self._ledger if path is None or d.path == path]

    def wait_for(self, predicate, timeout):
        """Waits until predicate(ledger snapshot) is true; returns whether it became true."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(list(self._ledger)):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._arrived.wait(min(left, 0.2))
            return True
