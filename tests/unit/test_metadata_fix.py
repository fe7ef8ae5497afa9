"""The processor's consumer asks again for subscribed topics its metadata lacks (metadata_fix.py).

On a three-broker Apache Kafka cluster the first metadata answer after Faust created
the changelog came from a broker that did not know it yet; aiokafka would have asked
again only after 5 minutes, and every record write failed until then. Here the test
plays the brokers: a real aiokafka client (never connected) whose metadata requests
are answered from a script.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.metadata import MetadataResponse_v0
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from agentstream.streams.processor import metadata_fix

BROKERS = [(1, "127.0.0.1", 9)]
UNKNOWN_TOPIC = 3


def answer(topic: str, exists: bool) -> MetadataResponse_v0:
    if exists:
        return MetadataResponse_v0(brokers=BROKERS, topics=[(0, topic, [(0, 0, 1, [1], [1]), (0, 1, 1, [1], [1])])])
    return MetadataResponse_v0(brokers=BROKERS, topics=[(UNKNOWN_TOPIC, topic, [])])


class ScriptedBrokers:
    """Answers every metadata request the client forces: the topic is unknown until `create`."""

    def __init__(self, client: AIOKafkaClient, topic: str) -> None:
        self.client, self.topic = client, topic
        self.exists = False
        self.asked: list[float] = []

    def force_metadata_update(self) -> None:
        self.asked.append(time.monotonic())
        self.client.cluster.update_metadata(answer(self.topic, self.exists))


async def test_a_subscribed_topic_missing_from_the_metadata_is_asked_for_until_it_shows_then_no_more() -> None:
    client = AIOKafkaClient(bootstrap_servers="127.0.0.1:9")
    brokers = ScriptedBrokers(client, "agents-changelog")
    client.force_metadata_update = brokers.force_metadata_update  # type: ignore[method-assign]
    client._topics = {"agents-changelog"}  # subscribed
    metadata_fix.watch_missing_topics(client, first_s=0.02, max_s=0.08)

    client.cluster.update_metadata(answer("agents-changelog", exists=False))  # a broker that lags behind
    deadline = time.monotonic() + 5
    while len(brokers.asked) < 4:
        assert time.monotonic() < deadline, f"asked again {len(brokers.asked)} times in 5 s"
        await asyncio.sleep(0.01)
    gaps = [b - a for a, b in zip(brokers.asked, brokers.asked[1:])]
    assert gaps[-1] >= gaps[0] and max(gaps) < 1.0, gaps  # growing, capped

    brokers.exists = True
    while client.cluster.partitions_for_topic("agents-changelog") != {0, 1}:
        assert time.monotonic() < deadline, "the topic never reached the client's metadata"
        await asyncio.sleep(0.01)
    asked = len(brokers.asked)
    await asyncio.sleep(0.3)
    assert len(brokers.asked) == asked, "asked again although nothing is missing"


async def test_a_client_without_subscriptions_is_left_alone() -> None:
    client = AIOKafkaClient(bootstrap_servers="127.0.0.1:9")
    brokers = ScriptedBrokers(client, "other")
    client.force_metadata_update = brokers.force_metadata_update  # type: ignore[method-assign]
    metadata_fix.watch_missing_topics(client, first_s=0.01)
    client.cluster.update_metadata(answer("other", exists=False))
    await asyncio.sleep(0.1)
    assert brokers.asked == []


async def test_install_wraps_the_consumer_factory_of_faust_once(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []

    class Consumer:
        def __init__(self) -> None:
            self._client = AIOKafkaClient(bootstrap_servers="127.0.0.1:9")
            made.append(self)

    monkeypatch.setattr(AIOKafkaConsumerThread, "_create_worker_consumer", lambda thread, transport: Consumer())
    monkeypatch.setattr(AIOKafkaConsumerThread, metadata_fix._MARK, False, raising=False)
    metadata_fix.install()
    metadata_fix.install()
    consumer = AIOKafkaConsumerThread._create_worker_consumer(None, None)  # type: ignore[arg-type]
    assert made == [consumer]
    assert len(consumer._client.cluster._listeners) == 1
