"""The durable engine turn by turn: steps, retries, timers, children, replay and compaction."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

import pytest

from agentstream.agents import (
    ChildFailedError,
    RetryPolicy,
    StepFailedError,
    TimeoutError,
    agent,
    condition,
    function,
    log,
)
from agentstream.agents._registry import agent_definition
from agentstream.agents.examples.taskprocessor import TaskProcessor  # noqa: F401  (registers it)
from agentstream.streams.engine import DurableEngine, EngineConfig
from agentstream.streams.engine.replay import replay
from agentstream.topics import AgentStatus, CancelAgent, ChildCompleted, ScheduleAgent, StepCommand, TimerFired

from turns import Turns, result_of

# --- agents used here ------------------------------------------------------------------------


@function
async def fetch(key: str) -> str:
    return key.upper()


@agent.defn(name="Durable.Pipeline")
class Pipeline:
    """Two steps in a row, then waits for `finish`."""

    def __init__(self) -> None:
        self.got: list[str] = []
        self.ids: list[str] = []
        self.finish = False

    @agent.event
    async def finish(self) -> None:
        self.finish = True

    @agent.run
    async def run(self, start: str) -> list[str]:
        self.ids.append(agent.uuid())
        self.got.append(await agent.step(function=fetch, function_input=f"{start}-a"))
        self.got.append(await agent.step(function=fetch, function_input=f"{start}-b"))
        await condition(lambda: self.finish)
        return self.got


@agent.defn(name="Durable.PipelineChanged")
class PipelineChanged(Pipeline):
    """The same agent after an incompatible edit: the second step now calls another function."""

    @agent.event
    async def finish(self) -> None:
        self.finish = True

    @agent.run
    async def run(self, start: str) -> list[str]:
        self.ids.append(agent.uuid())
        self.got.append(await agent.step(function=fetch, function_input=f"{start}-a"))
        self.got.append(await agent.step(function="another_function", function_input=f"{start}-b"))
        await condition(lambda: self.finish)
        return self.got


@agent.defn(name="Durable.Counter")
class Counter:
    """Event-driven: all the work is in handlers, run only waits."""

    def __init__(self) -> None:
        self.total = 0
        self.end = False

    @agent.event
    async def add(self, n: int) -> int:
        self.total += n
        return self.total

    @agent.event
    async def end(self) -> None:
        self.end = True

    @agent.run
    async def run(self) -> int:
        await condition(lambda: self.end)
        return self.total


@agent.defn(name="Durable.Restarts")
class CountsRestarts:
    """Changes a field before waiting: restarting run would count again, so no compaction."""

    def __init__(self) -> None:
        self.starts = 0
        self.seen = 0

    @agent.event
    async def ping(self) -> None:
        self.seen += 1

    @agent.run
    async def run(self) -> None:
        self.starts += 1
        await condition(lambda: self.seen < 0)


@agent.defn(name="Durable.StepOnTotal")
class StepOnTotal:
    """Its first step's input depends on a field that events change: a restart would redo it."""

    def __init__(self) -> None:
        self.total = 0
        self.checked: str | None = None

    @agent.event
    async def add(self, n: int) -> None:
        self.total += n

    @agent.run
    async def run(self) -> None:
        self.checked = await agent.step(function=fetch, function_input=f"total-{self.total}")
        await condition(lambda: self.total < 0)


@agent.defn(name="Durable.Setup")
class SetupThenWait:
    """A step at the top of run whose input never changes: compaction reuses its result."""

    def __init__(self) -> None:
        self.setting = ""
        self.count = 0

    @agent.event
    async def bump(self) -> None:
        self.count += 1

    @agent.run
    async def run(self) -> None:
        self.setting = await agent.step(function=fetch, function_input="setting")
        await condition(lambda: self.count < 0)


