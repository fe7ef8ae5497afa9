"""Faults of the broker itself (issue 9 item 4), on Apache Kafka clusters the tests start themselves.

Each test starts its own KRaft cluster in a tmp folder (whatever AGENTSTREAM_TEST_BROKER's
session broker is), runs the chaos harness's workload calm for the reference, then again
through `agentstream processor` / `agentstream worker` subprocesses while the cluster is
hurt or the processors are scaled, and compares every agent with the calm run as the
chaos verdict does: same status, result, fields, applied events and nothing in flight,
nothing applied twice, no event lost. The processors and the worker are never restarted:
they must ride out the fault. What was in flight at each kill is printed (and is in every
assertion message).

"Partitions added" is not tested: agent-events and step-results are keyed by agent ID and
the processors' table by the input's partition, so adding partitions to a running
application's topics moves agents away from their records (as in Kafka Streams). It is
not refused either, yet: tried by hand (4 -> 8 partitions under a running processor),
the inputs whose key now hashes to a new partition waited there unread, with no log
line, no dead letter and no change of /ready. The processors are scaled instead, which
the issue allows.

They run in the Apache Kafka pass only (AGENTSTREAM_TEST_BROKER=apache): the embedded
pass starts no JVM.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from broker_faults import (
    PARTITIONS,
    InFlight,
    Phases,
    Settled,
    Spec,
    Stack,
    all_ids,
    apache_cluster,
    apache_or_skip,
    calm_reference,
    coordinator,
    detect_profile,
    differences,
    leaders,
    replication,
    report,
    wait_in_sync,
    workload,
)
from support import poll

pytestmark = [pytest.mark.integration, pytest.mark.apache]

SEED = 94  # one workload for every test (its calm run is made once): a failure reproduces


def the_workload() -> list[Spec]:
    """Two waves of four ChaosAgents (21 agents with their children): steps, timers, events, children."""
    return workload(SEED, waves=2, per_wave=4)


@pytest.fixture(autouse=True)
def _apache_only() -> None:
    apache_or_skip()


def first_half(specs: list[Spec]) -> list[tuple[Spec, list[tuple[str, int]]]]:
    return [(s, list(s.events[: len(s.events) // 2])) for s in specs]


def second_half(specs: list[Spec]) -> list[tuple[Spec, list[tuple[str, int]]]]:
    return [(s, list(s.events[len(s.events) // 2:])) for s in specs]


def verdict(specs: list[Spec], calm: Settled, faulted: Settled, kills: list[InFlight], seconds: dict[str, float],
            exited: dict[str, int], dead_letters: int) -> None:
    shown = report(kills, seconds)
    print(shown)
    assert dead_letters == 0, f"{dead_letters} records were dead-lettered\n{shown}"
    for kill in kills:
        assert kill.steps_running > 0 and kill.timers_pending > 0, f"a kill interrupted no step or timer:\n{shown}"
    assert not exited, f"components exited (none may need a restart): {exited}\n{shown}"
    found = differences(specs, calm, faulted)
    assert not found, f"{len(all_ids(specs))} agents; {found}\n{shown}"


@pytest.mark.timeout(300)
async def test_sigkill_of_the_single_broker_mid_stream_then_restart_leaves_every_agent_as_in_the_calm_run(
    tmp_path: Path,
) -> None:
    specs = the_workload()
    seconds = Phases()
    kills: list[InFlight] = []
    with apache_cluster(tmp_path / "kafka", nodes=1) as cluster:
        seconds.done("cluster start")
        profile = await detect_profile(cluster.bootstrap)
        calm = await calm_reference(cluster.bootstrap, profile, tmp_path / "calm", specs)
        seconds.done("calm run")
        stack = await Stack(cluster.bootstrap, profile, tmp_path / "faults").start(processors=1)
        try:
            async with stack.client() as client:
                await stack.schedule(client, specs)
                await stack.send(client, first_half(specs))
                kills.append(await stack.at_kill("the SIGKILL of the broker"))
                node = cluster.nodes[0]
                down = time.monotonic()
                node.kill()
                await asyncio.to_thread(node.start)  # the same log dir
                seconds.done("broker down", since=down)
                await stack.ready()  # on their own: nothing was restarted
                await stack.send(client, second_half(specs))
            faulted = await stack.settle(specs)
            seconds.done("faulted run")
            exited, dead_letters = stack.exited(), await stack.dead_letters()
        finally:
            stack.kill_all()
    verdict(specs, calm, faulted, kills, seconds, exited, dead_letters)


@pytest.mark.timeout(420)
async def test_three_brokers_lose_one_then_another_after_it_returned_and_every_agent_ends_as_in_the_calm_run(
    tmp_path: Path,
) -> None:
    specs = the_workload()
    waves = [[s for s in specs if s.wave == w] for w in (0, 1)]
    seconds = Phases()
    kills: list[InFlight] = []
    with apache_cluster(tmp_path / "kafka", nodes=3) as cluster:
        seconds.done("cluster start")
        bootstrap = cluster.bootstrap
        profile = await detect_profile(bootstrap)
        calm = await calm_reference(bootstrap, profile, tmp_path / "calm", specs)
        seconds.done("calm run")
        stack = await Stack(bootstrap, profile, tmp_path / "faults", replication=3, min_insync=2).start(processors=1)
        try:
            assert stack.space is not None
            names = stack.space.names
            topics = [names.agent_events, names.step_results, names.step_commands("restack"), names.agent_updates,
                      f"{stack.space.app_id}-agents-changelog"]
            assert await replication(bootstrap, topics) == {t: (3, "2") for t in topics}
            async with stack.client() as client:
                await stack.schedule(client, waves[0])
                await stack.send(client, first_half(waves[0]))
                first = await coordinator(bootstrap, stack.space.app_id)
                kills.append(await stack.at_kill(f"the SIGKILL of broker {first} (the processors' group coordinator)"))
                down = time.monotonic()
                cluster.nodes[first - 1].kill()
                await stack.send(client, second_half(waves[0]))  # while it is down
                await asyncio.to_thread(cluster.nodes[first - 1].start)
                await wait_in_sync(bootstrap, first)
                seconds.done(f"broker {first} down until back in sync", since=down)
                await stack.schedule(client, waves[1])
                await stack.send(client, first_half(waves[1]))
                led = Counter(n for n in (await leaders(bootstrap, names.agent_events)).values() if n != first)
                second = led.most_common(1)[0][0] if led else next(n.spec.node_id for n in cluster.nodes
                                                                    if n.spec.node_id != first)
                kills.append(await stack.at_kill(f"the SIGKILL of broker {second} (after broker {first} was back "
                                                 "in sync)"))
                cluster.nodes[second - 1].kill()  # stays down: two of three brokers carry on
                await stack.send(client, second_half(waves[1]))
            faulted = await stack.settle(specs)
            seconds.done("faulted run")
            exited, dead_letters = stack.exited(), await stack.dead_letters()
        finally:
            stack.kill_all()
    verdict(specs, calm, faulted, kills, seconds, exited, dead_letters)


def spread(owned: dict[str, int]) -> bool:
    """Every partition owned, by more than one processor."""
    return sum(owned.values()) == PARTITIONS and sum(1 for n in owned.values() if n) >= 2


@pytest.mark.timeout(300)
async def test_processors_scaled_from_one_to_three_and_back_during_a_workload_leave_every_agent_as_in_the_calm_run(
    tmp_path: Path,
) -> None:
    specs = the_workload()
    waves = [[s for s in specs if s.wave == w] for w in (0, 1)]
    seconds = Phases()
    moments: list[InFlight] = []
    with apache_cluster(tmp_path / "kafka", nodes=1) as cluster:
        seconds.done("cluster start")
        profile = await detect_profile(cluster.bootstrap)
        calm = await calm_reference(cluster.bootstrap, profile, tmp_path / "calm", specs)
        seconds.done("calm run")
        stack = await Stack(cluster.bootstrap, profile, tmp_path / "scaled").start(processors=1)
        try:
            async with stack.client() as client:
                await stack.schedule(client, waves[0])
                await stack.send(client, first_half(waves[0]))
                moments.append(await stack.at_kill("the scale-up from 1 to 3 processors"))
                added = [stack.add_processor(), stack.add_processor()]
                await stack.send(client, second_half(waves[0]))
                await stack.ready()
                # Faust's assignor lets each member keep up to ceil(4 / 3) = 2 partitions while it
                # keeps standby replicas: when the two new processors join in two rebalances, the
                # last may hold only standbys (2/2/0; CI saw it once). What the scale-up must do is
                # move partitions off the first processor, all of them owned.
                await poll(lambda: spread(stack.owned()), timeout=60, what="the partitions spread over the processors")
                await stack.schedule(client, waves[1])
                await stack.send(client, first_half(waves[1]))
                moments.append(await stack.at_kill("the scale-down from 3 to 1 processor"))
                for process in added:
                    stack.stop_processor(process)
                await stack.send(client, second_half(waves[1]))
                await stack.ready()
                await poll(lambda: list(stack.owned().values()) == [PARTITIONS], timeout=60,
                           what="the one processor left owns every partition")
            faulted = await stack.settle(specs)
            seconds.done("scaled run")
            exited, dead_letters = stack.exited(), await stack.dead_letters()
        finally:
            stack.kill_all()
    verdict(specs, calm, faulted, moments, seconds, exited, dead_letters)
