"""`GET /agents/{id}` answers from a view computed once per stored version of the record."""

from __future__ import annotations

import json

import pytest

from agentstream.agents import agent, condition
from agentstream.streams.engine import AgentRecord
from agentstream.streams.processor.views import PublicViews

from turns import Turns


@agent.defn(name="Views.Counter")
class Counter:
    def __init__(self) -> None:
        self.count = 0

    @agent.event
    async def bump(self) -> None:
        self.count += 1

    @agent.run
    async def run(self) -> None:
        await condition(lambda: False)


async def test_a_view_is_parsed_once_per_stored_version(monkeypatch: pytest.MonkeyPatch) -> None:
    turns = Turns()
    first = (await turns.schedule("Views.Counter", "c")).stored
    second = (await turns.send("c", "bump")).stored
    assert first is not None and second is not None
    parses: list[bytes] = []
    original = AgentRecord.from_bytes
    monkeypatch.setattr(AgentRecord, "from_bytes", classmethod(lambda cls, raw: parses.append(raw) or original(raw)))
    views = PublicViews()

    for _ in range(3):
        assert json.loads(views.of(b"c", bytes(first)))["fields"]["count"] == 0  # a new bytes object each read
    assert len(parses) == 1
    assert json.loads(views.of(b"c", second))["fields"]["count"] == 1
    assert len(parses) == 2
    expected = original(second).public_view()
    assert json.loads(views.of(b"c", second)) == json.loads(json.dumps(expected))


async def test_the_cache_keeps_only_the_most_recently_read_agents(monkeypatch: pytest.MonkeyPatch) -> None:
    turns = Turns()
    stored = {}
    for agent_id in ("a", "b", "c"):
        outcome = await turns.schedule("Views.Counter", agent_id)
        assert outcome.stored is not None
        stored[agent_id] = outcome.stored
    parses: list[bytes] = []
    original = AgentRecord.from_bytes
    monkeypatch.setattr(AgentRecord, "from_bytes", classmethod(lambda cls, raw: parses.append(raw) or original(raw)))
    views = PublicViews(size=2)
    for agent_id in ("a", "b", "a", "c"):  # c pushes out b, the least recently read
        views.of(agent_id.encode(), stored[agent_id])
    assert len(parses) == 3
    views.of(b"a", stored["a"])
    assert len(parses) == 3
    views.of(b"b", stored["b"])
    assert len(parses) == 4