@agent.defn(name="Durable.Marathon")
class Marathon:
    """The should_continue_as_new loop: compaction is refused (run counts its starts)."""

    def __init__(self) -> None:
        self.runs = 0
        self.events = 0
        self.end = False

    @agent.event
    async def tick(self) -> None:
        self.events += 1

    @agent.event
    async def end(self) -> None:
        self.end = True

    @agent.run
    async def run(self, generation: int = 0) -> dict[str, int]:
        self.runs += 1
        await condition(lambda: self.end or agent.should_continue_as_new())
        if agent.should_continue_as_new() and not self.end:
            agent.agent_continue_as_new(input=generation + 1)
        return {"runs": self.runs, "events": self.events, "generation": generation}


@agent.defn(name="Durable.Retrying")
class Retrying:
    def __init__(self) -> None:
        self.outcome: Any = None

    @agent.run
    async def run(self, policy: dict[str, Any]) -> Any:
        try:
            self.outcome = await agent.step(
                function=fetch, function_input="x",
                retry_policy=RetryPolicy(**policy) if policy else None,
                schedule_to_close_timeout=timedelta(seconds=30),
            )
        except StepFailedError as exc:
            self.outcome = {"error": exc.error_type, "attempts": exc.attempts}
        return self.outcome


@agent.defn(name="Durable.Timers")
class Timers:
    def __init__(self) -> None:
        self.steps: list[str] = []
        self.poked = False

    @agent.event
    async def poke(self) -> None:
        self.poked = True

    @agent.run
    async def run(self) -> list[str]:
        await agent.sleep(timedelta(minutes=5))
        self.steps.append(f"slept until {agent.now():%H:%M}")
        try:
            await condition(lambda: self.poked, timeout=timedelta(seconds=30))
            self.steps.append("poked")
        except TimeoutError:
            self.steps.append("no poke")
        await asyncio.sleep(60)  # plain asyncio timers are durable timers too
        self.steps.append("asyncio.sleep done")
        return self.steps


@agent.defn(name="Durable.Child")
class Child:
    @agent.run
    async def run(self, name: str) -> str:
        if name == "bad":
            raise ValueError("no bad names")
        return await agent.step(function=fetch, function_input=name)


@agent.defn(name="Durable.Parent")
class Parent:
    def __init__(self) -> None:
        self.results: list[str] = []
        self.failures: list[str] = []

    @agent.run
    async def run(self, names: list[str]) -> list[str]:
        handle = await agent.child_start(agent=Child, agent_id="side-child", agent_input="side")
        self.results.append(f"started {handle.agent_id}")
        for name in names:
            try:
                self.results.append(await agent.child_execute(agent=Child, agent_input=name))
            except ChildFailedError as exc:
                self.failures.append(str(exc))
        return self.results


@agent.defn(name="Durable.Blocker")
class Blocker:
    @agent.event
    async def block(self, seconds: float) -> None:
        time.sleep(seconds)  # the mistake under test: blocking the event loop


@agent.defn(name="Durable.Talker")
class Talker:
    def __init__(self) -> None:
        self.n = 0

    @agent.event
    async def talk(self) -> None:
        self.n += 1
        log.info("talking", n=self.n)
        await condition(lambda: self.n > 100)


def only_command(outcome: Any) -> StepCommand:
    assert len(outcome.commands) == 1, outcome.commands
    return outcome.commands[0]  # type: ignore[no-any-return]


# --- steps -----------------------------------------------------------------------------------


async def test_steps_run_in_order_and_their_results_reach_the_code() -> None:
    turns = Turns()
    first = only_command(await turns.schedule("Durable.Pipeline", "p", "job"))
    assert (first.function, first.input, first.attempt, first.task_queue) == ("fetch", "job-a", 1, "restack")
    second = only_command(await turns.complete(first, "JOB-A"))
    assert second.input == "job-b" and second.step_id != first.step_id
    outcome = await turns.complete(second, "JOB-B")
    assert outcome.commands == [] and outcome.record is not None
    assert outcome.record.fields["got"] == ["JOB-A", "JOB-B"]
    outcome = await turns.send("p", "finish")
    assert outcome.record is not None and outcome.record.status is AgentStatus.COMPLETED
    assert outcome.record.result == ["JOB-A", "JOB-B"]


