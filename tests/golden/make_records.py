"""Writes the golden records: stored records of agents mid-flight, with what comes next.

Each shape is driven through the real `DurableEngine`, input by input, as a processor
would (inputs decoded from their bytes, with their topic, partition and offset, the
sealed `stored` bytes read back). At a marked point the agent's stored record is kept;
the inputs applied after it, the label each got, what they sent, and the end the agent
reached are kept with it. tests/unit/test_golden_records.py loads these files with the
current code and checks that the agents still get there.

Everything is deterministic: a fixed clock (also standing in for the wall clock that
envelopes' `sent_at` defaults read), fixed message IDs, and the agents' uuid/random
draws derive from run IDs. Running it twice writes byte-identical files.

Usage (see README.md for when this is legitimate):
    .venv/bin/python tests/golden/make_records.py [OUT_DIR]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any
from unittest import mock

if __package__ in (None, ""):  # run as a script: make the `golden` folder importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentstream.agents._registry import AgentDefinition, agent_definition
from agentstream.streams.engine import AgentRecord, DurableEngine, EngineConfig, Origin, TurnOutcome
from agentstream.streams.engine.base import Input
from agentstream.streams.engine.replay import pending_seqs
from agentstream.topics import (
    AgentStatus,
    ScheduleAgent,
    SendEvent,
    StepCommand,
    StepError,
    StepProgress,
    StepResult,
    TimerFired,
    decode_agent_input,
    decode_step_result,
)
from agentstream.topics import _envelopes

from golden import agents  # noqa: F401  (registers the agent shapes)

RECORDS = Path(__file__).resolve().parent / "records"
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)
CONFIG = EngineConfig(task_queue="golden")
Lookup = Callable[[str], AgentDefinition]


# --- the clock ----------------------------------------------------------------------------------


@contextlib.contextmanager
def frozen_wall_clock(now: datetime) -> Iterator[None]:
    """Envelopes the engine builds without a `sent_at` (child schedules, reports to a
    parent, cancels, dead letters) take the wall clock; here they take `now`."""

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
            return now.astimezone(tz) if tz is not None else now.replace(tzinfo=None)

    with mock.patch.object(_envelopes, "datetime", Frozen):
        yield


# --- what a golden file holds ---------------------------------------------------------------


@dataclass
class Golden:
    """One file being written: the record at the mark, then what followed."""

    shape: str
    state: str
    description: str
    record: AgentRecord
    stored: bytes
    next: list[dict[str, Any]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.shape}-{self.state}"


def loaded_summary(record: AgentRecord) -> dict[str, Any]:
    """What the stored record says about the agent; a reader of it must see the same."""
    return {
        "agent_type": record.agent_type,
        "status": record.status.value,
        "journal": len(record.journal),
        "compactions": record.compactions,
        "waiting_on": sorted(pending_seqs(record)),
        "timers": sorted(record.timers),
        "parked": len(record.parked),
    }


def end_summary(record: AgentRecord) -> dict[str, Any]:
    """The end an agent reached: what its users see."""
    return {
        "status": record.status.value,
        "result": record.result,
        "error": record.error,
        "fields": record.fields,
        "events": [
            {"name": e.name, "done": e.done, "result": e.result, "error": e.error} for e in record.events
        ],
    }


def sent_summary(outcome: TurnOutcome) -> list[dict[str, Any]]:
    """What a turn sent that other parties act on: step commands and agent-events records."""
    sent: list[dict[str, Any]] = []
    for item in outcome.publish:
        value = item.value
        if item.topic == "step-commands":
            sent.append({"topic": item.topic, "function": value["function"], "input": value["input"],
                         "step_id": value["step_id"], "attempt": value["attempt"]})
        elif item.topic == "agent-events":
            summary = {"topic": item.topic, "kind": value["kind"], "agent_id": value["agent_id"]}
            if value["kind"] == "child_result":
                summary.update(status=value["status"], result=value["result"])
            sent.append(summary)
    return sent


def document(golden: Golden, end: AgentRecord) -> dict[str, Any]:
    return {
        "shape": golden.shape,
        "state": golden.state,
        "description": golden.description,
        "agent_id": golden.record.agent_id,
        "format": golden.record.format,
        "engine": {"task_queue": CONFIG.task_queue},
        "loaded": loaded_summary(golden.record),
        "stored": golden.stored.decode(),
        "next": golden.next,
        "expect": {"labels": golden.labels, "sent": golden.sent, **end_summary(end)},
    }


# --- driving one shape ---------------------------------------------------------------------------


class World:
    """One engine (a processor) and the records it keeps, with a clock and topic offsets."""

    def __init__(self, shape: str) -> None:
        self.shape = shape
        self.engine = DurableEngine(CONFIG)
        self.now = T0
        self.records: dict[str, AgentRecord] = {}
        self.stored: dict[str, bytes] = {}
        self.offsets: dict[str, int] = {}
        self.count = 0
        self.recording: dict[str, Golden] = {}

    # -- inputs, each with a fixed message ID and sent now

    def _envelope(self) -> dict[str, Any]:
        self.count += 1
        return {"message_id": f"golden-{self.shape}-{self.count:03d}", "sent_at": self.now}

    def schedule(self, agent_type: str, agent_id: str, value: Any) -> ScheduleAgent:
        return ScheduleAgent(agent_id=agent_id, agent_type=agent_type, input=value, **self._envelope())

    def event(self, agent_id: str, name: str, payload: Any = None, key: str | None = None) -> SendEvent:
        return SendEvent(agent_id=agent_id, event=name, payload=payload, idempotency_key=key, **self._envelope())

    def progress(self, command: StepCommand) -> StepProgress:
        return StepProgress(agent_id=command.agent_id, run_id=command.run_id, step_id=command.step_id,
                            attempt=command.attempt, function=command.function, event="started",
                            command_id=command.message_id, **self._envelope())

    def result(self, command: StepCommand, output: Any = None, error: str | None = None) -> StepResult:
        return StepResult(agent_id=command.agent_id, run_id=command.run_id, step_id=command.step_id,
                          attempt=command.attempt, function=command.function, ok=error is None, output=output,
                          error=None if error is None else StepError(type=error, message=f"{error} happened"),
                          duration_s=0.25, command_id=command.message_id, **self._envelope())

    def fire(self, agent_id: str, timer_id: str, fire_at: datetime | None = None) -> TimerFired:
        record = self.records[agent_id]
        return TimerFired(agent_id=agent_id, run_id=record.run_id, timer_id=timer_id,
                          fire_at=fire_at or record.timers[timer_id], **self._envelope())

    # -- applying them as a processor does

    async def apply(self, message: Input, *, at: datetime | None = None) -> TurnOutcome:
        self.now = max(at, self.now) if at is not None else self.now + timedelta(seconds=1)
        topic = "step-results" if isinstance(message, (StepResult, StepProgress)) else "agent-events"
        offset = self.offsets[topic] = self.offsets.get(topic, -1) + 1
        value = message.to_bytes()
        decoded = decode_step_result(value) if topic == "step-results" else decode_agent_input(value)
        origin = Origin(topic=topic, partition=0, offset=offset, key=message.key, value=value)
        with frozen_wall_clock(self.now):
            outcome = await self.engine.apply(self.records.get(message.agent_id), decoded, self.now, origin)
        if outcome.stored is not None:
            self.records[message.agent_id] = AgentRecord.from_bytes(outcome.stored)
            self.stored[message.agent_id] = outcome.stored
        golden = self.recording.get(message.agent_id)
        if golden is not None:
            golden.next.append({"at": self.now.isoformat(), "topic": topic, "partition": 0, "offset": offset,
                                "value": json.loads(value)})
            golden.labels.append(outcome.label)
            golden.sent += sent_summary(outcome)
        return outcome

    def deploy(self, lookup: Lookup) -> None:
        """Processors restart with other code: live state is gone, the next turn replays."""
        self.engine.close()
        self.engine = DurableEngine(CONFIG, lookup)

    def mark(self, agent_id: str, state: str, description: str) -> AgentRecord:
        """Keep the agent's stored record as it is now; record what follows."""
        record = self.records[agent_id]
        self.recording[agent_id] = Golden(self.shape, state, description, record, self.stored[agent_id])
        return record

    def finish(self) -> list[tuple[str, dict[str, Any]]]:
        self.engine.close()
        return [(g.name, document(g, self.records[agent_id])) for agent_id, g in self.recording.items()]


