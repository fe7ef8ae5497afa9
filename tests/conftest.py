"""Shared fixtures: one embedded broker per session, fresh topics and groups per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agentstream.streams.broker import BrokerProfile, EmbeddedBroker, detect_profile
from agentstream.agents.testing import ScriptedLLM
from agentstream.streams.broker.apache import ApacheKafkaCluster
from agentstream.streams.kafka import ensure_topics
from support import PARTITIONS, Cluster, get_json, poll  # noqa: F401  (re-exported for tests)


BROKER_SETTING = "AGENTSTREAM_TEST_BROKER"  # embedded (default) or apache


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Which tests a pass runs: the embedded pass runs everything but what starts Apache Kafka itself
    (marked `apache`); the Apache pass runs what touches the session's broker, and the `apache` tests.

    A test that never touches the session's broker (the engine, the CLI's `dev` with its own
    embedded broker, error messages) does the same on both passes, so it runs once.
    """
    kind = os.environ.get(BROKER_SETTING, "embedded")
    if kind == "apache":
        drop = [item for item in items if "broker" not in item.fixturenames and not item.get_closest_marker("apache")]
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = [item for item in items if item not in set(drop)]
        return
    skip = pytest.mark.skip(reason=f"starts Apache Kafka: runs in the Apache Kafka pass ({BROKER_SETTING}=apache)")
    for item in items:
        if item.get_closest_marker("apache"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's broker: AGENTSTREAM_KAFKA_BOOTSTRAP if set, else the one AGENTSTREAM_TEST_BROKER names."""
    external = os.environ.get("AGENTSTREAM_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    kind = os.environ.get(BROKER_SETTING, "embedded")
    if kind == "apache":
        with ApacheKafkaCluster(tmp_path_factory.mktemp("apache-kafka")) as cluster:
            yield cluster.bootstrap
        return
    if kind != "embedded":
        raise pytest.UsageError(f"{BROKER_SETTING}={kind!r}: use 'embedded' (the default) or 'apache'")
    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap


@pytest.fixture(scope="session")
async def profile(broker: str) -> BrokerProfile:
    return await detect_profile(broker)


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    """The model of LLM tests: a scripted OpenAI-compatible server in a thread of this process (each test adds its script)."""
    with ScriptedLLM() as server:
        yield server


@pytest.fixture
async def cluster(broker: str, profile: BrokerProfile, tmp_path: Path) -> AsyncIterator[Cluster]:
    suffix = uuid.uuid4().hex[:10]
    c = Cluster(broker, f"t{suffix}.", f"app-{suffix}", tmp_path, profile)
    await ensure_topics(broker, c.names.specs(PARTITIONS, task_queues=("restack",)))
    yield c
    for process in c.processes:
        process.kill()
