"""Inline turns: agent code runs on the main thread and is interrupted past the time limit,
however it blocks and whatever it does with the interruption (streams/engine/inline_turns.py)."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from datetime import datetime, timezone
from typing import Any

import pytest

from agentstream.agents import agent
from agentstream.streams.engine import DurableEngine, EngineConfig, inline_turns
from agentstream.streams.engine.inline_turns import InlineTurns, TurnOverrun, inline_available
from agentstream.streams.engine.turn_thread import TurnTimedOut
from agentstream.topics import AgentStatus, ScheduleAgent, SendEvent

from turns import Turns

LONG_S = 30.0  # how long the blocking code under test would block if nobody interrupted it


def interrupted_within(limit_s: float, fn: Any) -> float:
    """Run `fn` inline with `limit_s`; assert it was timed out (not waited for); seconds it took."""
    started = time.monotonic()
    with pytest.raises(TurnTimedOut):
        InlineTurns(limit_s).call(fn)
    took = time.monotonic() - started
    assert limit_s <= took < LONG_S / 3, f"took {took:.2f}s"
    return took


def test_a_turn_that_sleeps_past_its_limit_is_interrupted() -> None:
    interrupted_within(0.2, lambda: time.sleep(LONG_S))


def test_a_blocking_socket_read_is_interrupted() -> None:
    left, right = socket.socketpair()
    with left, right:
        interrupted_within(0.2, lambda: left.recv(1))  # nothing is ever sent


def test_code_that_catches_the_interruption_and_blocks_again_is_interrupted_again() -> None:
    def stubborn() -> str:
        for _ in range(3):
            try:
                time.sleep(LONG_S)
            except BaseException:  # noqa: BLE001 - the agent code under test swallows everything once
                pass
        return "finished"

    interrupted_within(0.2, stubborn)


def test_code_that_catches_the_interruption_and_returns_is_still_timed_out() -> None:
    def swallows() -> str:
        try:
            time.sleep(LONG_S)
        except BaseException:  # noqa: BLE001
            return "a value computed past the limit"
        return "never"

    interrupted_within(0.2, swallows)


def test_an_except_exception_does_not_catch_the_interruption() -> None:
    caught: list[BaseException] = []

    def careful() -> None:
        try:
            time.sleep(LONG_S)
        except Exception as exc:  # what agent code usually writes
            caught.append(exc)

    interrupted_within(0.2, careful)
    assert caught == []
    assert not issubclass(TurnOverrun, Exception)


async def test_an_interrupted_turn_leaves_the_callers_event_loop_running() -> None:
    """Interrupted where an agent's loop had made itself the running one, the caller's loop is restored."""
    mine = asyncio.get_running_loop()
    agents_loop = asyncio.new_event_loop()

    def hijacked() -> None:
        asyncio.events._set_running_loop(agents_loop)  # as AgentLoop.run_until_blocked does
        time.sleep(LONG_S)

    try:
        interrupted_within(0.2, hijacked)
        assert asyncio.get_running_loop() is mine
    finally:
        agents_loop.close()


def test_what_a_turn_returns_or_raises_comes_back_unchanged() -> None:
    turns = InlineTurns(5.0)
    assert turns.call(lambda: 42) == 42
    with pytest.raises(KeyError):
        turns.call(lambda: {}["missing"])


def test_a_late_signal_after_the_turn_ended_changes_nothing() -> None:
    turns = InlineTurns(0.05)
    assert turns.call(lambda: "quick") == "quick"
    time.sleep(0.1)  # past the limit, but no turn is running any more
    assert inline_turns._SIGNAL is not None
    # As the watchdog would; the handler runs on this thread before the next line, and must not raise.
    signal.pthread_kill(threading.main_thread().ident or 0, inline_turns._SIGNAL)
    assert turns.call(lambda: "next") == "next"


def test_off_the_main_thread_turns_cannot_be_inline() -> None:
    assert inline_available()
    seen: list[bool] = []
    thread = threading.Thread(target=lambda: seen.append(inline_available()))
    thread.start()
    thread.join()
    assert seen == [False]


@agent.defn(name="Inline.Blocker")
class Blocker:
    def __init__(self) -> None:
        self.n = 0

    @agent.event
    async def block(self, seconds: float) -> None:
        time.sleep(seconds)  # the mistake under test

    @agent.event
    async def block_in_a_task(self, seconds: float) -> None:
        async def sleeper() -> None:
            time.sleep(seconds)

        await asyncio.gather(sleeper(), return_exceptions=True)  # the task keeps the interruption
        self.n += 100  # ... and the handler goes on: none of it may count

    @agent.event
    async def add(self) -> int:
        self.n += 1
        return self.n


@pytest.mark.parametrize("isolation", ["inline", "thread"])
@pytest.mark.parametrize("event", ["block", "block_in_a_task"])
async def test_the_engine_parks_a_blocking_agent_and_others_go_on(isolation: str, event: str) -> None:
    turns = Turns.with_config(turn_timeout_s=0.2, turns=isolation)
    await turns.schedule("Inline.Blocker", "b")
    await turns.schedule("Inline.Blocker", "ok")
    outcome = await turns.send("b", event, LONG_S if isolation == "inline" else 1.0)
    assert outcome.facts.blocked
    record = turns.record("b")
    assert record.status is AgentStatus.STUCK and "blocked the event loop" in (record.error or "")
    assert record.fields["n"] == 0 and len(record.parked) == 1  # nothing of the turn kept; its input kept
    outcome = await turns.send("ok", "add")
    assert outcome.record is not None and outcome.record.fields["n"] == 1


async def test_an_engine_on_another_thread_uses_the_turn_thread() -> None:
    """A loop off the main thread cannot be signalled: the engine falls back to the turn thread."""

    async def blocked_elsewhere() -> bool:
        engine = DurableEngine(EngineConfig(turn_timeout_s=0.2))
        now = datetime.now(timezone.utc)
        first = await engine.apply(None, ScheduleAgent(agent_id="t", agent_type="Inline.Blocker"), now)
        outcome = await engine.apply(first.record, SendEvent(agent_id="t", event="block", payload=1.0), now)
        engine.close()
        return outcome.facts.blocked

    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(asyncio.run(blocked_elsewhere())))
    thread.start()
    thread.join(timeout=30)
    assert results == [True]
