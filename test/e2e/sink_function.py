#!/usr/bin/env python3
"""A local function for test_local_functions.py (standard library only), as a function author
would write one for knflow: it sends events to $K_SINK with $KNFLOW_SINK_TOKEN.

POST / sends the request's JSON body on as a CloudEvent of type test.sink.forwarded and answers
with what the broker said, plus the statuses of two requests the token must not allow (another
namespace's broker, the workflow list). The token itself never leaves this process."""

import http.server
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid


def send(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method)
    token = os.environ.get("KNFLOW_SINK_TOKEN")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        sink = os.environ.get("K_SINK", "")
        event = {"ce-specversion": "1.0", "ce-id": str(uuid.uuid4()), "ce-source": "/sink-function",
                 "ce-type": "test.sink.forwarded", "Content-Type": "application/json"}
        status, text = send("POST", sink, body, event)
        other = sink.replace("/namespaces/default/", "/namespaces/elsewhere/")
        other_status, _ = send("POST", other, body, event)
        api = urllib.parse.urljoin(sink, "/api/v1/namespaces/default/workflows")
        list_status, _ = send("GET", api)
        reply = json.dumps({"sink": sink, "brokerStatus": status,
                            "broker": json.loads(text) if status == 202 else text,
                            "otherNamespaceStatus": other_status,
                            "listWorkflowsStatus": list_status}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    print("sink function: listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