async def test_late_duplicate_and_superseded_results_are_ignored() -> None:
    turns = Turns()
    first = only_command(await turns.schedule("Durable.Pipeline", "p", "job"))
    retry = await turns.fail(first)
    assert retry.commands == [] and "retry:1" in turns.record("p").timers
    second_attempt = only_command(await turns.fire("p", "retry:1"))
    assert second_attempt.attempt == 2
    assert (await turns.complete(first, "LATE")).ignored  # attempt 1 was superseded
    next_step = only_command(await turns.complete(second_attempt, "OK"))
    assert (await turns.complete(second_attempt, "AGAIN")).ignored  # duplicate
    assert turns.record("p").fields["got"] == ["OK"]
    assert next_step.input == "job-b"


@pytest.mark.parametrize(
    ("policy", "failures", "expected"),
    [
        ({"max_attempts": 3, "initial_interval": 2}, 3, {"error": "Boom", "attempts": 3}),
        ({"non_retryable_errors": ["Boom"]}, 1, {"error": "Boom", "attempts": 1}),
        ({}, 4, "DONE"),
    ],
    ids=["attempts-run-out", "non-retryable-type", "default-retries-forever"],
)
async def test_retry_policy(policy: dict[str, Any], failures: int, expected: Any) -> None:
    turns = Turns()
    command = only_command(await turns.schedule("Durable.Retrying", "r", policy))
    delays = []
    for attempt in range(1, failures + 1):
        outcome = await turns.fail(command)
        if turns.record("r").status is AgentStatus.COMPLETED:
            break
        assert [f.outcome for f in outcome.facts.steps] == ["retried"]
        delays.append((turns.record("r").timers["retry:1"] - turns.now).total_seconds())
        command = only_command(await turns.fire("r", "retry:1"))
        assert command.attempt == attempt + 1
    else:
        await turns.complete(command, "DONE")
    assert turns.record("r").result == expected
    if policy.get("initial_interval"):
        assert delays == [2.0, 4.0]  # backoff coefficient 2
    if not policy:
        assert delays == [1.0, 2.0, 4.0, 8.0]


async def test_terminal_errors_are_not_retried_and_schedule_to_close_ends_retries() -> None:
    turns = Turns()
    command = only_command(await turns.schedule("Durable.Retrying", "r", {}))
    await turns.fail(command, "TerminalError", retryable=False)
    assert turns.record("r").result == {"error": "TerminalError", "attempts": 1}

    only_command(await turns.schedule("Durable.Retrying", "s", {}))
    assert "s2c:1" in turns.record("s").timers
    outcome = await turns.fire("s", "s2c:1", advance=30)
    assert turns.record("s").result == {"error": "ScheduleToCloseTimeout", "attempts": 1}
    assert [f.outcome for f in outcome.facts.steps] == ["timed_out"]


# --- timers ----------------------------------------------------------------------------------


async def test_sleep_condition_timeout_and_asyncio_sleep_are_durable_timers() -> None:
    turns = Turns()
    await turns.schedule("Durable.Timers", "t")
    record = turns.record("t")
    assert list(record.timers) == ["t:1"]
    assert record.timers["t:1"] == record.created_at + timedelta(minutes=5)
    await turns.fire("t", "t:1", advance=300)
    assert list(turns.record("t").timers) == ["t:2"]  # the condition's timeout
    await turns.fire("t", "t:2", advance=30)
    assert list(turns.record("t").timers) == ["t:3"]  # asyncio.sleep(60)
    turns.forget_live_state()  # the rest happens after a restart: replay must agree
    outcome = await turns.fire("t", "t:3", advance=60)
    assert outcome.record is not None and outcome.record.status is AgentStatus.COMPLETED
    assert outcome.record.result == ["slept until 09:05", "no poke", "asyncio.sleep done"]


