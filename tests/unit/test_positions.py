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
