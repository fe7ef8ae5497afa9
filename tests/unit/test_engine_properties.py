"""Property test of the durable engine: crashes change nothing (issue 7, "Proof that lasts").

Local steps (`agent.step(..., local=True)`) are run by both worlds' engines with the
processor's runner, inside the turn: a crash that loses a turn runs them again.

Two worlds take the same inputs in lockstep, each with its own engine and stored
records: a calm one, and one that also crashes. The environment is a queue of what is
pending (step commands no worker took yet, agent-events records and worker results not
yet delivered, armed timers); hypothesis picks the next action from it:

- deliver a pending record (the oldest of its agent on its topic: Kafka keeps a key's
  order); a worker completes a command, fails it (retryable or not), or reports it
  started; a timer fires at its due time;
- inputs that must be ignored: a duplicate of a delivered result, a late result for an
  attempt no longer current, a result for the wrong attempt, a timer fire that is early
  or for a due time no longer armed, the root's schedule again;
- an event from the client (the shape's events, in any order; "cancel" is a CancelAgent
  with cancel_children);
- crashes, in the crashing world only: a restart (the live agents are dropped and the
  next turn replays the stored record); a redelivery of an input already applied (with
  its offset: the engine must answer `redelivered`); a lost write (the record goes back
  one turn, the live agent is dropped or left stale, and that turn's input comes again:
  it must be applied again with the same outputs, at the same time or later, also when
  the engine is not told its offset); a crash after the record was written but before
  its outputs went out (the input is redelivered before the next record of its
  partition, but the agent's records on the other topic may come first: the stored
  outbox, published again when the restarted process first touches the agent, must
  carry them); and delivering the records a crash published again.

After every action both worlds must hold the same records (but for delivery offsets
and the last turn's outbox) and have published the same message IDs with the same
contents, and no agent may have received a step result twice. After at most
MAX_ACTIONS actions everything pending is drained and the root is sent its ending
event until every agent ended; then the shape's own check runs on the calm result.

AGENTSTREAM_PROPERTY_EXAMPLES sets the examples per shape (default 25).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from collections.abc import Awaitable
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agentstream.streams.engine import AgentRecord, DurableEngine, EngineConfig, Input, Origin, OutboxItem, TurnOutcome
from agentstream.streams.engine.dedup import FIRE_TOLERANCE
from agentstream.streams.processor.local_steps import ProcessorLocalSteps
from agentstream.topics import (
    AgentStatus,
    CancelAgent,
    ScheduleAgent,
    SendEvent,
    StepCommand,
    StepProgress,
    StepResult,
    decode_agent_input,
)
from property_agents import (
    ENDED,
    SHAPES,
    Shape,
    current,
    source_of,
    step_inputs,
    timer_fire,
    worker_result,
)

LOCAL_STEPS = ProcessorLocalSteps()  # the processor's runner of local steps (the Prop.Local shape's)
EXAMPLES = int(os.environ.get("AGENTSTREAM_PROPERTY_EXAMPLES", "25"))
MAX_ACTIONS = 40
MAX_EVENTS = 8
MAX_ROUNDS = 8
MAX_DRAIN = 400
CONFIG = EngineConfig(turn_timeout_s=120.0, continue_as_new_after=3)
T0 = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)
TICK = timedelta(seconds=1)
LATER = timedelta(seconds=0.5)  # a redelivery's delay that keeps every timer as early or due as it was
ROOT = "root"
VOLATILE = {"sent_at", "rejected_at"}  # wall-clock stamps of envelopes the engine builds without `now`
IGNORED = {"ignored", "duplicate"}


@dataclass
class Turn:
    """One input applied in one world, with the record it was applied to."""

    before: AgentRecord | None
    message: Input
    origin: Origin
    now: datetime
    outcome: TurnOutcome
    fresh: list[str] = field(default_factory=list)  # the keys of `published` this turn added
    told: bool = True  # the engine was told the input's offset


class World:
    """What one processor holds: an engine, the stored records, what it published.

    It publishes as the processor's InputHandler does: a turn's outbox once its record is
    stored, and, the first time this process touches an agent whose stored record it did not
    write itself (after a restart, or a write it did not see through), that record's outbox
    again before anything is applied; a redelivered input publishes nothing more.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.engine = DurableEngine(CONFIG, local_steps=LOCAL_STEPS)
        self.records: dict[str, AgentRecord] = {}
        self.published: dict[str, dict[str, Any]] = {}  # "topic:message_id" -> value without VOLATILE
        self.conflicts: list[str] = []
        self.turns: list[Turn] = []  # every turn that stored a record
        self.last: Turn | None = None  # the previous action's turn, if it stored a record
        self.settled: dict[str, AgentRecord] = {}  # the records this process wrote and published

    async def apply(
        self, message: Input, origin: Origin, now: datetime, *, tell_offset: bool = True
    ) -> tuple[TurnOutcome, list[OutboxItem], list[OutboxItem]]:
        """As the processor's handler: recover an unsettled record, apply, store, publish.

        Returns the outcome, what was published, and the part of it published before."""
        agent_id = message.agent_id
        before = self.records.get(agent_id)
        recovered = list(before.outbox) if before is not None and self.settled.get(agent_id) is not before else []
        outcome = await self.engine.apply(before, message, now, origin if tell_offset else None)
        sent = recovered + list(outcome.publish)
        turn = Turn(before, message, origin, now, outcome, told=tell_offset)
        self.last = None
        if before is not None:
            self.settled[agent_id] = before
        if outcome.stored is not None:
            self.records[agent_id] = self.settled[agent_id] = AgentRecord.from_bytes(outcome.stored)
            self.last = turn
            self.turns.append(turn)
        again = []
        for item in sent:
            value = {k: v for k, v in item.value.items() if k not in VOLATILE}
            key = f"{item.topic}:{item.value['message_id']}"
            if key in self.published:
                again.append(item)
            else:
                turn.fresh.append(key)
            if self.published.setdefault(key, value) != value:
                self.conflicts.append(f"{key} published as {self.published[key]} and as {value}")
        return outcome, sent, again

    def restart(self) -> None:
        self.engine.close()
        self.engine = DurableEngine(CONFIG, local_steps=LOCAL_STEPS)
        self.last = None
        self.settled = {}