def only_command(outcome: TurnOutcome) -> StepCommand:
    assert len(outcome.commands) == 1, outcome.commands
    return outcome.commands[0]


# --- the shapes ----------------------------------------------------------------------------------------


async def pipeline() -> World:
    w, agent_id = World("pipeline"), "golden-pipeline"
    first = only_command(await w.apply(w.schedule("Golden.Pipeline", agent_id, {"id": "o-1", "items": ["apple", "pear"]})))
    await w.apply(w.progress(first))
    second = only_command(await w.apply(w.result(first, "O-1")))
    await w.apply(w.progress(second))
    record = w.mark(agent_id, "awaiting-second-step", "three steps in a row; the first done, the second started")
    assert pending_seqs(record) == {2} and len(record.journal) == 1
    third = only_command(await w.apply(w.result(second, 20)))
    await w.apply(w.result(third, "shipped:o-1"))
    return w


async def ledger() -> World:
    w, agent_id = World("loop"), "golden-ledger"
    await w.apply(w.schedule("Golden.Ledger", agent_id, "acc-7"))
    await w.apply(w.event(agent_id, "post", {"label": "rent", "amount": -500}))
    await w.apply(w.event(agent_id, "post", {"label": "salary", "amount": 2000}))
    record = w.mark(agent_id, "compacted", "a loop whose locals a restart rebuilds, waiting on a condition; compacted")
    assert record.compactions >= 1 and not record.journal
    await w.apply(w.event(agent_id, "post", {"label": "food", "amount": -120}))
    await w.apply(w.event(agent_id, "close"))
    return w


