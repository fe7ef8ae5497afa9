"""agent-stream and HTTP inputs on the embedded broker, through real processors.

Streams: events written with `StreamWriter` are read back with `AgentClient.stream`
and over SSE in two sessions (the second resumes from the first's cursor: exactly the
rest, nothing twice), with another agent's events on the same partition filtered out.
Inputs: schedules and events POSTed to a processor are applied (once per
Idempotency-Key), and what the engine would refuse is refused with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from yarl import URL

from agentstream.agents import AgentClient
from agentstream.streams.settings import Settings
from agentstream.streams.stream_in import partition_of
from agentstream.streams.stream_out import StreamWriter
from agentstream.topics import StreamEvent, StreamItem, run_id_for

from support import PARTITIONS, Cluster, get_json, poll

pytestmark = pytest.mark.integration

AGENT = "chat/1 ü"  # needs quoting in a URL path


def neighbour_of(agent_id: str) -> str:
    """Another agent ID whose events share `agent_id`'s partition (so filtering by key is tested)."""
    partitions = list(range(PARTITIONS))
    wanted = partition_of(agent_id.encode(), partitions)
    return next(f"other-{i}" for i in range(1000) if partition_of(f"other-{i}".encode(), partitions) == wanted)


@contextlib.asynccontextmanager
async def stream_writer(cluster: Cluster) -> AsyncIterator[StreamWriter]:
    producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, **cluster.profile.producer_options())
    await producer.start()
    try:
        yield StreamWriter(producer, cluster.names)
    finally:
        await producer.stop()


async def write_deltas(writer: StreamWriter, agent_id: str, texts: list[str], *, step: str = "1") -> None:
    for text in texts:
        await writer.emit(agent_id, f"run-of-{agent_id}", step, 1, "text_delta", text)
    await writer.flush()


def client_for(cluster: Cluster, api_url: str = "http://127.0.0.1:9") -> AgentClient:
    return AgentClient(Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix, api_url=api_url))


async def take(items: AsyncIterator[StreamItem], count: int, timeout: float = 20) -> list[StreamItem]:
    async def collect() -> list[StreamItem]:
        return [await anext(items) for _ in range(count)]

    return await asyncio.wait_for(collect(), timeout)


def texts(events: list[StreamEvent]) -> list[str]:
    return [str(event.data) for event in events]


# --- AgentClient.stream -------------------------------------------------------------------------------


async def test_a_client_resuming_from_its_cursor_gets_exactly_the_rest_and_no_other_agents_events(
    cluster: Cluster,
) -> None:
    other = neighbour_of(AGENT)
    mine = [f"t{i}" for i in range(10)]
    async with stream_writer(cluster) as writer:
        for i, text in enumerate(mine):
            await write_deltas(writer, AGENT, [text])
            await write_deltas(writer, other, [f"noise{i}"])

        async with client_for(cluster) as client:
            async with contextlib.aclosing(client.stream(AGENT)) as first_session:
                first = await take(first_session, 4)
            cursor = first[-1].cursor

            async with client_for(cluster) as again:  # a new client, as after a reconnect
                async with contextlib.aclosing(again.stream(AGENT, after=cursor)) as second_session:
                    caught_up = await take(second_session, 6)
                    await write_deltas(writer, AGENT, ["live0", "live1"])
                    await write_deltas(writer, other, ["noise-live"])
                    live = await take(second_session, 2)
                    with pytest.raises(TimeoutError):  # nothing more: not the neighbour's, not a repeat
                        await take(second_session, 1, timeout=1.5)

            rest = [item async for item in client.stream(AGENT, after=cursor, follow=False)]
            everything = [item async for item in client.stream(AGENT, follow=False)]
            neighbour = [item async for item in client.stream(other, follow=False)]

    assert texts([i.event for i in first]) == mine[:4]
    assert texts([i.event for i in caught_up + live]) == mine[4:] + ["live0", "live1"]
    assert [i.event.seq for i in first + caught_up + live] == list(range(12))
    assert {i.event.agent_id for i in first + caught_up + live} == {AGENT}
    assert [i.cursor for i in rest] == [i.cursor for i in caught_up + live]
    assert [i.cursor for i in everything] == [i.cursor for i in first + caught_up + live]
    assert texts([i.event for i in neighbour]) == [f"noise{i}" for i in range(10)] + ["noise-live"]


