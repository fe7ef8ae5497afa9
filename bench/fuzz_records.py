"""Hostile records for agent-events and step-results, generated with hypothesis.

A strategy here draws a *recipe*: one of the functions below with all its random
ingredients bound (`functools.partial`). Calling `recipe(world)` builds the record
against what the `World` knows at that moment (the step in flight, the armed timer, the
child) and says what it must come to. Drawing first and building late lets bench/fuzz.py
draw all its recipes up front (seeded) and still aim each one at the live agents.

Every recipe is hostile by construction: it is undecodable, misaddressed, for an agent
that does not exist, or for a real agent but wrong in at least one thing that makes it
count for nothing (a near miss of the step, timer or child in flight). The few that are
valid envelopes with hostile contents say so in their expectation (`deep`: applied), and
`hoard` drives an agent's record to the size limit with valid inputs (and refused ones).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from agentstream.topics import (
    AgentStatus,
    AgentUpdate,
    CancelAgent,
    ChildCompleted,
    DeadLetter,
    Envelope,
    ParentRef,
    ScheduleAgent,
    SendEvent,
    StepCommand,
    StepError,
    StepProgress,
    StepResult,
    TimerFired,
    derived_message_id,
    new_message_id,
)

from fuzz_agents import EVENTS, KID, STEP_FUNCTION, TARGET
from fuzz_world import (
    AGENT_EVENTS,
    DUPLICATE,
    IGNORED,
    NESTING_LIMIT,
    PARSER_DEPTH,
    STEP_RESULTS,
    UNDECODABLE,
    Expect,
    Sent,
    Target,
    World,
    json_bytes,
    nested,
)

Recipe = Callable[[World], Sent]
JSON = Any

# -- ingredients ---------------------------------------------------------------------------

texts = st.text(max_size=24)
names = st.text(min_size=1, max_size=40)
json_values: st.SearchStrategy[JSON] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=8,
)
not_ints = (  # payloads an `n: int` parameter refuses
    texts.map(lambda s: "x" + s) | st.lists(json_values, max_size=3) | st.dictionaries(texts, json_values, max_size=3)
    | st.none() | st.floats(allow_infinity=False).filter(lambda f: not f.is_integer())
)
sources = st.sampled_from([AGENT_EVENTS, STEP_RESULTS])
targets = st.sampled_from(range(10_000))
times = st.datetimes(timezones=st.none() | st.just(timezone.utc) | st.timezones())
idempotency = st.none() | st.text(max_size=2)  # short keys repeat, so the key window is exercised too
size_classes = st.sampled_from(["copied", "left out", "over the limit"])
overs = st.sampled_from([0.0, 0.0, 1.0]) | st.floats(0.0, 1.0)  # how far into a size class: its edges often
units = st.sampled_from(["x", '"', "\\", "\u0001", "é", "😀", "\n", "{"])
AGENT_KINDS = ("schedule", "event", "cancel", "timer", "child_result")
RESULT_KINDS = ("step_result", "step_progress")


def ghost_of(world: World, name: str) -> str:
    """An agent ID that no real agent has."""
    return name if not world.real(name) else f"ghost:{name}"


def envelope(kind: str, agent_id: str) -> Any:
    """A valid envelope of `kind` for `agent_id` (contents beside the point)."""
    run = derived_message_id(agent_id, "run")
    if kind == "schedule":
        return ScheduleAgent(agent_id=agent_id, agent_type="Nope")
    if kind == "event":
        return SendEvent(agent_id=agent_id, event="e")
    if kind == "cancel":
        return CancelAgent(agent_id=agent_id, run_id=run)
    if kind == "timer":
        return TimerFired(agent_id=agent_id, run_id=run, timer_id="t:1", fire_at=datetime.now(timezone.utc))
    if kind == "child_result":
        return ChildCompleted(agent_id=agent_id, run_id=run, seq=1, child_id="c", child_run_id=run,
                              status=AgentStatus.FAILED)
    if kind == "step_result":
        return StepResult(agent_id=agent_id, run_id=run, step_id="1", attempt=1, function="f", ok=True, duration_s=0.0)
    return StepProgress(agent_id=agent_id, run_id=run, step_id="1", attempt=1, function="f", event="started",
                        command_id=run)


def kinds_for(source: str) -> tuple[str, ...]:
    return RESULT_KINDS if source == STEP_RESULTS else AGENT_KINDS


# -- undecodable -----------------------------------------------------------------------------


def garbage(world: World, source: str, key: bytes | None, raw: bytes) -> Sent:
    return Sent(source, key, raw, "garbage bytes", Expect.letter("empty_value") if not raw else UNDECODABLE)


def no_value(world: World, source: str, key: bytes | None, empty: bool) -> Sent:
    return Sent(source, key, b"" if empty else None, "null or empty value", Expect.letter("empty_value"))


def json_junk(world: World, source: str, key: bytes | None, document: JSON) -> Sent:
    if isinstance(document, dict):
        document = {k: v for k, v in document.items() if k != "agent_id"}  # so that it can never be a valid envelope
    return Sent(source, key, json_bytes(document), "JSON that is no envelope", Expect.letter("invalid_envelope"))


COMMON_MUTATIONS: list[tuple[str, Any]] = [
    ("agent_id", 5), ("agent_id", ""), ("agent_id", None), ("agent_id", ["a"]), ("agent_id", "x" * 513),
    ("message_id", ""), ("message_id", 7), ("message_id", None), ("sent_at", "yesterday"), ("sent_at", []),
    ("sent_at", None), ("v", 2), ("v", 0), ("v", "1"), ("v", None), ("kind", "nope"), ("kind", None), ("kind", 3),
    ("kind", ""), ("-agent_id", None), ("+extra", 1),
]
KIND_MUTATIONS: dict[str, list[tuple[str, Any]]] = {
    "schedule": [("agent_type", ""), ("agent_type", None), ("parent", {"agent_id": "p"}), ("idempotency_key", 1)],
    "event": [("event", ""), ("event", None), ("event", "e" * 257), ("run_id", 5)],
    "cancel": [("cancel_children", "maybe"), ("reason", 5), ("run_id", [])],
    "timer": [("fire_at", "soon"), ("fire_at", None), ("timer_id", None), ("-run_id", None)],
    "child_result": [("seq", 0), ("seq", -5), ("seq", "one"), ("status", "zombie"), ("child_id", ""), ("-seq", None)],
    "step_result": [("attempt", 0), ("attempt", -1), ("attempt", "one"), ("ok", "maybe"), ("ok", None),
                    ("function", ""), ("error", {"type": 1}), ("duration_s", -1), ("-run_id", None)],
    "step_progress": [("event", "paused"), ("attempt", 0), ("command_id", None), ("-command_id", None)],
}


def broken_envelope(world: World, source: str, kind_index: int, mutation_index: int, name: str) -> Sent:
    """A valid envelope with one thing wrong that no reading of it could accept."""
    kind = kinds_for(source)[kind_index % len(kinds_for(source))]
    document = envelope(kind, name).model_dump(mode="json")
    mutations = COMMON_MUTATIONS + KIND_MUTATIONS[kind]
    field, value = mutations[mutation_index % len(mutations)]
    if field.startswith("-"):
        document.pop(field[1:], None)
    elif field.startswith("+"):
        document[f"extra_{name}"] = value
    else:
        document[field] = value
    return Sent(source, name.encode(), json_bytes(document), f"broken {kind}", Expect.letter("invalid_envelope"))


def wrong_topic(world: World, source: str, target: int, which: int) -> Sent:
    """A valid record of another topic (the other input topic, a command, an update, a dead letter)."""
    t = world.target(target)
    other = RESULT_KINDS + AGENT_KINDS if source == AGENT_EVENTS else AGENT_KINDS
    documents: list[Any] = [envelope(k, t.agent_id) for k in other if k not in kinds_for(source)]
    documents += [
        StepCommand(agent_id=t.agent_id, run_id=t.run_id, step_id="1", function=STEP_FUNCTION, task_queue="restack",
                    attempt=1, start_to_close_timeout_s=None, schedule_to_start_timeout_s=None,
                    heartbeat_timeout_s=None),
        AgentUpdate(agent_id=t.agent_id, agent_type=TARGET, run_id=t.run_id, status=AgentStatus.COMPLETED),
        DeadLetter.of(reason_code="x", reason="x", topic="t", partition=0, offset=0, key=None, value=b"x",
                      rejected_by="x"),
    ]
    document = documents[which % len(documents)]
    return Sent(source, t.agent_id.encode(), document.to_bytes(), "record of another topic",
                Expect.letter("invalid_envelope"))


# -- misaddressed ------------------------------------------------------------------------------


def wrong_key(world: World, source: str, target: int, kind_index: int, how: int, junk: bytes) -> Sent:
    """A valid envelope under a key that is not its agent ID."""
    t = world.target(target)
    kind = kinds_for(source)[kind_index % len(kinds_for(source))]
    message = envelope(kind, t.agent_id)
    own = t.agent_id.encode()
    keys: list[bytes | None] = [None, own.upper(), own + b"\x00", b"\xff" + own, junk, world.target(target + 1).kid_id.encode()]
    key = keys[how % len(keys)]
    if key == own:
        key = own + b"!"
    return Sent(source, key, message.to_bytes(), "key is not the agent ID", Expect.letter("key_mismatch"))


def ghost_input(world: World, source: str, kind_index: int, name: str, payload: JSON, when: datetime) -> Sent:
    """A valid input for an agent that was never scheduled."""
    ghost = ghost_of(world, name)
    kind = kinds_for(source)[kind_index % len(kinds_for(source))]
    if kind == "schedule":
        kind = "event"
    build: dict[str, Callable[[], Envelope]] = {
        "event": lambda: SendEvent(agent_id=ghost, event="add", payload=payload),
        "cancel": lambda: CancelAgent(agent_id=ghost, reason=str(payload)[:50]),
        "timer": lambda: TimerFired(agent_id=ghost, run_id="r", timer_id="t:2", fire_at=when),
        "child_result": lambda: ChildCompleted(agent_id=ghost, run_id="r", seq=3, child_id="k", child_run_id="k",
                                               status=AgentStatus.COMPLETED, result=payload),
        "step_result": lambda: StepResult(agent_id=ghost, run_id="r", step_id="1", attempt=1, function=STEP_FUNCTION,
                                          ok=True, output=payload, duration_s=0.0),
        "step_progress": lambda: StepProgress(agent_id=ghost, run_id="r", step_id="1", attempt=1,
                                              function=STEP_FUNCTION, event="heartbeat", command_id="c"),
    }
    message = build[kind]()
    return Sent.of(message, f"{kind} for an unknown agent", Expect.letter("agent_not_found"))


def _parent(world: World, choice: int, name: str, seq: int) -> ParentRef | None:
    """No parent, an unknown one, or a real agent (that started no such child)."""
    if choice % 3 == 0:
        return None
    if choice % 3 == 1:
        return ParentRef(agent_id=ghost_of(world, name + "-parent"), run_id=name, seq=seq)
    t = world.target(choice)
    return ParentRef(agent_id=t.agent_id, run_id=t.run_id if choice % 2 else name, seq=seq)


def _child_failed(world: World, parent: ParentRef | None) -> tuple[Expect, ...]:
    """A rejected schedule with a parent tells the parent: one more input, on agent-events."""
    if parent is None:
        return ()
    return (IGNORED,) if world.real(parent.agent_id) else (Expect.letter("agent_not_found"),)


def ghost_schedule(world: World, name: str, known_type: bool, payload: JSON, parent: int, seq: int) -> Sent:
    """A schedule for a new agent that cannot start: an unknown type, or an input its run refuses."""
    ghost = ghost_of(world, name)
    ref = _parent(world, parent, name, seq)
    agent_type = (TARGET if parent % 2 else KID) if known_type else f"Nope{name}"
    value = payload if known_type else None
    message = ScheduleAgent(agent_id=ghost, agent_type=agent_type, input=value, parent=ref)
    code = "invalid_input" if known_type else "unknown_agent_type"
    return Sent.of(message, "schedule that cannot start", Expect.letter(code), derived=_child_failed(world, ref))


# -- real agents, wrong in some way -------------------------------------------------------------


def _client(world: World, t: Target, message: ScheduleAgent | SendEvent | CancelAgent, category: str,
            expect: Expect, **more: Any) -> Sent:
    """A client input reaching `t`'s record: a duplicate if its key is remembered."""
    key = message.idempotency_key or message.message_id
    duplicate = world.client(t.agent_id, key)
    if duplicate is not None:
        return Sent.of(message, category, duplicate)
    return Sent.of(message, category, expect, **more)