def view(record: AgentRecord) -> dict[str, Any]:
    """What must agree between the worlds: all but delivery offsets and the last turn's outbox
    (an ignored duplicate in one world stores the record with its offset and an empty outbox)."""
    return record.model_dump(mode="json", exclude={"delivery", "outbox"})


def stable(record: AgentRecord) -> dict[str, Any]:
    """The whole record but the wall-clock stamps of the envelopes in its outbox."""
    dumped = record.model_dump(mode="json")
    for item in dumped["outbox"]:
        item["value"] = {k: v for k, v in item["value"].items() if k not in VOLATILE}
    return dumped


@dataclass
class Env:
    """Everything pending, as the calm world published it; shared by both worlds."""

    now: datetime = T0
    offset: int = 0
    inbox: dict[str, Input] = field(default_factory=dict)  # records to deliver, by message ID
    commands: dict[str, StepCommand] = field(default_factory=dict)  # no worker took them yet
    started: set[str] = field(default_factory=set)
    all_commands: dict[str, StepCommand] = field(default_factory=dict)
    results: dict[str, StepResult] = field(default_factory=dict)  # a command's first result
    delivered: dict[str, Input] = field(default_factory=dict)
    armed: dict[tuple[str, str, str, datetime], None] = field(default_factory=dict)  # agent, timer, run, due
    events_sent: int = 0
    applied: list[tuple[str, Any]] = field(default_factory=list)  # events the root took
    echoes: list[Input] = field(default_factory=list)  # delivered records a crash published again
    deferred: dict[str, Input] = field(default_factory=dict)  # echoes of records not delivered yet

    def origin(self, message: Input) -> Origin:
        """The next offset: offsets are handed out in delivery order, as a partition's consumer sees them."""
        self.offset += 1
        return Origin(source_of(message), 0, self.offset, message.key, message.to_bytes())

    def deliverable(self) -> list[str]:
        """The oldest pending record of each agent on each topic: Kafka keeps a key's order."""
        firsts: dict[tuple[str, str], str] = {}
        for key, message in self.inbox.items():
            firsts.setdefault((source_of(message), message.agent_id), key)
        return list(firsts.values())

    def observe(self, sent: list[OutboxItem], records: dict[str, AgentRecord]) -> None:
        for item in sent:
            message_id = str(item.value["message_id"])
            if item.topic == "step-commands" and message_id not in self.all_commands:
                command = StepCommand.model_validate(item.value)
                self.all_commands[message_id] = self.commands[message_id] = command
            elif item.topic == "agent-events" and message_id not in self.delivered:
                self.inbox.setdefault(message_id, decode_agent_input(json.dumps(item.value).encode()))
        for record in records.values():
            for timer_id, due in record.timers.items():
                self.armed[(record.agent_id, timer_id, record.run_id, due)] = None

    def echo(self, again: list[OutboxItem]) -> None:
        """Records the crashing world published again: Kafka has them twice, the copy comes after
        the original (a command run again by the worker gives the same result again)."""
        for item in again:
            message_id = str(item.value["message_id"])
            if item.topic == "agent-events":
                self._echo(self.delivered.get(message_id) or self.inbox.get(message_id))
            elif item.topic == "step-commands" and message_id in self.results:
                self._echo(self.results[message_id])

    def _echo(self, message: Input | None) -> None:
        if message is None:
            return
        if message.message_id in self.delivered:
            self.echoes.append(message)
        else:
            self.deferred[message.message_id] = message

    def consumed(self, message: Input) -> None:
        self.delivered[message.message_id] = message
        later = self.deferred.pop(message.message_id, None)
        if later is not None:
            self.echoes.append(later)


