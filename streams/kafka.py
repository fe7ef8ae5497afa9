"""Thin aiokafka helpers: reach the broker, create topics, check co-partitioning."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError

from agentstream.topics import TopicNames, TopicSpec

from .broker.profile import BrokerProfile
from .exceptions import BrokerUnavailableError, TopicsNotCopartitionedError
from .security import KafkaSecurity, explain_failure

TOPIC_ALREADY_EXISTS = 36


def unreachable(bootstrap: str, exc: BaseException) -> BrokerUnavailableError:
    return BrokerUnavailableError(
        f"cannot reach Kafka at {bootstrap} ({exc}). Start a development broker with "
        "`agentstream dev`, or point AGENTSTREAM_KAFKA_BOOTSTRAP at a running broker."
    )


async def connection_failed(bootstrap: str, security: KafkaSecurity | None, exc: BaseException) -> BrokerUnavailableError:
    """The error for a client that could not start: why, naming the setting, when security is the cause."""
    reason = await explain_failure(bootstrap, security or {})
    return BrokerUnavailableError(reason) if reason is not None else unreachable(bootstrap, exc)


@contextlib.asynccontextmanager
async def admin_client(bootstrap: str, security: KafkaSecurity | None = None) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client; `security`: `security.kafka_options(settings)`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **(security or {}))
    try:
        await admin.start()
    except (KafkaConnectionError, KafkaError, OSError) as exc:
        await admin.close()
        raise await connection_failed(bootstrap, security, exc) from exc
    try:
        yield admin
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def producer(
    bootstrap: str, profile: BrokerProfile, security: KafkaSecurity | None = None
) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer with the profile's settings; stopped (and flushed) on exit."""
    options: dict[str, Any] = {**profile.producer_options(), **(security or {})}
    kafka_producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **options)
    try:
        await kafka_producer.start()
    except (KafkaConnectionError, KafkaError, OSError) as exc:
        await kafka_producer.stop()
        raise await connection_failed(bootstrap, security, exc) from exc
    try:
        yield kafka_producer
    finally:
        await kafka_producer.stop()


async def describe_cluster_id(bootstrap: str, security: KafkaSecurity | None = None) -> str:
    async with admin_client(bootstrap, security) as admin:
        cluster = await admin.describe_cluster()
    return str(cluster.get("cluster_id") or "")


async def partitions_now(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    """The partitions of `topic` as the cluster reports them now; [] when it does not exist.

    `consumer.topics()` fetches the cluster's metadata but does not keep it, and what a
    consumer keeps covers only the topics it tracks (Apache Kafka answers for those
    alone), so a consumer that assigns itself partitions must ask like this first.
    """
    cluster = await consumer._client.fetch_all_metadata()
    return sorted(cluster.partitions_for_topic(topic) or [])


async def partition_counts(
    bootstrap: str, topics: Iterable[str], security: KafkaSecurity | None = None
) -> dict[str, int]:
    """Partition count of each existing topic among `topics` (missing ones are left out)."""
    wanted = list(topics)
    async with admin_client(bootstrap, security) as admin:
        existing = set(await admin.list_topics())
        present = [t for t in wanted if t in existing]
        if not present:
            return {}
        described = await admin.describe_topics(present)
    return {d["topic"]: len(d["partitions"]) for d in described if d.get("error_code", 0) == 0}


async def ensure_topics(
    bootstrap: str, specs: Iterable[TopicSpec], security: KafkaSecurity | None = None
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created. Idempotent."""
    specs = list(specs)
    async with admin_client(bootstrap, security) as admin:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.configs()) for s in missing]
        )
    created = []
    for name, code, message in _topic_errors(response):
        if code == 0:
            created.append(name)
        elif code != TOPIC_ALREADY_EXISTS:  # lost a race with another creator: fine
            raise BrokerUnavailableError(f"could not create topic {name}: error {code} {message}")
    return created


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    errors = getattr(response, "topic_errors", [])
    return [(e[0], e[1], e[2] if len(e) > 2 else None) for e in errors]


async def check_copartitioned(
    bootstrap: str, names: TopicNames, security: KafkaSecurity | None = None, changelog: str | None = None
) -> int:
    """Return the shared partition count of agent-events and step-results, or explain why not.

    With `changelog` (the processors' table changelog, when it exists) the count must also
    be the one the agents were stored with: see `partitions_changed`.
    """
    counts = await partition_counts(
        bootstrap, [names.agent_events, names.step_results, *([changelog] if changelog else [])], security)
    missing = [t for t in (names.agent_events, names.step_results) if t not in counts]
    if missing:
        raise TopicsNotCopartitionedError(
            f"topic(s) {', '.join(missing)} do not exist on {bootstrap}; create them with "
            "`agentstream topics create` (with the same AGENTSTREAM_TOPIC_PREFIX)"
        )
    events, results = counts[names.agent_events], counts[names.step_results]
    if events != results:
        raise TopicsNotCopartitionedError(
            f"{names.agent_events} has {events} partitions but {names.step_results} has {results}; "
            "they must be equal so every input of an agent reaches the processor that owns it. "
            "Recreate the smaller topic with the same count (or add partitions to it) before starting processors."
        )
    if changelog and changelog in counts and counts[changelog] != events:
        raise TopicsNotCopartitionedError(partitions_changed(names.agent_events, events, changelog, counts[changelog]))
    return events


def partitions_changed(inputs: str, count: int, changelog: str, stored: int) -> str:
    """Why a processor cannot run once the input topics' partition count changed, and what to do."""
    return (
        f"{inputs} now has {count} partitions, but the agents were stored with {stored} (the changelog "
        f"{changelog} has {stored}): partitions were added to the input topics. An agent lives in the partition "
        "its ID hashes to, so most agents' inputs now reach a partition that holds no record of them; Kafka can "
        "neither move the records nor remove partitions. Processors refuse to run rather than treat those "
        "inputs as meant for unknown agents. Keep the inputs at the changelog's count: put new topics with that "
        "count in place (another AGENTSTREAM_TOPIC_PREFIX) for new work, or start a new app "
        "(another AGENTSTREAM_APP_ID) with the larger count and schedule its agents afresh."
    )