def bad_event(world: World, target: int, name: str, payload: JSON, bad_payload: JSON, run: int, key: str | None,
              unknown: bool, when: datetime) -> Sent:
    """An event the agent does not take: another run's, an unknown event, or `add` with a bad payload."""
    t = world.target(target)
    run_id = [None, t.run_id, name][run % 3]
    event = name if unknown and name not in EVENTS else "add"
    message = SendEvent(agent_id=t.agent_id, event=event, payload=payload if event != "add" else bad_payload,
                        run_id=run_id, idempotency_key=key, sent_at=when)
    code = "run_mismatch" if run_id not in (None, t.run_id) else "unknown_event" if event != "add" else "invalid_payload"
    return _client(world, t, message, f"event refused ({code})", Expect.letter(code))


def bad_cancel(world: World, target: int, run: str, reason: str | None, children: bool, key: str | None) -> Sent:
    """A cancel for another run of a real agent."""
    t = world.target(target)
    run_id = run if run != t.run_id else run + "-other"
    message = CancelAgent(agent_id=t.agent_id, run_id=run_id, reason=reason, cancel_children=children,
                          idempotency_key=key)
    return _client(world, t, message, "cancel of another run", Expect.letter("run_mismatch"))


def rival_schedule(world: World, target: int, name: str, payload: JSON, parent: int, seq: int, key: str | None) -> Sent:
    """A schedule for an agent ID that is already running (any type, any input)."""
    t = world.target(target)
    ref = _parent(world, parent, name, seq)
    agent_type = [TARGET, KID, "Nope" + name][parent % 3]
    message = ScheduleAgent(agent_id=t.agent_id, agent_type=agent_type, input=payload, parent=ref, idempotency_key=key)
    return _client(world, t, message, "schedule of a running agent", Expect.letter("already_running"),
                   derived=_child_failed(world, ref))


