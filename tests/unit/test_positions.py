"""InputPositions: an input partition resumes where the agents' records say, never past it."""

from __future__ import annotations

import json

from agentstream.streams.processor.positions import InputPositions

EVENTS = "t.agent-events#0"


def record(**offsets: int) -> bytes:
    return json.dumps({"delivery": {"last_offsets": {EVENTS if k == "events" else k: v for k, v in offsets.items()}}}).encode()


def test_an_input_beyond_the_records_position_names_the_first_skipped_offset() -> None:
    positions = InputPositions(scan=lambda: [record(events=2), record(events=1), b"not json"])
    assert positions.missed("gen-1", EVENTS, 5) == 3  # committed offset ran ahead: 3 and 4 were never applied
    for offset in (3, 4, 5):  # read again and handled in order
        positions.handled(EVENTS, offset)
    assert positions.missed("gen-1", EVENTS, 6) is None


def test_inputs_at_or_before_the_position_are_handled_duplicates_included() -> None:
    positions = InputPositions(scan=lambda: [record(events=2)])
    assert positions.missed(1, EVENTS, 0) is None  # a redelivery: de-duplication recognises it
    assert positions.missed(1, EVENTS, 3) is None
    assert positions.missed(1, "t.step-results#0", 40) is None  # no record says anything about it


def test_a_new_rebalance_takes_the_positions_from_the_records_again() -> None:
    stored = [record(events=2)]
    positions = InputPositions(scan=lambda: stored)
    assert positions.missed(1, EVENTS, 3) is None
    positions.handled(EVENTS, 3)
    stored[:] = [record(events=9)]  # another processor applied up to 9 meanwhile
    assert positions.missed(1, EVENTS, 12) == 4  # same generation: the position kept in memory
    assert positions.missed(2, EVENTS, 10) is None  # rebalance: rescanned, 10 is next


def test_the_committed_offset_bounds_the_position_when_the_records_run_ahead_of_it() -> None:
    # Agent A's input at 9 is durable, agent B's at 5 was lost with a crash: the commit stayed at 5.
    # An input delivered at 7 means 5 and 6 were skipped, though the records say 10 is next.
    positions = InputPositions(scan=lambda: [record(events=9)], committed=lambda source: 5)
    assert positions.missed(1, EVENTS, 7) == 5


def test_the_records_bound_the_position_when_the_commit_runs_ahead_of_them() -> None:
    positions = InputPositions(scan=lambda: [record(events=2)], committed=lambda source: 8)
    assert positions.missed(1, EVENTS, 8) == 3


def test_a_committed_offset_alone_gives_the_position() -> None:
    positions = InputPositions(scan=lambda: [], committed=lambda source: {EVENTS: 4}.get(source))
    assert positions.missed(1, EVENTS, 4) is None
    assert positions.missed(2, EVENTS, 6) == 4
    assert positions.missed(3, "t.step-results#0", 40) is None  # neither says anything about it


def test_the_commit_is_read_once_per_rebalance_as_later_commits_are_the_processors_own() -> None:
    reads: list[str] = []

    def committed(source: str) -> int:
        reads.append(source)
        return 3

    positions = InputPositions(scan=lambda: [], committed=committed)
    for offset in (3, 4, 5):
        assert positions.missed(1, EVENTS, offset) is None
        positions.handled(EVENTS, offset)
    assert reads == [EVENTS]
    assert positions.missed(2, EVENTS, 3) is None and reads == [EVENTS, EVENTS]
