"""The durable core under awkward inputs: stale fires, foreign results, re-sent schedules,
bounded records, agent-side step timeouts and unsticking (issue: the durable core).

Each test names the finding it pins; all drive the engine turn by turn, no Kafka.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from agentstream.agents import StepFailedError, agent, condition, function
from agentstream.streams.engine import EngineConfig
from agentstream.topics import (
    AgentStatus,
    ChildCompleted,
    ScheduleAgent,
    SendEvent,
    StepCommand,
    StepError,
    TimerFired,
)

from turns import Turns, result_of


@function
async def core_echo(value: str) -> str:
    return value


@agent.defn(name="Core.Sleeper")
class Sleeper:
    """Sleeps 30 days, then returns."""

    @agent.run
    async def run(self) -> str:
        await agent.sleep(timedelta(days=30))
        return "woke"


@agent.defn(name="Core.OneStep")
class OneStep:
    """One step with the options it is scheduled with; records the outcome."""

    outcome: str | None

    def __init__(self) -> None:
        self.outcome = None

    @agent.run
    async def run(self, options: dict[str, Any]) -> str | None:
        try:
            self.outcome = await agent.step(function=core_echo, function_input="x", **_options(options))
        except StepFailedError as exc:
            self.outcome = f"failed: {exc.error_type}"
        return self.outcome


def _options(options: dict[str, Any]) -> dict[str, Any]:
    from agentstream.agents import RetryPolicy

    out: dict[str, Any] = {}
    for name in ("start_to_close_timeout", "schedule_to_start_timeout", "schedule_to_close_timeout"):
        if name in options:
            out[name] = timedelta(seconds=options[name])
    if "retry_policy" in options:
        out["retry_policy"] = RetryPolicy(**options["retry_policy"])
    return out


@agent.defn(name="Core.Renewing")
class Renewing:
    """A child that continues as new whenever it gets `renew`."""

    renewals: int

    def __init__(self) -> None:
        self.renewals = 0
        self.renew = False
        self.stop = False

    @agent.event
    async def renew(self) -> None:
        self.renew = True

    @agent.event
    async def stop(self) -> None:
        self.stop = True

    @agent.run
    async def run(self) -> int:
        await condition(lambda: self.renew or self.stop)
        if self.renew:
            self.renew = False
            self.renewals += 1
            agent.agent_continue_as_new()
        return self.renewals


@agent.defn(name="Core.RenewingParent")
class RenewingParent:
    @agent.run
    async def run(self) -> int:
        return await agent.child_execute(agent=Renewing, agent_id="renewing-child")  # type: ignore[no-any-return]


@agent.defn(name="Core.Fanout")
class Fanout:
    """Starts many children without awaiting them, then waits."""

    @agent.event
    async def done(self) -> None:
        self.finished = True

    def __init__(self) -> None:
        self.finished = False

    @agent.run
    async def run(self, n: int) -> int:
        for i in range(n):
            await agent.child_start(agent="Core.Quick", agent_id=f"quick-{i}")
        await condition(lambda: self.finished)
        return n


@agent.defn(name="Core.Quick")
class Quick:
    @agent.run
    async def run(self) -> str:
        return "ok"


@agent.defn(name="Core.Hoarder")
class Hoarder:
    """Each `keep` event appends a big string to a field."""

    blobs: list[str]

    def __init__(self) -> None:
        self.blobs = []

    @agent.event
    async def keep(self, size: int) -> int:
        self.blobs.append("x" * size)
        return len(self.blobs)


@agent.defn(name="Core.Slowish")
class Slowish:
    """Its handler burns CPU for a while: fine alone, too slow for a whole backlog in one turn."""

    n: int

    def __init__(self) -> None:
        self.n = 0

    @agent.event
    async def work(self, seconds: float) -> int:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            pass
        self.n += 1
        return self.n


def only_command(outcome: Any) -> StepCommand:
    assert len(outcome.commands) == 1, outcome.commands
    return outcome.commands[0]  # type: ignore[no-any-return]


# --- 11: timer fires are checked against the due time they were armed for -------------------


async def test_a_forged_or_early_fire_does_not_end_a_thirty_day_sleep() -> None:
    turns = Turns()
    await turns.schedule("Core.Sleeper", "s")
    [(timer_id, due)] = turns.record("s").timers.items()
    run_id = turns.record("s").run_id

    forged = TimerFired(agent_id="s", run_id=run_id, timer_id=timer_id, fire_at=turns.now)
    assert (await turns.apply(forged)).ignored
    early = TimerFired(agent_id="s", run_id=run_id, timer_id=timer_id, fire_at=due)  # right due time, too soon
    assert (await turns.apply(early)).ignored
    assert turns.record("s").status is AgentStatus.RUNNING and timer_id in turns.record("s").timers

    turns.now = due
    outcome = await turns.apply(TimerFired(agent_id="s", run_id=run_id, timer_id=timer_id, fire_at=due))
    assert outcome.record is not None and outcome.record.status is AgentStatus.COMPLETED


async def test_a_stale_retry_fire_does_not_skip_the_next_backoff() -> None:
    turns = Turns()
    options = {"retry_policy": {"initial_interval": 10, "backoff_coefficient": 2.0}}
    command = only_command(await turns.schedule("Core.OneStep", "r", options))
    await turns.fail(command)
    first_due = turns.record("r").timers["retry:1"]
    turns.now = first_due
    second = only_command(await turns.fire("r", "retry:1", advance=0))
    await turns.fail(second)
    assert turns.record("r").timers["retry:1"] > first_due

    stale = TimerFired(agent_id="r", run_id=second.run_id, timer_id="retry:1", fire_at=first_due)
    outcome = await turns.apply(stale)
    assert outcome.ignored and outcome.commands == []


# --- 13: a result must answer the command it claims to answer --------------------------------


async def test_a_result_naming_another_function_is_not_taken_as_the_steps_result() -> None:
    turns = Turns()
    command = only_command(await turns.schedule("Core.OneStep", "f", {}))
    forged = result_of(command, ok=True, output="forged").model_copy(update={"function": "another_function"})
    assert (await turns.apply(forged)).ignored
    assert turns.record("f").steps and turns.record("f").fields["outcome"] is None
    await turns.complete(command, "real")
    assert turns.record("f").result == "real"


# --- 14: schedule_to_start and start_to_close are enforced on the agent's side too ----------


async def test_a_step_no_worker_takes_times_out_after_schedule_to_start() -> None:
    turns = Turns()
    await turns.schedule("Core.OneStep", "q", {"schedule_to_start_timeout": 30})
    timers = turns.record("q").timers
    assert list(timers) == ["s2s:1"], timers
    turns.now = timers["s2s:1"]
    await turns.fire("q", "s2s:1", advance=0)
    record = turns.record("q")
    assert record.status is AgentStatus.COMPLETED
    assert record.result == "failed: ScheduleToStartTimeout"


async def test_a_lost_attempt_is_retried_after_start_to_close_on_the_agents_side() -> None:
    turns = Turns()
    command = only_command(await turns.schedule("Core.OneStep", "lost", {"start_to_close_timeout": 5}))
    timers = turns.record("lost").timers
    assert "stc:1" in timers, timers  # armed when sent: a worker that dies or never answers is noticed
    turns.now = timers["stc:1"]
    await turns.fire("lost", "stc:1", advance=0)
    record = turns.record("lost")
    assert record.steps["1"].attempt == 2 and "retry:1" in record.timers
    turns.now = record.timers["retry:1"]
    retried = only_command(await turns.fire("lost", "retry:1", advance=0))
    assert retried.attempt == 2
    await turns.complete(retried, "second time lucky")
    assert turns.record("lost").result == "second time lucky"
    assert (await turns.complete(command, "late")).ignored


# --- 9: a parent's own child schedule is recognised after the child continued as new -------


async def test_a_resent_child_schedule_after_the_child_continued_as_new_is_not_rejected() -> None:
    turns = Turns()
    parent = await turns.schedule("Core.RenewingParent", "parent")
    [schedule] = [m for m in parent.messages if isinstance(m, ScheduleAgent)]
    await turns.apply(schedule)
    first_run = turns.record("renewing-child").run_id
    await turns.send("renewing-child", "renew")
    assert turns.record("renewing-child").run_id != first_run  # continued as new

    again = await turns.apply(schedule)  # the parent's schedule, delivered again
    assert again.rejection is None, again.rejection
    assert [m for m in again.messages if isinstance(m, ChildCompleted)] == []

    done = await turns.send("renewing-child", "stop")
    [report] = [m for m in done.messages if isinstance(m, ChildCompleted)]
    await turns.apply(report)
    assert turns.record("parent").status is AgentStatus.COMPLETED and turns.record("parent").result == 1


# --- 10: records stay bounded --------------------------------------------------------------


async def test_finished_children_leave_the_record() -> None:
    turns = Turns()
    started = await turns.schedule("Core.Fanout", "fan", 200)
    schedules = [m for m in started.messages if isinstance(m, ScheduleAgent)]
    assert len(schedules) == 200
    for message in schedules:
        outcome = await turns.apply(message)
        for report in outcome.messages:
            await turns.apply(report)
    assert turns.record("fan").children == {}


async def test_a_record_that_would_outgrow_the_limit_parks_the_agent_with_the_reason() -> None:
    turns = Turns.with_config(max_record_bytes=80_000)  # fields and base hold the blobs twice
    await turns.schedule("Core.Hoarder", "h")
    for _ in range(3):
        await turns.send("h", "keep", 10_000)
    outcome = await turns.send("h", "keep", 30_000)
    record = turns.record("h")
    assert record.status is AgentStatus.STUCK
    assert record.error is not None and "80000 bytes" in record.error
    assert len(record.fields["blobs"]) == 3  # the turn that would overflow was not applied
    assert len(record.parked) == 1  # ... and its input is kept
    assert outcome.record is not None and len(outcome.record.to_bytes()) <= 80_000


# --- 16: unsticking keeps every input and gives each its own time limit -------------------


async def test_a_stuck_agent_dead_letters_an_unknown_event_instead_of_parking_it() -> None:
    turns = Turns.with_config(turn_timeout_s=0.3)
    await turns.schedule("Core.Slowish", "st")
    await turns.send("st", "work", 1.0)  # too slow: parks the agent
    assert turns.record("st").status is AgentStatus.STUCK
    outcome = await turns.apply(SendEvent(agent_id="st", event="no_such_event"))
    assert outcome.rejection is not None and outcome.rejection.code == "unknown_event"
    assert len(turns.record("st").parked) == 1


async def test_unsticking_applies_each_parked_input_within_its_own_time_limit() -> None:
    turns = Turns.with_config(turn_timeout_s=0.5)
    await turns.schedule("Core.Slowish", "un")
    await turns.send("un", "work", 0.7)  # too slow for 0.5 s: parks the agent and this input
    for _ in range(4):
        await turns.send("un", "work", 0.2)  # parked behind it
    assert len(turns.record("un").parked) == 5
    # the fix is deployed (a 1 s limit) and the processor restarted: each parked input fits its
    # own limit, although all of them together (1.5 s) would not fit one
    turns.engine = type(turns.engine)(EngineConfig(turn_timeout_s=1.0))
    outcome = await turns.send("un", "work", 0.0)
    record = turns.record("un")
    assert outcome.rejection is None
    assert record.status is AgentStatus.RUNNING and record.parked == []
    assert record.fields["n"] == 6


async def test_parked_inputs_rejected_when_unsticking_are_dead_lettered_not_dropped() -> None:
    turns = Turns.with_config(turn_timeout_s=0.3)
    await turns.schedule("Core.Slowish", "dl")
    await turns.send("dl", "work", 1.0)
    assert turns.record("dl").status is AgentStatus.STUCK
    bad = SendEvent(agent_id="dl", event="work", payload="not a number")
    turns.record("dl").parked.append(bad.model_dump(mode="json"))  # parked by an older version
    turns.engine = type(turns.engine)(EngineConfig(turn_timeout_s=5))
    outcome = await turns.send("dl", "work", 0.0)
    assert outcome.record is not None and outcome.record.status is AgentStatus.RUNNING
    assert outcome.record.fields["n"] == 2
    letters = [item for item in outcome.record.outbox if item.topic == "dead-letters"]
    assert len(letters) == 1 and "invalid_payload" in letters[0].value["reason_code"]  # type: ignore[index]


def _progress(command: StepCommand, event: str) -> Any:
    from agentstream.topics import StepProgress

    return StepProgress(agent_id=command.agent_id, run_id=command.run_id, step_id=command.step_id,
                        attempt=command.attempt, function=command.function, event=event,  # type: ignore[arg-type]
                        command_id=command.message_id)


async def test_a_started_attempt_drops_schedule_to_start_and_counts_start_to_close_from_its_start() -> None:
    turns = Turns()
    options = {"schedule_to_start_timeout": 30, "start_to_close_timeout": 10}
    command = only_command(await turns.schedule("Core.OneStep", "p", options))
    assert {"s2s:1", "stc:1"} <= set(turns.record("p").timers)
    await turns.apply(_progress(command, "started"), advance=5)
    timers = turns.record("p").timers
    assert "s2s:1" not in timers
    assert timers["stc:1"] == turns.now + timedelta(seconds=11)  # start_to_close from the start, plus a grace
    await turns.complete(command, "done")
    assert turns.record("p").result == "done" and turns.record("p").timers == {}


async def test_a_worker_that_stops_heartbeating_times_the_attempt_out_and_it_is_retried() -> None:
    turns = Turns()
    command = only_command(await turns.schedule("Core.Beating", "hb"))
    await turns.apply(_progress(command, "started"))
    await turns.apply(_progress(command, "heartbeat"), advance=2)
    due = turns.record("hb").timers["hb:1"]
    assert due == turns.now + timedelta(seconds=4)
    await turns.fire("hb", "hb:1", advance=0)
    record = turns.record("hb")
    assert record.steps["1"].attempt == 2 and "HeartbeatTimeout" in (record.steps["1"].last_error or "")
    stale = _progress(command, "heartbeat")  # from the abandoned attempt 1
    assert (await turns.apply(stale)).ignored


@agent.defn(name="Core.Beating")
class Beating:
    @agent.run
    async def run(self) -> str:
        return await agent.step(function=core_echo, function_input="x",  # type: ignore[no-any-return]
                                heartbeat_timeout=timedelta(seconds=3))
