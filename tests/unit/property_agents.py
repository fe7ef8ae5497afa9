"""Agent shapes for the engine's property test (test_engine_properties.py).

Each shape exercises one way agent code waits: a loop whose counter is a local, a
gather of steps, children, timers, continue-as-new, event handlers that await steps.
Every step goes through `_step`, which appends `"<input>=<outcome>"` to the agent's
`received` field: step inputs are unique per agent, so a result applied twice shows up
as a repeated input there. A worker's output for an attempt is `"<input>@<attempt>"`.

`Shape` tells the test how to drive an agent: the events it may send at any time
(with a payload made from a running number, so payloads are unique), the event that
moves it towards its end, and a check of its final record (what the code promises
whatever the order of inputs was). At the end: what a worker and the timer service send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agentstream.agents import (
    ChildFailedError,
    RetryPolicy,
    StepFailedError,
    TimeoutError,
    agent,
    condition,
    function,
    step_context,
)
from agentstream.agents.exceptions import TerminalError
from agentstream.streams.engine import AgentRecord, Input
from agentstream.topics import (
    AgentStatus,
    StepCommand,
    StepError,
    StepProgress,
    StepResult,
    TimerFired,
    derived_message_id,
)

FUNCTION = "prop_work"
# Small intervals, a bounded number of attempts: retryable failures lead to retry timers,
# and three of them in a row to a StepFailedError the code handles.
POLICY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, max_attempts=3)


async def _step(owner: Any, name: str, **timeouts: float) -> str:
    """One step whose outcome (value or failure) the agent records in `received`; `timeouts`
    are agent.step's (each a durable timer of the engine)."""
    try:
        out = await agent.step(function=FUNCTION, function_input=name, retry_policy=POLICY, **timeouts)
        seen = f"{name}={out}"
    except StepFailedError as exc:
        seen = f"{name}=failed:{exc.error_type}"
    owner.received.append(seen)
    return seen


@function
async def prop_local(name: str) -> str:
    """The local steps' function (run by the engine's runner, never by the test's worker): its
    outcome depends only on the input and attempt, so a re-run after a crash gives the same one.
    An input with "flaky" fails its first attempt (a durable retry timer), one with "bad" always."""
    if "bad" in name:
        raise TerminalError(f"{name} is refused")
    if "flaky" in name and step_context().attempt == 1:
        raise RuntimeError("the first attempt fails")
    return f"{name}@local"


async def _local(owner: Any, name: str) -> str:
    """One local step, recorded in `received` like `_step`'s."""
    try:
        out = await agent.step(function=prop_local, function_input=name, retry_policy=POLICY, local=True)
        seen = f"{name}={out}"
    except StepFailedError as exc:
        seen = f"{name}=failed:{exc.error_type}"
    owner.received.append(seen)
    return seen


@agent.defn(name="Prop.Loop")
class LoopAgent:
    """issue 7 item 2's shape: the loop counter `seen` lives only in a local."""

    def __init__(self) -> None:
        self.pending = 0
        self.received: list[str] = []
        self.notes: list[str] = []

    @agent.event
    async def bump(self) -> None:
        self.pending += 1

    @agent.event
    async def note(self, text: str) -> None:
        self.notes.append(text)

    @agent.run
    async def run(self) -> int:
        seen = 0
        while seen < 3:
            await condition(lambda: self.pending > 0)
            self.pending -= 1
            seen += 1
            await _step(self, f"loop-{seen}")
        return seen


@agent.defn(name="Prop.Gather")
class GatherAgent:
    """Three steps in one gather, then a step gathered with a durable sleep."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.finished = False

    @agent.event
    async def finish(self) -> None:
        self.finished = True

    @agent.run
    async def run(self) -> list[str]:
        first = await asyncio.gather(*(_step(self, f"gather-{k}") for k in ("a", "b", "c")))
        await asyncio.gather(_step(self, "gather-d"), agent.sleep(5))
        await condition(lambda: self.finished)
        return list(first)


@agent.defn(name="Prop.Kid")
class KidAgent:
    """A child: one step (timed out if no worker starts it in time); it fails, and its parent's
    wait with it, if the step failed."""

    def __init__(self) -> None:
        self.received: list[str] = []

    @agent.run
    async def run(self, name: str) -> str:
        seen = await _step(self, f"kid-{name}", schedule_to_start_timeout=20)
        if "=failed:" in seen:
            raise ValueError(seen)
        return seen


@agent.defn(name="Prop.Parent")
class ParentAgent:
    """child_start (not awaited), two child_execute in a gather, then a step of its own."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.kids: list[str] = []
        self.finished = False

    @agent.event
    async def finish(self) -> None:
        self.finished = True

    @agent.run
    async def run(self) -> list[str]:
        side = await agent.child_start(agent=KidAgent, agent_id=f"{agent.agent_info().agent_id}-side",
                                       agent_input="side")
        self.kids.append(side.agent_id)

        async def kid(name: str) -> str:
            try:
                return str(await agent.child_execute(agent=KidAgent, agent_input=name))
            except ChildFailedError as exc:
                return f"child failed: {exc.status}"

        self.kids.extend(await asyncio.gather(kid("x"), kid("y")))
        await _step(self, "parent")
        await condition(lambda: self.finished)
        return self.kids


