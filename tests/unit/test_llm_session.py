"""The LLM session agent turn by turn on the engine (no Kafka, no model): the loop's decisions.

Model calls and tool calls are step commands here; the test answers them as a worker
would, so what the agent does with each answer is checked exactly: tool calls in
parallel, results matched by call ID, invalid arguments and unknown tools told to the
model, approvals (approve, reject, timeout, late and duplicate decisions), the budget
and the per-run limits, a bounded history, and a failed run leaving the history as it was.
"""

from __future__ import annotations

import json
from typing import Any

from agentstream.agents.llm import Budget, HistoryPolicy, LLMAgent, Model, tool
from agentstream.agents.llm._calls import CALL_FUNCTION, ModelCall
from agentstream.topics import StepCommand

from turns import Turns

MODEL = Model(name="m", base_url="http://127.0.0.1:9/v1")


@tool
def find_booking(confirmation: str) -> dict[str, str]:
    """Find a booking.

    Args:
        confirmation: The booking's confirmation number, e.g. "ABC123".
    """
    return {"confirmation": confirmation}


@tool
def weather(city: str, days: int = 1) -> str:
    """Tomorrow's weather in a city."""
    return f"sunny in {city}"


@tool(needs_approval=True, approval_timeout=60)
def refund(confirmation: str, amount: float) -> str:
    """Refund an amount to the customer."""
    return "refunded"


SESSION = LLMAgent("Test.Session", model=MODEL, instructions="Be brief.", tools=[find_booking, weather, refund],
                   history=HistoryPolicy(max_messages=6, max_tokens=100_000))
BY_COST = LLMAgent("Test.ByCost", model=MODEL, tools=[weather], budget=Budget(cost=0.01))
BUDGETED = LLMAgent("Test.Budgeted", model=MODEL, tools=[weather], budget=Budget(tokens=100), max_tool_calls=3)


def answer(content: str | None = None, *calls: tuple[str, str, dict[str, Any] | str], tokens: int = 10) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function",
             "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
            for cid, name, args in calls
        ]
    return {"message": message, "usage": {"prompt_tokens": tokens, "completion_tokens": tokens, "calls": 1},
            "model": "m"}


def commands(turns: Turns) -> list[StepCommand]:
    return turns.outcomes[-1].commands


def model_call(command: StepCommand) -> ModelCall:
    assert command.function == CALL_FUNCTION
    return ModelCall.model_validate(command.input)


def stream(turns: Turns) -> list[tuple[str, Any]]:
    return [(e.type, e.data) for outcome in turns.outcomes for e in outcome.stream]


def event_result(turns: Turns, agent_id: str, name: str) -> list[dict[str, Any]]:
    return [e.model_dump() for e in turns.record(agent_id).events if e.name == name]


async def test_a_message_runs_tools_in_parallel_and_matches_results_by_call_id() -> None:
    turns = Turns()
    await turns.schedule("Test.Session", "s1")
    await turns.send("s1", "message", {"text": "Booking ABC and the weather in Oslo?"})
    first = model_call(commands(turns)[0])
    assert first.messages[0] == {"role": "system", "content": "Be brief."}
    assert {t["function"]["name"] for t in first.tools} == {"find_booking", "weather", "refund"}
    schema = next(t for t in first.tools if t["function"]["name"] == "find_booking")["function"]
    assert schema["description"] == "Find a booking."
    assert schema["parameters"]["properties"]["confirmation"]["description"].startswith("The booking's")
    await turns.complete(commands(turns)[0], answer(None, ("c1", "find_booking", {"confirmation": "ABC"}),
                                                    ("c2", "weather", {"city": "Oslo"})))
    tool_steps = commands(turns)
    assert [(c.function, c.input) for c in tool_steps] == [
        ("tool.find_booking", {"confirmation": "ABC"}), ("tool.weather", {"city": "Oslo", "days": 1})]
    # both are in flight at once; the second finishes first
    await turns.complete(tool_steps[1], {"ok": True, "value": "sunny"})
    assert commands(turns) == []  # still waiting for the first
    await turns.complete(tool_steps[0], {"ok": True, "value": {"confirmation": "ABC"}})
    second = model_call(commands(turns)[0])
    assert second.messages[-2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": '{"confirmation": "ABC"}'},
        {"role": "tool", "tool_call_id": "c2", "content": '"sunny"'},
    ]
    await turns.complete(commands(turns)[0], answer("Booked; sunny."))
    [done] = event_result(turns, "s1", "message")
    assert done["done"] and done["result"]["text"] == "Booked; sunny."
    assert done["result"]["usage"]["calls"] == 2 and done["result"]["tool_calls"] == 2
    assert turns.record("s1").fields["usage"]["calls"] == 2
    kinds = [t for t, _ in stream(turns)]
    assert kinds == ["run_started", "tool_call", "tool_call", "tool_result", "tool_result", "run_finished"]


