"""A tiny CloudEvents-over-HTTP function server for the examples, standard library only.

A function is a Python callable `handle(data, event)` that returns the reply data (a JSON value;
`data` is JSON as parsed, or a string when the event's data is text of another type),
or raises `Reject(status, message)` to answer with an error status. The server listens on $PORT
(set by knflow for `local.command` functions, as Knative sets it for containers), accepts binary-
and structured-mode CloudEvents, and answers in binary mode with a reply event.
"""

import json
import os
import sys
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Reject(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def is_json(content_type):
    """Whether a Content-Type says JSON (none says so too, as knflow reads it); other data, such
    as text/plain, is handed to the function as text."""
    media = (content_type or "application/json").split(";")[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def serve(handle, reply_type):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if self.headers.get("Content-Type", "").startswith("application/cloudevents+json"):
                structured = json.loads(body)
                event = {k: v for k, v in structured.items() if k not in ("data", "data_base64")}
                data = structured.get("data")
            else:
                event = {k[3:]: v for k, v in self.headers.items() if k.lower().startswith("ce-")}
                data = json.loads(body) if body and is_json(self.headers.get("Content-Type")) \
                    else body.decode("utf-8") if body else None
            try:
                result = handle(data, event)
            except Reject as r:
                self.answer(r.status, {"error": r.message}, None)
                return
            self.answer(200, result, {
                "ce-specversion": "1.0",
                "ce-id": str(uuid.uuid4()),
                "ce-source": "/examples/functions/" + reply_type.rsplit(".", 1)[-1],
                "ce-type": reply_type,
            })

        def answer(self, status, payload, ce_headers):
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for k, v in (ce_headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, fmt, *args):
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"{reply_type} listening on 127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
