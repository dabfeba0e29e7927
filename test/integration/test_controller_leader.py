"""The cluster controller's leader election and recovery against a real kube-apiserver
(test/kubeenv): two controllers → exactly one leader (the Lease's holderIdentity) and only it
writes; kill -9 of the leader → the other takes over within 20 s with the default timings; a
graceful stop releases the Lease; a leader frozen past its renew deadline makes no write after it
wakes up; the apiserver restarted mid-watch → the controller recovers and converges on changes
made after."""

from __future__ import annotations

import copy
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from test_controller import MEDIA, ClusterTestCase, load_yaml_docs, wait_for  # noqa: E402


def hello(name: str, url: str = "http://hello.example") -> dict:
    return {"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": name},
            "spec": {"functions": {"f": {"image": "registry.example.com/f:1"},
                                   "g": {"url": url}},
                     "do": [{"name": "a", "call": "f"}, {"name": "b", "call": "g"}]}}


class LeaderElectionTest(ClusterTestCase):
    controller_manager = False

    def lease(self, ns, name) -> dict:
        return self.get(f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}") or {}

    def holder(self, ns, name) -> str:
        return (self.lease(ns, name).get("spec") or {}).get("holderIdentity", "")

    def test_one_leader_kill_9_takeover_and_release(self):
        ns = self.namespace("leader")
        # Default timings: lease 15 s, renew deadline 10 s, retry 2 s.
        args = ("--lease-namespace", ns)
        a = self.start_controller(*args, namespace=ns, lease="le", identity="ctl-a")
        a.wait_leading()
        b = self.start_controller(*args, namespace=ns, lease="le", identity="ctl-b")
        wait_for("b synced", lambda: b.health()["synced"])
        self.assertEqual(self.holder(ns, "le"), "ctl-a")
        time.sleep(3)  # b campaigns at least once
        self.assertFalse(b.health()["leader"])
        self.assertEqual(b.metrics()["knflow_controller_leader"], 0)
        self.assertEqual(a.metrics()["knflow_controller_leader"], 1)
        self.assertIn("Saw a new leader", b.log())

        # Only the leader writes.
        self.apply(ns, hello("one"))
        wait_for("the objects", lambda: set(self.children(ns)) == {("Service", "one-f"),
                                                                    ("Sequence", "one")})
        self.wait_condition(ns, "one", "Unknown", "Pending")
        self.assertGreater(a.writes(), 0)
        self.assertEqual(b.writes(), 0)
        self.assertEqual(b.health()["reconciles"], 0)

        # kill -9 the leader: the other takes over once the lease expires by its own clock.
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        killed = time.monotonic()
        wait_for("b to lead", lambda: b.health()["leader"], timeout=30, interval=0.1)
        takeover = time.monotonic() - killed
        print(f"takeover after kill -9: {takeover:.1f} s", file=sys.stderr)
        self.assertLess(takeover, 20.0)
        self.assertEqual(self.holder(ns, "le"), "ctl-b")
        transitions = self.lease(ns, "le")["spec"]["leaseTransitions"]
        self.assertGreaterEqual(transitions, 1)

        # The new leader reconciles: a change made now converges.
        changed = hello("one", url="http://hello-2.example")
        changed["spec"]["functions"]["f"]["image"] = "registry.example.com/f:2"
        self.apply(ns, changed)
        wait_for("b to apply the change", lambda: self.child("Service", ns, "one-f")["spec"][
            "template"]["spec"]["containers"][0]["image"] == "registry.example.com/f:2")
        self.wait_condition(ns, "one", "Unknown", "Pending", generation=2)
        self.assertGreater(b.writes(), 0)

        # A graceful stop releases the Lease: a waiting candidate takes it at its next attempt.
        c = self.start_controller(*args, namespace=ns, lease="le", identity="ctl-c")
        wait_for("c synced", lambda: c.health()["synced"])
        time.sleep(2.5)
        self.assertFalse(c.health()["leader"])
        self.assertEqual(b.stop(), 0)
        self.assertIn("Released the lease", b.log())
        released = time.monotonic()
        wait_for("c to lead", lambda: c.health()["leader"], timeout=10, interval=0.1)
        handover = time.monotonic() - released
        print(f"takeover after a graceful stop: {handover:.1f} s", file=sys.stderr)
        self.assertLess(handover, 5.0)
        self.assertEqual(self.holder(ns, "le"), "ctl-c")
        self.assertGreater(self.lease(ns, "le")["spec"]["leaseTransitions"], transitions)

    def test_frozen_leader_makes_no_write_after_its_term(self):
        ns = self.namespace("frozen")
        args = ("--lease-namespace", ns, "--lease-duration", "4", "--renew-deadline", "3",
                "--retry-period", "1")
        a = self.start_controller(*args, namespace=ns, lease="fz", identity="ctl-a")
        a.wait_leading()
        b = self.start_controller(*args, namespace=ns, lease="fz", identity="ctl-b")
        wait_for("b synced", lambda: b.health()["synced"])
        self.apply(ns, hello("fz"))
        self.wait_condition(ns, "fz", "Unknown", "Pending")
        time.sleep(1)
        a_writes = a.writes()

        # Freeze the leader (it cannot renew), let b take over and make a change b applies.
        a.proc.send_signal(signal.SIGSTOP)
        try:
            wait_for("b to lead", lambda: b.health()["leader"], timeout=20, interval=0.1)
            self.apply(ns, hello("fz", url="http://moved.example"))
            self.wait_condition(ns, "fz", "Unknown", "Pending", generation=2)
        finally:
            a.proc.send_signal(signal.SIGCONT)
        # a wakes up with events queued and a term that ran out by its own clock: it stops
        # leading and writes nothing.
        wait_for("a to notice", lambda: not a.health()["leader"], timeout=10, interval=0.1)
        time.sleep(3)
        self.assertEqual(a.writes(), a_writes)
        self.assertIn("Stopped leading", a.log())
        self.assertEqual(self.holder(ns, "fz"), "ctl-b")
        self.assertTrue(b.health()["leader"])


class ApiserverRestartTest(ClusterTestCase):
    controller_manager = False

    def test_apiserver_restarted_mid_watch(self):
        ns = self.namespace("restart")
        c = self.start_controller("--lease-namespace", ns, namespace=ns, lease="rs")
        c.wait_leading()
        doc = load_yaml_docs(self.kube, MEDIA.read_text())[0]
        doc["metadata"]["namespace"] = ns
        self.apply(ns, doc)
        wait_for("7 objects", lambda: len(self.children(ns)) == 7)
        self.wait_condition(ns, "media-ingest", "Unknown", "Pending")

        self.kube.restart_apiserver()

        # Changes made after the restart converge: a new Workflow, an updated one, a status.
        self.apply(ns, hello("after"))
        changed = copy.deepcopy(doc)
        changed["spec"]["functions"]["indexer"]["image"] = "registry.example.com/indexer:3"
        self.apply(ns, changed)
        wait_for("the new Workflow's objects",
                 lambda: {("Service", "after-f"), ("Sequence", "after")} <= set(self.children(ns)),
                 timeout=90, interval=0.5)
        wait_for("the updated Service", lambda: self.child("Service", ns, "media-ingest-indexer")[
            "spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/indexer:3",
            timeout=60)
        self.wait_condition(ns, "media-ingest", "Unknown", "Pending", generation=2, timeout=60)
        self.make_ready("Sequence", ns, "after")
        self.make_ready("Service", ns, "after-f")
        self.wait_condition(ns, "after", "True", "Ready", timeout=60)
        self.assertTrue(c.health()["leader"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
