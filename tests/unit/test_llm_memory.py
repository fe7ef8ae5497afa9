"""Memory across sessions: `remember` / `recall` tools over one memory agent per user (engine, turn by turn).

The messages between session and memory agent are delivered as the processor would
(`Turns.deliver_all`), so the test shows the whole exchange: the memory agent is
started once for all sessions of a user, a fact remembered in one session is found
by `recall` in another, and the search ranks by words (BM25).
"""

from __future__ import annotations

import json
from typing import Any

from agentstream.agents.llm import LLMAgent, Memory, Model
from agentstream.agents.llm._calls import ModelCall
from agentstream.agents.llm._memory import lexical_rank
from agentstream.topics import Envelope

from turns import Turns

MEMORY = Memory("Test.Memory")
ASSISTANT = LLMAgent("Test.Remembering", model=Model(name="m"), memory=MEMORY)


def tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    message = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}]}
    return {"message": message, "usage": {"calls": 1}, "model": "m"}


def text(content: str) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": content}, "usage": {"calls": 1}, "model": "m"}


async def deliver(turns: Turns, messages: list[Envelope]) -> list[tuple[Envelope, str]]:
    """Deliver `messages` and whatever they cause, until nothing more is sent; each with its label."""
    sent: list[tuple[Envelope, str]] = []
    while messages:
        outcomes = await turns.deliver_all(messages)
        sent += [(m, o.label) for m, o in zip(messages, outcomes)]
        messages = [m for o in outcomes for m in o.messages]
    return sent


async def test_a_fact_remembered_in_one_session_is_recalled_in_another() -> None:
    turns = Turns()
    await turns.schedule("Test.Remembering", "chat-1")
    await turns.send("chat-1", "message", {"text": "I am vegetarian", "user": "alice"})
    call = ModelCall.model_validate(turns.outcomes[-1].commands[0].input)
    assert {t["function"]["name"] for t in call.tools} == {"remember", "recall"}
    outcome = await turns.complete(turns.outcomes[-1].commands[0], tool_call("remember", {"fact": "Alice is vegetarian"}))
    sent = await deliver(turns, outcome.messages)
    assert [(type(m).__name__, label) for m, label in sent] == [("ScheduleAgent", "applied"), ("SendEvent", "applied")]
    await turns.complete(_model_step(turns), text("Noted."))
    assert turns.record("Test.Memory:alice").fields["facts"][0]["text"] == "Alice is vegetarian"

    await turns.schedule("Test.Remembering", "chat-2")
    await turns.send("chat-2", "message", {"text": "Suggest a dinner", "user": "alice"})
    outcome = await turns.complete(_model_step(turns), tool_call("recall", {"query": "vegetarian food"}))
    sent = await deliver(turns, outcome.messages)
    assert [(type(m).__name__, label) for m, label in sent] == [
        ("ScheduleAgent", "duplicate"), ("SendEvent", "applied"), ("SendEvent", "applied")]  # recall, its answer
    told = ModelCall.model_validate(_model_step(turns).input).messages[-1]
    assert told == {"role": "tool", "tool_call_id": "c1", "content": '["Alice is vegetarian"]'}
    assert turns.record("Test.Memory:alice").status.value == "running"


def _model_step(turns: Turns) -> Any:
    """The latest model-call step command sent."""
    return next(c for o in reversed(turns.outcomes) for c in o.commands if c.function == "agentstream.llm.call")


def test_lexical_search_ranks_by_shared_words_and_leaves_out_the_rest() -> None:
    facts = ["Alice is vegetarian", "Alice lives in Oslo", "Bob likes vegetarian pizza and pasta", "The sky is blue"]
    assert lexical_rank("vegetarian dinner in Oslo", facts, 10) == [1, 0, 2]
    assert lexical_rank("vegetarian", facts, 1) == [0]
    assert lexical_rank("zebra", facts, 5) == []
