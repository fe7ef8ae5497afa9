"""Delivery: the per-agent bookkeeping that makes every input count once."""

from __future__ import annotations

import pytest

from agentstream.streams.engine import Delivery

EVENTS = "agentstream.agent-events"
RESULTS = "agentstream.step-results"
WINDOW = 100.0
MAX_KEYS = 1000


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
    assert list(delivery.recent_keys) == ["edge", "new", "later"]
    # offsets are kept whatever happens to the keys
    assert delivery.is_redelivery(EVENTS, 5)


def test_key_count_is_bounded_and_the_oldest_go_first() -> None:
    delivery = Delivery()
    for i in range(10):
        remember(delivery, f"k{i}", offset=i, now=float(i), max_keys=3)
        assert len(delivery.recent_keys) <= 3

    assert list(delivery.recent_keys) == ["k7", "k8", "k9"]
    assert not delivery.is_duplicate("k6")
    assert delivery.is_duplicate("k9")


def test_order_survives_serialisation_so_expiry_still_works_after_a_restore() -> None:
    delivery = Delivery()
    for i, key in enumerate(["z", "a", "m"]):
        remember(delivery, key, offset=i, now=float(i))

    restored = Delivery.model_validate_json(delivery.model_dump_json())
    assert restored == delivery
    assert list(restored.recent_keys) == ["z", "a", "m"]
    remember(restored, "n", offset=9, now=WINDOW + 0.5)  # horizon 0.5: only "z" (0.0) expires
    assert list(restored.recent_keys) == ["a", "m", "n"]


def test_re_remembering_a_key_does_not_keep_expired_keys_alive() -> None:
    delivery = Delivery()
    remember(delivery, "a", offset=1, now=0.0)
    remember(delivery, "b", offset=2, now=5.0)
    remember(delivery, "a", offset=3, now=8.0)
    remember(delivery, "c", offset=4, now=WINDOW + 6.0)  # horizon 6.0: "b" (5.0) has expired
    assert not delivery.is_duplicate("b")
