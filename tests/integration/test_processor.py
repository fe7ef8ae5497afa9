"""The processor on the embedded broker: ordering, crashes, dead letters, routing, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from pathlib import Path

import pytest

from agentstream.agents import AgentClient
from agentstream.streams.settings import Settings
from agentstream.topics import AgentStatus

from support import Cluster, get_json, metric, poll

pytestmark = pytest.mark.integration

README = Path(__file__).parents[2] / "README.md"


def client_for(cluster: Cluster, api_url: str) -> AgentClient:
    return AgentClient(
        Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix, api_url=api_url)
    )


def state(api_url: str, agent_id: str) -> dict | None:
    status, body = get_json(f"{api_url}/agents/{agent_id}")
    return body if status == 200 else None


def notes_of(api_url: str, agent_id: str) -> list[int] | None:
    body = state(api_url, agent_id)
    return body["fields"]["notes"] if body else None


def all_notes(api_url: str, agent_ids: list[str]) -> dict[str, list[int] | None]:
    return {agent_id: notes_of(api_url, agent_id) for agent_id in agent_ids}


async def schedule_and_note(cluster: Cluster, agent_ids: list[str], notes_per_agent: int, api_url: str) -> None:
    """Schedule every agent, then send notes 0..n-1 to each, interleaved across agents."""
    async with client_for(cluster, api_url) as client:
        for agent_id in agent_ids:
            await client.schedule_agent("Recorder", agent_id)
        for n in range(notes_per_agent):
            for agent_id in agent_ids:
                await client.send_agent_event(agent_id, "note", {"n": n})


async def test_interleaved_events_for_50_agents_land_in_order_in_their_own_records(cluster: Cluster) -> None:
    processor = cluster.processor().start()
    processor.wait_ready()
    agents = [f"agent-{i}" for i in range(50)]
    await schedule_and_note(cluster, agents, 20, processor.url)

    expected = {agent_id: list(range(20)) for agent_id in agents}
    await poll(lambda: all_notes(processor.url, agents) == expected, what="every agent holds its 20 notes")
    for agent_id in agents:
        record = state(processor.url, agent_id)
        assert record is not None
        assert record["agent_id"] == agent_id
        assert [e["payload"]["n"] for e in record["events"]] == list(range(20))
        assert record["inputs_applied"] == 21  # the schedule and 20 notes


async def test_sigkill_mid_stream_loses_nothing_and_applies_nothing_twice(cluster: Cluster) -> None:
    data_dir = cluster.tmp / "state"
    processor = cluster.processor(data_dir=data_dir).start()
    processor.wait_ready()
    agents = [f"crash-{i}" for i in range(20)]
    rounds = 60
    sent_rounds = 0

    async def produce() -> None:
        nonlocal sent_rounds
        async with client_for(cluster, processor.url) as client:
            for agent_id in agents:
                await client.schedule_agent("Recorder", agent_id)
            for n in range(rounds):
                for agent_id in agents:
                    await client.send_agent_event(agent_id, "note", {"n": n})
                sent_rounds += 1
                await asyncio.sleep(0.05)  # pacing the stream so the kills land inside it

    producing = asyncio.create_task(produce())
    duplicates_seen = 0.0
    for kill, at_round in enumerate((15, 35), start=1):
        await poll(lambda: sent_rounds >= at_round, what=f"{at_round} rounds sent")
        await poll(lambda: metric(processor.url, "agentstream_inputs_total") > 0, what="processor consuming")
        assert not producing.done(), "the kill must happen while events are still arriving"
        processor.kill()
        if kill == 2:
            shutil.rmtree(data_dir)  # the second restart must restore purely from the changelog
        processor = cluster.processor(name=f"processor-restart{kill}", data_dir=data_dir).start()
        processor.wait_ready()
        await poll(lambda: metric(processor.url, "agentstream_inputs_total") > 0, what="restarted processor consuming")
        duplicates_seen += metric(processor.url, "agentstream_inputs_total", outcome="duplicate")
    await producing

    expected = {agent_id: list(range(rounds)) for agent_id in agents}
    await poll(lambda: all_notes(processor.url, agents) == expected, what="all notes applied exactly once")
    duplicates_seen += metric(processor.url, "agentstream_inputs_total", outcome="duplicate")
    print(f"processor SIGKILLed 2 times mid-stream; {duplicates_seen:.0f} redelivered inputs were recognised")


async def test_restarted_processor_restores_exactly_the_latest_state(cluster: Cluster) -> None:
    data_dir = cluster.tmp / "state"
    processor = cluster.processor(data_dir=data_dir).start()
    processor.wait_ready()
    agents = [f"restore-{i}" for i in range(30)]
    await schedule_and_note(cluster, agents, 15, processor.url)
    expected = {agent_id: list(range(15)) for agent_id in agents}
    await poll(lambda: all_notes(processor.url, agents) == expected, what="all notes applied")
    before = {agent_id: state(processor.url, agent_id) for agent_id in agents}

    processor.kill()
    shutil.rmtree(data_dir)
    restarted = cluster.processor(name="processor-restored", data_dir=data_dir).start()
    restarted.wait_ready()
    after = {agent_id: state(restarted.url, agent_id) for agent_id in agents}
    assert after == before


async def test_bad_records_go_to_dead_letters_and_later_events_still_apply(cluster: Cluster) -> None:
    processor = cluster.processor().start()
    processor.wait_ready()
    events = cluster.names.agent_events
    async with client_for(cluster, processor.url) as client:
        await client.schedule_agent("Recorder", "good")
        await cluster.produce(events, [(b"good", b"\xff\xfe not json"), (b"good", b'{"kind": "event"}')])
        await client.schedule_agent("NoSuchAgentType", "ghost")
        await client.send_agent_event("good", "no_such_event")
        await client.send_agent_event("good", "note", {"n": "not a number"})
        await client.send_agent_event("never-scheduled", "note", {"n": 1})
        await client.send_agent_event("good", "note", {"n": 7})

    await poll(lambda: notes_of(processor.url, "good") == [7], what="the valid event after the bad ones applied")
    letters = await cluster.read_topic(cluster.names.dead_letters, lambda v: len(v) >= 6)
    by_code = {letter["reason_code"]: letter for letter in letters}
    assert set(by_code) == {
        "not_json", "invalid_envelope", "unknown_agent_type", "unknown_event", "invalid_payload", "agent_not_found",
    }
    assert "NoSuchAgentType" in by_code["unknown_agent_type"]["reason"]
    assert "Recorder" in by_code["unknown_agent_type"]["reason"]  # says what is known
    assert by_code["not_json"]["value_encoding"] == "base64"  # undecodable bytes kept, not lost
    assert all(letter["source_topic"] == events for letter in letters)
    assert metric(processor.url, "agentstream_dead_letters_total") == 6


async def test_two_processors_split_partitions_and_either_answers_for_any_agent(cluster: Cluster) -> None:
    first = cluster.processor("processor-a").start()
    second = cluster.processor("processor-b").start()
    first.wait_ready()
    second.wait_ready()

    def assignment_split() -> bool:
        owned = [get_json(f"{p.url}/ready")[1]["assigned_partitions"] for p in (first, second)]
        return all(n > 0 for n in owned) and sum(owned) == 4

    await poll(assignment_split, what="both processors own partitions")
    agents = [f"routed-{i}" for i in range(16)]
    await schedule_and_note(cluster, agents, 3, first.url)
    expected = {agent_id: [0, 1, 2] for agent_id in agents}
    await poll(lambda: all_notes(first.url, agents) == expected, what="every agent visible from processor-a")
    assert all_notes(second.url, agents) == expected
    assert state(first.url, "routed-0") == state(second.url, "routed-0")
    status, body = get_json(f"{second.url}/agents/nobody")
    assert status == 404 and body["error"] == "agent_not_found"


async def test_status_changes_are_published_and_duplicates_are_dropped(cluster: Cluster) -> None:
    processor = cluster.processor().start()
    processor.wait_ready()
    async with client_for(cluster, processor.url) as client:
        run_id = await client.schedule_agent("Recorder", "lifecycle")
        await client.send_agent_event("lifecycle", "note", {"n": 1}, idempotency_key="once")
        await client.send_agent_event("lifecycle", "note", {"n": 1}, idempotency_key="once")
        await client.send_agent_event("lifecycle", "note", {"n": 2})
        await client.cancel_agent("lifecycle", "test over")

    updates = await cluster.read_topic(cluster.names.agent_updates, lambda v: len(v) >= 2)
    assert [(u["status"], u["run_id"]) for u in updates] == [
        (AgentStatus.RUNNING.value, run_id),
        (AgentStatus.CANCELLED.value, run_id),
    ]
    record = await poll(lambda: state(processor.url, "lifecycle"), what="record")
    assert record["status"] == "cancelled"
    assert record["fields"]["notes"] == [1, 2]
    assert metric(processor.url, "agentstream_inputs_total", outcome="duplicate") == 1


async def test_a_state_read_right_after_an_agent_update_shows_that_update(cluster: Cluster) -> None:
    """Outputs go out before the changelog acknowledges the record, and the state API reads
    what it acknowledged: a client that reads the agent at once after seeing its update must
    not find it older (publish.py `caught_up`). Each read follows the update as closely as a
    consumer that is already waiting for it allows, twenty times."""
    processor = cluster.processor().start()
    processor.wait_ready()
    async with client_for(cluster, processor.url) as client:
        for n in range(20):
            agent_id = f"seen-{n}"
            await client.schedule_agent("Recorder", agent_id)
            await client.send_agent_event(agent_id, "note", {"n": n})
            seen = None
            async with contextlib.aclosing(client.agent_updates(agent_id)) as updates:
                async for update in updates:  # its consumer is live once the first update arrives
                    if update.status == AgentStatus.RUNNING:
                        await client.cancel_agent(agent_id, "read after update")
                    elif update.status == AgentStatus.CANCELLED:
                        seen = state(processor.url, agent_id)  # at once: no poll
                        break
            assert seen is not None and seen["status"] == "cancelled" and seen["fields"]["notes"] == [n], seen


def documented_metrics() -> list[str]:
    """Metric names listed in the README's metrics table."""
    section = README.read_text().split("## Metrics", 1)[1]
    return re.findall(r"^\| `(agentstream_\w+)`", section, flags=re.M)


