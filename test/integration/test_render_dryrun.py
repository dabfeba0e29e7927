"""The Workflow CRD and `knflow render` against a real kube-apiserver (test/kubeenv): the CRD is
established with its short name and printer columns; every example, docs workflow and render test
input is accepted as a Workflow; every `knflow render` output is accepted by the Knative CRDs
(server-side dry run); workflows that break a CEL rule or the schema are refused with the rule's
message."""

import json
import os
import re
import subprocess
import sys
import unittest
from pathlib import Path

SOURCE_DIR = Path(os.environ.get("KNFLOW_SOURCE_DIR", Path(__file__).resolve().parents[2]))
BIN = os.environ.get("KNFLOW_BIN", str(SOURCE_DIR / "build" / "dev" / "knflow"))
sys.path.insert(0, str(SOURCE_DIR / "test" / "kubeenv"))
from kubeenv import KubeEnv  # noqa: E402


def docs_workflows():
    """(origin, text) of every ```yaml block in docs/*.md that is a Workflow (the same rule as the
    C++ tests)."""
    out = []
    for page in sorted((SOURCE_DIR / "docs").glob("*.md")):
        block, start = None, 0
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if block is None and line.startswith("```yaml"):
                block, start = [], number
            elif block is not None and line.startswith("```"):
                text = "\n".join(block) + "\n"
                if text.startswith("kind: Workflow") or "\nkind: Workflow" in text:
                    out.append((f"docs/{page.name}:{start}", text))
                block = None
            elif block is not None:
                block.append(line)
    return out


def workflow_files():
    """(origin, text) of every example, docs workflow and render test input."""
    files = sorted((SOURCE_DIR / "examples").glob("*.yaml"))
    files += sorted((SOURCE_DIR / "test" / "render" / "inputs").glob("*.yaml"))
    return [(str(p.relative_to(SOURCE_DIR)), p.read_text()) for p in files] + docs_workflows()


def namespace_of(text):
    m = re.search(r"^metadata:\n(?:  .*\n)*?  namespace: ([a-z0-9-]+)\s*$", text, re.M)
    return m.group(1) if m else "default"


def knflow_render(*args, input=None):
    return subprocess.run([BIN, "render", *args], capture_output=True, text=True, timeout=60,
                          input=input, cwd=SOURCE_DIR)


# A valid cluster workflow, as a base for the refused variants below.
BASE = """apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata:
  name: {name}
spec:
  functions:
    f: {{url: 'http://f.example'}}
{functions}  do:
{steps}"""

# (name, functions, steps, what the apiserver's message must contain)
REFUSED = [
    ("two-constructs", "", "    - {name: a, call: f, wait: PT1S}\n", "exactly one construct"),
    ("two-defaults", "",
     "    - name: a\n      switch: [{then: continue}, {then: end}]\n", "at most one default"),
    ("no-max-iterations", "",
     "    - name: a\n      while: '${ true }'\n      do: [{name: b, call: f}]\n",
     "while needs maxIterations"),
    ("for-without-do", "", "    - name: a\n      for: {in: '${ . }'}\n",
     "for and while need a do list"),
    ("retry-without-call", "", "    - {name: a, wait: PT1S, retry: {limit: 1}}\n",
     "retry is only allowed on a step with call"),
    ("catch-without-try", "", "    - {name: a, call: f, catch: {as: e}}\n",
     "catch is only allowed on a step with try"),
    ("url-and-image", "    g: {url: 'http://g.example', image: img}\n",
     "    - {name: a, call: g}\n", "url is used as-is in both modes"),
    ("no-endpoint", "    g: {language: go}\n", "    - {name: a, call: g}\n",
     "a function needs url"),
    ("local-both", "    g: {local: {command: [x], url: 'http://127.0.0.1:1'}}\n",
     "    - {name: a, call: g}\n", "local needs exactly one of command"),
    ("reply-both", "",
     "    - {name: a, call: f}\n  reply: {uri: 'http://r', ref: {apiVersion: v1, kind: Service, "
     "name: r}}\n", "exactly one of uri or ref"),
    ("a" * 64, "", "    - {name: a, call: f}\n", "metadata.name must be a DNS-1123 label"),
    # Schema, not CEL: unknown fields (kubectl's strict field validation), enums, patterns.
    ("misspelt", "", "    - {name: a, cal: f}\n", ".spec.do[0].cal: field not declared in schema"),
    ("bad-join", "",
     "    - name: a\n      fork: {join: some, branches: [{name: b, call: f}]}\n",
     'Unsupported value: "some"'),
    ("bad-duration", "", "    - {name: a, wait: 5s}\n", "spec.do[0].wait"),
    ("bad-step-name", "", "    - {name: Step_A, call: f}\n", "spec.do[0].name"),
]


