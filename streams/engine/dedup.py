"""De-duplication: every decision of the form "has this input been seen, does it still count".

All of them live here, so that exactly-once (DESIGN.md guarantees 2, 3, 6) has one home:

- **redelivery**: the same Kafka record again after a crash or a rebalance. Offsets only
  grow within a partition, so each record remembers the last offset it applied per
  source (`topic#partition`).
- **client duplicates**: a record produced twice (a retried send, a repeated idempotency
  key) by a client. Only schedules, events and cancels count here, remembered for a
  window and up to a number of keys; internal inputs never evict them. A key is kept as
  a 64-bit digest with the whole second it was last seen (`RecentKeys`): the record
  rides along with every turn, and a hot agent's thousand keys as text were 72% of it.
- **internal inputs** need no memory of message IDs: each answers something the record
  is waiting for (a step attempt, an armed timer, a child run) and stops counting once
  that is settled. The `current_*` functions below say whether it still does.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator

from agentstream.topics import (
    CancelAgent,
    ChildCompleted,
    ScheduleAgent,
    SendEvent,
    StepProgress,
    StepResult,
    TimerFired,
    run_id_for,
)

if TYPE_CHECKING:
    from .record import AgentRecord, ChildState, StepState

# A fire may come this much before its due time (clocks of two processors differ a little).
FIRE_TOLERANCE = timedelta(seconds=1)


@dataclass(frozen=True)
class DedupPolicy:
    """How long and how many client idempotency keys each agent remembers."""

    window_s: float = 24 * 3600
    max_keys: int = 1000


def key_digest(key: str) -> int:
    """The 64 bits of BLAKE2b a client key is remembered by.

    Two keys of one agent's window (at most `max_keys`, 1,000 by default) share a digest
    with a probability of about 1,000 in 2**64 per input, 5e-17; and finding a key that
    collides with another client's is a second-preimage search on BLAKE2b.
    """
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def _load_keys(value: object) -> dict[int, int]:
    """Keys as stored since format 4 (base64 of little-endian 64-bit digests, then 32-bit
    seconds, oldest first), or as formats 1-3 stored them: the keys themselves with float times."""
    if isinstance(value, str):
        packed = base64.b64decode(value.encode(), validate=True)
        count, rest = divmod(len(packed), 12)
        if rest:
            raise ValueError(f"recent_keys holds {len(packed)} bytes, not a multiple of 12 (digest and time per key)")
        digests = struct.unpack_from(f"<{count}Q", packed)
        times = struct.unpack_from(f"<{count}I", packed, 8 * count)
        return dict(zip(digests, times))
    if isinstance(value, dict):
        loaded: dict[int, int] = {}
        for key, seen_at in value.items():
            if not isinstance(seen_at, (int, float)) or isinstance(seen_at, bool):
                raise ValueError(f"recent_keys[{key!r}] is not a time in seconds")
            if isinstance(key, int) and not isinstance(key, bool) and 0 <= key < 1 << 64:
                loaded[key] = _whole_second(seen_at)  # digests already (a record built in Python)
            elif isinstance(key, str):  # formats 1-3, or a key given by name
                loaded[key_digest(key)] = _whole_second(seen_at)
            else:
                raise ValueError(f"recent_keys has a key {key!r} that is neither a 64-bit digest nor a key")
        return loaded
    raise ValueError("recent_keys is neither packed keys (a base64 string) nor a mapping of keys to times")


def _whole_second(at: float) -> int:
    """Up: a key may be kept a second longer, never shorter (and within what 32 bits hold)."""
    return min(max(math.ceil(at), 0), 0xFFFF_FFFF)


def _dump_keys(keys: dict[int, int]) -> str:
    count = len(keys)
    return base64.b64encode(struct.pack(f"<{count}Q{count}I", *keys, *keys.values())).decode()


# digest of a client key -> the whole second it was last seen (rounded up), oldest first
RecentKeys = Annotated[dict[int, int], PlainValidator(_load_keys), PlainSerializer(_dump_keys, return_type=str)]


class Delivery(BaseModel):
    """What an agent's record remembers to apply every input exactly once."""

    model_config = ConfigDict(extra="forbid")

    last_offsets: dict[str, int] = Field(default_factory=dict)
    recent_keys: RecentKeys = Field(default_factory=dict)

    def independent_copy(self) -> "Delivery":
        """An independent copy. Its values are numbers, so copying the two dicts suffices;
        a deep copy of a hot agent's thousand keys cost it more than its whole turn."""
        return Delivery.model_construct(last_offsets=dict(self.last_offsets), recent_keys=dict(self.recent_keys))

    def is_redelivery(self, source: str, offset: int) -> bool:
        return offset <= self.last_offsets.get(source, -1)

    def is_duplicate(self, key: str) -> bool:
        """True if `key` was remembered and not pruned since; call `prune` first."""
        return key_digest(key) in self.recent_keys

    def seen_at(self, key: str) -> int | None:
        """When `key` was last remembered (whole seconds, rounded up); None if it is not."""
        return self.recent_keys.get(key_digest(key))

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
        self.remember_key(key, now, window_s, max_keys)

    def remember_key(self, key: str, now: float, window_s: float, max_keys: int) -> None:
        digest = key_digest(key)
        self.recent_keys.pop(digest, None)  # re-inserted: the newest key comes last
        self.recent_keys[digest] = _whole_second(now)
        self.prune(now, window_s, max_keys)