async def countdown() -> World:
    w, agent_id = World("loop"), "golden-countdown"
    await w.apply(w.schedule("Golden.Countdown", agent_id, 4))
    await w.apply(w.event(agent_id, "bump", key="bump-1"))
    await w.apply(w.event(agent_id, "bump", key="bump-2"))
    record = w.mark(agent_id, "not-compacted",
                    "a loop whose counter only its frame holds, waiting on a condition; compaction refused")
    assert len(record.journal) == 2
    await w.apply(w.event(agent_id, "bump", key="bump-2"))  # a client's retry: a duplicate
    await w.apply(w.event(agent_id, "bump", key="bump-3"))  # a wrong compaction here would reset `seen`
    await w.apply(w.event(agent_id, "bump", key="bump-4"))
    return w


async def gather() -> World:
    w, agent_id = World("gather"), "golden-gather"
    outcome = await w.apply(w.schedule("Golden.Gather", agent_id, ["a", "b", "c"]))
    a, b, c = outcome.commands
    await w.apply(w.result(b, "bb"))
    record = w.mark(agent_id, "one-of-three-done", "asyncio.gather of three steps, the middle one completed")
    assert pending_seqs(record) == {1, 3}
    await w.apply(w.result(c, "cc"))
    await w.apply(w.result(a, "aa"))
    return w


async def parent_and_child() -> World:
    w, parent_id = World("children"), "golden-parent"
    outcome = await w.apply(w.schedule("Golden.Parent", parent_id, "hello"))
    (child_schedule,) = outcome.messages
    assert isinstance(child_schedule, ScheduleAgent)
    command = only_command(await w.apply(child_schedule))
    w.mark(parent_id, "parent-awaiting-child", "a parent waiting on the child it started with child_execute")
    w.mark(child_schedule.agent_id, "child-awaiting-step", "a child (with its parent reference) waiting on a step")
    (report,) = (await w.apply(w.result(command, "HELLO"))).messages
    await w.apply(report)  # type: ignore[arg-type]
    return w


