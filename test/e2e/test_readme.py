"""Runs the README's curl walkthrough, command by command, against a fresh daemon, and checks that
each command answers with the status its comment announces (200 when it names none)."""

import json
import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from daemon import SOURCE_DIR, Daemon  # noqa: E402


def walkthrough_steps():
    with open(os.path.join(SOURCE_DIR, "README.md")) as f:
        readme = f.read()
    section = readme.split("## Walkthrough with curl", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    setup, steps, comment, command = [], [], [], []
    for line in block.splitlines():
        if line.startswith("#"):
            comment.append(line)
        elif line.strip() == "":
            continue
        else:
            command.append(line)
            if not line.endswith("\\"):
                text = "\n".join(command)
                if text.lstrip().startswith("curl"):
                    steps.append((" ".join(comment), text))
                else:
                    setup.append(text)
                comment, command = [], []
    return setup, steps


class ReadmeTest(unittest.TestCase):
    def test_walkthrough_runs_as_shown(self):
        setup, steps = walkthrough_steps()
        self.assertGreaterEqual(len(steps), 6)
        with Daemon() as d:
            d.start()
            token_path = os.path.join(d.data_dir, "token")
            prelude = "\n".join(setup)
            prelude = prelude.replace("http://127.0.0.1:8080", d.base)
            prelude = prelude.replace("~/.local/share/knflow/token", token_path)
            seen = []
            for comment, command in steps:
                match = re.search(r"\b([1-5]\d\d)\b", comment)
                expected = int(match.group(1)) if match else 200
                script = prelude + "\n" + command + " -w '\\n%{http_code}'"
                r = subprocess.run(["bash", "-c", script], cwd=SOURCE_DIR, capture_output=True,
                                   text=True, timeout=60)
                self.assertEqual(r.returncode, 0, f"{command}\n{r.stderr}")
                body, _, code = r.stdout.rpartition("\n")
                self.assertEqual(int(code), expected, f"{comment}\n{command}\n{body}")
                if expected >= 400:
                    problem = json.loads(body)
                    self.assertEqual(problem["status"], expected)
                    self.assertTrue(problem["errors"], body)
                seen.append(expected)
            self.assertIn(201, seen)
            self.assertIn(409, seen)
            self.assertIn(422, seen)
            self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