def replay(world: World, target: int, which: int, payload: int, exact: bool) -> Sent:
    """A valid `add` sent again, as it was or with another payload under the same key."""
    t = world.target(target)
    remembered = [(key, sent) for key, sent in t.recent if world.remembers(t.agent_id, key)]
    if not remembered:
        return bad_cancel(world, target, "replay-fallback", None, False, None)
    key, sent = remembered[which % len(remembered)]
    if exact:
        return Sent(sent.source, sent.key, sent.value, "event sent again", DUPLICATE)
    message = SendEvent(agent_id=t.agent_id, event="add", payload=payload, message_id=key, idempotency_key=key)
    return Sent.of(message, "another event under a used key", DUPLICATE)


def replayed_result(world: World, target: int, which: int) -> Sent:
    """A valid step result sent again once its step is done."""
    t = world.target(target)
    if not t.results:
        return forged_result(world, target, frozenset({"function"}), 0, True, None, "x")
    sent = t.results[which % len(t.results)]
    return Sent(sent.source, sent.key, sent.value, "step result sent again", IGNORED)


def _in_flight(t: Target) -> tuple[str, int, str]:
    """(step_id, attempt, command_id) of the step in flight, as the last command showed it."""
    command = t.command
    if command is None:
        return "1", 1, derived_message_id(t.run_id, "step:1:1")
    return str(command["step_id"]), int(command["attempt"]), str(command["message_id"])