@agent.defn(name="Prop.Timers")
class TimerAgent:
    """agent.sleep, then two conditions with a timeout (a poke or the timer wins), then a step
    with a schedule_to_close timeout."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.pokes = 0
        self.received: list[str] = []
        self.finished = False

    @agent.event
    async def poke(self) -> None:
        self.pokes += 1

    @agent.event
    async def finish(self) -> None:
        self.finished = True

    @agent.run
    async def run(self) -> list[str]:
        await agent.sleep(10)
        self.log.append("slept")
        for round_ in range(2):
            try:
                await condition(lambda: self.pokes > round_, timeout=timedelta(seconds=30))
                self.log.append(f"poked-{round_}")
            except TimeoutError:
                self.log.append(f"timeout-{round_}")
        await _step(self, "timers", schedule_to_close_timeout=6)
        await condition(lambda: self.finished)
        return self.log


@agent.defn(name="Prop.Marathon")
class MarathonAgent:
    """should_continue_as_new: each run does a step, then waits for `end` or a long journal."""

    def __init__(self) -> None:
        self.runs = 0
        self.ticks = 0
        self.received: list[str] = []
        self.ended = False

    @agent.event
    async def tick(self) -> None:
        self.ticks += 1

    @agent.event
    async def end(self) -> None:
        self.ended = True

    @agent.run
    async def run(self, generation: int = 0) -> dict[str, int]:
        self.runs += 1
        await _step(self, f"generation-{generation}")
        await condition(lambda: self.ended or agent.should_continue_as_new())
        if not self.ended:
            agent.agent_continue_as_new(input=generation + 1)
        return {"runs": self.runs, "ticks": self.ticks, "generation": generation}


@agent.defn(name="Prop.Handlers")
class HandlersAgent:
    """Event handlers that await steps with a start_to_close timeout (issue 7 item 1's shape)."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.busy = 0
        self.ended = False

    @agent.event
    async def work(self, n: int) -> str:
        self.busy += 1
        seen = await _step(self, f"work-{n}", start_to_close_timeout=5)
        self.busy -= 1
        return seen

    @agent.event
    async def end(self) -> None:
        self.ended = True

    @agent.run
    async def run(self) -> list[str]:
        await condition(lambda: self.ended and self.busy == 0)
        return sorted(self.received)


@agent.defn(name="Prop.Local")
class LocalAgent:
    """Local steps (run inside the turn) mixed with worker steps, a gather of both, and event
    handlers that run one local step each."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.busy = 0
        self.ended = False

    @agent.event
    async def work(self, n: int) -> str:
        self.busy += 1
        seen = await _local(self, f"work-{n}" if n % 3 else f"work-{n}-flaky")
        self.busy -= 1
        return seen

    @agent.event
    async def end(self) -> None:
        self.ended = True

    @agent.run
    async def run(self) -> list[str]:
        await _local(self, "first")
        await _step(self, "worker")
        await asyncio.gather(_local(self, "pair-flaky"), _step(self, "pair-worker"), _local(self, "pair-bad"))
        await condition(lambda: self.ended and self.busy == 0)
        return sorted(self.received)


# -- how the test drives them ---------------------------------------------------------------

Applied = list[tuple[str, Any]]  # (event, payload) of the events the agent took, in order
Check = Callable[[AgentRecord, Applied], None]


@dataclass(frozen=True)
class Shape:
    agent_type: str
    events: tuple[str, ...]  # what may be sent at any time (repeat one to send it more often)
    ending: str  # sent at the end, once per round, until the agent ends
    check: Check  # of the final record, given how many of each event were applied
    payload: Callable[[str, int], Any] = lambda event, n: None


def _count(applied: Applied, name: str) -> int:
    return sum(1 for event, _ in applied if event == name)


def _check_loop(record: AgentRecord, applied: Applied) -> None:
    assert record.result == 3
    assert step_inputs(record) == ["loop-1", "loop-2", "loop-3"]
    assert record.fields["pending"] == _count(applied, "bump") - 3
    assert record.fields["notes"] == [payload for event, payload in applied if event == "note"]


def _check_gather(record: AgentRecord, applied: Applied) -> None:
    assert sorted(step_inputs(record)) == ["gather-a", "gather-b", "gather-c", "gather-d"]
    assert [r.partition("=")[0] for r in record.result] == ["gather-a", "gather-b", "gather-c"]  # type: ignore[union-attr]


def _check_parent(record: AgentRecord, applied: Applied) -> None:
    assert step_inputs(record) == ["parent"]
    kids = record.fields["kids"]
    assert isinstance(kids, list) and len(kids) == 3 and kids[0] == f"{record.agent_id}-side"
    for kid, name in zip(kids[1:], ("x", "y")):
        assert kid == "child failed: failed" or str(kid).startswith(f"kid-{name}="), kid


def _check_timers(record: AgentRecord, applied: Applied) -> None:
    log = record.fields["log"]
    assert isinstance(log, list) and log[0] == "slept" and len(log) == 3
    assert {log[1], log[2]} <= {"poked-0", "timeout-0", "poked-1", "timeout-1"}
    assert step_inputs(record) == ["timers"]


def _check_marathon(record: AgentRecord, applied: Applied) -> None:
    result = record.result
    assert isinstance(result, dict)
    assert result["ticks"] == _count(applied, "tick") and result["runs"] == result["generation"] + 1
    assert step_inputs(record) == [f"generation-{g}" for g in range(result["runs"])]  # type: ignore[arg-type]


def _check_handlers(record: AgentRecord, applied: Applied) -> None:
    assert sorted(step_inputs(record)) == sorted(f"work-{n}" for event, n in applied if event == "work")
    assert record.fields["busy"] == 0


def _check_local(record: AgentRecord, applied: Applied) -> None:
    received = record.fields["received"]
    assert isinstance(received, list)
    works = sorted(f"work-{n}" if n % 3 else f"work-{n}-flaky" for event, n in applied if event == "work")
    assert sorted(step_inputs(record)) == sorted(["first", "worker", "pair-flaky", "pair-worker", "pair-bad", *works])
    assert "first=first@local" in received and "pair-bad=failed:TerminalError" in received
    assert "pair-flaky=pair-flaky@local" in received
    assert record.fields["busy"] == 0


SHAPES = {
    "loop": Shape("Prop.Loop", ("bump", "note"), "bump", _check_loop, lambda event, n: f"note-{n}" if event == "note" else None),
    "gather": Shape("Prop.Gather", ("finish",), "finish", _check_gather),
    "children": Shape("Prop.Parent", ("finish",), "finish", _check_parent),
    # "cancel" is sent as a CancelAgent with cancel_children: every child must end too
    "cancel": Shape("Prop.Parent", ("finish", "cancel"), "finish", _check_parent),
    "timers": Shape("Prop.Timers", ("poke", "finish"), "finish", _check_timers),
    "continue_as_new": Shape("Prop.Marathon", ("tick", "tick", "tick", "end"), "end", _check_marathon),
    "handlers": Shape("Prop.Handlers", ("work", "end"), "end", _check_handlers,
                      lambda event, n: n if event == "work" else None),
    "local_steps": Shape("Prop.Local", ("work", "end"), "end", _check_local,
                         lambda event, n: n if event == "work" else None),
}

ENDED = {AgentStatus.COMPLETED, AgentStatus.FAILED, AgentStatus.CANCELLED}


# -- the environment's side: what workers and the timer service send ---------------------------


def source_of(message: Input) -> str:
    return "step-results" if isinstance(message, (StepResult, StepProgress)) else "agent-events"


def step_inputs(record: AgentRecord) -> list[str]:
    """The inputs of the steps whose outcome the agent received, in order."""
    received = record.fields.get("received") or []
    assert isinstance(received, list)
    return [str(seen).partition("=")[0] for seen in received]


def current(record: AgentRecord | None, command: StepCommand) -> bool:
    """Whether `command` is the attempt its step waits for."""
    step = record.steps.get(command.step_id) if record is not None else None
    return record is not None and record.run_id == command.run_id and step is not None and step.attempt == command.attempt


def worker_result(command: StepCommand, outcome: str, *, attempt: int | None = None) -> StepResult:
    """A worker's answer: "ok" (output `<input>@<attempt>`), "retryable" or "fatal"."""
    error = None
    if outcome != "ok":
        error = StepError(type="Flaky" if outcome == "retryable" else "Fatal", message=outcome,
                          retryable=outcome == "retryable")
    return StepResult(
        agent_id=command.agent_id, run_id=command.run_id, step_id=command.step_id,
        attempt=attempt or command.attempt, function=command.function, ok=outcome == "ok",
        output=f"{command.input}@{command.attempt}" if outcome == "ok" else None, error=error,
        command_id=command.message_id,
    )


def timer_fire(agent_id: str, run_id: str, timer_id: str, due: datetime) -> TimerFired:
    """As the processor's timer service sends it (the same ID for every send of one due time)."""
    return TimerFired(message_id=derived_message_id(run_id, f"timer:{timer_id}:{due.isoformat()}"),
                      agent_id=agent_id, run_id=run_id, timer_id=timer_id, fire_at=due)
