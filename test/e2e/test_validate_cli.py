"""`knflow validate` on every example (valid) and on broken documents (every error listed)."""

import glob
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from daemon import BIN, SOURCE_DIR  # noqa: E402


def validate(*args, stdin=None):
    return subprocess.run([BIN, "validate", *args], capture_output=True, text=True, timeout=60,
                          input=stdin, cwd=SOURCE_DIR)


class ValidateCliTest(unittest.TestCase):
    def test_every_example_is_valid(self):
        examples = sorted(glob.glob(os.path.join(SOURCE_DIR, "examples", "*.yaml")))
        self.assertGreaterEqual(len(examples), 3)
        for path in examples:
            r = validate("-f", path)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn(": valid", r.stdout)

    def test_broken_example_lists_every_error(self):
        path = os.path.join(SOURCE_DIR, "examples", "broken", "broken.yaml")
        r = validate("-f", path, "-o", "json")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        report = json.loads(r.stdout)
        self.assertFalse(report["valid"])
        with open(path) as f:
            expected = [line.split(":", 1)[1].strip() for line in f if line.startswith("# expect:")]
        self.assertEqual(sorted(e["pointer"] for e in report["errors"]), sorted(expected))
        text = validate("-f", path)
        self.assertEqual(text.returncode, 1)
        for pointer in expected:
            self.assertIn(pointer + ":", text.stdout)

    def test_stdin_and_unreadable_files(self):
        with open(os.path.join(SOURCE_DIR, "examples", "hello.yaml")) as f:
            r = validate("-f", "-", stdin=f.read())
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = validate("-f", "/nonexistent/workflow.yaml")
        self.assertEqual(r.returncode, 2)
        self.assertIn("cannot read", r.stderr)
        r = validate()
        self.assertEqual(r.returncode, 2)

    def test_a_fifo_nobody_writes_to_reads_as_empty(self):
        # Opening it waited for a writer, for good; a pipe with one (`<(...)`) is read as ever.
        with tempfile.TemporaryDirectory() as tmp:
            fifo = os.path.join(tmp, "workflow.yaml")
            os.mkfifo(fifo)
            r = validate("-f", fifo)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn("empty document", r.stdout)
        r = subprocess.run(["bash", "-c", f'"{BIN}" validate -f <(cat examples/hello.yaml)'],
                           capture_output=True, text=True, timeout=60, cwd=SOURCE_DIR)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_control_characters_from_the_file_are_escaped_on_the_terminal(self):
        """A step name with ESC, BEL and CR reached the terminal raw in validate's error lines
        (it could clear the screen or retitle the terminal); `runs get` already escaped them."""
        doc = json.dumps({"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                          "metadata": {"name": "a"},
                          "spec": {"do": [{"name": "s\u001b[2J\u001b]0;t\u0007\rX", "set": {}}]}})
        r = validate("-f", "-", stdin=doc)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        out = r.stdout + r.stderr
        self.assertEqual([c for c in out if (ord(c) < 0x20 and c != "\n") or ord(c) == 0x7F], [],
                         repr(out))
        self.assertIn("\\x1b[2J", out)

    def test_a_word_no_option_takes_is_refused(self):
        """`validate -f a.yaml b.yaml` checked a.yaml alone and said "valid"; `render -f x extra`
        said the option was ambiguous. Every command now refuses the stray word, exit 2."""
        hello = os.path.join(SOURCE_DIR, "examples", "hello.yaml")
        broken = os.path.join(SOURCE_DIR, "examples", "broken", "broken.yaml")
        for argv in (["validate", "-f", hello, broken], ["render", "-f", hello, "extra"],
                     ["serve", "--help", "extra"], ["controller", "--help", "extra"]):
            r = subprocess.run([BIN, *argv], capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 2, (argv, r.stdout, r.stderr))
            self.assertIn(f"knflow {argv[0]}: unexpected argument '{argv[-1]}'", r.stderr)

    def test_endless_input_is_refused_not_read_to_the_end(self):
        """/dev/zero and an endless pipe were read until memory ran out; reading now stops past
        64 MiB, with exit 2 (the file could not be read). A file over the document limit but
        under that still gets the validator's error, exit 1."""
        limit = "it holds more than 67108864 bytes (64 MiB), the most knflow reads from a file\n"
        for command in ("validate", "render"):
            r = subprocess.run([BIN, command, "-f", "/dev/zero"], capture_output=True, text=True,
                               timeout=60)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertEqual(r.stderr, f"knflow {command}: cannot read /dev/zero: {limit}")
        endless = subprocess.Popen(["yes"], stdout=subprocess.PIPE)
        try:
            r = subprocess.run([BIN, "validate", "-f", "-"], stdin=endless.stdout,
                               capture_output=True, text=True, timeout=60)
        finally:
            endless.kill()
            endless.wait()
            endless.stdout.close()
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(r.stderr, f"knflow validate: cannot read standard input: {limit}")
        r = validate("-f", "-", stdin="a" * 1100000)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("\n  (root): document is 1100000 bytes, more than the limit of 1048576 bytes",
                      r.stdout)

    def test_hostile_documents_fail_cleanly(self):
        deep = b"[" * 100000 + b"]" * 100000
        laughs = b"a: &a [1]\n" + b"".join(
            f"b{i}: &b{i} [*{'a' if i == 0 else f'b{i - 1}'}, *{'a' if i == 0 else f'b{i - 1}'}]\n".encode()
            for i in range(40))
        for doc in (deep, laughs, b"\xff\xfe not utf-8", b"kind: Workflow\nkind: Workflow\n"):
            r = subprocess.run([BIN, "validate", "-f", "-"], capture_output=True, timeout=60, input=doc)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn(b"error", r.stdout)

if __name__ == "__main__":
    unittest.main(verbosity=2)
