"""`AgentTestEnvironment`: your agents, turn by turn, in your own test, with time you control.

Temporal's time-skipping test environment is the model: no broker, no processes, no
waiting for real time. Each input goes through the same durable engine a processor
runs (same validation, de-duplication, journal, compaction and rejections), every
output it produces is read back from its wire form, step commands are run at once by
your registered functions in this process (as a worker would run them), and durable
timers (`agent.sleep`, `condition(..., timeout=)`, retry back-off, step timeouts) fire
only when the test moves the clock: `skip(...)` explicitly, or `result(...)`, which
jumps to the next due timer whenever the agents have nothing else to do.

    async with AgentTestEnvironment() as env:
        await env.schedule(TaskProcessor, "tp-1")
        await env.send("tp-1", "add_task", {"id": "t1"})
        await env.send("tp-1", "shutdown")
        assert await env.result("tp-1") == ["done t1"]

Nothing is concurrent: inputs are applied in the order they were produced, and each
step runs to completion when its command comes out, so a test is deterministic.
"""

from __future__ import annotations

import json
from collections import deque
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic_core import to_jsonable_python

from agentstream.agents._registry import function_definitions, type_name
from agentstream.agents.exceptions import AgentFailedError, AgentNotFoundError, InputRejectedError, TimeoutError
from agentstream.streams.engine import TERMINAL, AgentRecord, DurableEngine, EngineConfig
from agentstream.streams.engine.base import Input
from agentstream.streams.worker.execute import execute
from agentstream.topics import (
    AgentStatus,
    AgentUpdate,
    CancelAgent,
    DeadLetter,
    ScheduleAgent,
    SendEvent,
    StepCommand,
    StreamEvent,
    TimerFired,
    decode_agent_input,
    decode_step_command,
    decode_step_result,
    derived_message_id,
    run_id_for,
)

MAX_TURNS = 100_000  # per call: a loop of agents messaging each other forever is reported, not run forever


