"""Delivery: the per-agent bookkeeping that makes every input count once."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentstream.streams.engine import Delivery
from agentstream.streams.engine.dedup import key_digest

EVENTS = "agentstream.agent-events"
RESULTS = "agentstream.step-results"
WINDOW = 100.0
MAX_KEYS = 1000


def digests(*keys: str) -> list[int]:
    return [key_digest(key) for key in keys]


def remember(delivery: Delivery, key: str, *, offset: int = 0, now: float = 0.0, topic: str = EVENTS,
             window_s: float = WINDOW, max_keys: int = MAX_KEYS) -> None:
    delivery.remember(topic, offset, key, now, window_s, max_keys)


def test_nothing_is_a_redelivery_or_duplicate_at_first() -> None:
    delivery = Delivery()
    assert not delivery.is_redelivery(EVENTS, 0)
    assert not delivery.is_duplicate("k")


def test_redelivery_is_by_offset_and_per_topic() -> None:
    delivery = Delivery()
    remember(delivery, "a", offset=10, topic=EVENTS)

    assert delivery.is_redelivery(EVENTS, 10)  # the same record again
    assert delivery.is_redelivery(EVENTS, 3)  # an older one
    assert not delivery.is_redelivery(EVENTS, 11)
    # offsets of another topic are independent
    assert not delivery.is_redelivery(RESULTS, 0)
    assert not delivery.is_redelivery(RESULTS, 10)

    remember(delivery, "b", offset=4, topic=RESULTS)
    assert delivery.is_redelivery(RESULTS, 4)
    assert not delivery.is_redelivery(RESULTS, 5)
    assert delivery.last_offsets == {EVENTS: 10, RESULTS: 4}


def test_duplicate_keys_are_recognised() -> None:
    delivery = Delivery()
    remember(delivery, "msg-1", offset=1, now=1.0)
    remember(delivery, "idem-2", offset=2, now=2.0)

    assert delivery.is_duplicate("msg-1")
    assert delivery.is_duplicate("idem-2")
    assert not delivery.is_duplicate("msg-3")
    # keys are not per topic: a key seen on one topic is a duplicate on every topic
    remember(delivery, "res-1", offset=1, now=3.0, topic=RESULTS)
    assert delivery.is_duplicate("res-1")


def test_keys_expire_after_the_window() -> None:
    delivery = Delivery()
    remember(delivery, "old", offset=1, now=0.0)
    remember(delivery, "mid", offset=2, now=50.0)

    remember(delivery, "edge", offset=3, now=WINDOW)  # horizon 0.0: "old" is exactly at it, kept
    assert delivery.is_duplicate("old")

    remember(delivery, "new", offset=4, now=WINDOW + 1)  # horizon 1.0: "old" has expired
    assert not delivery.is_duplicate("old")
    assert delivery.is_duplicate("mid") and delivery.is_duplicate("edge") and delivery.is_duplicate("new")

    remember(delivery, "later", offset=5, now=WINDOW + 60)  # horizon 60: "mid" expires too
    assert list(delivery.recent_keys) == digests("edge", "new", "later")
    # offsets are kept whatever happens to the keys
    assert delivery.is_redelivery(EVENTS, 5)


def test_key_count_is_bounded_and_the_oldest_go_first() -> None:
    delivery = Delivery()
    for i in range(10):
        remember(delivery, f"k{i}", offset=i, now=float(i), max_keys=3)
        assert len(delivery.recent_keys) <= 3

    assert list(delivery.recent_keys) == digests("k7", "k8", "k9")
    assert not delivery.is_duplicate("k6")
    assert delivery.is_duplicate("k9")


def test_order_survives_serialisation_so_expiry_still_works_after_a_restore() -> None:
    delivery = Delivery()
    for i, key in enumerate(["z", "a", "m"]):
        remember(delivery, key, offset=i, now=float(i))

    restored = Delivery.model_validate_json(delivery.model_dump_json())
    assert restored == delivery
    assert list(restored.recent_keys) == digests("z", "a", "m")
    remember(restored, "n", offset=9, now=WINDOW + 0.5)  # horizon 0.5: only "z" (0.0) expires
    assert list(restored.recent_keys) == digests("a", "m", "n")


def test_re_remembering_a_key_does_not_keep_expired_keys_alive() -> None:
    delivery = Delivery()
    remember(delivery, "a", offset=1, now=0.0)
    remember(delivery, "b", offset=2, now=5.0)
    remember(delivery, "a", offset=3, now=8.0)
    remember(delivery, "c", offset=4, now=WINDOW + 6.0)  # horizon 6.0: "b" (5.0) has expired
    assert not delivery.is_duplicate("b")


def test_keys_are_stored_packed_and_records_of_format_3_still_load_theirs() -> None:
    delivery = Delivery()
    for i in range(1000):
        remember(delivery, f"{i:032x}", offset=i, now=1_796_245_431.25 + i)
    stored = delivery.model_dump_json()
    assert len(stored) < 16_200  # 12 bytes a key in base64; as text with float times it was 53
    restored = Delivery.model_validate_json(stored)
    assert restored == delivery
    assert restored.seen_at(f"{999:032x}") == 1_796_245_431 + 999 + 1  # whole seconds, rounded up

    # format 3 kept the keys themselves, with float times: they load as digests, order kept
    old = Delivery.model_validate_json('{"last_offsets": {"t": 4}, "recent_keys": {"b": 7.5, "a": 9.0}}')
    assert list(old.recent_keys.items()) == list(zip(digests("b", "a"), [8, 9]))
    assert old.is_duplicate("a") and old.is_duplicate("b") and not old.is_duplicate("c")


@pytest.mark.parametrize("stored", ['"not base64!"', '"AAAA"', '{"k": "noon"}', '{"k": true}', "[1, 2]"])
def test_malformed_keys_fail_validation_with_a_reason(stored: str) -> None:
    with pytest.raises(ValidationError, match="recent_keys"):
        Delivery.model_validate_json(f'{{"recent_keys": {stored}}}')