def _near_miss(world: World, target: int, misses: frozenset[str], step: int, junk: str) -> dict[str, Any]:
    """Fields of a result or progress for the step in flight, wrong in each of `misses` (at least one)."""
    t = world.target(target)
    step_id, attempt, command_id = _in_flight(t)
    seq = int(step_id)
    fields: dict[str, Any] = {
        "agent_id": t.agent_id, "run_id": t.run_id, "step_id": [step_id, str(max(1, seq - 1)), str(seq + 1), junk][step % 4],
        "attempt": attempt, "function": STEP_FUNCTION, "command_id": command_id if step % 2 else None,
    }
    if "attempt" in misses:
        fields["attempt"] = attempt + 1 + step % 1000
    if "function" in misses:
        fields["function"] = "f" + junk[:200] if "f" + junk[:200] != STEP_FUNCTION else "g"
    if "command_id" in misses:
        other = [derived_message_id(t.run_id, f"step:{seq}:{attempt + 1}"), junk or "c", command_id + "0"][step % 3]
        fields["command_id"] = other if other != command_id else command_id + "0"
    if "run_id" in misses:
        fields["run_id"] = [derived_message_id(junk, "run"), t.run_id.upper(), junk][step % 3] or "r"
        if fields["run_id"] == t.run_id:
            fields["run_id"] += "0"
    return fields


