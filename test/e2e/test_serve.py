"""The real `knflow serve` process: first start, tokens, refusal to bind openly, config and
environment, restart keeps data, graceful shutdown on SIGTERM and SIGINT."""

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from daemon import BIN, Daemon, free_port, workflow  # noqa: E402



def raw_request(port, head, body=b""):
    """Sends `head` (text) and `body` (bytes) on a new connection; (status, the reply's text)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode() + body)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    return int(reply.split(b" ", 2)[1]), reply.decode()

def read_until_closed(s):
    """Everything the server sends on socket `s` until it closes the connection (or resets it)."""
    reply = b""
    try:
        while chunk := s.recv(65536):
            reply += chunk
    except ConnectionResetError:
        pass
    return reply



def write_kubeconfig(directory, port):
    """A kubeconfig for an apiserver at 127.0.0.1:port; returns its path."""
    path = os.path.join(directory, "kubeconfig")
    with open(path, "w") as f:
        f.write(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{port}",
  insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    return path

class ServeTest(unittest.TestCase):
    def test_first_start_creates_a_token_and_requires_it(self):
        with Daemon() as d:
            d.start()
            token_file = os.path.join(d.data_dir, "token")
            self.assertEqual(os.stat(token_file).st_mode & 0o777, 0o600)
            self.assertIn("Created an API token in " + token_file, d.output())
            self.assertNotIn(d.token, d.output())  # the token itself is never printed
            status, _, _ = d.call("GET", "/api/v1/workflows", token=False)
            self.assertEqual(status, 401)
            status, _, _ = d.call("GET", "/api/v1/workflows")
            self.assertEqual(status, 200)
            self.assertEqual(d.stop(), 0, d.tail())

    def test_first_start_hint_names_the_port_the_daemon_listens_on(self):
        """With `--listen 127.0.0.1:0` the hint's curl went to http://127.0.0.1:0: the token was
        made before the port was chosen."""
        with Daemon() as d:
            d.args[d.args.index("--listen") + 1] = "127.0.0.1:0"
            d.start(wait_ready=False)
            deadline = time.monotonic() + 60
            while "Started knflow" not in d.output() and time.monotonic() < deadline:
                self.assertIsNone(d.proc.poll(), d.tail())
                time.sleep(0.05)
            port = re.search(r"listen=127\.0\.0\.1:(\d+)", d.output()).group(1)
            self.assertNotEqual(port, "0")
            self.assertIn(f"$(cat {d.data_dir}/token)\" http://127.0.0.1:{port}/api/v1/workflows\n",
                          d.output())
            self.assertEqual(d.stop(), 0, d.tail())

    def test_cluster_mode_reads_wait_for_the_mirror(self):
        """Against an apiserver that never answers, /readyz said 503 but the workflow API
        answered an empty list and 404s: wrong answers from a mirror not filled yet. And a
        SIGTERM took 31 s."""
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                kubeconfig = write_kubeconfig(tmp, silent.getsockname()[1])
                with Daemon("--kubeconfig", kubeconfig) as d:
                    d.start(wait_ready=False)
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:
                        self.assertIsNone(d.proc.poll(), d.tail())
                        try:
                            if d.call("GET", "/healthz")[0] == 200:
                                break
                        except OSError:
                            pass
                        time.sleep(0.05)
                    self.assertEqual(d.call("GET", "/readyz")[0], 503)
                    for path in ("/api/v1/workflows", "/api/v1/namespaces/default/workflows",
                                 "/api/v1/namespaces/default/workflows/x"):
                        status, headers, body = d.call("GET", path)
                        self.assertEqual(status, 503, (path, body))
                        self.assertEqual(headers.get("Retry-After"), "1")
                    # And SIGTERM ends it within the drain's bound: the informers' requests to the
                    # silent apiserver held it for their 30 s timeouts.
                    self.assertEqual(d.stop(limit=25), 0, d.tail())
        finally:
            silent.close()

    def test_one_data_directory_serves_one_mode(self):
        """A cluster-mode daemon given a standalone daemon's data directory wrote its copies of
        the cluster's Workflows over the standalone ones of the same names, and a standalone
        daemon then loaded those copies as its own."""
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        try:
            with tempfile.TemporaryDirectory() as tmp, Daemon() as d:
                d.start()
                status, _, body = d.call("POST", "/api/v1/namespaces/default/workflows",
                                         workflow("kept"))
                self.assertEqual(status, 201, body)
                self.assertEqual(d.stop(), 0, d.tail())
                kubeconfig = write_kubeconfig(tmp, silent.getsockname()[1])
                with Daemon("--kubeconfig", kubeconfig, data_dir=d.data_dir) as c:
                    c.start(wait_ready=False)
                    self.assertEqual(c.proc.wait(60), 3, c.tail())
                    self.assertIn("is a standalone daemon's: a cluster-mode daemon would write", c.output())
                    self.assertIn("give this daemon another --data-dir", c.output())
                d.start()
                status, obj = d.json("GET", "/api/v1/namespaces/default/workflows/kept")
                self.assertEqual(status, 200, obj)
                self.assertEqual(d.stop(), 0, d.tail())
        finally:
            silent.close()

    def test_apply_takes_a_file_with_a_uid_at_every_start(self):
        # A file saved with `GET ... -o yaml` keeps its uid: the replace at the second start
        # took it as a precondition on another object, and every start after the first failed.
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "wf.json")
            with open(path, "w") as f:
                json.dump({"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                           "metadata": {"name": "applied",
                                        "uid": "6a1d5f6e-0000-4000-8000-000000000000"},
                           "spec": {"do": [{"name": "s", "set": {"a": 1}}]}}, f)
            first = Daemon("--apply", path)
            try:
                first.start()
                self.assertEqual(first.stop(), 0, first.tail())
                second = Daemon("--apply", path, data_dir=first.data_dir)
                try:
                    second.start()
                    status, got = second.json("GET",
                                              "/api/v1/namespaces/default/workflows/applied")
                    self.assertEqual(status, 200, got)
                finally:
                    second.close()
            finally:
                first.close()

    def test_a_file_size_limit_fails_writes_instead_of_killing_the_daemon(self):
        # Under `ulimit -f`, the database's growth past it sent SIGXFSZ, which killed the daemon
        # without a word. Ignored, the write fails (EFBIG) as on a full disk, and it serves on.
        d = Daemon()
        d.args = ["prlimit", "--fsize=400000", "--", *d.args]
        with d:
            d.start()
            failed = None
            for i in range(400):
                status, _, body = d.call("POST", "/api/v1/namespaces/default/workflows",
                                         json.dumps({"apiVersion": "knflow.dev/v1alpha1",
                                                     "kind": "Workflow",
                                                     "metadata": {"name": f"w{i}"},
                                                     "spec": {"do": [{"name": "s", "set": {
                                                         "pad": "x" * 4000}}]}}))
                if status != 201:
                    failed = (status, body)
                    break
            self.assertIsNotNone(failed, "the file size limit was never reached")
            self.assertEqual(failed[0], 500, failed[1])
            self.assertIn("storage", failed[1])
            self.assertIsNone(d.proc.poll(), d.tail())
            status, _, _ = d.call("GET", "/healthz")
            self.assertEqual(status, 200)

    def test_a_database_file_deleted_under_the_daemon_is_saved_and_stops_it(self):
        # It went on answering 200 for writes into a file nobody would open again, and a restart
        # came up on an empty file: its runs and workflows gone without a word.
        with Daemon() as d:
            d.start()
            status, _, body = d.call("POST", "/api/v1/namespaces/default/workflows", json.dumps(
                {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                 "metadata": {"name": "kept"},
                 "spec": {"do": [{"name": "s", "set": {"a": 1}}]}}))
            self.assertEqual(status, 201, body)
            for suffix in ("", "-wal", "-shm"):
                path = os.path.join(d.data_dir, "knflow.db" + suffix)
                if os.path.exists(path):
                    os.remove(path)
            d.proc.wait(30)
            self.assertEqual(d.proc.returncode, 3, d.tail())
            self.assertIn("The database file is no longer the one the daemon writes; stopping",
                          d.output())
            self.assertIn("knflow.db was deleted", d.output())
            [saved] = [f for f in os.listdir(d.data_dir) if f.startswith("knflow.db.saved-")]
            with sqlite3.connect(os.path.join(d.data_dir, saved)) as db:
                names = [r[0] for r in db.execute("SELECT name FROM workflows")]
            self.assertEqual(names, ["kept"])

    def test_restart_keeps_workflows_and_the_token(self):
        with Daemon() as d:
            d.start()
            status, _, body = d.call("POST", "/api/v1/namespaces/default/workflows", workflow("kept"))
            self.assertEqual(status, 201, body)
            token = d.token
            self.assertEqual(d.stop(), 0, d.tail())
            d.start()
            self.assertEqual(d.token, token)
            self.assertNotIn("Created an API token", d.output().split("Stopped knflow")[-1])
            status, obj = d.json("GET", "/api/v1/namespaces/default/workflows/kept")
            self.assertEqual(status, 200)
            self.assertEqual(obj["metadata"]["name"], "kept")
            self.assertEqual(d.stop(signal.SIGINT), 0)

    def test_non_loopback_without_token_file_is_refused(self):
        with tempfile.TemporaryDirectory() as tmp:
            r = subprocess.run([BIN, "serve", "--listen", f"0.0.0.0:{free_port()}", "--data-dir", tmp],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2)
            self.assertIn("refusing to listen on 0.0.0.0", r.stderr)
            self.assertIn("--token-file", r.stderr)

    def test_token_file_env_and_config(self):
        with tempfile.TemporaryDirectory() as tmp:
            tokens = os.path.join(tmp, "tokens")
            with open(tokens, "w") as f:
                f.write("# operators\nfirst-token\n\n  second-token  \n")
            config = os.path.join(tmp, "knflow.yaml")
            port = free_port()
            files = []
            for name in ("from-list-a", "from-list-b"):
                files.append(os.path.join(tmp, name + ".json"))
                with open(files[-1], "w") as f:
                    f.write(workflow(name))
            with open(config, "w") as f:
                # `apply` as a list applies every file in it.
                f.write(f"listen: 127.0.0.1:{port}\nanonymous-health: true\n"
                        f"apply: [{files[0]}, {files[1]}]\n")
            data = os.path.join(tmp, "data")
            # An empty variable is unset: an empty KNFLOW_ANONYMOUS_METRICS turned the switch on.
            proc = subprocess.Popen([BIN, "serve", "--config", config, "--data-dir", data],
                                    env=dict(os.environ, KNFLOW_TOKEN_FILE=tokens,
                                             KNFLOW_ANONYMOUS_METRICS=""),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                import urllib.request
                deadline = time.monotonic() + 30
                while True:
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                            self.assertEqual(r.status, 200)  # anonymous health from the config file
                            break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
                for token, path, expected in (
                        ("second-token", "/api/v1/workflows", 200),
                        ("first-token", "/api/v1/workflows", 200), ("nope", "/api/v1/workflows", 401),
                        ("nope", "/metrics", 401),
                        ("first-token", "/api/v1/namespaces/default/workflows/from-list-a", 200),
                        ("first-token", "/api/v1/namespaces/default/workflows/from-list-b", 200)):
                    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                                 headers={"Authorization": "Bearer " + token})
                    try:
                        with urllib.request.urlopen(req, timeout=5) as r:
                            status = r.status
                    except urllib.error.HTTPError as e:
                        status = e.code
                    self.assertEqual(status, expected, (token, path))
                self.assertFalse(os.path.exists(os.path.join(data, "token")))
            finally:
                proc.send_signal(signal.SIGTERM)
                self.assertEqual(proc.wait(30), 0)

    def test_unknown_config_key_is_a_clear_error(self):
        with tempfile.TemporaryDirectory() as tmp:
            config = os.path.join(tmp, "c.yaml")
            with open(config, "w") as f:
                f.write("listne: 127.0.0.1:1\n")
            r = subprocess.run([BIN, "serve", "--config", config, "--data-dir", tmp],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2)
            self.assertIn('unknown option "listne"', r.stderr)

    def test_out_of_range_spin_is_a_clear_error(self):
        with tempfile.TemporaryDirectory() as tmp:
            r = subprocess.run([BIN, "serve", "--spin-us", "20000", "--data-dir", tmp],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2)
            self.assertIn("--spin-us must be at most 10000", r.stderr)

    def test_out_of_range_expression_cache_is_a_clear_error(self):
        with tempfile.TemporaryDirectory() as tmp:
            for size in ("0", "10001"):
                r = subprocess.run([BIN, "serve", "--expression-cache", size, "--data-dir", tmp],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(f"--expression-cache must be from 1 to 10000, got {size}", r.stderr)

    def test_endless_files_are_refused(self):
        """/dev/zero as a file to apply, a token file or a kubeconfig was read until memory ran
        out; each is now read to its bound (1 MiB, 16 MiB) and refused, exit 2. A file to apply
        must be a regular file: a FIFO held the start in open(), the data directory locked,
        nothing listening, SIGTERM ignored."""
        with tempfile.TemporaryDirectory() as tmp:
            fifo = os.path.join(tmp, "workflow.yaml")
            os.mkfifo(fifo)
            for args, message in (
                    (["--apply", "/dev/zero"],
                     "knflow serve: --apply /dev/zero is not a regular file (a pipe or a device "
                     "would hold the start until it is written to); give a workflow file\n"),
                    (["--apply", fifo],
                     f"knflow serve: --apply {fifo} is not a regular file"),
                    (["--token-file", fifo],  # read as empty, not waited on for good
                     f"knflow serve: token file {fifo} holds no token"),
                    (["--token-file", "/dev/zero"],
                     "knflow serve: cannot read token file /dev/zero: it holds more than "
                     "1048576 bytes\n"),
                    (["--kubeconfig", "/dev/zero"],
                     "knflow serve: cluster mode: cannot read kubeconfig /dev/zero: it holds more "
                     "than 16777216 bytes\n"),
                    (["--config", "/dev/zero"],
                     "knflow serve: config file /dev/zero: cannot read it: it holds more than "
                     "1048576 bytes\n"),
                    (["--config", "/nonexistent/knflow.yaml"],
                     "knflow serve: config file /nonexistent/knflow.yaml: cannot read it: No such "
                     "file or directory\n")):
                r = subprocess.run([BIN, "serve", *args, "--data-dir", tmp,
                                    "--listen", "127.0.0.1:0"],
                                   capture_output=True, text=True, timeout=60)
                self.assertEqual(r.returncode, 2, (args, r.stderr))
                self.assertIn(message, r.stderr)

    def test_out_of_range_threads_workers_and_listen_addresses_are_clear_errors(self):
        """`--threads 100000` died of an uncaught error when the system refused a thread, so did
        `--expression-workers 99999999999`; a negative count (`-1` reads as 4294967295 or
        2^64-1) is refused for every unsigned option; `--listen [::1` named only the mangled
        host."""
        with tempfile.TemporaryDirectory() as tmp:
            for command in ("serve", "controller"):
                for threads in ("0", "257", "100000"):
                    r = subprocess.run([BIN, command, "--threads", threads, "--data-dir", tmp]
                                       if command == "serve" else
                                       [BIN, command, "--threads", threads],
                                       capture_output=True, text=True, timeout=30)
                    self.assertEqual(r.returncode, 2, r.stderr)
                    self.assertIn(f"knflow {command}: --threads must be from 1 to 256, got "
                                  f"{threads}\n", r.stderr)
            # The controller converted nan and inf seconds to durations unchecked (undefined
            # behaviour), and took any --qps.
            for args, message in ((["--resync", "inf"], "--resync must be a number of seconds "
                                   "from 0 to 31536000, got inf"),
                                  (["--status-write-delay", "-1"], "--status-write-delay must be "
                                   "a number of seconds from 0 to 31536000, got -1"),
                                  (["--lease-duration", "nan"], "--lease-duration must be a "
                                   "number of seconds from 0 to 31536000, got nan"),
                                  (["--qps", "nan"], "--qps must be a number from 0, got nan")):
                r = subprocess.run([BIN, "controller", *args, "--kubeconfig", "/nonexistent"],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(f"knflow controller: {message}\n", r.stderr)
            for option in ("--max-connections", "--max-active-runs", "--max-body-bytes"):
                r = subprocess.run([BIN, "serve", option, "0", "--data-dir", tmp],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(f"knflow serve: {option} must be at least 1\n", r.stderr)
            for workers in ("0", "65", "99999999999"):
                r = subprocess.run([BIN, "serve", "--expression-workers", workers, "--data-dir", tmp],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn("knflow serve: --expression-workers must be from 1 to 64, got ",
                              r.stderr)
            # Boost reads a negative number for an unsigned option as one near 2^64:
            # `--max-connections -1` or `--retention-runs -1` started with no limit at all.
            for args in (["serve", "--max-connections", "-1"], ["serve", "--retention-runs=-1"],
                         ["serve", "--max-active-runs", " -2"], ["serve", "--threads", "-1"],
                         ["serve", "--expression-workers", "-1"], ["controller", "--workers", "-1"]):
                r = subprocess.run([BIN, *args] + (["--data-dir", tmp] if args[0] == "serve" else []),
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 2, (args, r.stderr))
                self.assertRegex(r.stderr, rf"^knflow {args[0]}: the argument \('\s*-\d'\) for "
                                 rf"option '--[a-z-]+' is invalid: it cannot be negative\n", args)
            r = subprocess.run([BIN, "serve", "--data-dir", tmp], capture_output=True, text=True,
                               timeout=30, env={**os.environ, "KNFLOW_MAX_BODY_BYTES": "-1"})
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("for option '--max-body-bytes' is invalid: it cannot be negative", r.stderr)
            # A mistyped --functions-dir showed only as every local function failing to start.
            for directory, reason in (("/nonexistent/functions", "No such file or directory"),
                                      ("/etc/passwd", "not a directory"),
                                      ("", "No such file or directory")):
                r = subprocess.run([BIN, "serve", "--functions-dir", directory, "--data-dir", tmp],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(f'knflow serve: --functions-dir "{directory}": {reason}\n', r.stderr)
            r = subprocess.run([BIN, "serve", "--listen", "[::1", "--data-dir", tmp],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn('--listen host must be an IP address or localhost, got "[:" in "[::1" '
                          '(an IPv6 address goes in brackets: [::1]:8080)', r.stderr)

    def test_durations_that_are_not_numbers_of_seconds_are_clear_errors(self):
        with tempfile.TemporaryDirectory() as tmp:
            def refused(args, message):
                r = subprocess.run([BIN, "serve", *args, "--data-dir", tmp],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 2, (args, r.stderr))
                self.assertIn(message, r.stderr)

            for option, value in (("--invoke-timeout", "inf"), ("--shutdown-timeout", "nan"),
                                  ("--request-timeout", "-1"), ("--retention-hours", "inf"),
                                  ("--kube-qps", "nan")):
                refused([option, value], f"knflow serve: {option} must be a number")
            # Zero would refuse every expression, answer every request 408, close every
            # connection at once, or prune in a loop.
            # The message names the range these take (it said "from 0" for -1, then refused 0).
            for option in ("--request-timeout", "--idle-timeout", "--retention-interval"):
                for value in ("0", "-1"):
                    refused([option, value], f"knflow serve: {option} must be a number of seconds "
                            f"from 0.001 to 31536000, got {value}")
            # An expression's time includes compiling it: under 0.1 s every one was refused.
            for value in ("0", "0.01"):
                refused(["--expression-timeout", value], "knflow serve: --expression-timeout must "
                        f"be a number of seconds from 0.1 to 31536000, got {value} (compiling "
                        "takes 10 to 20 ms of it)")
            # No threshold at all above a million pages (4 GiB of WAL); it took any number.
            refused(["--wal-checkpoint-pages", "99999999999"],
                    "knflow serve: --wal-checkpoint-pages must be from 0 to 1000000, got "
                    "99999999999")
            refused(["--invoke-timeout", "400"],
                    "--invoke-timeout (400) must not exceed --max-invoke-timeout (300)")
            refused(["--max-run-data-bytes", "0"],
                    "knflow serve: --max-run-data-bytes must be a positive number of bytes")
            # Any one request's data must fit in the total.
            refused(["--max-total-run-data-bytes", "8388607"],
                    "--max-total-run-data-bytes must be at least 8 times --max-body-bytes "
                    "(1048576)")

    def test_help_documents_every_option(self):
        r = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0)
        for option in ("--listen", "--data-dir", "--token-file", "--config", "--anonymous-health",
                       "--anonymous-metrics", "--max-body-bytes", "--max-header-bytes",
                       "--max-connections", "--request-timeout", "--idle-timeout",
                       "--shutdown-timeout", "--threads", "--spin-us", "--log-level", "KNFLOW_"):
            self.assertIn(option, r.stdout)

    def test_sigterm_finishes_an_in_flight_request_then_exits_0(self):
        with Daemon() as d:
            d.start()
            body = workflow("late").encode()
            s = socket.create_connection(("127.0.0.1", d.port))
            head = (f"POST /api/v1/namespaces/default/workflows HTTP/1.1\r\nHost: x\r\n"
                    f"Authorization: Bearer {d.token}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            # A first request on the connection proves the server accepted it.
            s.sendall(f"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {d.token}\r\n\r\n"
                      .encode())
            self.assertTrue(s.recv(65536).startswith(b"HTTP/1.1 200"))
            s.sendall(head + body[:10])  # the request is in flight
            time.sleep(0.2)  # let the server read the partial request before the signal
            d.proc.send_signal(signal.SIGTERM)
            # Draining: new connections are refused while the in-flight request waits.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", d.port), timeout=1).close()
                    time.sleep(0.02)
                except OSError:
                    break
            self.assertIsNone(d.proc.poll(), "the daemon must wait for the in-flight request")
            s.sendall(body[10:])
            reply = s.recv(65536).decode()
            self.assertTrue(reply.startswith("HTTP/1.1 201"), reply)
            self.assertIn("Connection: close", reply)
            s.close()
            self.assertEqual(d.proc.wait(30), 0)
            self.assertIn("Stopped knflow", d.output())
            # The write that finished during the drain was stored.
            d.start()
            status, _ = d.json("GET", "/api/v1/namespaces/default/workflows/late")
            self.assertEqual(status, 200)
            self.assertEqual(d.stop(), 0, d.tail())

    def test_bodies_in_codings_the_server_cannot_undo_are_refused(self):
        """`Transfer-Encoding: gzip, chunked` was framed by its chunks and the gzip bytes handed
        on as the body; a gzip `Content-Encoding` body reached the handlers compressed. Now 501
        and 415 (with Accept-Encoding: identity), as RFC 9112 and 9110 say; identity passes."""
        def answer(head, body=b""):
            return raw_request(d.port, head, body)

        with Daemon() as d:
            d.start()
            auth = f"Authorization: Bearer {d.token}\r\nContent-Type: application/json\r\n"
            path = "/api/v1/namespaces/default/workflows"
            body = workflow("coded").encode()
            status, reply = answer(f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}"
                                   "Transfer-Encoding: gzip, chunked\r\n\r\n",
                                   f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
            self.assertEqual(status, 501, reply)
            self.assertIn("Transfer-Encoding gzip is not supported", reply)
            status, reply = answer(f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}"
                                   f"Content-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n",
                                   body)
            self.assertEqual(status, 415, reply)
            self.assertIn("Accept-Encoding: identity", reply)
            self.assertIn("Content-Encoding gzip is not supported: send the body uncompressed.",
                          reply)
            status, _ = d.json("GET", path + "/coded")
            self.assertEqual(status, 404)  # neither was stored
            status, reply = answer(f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}"
                                   "Content-Encoding: identity\r\nConnection: close\r\n"
                                   f"Content-Length: {len(body)}\r\n\r\n", body)
            self.assertEqual(status, 201, reply)
            self.assertEqual(d.stop(), 0, d.tail())

    def test_trailer_fields_are_not_headers(self):
        """Beast's parser adds a chunked body's trailer fields to the header list: a broker post
        whose `ce-*` attributes came only as trailers started workflows, and an Authorization
        trailer authenticated. RFC 9110 §6.5.1: a trailer is not combined into the header."""
        with Daemon() as d:
            d.start()
            path = "/api/v1/namespaces/default/broker"
            chunked = b"2\r\n{}\r\n0\r\n"
            attributes = (b"ce-specversion: 1.0\r\nce-id: t-1\r\nce-source: /t\r\n"
                          b"ce-type: from.trailer\r\n")
            head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    "Transfer-Encoding: chunked\r\n")
            status, reply = raw_request(d.port, head + f"Authorization: Bearer {d.token}\r\n\r\n",
                                        chunked + attributes + b"\r\n")
            self.assertEqual(status, 400, reply)
            self.assertIn("not-a-cloudevent", reply)
            status, reply = raw_request(
                d.port, head + "ce-specversion: 1.0\r\nce-id: t-2\r\nce-source: /t\r\n"
                "ce-type: t\r\n\r\n",
                chunked + f"Authorization: Bearer {d.token}\r\n\r\n".encode())
            self.assertEqual(status, 401, reply)
            self.assertEqual(d.stop(), 0, d.tail())

    def test_requests_whose_host_or_framing_cannot_be_trusted_are_refused_and_closed(self):
        """RFC 9112 §3.2, §6.1 and §6.3, as a review found them broken: no Host, two Hosts or a
        bad one were served; `chunked, chunked` was framed as bodiless and its chunks read as the
        next request; an empty Transfer-Encoding beside Content-Length, and a Transfer-Encoding in
        HTTP/1.0, kept the connection for a smuggled request; `chunked, gzip` was 501."""
        def exchange(data, wait=5):
            """Everything answered on one connection until the server closes it."""
            with socket.create_connection(("127.0.0.1", d.port), timeout=wait) as s:
                s.sendall(data)
                out = b""
                try:
                    while chunk := s.recv(65536):
                        out += chunk
                except (socket.timeout, ConnectionResetError):
                    pass
            return out.decode(errors="replace")

        with Daemon() as d:
            d.start()
            auth = f"Authorization: Bearer {d.token}\r\n"
            smuggled = f"GET /smuggled HTTP/1.1\r\nHost: x\r\n{auth}\r\n"
            for name, head, body in (
                    ("no Host", "GET /healthz HTTP/1.1\r\n", ""),
                    ("two Hosts", "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n", ""),
                    ("a bad Host", "GET /healthz HTTP/1.1\r\nHost: a b/c\r\n", ""),
                    # one part read the first, another the last (a plain invoke took text, the
                    # broker JSON)
                    ("two Content-Types", "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     "text/plain\r\nContent-Type: application/json\r\nContent-Length: 2\r\n",
                     "{}"),
                    # only one could be checked, and which one would depend on their order
                    ("two Authorizations", "GET /healthz HTTP/1.1\r\nHost: x\r\n"
                     "Authorization: Bearer wrong\r\n", ""),
                    ("chunked twice", "POST /healthz HTTP/1.1\r\nHost: x\r\n"
                     "Transfer-Encoding: chunked, chunked\r\n", "2\r\n{}\r\n0\r\n\r\n"),
                    ("chunked not last", "POST /healthz HTTP/1.1\r\nHost: x\r\n"
                     "Transfer-Encoding: chunked, gzip\r\n", "2\r\n{}\r\n0\r\n\r\n"),
                    ("an empty Transfer-Encoding", "POST /healthz HTTP/1.1\r\nHost: x\r\n"
                     "Transfer-Encoding:\r\nContent-Length: 2\r\n", "{}"),
                    ("HTTP/1.0 chunked", "POST /healthz HTTP/1.0\r\nConnection: keep-alive\r\n"
                     "Transfer-Encoding: chunked\r\n", "2\r\n{}\r\n0\r\n\r\n")):
                with self.subTest(name):
                    reply = exchange((head + auth + "\r\n" + body + smuggled).encode())
                    self.assertTrue(reply.startswith("HTTP/1.1 400 "), reply)
                    self.assertIn("Connection: close", reply)
                    self.assertEqual(reply.count("\r\nServer: knflow/"), 1, reply)  # nothing smuggled
            # An empty Host is a Host (a target without an authority), and HTTP/1.0 needs none.
            self.assertIn("HTTP/1.1 200 ", exchange(f"GET /healthz HTTP/1.1\r\nHost:\r\n{auth}"
                                                    "Connection: close\r\n\r\n".encode()))
            self.assertIn("HTTP/1.1 200 ", exchange(f"GET /healthz HTTP/1.0\r\n{auth}\r\n".encode()))
            # The absolute form is a path and query like any (RFC 9112 §3.2.2: a server MUST
            # accept it); a scheme other than http(s) is not a target.
            reply = exchange(f"GET http://127.0.0.1:{d.port}/api/v1/namespaces/default/workflows"
                             f"?limit=1 HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
                             .encode())
            self.assertTrue(reply.startswith("HTTP/1.1 200 "), reply)
            self.assertIn('"items"', reply)
            reply = exchange(f"GET http://h HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
                             .encode())
            self.assertTrue(reply.startswith("HTTP/1.1 200 "), reply)  # "/": the dashboard
            reply = exchange(f"GET ftp://h/healthz HTTP/1.1\r\nHost: x\r\n{auth}"
                             "Connection: close\r\n\r\n".encode())
            self.assertTrue(reply.startswith("HTTP/1.1 400 "), reply)
            self.assertEqual(d.stop(), 0, d.tail())

    def test_http10_clients_get_no_interim_answer_and_head_errors_no_body(self):
        """RFC 9110 §15.2: no 1xx answer to an HTTP/1.0 client (its Expect is ignored); §9.3.2:
        no content in an answer to HEAD, errors included (a 413 or 431 sent its problem)."""
        with Daemon("--max-body-bytes", "1000", "--max-header-bytes", "2000") as d:
            d.start()
            auth = f"Authorization: Bearer {d.token}\r\n"
            body = workflow("expected").encode()
            with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
                s.sendall(f"POST /api/v1/namespaces/default/workflows HTTP/1.0\r\n{auth}"
                          "Content-Type: application/json\r\nExpect: 100-continue\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode())
                s.settimeout(0.5)
                with self.assertRaises(socket.timeout):  # nothing before the body
                    s.recv(65536)
                s.settimeout(10)
                s.sendall(body)
                reply = read_until_closed(s)
            self.assertTrue(reply.startswith(b"HTTP/1.1 201 "), reply)
            for head in (f"HEAD /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n",
                         f"HEAD /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {'x' * 3000}\r\n",
                         "HEAD /healthz HTTP/1.1\r\n"):
                with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
                    s.sendall((head + auth + "\r\n").encode())
                    reply = read_until_closed(s)
                status_line, _, rest = reply.partition(b"\r\n")
                self.assertRegex(status_line.decode(), r"^HTTP/1.1 4\d\d ")
                self.assertTrue(rest.endswith(b"\r\n\r\n"), reply)  # the head, and nothing after
            self.assertEqual(d.stop(), 0, d.tail())

    def test_a_workflow_document_stays_at_most_one_mebibyte(self):
        """With --max-body-bytes raised (for larger invoke data), a 2 MB workflow was stored that
        `knflow validate` and `render` (1 MiB) could not read."""
        with Daemon("--max-body-bytes", "4000000") as d:
            d.start()
            doc = json.loads(workflow("big"))
            doc["spec"]["do"] += [{"name": f"s{i}", "set": {"v": "x" * 200_000}} for i in range(10)]
            status, _, body = d.call("POST", "/api/v1/namespaces/default/workflows", json.dumps(doc))
            self.assertEqual(status, 400, body)
            self.assertIn("more than the limit of 1048576 bytes", body)
            status, _, body = d.call("GET", "/api/v1/namespaces/default/workflows/big")
            self.assertEqual(status, 404, body)
            # Invoke data may still be as large as the body limit lets it be.
            status, _, body = d.call("POST", "/api/v1/namespaces/default/workflows", workflow("small"))
            self.assertEqual(status, 201, body)
            data = json.dumps({"blob": "y" * 2_000_000})
            status, _, body = d.call("POST", "/api/v1/namespaces/default/workflows/small:invoke"
                                     "?mode=async", data)
            self.assertEqual(status, 202, body)
            self.assertEqual(d.stop(), 0, d.tail())

    def test_memory_a_run_held_goes_back_to_the_system(self):
        """A `for` of 1,000 iterations at once over a 125 KB input took the daemon to 1.5 GB while
        it ran (values in memory take several times their text), and it kept the 1.5 GB once the
        run had ended: glibc keeps freed blocks in its arenas. The daemon gives it back now."""
        linked = subprocess.run(["ldd", BIN], capture_output=True, text=True).stdout
        if "libasan" in linked:
            self.skipTest("AddressSanitizer's allocator keeps freed memory in its quarantine")
        with Daemon() as d:
            d.start()
            doc = {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                   "metadata": {"name": "wide"},
                   "spec": {"do": [{"name": "loop",
                                    "for": {"each": "item", "in": "${ .a }", "concurrency": 1000},
                                    "do": [{"name": "w", "wait": "PT0S"}]}]}}
            status, _, body = d.call("POST", "/api/v1/namespaces/default/workflows", json.dumps(doc))
            self.assertEqual(status, 201, body)

            def rss_mib():
                with open(f"/proc/{d.proc.pid}/status") as f:
                    return next(int(line.split()[1]) // 1024 for line in f
                                if line.startswith("VmRSS"))

            data = json.dumps({"a": [{"k": i, "p": "x" * 20} for i in range(3000)]})
            status, _, body = d.call("POST", "/api/v1/namespaces/default/workflows/wide:invoke",
                                     data, timeout=120)
            # Each iteration's copy of the input counts: the run passes its data limit.
            self.assertEqual(status, 507, body)
            deadline = time.monotonic() + 20
            while rss_mib() > 300 and time.monotonic() < deadline:
                time.sleep(0.2)
            self.assertLess(rss_mib(), 300)
            self.assertEqual(d.stop(), 0, d.tail())

    def test_trailer_and_chunk_extensions_are_bounded(self):
        """A chunked body's trailer section and a chunk's extensions were read whole, without any
        bound: 200 MiB of trailer fields took the daemon to 211 MiB. Now 431 past the head limit
        plus 64 KiB, the connection closed, and the daemon serves on."""
        with Daemon("--max-header-bytes", "2000") as d:
            d.start()
            head = (f"POST /api/v1/namespaces/default/broker HTTP/1.1\r\nHost: x\r\n"
                    f"Authorization: Bearer {d.token}\r\nContent-Type: application/json\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n")
            for name, body in (("trailer", b"2\r\n{}\r\n0\r\n" + b"X-Pad: " + b"a" * 200_000),
                               ("chunk extension", b"2;x=" + b"a" * 200_000)):
                with self.subTest(name), socket.create_connection(("127.0.0.1", d.port),
                                                                  timeout=10) as s:
                    s.sendall(head.encode())
                    try:
                        s.sendall(body)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    reply = read_until_closed(s)
                    self.assertTrue(reply.startswith(b"HTTP/1.1 431 "), reply[:200])
                    self.assertIn(b"trailer section", reply)
            status, _, _ = d.call("GET", "/healthz")
            self.assertEqual(status, 200)
            self.assertEqual(d.stop(), 0, d.tail())

    def test_version(self):
        r = subprocess.run([BIN, "version"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^knflow \d+\.\d+\.\d+ \(commit \w+\)")
        # `version --help` printed the version, and `version extra` exited 0.
        r = subprocess.run([BIN, "version", "--help"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0)
        self.assertTrue(r.stdout.startswith("Usage: knflow version\n"), r.stdout)
        r = subprocess.run([BIN, "version", "extra"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn('knflow version: takes no arguments, got "extra"', r.stderr)

    def test_usage_errors_print_the_usage_on_stderr(self):
        """A usage error's text goes where errors go (it went to standard output); help asked
        for goes to standard output."""
        for argv in ([BIN, "foo"], [BIN]):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2)
            self.assertEqual(r.stdout, "")
            self.assertIn("Usage: knflow <command> [options]", r.stderr)
        r = subprocess.run([BIN, "help"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0)
        self.assertIn("Usage: knflow <command> [options]", r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
