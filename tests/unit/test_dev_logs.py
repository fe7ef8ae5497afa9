"""What `agentstream dev` prints from its components' JSON logs: agent logs, rejections with
their reason, warnings and anything not JSON; routine INFO lines stay in the files."""

from __future__ import annotations

import json
from pathlib import Path

from agentstream.streams.cli._dev_logs import LogFollower, readable


def line(**entry: object) -> str:
    return json.dumps({"ts": "2026-12-01T19:24:51.123+00:00", "level": "info", "logger": "faust", "msg": "", **entry})


def test_agent_logs_and_rejections_are_shown_readably_and_routine_lines_are_not() -> None:
    agent = line(logger="agentstream.agent", msg="task complete", agent_id="tp-1", run_id="r", agent_type="T",
                 fields={"task_id": "t1"})
    assert readable(agent, "processor") == '19:24:51 INFO    agent tp-1: task complete  fields={"task_id": "t1"}'
    letter = line(level="warning", logger="agentstream.processor", msg="record dead-lettered", agent_id="tp-1",
                  reason_code="unknown_event", reason="agent type T has no event 'x'", topic="p.agent-events",
                  partition=3, offset=1)
    assert readable(letter, "processor") == ("19:24:51 WARNING agent tp-1: record dead-lettered [unknown_event] agent "
                                             "type T has no event 'x'  topic=p.agent-events partition=3 offset=1")
    assert readable(line(msg="[^Worker]: Ready"), "processor") is None
    assert readable(line(logger="agentstream.processor", msg="timers re-armed", agents=3), "processor") is None
    assert readable("hello from print()", "worker") == "worker    | hello from print()"
    failed = readable(line(level="error", logger="agentstream.worker", msg="step failed", exc="Traceback\n  boom"),
                      "worker")
    assert failed == "19:24:51 ERROR   worker: step failed\n    Traceback\n      boom"


def test_the_follower_returns_each_complete_line_once_and_waits_for_a_line_being_written(tmp_path: Path) -> None:
    log = tmp_path / "processor.log"
    follower = LogFollower({"processor": log, "worker": tmp_path / "not-yet.log"})
    assert follower.new_lines() == []
    shown = line(logger="agentstream.agent", msg="one", agent_id="a")
    log.write_text(shown + "\n" + line(msg="routine") + "\n" + shown[:20], encoding="utf-8")
    assert follower.new_lines() == ["19:24:51 INFO    agent a: one"]
    with log.open("a", encoding="utf-8") as handle:
        handle.write(shown[20:].replace('"one"', '"two"') + "\n")
    assert follower.new_lines() == ["19:24:51 INFO    agent a: two"]
    assert follower.new_lines() == []
