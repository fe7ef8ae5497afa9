"""A record's life in the processor: decode, apply (the engine de-duplicates and seals),
persist, publish, and only then count the input as done.

This is all of the processor's logic; the Faust app around it only feeds it records
and gives it a store (the RocksDB table and its changelog) and a publisher (the Faust
producer). The order is quix-streams' checkpoint order: an input's offset may be
committed only after its record is on the changelog and its outputs are acknowledged,
so a crash loses a turn only together with its input, which is then redelivered.

`handle` never raises and never drops an input (DESIGN.md guarantee 7): what cannot be
decoded or read is dead-lettered with the reason, what cannot be published parks the
agent with its outbox kept, and storage or broker trouble is retried until it passes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from functools import partial
from typing import Any, NamedTuple, Protocol, TypeVar

from pydantic import ValidationError

from agentstream.topics import (
    DeadLetter,
    Envelope,
    InvalidMessageError,
    TopicNames,
    decode_agent_input,
    decode_step_result,
)

from ..engine import AgentRecord, Engine, Origin, OutboxItem, TurnOutcome, dead_letter
from ..engine.base import LETTER_VALUE_LIMIT
from ..engine.record import FORMAT
from .. import tracing
from .exceptions import UndeliverableError
from .metrics import ProcessorMetrics
from .outcomes import InputOutcomes, input_ids
from .results import ResultWaiters
from .timers import TimerIndex

log = logging.getLogger("agentstream.processor")

T = TypeVar("T")
RETRY_FIRST_S, RETRY_MAX_S = 0.1, 5.0
REMEMBERED_RECORDS = 100_000
PARSED_RECORDS = 512  # parsed records kept, most recently written first (twice the inputs a window holds)

__all__ = ["InputHandler", "Pending", "Publisher", "RecordStore"]


class Pending(NamedTuple):
    """A write on its way to the broker: its acknowledgement, and how to write it again."""

    what: str
    ack: Awaitable[Any]
    again: Callable[[], Awaitable[Any]]


class RecordStore(Protocol):
    """Per-agent storage of the processor: bytes by agent-ID key."""

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes) -> Awaitable[Any]:
        """Write `value` now (`get` returns it at once); the awaitable resolves once it is durable
        (its changelog write acknowledged) and raises if that write failed."""
        ...


class Publisher(Protocol):
    async def publish(self, topic: str, key: bytes | None, value: bytes,
                      headers: list[tuple[str, bytes]] | None = None) -> Awaitable[Any] | None:
        """Queue a record; may return an awaitable that resolves once the broker has it.

        `headers` are given only while a trace is recorded (the turn's span, tracing.py).

        Raises `UndeliverableError` when the record can never be delivered as it is
        (no such topic, too large); anything else counts as transient.
        """
        ...


class InputHandler:
    def __init__(
        self,
        *,
        names: TopicNames,
        engine: Engine,
        store: RecordStore,
        publisher: Publisher,
        metrics: ProcessorMetrics,
        identity: str,
        timers: TimerIndex | None = None,
        results: ResultWaiters | None = None,
        outcomes: InputOutcomes | None = None,
        max_record_bytes: int = 900_000,
        written: Callable[[bytes, bytes, AgentRecord], None] | None = None,
    ) -> None:
        self._names = names
        self._engine = engine
        self._store = store
        self._publisher = publisher
        self._metrics = metrics
        self._identity = identity
        self._letter_value_limit = min(LETTER_VALUE_LIMIT, max_record_bytes // 8)
        self.timers = timers or TimerIndex()
        self.results = results or ResultWaiters()
        self.outcomes = outcomes or InputOutcomes()
        self._written = written  # told each record written with its bytes (the state API's views.py)
        self._sources = {names.agent_events: "agent-events", names.step_results: "step-results"}
        # hash of each agent's record as this process last wrote it with all its outputs delivered
        # (or wrote again and re-sent the first time it touched the agent): nothing to recover then
        self._settled: OrderedDict[bytes, int] = OrderedDict()
        # the record each recently written agent's bytes were made from: its next input needs no parse
        # (parsing the stored record was 5% of the processor's CPU under W1 of the speed issue)
        self._records: OrderedDict[bytes, tuple[bytes, AgentRecord]] = OrderedDict()

    async def handle(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                     headers: Sequence[tuple[str, bytes]] | None = None) -> str:
        """Process one record to its one outcome and wait until that is durable; returns the label."""
        label, durable = await self.begin(topic, partition, offset, key, value, headers)
        await durable
        return label

    async def begin(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> tuple[str, Awaitable[None]]:
        """Process one record to its one outcome (also counted in metrics): the label, and what
        resolves once the record's writes and outputs are all on the broker.

        Only then may the input's offset be committed; but the next input may begin at once
        (the processor keeps a window of inputs in flight), so a partition is bound by the
        broker's throughput rather than by one round trip per input. What a later input of
        the same agent reads is the record this one wrote: the store answers writes at once.
        """
        started = time.perf_counter()
        origin = Origin(topic, partition, offset, key, value)
        acks: list[Pending] = []
        on_durable: list[Callable[[], None]] = []  # what to do once the writes are on the broker
        attributes = {"agentstream.agent_id": (key or b"").decode(errors="replace"), "messaging.destination.name": topic,
                      "messaging.kafka.destination.partition": partition, "messaging.kafka.message.offset": offset}
        with tracing.consumed("turn", headers, attributes) as span:  # its outputs carry it on (tracing.py)
            try:
                label = await self._handle(origin, acks, on_durable)
            except Exception as exc:  # the last resort: still one recorded outcome for the input
                log.exception("input handling failed", extra={"topic": topic, "partition": partition, "offset": offset})
                label = await self._reject(origin, "processor_error", f"the processor failed on this record: "
                                           f"{type(exc).__name__}: {exc}")
            span.set_attribute("agentstream.outcome", label)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("input handled", extra={"topic": topic, "partition": partition, "offset": offset,
                                              "agent_id": (key or b"").decode(errors="replace"), "outcome": label})
        self._metrics.inputs.labels(self._sources.get(topic, topic), label).inc()
        self._metrics.turn_seconds.observe(time.perf_counter() - started)
        return label, self._all_confirmed(key, acks, on_durable)

    async def _all_confirmed(
        self, key: bytes | None, acks: list[Pending], on_durable: list[Callable[[], None]]
    ) -> None:
        try:
            for pending in acks:
                await self._confirmed(pending)
        except BaseException:  # cancelled (a rebalance, a stop): the next touch of the agent re-sends all
            if key is not None:
                self._settled.pop(key, None)
            raise
        for done in on_durable:
            done()

    async def _handle(self, origin: Origin, acks: list[Pending], on_durable: list[Callable[[], None]]) -> str:
        try:
            message: Envelope = (
                decode_step_result(origin.value) if origin.topic == self._names.step_results
                else decode_agent_input(origin.value)
            )
        except InvalidMessageError as exc:
            return await self._reject(origin, exc.code, str(exc))
        ids = input_ids(message)  # a client's input: what became of it is remembered (outcomes.py)
        key = origin.key
        if key is None or key != message.key:
            shown = key.decode(errors="replace") if key is not None else None
            return await self._reject(
                origin, "key_mismatch",
                f"record key {shown!r} differs from agent_id {message.agent_id!r}; "
                "produce every record with its agent ID as the key", ids,
            )
        stored = self._store.get(key)
        record = None
        now = datetime.now(timezone.utc)
        if stored:
            try:
                record = self._parsed(key, stored)
            except ValidationError as exc:
                return await self._reject(origin, "record_unreadable", _unreadable(stored, exc), ids)
            if self._settled.get(key) != hash(stored):
                record = await self._recover(key, record, stored, now, acks)

        outcome = await self._engine.apply(record, message, now, origin)  # type: ignore[arg-type]
        if outcome.redelivered:
            if ids:
                self.outcomes.settled(ids, "duplicate")
            return "duplicate"
        if outcome.stored is not None:
            await self._persist(key, outcome.stored, acks, outcome.record)
        problem = await self._deliver(outcome.publish, acks)
        if problem is not None:
            if outcome.record is None:
                log.error("outputs undeliverable", extra={"agent_id": message.agent_id, "reason": problem})
            else:
                outcome = self._engine.undeliverable(outcome.record, problem, now)
                assert outcome.stored is not None
                await self._persist(key, outcome.stored, acks, outcome.record)
        elif outcome.stored is not None:
            self._settle(key, outcome.stored)
        self._observe(str(getattr(message, "kind", "unknown")), outcome)
        if outcome.record is not None:
            self.timers.track_record(outcome.record)
            # A result is answered from the stored record, which holds the turn once it is durable.
            on_durable.append(partial(self.results.changed, outcome.record.agent_id, outcome.record.status.value,
                                      outcome.record))
        if ids:
            rejection = outcome.rejection
            on_durable.append(partial(self.outcomes.settled, ids, outcome.label,
                                      rejection.code if rejection else None, rejection.reason if rejection else None))
        return outcome.label

    # -- the steps of a record's life ------------------------------------------------------

    async def _persist(self, key: bytes, value: bytes, acks: list[Pending], record: AgentRecord | None = None) -> None:
        """Write the agent's record now (`record` is `value` parsed); its acknowledgement joins `acks`."""
        self._metrics.record_bytes.observe(len(value))
        if record is not None:
            self._keep_parsed(key, value, record)
            if self._written is not None:
                self._written(key, value, record)

        async def write() -> Awaitable[Any]:
            return self._store.put(key, value)

        async def again() -> Awaitable[Any]:
            # A later input of the agent may have written since: its record includes this one's
            # turn, and writing this older value again would put the agent back on the changelog.
            latest = self._store.get(key)
            return self._store.put(key, value if latest is None else latest)

        what = "store the agent's record"
        acks.append(Pending(what, await self._retrying(what, write), again))

    async def _deliver(self, items: list[OutboxItem], acks: list[Pending]) -> str | None:
        """Publish `items` (their acknowledgements join `acks`); the reason if they can never be delivered."""
        trace = tracing.headers()  # the turn's span: the worker and the next turns continue its trace
        try:
            for item in items:
                topic = self._topic_of(item)
                value = json.dumps(item.value, separators=(",", ":")).encode()
                key = item.key.encode() if item.key is not None else None

                async def publish(topic: str = topic, key: bytes | None = key, value: bytes = value) -> Any:
                    if trace:
                        return await self._publisher.publish(topic, key, value, headers=trace)
                    return await self._publisher.publish(topic, key, value)

                what = f"publish to {topic}"
                ack = await self._retrying(what, publish)
                if ack is not None:
                    acks.append(Pending(what, ack, publish))
                if item.topic == "agent-updates":
                    self._metrics.updates_published.inc()
        except UndeliverableError as exc:
            return str(exc)
        return None

    async def _confirmed(self, pending: Pending) -> None:
        """Wait for the broker's acknowledgement; when it reports a failure, write again until one passes."""
        what, ack, again = pending
        current: Awaitable[Any] | None = ack

        async def confirm() -> None:
            nonlocal current
            if current is None:  # the last write failed: write again
                current = await again()
                if current is None:
                    return
            try:
                await current
            except Exception:
                current = None
                raise

        await self._retrying(what, confirm)

    async def _recover(
        self, key: bytes, record: AgentRecord, stored: bytes, now: datetime, acks: list[Pending]
    ) -> AgentRecord:
        """The first time this process touches an agent: what a crash may have lost goes out again.

        A crash (or the death of the partition's previous owner) may have come between the
        record's write and its changelog acknowledgement, or between the write and the
        publishing of its outbox; the input of that turn is then redelivered, but another
        input may reach the agent first. So the record is written again and its outbox
        published again (all idempotent) before anything else happens to the agent.
        """
        await self._persist(key, stored, acks, record)
        problem = await self._deliver(record.outbox, acks)
        if problem is not None:  # still cannot be published: the agent waits, parked, outbox kept
            if record.undelivered:
                return record
            parked = self._engine.undeliverable(record, problem, now)
            assert parked.stored is not None and parked.record is not None
            await self._persist(key, parked.stored, acks, parked.record)
            return parked.record
        self._settle(key, stored)
        if record.undelivered:
            self._engine.forget(record.agent_id)  # its next turn may unstick it at once
            return record.model_copy(update={"undelivered": False})
        return record

    def _parsed(self, key: bytes, stored: bytes) -> AgentRecord:
        """The agent's stored record, parsed: the record its last turn here wrote when those are
        the bytes stored (the engine never changes a record it is given), else read from them."""
        kept = self._records.get(key)
        if kept is not None and kept[0] == stored:  # == short-cuts on the same object
            self._records.move_to_end(key)
            return kept[1]
        return AgentRecord.from_bytes(stored)

    def _keep_parsed(self, key: bytes, value: bytes, record: AgentRecord) -> None:
        self._records[key] = (value, record)
        self._records.move_to_end(key)
        while len(self._records) > PARSED_RECORDS:
            self._records.popitem(last=False)

    def _settle(self, key: bytes, stored: bytes) -> None:
        self._settled[key] = hash(stored)
        self._settled.move_to_end(key)
        while len(self._settled) > REMEMBERED_RECORDS:
            self._settled.popitem(last=False)

    async def _reject(self, origin: Origin, code: str, reason: str, ids: tuple[str, ...] = ()) -> str:
        """Dead-letter a record that reaches no agent's record (undecodable, unreadable state)."""
        letter = dead_letter(origin, code, reason, self._identity, self._letter_value_limit)
        try:
            await self._retrying("dead-letter a record", lambda: self._publish_now(self._names.dead_letters,
                                                                                    origin.key, letter.to_bytes()))
        except UndeliverableError as exc:  # e.g. no dead-letter topic: say so loudly, never crash the consumer
            log.critical("dead letter undeliverable", extra={"reason_code": code, "error": str(exc),
                                                              "topic": origin.topic, "offset": origin.offset})
            return "undeliverable"
        self._count_dead_letter(letter)
        if ids:
            self.outcomes.settled(ids, "dead_lettered", code, reason)
        return "dead_lettered"

    async def _publish_now(self, topic: str, key: bytes | None, value: bytes) -> None:
        ack = await self._publisher.publish(topic, key, value)
        if ack is not None:
            await ack

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Retry transient storage/broker failures until they pass: the input waits, nothing is lost."""
        delay, failures = RETRY_FIRST_S, 0
        while True:
            try:
                return await attempt()
            except UndeliverableError:
                raise
            except Exception as exc:
                failures += 1
                log.warning(
                    "retrying after a failure",
                    extra={"what": what, "failures": failures, "error": f"{type(exc).__name__}: {exc}"},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    def _topic_of(self, item: OutboxItem) -> str:
        names = self._names
        if item.topic == "step-commands":
            return names.step_commands(item.task_queue or "")
        return {"agent-events": names.agent_events, "agent-updates": names.agent_updates,
                "dead-letters": names.dead_letters, "agent-stream": names.agent_stream}[item.topic]

    # -- metrics and logs ------------------------------------------------------------------

    def _count_dead_letter(self, letter: DeadLetter) -> None:
        self._metrics.dead_letters.labels(letter.reason_code).inc()
        log.warning(
            "record dead-lettered",
            extra={"reason_code": letter.reason_code, "reason": letter.reason, "topic": letter.source_topic,
                   "partition": letter.partition, "offset": letter.offset,
                   "agent_id": letter.key if letter.key_encoding == "utf-8" else None},
        )

    def _observe(self, kind: str, turn: TurnOutcome) -> None:
        metrics, facts = self._metrics, turn.facts
        for letter in turn.dead_letters:
            self._count_dead_letter(letter)
        for update in turn.updates:
            metrics.status_changes.labels(update.status.value).inc()
        if turn.label not in ("applied", "parked"):
            return
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


def _unreadable(stored: bytes, exc: ValidationError) -> str:
    """Why a stored record cannot be read, and what to do about it."""
    try:
        written = int(json.loads(stored).get("format", 1))
    except Exception:
        written = None
    if written is not None and written > FORMAT:
        return (
            f"the agent's record was written by a newer agentstream (record format {written}, this processor reads "
            f"up to {FORMAT}); run the newer version on every processor, then replay this dead letter"
        )
    unknown = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden" and e["loc"]]
    if unknown:
        return (
            f"the agent's record has fields this version does not know ({', '.join(unknown[:5])}): it was written "
            "by a newer agentstream; run the newer version on every processor, then replay this dead letter"
        )
    details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3])
    return f"the agent's stored record cannot be read ({details}); it is kept unchanged"