Action = tuple[Any, ...]


class Run:
    """One example: the two worlds, the environment, and the actions that drive them."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.calm, self.crashy = World("calm"), World("crashy")
        self.env = Env()
        self.schedule = ScheduleAgent(agent_id=ROOT, agent_type=shape.agent_type)
        self.trail: list[Action] = []
        self.owed: Turn | None = None  # a turn whose outputs a crash lost, until its input comes again
        self.unnoted: set[int] = set()  # offsets the crashing world applied without telling the engine
        self.first_run_id = ""

    # -- applying inputs ---------------------------------------------------------------

    async def both(self, message: Input, *, expect: set[str] | None = None) -> str:
        """Apply `message` in both worlds (calm first: the environment follows it); the label."""
        env = self.env
        origin = env.origin(message)
        calm, calm_sent, _ = await self.calm.apply(message, origin, env.now)
        env.observe(calm_sent, self.calm.records)
        if self.owed is not None and self.owed.origin.source == origin.source:
            await self.pay()  # before the next record of its partition; the other topic may come first
        crash, _, again = await self.crashy.apply(message, origin, env.now)
        env.echo(again)
        assert crash.label == calm.label, f"{message!r}: {calm.label} calm, {crash.label} after crashes"
        if expect is not None:
            assert calm.label in expect, f"{message!r} was {calm.label}, expected {expect}: {calm.rejection}"
        if isinstance(message, SendEvent) and message.agent_id == ROOT and calm.label == "applied":
            env.applied.append((message.event, message.payload))
        return calm.label

    async def only_crashy(
        self, message: Input, origin: Origin, now: datetime, *, tell_offset: bool = True
    ) -> TurnOutcome:
        outcome, _, again = await self.crashy.apply(message, origin, now, tell_offset=tell_offset)
        self.env.echo(again)
        return outcome

    # -- the actions -------------------------------------------------------------------

    def choices(self) -> dict[str, list[Action]]:
        env, calm = self.env, self.calm
        records = calm.records
        timers = [(a, t, d) for a, r in records.items() for t, d in r.timers.items()]
        stale = [k for k in env.armed if records[k[0]].timers.get(k[1]) != k[3] or records[k[0]].run_id != k[2]]
        late = [c for c, cmd in env.all_commands.items()
                if c not in env.commands and not current(records.get(cmd.agent_id), cmd)]
        turns = self.crashy.turns
        eligible = [i for i, turn in enumerate(turns) if turn.origin.offset not in self.unnoted][-6:]
        last = self.crashy.last
        options: dict[str, list[Action]] = {
            "deliver": [("deliver", k) for k in env.deliverable()],
            "work_ok": [("work", c, "ok") for c in env.commands],
            "work_retryable": [("work", c, "retryable") for c in env.commands],
            "work_fatal": [("work", c, "fatal") for c in env.commands],
            "start": [("start", c) for c in env.commands if c not in env.started],
            "event": [("event", e) for e in self.shape.events] if env.events_sent < MAX_EVENTS else [],
            "fire": [("fire", a, t) for a, t, _ in timers],
            "fire_early": [("fire_early", a, t) for a, t, d in timers if d > env.now + TICK + FIRE_TOLERANCE],
            "fire_stale": [("fire_stale", *k) for k in stale[-6:]],
            "duplicate": [("duplicate", c) for c, r in env.results.items() if r.message_id in env.delivered][-6:],
            "late": [("late", c) for c in late[-6:]],
            "wrong_attempt": [("wrong_attempt", c) for c, cmd in env.commands.items()
                              if current(records.get(cmd.agent_id), cmd)],
            "reschedule": [("reschedule",)],
            "crash_restart": [("restart",)],
            "crash_redeliver": [("redeliver", i) for i in eligible],
            "crash_lost_write": [("lose_write", d) for d in self.rewrites(last)],
            "crash_lost_outputs": [("lose_outputs",)] if last and last.told else [],
            "crash_echo": [("echo", i) for i in range(len(env.echoes))][-6:],
        }
        if self.owed is not None:  # until it is redelivered, nothing the lost turn published exists
            withheld = {key.partition(":")[2] for key in self.owed.fresh}
            options = {k: [a for a in v if not (len(a) > 1 and a[1] in withheld)]
                       for k, v in options.items() if not k.startswith("crash_")}
            options["crash_pay"] = [("pay",)]
        return {kind: actions for kind, actions in options.items() if actions}

    @staticmethod
    def rewrites(last: Turn | None) -> list[str]:
        """How the last turn's lost write may be redone: with its live agent dropped or stale, or
        without its offset (not for a rejection: its dead letter's ID is its input's position)."""
        if last is None:
            return []
        return ["forget", "stale_cache"] + (["no_offset"] if not last.outcome.dead_letters else [])

    async def act(self, action: Action) -> None:
        self.trail.append(action)
        env = self.env
        env.now += TICK
        kind = action[0]
        if kind == "deliver":
            message = env.inbox.pop(action[1])
            await self.both(message)
            env.consumed(message)
        elif kind == "work":
            command = env.commands.pop(action[1])
            result = worker_result(command, action[2])
            env.results.setdefault(command.message_id, result)
            env.inbox[result.message_id] = result
        elif kind == "start":
            command = env.commands[action[1]]
            env.started.add(action[1])
            await self.both(StepProgress(agent_id=command.agent_id, run_id=command.run_id, step_id=command.step_id,
                                         attempt=command.attempt, function=command.function, event="started",
                                         command_id=command.message_id))
        elif kind == "event":
            env.events_sent += 1
            name = action[1]
            if name == "cancel":
                await self.both(CancelAgent(agent_id=ROOT, reason="stop", cancel_children=True))
            else:
                await self.both(SendEvent(agent_id=ROOT, event=name, payload=self.shape.payload(name, env.events_sent)))
        elif kind == "fire":
            record = self.calm.records[action[1]]
            due = record.timers[action[2]]
            env.now = max(env.now, due)
            await self.both(timer_fire(record.agent_id, record.run_id, action[2], due), expect={"applied"})
        elif kind == "fire_early":
            record = self.calm.records[action[1]]
            await self.both(timer_fire(record.agent_id, record.run_id, action[2], record.timers[action[2]]),
                            expect={"ignored"})
        elif kind == "fire_stale":
            _, agent_id, timer_id, run_id, due = action
            await self.both(timer_fire(agent_id, run_id, timer_id, due), expect=IGNORED)
        elif kind == "duplicate":
            await self.both(env.results[action[1]], expect=IGNORED)
        elif kind == "late":
            await self.both(worker_result(env.all_commands[action[1]], "ok"), expect=IGNORED)
        elif kind == "wrong_attempt":
            command = env.commands[action[1]]
            await self.both(worker_result(command, "ok", attempt=command.attempt + 1), expect=IGNORED)
        elif kind == "reschedule":
            await self.both(self.schedule, expect=IGNORED)
        else:
            await self.crash(action)
        if kind == "work":  # a worker ran a command: its turn's write was on the changelog
            self.crashy.last = None

    async def crash(self, action: Action) -> None:
        env, crashy = self.env, self.crashy
        kind = action[0]
        if kind == "restart":
            crashy.restart()
        elif kind == "redeliver":
            turn = crashy.turns[action[1]]
            outcome = await self.only_crashy(turn.message, turn.origin, env.now)
            assert outcome.redelivered and outcome.label == "duplicate" and outcome.stored is None, (
                f"a redelivery of {turn.message!r} at offset {turn.origin.offset} was {outcome.label}, "
                f"redelivered={outcome.redelivered}"
            )
        elif kind == "lose_write":
            await self.lose_write(action[1])
        elif kind == "lose_outputs":  # the record was written, then the process died before publishing
            lost = crashy.last
            assert lost is not None
            for key in lost.fresh:
                del crashy.published[key]
            crashy.restart()
            self.owed = lost
        elif kind == "pay":
            await self.pay()
        elif kind == "echo":
            message = env.echoes.pop(action[1])
            unknown = message.agent_id not in crashy.records
            outcome = await self.only_crashy(message, env.origin(message), env.now)
            if unknown and outcome.rejection is not None and outcome.rejection.code == "agent_not_found":
                # no record to remember the first copy by: a second dead letter, at the copy's position
                for letter in outcome.dead_letters:
                    del crashy.published[f"dead-letters:{letter.message_id}"]
                return
            assert outcome.label in IGNORED, f"the echo {message!r} was {outcome.label}: {outcome.rejection}"

    async def lose_write(self, cache: str) -> None:
        """The last turn's record never reached the changelog: the input comes again."""
        crashy = self.crashy
        first = crashy.last
        assert first is not None
        agent_id = first.message.agent_id
        written = crashy.records[agent_id]
        if first.before is None:
            del crashy.records[agent_id]
        else:
            crashy.records[agent_id] = first.before
        if cache != "stale_cache":
            crashy.engine.forget(agent_id)
        told = cache != "no_offset"
        (self.unnoted.discard if told else self.unnoted.add)(first.origin.offset)
        again = await self.only_crashy(first.message, first.origin, first.now, tell_offset=told)
        ids = [item.value["message_id"] for item in again.publish]
        assert (again.label, again.redelivered) == (first.outcome.label, False), again.label
        assert ids == [item.value["message_id"] for item in first.outcome.publish], "the outputs changed"
        later = DurableEngine(CONFIG, local_steps=LOCAL_STEPS)  # a redelivery comes later in truth: the IDs must not depend on time
        try:
            probe = await later.apply(first.before, first.message, first.now + LATER, first.origin if told else None)
        finally:
            later.close()
        assert [item.value["message_id"] for item in probe.publish] == ids, "the outputs changed with the time"
        rewritten, expected = stable(crashy.records[agent_id]), stable(written)
        if not (told and first.told):  # offsets differ; a duplicate without one writes nothing at all
            for part in ("delivery", "outbox"):
                rewritten.pop(part), expected.pop(part)
        assert rewritten == expected, "the input, applied again, wrote another record"

    async def pay(self) -> None:
        """The redelivery a crash that lost a turn's outputs owes."""
        turn, self.owed = self.owed, None
        assert turn is not None
        outcome = await self.only_crashy(turn.message, turn.origin, self.env.now)
        assert outcome.redelivered, f"the redelivery of {turn.message!r} was {outcome.label}"

    # -- the property ------------------------------------------------------------------

    def compare(self) -> None:
        calm, crashy = self.calm, self.crashy
        assert sorted(crashy.records) == sorted(calm.records)
        for agent_id, record in calm.records.items():
            assert view(crashy.records[agent_id]) == view(record), f"{agent_id} differs after {self.trail[-1:]}"
            for world in (calm, crashy):
                inputs = step_inputs(world.records[agent_id])
                assert len(inputs) == len(set(inputs)), f"{agent_id} received a step result twice: {inputs}"
        assert not calm.conflicts and not crashy.conflicts, calm.conflicts + crashy.conflicts
        if self.owed is None:
            missing = sorted(set(calm.published) - set(crashy.published))
            assert not missing, f"never published after the crashes: {missing}"
            assert crashy.published == calm.published

    def next_pending(self) -> Action | None:
        """The drain's next action: echoes, deliveries, commands (completed), the earliest timer."""
        env = self.env
        if self.owed is not None:
            return ("pay",)
        if env.echoes:
            return ("echo", 0)
        if env.inbox:
            return ("deliver", next(iter(env.inbox)))
        if env.commands:
            return ("work", next(iter(env.commands)), "ok")
        timers = [(d, a, t) for a, r in self.calm.records.items() for t, d in r.timers.items()]
        if timers:
            _, agent_id, timer_id = min(timers)
            return ("fire", agent_id, timer_id)
        return None

    async def drain(self) -> None:
        count = 0
        for _ in range(MAX_ROUNDS):
            while (action := self.next_pending()) is not None:
                count += 1
                assert count < MAX_DRAIN, f"the drain does not end: {self.trail[-10:]}"
                await self.act(action)
                self.compare()
            statuses = {agent_id: r.status for agent_id, r in self.calm.records.items()}
            if all(status in ENDED for status in statuses.values()):
                return
            assert statuses[ROOT] not in ENDED, f"nothing pending, yet not every agent ended: {statuses}"
            await self.act(("event", self.shape.ending))
            self.compare()
        raise AssertionError(f"the agents did not end: {statuses}")

    def close(self) -> None:
        self.calm.engine.close()
        self.crashy.engine.close()


