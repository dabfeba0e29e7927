"""`knflow render`: the Knative objects of every cluster-capable example (the same bytes as the
render golden files), every reason on stderr for what cannot run in cluster mode, options."""

import glob
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from daemon import BIN, SOURCE_DIR  # noqa: E402

GOLDEN_DIR = os.path.join(SOURCE_DIR, "test", "render", "golden")
GOLDEN_UID = "00000000-0000-4000-8000-000000000001"  # as test/render/render_test.cpp renders them


def render(*args, stdin=None):
    return subprocess.run([BIN, "render", *args], capture_output=True, text=True, timeout=60,
                          input=stdin, cwd=SOURCE_DIR)


def example(name):
    return os.path.join(SOURCE_DIR, "examples", name)


class RenderCliTest(unittest.TestCase):
    def test_examples_render_as_the_golden_files(self):
        goldens = sorted(glob.glob(os.path.join(GOLDEN_DIR, "example-*.yaml")))
        self.assertGreaterEqual(len(goldens), 2)
        for golden in goldens:
            name = os.path.basename(golden)[len("example-"):]
            with self.subTest(example=name):
                r = render("-f", example(name), "--uid", GOLDEN_UID)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stderr, "")
                with open(golden) as f:
                    self.assertEqual(r.stdout, f.read())

    def test_every_example_renders_or_says_why_not(self):
        for path in sorted(glob.glob(os.path.join(SOURCE_DIR, "examples", "*.yaml"))):
            name = os.path.basename(path)
            with self.subTest(example=name):
                r = render("-f", path)
                golden = os.path.join(GOLDEN_DIR, "example-" + name)
                if os.path.exists(golden):
                    self.assertEqual(r.returncode, 0, r.stderr)
                    self.assertTrue(r.stdout.startswith("---\napiVersion: "))
                    self.assertNotIn("ownerReferences", r.stdout)  # no uid in the file
                else:
                    self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                    self.assertEqual(r.stdout, "")
                    self.assertIn("cannot run in cluster mode", r.stderr)

    def test_refusals_list_every_reason_with_its_pointer(self):
        r = render("-f", example("order-pipeline.yaml"))
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, "")
        for line in ['/spec/do/1/switch: step "route": switch needs the knflow data plane',
                     "/spec/do/3/for: ", "/spec/do/4/fork/join: ", "/spec/do/4/then: ",
                     "/spec/timeout: ", "/spec/retry/backoff: ",
                     '/spec/functions/charge: function "charge" has only local']:
            self.assertIn("  " + line, r.stderr)
        r = render("-f", os.path.join(SOURCE_DIR, "examples", "broken", "broken.yaml"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("broken.yaml: 7 errors", r.stderr)
        self.assertIn("  /metadata/name: ", r.stderr)

    def test_a_service_name_must_start_with_a_letter(self):
        """Knative Serving refuses a Service whose name is not a DNS-1035 label (its revisions
        are named after it): `1st-pipeline-f` was rendered, and the cluster would refuse it."""
        doc = ('apiVersion: knflow.dev/v1alpha1\nkind: Workflow\nmetadata: {name: 1st-pipeline}\n'
               'spec:\n  functions: {f: {image: "reg.example.com/f:1", local: {command: [python3, f.py]}}}\n'
               '  do: [{name: s, call: f}]\n')
        r = subprocess.run([BIN, "render", "-f", "-"], capture_output=True, text=True, timeout=60,
                           input=doc)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn('/spec/functions/f: function "f" would be the Knative Service '
                      '"1st-pipeline-f", which Knative Serving refuses', r.stderr)

    def test_namespace_uid_and_channel(self):
        r = render("-f", example("hello.yaml"), "-n", "team-a", "--uid", "u-1",
                   "--channel-kind", "KafkaChannel",
                   "--channel-api-version", "messaging.knative.dev/v1beta1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("  namespace: team-a\n", r.stdout)
        self.assertIn("      uid: u-1\n      controller: true\n      blockOwnerDeletion: true\n",
                      r.stdout)
        self.assertIn("    apiVersion: messaging.knative.dev/v1beta1\n    kind: KafkaChannel\n",
                      r.stdout)
        # The file says namespace media: -n must agree, as with kubectl.
        r = render("-f", example("cluster-sequence.yaml"), "-n", "other")
        self.assertEqual(r.returncode, 2)
        self.assertIn('does not match --namespace "other"', r.stderr)
        self.assertEqual(render("-f", example("cluster-sequence.yaml"), "-n", "media").returncode, 0)
        r = render("-f", example("hello.yaml"), "-n", "Not_Valid")
        self.assertEqual(r.returncode, 2)
        self.assertIn("not a valid namespace", r.stderr)

    def test_stdin_usage_and_unreadable_files(self):
        with open(example("hello.yaml")) as f:
            text = f.read()
        r = render("-f", "-", stdin=text)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, render("-f", example("hello.yaml")).stdout)
        r = render("-f", "/nonexistent/workflow.yaml")
        self.assertEqual(r.returncode, 2)
        self.assertIn("cannot read", r.stderr)
        self.assertEqual(render().returncode, 2)
        r = render("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("Usage: knflow render", r.stdout)
        r = subprocess.run([BIN, "help"], capture_output=True, text=True, timeout=60)
        self.assertIn("  render ", r.stdout)
        r = render("-f", "-", stdin="kind: [")
        self.assertEqual(r.returncode, 1)
        self.assertIn("error", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