async def test_a_condition_met_in_time_cancels_its_timeout_and_a_late_fire_is_ignored() -> None:
    turns = Turns()
    await turns.schedule("Durable.Timers", "t")
    await turns.fire("t", "t:1", advance=300)
    stale = turns.record("t")
    await turns.send("t", "poke")
    assert "t:2" not in turns.record("t").timers
    assert turns.record("t").fields["steps"][-1] == "poked"
    late = TimerFired(agent_id="t", run_id=stale.run_id, timer_id="t:2", fire_at=stale.timers["t:2"])
    assert (await turns.apply(late)).ignored


# --- children --------------------------------------------------------------------------------


async def test_children_run_as_their_own_agents_and_report_back_to_the_parent() -> None:
    turns = Turns()
    outcome = await turns.schedule("Durable.Parent", "mom", ["ann", "bad"])
    schedules = [m for m in outcome.messages if isinstance(m, ScheduleAgent)]
    assert [(s.agent_id, s.agent_type, s.input) for s in schedules][0] == ("side-child", "Durable.Child", "side")
    assert all(s.parent is not None and s.parent.agent_id == "mom" for s in schedules)
    assert len(schedules) == 2  # child_start, then the first child_execute
    for started in await turns.deliver_all(schedules):
        assert started.rejection is None
    ann = schedules[1].agent_id
    done = await turns.complete(only_command(turns.outcomes[-1]), "ANN")  # the child's own step
    reports = [m for m in done.messages if isinstance(m, ChildCompleted)]
    assert [(r.agent_id, r.child_id, r.status, r.result) for r in reports] == [("mom", ann, AgentStatus.COMPLETED, "ANN")]
    outcome = (await turns.deliver_all(reports))[0]
    bad = [m for m in outcome.messages if isinstance(m, ScheduleAgent)]
    failed = await turns.deliver_all(bad)
    assert turns.record(bad[0].agent_id).status is AgentStatus.FAILED
    await turns.deliver_all([m for m in failed[0].messages if isinstance(m, ChildCompleted)])
    parent = turns.record("mom")
    assert parent.status is AgentStatus.COMPLETED
    assert parent.result == ["started side-child", "ANN"]
    assert parent.fields["failures"] == ["child Durable.Child ended failed: ValueError: no bad names"]


async def test_a_child_that_cannot_start_fails_the_parents_wait_instead_of_hanging_it() -> None:
    turns = Turns()
    await turns.schedule("Durable.Counter", "side-child")  # the ID the parent's child_start uses
    outcome = await turns.schedule("Durable.Parent", "mom", [])
    rejected = (await turns.deliver_all(outcome.messages))[0]
    assert rejected.rejection is not None and rejected.rejection.code == "already_running"
    report = [m for m in rejected.messages if isinstance(m, ChildCompleted)]
    assert report and report[0].status is AgentStatus.FAILED and "already running" in (report[0].error or "")


async def test_cancelling_a_parent_cancels_its_children_when_asked() -> None:
    turns = Turns()
    outcome = await turns.schedule("Durable.Parent", "mom", ["ann"])
    await turns.deliver_all(outcome.messages)
    cancel = await turns.apply(CancelAgent(agent_id="mom", reason="stop", cancel_children=True))
    cancels = [m for m in cancel.messages if isinstance(m, CancelAgent)]
    assert sorted(c.agent_id for c in cancels) == sorted(m.agent_id for m in outcome.messages)
    assert all(c.cancel_children for c in cancels)
    await turns.deliver_all(cancels)
    assert {turns.record(c.agent_id).status for c in cancels} == {AgentStatus.CANCELLED}
    assert turns.record("mom").status is AgentStatus.CANCELLED


# --- replay and nondeterminism ------------------------------------------------------------------


