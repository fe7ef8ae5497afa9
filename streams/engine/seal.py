"""Sealing a turn: the last thing the engine does to an agent's record before it is stored.

Every input ends here, whatever it did: its offset and idempotency key are noted
(dedup.py), the records it produced become the record's outbox (published from there,
the first time and after a crash), the record is checked against the size one Kafka
message can carry, and serialised. One place, so a record has one author.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from agentstream.topics import AgentStatus, DeadLetter, derived_message_id

from . import dedup
from .base import LETTER_VALUE_LIMIT, Input, Origin, TurnOutcome, dead_letter
from .record import AgentRecord, OutboxItem
from .turn import status_update

if TYPE_CHECKING:
    from .durable import EngineConfig


PARK_HEADROOM = 4096  # bytes kept free under the limit by every turn, for the reason and update of a park


class Sealer:
    def __init__(self, config: "EngineConfig") -> None:
        self.config = config
        # a dead letter may wait in an agent's outbox: it must leave room for the record
        self.letter_value_limit = min(LETTER_VALUE_LIMIT, config.max_record_bytes // 8)

    def duplicate(self, record: AgentRecord, source: str | None, offset: int | None, *, redelivered: bool) -> TurnOutcome:
        """An input applied before. A redelivery changes nothing; a client's duplicate only
        moves the offset, so that a redelivery of it is recognised without its key."""
        if redelivered or source is None or offset is None:
            return TurnOutcome(record=record, label="duplicate", redelivered=redelivered)
        new = _copy(record)
        new.delivery.mark_offset(source, offset)
        return TurnOutcome(record=new, label="duplicate", stored=new.to_bytes())

    def seal(
        self, record: AgentRecord | None, message: Input, now: datetime, origin: Origin | None, outcome: TurnOutcome
    ) -> TurnOutcome:
        label = outcome.label
        if outcome.rejection is not None:
            outcome.dead_letters.append(self._letter(message, origin, outcome.rejection.code, outcome.rejection.reason))
            label = "dead_lettered"
        elif not label:
            label = "ignored" if outcome.ignored else "applied"
        outcome.label = label
        new = outcome.record
        if new is None:  # no agent to keep anything with: publish directly
            outcome.publish = _items(outcome)
            return outcome
        if new is record:
            new = _copy(new)
        source, offset = (origin.source, origin.offset) if origin is not None else (None, None)
        dedup.note_applied(new, message, source, offset, now, self.config.dedup)
        if label == "applied":
            new.inputs_applied += 1
        new.outbox = _items(outcome)
        data = new.to_bytes()
        # A turn must leave room to park its agent with the reason: parking always fits then.
        if len(data) > self.config.max_record_bytes - PARK_HEADROOM:
            if outcome.rejection is not None:  # the agent's record stays as it is; the letter goes out directly
                return _unrecorded(record, outcome, outcome.dead_letters[-1])
            return self._too_large(record, message, now, origin, len(data))
        outcome.record, outcome.stored, outcome.publish = new, data, new.outbox
        return outcome

    def undeliverable(self, record: AgentRecord, reason: str, now: datetime) -> TurnOutcome:
        new = _copy(record, keep_outbox=True)
        new.status, new.error, new.undelivered, new.updated_at = AgentStatus.STUCK, reason, True, now
        outcome = TurnOutcome(record=new, label="parked")
        if record.status is not AgentStatus.STUCK:
            update = status_update(new, record.status, f"undeliverable:{record.revision}", now)
            outcome.updates.append(update)
            new.outbox = [*new.outbox, _item("agent-updates", update.agent_id, update)]
        outcome.stored = new.to_bytes()
        return outcome

    def parked_letter(self, parked: dict[str, Any], code: str, reason: str) -> DeadLetter:
        """A parked input that turned out to be unusable when its agent was unstuck."""
        import json

        value = json.dumps(parked).encode()
        message_id = str(parked.get("message_id", "")) or derived_message_id(value.decode(), "parked")
        topic = "step-results" if parked.get("kind") in ("step_result", "step_progress") else "agent-events"
        origin = Origin(topic=topic, partition=-1, offset=-1, key=str(parked.get("agent_id", "")).encode(), value=value)
        letter = dead_letter(origin, code, f"parked input: {reason}", self.config.identity, self.letter_value_limit)
        return letter.model_copy(update={"message_id": derived_message_id(message_id, "dead-letter")})

    # -- helpers -----------------------------------------------------------------------

    def _letter(self, message: Input, origin: Origin | None, code: str, reason: str) -> DeadLetter:
        if origin is not None:
            return dead_letter(origin, code, reason, self.config.identity, self.letter_value_limit)
        stand_in = Origin(topic="agent-events", partition=-1, offset=-1, key=message.key, value=message.to_bytes())
        letter = dead_letter(stand_in, code, reason, self.config.identity, self.letter_value_limit)
        return letter.model_copy(update={"message_id": derived_message_id(message.message_id, "dead-letter")})

    def _too_large(
        self, record: AgentRecord | None, message: Input, now: datetime, origin: Origin | None, size: int
    ) -> TurnOutcome:
        """The turn would make the record too large: it is not applied. The agent is parked with
        the reason and the input kept with it; if even that does not fit, the input is
        dead-lettered instead; and if the parked agent itself does not fit (its record was at
        the limit already), the record stays as it was and only the dead letter goes out."""
        limit = self.config.max_record_bytes
        reason = (
            f"this input would grow the agent's record to {size} bytes, over the limit of {limit} bytes "
            "(AGENTSTREAM_MAX_RECORD_BYTES; one record must fit one Kafka message): keep large data out of "
            "the agent's fields, step inputs and results (store it elsewhere and keep a reference), and let "
            "agents that always have work in flight continue as new (agent.should_continue_as_new())"
        )
        rejected = TurnOutcome.rejected(record, "record_too_large", reason)
        rejected.facts.too_large = True
        rejected.dead_letters.append(self._letter(message, origin, "record_too_large", reason))
        rejected.label = "dead_lettered"
        if record is None:
            rejected.publish = _items(rejected)
            return rejected
        source, offset = (origin.source, origin.offset) if origin is not None else (None, None)
        for keep_input in (True, False):
            parked = _copy(record)
            if keep_input:
                parked.parked = [*record.parked, message.model_dump(mode="json")]
            parked.status, parked.error, parked.updated_at = AgentStatus.STUCK, reason, now
            dedup.note_applied(parked, message, source, offset, now, self.config.dedup)
            outcome = rejected if not keep_input else TurnOutcome(record=parked, label="parked")
            outcome.facts.too_large = True
            outcome.record = parked
            if record.status is not AgentStatus.STUCK:
                outcome.updates.append(status_update(parked, record.status, f"too-large:{record.revision}", now))
            parked.outbox = _items(outcome)
            data = parked.to_bytes()
            if len(data) <= limit:
                outcome.stored, outcome.publish = data, parked.outbox
                return outcome
            outcome.updates.clear()
        return _unrecorded(record, rejected, rejected.dead_letters[-1])


def _unrecorded(record: AgentRecord | None, outcome: TurnOutcome, letter: DeadLetter) -> TurnOutcome:
    """Nothing is stored: the record stays as it was, so of everything the turn (or the unstick
    attempt before it) produced only the input's dead letter goes out; a redelivery of the input
    comes to the same outcome and sends the same letter again."""
    outcome.record, outcome.stored = record, None
    outcome.updates, outcome.commands, outcome.messages, outcome.dead_letters = [], [], [], [letter]
    outcome.stream = []
    outcome.publish = _items(outcome)
    outcome.facts.too_large = True
    return outcome


def _copy(record: AgentRecord, *, keep_outbox: bool = False) -> AgentRecord:
    """A copy that may take new bookkeeping without touching `record` (fields are not changed here)."""
    return record.model_copy(update={
        "fields": dict(record.fields),
        "delivery": record.delivery.independent_copy(),
        "outbox": list(record.outbox) if keep_outbox else [],
    })


def _item(topic: str, key: str | None, envelope: Any, task_queue: str | None = None) -> OutboxItem:
    # Not validated again: a JSON dump of a validated envelope is JSON, and checking it node by
    # node (JsonValue) cost more than the rest of building the item.
    return OutboxItem.model_construct(topic=topic, task_queue=task_queue, key=key, value=envelope.model_dump(mode="json"))


def _items(outcome: TurnOutcome) -> list[OutboxItem]:
    items = [_item("step-commands", c.agent_id, c, c.task_queue) for c in outcome.commands]
    items += [_item("agent-events", m.agent_id, m) for m in outcome.messages]
    items += [_item("agent-updates", u.agent_id, u) for u in outcome.updates]
    items += [_item("agent-stream", e.agent_id, e) for e in outcome.stream]
    items += [_item("dead-letters", d.key if d.key_encoding == "utf-8" else None, d) for d in outcome.dead_letters]
    return items
