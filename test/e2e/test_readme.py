"""Runs the README's curl walkthrough, command by command, against a fresh daemon, and checks that
each command answers with the status its comment announces (200 when it names none); and runs
the lines of "Run the example" as written (the curl invoke, `knflow runs`, `knflow runs get`,
`knflow invoke`, and `runs logs|cancel|retry|delete` on the failed run) against a daemon
started with the example, checking the answers it shows."""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from daemon import BIN, SOURCE_DIR, Daemon  # noqa: E402


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


def example_section():
    """The "Run the example" section: its shell blocks, the JSON answer it shows and the
    answer it gives in words for the big order."""
    with open(os.path.join(SOURCE_DIR, "README.md")) as f:
        readme = f.read()
    section = readme.split("## Run the example", 1)[1].split("\n## ", 1)[0]
    shell = re.findall(r"```sh\n(.*?)```", section, re.S)
    answer = re.search(r"```json\n(.*?)```", section, re.S).group(1).strip()
    review = re.search(r"manual review \(`(\{.*?\})`\)", section).group(1)
    return shell, answer, review


class ReadmeTest(unittest.TestCase):
    def test_run_the_example_as_shown(self):
        """The lines run as written: `build/release/knflow` is the binary under test (linked
        there), `~` is a fresh home whose ~/.local/share/knflow is the daemon's data directory,
        and only the daemon's port differs: the curl's URL is rewritten, the CLI gets
        $KNFLOW_SERVER."""
        (invoke_block, cli_block, failure_block, control_block), answer, review = example_section()
        with tempfile.TemporaryDirectory(prefix="knflow-readme-") as home, \
                Daemon("--apply", os.path.join(SOURCE_DIR, "examples", "order-pipeline.yaml"),
                       "--functions-dir", SOURCE_DIR,
                       data_dir=os.path.join(home, ".local", "share", "knflow")) as d:
            work = os.path.join(home, "knflow")
            os.makedirs(os.path.join(work, "build", "release"))
            os.symlink(os.path.abspath(BIN), os.path.join(work, "build", "release", "knflow"))
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith("KNFLOW_") and k != "XDG_DATA_HOME"}
            env.update(HOME=home, KNFLOW_SERVER=d.base)

            def sh(script):
                r = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True,
                                   text=True, timeout=120)
                self.assertEqual(r.returncode, 0, f"{script}\n{r.stdout}{r.stderr}")
                return r.stdout

            try:
                d.start()
                deadline = time.monotonic() + 60  # --apply may finish after /readyz
                while d.call("GET", "/api/v1/namespaces/shop/workflows/order-pipeline")[0] != 200:
                    self.assertLess(time.monotonic(), deadline, "the example never appeared")
                    time.sleep(0.05)

                script = invoke_block.replace("http://127.0.0.1:8080", d.base).rstrip()
                self.assertTrue(script.endswith(":invoke"), script)
                headers = os.path.join(home, "headers")
                self.assertEqual(sh(script + " -D " + headers), answer)
                with open(headers) as f:
                    run_id = re.search(r"(?im)^knflow-run-id: *(\S+)", f.read()).group(1)
                # "Add ?mode=async to get 202 and the run id at once."
                out = sh(script + "?mode=async -w '\\n%{http_code}'")
                body, _, code = out.rpartition("\n")
                self.assertEqual(code, "202", out)
                self.assertTrue(json.loads(body)["runId"], body)

                lines = [line for line in cli_block.splitlines() if line.strip()]
                self.assertEqual(len(lines), 3, cli_block)
                listed = sh(lines[0])
                self.assertTrue(listed.startswith("ID"), listed)
                self.assertTrue(any(row.startswith(run_id) and " completed " in row
                                    for row in listed.splitlines()), listed)
                self.assertIn("RUN_ID", lines[1])
                shown = sh(lines[1].replace("RUN_ID", run_id))
                self.assertIn(f"Run:       {run_id}", shown)
                self.assertIn("Phase:     completed", shown)
                self.assertIn("STEP", shown)
                self.assertIn("HTTP", shown)
                self.assertEqual(json.loads(sh(lines[2])), json.loads(review))

                # "When a step fails": a flaky charge is retried and the run completes; a
                # declined card faults the run at once, and `runs get` shows why.
                lines = [line for line in failure_block.splitlines() if line.strip()]
                self.assertEqual(len(lines), 3, failure_block)
                flaky = json.loads(sh(lines[0]))
                self.assertEqual(flaky["receipt"], "rcpt-flaky-1", flaky)
                r = subprocess.run(["bash", "-c", lines[1]], cwd=work, env=env,
                                   capture_output=True, text=True, timeout=120)
                self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                self.assertIn("card declined", r.stderr)
                failed_id = re.search(r"knflow runs get (\S+) -n shop", r.stderr).group(1)
                self.assertIn("RUN_ID", lines[2])
                shown = sh(lines[2].replace("RUN_ID", failed_id))
                self.assertIn("Phase:     faulted", shown)
                self.assertIn("At:        /do/2 (step charge)", shown)
                self.assertRegex(shown, r"charge +/do/2 +1 +faulted +402 +\d\d:\d\d:\d\d\.\d{3} +"
                                r"Call to charge failed")
                knflow = lines[2].split(" runs get", 1)[0]
                shown_runs = {row.split()[0]: sh(lines[2].replace("RUN_ID", row.split()[0]))
                              for row in sh(knflow + " runs -n shop").splitlines()[1:]
                              if row.strip()}
                flaky_id = next(rid for rid, out in shown_runs.items() if "rcpt-flaky-1" in out)
                # The attempts table comes after the step history.
                attempts = [row for row in shown_runs[flaky_id].split("\nSTEP ")[-1].splitlines()
                            if row.startswith("charge ")]
                self.assertEqual([row.split()[3:5] for row in attempts],
                                 [["faulted", "503"], ["faulted", "503"], ["completed", "200"]],
                                 attempts)

                # The run commands, on the declined run: its logs, a redrive (declined again), a
                # cancel refused (it has finished), a delete.
                logs, cancel, retry, delete = [line.replace("RUN_ID", failed_id) for line in
                                               control_block.splitlines() if line.strip()]
                self.assertRegex(sh(logs), r"(?m) charge stderr .*\"POST / HTTP/1\.1\" 402")
                self.assertIn(f"Run {failed_id} is running again", sh(retry))
                deadline = time.monotonic() + 60
                while " (redrive 1) " not in (shown := sh(lines[2].replace("RUN_ID", failed_id))) \
                        or "Phase:     faulted" not in shown:
                    self.assertLess(time.monotonic(), deadline, shown)
                    time.sleep(0.05)
                self.assertRegex(shown, r"charge +/do/2 +2 \(redrive 1\) +faulted +402 ")
                r = subprocess.run(["bash", "-c", cancel], cwd=work, env=env, capture_output=True,
                                   text=True, timeout=120)
                self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                self.assertIn("409 Conflict: The run has already finished.", r.stderr)
                self.assertEqual(sh(delete), f"Run {failed_id} deleted (it was faulted).\n")
                self.assertEqual(d.stop(), 0, d.tail())
            finally:
                d.stop()  # SIGTERM, so the daemon stops the example's functions

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
            self.assertEqual(d.stop(), 0, d.tail())


if __name__ == "__main__":
    unittest.main(verbosity=2)