async def test_replaying_the_journal_rebuilds_the_same_state() -> None:
    turns = Turns()
    first = only_command(await turns.schedule("Durable.Pipeline", "p", "job"))
    await turns.complete(first, "JOB-A")
    record = turns.record("p")
    assert len(record.journal) == 1
    live = replay(record, agent_definition("Durable.Pipeline"), "restack", 2000)
    assert live.snapshot_fields() == record.fields
    assert live.waiting_seqs() == {2}
    # A fresh engine (as after a restart) continues exactly where the cached one would.
    cached, restarted = Turns(records=dict(turns.records), now=turns.now), Turns(records=dict(turns.records), now=turns.now)
    cached.engine = turns.engine
    result = result_of(only_command(turns.outcomes[-1]), ok=True, output="JOB-B")
    a = await cached.apply(result)
    b = await restarted.apply(result)
    assert a.record is not None and b.record is not None
    assert a.record.fields == b.record.fields and a.record.fields["ids"] == record.fields["ids"]
    assert a.record.journal == b.record.journal


async def test_changed_code_is_reported_as_nondeterminism_and_parks_only_that_agent() -> None:
    turns = Turns()
    first = only_command(await turns.schedule("Durable.Pipeline", "p", "job"))
    second = only_command(await turns.complete(first, "JOB-A"))
    await turns.schedule("Durable.Counter", "other")

    def deployed(name: str) -> Any:  # the new code is deployed under the old name
        return agent_definition("Durable.PipelineChanged" if name == "Durable.Pipeline" else name)

    turns.engine = DurableEngine(lookup=deployed)
    before = turns.record("p")
    outcome = await turns.complete(second, "JOB-B")
    assert outcome.facts.nondeterminism
    record = turns.record("p")
    assert record.status is AgentStatus.STUCK
    assert record.error is not None and "NondeterminismError" in record.error and "another_function" in record.error
    assert [u.status for u in outcome.updates] == [AgentStatus.STUCK]
    assert record.journal == before.journal  # nothing lost
    parked = await turns.send("p", "finish")
    assert parked.rejection is None and len(turns.record("p").parked) == 2
    assert (await turns.send("other", "add", 2)).record.fields["total"] == 2  # type: ignore[union-attr]

    turns.engine = DurableEngine()  # the fix is deployed: the old code is back
    outcome = await turns.send("p", "finish")
    record = turns.record("p")
    assert record.status is AgentStatus.COMPLETED, record.error
    assert record.result == ["JOB-A", "JOB-B"] and record.parked == []
    assert [u.status for u in outcome.updates] == [AgentStatus.RUNNING, AgentStatus.COMPLETED]


async def test_uuid_and_log_are_deterministic_and_logs_stay_silent_in_replay(caplog: pytest.LogCaptureFixture) -> None:
    turns = Turns()
    await turns.schedule("Durable.Pipeline", "p", "job")
    await turns.schedule("Durable.Talker", "talker")
    await turns.send("talker", "talk")
    ids = turns.record("p").fields["ids"]
    turns.forget_live_state()
    with caplog.at_level(logging.INFO, logger="agentstream.agent"):
        await turns.send("talker", "talk")
    talks = [r for r in caplog.records if r.getMessage() == "talking"]
    assert [r.fields for r in talks] == [{"n": 2}]  # type: ignore[attr-defined]
    assert talks[0].agent_id == "talker" and talks[0].run_id == turns.record("talker").run_id  # type: ignore[attr-defined]
    live = replay(turns.record("p"), agent_definition("Durable.Pipeline"), "restack", 2000)
    assert live.snapshot_fields()["ids"] == ids


# --- compaction ----------------------------------------------------------------------------------


async def test_an_event_driven_agent_is_compacted_after_every_quiescent_turn() -> None:
    turns = Turns()
    await turns.schedule("Durable.Counter", "c")
    for n in range(1, 51):
        outcome = await turns.send("c", "add", n)
        assert outcome.facts.compacted and turns.record("c").journal == []
    record = turns.record("c")
    assert record.fields["total"] == 1275 and record.compactions == 51
    turns.forget_live_state()
    outcome = await turns.send("c", "end")
    assert outcome.record is not None and outcome.record.result == 1275


