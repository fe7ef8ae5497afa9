"""Apply one Kafka record to one agent: decode, de-duplicate, run the engine, persist, publish.

This is all of the processor's logic; the Faust app around it only feeds it records
and gives it a store (the RocksDB table) and a publisher (the Faust producer).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from agentstream.topics import (
    DeadLetter,
    Envelope,
    InvalidMessageError,
    TopicNames,
    decode_agent_input,
    decode_step_result,
)

from ..engine import AgentRecord, Engine, TurnOutcome
from .metrics import ProcessorMetrics
from .timers import TimerIndex

log = logging.getLogger("agentstream.processor")


class RecordStore(Protocol):
    """Per-agent storage of the processor: bytes by agent-ID key."""

    def get(self, key: bytes) -> bytes | None: ...
    def set(self, key: bytes, value: bytes) -> None: ...


class Publisher(Protocol):
    async def publish(self, topic: str, key: bytes | None, value: bytes) -> Any:
        """Queue a record; may return an awaitable that resolves once the broker has it."""
        ...


@dataclass(frozen=True)
class DedupPolicy:
    window_s: float
    max_keys: int


class InputHandler:
    def __init__(
        self,
        *,
        names: TopicNames,
        engine: Engine,
        store: RecordStore,
        publisher: Publisher,
        metrics: ProcessorMetrics,
        dedup: DedupPolicy,
        identity: str,
        timers: TimerIndex | None = None,
    ) -> None:
        self._names = names
        self._engine = engine
        self._store = store
        self._publisher = publisher
        self._metrics = metrics
        self._dedup = dedup
        self._identity = identity
        self.timers = timers or TimerIndex()
        self._sources = {names.agent_events: "agent-events", names.step_results: "step-results"}
        self._resent: set[bytes] = set()
        self._in_flight: list[Any] = []

    async def handle(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> str:
        """Process one record; returns the outcome label (also counted in metrics)."""
        started = time.perf_counter()
        try:
            outcome = await self._handle(topic, partition, offset, key, value)
        finally:
            # The input counts as done (its offset may be committed) only once what it
            # produced is on the broker: a crash can then lose a turn's outputs only
            # together with the input, which is redelivered.
            pending, self._in_flight = self._in_flight, []
            for delivery in pending:
                await delivery
        self._metrics.inputs.labels(self._sources.get(topic, topic), outcome).inc()
        self._metrics.turn_seconds.observe(time.perf_counter() - started)
        return outcome

    async def _handle(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> str:
        where = (topic, partition, offset, key, value)
        try:
            message: Envelope = (
                decode_step_result(value) if topic == self._names.step_results else decode_agent_input(value)
            )
        except InvalidMessageError as exc:
            return await self._dead_letter(exc.code, str(exc), *where)
        if key is None or key != message.key:
            shown = key.decode(errors="replace") if key is not None else None
            return await self._dead_letter(
                "key_mismatch",
                f"record key {shown!r} differs from agent_id {message.agent_id!r}; "
                "produce every record with its agent ID as the key",
                *where,
            )

        source = f"{topic}#{partition}"
        now = datetime.now(timezone.utc)
        stored = self._store.get(key)
        record = AgentRecord.from_bytes(stored) if stored else None
        if record is not None and record.delivery.is_redelivery(source, offset):
            # Re-written so the changelog holds it even if the crash that caused the
            # redelivery lost the previous write; and what the record still expects to
            # have been sent is sent again, in case the crash lost it (all idempotent).
            self._store.set(key, stored)  # type: ignore[arg-type]
            if key not in self._resent:
                self._resent.add(key)
                await self._publish_outputs(self._engine.pending_outputs(record))
            return "duplicate"
        dedup_key = getattr(message, "idempotency_key", None) or message.message_id
        if record is not None:
            record.delivery.prune(now.timestamp(), self._dedup.window_s, self._dedup.max_keys)
            if record.delivery.is_duplicate(dedup_key):
                record.delivery.mark_offset(source, offset)
                self._store.set(key, record.to_bytes())
                return "duplicate"

        turn: TurnOutcome = await self._engine.apply(record, message, now)  # type: ignore[arg-type]
        if turn.rejection is not None:
            if record is not None:
                record.delivery.mark_offset(source, offset)
                self._store.set(key, record.to_bytes())
            await self._publish_outputs(turn)
            return await self._dead_letter(turn.rejection.code, turn.rejection.reason, *where)

        new = turn.record
        assert new is not None
        new.delivery.remember(source, offset, dedup_key, now.timestamp(), self._dedup.window_s, self._dedup.max_keys)
        if not turn.ignored:
            new.inputs_applied += 1
        self._store.set(key, new.to_bytes())
        for update in turn.updates:
            await self._send(self._names.agent_updates, update.key, update.to_bytes())
            self._metrics.updates_published.inc()
            self._metrics.status_changes.labels(update.status.value).inc()
        await self._publish_outputs(turn)
        self.timers.track_record(new)
        if not turn.ignored:
            self._observe(str(getattr(message, "kind", "unknown")), turn)
        return "ignored" if turn.ignored else "applied"

    async def _send(self, topic: str, key: bytes | None, value: bytes) -> None:
        delivery = await self._publisher.publish(topic, key, value)
        if delivery is not None:
            self._in_flight.append(delivery)

    async def _publish_outputs(self, turn: TurnOutcome) -> None:
        """Step commands, and records for agent-events: children to start or cancel, parents' results."""
        for command in turn.commands:
            await self._send(self._names.step_commands(command.task_queue), command.key, command.to_bytes())
        for message in turn.messages:
            await self._send(self._names.agent_events, message.key, message.to_bytes())

    def _observe(self, kind: str, turn: TurnOutcome) -> None:
        metrics, facts = self._metrics, turn.facts
        metrics.turns.labels(kind).inc()
        metrics.journal_length.observe(facts.journal_length)
        metrics.steps_dispatched.inc(len(turn.commands))
        for step in facts.steps:
            metrics.steps.labels(step.function, step.outcome).inc()
            if step.outcome == "retried":
                metrics.step_retries.labels(step.function).inc()
            else:
                metrics.step_seconds.labels(step.function).observe(step.seconds)
        if facts.compacted:
            metrics.compactions.inc()
        if facts.compaction_refused:
            metrics.compactions_refused.inc()
        if facts.nondeterminism:
            metrics.nondeterminism.inc()
        if facts.blocked:
            metrics.blocked_turns.inc()

    async def _dead_letter(
        self, code: str, reason: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> str:
        letter = DeadLetter.of(
            reason_code=code,
            reason=reason,
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            rejected_by=self._identity,
        )
        await self._send(self._names.dead_letters, key, letter.to_bytes())
        self._metrics.dead_letters.labels(code).inc()
        log.warning(
            "record dead-lettered",
            extra={"reason_code": code, "reason": reason, "topic": topic, "partition": partition, "offset": offset},
        )
        return "dead_lettered"
