"""Helpers shared by the tests: a per-test slice of the broker, HTTP and polling helpers."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agentstream.streams.broker import BrokerProfile
from agentstream.streams.devstack import ManagedProcess, component
from agentstream.streams.kafka import admin_client
from agentstream.topics import TopicNames

APPS = Path(__file__).parent / "apps"
PARTITIONS = 4


@dataclass
class Cluster:
    """One test's private slice of the broker: its own topic prefix, consumer groups and processes."""

    bootstrap: str
    prefix: str
    app_id: str
    tmp: Path
    profile: BrokerProfile
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def names(self) -> TopicNames:
        return TopicNames(self.prefix)

    @property
    def env(self) -> dict[str, str]:
        return {
            "AGENTSTREAM_TOPIC_PREFIX": self.prefix,
            "AGENTSTREAM_APP_ID": self.app_id,
            "AGENTSTREAM_LOG_LEVEL": "INFO",
        }

    def processor(
        self, name: str = "processor", *, data_dir: Path | None = None, app: str = "recorder",
        env: dict[str, str] | None = None, http_port: int | None = None,
    ) -> ManagedProcess:
        state = {"AGENTSTREAM_DATA_DIR": str(data_dir or self.tmp / f"{name}-state")}
        process = component(
            "processor", self.bootstrap, app, log_dir=self.tmp, app_dir=APPS, env={**self.env, **state, **(env or {})},
            name=name, http_port=http_port,
        )
        self.processes.append(process)
        return process

    def worker(self, name: str = "worker", app: str = "recorder", env: dict[str, str] | None = None) -> ManagedProcess:
        process = component(
            "worker", self.bootstrap, app, log_dir=self.tmp, app_dir=APPS, env={**self.env, **(env or {})}, name=name
        )
        self.processes.append(process)
        return process

    async def produce(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, **self.profile.producer_options())
        await producer.start()
        try:
            for key, value in records:
                await producer.send(topic, key=key, value=value)
            await producer.flush()
        finally:
            await producer.stop()

    async def read_topic(
        self, topic: str, until: Callable[[list[Any]], bool], timeout: float = 60.0
    ) -> list[Any]:
        """Read `topic` from the start (JSON values) until `until(values)` holds or `timeout` passes."""
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        values: list[Any] = []
        deadline = time.monotonic() + timeout
        try:
            while not until(values):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{topic}: condition not met within {timeout}s; got {len(values)} records: {values[-3:]}")
                batches = await consumer.getmany(timeout_ms=200)
                values.extend(json.loads(r.value) for batch in batches.values() for r in batch)
        finally:
            await consumer.stop()
        return values


async def uncommitted(cluster: Cluster, topic: str) -> int:
    """Inputs of `topic` past the processors' committed offsets."""
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    async with admin_client(cluster.bootstrap) as admin:
        committed = await admin.list_consumer_group_offsets(cluster.app_id, partitions=partitions)
    return sum(end - max(committed[tp].offset if tp in committed else 0, 0) for tp, end in ends.items())


async def all_committed(cluster: Cluster, timeout: float, interval: float = 0.2) -> None:
    """Until no input of `agent-events` lies past the processors' committed offsets; fail after `timeout`."""
    left: list[int] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while (left := [*left, await uncommitted(cluster, cluster.names.agent_events)])[-1] > 0:
        assert asyncio.get_running_loop().time() < deadline, f"inputs still uncommitted, last checks: {left[-5:]}"
        await asyncio.sleep(interval)


def get_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """(status, JSON body or None); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None
    except (urllib.error.URLError, OSError):
        return 0, None


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """The blocking twin of `poll`, for tests that are not async."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


async def poll(check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2, what: str = "condition") -> Any:
    """Call `check` until it returns a truthy value; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def metric(api_url: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    text = urllib.request.urlopen(f"{api_url}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total