async def test_compaction_reuses_a_steps_result_the_restarted_coroutine_received_itself() -> None:
    turns = Turns()
    setting = only_command(await turns.schedule("Durable.Setup", "s"))
    outcome = await turns.complete(setting, "SETTING")
    assert outcome.facts.compacted
    for _ in range(3):
        outcome = await turns.send("s", "bump")
        assert outcome.facts.compacted and outcome.commands == []
    base = turns.record("s").base
    assert base is not None and [c.key for c in base.seeds[0].prologue] == ["fetch"]
    turns.forget_live_state()
    outcome = await turns.send("s", "bump")
    assert outcome.commands == [] and outcome.record.fields == {"setting": "SETTING", "count": 4}  # type: ignore[union-attr]


@pytest.mark.parametrize("agent_type", ["Durable.Restarts", "Durable.StepOnTotal"])
async def test_compaction_is_refused_when_a_restart_would_change_a_field_or_redo_a_step(agent_type: str) -> None:
    turns = Turns()
    outcome = await turns.schedule(agent_type, "a")
    if outcome.commands:
        await turns.complete(only_command(outcome), "checked")
    event = "ping" if agent_type == "Durable.Restarts" else "add"
    for n in range(1, 6):
        outcome = await turns.send("a", event, 1 if event == "add" else None)
        assert outcome.facts.compaction_refused and not outcome.facts.compacted
        assert len(turns.record("a").journal) == n
    turns.forget_live_state()  # the long journal still replays to the same state
    outcome = await turns.send("a", event, 1 if event == "add" else None)
    assert len(turns.record("a").journal) == 6 and outcome.commands == []


async def test_should_continue_as_new_restarts_run_in_place_with_fields_kept() -> None:
    turns = Turns.with_config(continue_as_new_after=5)
    await turns.schedule("Durable.Marathon", "m")
    first_run = turns.record("m").run_id
    lengths = []
    for _ in range(12):
        await turns.send("m", "tick")
        lengths.append(len(turns.record("m").journal))
    assert lengths == [1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2]
    record = turns.record("m")
    assert record.run_id != first_run and record.status is AgentStatus.RUNNING
    assert record.fields["events"] == 12 and record.fields["runs"] == 3
    outcome = await turns.send("m", "end")
    assert outcome.record is not None and outcome.record.result == {"runs": 3, "events": 12, "generation": 2}


async def test_the_task_processor_example_processes_tasks_and_compacts_when_idle() -> None:
    turns = Turns()
    await turns.schedule("TaskProcessor", "tp")
    await turns.send("tp", "configure", {"max_retries": 2})
    commands = [only_command(await turns.send("tp", "add_task", {"id": "t1"}))]
    await turns.send("tp", "add_task", {"id": "t2"})
    commands.append(only_command(await turns.complete(commands[0], {"id": "t1", "result": "processed"})))
    await turns.fail(commands[1])
    retry = only_command(await turns.fire("tp", "retry:2"))
    outcome = await turns.fail(retry)
    assert outcome.facts.compacted  # idle again: nothing in flight, run waits for work
    record = turns.record("tp")
    assert (record.fields["completed"], record.fields["failed"], record.journal) == (1, 1, [])
    outcome = await turns.send("tp", "shutdown")
    assert outcome.record is not None and outcome.record.result == {"status": "ended", "completed": 1, "failed": 1}


async def test_the_task_processor_example_completes_with_the_readmes_commands_alone() -> None:
    """README: `schedule TaskProcessor`, `send add_task '{"id": "t1"}'`, `send shutdown`; no `configure`."""
    turns = Turns()
    await turns.schedule("TaskProcessor", "tp")
    step = only_command(await turns.send("tp", "add_task", {"id": "t1"}))
    await turns.send("tp", "shutdown")
    outcome = await turns.complete(step, {"id": "t1", "result": "process: done"})
    assert outcome.record is not None and outcome.record.result == {"status": "ended", "completed": 1, "failed": 0}


# --- the turn time limit ---------------------------------------------------------------------