def forged_result(world: World, target: int, misses: frozenset[str], step: int, ok: bool, output: JSON,
                  junk: str, when: datetime | None = None) -> Sent:
    fields = _near_miss(world, target, misses, step, junk)
    error = None if ok else StepError(type="Forged" + junk[:20], message=junk, retryable=step % 2 == 0)
    message = StepResult(**fields, ok=ok, output=output if ok else None, error=error, duration_s=0.0,
                         sent_at=when or datetime.now(timezone.utc))
    return Sent.of(message, "forged step result", IGNORED)


def forged_progress(world: World, target: int, misses: frozenset[str], step: int, started: bool, junk: str) -> Sent:
    fields = _near_miss(world, target, misses, step, junk)
    fields["command_id"] = fields["command_id"] or junk or "c"  # required here
    message = StepProgress(**fields, event="started" if started else "heartbeat")
    return Sent.of(message, "forged step progress", IGNORED)


def forged_fire(world: World, target: int, which: int, when: datetime, shift_s: float, other_run: bool) -> Sent:
    """A fire of the armed 30-day timer too early or for another due time, or of a timer never armed."""
    t = world.target(target)
    step_id = _in_flight(t)[0]
    armed_id, armed_at = t.timer or ("t:2", datetime.now(timezone.utc) + timedelta(days=30))
    timer_id = [armed_id, f"t:{which}", f"retry:{step_id}", f"stc:{step_id}", f"s2c:{step_id}", f"hb:{step_id}",
                str(which)][which % 7]
    fire_at = [armed_at, armed_at + timedelta(seconds=shift_s), when][which % 3]
    message = TimerFired(agent_id=t.agent_id, run_id=t.run_id + "0" if other_run else t.run_id, timer_id=timer_id,
                         fire_at=fire_at)
    return Sent.of(message, "forged timer fire", IGNORED)


def forged_child(world: World, target: int, misses: frozenset[str], other: int, status: str, result: JSON) -> Sent:
    """A child result for a child that is not in flight, or for another run of the parent or the child."""
    t = world.target(target)
    kid_run, seq = t.kid or (derived_message_id(t.agent_id, "kid"), 3)
    message = ChildCompleted(
        agent_id=t.agent_id, run_id=t.run_id + "0" if "run_id" in misses else t.run_id,
        seq=seq + 1 + other if "seq" in misses else seq, child_id=t.kid_id,
        child_run_id=kid_run + "0" if "child_run_id" in misses else kid_run, status=AgentStatus(status), result=result,
    )
    return Sent.of(message, "forged child result", IGNORED)


# -- huge, deep, and agents at the record limit ---------------------------------------------


def huge(world: World, shape: int, target: int, unit: str, size_class: str, over: float, name: str) -> Sent:
    """A large record, whose dead letter copies its value ("copied": up to the largest value a
    letter copies) or leaves it out, saying where it stays ("left out": larger than that;
    "over the limit": larger than an agent's record may be)."""
    t = world.target(target)
    kind = ["garbage", "unknown agent", "unknown event", "wrong key", "forged result"][shape % 5]
    agent_id = ghost_of(world, name) if kind == "unknown agent" else t.agent_id
    message_id = new_message_id()

    def build(n: int) -> tuple[bytes | None, bytes]:
        text = unit * n
        if kind == "garbage":
            return None, text.encode()
        if kind == "forged result":
            return t.agent_id.encode(), StepResult(agent_id=t.agent_id, run_id=t.run_id, step_id="0", attempt=1,
                                                   function="nope", ok=True, output=text,
                                                   duration_s=0.0).to_bytes()
        key = (agent_id + "!").encode() if kind == "wrong key" else agent_id.encode()
        return key, SendEvent(agent_id=agent_id, event="no such event", payload=text, message_id=message_id).to_bytes()

    # the letter of an unknown event waits in its agent's outbox: it must fit there with room to spare
    key, value = build(world.fit(build, size_class, over, in_record=kind == "unknown event"))
    category = f"huge ({size_class}): {kind}"
    if kind == "forged result":  # ignored: no dead letter to carry it
        return Sent(STEP_RESULTS, key, value, category, IGNORED)
    expect = {"garbage": UNDECODABLE, "wrong key": Expect.letter("key_mismatch"),
              "unknown agent": Expect.letter("agent_not_found"), "unknown event": Expect.letter("unknown_event")}[kind]
    if kind == "unknown event":
        expect = world.client(t.agent_id, message_id) or expect
    return Sent(AGENT_EVENTS, key, value, category, expect)


