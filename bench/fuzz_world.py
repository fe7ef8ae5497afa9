"""What the fuzz harness knows about its real agents, and what each record it sends must come to.

A `World` is the harness's model of the processor's state, kept only from what a
client or a worker can see (the step commands on `step-commands.*`, the state API) and
from what it sent itself. Every record it builds (`Sent`) carries its expected outcome
(`Expect`): the label the processor counts in `agentstream_inputs_total` and, for a dead
letter, the reason codes it may carry. Pure Python: no Kafka, no hypothesis; the unit
test drives it through `InputHandler` in-process, bench/fuzz.py through a real processor.

Dead letters are modelled to the byte where it matters: a letter copies the record's
value unless it is larger than `letter_value_limit` (min(64 kB, max_record_bytes / 8),
streams/engine/base.py `dead_letter`), then its value is empty and its reason says
where the value stays (topic, partition, offset). Agents at the record size limit are
modelled in bench/fuzz_hoard.py.

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

from agentstream.streams.engine.base import LETTER_VALUE_LIMIT
from agentstream.topics import (
    DeadLetter,
    Envelope,
    ScheduleAgent,
    SendEvent,
    StepResult,
    run_id_for,
)

from fuzz_agents import HOARD, KID, TARGET, kid_id
from fuzz_hoard import Hoards, Limits, choose, predict

AGENT_EVENTS, STEP_RESULTS = "agent-events", "step-results"
NESTING_LIMIT = 64  # deepest payload nesting the envelope decoder takes (topics/_envelopes.py MAX_NESTING)
PARSER_DEPTH = 200  # deepest payload nesting the JSON parser reads at all: deeper is not JSON to it
HOARD_PREFIX = "fz-hoard-"  # agent IDs of the hoards (no hostile record aims at an unknown agent of that name)
# A FuzzTarget always has a step in flight, so its record is never compacted: each input it applies
# grows it by up to this much (about 310 bytes measured). It takes applied inputs only up to half the
# record limit (`World.room`), far from the limit even with the largest dead letter in its outbox.
TARGET_GROWTH = 400


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

    @property
    def applied(self) -> int:
        """The inputs it applied (each grows its record): schedule, adopt, naps, adds, step results."""
        return 2 + self.naps + self.count + len(self.outputs)

    def fields(self) -> dict[str, Any]:
        """The fields the agent has when every valid input applied exactly once."""
        return {"count": self.count, "total": self.total, "outputs": self.outputs, "naps": self.naps, "kid": None}


class World:
    def __init__(self, agent_ids: list[str], *, record_limit: int, max_keys: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.targets = [Target(a, self.rng.randrange(1000), uuid.UUID(int=self.rng.getrandbits(128)).hex)
                        for a in agent_ids]
        self.by_id = {t.agent_id: t for t in self.targets}
        self.record_limit = record_limit
        self.max_keys = max_keys
        self.letter_value_limit = min(LETTER_VALUE_LIMIT, record_limit // 8)
        self.room = record_limit // 2 // TARGET_GROWTH  # inputs a FuzzTarget may apply
        self.hoards = Hoards(Limits(record_limit, self.letter_value_limit))
        self._keys: dict[str, OrderedDict[str, None]] = {a: OrderedDict() for a in agent_ids}
        self._serial = 0

    # -- what the harness sees ---------------------------------------------------------

    def real(self, agent_id: str) -> bool:
        return (agent_id in self.by_id or any(agent_id == t.kid_id for t in self.targets)
                or agent_id.startswith(HOARD_PREFIX))

    def target(self, index: int) -> Target:
        return self.targets[index % len(self.targets)]

    def has_room(self, t: Target) -> bool:
        return t.applied < self.room

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
        """A random valid input to a random target with room: the result of its step in flight, or an `add`."""
        roomy = [t for t in self.targets if self.has_room(t)]
        if not roomy:
            raise RuntimeError(f"every FuzzTarget applied {self.room} inputs: its record nears the size limit; "
                               "aim the records at more targets")
        waiting = [t for t in roomy if t.command is not None and t.command["message_id"] not in t.answered]
        if waiting and self.rng.random() < 0.4:
            return self._answer(self.rng.choice(waiting))
        t = self.rng.choice(roomy)
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

    # -- an agent at the record size limit (bench/fuzz_hoard.py) ----------------------

    def hoard_input(self, kind: str, pick: int, fraction: float) -> Sent:
        """The next input to the current hoard (scheduling a fresh one when there is none):
        a `keep` sized to come to the `pick`-th outcome it can come to, a `clear`, or a
        `refused` event; whichever of these has a certain outcome first."""
        hoard = self.hoards.current()
        if hoard is None:
            hoard = self.hoards.add(f"{HOARD_PREFIX}{len(self.hoards.all)}")
            schedule = ScheduleAgent(agent_id=hoard.agent_id, agent_type=HOARD)
            return Sent.of(schedule, "record limit: schedule", APPLIED, valid=True)
        for what, blob in choose(hoard, kind, pick, fraction, self.hoards.limits):
            event = {"keep": "keep", "clear": "clear", "refused": "no such event"}[what]
            message = SendEvent(agent_id=hoard.agent_id, event=event, payload="x" * blob if what == "keep" else None)
            value = message.to_bytes()
            guess = predict(hoard, what, blob, len(value), self.hoards.limits)
            if guess is not None:
                self.hoards.commit(guess.hoard)
                expect = Expect(guess.outcome, frozenset({guess.reason} if guess.reason else ()))
                category = f"record limit: {what} to a {'stuck' if hoard.stuck else 'running'} hoard"
                return Sent(AGENT_EVENTS, message.key, value, category, expect, valid=what != "refused")
        raise AssertionError(f"no input with a certain outcome for {hoard}")

    # -- sizes -------------------------------------------------------------------------

    def letter_bytes(self, key: bytes | None, value: bytes | None) -> int:
        """About the size of the dead letter of this record (reason and origin padded generously)."""
        letter = DeadLetter.of(
            reason_code="x" * 32, reason="x" * 2048, topic="x" * 200, partition=999, offset=10**15,
            key=key, value=value, rejected_by="x" * 100,
        )
        return len(letter.to_bytes())

    def letter_value(self, value: bytes | None) -> bytes | None:
        """The value the dead letter of a record with `value` copies; None: left out (too large)."""
        return None if value is not None and len(value) > self.letter_value_limit else value or b""

    def fit(self, build: Callable[[int], tuple[bytes | None, bytes]], size_class: str, over: float,
            in_record: bool) -> int:
        """How many repetitions make the value of the record built by `build(n)` (key, value):
        "copied": at most `letter_value_limit` (the largest a dead letter copies, less `over`
        of half of it) and, if its letter waits `in_record` (an agent's outbox), a letter
        within a sixth of the record limit, so that it certainly fits there;
        "left out": over `letter_value_limit` (by `over` of the way to the record limit);
        "over the limit": over the record limit itself (by `over` of a quarter of it)."""
        limit, letters = self.record_limit, self.letter_value_limit
        if size_class == "copied":
            goal = letters - int(over * letters / 2)

            def small_enough(n: int) -> bool:
                key, value = build(n)
                return len(value) <= goal and (not in_record or self.letter_bytes(key, value) <= limit // 6 - 4096)

            return _last(small_enough)
        if size_class == "left out":
            least = letters + 1 + int(over * (limit - letters))
        else:
            least = limit + 1 + int(over * limit / 4)
        return _last(lambda n: len(build(n)[1]) < least) + 1


def _last(holds: Callable[[int], bool]) -> int:
    """The largest n >= 1 for which `holds(n)` (it holds up to some n, then never again), or 1."""
    high = 1
    while holds(high):
        high *= 2
    low = high // 2  # holds(low), unless low == 0
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if holds(middle) else (low, middle)
    return max(1, low)


def nested(depth: int, mixed: bool = False) -> str:
    """JSON text of lists (or, if `mixed`, lists and objects by turns) nested `depth` levels deep."""
    opens = ['{"a":' if mixed and level % 2 else "[" for level in range(depth)]
    closes = ["}" if mixed and level % 2 else "]" for level in reversed(range(depth))]
    innermost = "{}" if opens[-1] != "[" else "[]"
    return "".join(opens[:-1]) + innermost + "".join(closes[1:])


def json_bytes(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