async def test_a_handler_that_blocks_the_loop_is_reported_and_other_agents_go_on() -> None:
    turns = Turns.with_config(turn_timeout_s=0.2)
    await turns.schedule("Durable.Blocker", "b")
    await turns.schedule("Durable.Counter", "c")
    outcome = await turns.send("b", "block", 1.0)
    assert outcome.facts.blocked
    record = turns.record("b")
    assert record.status is AgentStatus.STUCK and "blocked the event loop" in (record.error or "")
    assert len(record.parked) == 1  # the input is kept, not lost
    outcome = await turns.send("c", "add", 5)
    assert outcome.record is not None and outcome.record.fields["total"] == 5


@agent.defn(name="Durable.Messages")
class Messages:
    """The messages/end shape: a field and an event share the name `end`."""

    def __init__(self) -> None:
        self.messages: list[dict[str, str]] = []
        self.end = False

    @agent.event
    async def messages(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        self.messages = messages
        return messages

    @agent.event
    async def end(self) -> bool:
        self.end = True
        return True

    @agent.run
    async def run(self) -> int:
        await condition(lambda: self.end)
        return len(self.messages)


@agent.defn(name="Durable.Gather")
class Gather:
    @agent.run
    async def run(self, keys: list[str]) -> list[str]:
        return list(await asyncio.gather(*(agent.step(function=fetch, function_input=k) for k in keys)))


async def test_the_messages_and_end_shape_runs_as_written() -> None:
    turns = Turns()
    await turns.schedule("Durable.Messages", "chat")
    outcome = await turns.send("chat", "messages", [{"role": "user", "content": "hi"}])
    assert outcome.record is not None and outcome.record.events[-1].result == [{"role": "user", "content": "hi"}]
    outcome = await turns.send("chat", "end")
    assert outcome.record is not None and outcome.record.status is AgentStatus.COMPLETED and outcome.record.result == 1


async def test_asyncio_gather_runs_steps_concurrently_and_replays() -> None:
    turns = Turns()
    outcome = await turns.schedule("Durable.Gather", "g", ["a", "b", "c"])
    commands = {c.input: c for c in outcome.commands}
    assert sorted(commands) == ["a", "b", "c"]  # all three in flight at once
    await turns.complete(commands["b"], "B")
    turns.forget_live_state()
    await turns.complete(commands["c"], "C")
    outcome = await turns.complete(commands["a"], "A")
    assert outcome.record is not None and outcome.record.result == ["A", "B", "C"]


async def test_a_stuck_agent_can_still_be_cancelled() -> None:
    turns = Turns.with_config(turn_timeout_s=0.2)
    await turns.schedule("Durable.Blocker", "b")
    await turns.send("b", "block", 0.5)
    assert turns.record("b").status is AgentStatus.STUCK
    outcome = await turns.apply(CancelAgent(agent_id="b", reason="giving up"))
    assert outcome.record is not None and outcome.record.status is AgentStatus.CANCELLED
    assert [u.status for u in outcome.updates] == [AgentStatus.CANCELLED]


async def test_the_outbox_holds_what_a_crash_may_have_lost_and_a_resent_schedule_is_harmless() -> None:
    turns = Turns()
    outcome = await turns.schedule("Durable.Parent", "mom", ["ann"])
    sent = {m.message_id for m in outcome.messages}
    outbox = turns.record("mom").outbox
    assert {item.value["message_id"] for item in outbox if item.topic == "agent-events"} == sent
    await turns.deliver_all(outcome.messages)
    child = outcome.messages[1]
    step = only_command(turns.outcomes[-1])
    child_outbox = turns.record(child.agent_id).outbox
    assert [item.value["message_id"] for item in child_outbox if item.topic == "step-commands"] == [step.message_id]
    resent = await turns.apply(child)  # type: ignore[arg-type]
    assert resent.label in ("ignored", "duplicate") and resent.rejection is None and resent.messages == []
    done = await turns.complete(step, "ANN")
    report = [item.value["message_id"] for item in turns.record(child.agent_id).outbox if item.topic == "agent-events"]
    assert report == [m.message_id for m in done.messages]