async def sleeper() -> World:
    w, agent_id = World("timer"), "golden-sleeper"
    await w.apply(w.schedule("Golden.Sleeper", agent_id, 30))
    record = w.mark(agent_id, "sleeping", "sleeping 30 days on a durable timer")
    due = record.timers["t:1"]
    await w.apply(w.fire(agent_id, "t:1", fire_at=due - timedelta(days=29)))  # stale or forged: ignored
    await w.apply(w.fire(agent_id, "t:1"), at=due)
    return w


async def retrier() -> World:
    w, agent_id = World("retry"), "golden-retrier"
    first = only_command(await w.apply(w.schedule("Golden.Retrier", agent_id, 21)))
    await w.apply(w.progress(first))
    await w.apply(w.result(first, error="Flaky"))
    record = w.mark(agent_id, "in-backoff", "a step's first attempt failed; waiting on the retry backoff timer")
    assert "retry:1" in record.timers and record.steps["1"].attempt == 2
    second = only_command(await w.apply(w.fire(agent_id, "retry:1"), at=record.timers["retry:1"]))
    await w.apply(w.progress(second))
    await w.apply(w.result(second, 42))
    return w


async def rolling() -> World:
    w, agent_id = World("continue-as-new"), "golden-rolling"
    await w.apply(w.schedule("Golden.Rolling", agent_id, 2))
    await w.apply(w.event(agent_id, "add", 1))
    old = only_command(await w.apply(w.event(agent_id, "add", 2)))
    await w.apply(w.result(old, 3))
    await w.apply(w.event(agent_id, "add", 5))
    record = w.mark(agent_id, "once", "continued as new once; the new run waits on a condition")
    assert record.run_id != old.run_id and record.fields["generation"] == 2
    await w.apply(w.result(old, 3))  # the old run's result redelivered by a worker: ignored
    command = only_command(await w.apply(w.event(agent_id, "add", 6)))
    await w.apply(w.result(command, 11))
    return w


async def desk() -> World:
    w, agent_id = World("event-handler"), "golden-desk"
    await w.apply(w.schedule("Golden.Desk", agent_id, None))
    command = only_command(await w.apply(w.event(agent_id, "ask", "why?", key="ask-1")))
    record = w.mark(agent_id, "awaiting-step", "an event handler awaits a step while run waits on a condition with a timeout")
    assert pending_seqs(record) == {1, 2}
    await w.apply(w.result(command, "because"))
    await w.apply(w.event(agent_id, "close"))
    return w


async def stuck() -> World:
    w, agent_id = World("stuck"), "golden-fixable"
    check = only_command(await w.apply(w.schedule("Golden.Fixable", agent_id, "topic-x")))
    await w.apply(w.event(agent_id, "note", "a"))

    def bad_deploy(name: str) -> AgentDefinition:
        return agent_definition("Golden.FixableBadDeploy" if name == "Golden.Fixable" else name)

    w.deploy(bad_deploy)
    await w.apply(w.result(check, True))
    await w.apply(w.event(agent_id, "note", "b"))
    record = w.mark(agent_id, "parked-inputs",
                    "stuck after an incompatible deploy, holding a step result and an event; the fix is deployed")
    assert record.status is AgentStatus.STUCK and len(record.parked) == 2
    w.deploy(agent_definition)  # the fix: the code the record was written by
    publish = only_command(await w.apply(w.event(agent_id, "close")))
    await w.apply(w.result(publish, "a,b"))
    return w


SHAPES: tuple[Callable[[], Awaitable[World]], ...] = (
    pipeline, ledger, countdown, gather, parent_and_child, sleeper, retrier, rolling, desk, stuck,
)


async def generate(out_dir: Path) -> list[Path]:
    """Write every golden file into `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for shape in SHAPES:
        world = await shape()
        for name, doc in world.finish():
            path = out_dir / f"{name}.json"
            path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            written.append(path)
    return written


def main(argv: list[str]) -> None:
    # The stuck shape's bad deploy logs "agent stuck" on purpose; nothing else is logged.
    logging.getLogger("agentstream.engine").setLevel(logging.CRITICAL)
    out_dir = Path(argv[1]) if len(argv) > 1 else RECORDS
    for path in asyncio.run(generate(out_dir)):
        print(path)


if __name__ == "__main__":
    main(sys.argv)