async def test_metrics_endpoint_exposes_the_documented_metrics(cluster: Cluster) -> None:
    processor = cluster.processor().start()
    processor.wait_ready()
    await schedule_and_note(cluster, ["metered"], 1, processor.url)
    await poll(lambda: notes_of(processor.url, "metered") == [0], what="event applied")

    import urllib.request

    exposition = urllib.request.urlopen(f"{processor.url}/metrics", timeout=5).read().decode()
    names = documented_metrics()
    assert len(names) >= 8
    # the worker's own and its model-call metrics are exposed by workers (tests/integration/test_llm_metrics.py)
    processor_names = [n for n in names if not n.startswith(("agentstream_worker_", "agentstream_llm_"))]
    missing = [n for n in processor_names if f"\n{n}" not in exposition and f"# HELP {n} " not in exposition]
    assert not missing, f"documented but not exposed: {missing}"
    assert metric(processor.url, "agentstream_inputs_total", source="agent-events", outcome="applied") == 2
    assert metric(processor.url, "agentstream_processor_ready") == 1
    assert "agentstream_faust_messages_received_total" in exposition


async def test_schedules_redelivered_by_a_rebalance_are_duplicates_not_dead_letters(cluster: Cluster) -> None:
    """Issue finding 6: 60 agents scheduled while a second processor joins all exist, are readable,
    and no schedule is dead-lettered (a schedule seen again by the new owner is a duplicate)."""
    first = cluster.processor("processor-a").start()
    first.wait_ready()
    agents = [f"joined-{i}" for i in range(60)]
    async with client_for(cluster, first.url) as client:
        for index, agent_id in enumerate(agents):
            await client.schedule_agent("Recorder", agent_id)
            if index == 10:
                second = cluster.processor("processor-b").start()
    second.wait_ready()

    def everyone_readable() -> bool:
        return all(state(first.url, a) is not None and state(second.url, a) is not None for a in agents)

    await poll(everyone_readable, timeout=60, interval=0.5, what="all 60 agents readable from both processors")
    assert all(state(first.url, a)["status"] == AgentStatus.RUNNING.value for a in agents)  # type: ignore[index]
    dead = metric(first.url, "agentstream_dead_letters_total") + metric(second.url, "agentstream_dead_letters_total")
    assert dead == 0
