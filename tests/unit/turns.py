"""A turn-by-turn driver of the durable engine for unit tests: no Kafka, just records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from agentstream.streams.engine import AgentRecord, DurableEngine, EngineConfig, TurnOutcome
from agentstream.streams.engine.base import Input
from agentstream.topics import (
    ChildCompleted,
    Envelope,
    ScheduleAgent,
    SendEvent,
    StepCommand,
    StepError,
    StepResult,
    TimerFired,
)

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)


@dataclass
class Turns:
    """Applies inputs to one agent's record, keeping the latest record and what was sent."""

    engine: DurableEngine = field(default_factory=DurableEngine)
    records: dict[str, AgentRecord] = field(default_factory=dict)
    now: datetime = T0
    outcomes: list[TurnOutcome] = field(default_factory=list)

    @classmethod
    def with_config(cls, **config: Any) -> "Turns":
        return cls(engine=DurableEngine(EngineConfig(**config)))

    async def apply(self, message: Input, *, advance: float = 1.0) -> TurnOutcome:
        self.now += timedelta(seconds=advance)
        record = self.records.get(message.agent_id)
        before = record.to_bytes() if record is not None else None
        outcome = await self.engine.apply(record, message, self.now)
        # The processor hands the engine the record object of the agent's last turn (handler.py keeps
        # it), so the engine must never change a record it was given, and what it stores must be the
        # record it returns.
        assert record is None or record.to_bytes() == before, "the engine changed the record it was given"
        if outcome.stored is not None:
            assert outcome.record is not None and outcome.record.to_bytes() == outcome.stored
            self.records[message.agent_id] = outcome.record
        self.outcomes.append(outcome)
        return outcome

    def record(self, agent_id: str) -> AgentRecord:
        return self.records[agent_id]

    async def schedule(self, agent_type: str, agent_id: str, input: Any = None) -> TurnOutcome:
        return await self.apply(ScheduleAgent(agent_id=agent_id, agent_type=agent_type, input=input))

    async def send(self, agent_id: str, event: str, payload: Any = None) -> TurnOutcome:
        return await self.apply(SendEvent(agent_id=agent_id, event=event, payload=payload))

    async def complete(self, command: StepCommand, output: Any = None) -> TurnOutcome:
        return await self.apply(result_of(command, ok=True, output=output))

    async def fail(self, command: StepCommand, error_type: str = "Boom", *, retryable: bool = True) -> TurnOutcome:
        return await self.apply(result_of(command, ok=False, error=StepError(type=error_type, message="it broke",
                                                                             retryable=retryable)))

    async def fire(self, agent_id: str, timer_id: str, *, advance: float = 1.0) -> TurnOutcome:
        """Fire a timer at its due time (time moves on to it if it lies ahead)."""
        record = self.record(agent_id)
        self.now = max(self.now, record.timers[timer_id] - timedelta(seconds=advance))
        return await self.apply(
            TimerFired(agent_id=agent_id, run_id=record.run_id, timer_id=timer_id, fire_at=record.timers[timer_id]),
            advance=advance,
        )

    async def deliver_all(self, messages: list[Envelope]) -> list[TurnOutcome]:
        """Apply messages the engine sent to agent-events (child schedules, child results, cancels)."""
        return [await self.apply(m) for m in messages]  # type: ignore[arg-type]

    def forget_live_state(self) -> None:
        """As after a restart: the next turn must replay the journal."""
        self.engine = DurableEngine(self.engine.config, self.engine._lookup)


def result_of(command: StepCommand, *, ok: bool, output: Any = None, error: StepError | None = None) -> StepResult:
    return StepResult(
        agent_id=command.agent_id, run_id=command.run_id, step_id=command.step_id, attempt=command.attempt,
        function=command.function, ok=ok, output=output, error=error,
    )


def child_messages(outcome: TurnOutcome) -> list[ChildCompleted]:
    return [m for m in outcome.messages if isinstance(m, ChildCompleted)]
