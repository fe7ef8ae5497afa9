"""The one record a processor keeps per agent ID (the value of the RocksDB table)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from agentstream.topics import AgentStatus


class ReceivedEvent(BaseModel):
    """One applied event, kept in arrival order."""

    model_config = ConfigDict(extra="forbid")

    name: str
    payload: JsonValue = None
    message_id: str
    received_at: datetime
    result: JsonValue = None
    error: str | None = None


class Delivery(BaseModel):
    """What the processor needs to apply every input exactly once.

    `last_offsets` catches redelivery after a crash: offsets only grow within one
    partition, so it is keyed by source (`topic#partition`); `recent_keys` catches a
    record produced twice (a retried send, a repeated idempotency key) within the
    de-duplication window.
    """

    model_config = ConfigDict(extra="forbid")

    last_offsets: dict[str, int] = Field(default_factory=dict)
    recent_keys: dict[str, float] = Field(default_factory=dict)

    def is_redelivery(self, source: str, offset: int) -> bool:
        return offset <= self.last_offsets.get(source, -1)

    def is_duplicate(self, key: str) -> bool:
        """True if `key` was remembered and not pruned since; call `prune` first."""
        return key in self.recent_keys

    def mark_offset(self, source: str, offset: int) -> None:
        self.last_offsets[source] = max(offset, self.last_offsets.get(source, -1))

    def prune(self, now: float, window_s: float, max_keys: int) -> None:
        """Forget keys older than the window, and the oldest beyond `max_keys`."""
        horizon = now - window_s
        # dicts keep insertion order and `remember` re-inserts, so the oldest keys come first
        while self.recent_keys and (
            len(self.recent_keys) > max_keys or next(iter(self.recent_keys.values())) < horizon
        ):
            del self.recent_keys[next(iter(self.recent_keys))]

    def remember(self, source: str, offset: int, key: str, now: float, window_s: float, max_keys: int) -> None:
        self.mark_offset(source, offset)
        self.recent_keys.pop(key, None)
        self.recent_keys[key] = now
        self.prune(now, window_s, max_keys)


class AgentRecord(BaseModel):
    """An agent's durable state: identity, status, fields and the inputs it applied."""

    model_config = ConfigDict(extra="forbid")

    agent_id: str
    agent_type: str
    run_id: str
    status: AgentStatus
    input: JsonValue = None
    fields: dict[str, JsonValue] = Field(default_factory=dict)
    events: list[ReceivedEvent] = Field(default_factory=list)
    result: JsonValue = None
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    inputs_applied: int = 0
    delivery: Delivery = Field(default_factory=Delivery)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "AgentRecord":
        return cls.model_validate_json(data)

    def public_view(self) -> dict[str, JsonValue]:
        """What the HTTP API and the client show: everything but delivery bookkeeping."""
        return self.model_dump(mode="json", exclude={"delivery"})