def deep(world: World, shape: int, target: int, levels: int, mixed: bool, name: str) -> Sent:
    """A payload nested `levels` deep: refused by the decoder past its limit (`invalid_envelope`),
    not JSON to its parser further on (`not_json`), else taken as any payload."""
    t = world.target(target)
    payload = nested(levels, mixed)
    too_deep = (Expect.letter("not_json") if levels > PARSER_DEPTH
                else Expect.letter("invalid_envelope") if levels > NESTING_LIMIT else None)
    kind = ["nap", "unknown agent", "forged result"][shape % 3]
    if kind == "forged result":
        text = (f'{{"kind":"step_result","agent_id":{json_bytes(t.agent_id).decode()},"run_id":"{t.run_id}",'
                f'"step_id":"0","attempt":1,"function":"nope","ok":true,"output":{payload}}}')
        return Sent(STEP_RESULTS, t.agent_id.encode(), text.encode(), "deep: forged result", too_deep or IGNORED)
    if kind == "nap" and not world.has_room(t):  # its record must stay far from the limit
        kind = "unknown agent"
    agent_id = t.agent_id if kind == "nap" else ghost_of(world, name)
    message_id = new_message_id()
    text = (f'{{"kind":"event","message_id":"{message_id}","agent_id":{json_bytes(agent_id).decode()},'
            f'"event":"nap","payload":{payload}}}')
    expect = too_deep or Expect.letter("agent_not_found")
    sent = Sent(AGENT_EVENTS, agent_id.encode(), text.encode(), f"deep: {kind}", expect)
    if too_deep is not None or kind == "unknown agent":
        return sent
    # a valid `nap`: applied, and one more nap counted (its payload is ignored by the handler)
    assert world.client(t.agent_id, message_id) is None
    t.naps += 1
    sent.expect, sent.valid = Expect("applied"), True
    return sent


def hoard(world: World, kind: str, pick: int, fraction: float) -> Sent:
    """An input to an agent that keeps what it is sent (bench/fuzz_hoard.py): its record
    grows to the size limit, is parked there, and is cleared again."""
    return world.hoard_input(kind, pick, fraction)


# -- the strategy ----------------------------------------------------------------------------------


def recipe(fn: Callable[..., Sent], **ingredients: st.SearchStrategy[Any]) -> st.SearchStrategy[Recipe]:
    return st.builds(partial, st.just(fn), **ingredients)


keys = st.none() | st.binary(max_size=16) | names.map(str.encode)
kind_indexes = st.sampled_from(range(10))
parents = st.sampled_from(range(100))
seqs = st.sampled_from(range(1, 11))
steps = st.sampled_from(range(10_000))


def misses(*fields: str) -> st.SearchStrategy[frozenset[str]]:
    return st.frozensets(st.sampled_from(fields), min_size=1)


hoard_recipes = recipe(hoard, kind=st.sampled_from(["keep", "keep", "keep", "clear", "refused"]),
                       pick=st.integers(0, 2), fraction=st.floats(0.0, 1.0))

