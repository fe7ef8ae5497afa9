"""The embedded broker and the client profile chosen for it."""

from __future__ import annotations

import socket

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from agentstream.streams.broker import BrokerProfile, EmbeddedBroker, detect_profile
from agentstream.streams.kafka import producer

pytestmark = pytest.mark.integration


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_embedded_broker_starts_on_a_free_port_and_stops_by_pid() -> None:
    broker = EmbeddedBroker().start()
    try:
        assert port_open(broker.port)
        assert broker.pid is not None
    finally:
        broker.stop()
    assert not port_open(broker.port)
    assert broker.pid is None


async def test_profile_is_detected_from_the_cluster_id(broker: str) -> None:
    if not (await detect_profile(broker)).embedded:
        pytest.skip("the session runs against an external broker")
    assert await detect_profile(broker) == BrokerProfile.embedded_broker()
    assert await detect_profile(broker, forced=False) == BrokerProfile.real_kafka()


def test_real_kafka_gets_no_embedded_workarounds() -> None:
    real = BrokerProfile.real_kafka()
    assert "max_batch_size" not in real.producer_options()
    assert "producer_max_batch_size" not in real.faust_options()
    assert real.consumer_options()["session_timeout_ms"] == 10_000


async def test_profile_producer_makes_end_offsets_exact(broker: str, profile: BrokerProfile) -> None:
    """One record per batch: the broker's LATEST offset then counts every record (Faust recovery relies on it)."""
    import uuid

    from agentstream.streams.kafka import ensure_topics
    from agentstream.topics import TopicSpec

    topic = f"offsets-{uuid.uuid4().hex[:8]}"
    await ensure_topics(broker, [TopicSpec(topic, 1)])
    async with producer(broker, profile) as kafka:
        futures = [await kafka.send(topic, key=b"k", value=b"%d" % i) for i in range(25)]
        await kafka.flush()
        assert all(f.done() for f in futures)
    consumer = AIOKafkaConsumer(bootstrap_servers=broker)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        assert (await consumer.end_offsets([tp]))[tp] == 25
    finally:
        await consumer.stop()