async def scenario(shape: Shape, data: st.DataObject) -> None:
    run = Run(shape)
    try:
        await run.both(run.schedule, expect={"applied"})
        run.first_run_id = run.calm.records[ROOT].run_id
        run.compare()
        for _ in range(data.draw(st.integers(0, MAX_ACTIONS), label="actions")):
            options = run.choices()
            kind = data.draw(st.sampled_from(list(options)), label="kind")
            event(kind)
            await run.act(data.draw(st.sampled_from(options[kind]), label="action"))
            run.compare()
        await run.drain()
        for world in (run.calm, run.crashy):
            for record in world.records.values():
                assert record.status in ENDED, f"{world.name}: {record.agent_id} is {record.status}: {record.error}"
        root = run.calm.records[ROOT]
        event(f"root {root.status.value}" + (", continued as new" if root.run_id != run.first_run_id else ""))
        for seen in (s for r in run.calm.records.values() for s in r.fields.get("received") or []):  # type: ignore[union-attr]
            event("a step failed" if "=failed:" in str(seen) else "a step completed")
        if root.status is not AgentStatus.CANCELLED or "cancel" not in shape.events:
            assert root.status is AgentStatus.COMPLETED, root.error
            shape.check(root, run.env.applied)
    finally:
        run.close()


def run_scenario(shape: Shape, data: st.DataObject) -> None:
    loop = asyncio.new_event_loop()  # its own loop: the session loop of pytest-asyncio stays untouched
    try:
        loop.run_until_complete(scenario(shape, data))
    finally:
        loop.close()


