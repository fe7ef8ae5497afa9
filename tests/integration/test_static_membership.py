"""`AGENTSTREAM_INSTANCE_ID`: a restarted processor gets its partitions back without a rebalance.

With Kafka's static membership (group.instance.id, Apache Kafka 2.3+) the coordinator hands
a member that rejoins under a known instance ID the partitions it had, and the other
processors carry on undisturbed; without it the restart is a new member, and every
processor stops for a rebalance. Counted by each processor's completed rebalances
(`agentstream_faust_rebalance_done_latency_count`). The embedded broker ignores the
setting, so this runs on Apache Kafka only.
"""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentstream.streams.broker.embedded import free_port
from agentstream.streams.devstack import ManagedProcess

from support import PARTITIONS, Cluster, poll
from test_statedir import assigned_partitions, notes_of, run_until_agents_hold

pytestmark = [pytest.mark.integration, pytest.mark.apache]

REBALANCES = "agentstream_faust_rebalance_done_latency_count"


def rebalances_done(process: ManagedProcess) -> float:
    with urllib.request.urlopen(process.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == REBALANCES)


async def test_a_processor_restarted_under_its_instance_id_takes_its_partitions_back_without_a_rebalance(
    cluster: Cluster,
) -> None:
    if cluster.profile.embedded:
        pytest.skip("the embedded broker has no static membership")
    data_dir = cluster.tmp / "static-state"
    static = {"AGENTSTREAM_INSTANCE_ID": "processor-static"}
    port = free_port()  # the address Faust's assignment names: it must stay the same across restarts
    other = cluster.processor("other").start()
    other.wait_ready()
    first = cluster.processor("static", data_dir=data_dir, env=static, http_port=port).start()
    first.wait_ready()
    await poll(lambda: assigned_partitions(first) > 0 and assigned_partitions(other) > 0
               and assigned_partitions(first) + assigned_partitions(other) == PARTITIONS,
               timeout=90, what="both processors own partitions")
    owned = assigned_partitions(first)
    agents = [f"static-{i}" for i in range(8)]
    await run_until_agents_hold(cluster, other, agents, [1], [1])
    settled = rebalances_done(other)

    first.kill()
    again = cluster.processor("static-again", data_dir=data_dir, env=static, http_port=port).start()
    again.wait_ready(90)
    await poll(lambda: assigned_partitions(again) == owned, timeout=30, what="the same partitions back")
    await run_until_agents_hold(cluster, other, agents, [2], [1, 2])  # every partition serves again
    assert all(notes_of(again.url, a) == [1, 2] for a in agents)
    assert rebalances_done(other) == settled, "the other processor never stopped for a rebalance"

    # Back under another address: stopped with what to do (Faust's routing would name the old one).
    again.kill()
    moved = cluster.processor("static-moved", data_dir=data_dir, env=static).start()
    assert moved.process is not None
    exit_code = await asyncio.to_thread(moved.process.wait, 90)
    assert exit_code != 0
    assert "rejoined its consumer group as instance 'processor-static'" in moved.log_path.read_text()

    # The control: a restart as a new member costs the other processor a rebalance.
    plain = cluster.processor("plain-again", data_dir=data_dir).start()
    plain.wait_ready(90)
    await poll(lambda: rebalances_done(other) > settled, timeout=90, what="a rebalance of the other processor")
