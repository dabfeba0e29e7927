"""https functions, reply and dead-letter sinks in standalone mode, against real TLS servers.

A test PKI is made with the openssl command: a CA, a certificate for 127.0.0.1 and localhost that
it signed, and an unrelated CA. The functions are Python https servers (LocalFunction with
`tls`). The daemon trusts the CA through `--tls-ca-file`, or through OpenSSL's SSL_CERT_FILE, or
not at all; a peer it cannot verify is a delivery failure that names the reason."""

import json
import os
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from daemon import BIN, Daemon, LocalFunction, wait_until  # noqa: E402

DEADLINE = 60  # seconds: generous bounds for polling, never an assertion on speed


def make_pki(d):
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.crt", "-days", "2",
        "-subj", "/CN=knflow-e2e-ca")
    run("req", "-x509", *ec, "-keyout", f"{d}/other.key", "-out", f"{d}/other.crt", "-days", "2",
        "-subj", "/CN=knflow-e2e-other-ca")
    with open(f"{d}/server.ext", "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("req", *ec, "-keyout", f"{d}/server.key", "-out", f"{d}/server.csr", "-subj", "/CN=localhost")
    run("x509", "-req", "-in", f"{d}/server.csr", "-CA", f"{d}/ca.crt", "-CAkey", f"{d}/ca.key",
        "-CAcreateserial", "-out", f"{d}/server.crt", "-days", "2", "-extfile", f"{d}/server.ext")
    return {"ca": f"{d}/ca.crt", "other": f"{d}/other.crt",
            "cert": (f"{d}/server.crt", f"{d}/server.key")}


def workflow(name, function_url, reply=None, dead_letter=None):
    spec = {
        "functions": {"price": {"url": function_url}},
        "retry": {"limit": 1, "backoff": "constant", "delay": "PT0.05S"},
        "do": [{"name": "quote", "call": "price"}],
    }
    if reply:
        spec["reply"] = {"uri": reply}
    if dead_letter:
        spec["deadLetter"] = {"uri": dead_letter}
    return json.dumps({"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                       "metadata": {"name": name}, "spec": spec})


class TlsFunctionsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="knflow-tls-")
        cls.pki = make_pki(cls.tmp.name)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def setUp(self):
        self.lock = threading.Lock()
        self.received = []  # (path, ce-type, body) of every request a sink took

        def price(path, headers, body):
            return 200, json.dumps({"item": json.loads(body)["item"], "price": 42.5})

        def sink(path, headers, body):
            with self.lock:
                self.received.append((path, headers.get("ce-type"), body))
            return 202, b""

        self.function = LocalFunction(price, tls=self.pki["cert"])
        self.sink = LocalFunction(sink, tls=self.pki["cert"])
        self.addCleanup(self.function.close)
        self.addCleanup(self.sink.close)

    def sink_got(self, path):
        with self.lock:
            return [r for r in self.received if r[0] == path]

    def create(self, d, name, **kw):
        status, body = d.json("POST", "/api/v1/namespaces/default/workflows", workflow(name, **kw))
        self.assertIn(status, (200, 201), body)
        return body

    def test_calls_and_replies_over_https_with_a_ca_file(self):
        with Daemon("--tls-ca-file", self.pki["ca"]) as d:
            d.start()
            # Stored: a workflow that cannot run standalone is refused (422) by this daemon.
            self.create(d, "quote", function_url=self.function.url + "/price",
                        reply=self.sink.url + "/reply")
            for i in range(3):
                status, body = d.json("POST", "/api/v1/namespaces/default/workflows/quote:invoke",
                                      json.dumps({"item": f"book-{i}"}))
                self.assertEqual(status, 200, body)
                self.assertEqual(body, {"item": f"book-{i}", "price": 42.5})
            # The final events went to the https reply sink too.
            self.assertTrue(wait_until(lambda: len(self.sink_got("/reply")) == 3, DEADLINE),
                            self.received)
            self.assertEqual(d.stop(), 0)

    def test_system_trust_store_through_ssl_cert_file(self):
        """Without the flag the client uses OpenSSL's default trust store, which SSL_CERT_FILE
        replaces (as docs/functions.md says)."""
        with Daemon(env={"SSL_CERT_FILE": self.pki["ca"]}) as d:
            d.start()
            self.create(d, "quote", function_url=self.function.url + "/price")
            status, body = d.json("POST", "/api/v1/namespaces/default/workflows/quote:invoke",
                                  json.dumps({"item": "pen"}))
            self.assertEqual(status, 200, body)
            self.assertEqual(body, {"item": "pen", "price": 42.5})
            self.assertEqual(d.stop(), 0)

    def test_an_untrusted_peer_is_a_delivery_failure_that_says_why(self):
        with Daemon("--tls-ca-file", self.pki["other"]) as d:
            d.start()
            # The dead-letter sink is https too, and as untrusted: its failure is only logged.
            self.create(d, "quote", function_url=self.function.url + "/price",
                        dead_letter=self.sink.url + "/dls")
            status, headers, text = d.call("POST",
                                           "/api/v1/namespaces/default/workflows/quote:invoke",
                                           json.dumps({"item": "pen"}))
            self.assertEqual(status, 502, text)
            authority = self.function.url.removeprefix("https://")
            why = (f"TLS handshake with {authority} failed: its certificate was refused: "
                   "unable to get local issuer certificate")
            self.assertEqual(json.loads(text)["error"]["detail"], why, text)
            run_id = headers["Knflow-Run-Id"]
            status, run = d.json("GET", f"/api/v1/namespaces/default/runs/{run_id}")
            self.assertEqual(status, 200, run)
            attempts = run["attempts"]
            self.assertEqual(len(attempts), 2, run)  # the first try and one retry
            self.assertTrue(all(a["error"]["detail"] == why for a in attempts), attempts)
            self.assertEqual(self.sink_got("/dls"), [])
            self.assertEqual(d.stop(), 0)

    def test_an_unreadable_ca_file_stops_the_start(self):
        missing = os.path.join(self.tmp.name, "missing.pem")
        result = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir",
                                 os.path.join(self.tmp.name, "data"), "--tls-ca-file", missing],
                                capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn(f'knflow serve: --tls-ca-file: cannot read CA certificates from "{missing}"',
                      result.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
