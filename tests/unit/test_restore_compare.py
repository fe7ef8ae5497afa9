"""The restore audit tells a table record ahead of its changelog (expected after a crash) from one behind it."""

from __future__ import annotations

import json

from agentstream.streams.processor.restore_check import compare


def record(offsets: dict[str, int], updated_at: str = "2026-11-30T10:00:00Z") -> bytes:
    return json.dumps({"revision": 3, "delivery": {"last_offsets": offsets}, "updated_at": updated_at}).encode()


def test_a_table_record_with_later_input_positions_is_ahead() -> None:
    assert compare(record({"events#1": 12, "results#1": 4}), record({"events#1": 11, "results#1": 4})) == "ahead"


def test_a_table_record_with_earlier_input_positions_is_behind() -> None:
    assert compare(record({"events#1": 9}), record({"events#1": 11, "results#1": 2})) == "behind"
    assert compare(None, record({"events#1": 1})) == "behind"


def test_equal_positions_are_ordered_by_the_last_update_and_crossed_ones_diverge() -> None:
    later, earlier = "2026-11-30T10:00:01Z", "2026-11-30T10:00:00Z"
    assert compare(record({"events#1": 5}, later), record({"events#1": 5}, earlier)) == "ahead"
    assert compare(record({"events#1": 5}, earlier), record({"events#1": 5}, later)) == "behind"
    assert compare(record({"events#1": 6, "results#1": 1}), record({"events#1": 5, "results#1": 2})) == "diverged"