@pytest.mark.parametrize("shape", sorted(SHAPES))
@settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_crashes_and_redeliveries_end_where_the_calm_run_ends(shape: str, data: st.DataObject) -> None:
    run_scenario(SHAPES[shape], data)


async def test_the_comparison_notices_a_lost_turn_whose_input_never_comes_again() -> None:
    """The property can fail: a write lost without its input being redelivered shows."""
    run = Run(SHAPES["loop"])
    try:
        await run.both(run.schedule)
        await run.act(("event", "bump"))
        lost = run.crashy.last
        assert lost is not None and lost.before is not None
        run.crashy.records[ROOT] = lost.before
        with pytest.raises(AssertionError, match="root differs"):
            run.compare()
    finally:
        run.close()


# -- what the property found, each as its smallest example ----------------------------------------


class ProcessDied(BaseException):
    """Raised by a publisher to stop the handler where a SIGKILL would: nothing after it runs."""


class _Store(dict[bytes, bytes]):
    def put(self, key: bytes, value: bytes) -> Awaitable[None]:
        self[key] = value
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)  # acknowledged at once
        return done


class _Publisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.dies_on: str | None = None

    async def publish(self, topic: str, key: bytes | None, value: bytes) -> None:
        if topic == self.dies_on:
            raise ProcessDied()
        self.sent.append((topic, json.loads(value)))


