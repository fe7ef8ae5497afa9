"""What the fuzz harness knows about its real agents, and what each record it sends must come to.

A `World` is the harness's model of the processor's state, kept only from what a
client or a worker can see (the step commands on `step-commands.*`, the state API) and
from what it sent itself. Every record it builds (`Sent`) carries its expected outcome
(`Expect`): the label the processor counts in `agentstream_inputs_total` and, for a dead
letter, the reason codes it may carry. Pure Python: no Kafka, no hypothesis; the unit
test drives it through `InputHandler` in-process, bench/fuzz.py through a real processor.

De-duplication is modelled exactly (streams/engine/dedup.py): every client input
(schedule, event, cancel) that reaches an agent's record is remembered by its
idempotency key or message ID, up to `max_keys` per agent, and a later client input
with a remembered key is a `duplicate` whatever else is wrong with it.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agentstream.topics import (
    DeadLetter,
    Envelope,
    ScheduleAgent,
    SendEvent,
    StepResult,
    run_id_for,
)

from fuzz_agents import KID, TARGET, kid_id

AGENT_EVENTS, STEP_RESULTS = "agent-events", "step-results"
OUTCOMES = ("applied", "ignored", "duplicate", "dead_lettered")
DEEP_LIMIT = 198  # deepest payload nesting a stored record can be read back with (see KNOWN)
ENVELOPE_DEPTH = 200  # deepest payload nesting the envelope decoder accepts

# Failures found by this fuzzer and pinned by strict-xfail tests in tests/unit/test_fuzz_handler.py.
# Records that hit them are generated only when a run asks for known failures.
KNOWN = {
    "oversized_dead_letter": "a rejected record whose dead letter is larger than one message may be "
                             "(AGENTSTREAM_MAX_RECORD_BYTES): see test_oversized_*",
    "deep_payload": f"an applied event whose payload nests {DEEP_LIMIT + 1}-{ENVELOPE_DEPTH} levels deep leaves a "
                    "record that cannot be read back: see test_deeply_nested_payload_*",
}


@dataclass(frozen=True)
class Expect:
    """One input's expected outcome; `reasons`: the dead-letter reason codes allowed (empty: any)."""

    outcome: str
    reasons: frozenset[str] = frozenset()

    @classmethod
    def letter(cls, *reasons: str) -> "Expect":
        return cls("dead_lettered", frozenset(reasons))

    def __str__(self) -> str:
        return self.outcome + (f"({'|'.join(sorted(self.reasons))})" if self.reasons else "")


APPLIED, IGNORED, DUPLICATE = Expect("applied"), Expect("ignored"), Expect("duplicate")
UNDECODABLE = Expect.letter("not_json", "invalid_envelope")


@dataclass
class Sent:
    """One record to produce, and what it must come to."""

    source: str  # AGENT_EVENTS or STEP_RESULTS
    key: bytes | None
    value: bytes | None
    category: str
    expect: Expect
    derived: tuple[Expect, ...] = ()  # inputs the processor itself sends to agent-events in reaction
    known: str | None = None  # a KNOWN failure this record runs into
    valid: bool = False  # one of the valid inputs the real agents' end state counts

    @classmethod
    def of(cls, message: Envelope, category: str, expect: Expect, **more: Any) -> "Sent":
        source = STEP_RESULTS if getattr(message, "kind", "") in ("step_result", "step_progress") else AGENT_EVENTS
        return cls(source, message.key, message.to_bytes(), category, expect, **more)


@dataclass
class Target:
    """A real FuzzTarget agent: what it must end up with, and what is in flight in it."""

    agent_id: str
    seed: int
    schedule_id: str
    count: int = 0
    total: int = 0
    outputs: list[int] = field(default_factory=list)
    naps: int = 0
    command: dict[str, Any] | None = None  # the latest step command seen for it
    answered: set[str] = field(default_factory=set)  # command IDs answered with a valid result
    results: deque[Sent] = field(default_factory=lambda: deque(maxlen=20))  # valid results sent
    timer: tuple[str, datetime] | None = None  # a 30-day timer armed by `nap`
    kid: tuple[str, int] | None = None  # the child's run ID and its seq in this agent
    recent: deque[tuple[str, Sent]] = field(default_factory=lambda: deque(maxlen=20))  # valid adds by key

    @property
    def run_id(self) -> str:
        return run_id_for(self.schedule_id)

    @property
    def kid_id(self) -> str:
        return kid_id(self.agent_id)

    def fields(self) -> dict[str, Any]:
        """The fields the agent has when every valid input applied exactly once."""
        return {"count": self.count, "total": self.total, "outputs": self.outputs, "naps": self.naps, "kid": None}