async def test_invalid_arguments_and_unknown_tools_go_back_to_the_model() -> None:
    turns = Turns()
    await turns.schedule("Test.Session", "s2")
    await turns.send("s2", "message", {"text": "go"})
    await turns.complete(commands(turns)[0], answer(None, ("c1", "weather", '{"city": 5'),
                                                    ("c2", "teleport", {}), ("c3", "weather", {"town": "x"})))
    told = model_call(commands(turns)[0]).messages[-3:]
    assert told[0]["content"].startswith("Error: invalid arguments")
    assert "there is no tool 'teleport'" in told[1]["content"]
    assert "city" in told[2]["content"] and "town" in told[2]["content"]


async def test_a_tool_needing_approval_waits_for_the_decision_and_refuses_late_and_duplicate_ones() -> None:
    turns = Turns()
    await turns.schedule("Test.Session", "s3")
    await turns.send("s3", "message", {"text": "refund me"})
    await turns.complete(commands(turns)[0], answer(None, ("c1", "refund", {"confirmation": "A", "amount": 10})))
    assert commands(turns) == []  # nothing runs before a human decides
    [request] = turns.record("s3").fields["pending"].values()
    assert request["tool"] == "refund" and request["arguments"] == {"confirmation": "A", "amount": 10.0}
    notices = [u.notice for u in turns.outcomes[-1].updates if u.notice]
    assert notices and notices[0]["type"] == "approval_requested"
    rid = request["request_id"]
    await turns.send("s3", "approve", {"request_id": rid})
    assert [c.function for c in commands(turns)] == ["tool.refund"]
    await turns.send("s3", "reject", {"request_id": rid, "reason": "changed my mind"})
    late = event_result(turns, "s3", "reject")[0]
    assert late["done"] and "already approved" in late["error"]
    await turns.send("s3", "approve", {"request_id": "nope"})
    assert "no such request" in event_result(turns, "s3", "approve")[-1]["error"]


async def test_a_rejected_or_timed_out_approval_is_told_to_the_model() -> None:
    turns = Turns()
    await turns.schedule("Test.Session", "s4")
    await turns.send("s4", "message", {"text": "refund me"})
    await turns.complete(commands(turns)[0], answer(None, ("c1", "refund", {"confirmation": "A", "amount": 1}),
                                                    ("c2", "refund", {"confirmation": "B", "amount": 2})))
    first, second = turns.record("s4").fields["pending"]
    await turns.send("s4", "reject", {"request_id": first, "reason": "no"})
    timer = next(t for t in turns.record("s4").timers)
    await turns.fire("s4", timer)
    told = model_call(commands(turns)[0]).messages[-2:]
    assert told[0]["content"] == "Error: a human rejected this call (no)"
    assert "no decision within 60.0s" in told[1]["content"]
    await turns.send("s4", "approve", {"request_id": second})
    assert "already timed out" in event_result(turns, "s4", "approve")[-1]["error"]


async def test_the_budget_stops_a_run_cleanly() -> None:
    turns = Turns()
    await turns.schedule("Test.Budgeted", "b1", "what is the weather?")
    await turns.complete(commands(turns)[0], answer(None, ("c1", "weather", {"city": "Oslo"}), tokens=60))
    await turns.complete(commands(turns)[0], {"ok": True, "value": "sunny"})
    record = turns.record("b1")
    assert record.status.value == "completed"
    assert record.result["stop_reason"] == "budget" and record.result["usage"]["prompt_tokens"] == 60