# (weight, strategy): huge records are few, they cost the most to send and to process
RECIPES: list[tuple[int, st.SearchStrategy[Recipe]]] = [
    (4, recipe(garbage, source=sources, key=keys, raw=st.binary(min_size=1, max_size=64))),
    (2, recipe(no_value, source=sources, key=keys, empty=st.booleans())),
    (4, recipe(json_junk, source=sources, key=keys, document=json_values)),
    (6, recipe(broken_envelope, source=sources, kind_index=kind_indexes, mutation_index=st.sampled_from(range(100)),
               name=names)),
    (2, recipe(wrong_topic, source=sources, target=targets, which=st.sampled_from(range(20)))),
    (4, recipe(wrong_key, source=sources, target=targets, kind_index=kind_indexes, how=st.sampled_from(range(6)),
               junk=st.binary(max_size=8))),
    (6, recipe(ghost_input, source=sources, kind_index=kind_indexes, name=names, payload=json_values, when=times)),
    (3, recipe(ghost_schedule, name=names, known_type=st.booleans(), payload=not_ints, parent=parents, seq=seqs)),
    (6, recipe(bad_event, target=targets, name=names, payload=json_values, bad_payload=not_ints,
               run=st.sampled_from(range(3)), key=idempotency, unknown=st.booleans(), when=times)),
    (2, recipe(bad_cancel, target=targets, run=texts, reason=st.none() | texts, children=st.booleans(),
               key=idempotency)),
    (3, recipe(rival_schedule, target=targets, name=names, payload=json_values, parent=parents, seq=seqs,
               key=idempotency)),
    (3, recipe(replay, target=targets, which=st.sampled_from(range(50)), payload=st.integers(), exact=st.booleans())),
    (2, recipe(replayed_result, target=targets, which=st.sampled_from(range(50)))),
    (6, recipe(forged_result, target=targets, misses=misses("attempt", "function", "command_id", "run_id"),
               step=steps, ok=st.booleans(), output=json_values, junk=texts, when=times)),
    (4, recipe(forged_progress, target=targets, misses=misses("attempt", "function", "command_id", "run_id"),
               step=steps, started=st.booleans(), junk=texts)),
    (5, recipe(forged_fire, target=targets, which=st.sampled_from(range(1000)), when=times,
               shift_s=st.floats(-1e6, 1e6), other_run=st.booleans())),
    (4, recipe(forged_child, target=targets, misses=misses("seq", "child_run_id", "run_id"),
               other=st.sampled_from(range(100)), status=st.sampled_from(["completed", "failed", "cancelled", "running"]),
               result=json_values)),
    (1, recipe(huge, shape=st.sampled_from(range(5)), target=targets, unit=units, size_class=size_classes,
               over=overs, name=names)),
    (2, recipe(deep, shape=st.sampled_from(range(3)), target=targets, name=names, mixed=st.booleans(),
               levels=st.sampled_from([1, 63, 64, 65, 66, 198, 199, 200, 201, 202, 1000]) | st.integers(1, 300))),
    (2, hoard_recipes),
]


def hostile_recipes() -> st.SearchStrategy[Recipe]:
    """One hostile recipe, of a kind drawn by weight."""
    weighted = [strategy for weight, strategy in RECIPES for _ in range(weight)]
    return st.sampled_from(weighted).flatmap(lambda strategy: strategy)


def draw_recipes(count: int, seed_value: int, batch: int = 10) -> list[Recipe]:
    """`count` recipes in a seeded order, the same ones for the same seed (and hypothesis version).

    Each kind gets its share by weight, drawn by hypothesis inside a `@given` run
    (`batch` recipes per example; nothing is checked there, the examples are only
    collected), so that hypothesis' preference for early choices does not skew the mix.
    """
    total = sum(weight for weight, _ in RECIPES)
    drawn: list[Recipe] = []
    for index, (weight, strategy) in enumerate(RECIPES):
        share = math.ceil(count * weight / total)
        drawn += _draw(strategy, share, seed_value * 1_000 + index, batch)
    random.Random(seed_value).shuffle(drawn)
    return drawn[:count]


def _draw(strategy: st.SearchStrategy[Recipe], count: int, seed_value: int, batch: int) -> list[Recipe]:
    drawn: list[Recipe] = []
    while len(drawn) < count:

        @seed(seed_value)
        @settings(max_examples=math.ceil((count - len(drawn)) / batch) + 2, database=None, phases=[Phase.generate],
                  deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.lists(strategy, min_size=batch, max_size=batch))
        def collect(recipes: list[Recipe]) -> None:
            drawn.extend(recipes)

        collect()
        seed_value += 7919
    return drawn[:count]
