"""`AgentClient`: agent IDs in URLs, an unreachable API, and one producer under concurrency.

The HTTP tests run against small real servers on localhost (one that records what it
is asked, one that never answers, a port nobody listens on); the Kafka and processor
tests use the embedded broker.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web

import agentstream.agents._client as client_module
from agentstream.agents import AgentClient, AgentNotFoundError, ApiUnavailableError, TimeoutError
from agentstream.streams.kafka import producer as real_producer
from agentstream.streams.settings import Settings

from support import Cluster, get_json, poll

ODD_IDS = ["user/42", "a#1", "a b", "ü", "50%", "a?b=c", "../up", "x%2Fy", "..", "."]


@contextlib.asynccontextmanager
async def http_server(handler: Any) -> AsyncIterator[str]:
    """A real aiohttp server on a free localhost port that answers every GET with `handler`."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) but never answers a byte."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def closed_port_url() -> str:
    """The URL of a localhost port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


# --- agent IDs are quoted in every URL --------------------------------------------------------


async def test_get_agent_state_quotes_the_agent_id_as_one_path_segment() -> None:
    asked: list[str] = []

    async def record(request: web.Request) -> web.Response:
        asked.append(request.raw_path)
        return web.json_response({"agent_id": request.match_info["tail"], "status": "running"})

    async with http_server(record) as url, AgentClient(api_url=url) as client:
        for agent_id in ODD_IDS:
            await client.get_agent_state(agent_id)
    assert asked == [
        "/agents/user%2F42", "/agents/a%231", "/agents/a%20b", "/agents/%C3%BC",
        "/agents/50%25", "/agents/a%3Fb%3Dc", "/agents/..%2Fup", "/agents/x%252Fy", "/agents/%2E%2E", "/agents/%2E",
    ]


async def test_the_api_url_may_carry_a_path_prefix() -> None:
    asked: list[str] = []

    async def record(request: web.Request) -> web.Response:
        asked.append(request.raw_path)
        return web.json_response({"status": "running"})

    async with http_server(record) as url, AgentClient(api_url=f"{url}/behind/proxy/") as client:
        await client.get_agent_state("user/42")
    assert asked == ["/behind/proxy/agents/user%2F42"]


# --- a wrong API URL is a clear error, distinct from an agent that does not finish -----------


async def test_a_closed_api_port_raises_api_unavailable_naming_the_url_and_the_setting() -> None:
    url = closed_port_url()
    async with AgentClient(api_url=url) as client:
        with pytest.raises(ApiUnavailableError) as raised:
            await client.get_agent_state("someone")
    assert url in str(raised.value) and "AGENTSTREAM_API_URL" in str(raised.value)


async def test_an_api_that_never_answers_raises_api_unavailable_not_a_raw_timeout() -> None:
    with silent_server() as url:
        async with AgentClient(api_url=url, api_timeout=0.5) as client:
            with pytest.raises(ApiUnavailableError) as raised:
                await client.get_agent_state("someone")
    assert not isinstance(raised.value, builtins.TimeoutError), "a timeout of the API is not the agent's timeout"
    assert url in str(raised.value) and "AGENTSTREAM_API_URL" in str(raised.value)


async def test_get_agent_result_with_a_silent_api_raises_api_unavailable_before_its_own_timeout() -> None:
    with silent_server() as url:
        async with AgentClient(api_url=url, api_timeout=0.5) as client:
            with pytest.raises(ApiUnavailableError):
                await client.get_agent_result("someone", timeout=30)


async def test_get_agent_result_raises_agentstreams_timeout_when_the_agent_does_not_end() -> None:
    async def running(request: web.Request) -> web.Response:
        return web.json_response({"status": "running"})

    async with http_server(running) as url, AgentClient(api_url=url) as client:
        with pytest.raises(TimeoutError) as raised:
            await client.get_agent_result("slow", timeout=0.3)
    assert isinstance(raised.value, builtins.TimeoutError)  # `except TimeoutError` catches it either way
    assert "'slow'" in str(raised.value) and "running" in str(raised.value)


async def test_an_unknown_agent_is_not_found_not_unavailable() -> None:
    async def missing(request: web.Request) -> web.Response:
        return web.json_response({"error": "agent_not_found"}, status=404)

    async with http_server(missing) as url, AgentClient(api_url=url) as client:
        with pytest.raises(AgentNotFoundError):
            await client.get_agent_state("nobody")


async def test_a_404_from_something_other_than_a_processor_is_api_unavailable() -> None:
    async def elsewhere(request: web.Request) -> web.Response:
        return web.Response(status=404, text="404: Not Found")

    async with http_server(elsewhere) as url, AgentClient(api_url=url) as client:
        with pytest.raises(ApiUnavailableError) as raised:
            await client.get_agent_result("someone", timeout=30)
    assert url in str(raised.value) and "AGENTSTREAM_API_URL" in str(raised.value)


# --- one producer, however many first calls race ------------------------------------------------


def client_for(cluster: Cluster, api_url: str = "http://127.0.0.1:9") -> AgentClient:
    return AgentClient(Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix, api_url=api_url))


@pytest.mark.integration
async def test_60_concurrent_first_calls_start_one_producer_and_every_later_send_lands(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[object] = []

    def counting_producer(*args: Any, **kwargs: Any) -> Any:
        started.append(object())
        return real_producer(*args, **kwargs)

    monkeypatch.setattr(client_module, "kafka_producer", counting_producer)
    agents = [f"racer-{i}" for i in range(60)]
    async with client_for(cluster) as client:
        await asyncio.gather(*(client.schedule_agent("Recorder", agent_id) for agent_id in agents))
        assert len(started) == 1, f"{len(started)} producers started for one client"
        await asyncio.gather(*(client.send_agent_event(agent_id, "note", {"n": 1}) for agent_id in agents))
    assert len(started) == 1

    records = await cluster.read_topic(cluster.names.agent_events, lambda values: len(values) >= 120, timeout=30)
    assert sorted(r["agent_id"] for r in records if r["kind"] == "schedule") == sorted(agents)
    assert sorted(r["agent_id"] for r in records if r["kind"] == "event") == sorted(agents)


# --- odd agent IDs end to end through a processor ------------------------------------------------


@pytest.mark.integration
async def test_agents_with_reserved_characters_in_their_ids_are_found_by_every_agent_route(cluster: Cluster) -> None:
    # Two processors, so that some reads are forwarded to the partition's owner.
    first = cluster.processor("processor-a", app="shapes").start()
    second = cluster.processor("processor-b", app="shapes").start()
    first.wait_ready()
    second.wait_ready()

    def assignment_split() -> bool:
        owned = [get_json(f"{p.url}/ready")[1]["assigned_partitions"] for p in (first, second)]
        return all(n > 0 for n in owned) and sum(owned) == 4

    await poll(assignment_split, what="both processors own partitions")
    agents = ODD_IDS + [f"user/{i}" for i in range(8)]
    async with client_for(cluster, first.url) as client:
        runs = {agent_id: await client.schedule_agent("Waiter", agent_id) for agent_id in agents}
        stops = {agent_id: await client.send_agent_event(agent_id, "stop") for agent_id in agents}
        for agent_id in agents:
            assert await client.get_agent_result(agent_id, timeout=60) == "stopped", agent_id
            state = await client.get_agent_state(agent_id)
            assert (state["agent_id"], state["status"]) == (agent_id, "completed")
    async with client_for(cluster, second.url) as other:
        for agent_id in agents:
            assert (await other.get_agent_state(agent_id))["agent_id"] == agent_id
            assert (await other.get_agent_record(agent_id))["run_id"] == runs[agent_id]
            for input_id in (runs[agent_id], stops[agent_id]):
                assert (await other.input_outcome(agent_id, input_id, timeout=30)).outcome == "applied", input_id
        for read in (other.get_agent_state, other.get_agent_record):
            with pytest.raises(AgentNotFoundError):
                await read("user/nobody")
