"""A new user's first hour, word for word from the README: the agent module of "An agent",
then the commands of "Run it and talk to it", `dev` in its own shell and the rest in another.

Only the install line is not repeated (the suite runs in the environment README command 2
installed). Each command must do what the README says: exit 0, except the typo, which
is rejected with exit 1 and the reason; the agent ends completed with the README's result.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from test_cli import DevProcess, interrupt_and_wait, kill_tree, read_addresses

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent  # the environment's .venv/bin


def readme_block(language: str, containing: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    found = [b for b in blocks if containing in b]
    assert len(found) == 1, f"the README has {len(found)} {language} blocks containing {containing!r}"
    return found[0]


def test_the_readme_first_hour_ends_with_the_agent_completed_and_the_typo_reported(tmp_path: Path) -> None:
    (tmp_path / "myagents.py").write_text(readme_block("python", "# myagents.py"), encoding="utf-8")
    lines = [line for line in readme_block("bash", "agentstream dev --app myagents").splitlines() if line.strip()]
    commands = [(shlex.split(line.split("#")[0]), line.partition("#")[2].strip()) for line in lines]
    assert commands[0][0] == [".venv/bin/agentstream", "dev", "--app", "myagents"], commands[0]

    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_")}
    stderr = tmp_path / "dev.stderr"
    with stderr.open("w") as err:
        process = subprocess.Popen([str(BIN / "agentstream"), *commands[0][0][1:]], cwd=tmp_path, env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True,
                                   start_new_session=True)
    dev = DevProcess(process, stderr)
    try:
        read_addresses(dev)
        exported = re.search(r"export (AGENTSTREAM_KAFKA_BOOTSTRAP=\S+) (AGENTSTREAM_API_URL=\S+)", "\n".join(dev.lines))
        if exported:  # a default port was taken: the user copies the line dev printed
            env.update(part.split("=", 1) for part in exported.groups())  # type: ignore[misc]
        else:
            dev.read_until(r"without any AGENTSTREAM_\* variable", 10)

        outputs = []
        for argv, comment in commands[1:]:
            assert argv[0] == ".venv/bin/agentstream", argv
            ran = subprocess.run([str(BIN / "agentstream"), *argv[1:]], cwd=tmp_path, env=env, capture_output=True,
                                 text=True, timeout=120, stdin=subprocess.DEVNULL)
            shown = f"$ {shlex.join(argv)}\n{ran.stdout}{ran.stderr}"
            assert "Traceback" not in shown, shown
            if "exits 1" in comment:
                assert ran.returncode == 1, shown
                assert ("the input was rejected (unknown_event): agent type TaskProcessor has no event 'add_tsak'; "
                        "its events: add_task, shutdown") in ran.stderr, shown
            else:
                assert ran.returncode == 0, shown
            outputs.append((argv, ran.stdout))

        result = next(out for argv, out in outputs if argv[1] == "result")
        assert json.loads(result) == {"agent_id": "tp-1", "status": "completed", "result": ["done t1"]}
        state = json.loads(next(out for argv, out in outputs if argv[1] == "state"))
        assert state["status"] == "completed" and state["fields"]["done"] == ["done t1"]
        # dev's terminal showed the rejection and the agent's own log line
        dev.read_until(r"agent tp-1: record dead-lettered \[unknown_event\]", 30)
        dev.read_until(r"agent tp-1: task done\s+fields=\{\"task_id\": \"t1\"\}", 30)
        assert interrupt_and_wait(dev) == 0, dev.transcript()  # Ctrl-C, as the user ends the hour
    finally:
        if process.poll() is None:
            kill_tree(process, dev.children)