class World:
    def __init__(
        self, agent_ids: list[str], *, record_limit: int, max_keys: int, seed: int, known_failures: bool = False,
    ) -> None:
        self.rng = random.Random(seed)
        self.targets = [Target(a, self.rng.randrange(1000), uuid.UUID(int=self.rng.getrandbits(128)).hex)
                        for a in agent_ids]
        self.by_id = {t.agent_id: t for t in self.targets}
        self.record_limit = record_limit
        self.max_keys = max_keys
        self.known_failures = known_failures
        self._keys: dict[str, OrderedDict[str, None]] = {a: OrderedDict() for a in agent_ids}
        self._serial = 0

    # -- what the harness sees ---------------------------------------------------------

    def real(self, agent_id: str) -> bool:
        return agent_id in self.by_id or any(agent_id == t.kid_id for t in self.targets)

    def target(self, index: int) -> Target:
        return self.targets[index % len(self.targets)]

    def saw_command(self, command: dict[str, Any]) -> None:
        """A step command on step-commands (what a worker would get): the step now in flight."""
        target = self.by_id.get(str(command.get("agent_id")))
        if target is None:
            return
        if target.command is None or int(command["step_id"]) >= int(target.command["step_id"]):
            target.command = command

    def saw_timer(self, agent_id: str, timer_id: str, fire_at: datetime) -> None:
        self.by_id[agent_id].timer = (timer_id, fire_at)

    def saw_kid(self, agent_id: str, run_id: str, seq: int) -> None:
        self.by_id[agent_id].kid = (run_id, seq)

    # -- the key window of client inputs (dedup.py) --------------------------------------

    def client(self, agent_id: str, key: str) -> Expect | None:
        """A client input with `key` reaches `agent_id`'s record: DUPLICATE if it remembers
        the key, else None (and the key is remembered from now on)."""
        keys = self._keys.get(agent_id)
        if keys is None:
            return None
        if key in keys:
            return DUPLICATE
        keys[key] = None
        while len(keys) > self.max_keys:
            keys.popitem(last=False)
        return None

    def remembers(self, agent_id: str, key: str) -> bool:
        return key in self._keys.get(agent_id, {})

    # -- valid inputs ------------------------------------------------------------------

    def setup(self) -> list[Sent]:
        """Schedule every target, arm its long timer, start its child."""
        records = []
        for t in self.targets:
            schedule = ScheduleAgent(message_id=t.schedule_id, agent_id=t.agent_id, agent_type=TARGET, input=t.seed)
            nap, adopt = (SendEvent(agent_id=t.agent_id, event=name) for name in ("nap", "adopt"))
            for message in (schedule, nap, adopt):
                assert self.client(t.agent_id, message.message_id) is None
            t.naps += 1
            records += [
                Sent.of(schedule, "setup", APPLIED, valid=True),
                Sent.of(nap, "setup", APPLIED, valid=True),
                Sent.of(adopt, "setup", APPLIED, derived=(APPLIED,), valid=True),  # the child's schedule
            ]
        return records

    def valid(self) -> Sent:
        """A random valid input to a random target: the result of its step in flight, or an `add`."""
        waiting = [t for t in self.targets if t.command is not None and t.command["message_id"] not in t.answered]
        if waiting and self.rng.random() < 0.4:
            return self._answer(self.rng.choice(waiting))
        t = self.rng.choice(self.targets)
        n = self.rng.randrange(-1000, 1000)
        self._serial += 1
        idempotency = f"idem-{self._serial}" if self.rng.random() < 0.5 else None
        event = SendEvent(agent_id=t.agent_id, event="add", payload=n, idempotency_key=idempotency)
        key = idempotency or event.message_id
        assert self.client(t.agent_id, key) is None
        t.count, t.total = t.count + 1, t.total + n
        sent = Sent.of(event, "valid add", APPLIED, valid=True)
        t.recent.append((key, sent))
        return sent

    def _answer(self, t: Target) -> Sent:
        command = t.command
        assert command is not None
        output = self.rng.randrange(10**6)
        result = StepResult(
            agent_id=t.agent_id, run_id=command["run_id"], step_id=command["step_id"], attempt=command["attempt"],
            function=command["function"], ok=True, output=output, command_id=command["message_id"], duration_s=0.0,
        )
        t.answered.add(command["message_id"])
        t.outputs.append(output)
        sent = Sent.of(result, "valid step result", APPLIED, valid=True)
        t.results.append(sent)
        return sent

    # -- sizes -------------------------------------------------------------------------

    def letter_bytes(self, key: bytes | None, value: bytes | None) -> int:
        """About the size of the dead letter of this record (reason and origin padded generously)."""
        letter = DeadLetter.of(
            reason_code="x" * 32, reason="x" * 2048, topic="x" * 200, partition=999, offset=10**15,
            key=key, value=value, rejected_by="x" * 100,
        )
        return len(letter.to_bytes())

    def fit(self, build: Callable[[int], tuple[bytes | None, bytes]], size_class: str) -> tuple[int, str | None]:
        """How many repetitions make the record built by `build(n)` (key, value) "big" (its dead
        letter within a sixth of the record limit, so it fits even inside its agent's record)
        or "oversized" (its dead letter over the limit: a KNOWN failure, so big unless asked for)."""
        oversized = size_class == "oversized" and self.known_failures
        goal = self.record_limit * 11 // 10 if oversized else self.record_limit // 6 - 4096
        small, large = (self.letter_bytes(*build(n)) for n in (64, 128))
        n = max(1, 64 + (goal - small) * 64 // max(1, large - small))
        while n > 1 and not oversized and self.letter_bytes(*build(n)) > goal:
            n = n * 9 // 10
        while oversized and self.letter_bytes(*build(n)) <= self.record_limit:
            n = n * 11 // 10 + 1
        return n, ("oversized_dead_letter" if oversized else None)

    def depth(self, wanted: int) -> tuple[int, str | None]:
        """`wanted` nesting levels, unless that is a KNOWN failure not asked for."""
        if DEEP_LIMIT < wanted <= ENVELOPE_DEPTH:
            return (wanted, "deep_payload") if self.known_failures else (DEEP_LIMIT, None)
        return wanted, None


def nested(depth: int) -> str:
    """JSON text of a list nested `depth` levels deep."""
    return "[" * depth + "]" * depth


def json_bytes(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