async def test_a_cost_budget_stops_a_run_once_the_priced_usage_reaches_it() -> None:
    turns = Turns()
    await turns.schedule("Test.ByCost", "c1", "go")
    reply = answer(None, ("c1", "weather", {"city": "Oslo"}))
    await turns.complete(commands(turns)[0], {**reply, "usage": {**reply["usage"], "cost": 0.004}})
    await turns.complete(commands(turns)[0], {"ok": True, "value": "sunny"})
    assert [c.function for c in commands(turns)] == [CALL_FUNCTION]  # 0.004 < 0.01: the loop goes on
    reply = answer(None, ("c2", "weather", {"city": "Rome"}))
    await turns.complete(commands(turns)[0], {**reply, "usage": {**reply["usage"], "cost": 0.007}})
    await turns.complete(commands(turns)[0], {"ok": True, "value": "rain"})
    result = turns.record("c1").result
    assert result["stop_reason"] == "budget" and result["usage"]["cost"] == 0.011 and result["turns"] == 2


async def test_too_many_tool_calls_stop_the_run_with_every_call_answered() -> None:
    turns = Turns()
    await turns.schedule("Test.Budgeted", "b2", "go")
    await turns.complete(commands(turns)[0], answer(None, *((f"c{i}", "weather", {"city": "x"}) for i in range(4)),
                                                    tokens=1))
    record = turns.record("b2")
    assert record.result["stop_reason"] == "max_tool_calls"
    assert commands(turns) == []


async def test_history_stays_within_the_policy_over_many_turns() -> None:
    turns = Turns()
    await turns.schedule("Test.Session", "s5")
    for n in range(12):
        await turns.send("s5", "message", {"text": f"question {n}"})
        call = model_call(commands(turns)[0])
        assert len(call.messages) <= 1 + 6  # the system message and at most max_messages
        assert call.messages[-1] == {"role": "user", "content": f"question {n}"}
        outcome = await turns.complete(commands(turns)[0], answer(f"answer {n}"))
        await turns.deliver_all(outcome.messages)  # the session's `resume` to itself
    record = turns.record("s5")
    assert len(record.fields["history"]) <= 6
    assert len(record.journal) <= 2, "an idle session compacts its journal"


async def test_messages_are_answered_one_at_a_time_in_order() -> None:
    turns = Turns()
    await turns.schedule("Test.Session", "s6")
    await turns.send("s6", "message", {"text": "one"})
    first = commands(turns)[0]
    await turns.send("s6", "message", {"text": "two"})
    assert commands(turns) == []  # waits for the first answer
    outcome = await turns.complete(first, answer("1"))
    assert outcome.commands == [] and [m.event for m in outcome.messages] == ["resume"]  # type: ignore[attr-defined]
    assert turns.record("s6").journal == [], "the turn that answered a message ends with nothing in flight: compacted"
    await turns.deliver_all(outcome.messages)
    assert model_call(commands(turns)[0]).messages[-3:] == [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "1"}, {"role": "user", "content": "two"}]


async def test_a_failed_run_leaves_the_history_as_it_was_and_the_next_message_is_served() -> None:
    turns = Turns()
    await turns.schedule("Test.Session", "s7")
    await turns.send("s7", "message", {"text": "boom"})
    outcome = await turns.fail(commands(turns)[0], "TerminalError", retryable=False)
    await turns.deliver_all(outcome.messages)
    assert "StepFailedError" in event_result(turns, "s7", "message")[0]["error"]
    assert turns.record("s7").fields["history"] == []
    await turns.send("s7", "message", {"text": "fine?"})
    assert model_call(commands(turns)[0]).messages[1:] == [{"role": "user", "content": "fine?"}]


async def test_a_session_survives_a_restart_between_its_steps() -> None:
    turns = Turns()
    await turns.schedule("Test.Session", "s8")
    await turns.send("s8", "message", {"text": "weather?"})
    await turns.complete(commands(turns)[0], answer(None, ("c1", "weather", {"city": "Oslo"})))
    step = commands(turns)[0]
    turns.forget_live_state()
    await turns.complete(step, {"ok": True, "value": "sunny"})
    await turns.complete(commands(turns)[0], answer("Sunny."))
    assert event_result(turns, "s8", "message")[0]["result"]["text"] == "Sunny."