async def test_outputs_lost_in_a_crash_are_sent_even_if_another_source_reaches_the_agent_first() -> None:
    """Gather of three steps; step A fails and its retry timer fires: that turn's record is written
    (outbox: A's attempt 2), then the process dies before publishing it. After the restart the
    worker's result for step B (step-results) reaches the agent before the timer fire
    (agent-events) is redelivered, and B's turn replaces the outbox. A's attempt 2 must still be
    sent (before f0f9bf6 it never was: the gather waited forever)."""
    from prometheus_client import CollectorRegistry

    from agentstream.streams.processor.handler import InputHandler
    from agentstream.streams.processor.metrics import ProcessorMetrics
    from agentstream.topics import TopicNames

    names, store = TopicNames("prop."), _Store()
    commands_topic = names.step_commands("restack")

    def processor(publisher: _Publisher) -> InputHandler:
        return InputHandler(names=names, engine=DurableEngine(CONFIG), store=store, publisher=publisher,
                            metrics=ProcessorMetrics.create(CollectorRegistry()), identity="prop")

    async def handle(handler: InputHandler, message: Input, offset: int) -> str:
        topic = names.step_results if isinstance(message, StepResult) else names.agent_events
        return await handler.handle(topic, 0, offset, message.key, message.to_bytes())

    first = _Publisher()
    before = processor(first)
    await handle(before, ScheduleAgent(agent_id=ROOT, agent_type=SHAPES["gather"].agent_type), 0)
    a, b, _ = [StepCommand.model_validate(value) for topic, value in first.sent if topic == commands_topic]
    await handle(before, worker_result(a, "retryable"), 0)
    record = AgentRecord.from_bytes(store[ROOT.encode()])
    fire = timer_fire(ROOT, record.run_id, "retry:1", record.timers["retry:1"])
    first.dies_on = commands_topic
    with pytest.raises(ProcessDied):
        await handle(before, fire, 1)
    assert AgentRecord.from_bytes(store[ROOT.encode()]).steps["1"].attempt == 2  # the write happened

    after = _Publisher()
    restarted = processor(after)
    assert await handle(restarted, worker_result(b, "ok"), 1) == "applied"
    assert await handle(restarted, fire, 1) == "duplicate"  # the fire, redelivered
    resent = [StepCommand.model_validate(value) for topic, value in after.sent if topic == commands_topic]
    assert [(c.step_id, c.attempt) for c in resent] == [(a.step_id, 2)]
