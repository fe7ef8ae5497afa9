"""InputPositions: an input partition resumes where the agents' records say, never past it."""

from __future__ import annotations

import json

from agentstream.streams.processor.positions import InputPositions

EVENTS = "t.agent-events#0"


def record(**offsets: int) -> bytes:
    return json.dumps({"delivery": {"last_offsets": {EVENTS if k == "events" else k: v for k, v in offsets.items()}}}).encode()


def test_an_input_beyond_the_records_position_seeks_back_and_waits_for_the_skipped_ones() -> None:
    positions = InputPositions(scan=lambda: [record(events=2), record(events=1), b"not json"])
    first = positions.check("gen-1", EVENTS, 5)  # committed offset ran ahead: 3 and 4 were never applied
    assert not first.handle and first.seek_to == 3
    later = positions.check("gen-1", EVENTS, 6)  # still in the buffer from before the seek
    assert not later.handle and later.seek_to is None
    for offset in (3, 4, 5, 6):  # read again in order
        assert positions.check("gen-1", EVENTS, offset).handle
        positions.handled(EVENTS, offset)


def test_inputs_at_or_before_the_position_are_handled_duplicates_included() -> None:
    positions = InputPositions(scan=lambda: [record(events=2)])
    assert positions.check(1, EVENTS, 0).handle  # a redelivery: de-duplication recognises it
    assert positions.check(1, EVENTS, 3).handle
    assert positions.check(1, "t.step-results#0", 40).handle  # no record says anything about it


def test_a_new_rebalance_takes_the_positions_from_the_records_again() -> None:
    stored = [record(events=2)]
    positions = InputPositions(scan=lambda: stored)
    assert positions.check(1, EVENTS, 3).handle
    positions.handled(EVENTS, 3)
    stored[:] = [record(events=9)]  # another processor applied up to 9 meanwhile
    assert not positions.check(1, EVENTS, 12).handle  # same generation: position 4 in memory
    assert positions.check(2, EVENTS, 10).handle  # rebalance: rescanned, 10 is next


def test_a_position_that_cannot_be_read_again_is_given_up_after_a_while() -> None:
    now = [0.0]
    positions = InputPositions(scan=lambda: [record(events=2)], clock=lambda: now[0])
    assert positions.check(1, EVENTS, 9).seek_to == 3
    now[0] = 31.0
    assert positions.check(1, EVENTS, 9).handle