# --- SSE ------------------------------------------------------------------------------------------------


async def read_frames(response: aiohttp.ClientResponse, count: int | None, timeout: float = 20) -> list[dict[str, str]]:
    """`count` SSE frames (all until the response ends when None), heartbeat comments left out."""

    async def collect() -> list[dict[str, str]]:
        frames: list[dict[str, str]] = []
        fields: dict[str, str] = {}
        while count is None or len(frames) < count:
            line = (await response.content.readline()).decode()
            if not line:
                assert count is None, f"the stream ended after {len(frames)} frames"
                return frames
            line = line.rstrip("\n")
            if line == "":
                if fields:
                    frames.append(fields)
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
        return frames

    return await asyncio.wait_for(collect(), timeout)


def stream_url(base: str, agent_id: str, query: str = "") -> URL:
    return URL(f"{base}/agents/{quote(agent_id, safe='')}/stream{query}", encoded=True)


def frame_texts(frames: list[dict[str, str]]) -> list[str]:
    events = [StreamEvent.model_validate_json(frame["data"]) for frame in frames]
    assert all(frame["event"] == event.type for frame, event in zip(frames, events))
    assert {event.agent_id for event in events} <= {AGENT}
    return texts(events)


async def test_sse_resumes_after_last_event_id_follows_new_events_and_filters_other_agents(cluster: Cluster) -> None:
    processor = cluster.processor().start()
    other = neighbour_of(AGENT)
    async with stream_writer(cluster) as writer:
        for i in range(6):
            await write_deltas(writer, AGENT, [f"t{i}"])
            await write_deltas(writer, other, [f"noise{i}"])
        processor.wait_ready()

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            async with http.get(stream_url(processor.url, AGENT, "?follow=false")) as response:
                assert response.status == 200 and response.content_type == "text/event-stream"
                backlog = await read_frames(response, None)
            assert frame_texts(backlog) == [f"t{i}" for i in range(6)]

            cursor = backlog[2]["id"]
            headers = {"Last-Event-ID": cursor}
            # The header wins over ?after= (an EventSource reconnects to its first URL).
            async with http.get(stream_url(processor.url, AGENT, f"?after={backlog[0]['id']}"), headers=headers) as response:
                assert response.status == 200
                resumed = await read_frames(response, 3)
                await write_deltas(writer, AGENT, ["live0"])
                await write_deltas(writer, other, ["noise-live"])
                await write_deltas(writer, AGENT, ["live1"])
                live = await read_frames(response, 2)
            assert frame_texts(resumed) == ["t3", "t4", "t5"]
            assert frame_texts(live) == ["live0", "live1"]
            assert [f["id"] for f in resumed] == [f["id"] for f in backlog[3:]]

            async with http.get(stream_url(processor.url, AGENT, f"?after={cursor}&follow=false")) as response:
                assert frame_texts(await read_frames(response, None)) == ["t3", "t4", "t5", "live0", "live1"]

            async with http.get(stream_url(processor.url, AGENT), headers={"Last-Event-ID": "not-a-cursor"}) as response:
                assert response.status == 400 and (await response.json())["error"] == "invalid_cursor"


# --- events and schedules over HTTP -------------------------------------------------------------------------


