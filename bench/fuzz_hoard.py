"""What the fuzz harness expects of an agent whose record reaches the size limit.

A `FuzzHoard` (bench/fuzz_agents.py) keeps every blob it is sent in its fields, so the
harness can drive its record to AGENTSTREAM_MAX_RECORD_BYTES and back (`clear`) by
amounts it chooses. A turn must leave `PARK_HEADROOM` bytes under the limit; one that
would not (streams/engine/seal.py `_too_large`) is not applied: the agent is parked
(`stuck`, its error naming the limit) with the input kept with it (`parked`) if that fits
the limit; if not, the agent is parked and the input dead-lettered as `record_too_large`;
if even the parked agent does not fit, the record stays as it was and only the dead
letter goes out. A refused input whose dead letter does not fit goes out the same way,
the record unchanged, and nothing else of the turn (nor of the unstick attempt before it).

A stuck agent's next input first tries to unstick it (durable.py `_unstick`: its parked
inputs and this one applied in order, checked as one turn), once per process; after that,
inputs are parked behind the others without a try (`_stuck_input`). The engine forgets
the agent (so its next input tries again) whenever a turn is not recorded as run because
of the size limit, and an agent that runs again starts over (a later park is a new
episode). `Hoard.tried` models exactly that.

The harness cannot see a record's size, only bound it: a FuzzHoard is quiescent after
every turn, so its record is compacted and holds each kept blob twice (fields and base),
each parked input once, and bookkeeping that grows with the inputs it saw (`overhead`,
measured and padded). Every input is sized so that each size test it meets has one
certain answer (`predict` returns None when one would not, and another input is chosen).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

from agentstream.streams.engine.seal import PARK_HEADROOM

LIFE = 8  # inputs a hoard takes before the next hoard input goes to a fresh one (bounds the overhead)
MIN_BLOB = 2048  # a kept blob is larger than recent events show of a payload (1024 bytes): they keep its size
BASE_OVERHEAD, PER_INPUT = 4096, 640  # a hoard record besides its blobs: at most this plus this per input seen
LETTER_OVERHEAD = 2048  # a dead letter besides the value it copies
MAX_PARKED = 1000  # EngineConfig.max_parked: a stuck agent keeps no more inputs than this
STUCK_CODE, TOO_LARGE = "agent_stuck", "record_too_large"


class Prediction(NamedTuple):
    outcome: str  # applied, parked or dead_lettered
    reason: str | None  # the dead letter's reason code
    hoard: "Hoard"  # the hoard after it


@dataclass(frozen=True)
class Limits:
    record: int  # AGENTSTREAM_MAX_RECORD_BYTES: what a parked agent may fill
    letter_value: int  # a dead letter copies a value only up to this size

    @property
    def turn(self) -> int:
        """What a turn may fill: it leaves room to park its agent."""
        return self.record - PARK_HEADROOM


@dataclass(frozen=True)
class Hoard:
    agent_id: str
    kept: tuple[int, ...] = ()  # the blobs in its fields (their lengths)
    parked: tuple[int, ...] = ()  # the inputs kept with it while stuck: a keep's blob length, 0 for a clear
    stuck: bool = False
    tried: bool = False  # the engine tried to unstick it and has not forgotten it since
    inputs: int = 0  # inputs that reached it

    def fields(self) -> dict[str, list[int]]:
        return {"kept": list(self.kept)}

    def overhead(self) -> int:
        return BASE_OVERHEAD + PER_INPUT * (self.inputs + 1)


@dataclass
class Hoards:
    """The hoards of one run, the last one taking the inputs until its life is over."""

    limits: Limits
    all: list[Hoard] = field(default_factory=list)

    def current(self) -> Hoard | None:
        return self.all[-1] if self.all and self.all[-1].inputs < LIFE else None

    def add(self, agent_id: str) -> Hoard:
        self.all.append(Hoard(agent_id))
        return self.all[-1]

    def commit(self, hoard: Hoard) -> None:
        index = next(i for i, h in enumerate(self.all) if h.agent_id == hoard.agent_id)
        self.all[index] = hoard


def predict(hoard: Hoard, kind: str, blob: int, size: int, limits: Limits) -> Prediction | None:
    """What a `keep` of `blob` bytes, a `clear`, or a `refused` input (an unknown event),
    `size` bytes on the topic, comes to at `hoard`; None if a size test it meets is uncertain."""
    seen = replace(hoard, inputs=hoard.inputs + 1)
    if not hoard.stuck:
        if kind == "refused":  # its letter kept with the record, or sent alone if that is too large
            return Prediction("dead_lettered", "unknown_event", seen)
        kept = _after(hoard.kept, [(kind, blob)])
        fits = _fits(2 * sum(kept), seen.overhead(), limits.turn)
        if fits is None:
            return None
        return Prediction("applied", None, replace(seen, kept=kept)) if fits else _too_large(seen, blob, size, limits)
    if not hoard.tried:  # an unstick: the parked inputs and this one, as one turn
        trying = replace(seen, tried=True)
        pending = [("keep" if b else "clear", b) for b in hoard.parked] + ([] if kind == "refused" else [(kind, blob)])
        kept = _after(hoard.kept, pending)
        unstuck = replace(trying, kept=kept, parked=(), stuck=False, tried=False)  # running: a later park starts over
        if kind == "refused":
            fits = _fits(2 * sum(kept), seen.overhead() + _letter(size, limits), limits.turn)
            # not recorded when too large: the engine forgets the agent, so its next input tries again
            return None if fits is None else Prediction(
                "dead_lettered", "unknown_event", unstuck if fits else replace(trying, tried=False))
        fits = _fits(2 * sum(kept), seen.overhead(), limits.turn)
        if fits is None:
            return None
        return Prediction("applied", None, unstuck) if fits else _too_large(trying, blob, size, limits)
    if kind == "refused" or len(hoard.parked) >= MAX_PARKED:
        # the letter is kept with the record; if that is too large it goes out alone and the engine forgets the agent
        fits = _fits(_stored(hoard), seen.overhead() + _letter(size, limits), limits.record)
        if fits is None:
            return None
        code = "unknown_event" if kind == "refused" else STUCK_CODE
        return Prediction("dead_lettered", code, seen if fits else replace(seen, tried=False))
    fits = _fits(_stored(hoard) + blob, seen.overhead(), limits.record)  # parked by the turn, or by `_too_large`
    if fits is None:
        return None
    if fits:
        return Prediction("parked", None, replace(seen, parked=(*hoard.parked, blob)))
    # parked without it, or left as it was: stuck either way, and the engine forgets the agent
    return Prediction("dead_lettered", TOO_LARGE, replace(seen, tried=False))


def _too_large(hoard: Hoard, blob: int, size: int, limits: Limits) -> Prediction | None:
    """seal.py `_too_large` for a turn of `hoard` (already counting this input as seen)."""
    fits = _fits(_stored(hoard) + blob, hoard.overhead(), limits.record)
    if fits:  # parked with the input: the engine forgets the agent, so its next input tries to unstick it
        return Prediction("parked", None, replace(hoard, stuck=True, tried=False, parked=(*hoard.parked, blob)))
    if fits is None:
        return None
    bare = _fits(_stored(hoard), hoard.overhead() + _letter(size, limits), limits.record)
    if bare is None and not hoard.stuck:  # parked, or left running: the difference shows
        return None
    return Prediction("dead_lettered", TOO_LARGE, replace(hoard, stuck=hoard.stuck or bool(bare), tried=False))


def _after(kept: tuple[int, ...], inputs: list[tuple[str, int]]) -> tuple[int, ...]:
    for kind, blob in inputs:
        kept = (*kept, blob) if kind == "keep" else ()
    return kept


def _stored(hoard: Hoard) -> int:
    """The least a hoard's stored record holds: each kept blob twice, each parked one once."""
    return 2 * sum(hoard.kept) + sum(hoard.parked)