ClientInput = ScheduleAgent | SendEvent | CancelAgent


def client_key(message: object) -> str | None:
    """The key a client input is de-duplicated by; None for internal inputs."""
    if isinstance(message, (ScheduleAgent, SendEvent, CancelAgent)):
        return message.idempotency_key or message.message_id
    return None


def seen_before(
    record: "AgentRecord | None", message: object, source: str | None, offset: int | None, now: datetime,
    policy: DedupPolicy,
) -> str | None:
    """`"redelivery"` or `"duplicate"` when the input was applied already; None if it is new."""
    if record is None:
        return None
    if source is not None and offset is not None and record.delivery.is_redelivery(source, offset):
        return "redelivery"
    key = client_key(message)
    if key is not None:
        seen_at = record.delivery.seen_at(key)
        if seen_at is not None and seen_at >= now.timestamp() - policy.window_s:
            return "duplicate"
    return None


def note_applied(
    record: "AgentRecord", message: object, source: str | None, offset: int | None, now: datetime,
    policy: DedupPolicy,
) -> None:
    """Remember that `message` (at `offset` of `source`) reached this record."""
    if source is not None and offset is not None:
        record.delivery.mark_offset(source, offset)
    key = client_key(message)
    if key is not None:
        record.delivery.remember_key(key, now.timestamp(), policy.window_s, policy.max_keys)


def own_schedule(record: "AgentRecord", message: ScheduleAgent) -> bool:
    """The schedule that started this agent, seen again (also after it continued as new)."""
    return message.message_id == record.origin or record.run_id == run_id_for(message.message_id)


def current_step(record: "AgentRecord", message: StepResult | StepProgress) -> "StepState | None":
    """The step attempt a result answers, if it is still waited for; else None (late, duplicate,
    superseded, or forged: another function or another command than the one in flight)."""
    from .steps import command_id

    step = record.steps.get(message.step_id)
    if step is None or step.attempt != message.attempt or step.function != message.function:
        return None
    if message.command_id is not None and message.command_id != command_id(record, step):
        return None
    return step


def current_timer(record: "AgentRecord", message: TimerFired, now: datetime) -> bool:
    """A fire counts once, for the due time it was armed for, and not before that time."""
    armed = record.timers.get(message.timer_id)
    return armed is not None and armed == message.fire_at and armed <= now + FIRE_TOLERANCE


def current_child(record: "AgentRecord", message: ChildCompleted) -> "ChildState | None":
    child = record.children.get(str(message.seq))
    if child is None or child.done or child.run_id != message.child_run_id:
        return None
    return child