async def post(http: aiohttp.ClientSession, url: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", **({"Idempotency-Key": key} if key else {})}
    data = b"" if body is None else json.dumps(body).encode()
    async with http.post(URL(url, encoded=True), data=data, headers=headers) as response:
        return response.status, await response.json()


async def test_events_and_schedules_posted_over_http_apply_once_per_key_and_are_refused_with_reasons(
    cluster: Cluster,
) -> None:
    first = cluster.processor("processor-a", app="talk").start()
    second = cluster.processor("processor-b", app="talk").start()
    first.wait_ready()
    second.wait_ready()

    def both_own_partitions() -> bool:
        owned = [get_json(f"{p.url}/ready")[1]["assigned_partitions"] for p in (first, second)]
        return all(n > 0 for n in owned) and sum(owned) == PARTITIONS

    await poll(both_own_partitions, what="both processors own partitions")
    # Agents on every partition, so each processor takes posts for agents the other owns.
    agents = [f"talk/{i}" for i in range(8)]
    assert len({partition_of(a.encode(), list(range(PARTITIONS))) for a in agents}) == PARTITIONS

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        def agent_url(processor_url: str, agent_id: str, tail: str = "") -> str:
            return f"{processor_url}/agents/{quote(agent_id, safe='')}{tail}"

        for agent_id in agents:
            status, body = await post(http, agent_url(first.url, agent_id), {"agent_type": "Recorder"}, key=f"s-{agent_id}")
            assert status == 202, body
            assert body["run_id"] == run_id_for(body["message_id"]) and body["agent_id"] == agent_id
            retried = await post(http, agent_url(second.url, agent_id), {"agent_type": "Recorder"}, key=f"s-{agent_id}")
            assert retried == (202, body), "a retried schedule answers the same IDs"

        def running() -> bool:
            return all((get_json(agent_url(first.url, a))[1] or {}).get("status") == "running" for a in agents)

        await poll(running, timeout=30, what="every agent running")

        for agent_id in agents:
            for url in (first.url, second.url):  # the same key through both processors
                status, body = await post(http, agent_url(url, agent_id, "/events/note"), {"n": 1}, key=f"n1-{agent_id}")
                assert status == 202 and body["agent_id"] == agent_id, body
            status, _ = await post(http, agent_url(second.url, agent_id, "/events/note"), {"n": 2})
            assert status == 202

        def notes() -> dict[str, Any]:
            return {a: (get_json(agent_url(second.url, a))[1] or {}).get("fields", {}).get("notes") for a in agents}

        await poll(lambda: notes() == {a: [1, 2] for a in agents}, timeout=30, what="each note applied once")

        target = agent_url(second.url, agents[0])
        status, body = await post(http, f"{target}/events/note", {"n": "many"})
        assert (status, body["error"]) == (400, "invalid_payload") and "n:" in body["detail"], body
        status, body = await post(http, f"{target}/events/nope")
        assert (status, body["error"]) == (400, "unknown_event") and "note" in body["detail"], body
        status, body = await post(http, agent_url(first.url, "nobody/here", "/events/note"), {"n": 1})
        assert (status, body["error"]) == (404, "agent_not_found"), body
        status, body = await post(http, target, {"agent_type": "Recorder"})
        assert (status, body["error"]) == (409, "already_running"), body
        status, body = await post(http, agent_url(first.url, "new-one"), {"agent_type": "Nope"})
        assert (status, body["error"]) == (400, "unknown_agent_type") and "Countdown" in body["detail"], body
        status, body = await post(http, agent_url(first.url, "new-one"), {"agent_type": "Countdown", "input": "x"})
        assert (status, body["error"]) == (400, "invalid_input") and "int" in body["detail"], body
        async with http.post(URL(f"{target}/events/note", encoded=True), data=b"{not json") as response:
            assert response.status == 400 and (await response.json())["error"] == "invalid_json"

        status, body = await post(http, agent_url(first.url, "new-one"), {"agent_type": "Countdown", "input": 3})
        assert status == 202, body
        await poll(lambda: (get_json(agent_url(second.url, "new-one"))[1] or {}).get("result") == 3,
                   timeout=30, what="the scheduled Countdown completed")

    assert notes() == {a: [1, 2] for a in agents}, "a refused post changed an agent"