class AgentTestEnvironment:
    """An in-process place to run agents: the engine, your functions, and a clock the test moves."""

    def __init__(self, *, start: datetime | None = None, config: EngineConfig | None = None) -> None:
        self.now = start or datetime.now(timezone.utc)
        self.engine = DurableEngine(config or EngineConfig())
        self.records: dict[str, AgentRecord] = {}
        self.updates: list[AgentUpdate] = []  # what agent-updates would carry, in order
        self.stream: list[StreamEvent] = []  # what agent-stream would carry (steps' live output)
        self.dead_letters: list[DeadLetter] = []
        self.steps_run: list[StepCommand] = []  # every attempt, in order
        self._inputs: deque[Input] = deque()
        self._labels: dict[str, tuple[str, DeadLetter | None]] = {}  # client message ID -> outcome

    async def __aenter__(self) -> AgentTestEnvironment:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.engine.close()

    # -- what a client does ------------------------------------------------------------------

    async def schedule(self, agent_type: str | type, agent_id: str, input: Any = None) -> str:
        """Schedule an agent and run until nothing is left to do without moving the clock; returns the
        run ID. Raises `InputRejectedError` as `AgentClient.schedule_agent(..., wait=...)` would."""
        message = ScheduleAgent(agent_id=agent_id, agent_type=type_name(agent_type), input=to_jsonable_python(input))
        await self._client_input(message)
        return run_id_for(message.message_id)

    async def send(self, agent_id: str, event: str, payload: Any = None, *, idempotency_key: str | None = None) -> str:
        """Send an event and run what follows (not moving the clock); returns its outcome (`applied`,
        `duplicate`, `parked`, `ignored`). Raises `InputRejectedError` when it is dead-lettered."""
        message = SendEvent(agent_id=agent_id, event=event, payload=to_jsonable_python(payload),
                            idempotency_key=idempotency_key)
        return await self._client_input(message)

    async def cancel(self, agent_id: str, reason: str | None = None, *, cancel_children: bool = False) -> str:
        return await self._client_input(CancelAgent(agent_id=agent_id, reason=reason, cancel_children=cancel_children))

    async def skip(self, duration: timedelta | float) -> None:
        """Move the clock on by `duration`, firing every timer that falls due on the way, in order, and
        running what each fire causes at the moment it fires."""
        target = self.now + (duration if isinstance(duration, timedelta) else timedelta(seconds=duration))
        await self.run_until_idle()
        while (due := self._next_due()) is not None and due <= target:
            await self._fire_due(due)
        self.now = max(self.now, target)

    async def result(self, agent_id: str, *, within: timedelta = timedelta(days=3650)) -> Any:
        """Run until the agent ends and return what `run` returned, skipping time to the next due timer
        whenever nothing else is left to do (at most `within` of agent time).

        Raises `AgentFailedError` if it failed or was cancelled, and agentstream's `TimeoutError`
        when it waits for something only the test can send (the message says what it waits on).
        """
        limit = self.now + within
        while True:
            await self.run_until_idle()
            record = self.record(agent_id)
            if record.status in TERMINAL:
                if record.status is AgentStatus.COMPLETED:
                    return record.result
                raise AgentFailedError(f"agent {agent_id!r} {record.status.value}: {record.error}",
                                       agent_id=agent_id, status=record.status.value, error=record.error)
            due = self._next_due()
            if due is None or due > limit:
                waits = "; ".join(f"{w.coroutine} on {w.on} ({w.detail})" for w in record.waiting) or "nothing"
                raise TimeoutError(f"agent {agent_id!r} did not end: it is {record.status.value} and waits for "
                                   f"input: {waits}" + ("" if due is None else f"; its next timer is at {due}"))
            await self._fire_due(due)

    # -- what a test inspects ------------------------------------------------------------------

    def record(self, agent_id: str) -> AgentRecord:
        """The agent's record as a processor would store it."""
        try:
            return self.records[agent_id]
        except KeyError:
            raise AgentNotFoundError(f"no agent {agent_id!r} in this environment") from None

    def state(self, agent_id: str) -> dict[str, Any]:
        """What `GET /agents/{id}` and `agentstream state` would show."""
        return self.record(agent_id).public_view()

    # -- the loop --------------------------------------------------------------------------------

    async def run_until_idle(self) -> None:
        """Apply every input waiting, and everything they cause, without moving the clock."""
        for _ in range(MAX_TURNS):
            if not self._inputs:
                return
            await self._apply(self._inputs.popleft())
        raise RuntimeError(f"agents still producing inputs after {MAX_TURNS} turns: a loop that never settles?")

    async def _client_input(self, message: ScheduleAgent | SendEvent | CancelAgent) -> str:
        self._inputs.append(message)
        await self.run_until_idle()
        label, letter = self._labels.pop(message.message_id)
        if letter is not None:
            raise InputRejectedError(f"agent {message.agent_id!r} rejected the input: {letter.reason} "
                                     f"({letter.reason_code})", agent_id=message.agent_id,
                                     input_id=message.message_id, reason_code=letter.reason_code,
                                     reason=letter.reason)
        return label

    async def _apply(self, message: Input) -> None:
        outcome = await self.engine.apply(self.records.get(message.agent_id), message, self.now)
        if outcome.stored is not None:  # read back as a processor reads its store
            self.records[message.agent_id] = AgentRecord.from_bytes(outcome.stored)
        rejected = None
        for item in outcome.publish:
            if item.topic == "agent-events":
                self._inputs.append(decode_agent_input(_wire(item.value)))
            elif item.topic == "agent-updates":
                self.updates.append(AgentUpdate.model_validate(item.value))
            elif item.topic == "agent-stream":
                self.stream.append(StreamEvent.model_validate(item.value))
            elif item.topic == "dead-letters":
                letter = DeadLetter.model_validate(item.value)
                self.dead_letters.append(letter)
                rejected = letter if outcome.rejection is not None else rejected
            else:
                await self._run_step(decode_step_command(_wire(item.value)))
        if isinstance(message, (ScheduleAgent, SendEvent, CancelAgent)):
            self._labels[message.message_id] = (outcome.label, rejected)

    async def _run_step(self, command: StepCommand) -> None:
        self.steps_run.append(command)

        async def emit(type: str, data: Any) -> None:
            self.stream.append(StreamEvent(agent_id=command.agent_id, run_id=command.run_id, step_id=command.step_id,
                                           attempt=command.attempt, seq=sum(
                                               1 for e in self.stream if e.step_id == command.step_id
                                               and e.attempt == command.attempt),
                                           type=type, data=to_jsonable_python(data)))  # type: ignore[arg-type]

        result = await execute(command, function_definitions(), emit=emit, now=self.now)
        self._inputs.append(decode_step_result(result.to_bytes()))

    def _next_due(self) -> datetime | None:
        due = [at for r in self.records.values() if r.status not in TERMINAL for at in r.timers.values()]
        return min(due, default=None)

    async def _fire_due(self, due: datetime) -> None:
        """Move the clock to `due` and fire every timer due then, as the processor's timer service does."""
        self.now = max(self.now, due)
        for record in list(self.records.values()):
            if record.status in TERMINAL:
                continue
            for timer_id, at in sorted(record.timers.items(), key=lambda item: item[1]):
                if at <= self.now:
                    self._inputs.append(TimerFired(
                        message_id=derived_message_id(record.run_id, f"timer:{timer_id}:{at.isoformat()}"),
                        agent_id=record.agent_id, run_id=record.run_id, timer_id=timer_id, fire_at=at))
        await self.run_until_idle()


def _wire(value: dict[str, Any]) -> bytes:
    """An outbox item's value as the bytes a consumer would read."""
    return json.dumps(value).encode()
