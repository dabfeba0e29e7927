"""Host-name lookups of functions' URLs, against a real DNS server that does not answer one name.

The daemon runs in a network and mount namespace of its own (`unshare`, as an unprivileged user
could): only loopback, and a resolv.conf naming a DNS server of this test's on 127.0.0.1:53,
which answers `fast.test` with 127.0.0.1 at once, `held.test` likewise but only a second after
each question, and never answers `slow.test`, as a DNS server that is down. glibc waits for it
the resolv.conf's `timeout:30`.

A run calling `slow.test` is under way, its lookup waiting; then a run calling `fast.test`
completes (its step's timeout, 10 s, is far shorter than the 30 s the other lookup waits, so it
cannot have waited behind it), and a SIGTERM stops the daemon while the lookup still waits.
A fork of eight branches calling `held.test` asks the DNS server once, not once per connection.
Skipped where user namespaces are not allowed."""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from daemon import Daemon, LocalFunction, wait_until  # noqa: E402

INSIDE = "KNFLOW_DNS_TEST_INSIDE"
DEADLINE = 60  # seconds: generous bounds for polling, never an assertion on speed


def namespaces_allowed():
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--net", "--mount", "true"],
                           capture_output=True)
    return probe.returncode == 0


def loopback_up():
    """`ip link set lo up` without iproute2: SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP."""
    import fcntl
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0)))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 1))


class DnsServer:
    """A DNS server on 127.0.0.1:53 (UDP) for names under .test: `fast.test` is 127.0.0.1 (A; no
    AAAA), `held.test` too but answered a second after it is asked (so that lookups overlap),
    `slow.test` is never answered, anything else does not exist. Records every question."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 53))
        self.lock = threading.Lock()
        self.questions = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def asked(self, name):
        with self.lock:
            return [q for q in self.questions if q[0] == name]

    def serve(self):
        while True:
            try:
                packet, peer = self.sock.recvfrom(512)
            except OSError:
                return
            if not packet:
                return  # shut down
            qid = struct.unpack("!H", packet[:2])[0]
            labels, i = [], 12
            while packet[i]:
                labels.append(packet[i + 1:i + 1 + packet[i]].decode())
                i += 1 + packet[i]
            question = packet[12:i + 5]
            qtype = struct.unpack("!H", packet[i + 1:i + 3])[0]
            name = ".".join(labels).lower()
            with self.lock:
                self.questions.append((name, qtype))
            if name == "slow.test":
                continue
            answers = b""
            rcode = 0
            if name in ("fast.test", "held.test"):
                if qtype == 1:
                    answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 0, 4) + socket.inet_aton("127.0.0.1")
            else:
                rcode = 3  # NXDOMAIN
            header = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, 1 if answers else 0, 0, 0)
            answer = header + question + answers
            if name == "held.test":
                threading.Timer(1.0, self.send, (answer, peer)).start()
            else:
                self.send(answer, peer)

    def send(self, packet, peer):
        try:
            self.sock.sendto(packet, peer)
        except OSError:
            pass  # closed at the end of the test

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the recvfrom
        except OSError:
            pass
        self.thread.join()  # then the port is free for the next test's server
        self.sock.close()


def workflow(name, host, port):
    return json.dumps({
        "apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": name},
        "spec": {"functions": {"fn": {"url": f"http://{host}:{port}/"}},
                 "do": [{"name": "call", "call": "fn", "timeout": "PT10S",
                         "retry": {"limit": 0}}]},
    })


def fork_workflow(name, host, port, branches):
    return json.dumps({
        "apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": name},
        "spec": {"functions": {"fn": {"url": f"http://{host}:{port}/"}},
                 "do": [{"name": "fan-out", "fork": {"join": "all", "branches": [
                     {"name": f"b{i}", "call": "fn", "timeout": "PT20S", "retry": {"limit": 0}}
                     for i in range(branches)]}}]},
    })


class DnsLookups(unittest.TestCase):
    def setUp(self):
        self.dns = DnsServer()
        self.addCleanup(self.dns.close)
        fn = LocalFunction(lambda path, headers, body: (200, '{"answered":true}'))
        self.addCleanup(fn.close)
        self.port = fn.url.rsplit(":", 1)[1]  # the function answers on every name of 127.0.0.1

    def test_a_lookup_that_waits_holds_neither_other_calls_nor_a_stop(self):
        dns, port = self.dns, self.port
        with Daemon() as daemon:
            daemon.start()
            for name, host in (("slow", "slow.test"), ("fast", "fast.test")):
                status, _, text = daemon.call("POST", "/api/v1/namespaces/default/workflows",
                                              workflow(name, host, port))
                self.assertEqual(status, 201, text)

            status, body = daemon.json(
                "POST", "/api/v1/namespaces/default/workflows/slow:invoke?mode=async", "{}")
            self.assertEqual(status, 202, body)
            slow_run = body["runId"]
            self.assertTrue(wait_until(lambda: dns.asked("slow.test"), DEADLINE),
                            "the lookup of slow.test never reached the DNS server")

            status, _, text = daemon.call(
                "POST", "/api/v1/namespaces/default/workflows/fast:invoke", "{}")
            self.assertEqual(status, 200, text)
            self.assertEqual(json.loads(text), {"answered": True})
            self.assertTrue(dns.asked("fast.test"))

            status, run = daemon.json("GET", f"/api/v1/namespaces/default/runs/{slow_run}")
            self.assertEqual(status, 200, run)
            self.assertEqual(run["phase"], "running", run)

            # glibc waits for slow.test until 30 s after asking it; the daemon does not.
            daemon.proc.send_signal(signal.SIGTERM)
            try:
                code = daemon.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.fail("the daemon did not exit within 20 s of SIGTERM while a lookup waited:\n"
                          + daemon.output())
            self.assertEqual(code, 0, daemon.output())


    def test_connections_opening_together_share_one_lookup(self):
        dns, port = self.dns, self.port
        with Daemon() as daemon:
            daemon.start()
            status, _, text = daemon.call("POST", "/api/v1/namespaces/default/workflows",
                                          fork_workflow("fan", "held.test", port, 8))
            self.assertEqual(status, 201, text)
            status, _, text = daemon.call(
                "POST", "/api/v1/namespaces/default/workflows/fan:invoke", "{}")
            self.assertEqual(status, 200, text)
            self.assertEqual(json.loads(text), [{"answered": True}] * 8)
            # glibc asks for A and AAAA once per getaddrinfo: one lookup, not eight.
            a_questions = [q for q in dns.asked("held.test") if q[1] == 1]
            self.assertEqual(len(a_questions), 1, dns.asked("held.test"))


def main():
    if os.environ.get(INSIDE) == "1":
        loopback_up()
        tmp = tempfile.mkdtemp(prefix="knflow-dns-")
        conf = os.path.join(tmp, "resolv.conf")
        with open(conf, "w") as f:
            f.write("nameserver 127.0.0.1\noptions timeout:30 attempts:1\n")
        subprocess.run(["mount", "--bind", conf, "/etc/resolv.conf"], check=True)
        unittest.main()
        return
    if not namespaces_allowed():
        print("skipped: user and network namespaces are not allowed here (unshare --user --net)")
        return
    env = dict(os.environ, **{INSIDE: "1"})
    argv = ["unshare", "--user", "--map-root-user", "--net", "--mount",
            sys.executable, os.path.abspath(__file__), *sys.argv[1:]]
    sys.exit(subprocess.run(argv, env=env).returncode)


if __name__ == "__main__":
    main()
