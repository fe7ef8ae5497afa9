"""Shared fixtures: one embedded broker per session, fresh topics and groups per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agentstream.streams.broker import BrokerProfile, EmbeddedBroker, detect_profile
from agentstream.streams.kafka import ensure_topics
from support import PARTITIONS, Cluster, get_json, poll  # noqa: F401  (re-exported for tests)


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """The session's broker: AGENTSTREAM_KAFKA_BOOTSTRAP if set (e.g. a real Kafka), else an embedded one."""
    external = os.environ.get("AGENTSTREAM_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap


@pytest.fixture(scope="session")
async def profile(broker: str) -> BrokerProfile:
    return await detect_profile(broker)


@pytest.fixture
async def cluster(broker: str, profile: BrokerProfile, tmp_path: Path) -> AsyncIterator[Cluster]:
    suffix = uuid.uuid4().hex[:10]
    c = Cluster(broker, f"t{suffix}.", f"app-{suffix}", tmp_path, profile)
    await ensure_topics(broker, c.names.specs(PARTITIONS, task_queues=("restack",)))
    yield c
    for process in c.processes:
        process.kill()
