"""The state-dir check's record comparison: a local table that ran ahead of its persisted offset is kept."""

from __future__ import annotations

import json

from agentstream.streams.processor.statedir import same_history

RECORD = {"agent_id": "a", "run_id": "r1", "created_at": "2026-12-01T03:00:00.123456Z", "revision": 4,
          "fields": {"n": 1}}


def version(**changes: object) -> bytes:
    return json.dumps({**RECORD, **changes}).encode()


def test_the_same_record_is_the_same_history() -> None:
    assert same_history(version(), version())


def test_a_later_revision_of_the_same_run_is_the_same_history() -> None:
    assert same_history(version(revision=9, fields={"n": 5}), version())


def test_an_older_revision_is_not() -> None:
    assert not same_history(version(revision=3), version())


def test_another_run_agent_or_start_time_is_not() -> None:
    assert not same_history(version(revision=9, run_id="r2"), version())
    assert not same_history(version(revision=9, agent_id="b"), version())
    assert not same_history(version(revision=9, created_at="2026-12-01T03:00:00.123457Z"), version())


def test_missing_or_unreadable_values_are_not() -> None:
    assert not same_history(None, version())
    assert not same_history(version(), None)
    assert not same_history(b"\xff not json", version())
    assert not same_history(b"[1, 2]", version())
    assert not same_history(json.dumps({"revision": 9}).encode(), json.dumps({"revision": 1}).encode())
    assert same_history(None, None)  # nothing on either side: nothing differs