def _letter(size: int, limits: Limits) -> int:
    return LETTER_OVERHEAD + (size if size <= limits.letter_value else 0)


def _fits(least: int, overhead: int, limit: int) -> bool | None:
    """Whether a record of `least` bytes plus up to `overhead` fits `limit`: None if that depends on the overhead."""
    if least + overhead <= limit:
        return True
    return False if least > limit else None


def choose(hoard: Hoard, kind: str, pick: int, fraction: float, limits: Limits) -> list[tuple[str, int]]:
    """Inputs to try at `hoard`, best first: the `kind` asked for (a keep of a size that
    certainly comes to the `pick`-th of the outcomes one can come to, at `fraction` of
    that range), then what always has a certain outcome."""
    if kind != "keep":
        wanted = [(kind, 0)]
    else:
        top = limits.record * 5 // 4
        grid = sorted({MIN_BLOB + (top - MIN_BLOB) * i // 256 for i in range(257)})
        by_outcome: dict[str, list[int]] = {}
        for blob in grid:
            guess = predict(hoard, "keep", blob, blob + 512, limits)
            if guess is not None:
                by_outcome.setdefault(guess.outcome, []).append(blob)
        outcomes = sorted(by_outcome)
        wanted = []
        if outcomes:
            sizes = by_outcome[outcomes[pick % len(outcomes)]]
            wanted.append(("keep", sizes[min(len(sizes) - 1, int(fraction * len(sizes)))]))
    return [*wanted, ("clear", 0), ("keep", limits.record * 5 // 4)]