class RenderDryRunTest(unittest.TestCase):
    kube: KubeEnv

    @classmethod
    def setUpClass(cls):
        cls.kube = KubeEnv().start()
        namespaces = {namespace_of(text) for _, text in workflow_files()} - {"default"}
        for ns in sorted(namespaces):
            cls.kube.kubectl("create", "namespace", ns)

    @classmethod
    def tearDownClass(cls):
        cls.kube.stop()

    def apply(self, text, *, dry_run=True):
        args = ["apply", "--server-side", "--field-manager", "knflow-test", "-f", "-"]
        if dry_run:
            args.append("--dry-run=server")
        return self.kube.kubectl(*args, input=text, check=False)

    def test_crd_is_established_with_its_names_and_columns(self):
        crd = json.loads(self.kube.kubectl("get", "crd", "workflows.knflow.dev", "-o", "json").stdout)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        self.assertEqual(conditions.get("Established"), "True")
        self.assertEqual(conditions.get("NamesAccepted"), "True")
        resources = self.kube.kubectl("api-resources", "--api-group", "knflow.dev").stdout
        self.assertRegex(resources, r"workflows\s+kfw\s+knflow.dev/v1alpha1\s+true\s+Workflow")
        # `kubectl get knflow` lists workflows through the category.
        r = self.apply((SOURCE_DIR / "examples" / "hello.yaml").read_text(), dry_run=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        listed = self.kube.kubectl("get", "knflow", "-n", "default").stdout
        self.assertRegex(listed.splitlines()[0], r"^NAME\s+READY\s+REASON\s+AGE$")
        self.assertIn("hello", listed)
        self.kube.kubectl("delete", "kfw", "hello", "-n", "default")

    def test_every_workflow_is_accepted(self):
        inputs = workflow_files()
        self.assertGreaterEqual(len(inputs), 8)
        for origin, text in inputs:
            with self.subTest(origin):
                r = self.apply(text)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn("serverside-applied (server dry run)", r.stdout)

    def test_every_render_output_is_accepted(self):
        rendered = 0
        for origin, text in workflow_files():
            with self.subTest(origin):
                check = knflow_render("-f", "-", input=text)
                if check.returncode == 1:
                    self.assertIn("cannot run in cluster mode", check.stderr)
                    continue
                self.assertEqual(check.returncode, 0, check.stderr)
                # Store the Workflow for real, so that the objects name a real owner's uid.
                r = self.apply(text, dry_run=False)
                self.assertEqual(r.returncode, 0, r.stderr)
                ns = namespace_of(text)
                name = re.search(r"^  name: (\S+)", text, re.M).group(1)
                uid = self.kube.kubectl("get", "workflow", name, "-n", ns,
                                        "-o", "jsonpath={.metadata.uid}").stdout
                out = knflow_render("-f", "-", "--uid", uid, input=text)
                self.assertEqual(out.returncode, 0, out.stderr)
                r = self.apply(out.stdout)
                self.assertEqual(r.returncode, 0, r.stderr)
                documents = out.stdout.count("---\n")
                self.assertEqual(r.stdout.count("serverside-applied (server dry run)"), documents,
                                 r.stdout)
                self.kube.kubectl("delete", "workflow", name, "-n", ns)
                rendered += 1
        self.assertGreaterEqual(rendered, 5)  # hello, cluster-sequence, thumbnails, the inputs

    def test_rendered_objects_are_stored_as_written(self):
        # Server-side apply for real: what the apiserver keeps is what render wrote (no field of
        # ours is pruned by a Knative schema).
        path = SOURCE_DIR / "examples" / "cluster-sequence.yaml"
        out = knflow_render("-f", str(path), "--uid", "00000000-0000-4000-8000-000000000002")
        self.assertEqual(out.returncode, 0, out.stderr)
        r = self.apply(out.stdout, dry_run=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        seq = json.loads(self.kube.kubectl("get", "sequences.flows.knative.dev", "media-ingest",
                                           "-n", "media", "-o", "json").stdout)
        self.assertEqual(seq["spec"]["channelTemplate"],
                         {"apiVersion": "messaging.knative.dev/v1", "kind": "InMemoryChannel"})
        self.assertEqual(seq["spec"]["steps"][0]["delivery"],
                         {"deadLetterSink": {"uri": "http://dead-letters.platform.svc.cluster.local/media"},
                          "retry": 3, "timeout": "PT1M", "backoffPolicy": "linear",
                          "backoffDelay": "PT1S"})
        self.assertEqual(seq["metadata"]["ownerReferences"][0]["uid"],
                         "00000000-0000-4000-8000-000000000002")
        ksvc = json.loads(self.kube.kubectl("get", "ksvc", "media-ingest-resize", "-n", "media",
                                            "-o", "json").stdout)
        self.assertEqual(ksvc["spec"]["template"]["metadata"]["annotations"]
                         ["autoscaling.knative.dev/max-scale"], "10")
        self.assertEqual(ksvc["spec"]["template"]["spec"]["containerConcurrency"], 10)
        self.kube.kubectl("delete", "-f", "-", input=out.stdout)

    def test_rule_breakers_are_refused(self):
        for name, functions, steps, message in REFUSED:
            with self.subTest(name):
                text = BASE.format(name=name, functions=functions, steps=steps)
                r = self.apply(text)
                self.assertNotEqual(r.returncode, 0, r.stdout)
                self.assertIn(message, r.stderr)
        # The base itself is fine.
        r = self.apply(BASE.format(name="fine", functions="", steps="    - {name: a, call: f}\n"))
        self.assertEqual(r.returncode, 0, r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
