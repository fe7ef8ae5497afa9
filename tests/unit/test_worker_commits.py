"""A worker's commits after finished steps: one in flight at a time, the partitions asked for
meanwhile committed together by the next one (streams/worker/runner.py, `_commit_soon`).

aiokafka commits one at a time; a commit awaited per finished step bound a worker on Apache
Kafka to one commit round trip per step whatever its concurrency.
"""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from agentstream.streams.broker.profile import BrokerProfile
from agentstream.streams.settings import Settings
from agentstream.streams.worker.metrics import WorkerMetrics
from agentstream.streams.worker.runner import StepWorker, _Partition

P0, P1 = TopicPartition("steps", 0), TopicPartition("steps", 1)

class SlowCommits:
    """A consumer whose commits wait until the test lets each one finish."""

    def __init__(self) -> None:
        self.calls: list[dict[TopicPartition, int]] = []
        self.release = asyncio.Event()

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.calls.append(dict(offsets))
        await self.release.wait()

async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)

async def test_steps_finishing_during_a_commit_are_committed_together_by_the_next_one() -> None:
    worker = StepWorker(Settings(), BrokerProfile.embedded_broker(), WorkerMetrics.create(CollectorRegistry()),
                        functions={})
    consumer = SlowCommits()
    worker._consumer = consumer  # type: ignore[assignment]
    worker._partitions = {P0: _Partition(fetched_to=5), P1: _Partition()}

    worker._commit_soon(P0)
    await settle()
    assert consumer.calls == [{P0: 5}]  # at once: no commit was in flight

    # Two more steps finish while that commit is still on its way.
    worker._partitions[P0].fetched_to, worker._partitions[P1].fetched_to = 8, 3
    worker._commit_soon(P1)
    worker._commit_soon(P0)
    await settle()
    assert consumer.calls == [{P0: 5}]  # they wait for the one in flight

    consumer.release.set()
    assert worker._committer is not None
    await asyncio.wait_for(worker._committer, 1)
    assert consumer.calls == [{P0: 5}, {P0: 8, P1: 3}]  # one commit for both
    assert (worker._partitions[P0].committed, worker._partitions[P1].committed) == (8, 3)
    worker._executor.shutdown(wait=False)
