"""What `agentstream dev` prints while it runs: agent logs, rejections, warnings, readably.

The processor and the worker write JSON lines to log files in dev's work folder, which
an embedded-broker `dev` deletes when it stops; a rejected input or an agent's
`log.info` was invisible unless one knew where to look, and then gone. Dev follows
those files and prints what a developer wants in front of them: every line of the
agents' own logger (`agentstream.agent`), every warning or error (a dead-lettered
input with its reason, a step retried, a stuck agent), and anything that is not JSON
(a `print` in agent code, a crash's traceback). Faust's and our own routine INFO lines
stay in the files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SHOWN_LEVELS = frozenset({"warning", "error", "critical"})
AGENT_LOGGER = "agentstream.agent"
# Fields every line has, or that are printed in its head rather than after it.
HEAD = frozenset({"ts", "level", "logger", "msg", "agent_id", "run_id", "agent_type", "taskName", "color_message"})


def readable(line: str, component: str) -> str | None:
    """The line as dev prints it, or None when it is routine (stays in the log file)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return f"{component:9} | {line}" if line.strip() else None
    if not isinstance(entry, dict):
        return f"{component:9} | {line}"
    level = str(entry.get("level", "info")).lower()
    logger = str(entry.get("logger", ""))
    if level not in SHOWN_LEVELS and not logger.startswith(AGENT_LOGGER):
        return None
    when = str(entry.get("ts", ""))[11:19]
    who = f"agent {entry['agent_id']}" if entry.get("agent_id") else component
    text = f"{when} {level.upper():7} {who}: {entry.get('msg', '')}"
    if entry.get("reason_code"):  # a dead letter: the reason is what the user needs
        text += f" [{entry['reason_code']}] {entry.get('reason', '')}"
        details = {k: v for k, v in entry.items() if k in ("topic", "partition", "offset")}
    else:
        details = {k: v for k, v in entry.items() if k not in HEAD and k != "exc"}
    if details:
        text += "  " + " ".join(f"{key}={_short(value)}" for key, value in details.items())
    if entry.get("exc"):
        text += "\n" + "\n".join(f"    {row}" for row in str(entry["exc"]).splitlines())
    return text


def _short(value: Any) -> str:
    shown = value if isinstance(value, str) else json.dumps(value, default=str)
    return shown if len(shown) <= 200 else shown[:197] + "..."


class LogFollower:
    """Reads what the components appended to their log files since the last call."""

    def __init__(self, files: dict[str, Path]) -> None:
        self._files = files
        self._offsets = {name: 0 for name in files}
        self._partial = {name: "" for name in files}

    def new_lines(self) -> list[str]:
        """The readable form of every complete line written since the last call, per file in order."""
        shown: list[str] = []
        for name, path in self._files.items():
            try:
                with path.open("rb") as handle:
                    handle.seek(self._offsets[name])
                    chunk = handle.read()
            except OSError:  # not created yet
                continue
            self._offsets[name] += len(chunk)
            text = self._partial[name] + chunk.decode("utf-8", errors="replace")
            *lines, self._partial[name] = text.split("\n")  # the last piece may be a line being written
            shown.extend(out for line in lines if (out := readable(line, name)) is not None)
        return shown
