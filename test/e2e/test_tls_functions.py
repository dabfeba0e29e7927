"""https functions, reply and dead-letter sinks in standalone mode, against real TLS servers.

A test PKI is made with the openssl command: a CA, a certificate for 127.0.0.1 and localhost that
it signed, and an unrelated CA. The functions are Python https servers (LocalFunction with
`tls`). The daemon trusts the CA through `--tls-ca-file`, or through OpenSSL's SSL_CERT_FILE, or
not at all; a peer it cannot verify is a delivery failure that names the reason."""

import json
import os
import socket
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
            self.assertEqual(d.stop(), 0, d.tail())

    def test_system_trust_store_through_ssl_cert_file(self):
        """Without the flag the client uses OpenSSL's default trust store, which SSL_CERT_FILE
        replaces (as docs/engine.md says)."""
        with Daemon(env={"SSL_CERT_FILE": self.pki["ca"]}) as d:
            d.start()
            self.create(d, "quote", function_url=self.function.url + "/price")
            status, body = d.json("POST", "/api/v1/namespaces/default/workflows/quote:invoke",
                                  json.dumps({"item": "pen"}))
            self.assertEqual(status, 200, body)
            self.assertEqual(body, {"item": "pen", "price": 42.5})
            self.assertEqual(d.stop(), 0, d.tail())

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
            self.assertEqual(d.stop(), 0, d.tail())

    def test_a_peer_that_wants_a_client_certificate_is_named(self):
        """knflow sends no client certificate: a TLS 1.3 peer that requires one refuses it with an
        alert after the handshake, which was lost to the reset of the send in most runs."""
        demanding = LocalFunction(lambda *_: (200, "{}"), tls=self.pki["cert"],
                                  client_ca=self.pki["ca"])
        self.addCleanup(demanding.close)
        with Daemon("--tls-ca-file", self.pki["ca"]) as d:
            d.start()
            self.create(d, "quote", function_url=demanding.url + "/price")
            for _ in range(5):
                status, body = d.json("POST", "/api/v1/namespaces/default/workflows/quote:invoke",
                                      json.dumps({"item": "pen"}))
                self.assertEqual(status, 502, body)
                self.assertIn("the peer requires a client certificate, which knflow does not "
                              "send", body["error"]["detail"], body)
            self.assertEqual(d.stop(), 0, d.tail())

    def test_the_cli_gives_up_on_a_peer_that_never_finishes_the_handshake(self):
        """`knflow invoke` without --timeout waits as long as the daemon holds its request, and
        waited as long for a TLS peer that took the connection and never answered."""
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        self.addCleanup(silent.close)
        server = f"https://127.0.0.1:{silent.getsockname()[1]}"
        token = os.path.join(self.tmp.name, "token")
        with open(token, "w") as f:
            f.write("not-checked-by-a-peer-that-never-answers\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KNFLOW_")}
        result = subprocess.run([BIN, "invoke", "quote", "--server", server, "--token-file",
                                 token], capture_output=True, text=True,
                                timeout=DEADLINE, env=dict(env, HOME=self.tmp.name))
        self.assertEqual(result.returncode, 3, result.stderr)
        self.assertIn(f"knflow: no answer from the daemon at {server}: timed out after 10000 ms "
                      f"in the TLS handshake with {server.removeprefix('https://')}\n",
                      result.stderr)

    def test_a_ca_file_without_certificates_stops_the_start(self):
        """A CRL alone, a key, an empty file: nothing to trust, so the start stops (a CRL alone
        was taken)."""
        d = self.tmp.name
        with open(f"{d}/index.txt", "w"), open(f"{d}/ca.cnf", "w") as f:
            f.write("[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\ndefault_md=sha256\n"
                    "default_crl_days=1\n")
        subprocess.run(["openssl", "ca", "-gencrl", "-config", "ca.cnf", "-keyfile", "ca.key",
                        "-cert", "ca.crt", "-out", "crl.pem"], cwd=d, check=True,
                       capture_output=True)
        open(f"{d}/empty.pem", "w").close()
        cases = {
            f"{d}/missing.pem": "No such file or directory",
            d: "Is a directory",
            f"{d}/empty.pem": "no PEM certificate in it",
            f"{d}/server.key": "no PEM certificate in it",
            f"{d}/crl.pem": "no PEM certificate in it",
        }
        for path, why in cases.items():
            with self.subTest(path=path):
                result = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir",
                                         os.path.join(d, "data"), "--tls-ca-file", path],
                                        capture_output=True, text=True, timeout=DEADLINE)
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertIn("knflow serve: --tls-ca-file: cannot read CA certificates from "
                              f'"{path}": {why}', result.stderr)
        result = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir",
                                 os.path.join(d, "data"), "--tls-ca-file", ""],
                                capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(result.stderr, "knflow serve: --tls-ca-file: the file name is empty\n")


if __name__ == "__main__":
    unittest.main(verbosity=2)
