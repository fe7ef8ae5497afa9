"""Rebuild an agent's live state from its record, and compact its journal.

A replay starts the base's coroutines on the base's fields, then feeds the journal
through them turn by turn, checking that the code issues exactly the commands the
journal recorded. Compaction re-runs the waiting coroutines from their top on the
current fields (DESIGN.md guarantee 5) and, if that reaches the same waits with the
same locals, without issuing anything or changing a field, makes the current fields
(with the types of unannotated ones) the new base.
"""

from __future__ import annotations

import logging
from datetime import datetime

from agentstream.agents._registry import AgentDefinition
from agentstream.agents.exceptions import NondeterminismError

from .fields import differences, fields_changed
from .record import AgentRecord, Base, JournalEntry, Seed
from .runtime import Identity, LiveAgent, Mode

log = logging.getLogger("agentstream.engine")


def identity_of(record: AgentRecord, task_queue: str) -> Identity:
    return Identity(
        agent_id=record.agent_id,
        agent_type=record.agent_type,
        run_id=record.run_id,
        task_queue=task_queue,
        started_at=record.created_at,
        parent=record.parent,
    )


def deliver(live: LiveAgent, entry: JournalEntry) -> bool:
    """Hand one journaled input to the agent's code; False if nothing waits for it."""
    if entry.kind == "event":
        live.start(Seed(kind="event", name=entry.name, payload=entry.payload, message_id=entry.message_id))
        return True
    assert entry.seq is not None
    if entry.kind == "timer":
        return live.fire_timer(entry.seq)
    assert entry.outcome is not None
    return live.resolve(entry.seq, entry.outcome)


def _check_commands(live: LiveAgent, recorded: list[str], where: str) -> None:
    issued = [command.descriptor for command in live.issued]
    if issued != recorded:
        raise NondeterminismError(
            f"{where}: the code issued {issued or 'nothing'} but the journal recorded {recorded or 'nothing'}"
        )


def _check_run_alive(live: LiveAgent, where: str) -> None:
    for seed, task in live.finished_seeds():
        if seed.kind == "run":
            ended = "raised" if task.cancelled() or task.exception() is not None else "returned"
            raise NondeterminismError(f"{where}: run {ended}, but the journal says it was still running")


def replay(record: AgentRecord, definition: AgentDefinition, task_queue: str, continue_as_new_after: int) -> LiveAgent:
    """The live state the record describes; raises NondeterminismError if the code disagrees."""
    base = record.base
    assert base is not None
    live = LiveAgent(
        definition,
        identity_of(record, task_queue),
        base.fields,
        next_seq=base.next_seq,
        draws=base.draws,
        mode=Mode.REPLAY,
        continue_as_new_after=continue_as_new_after,
    )
    live.begin_turn(base.at, 0)
    for seed in base.seeds:
        live.start(seed)
    live.drain()
    _check_commands(live, base.commands, "starting the agent")
    _check_run_alive(live, "starting the agent")
    for position, entry in enumerate(record.journal, start=1):
        where = f"journal entry {position} ({entry.kind}{'' if entry.seq is None else f' #{entry.seq}'})"
        live.begin_turn(entry.at, position)
        if not deliver(live, entry):
            raise NondeterminismError(f"{where}: the code does not wait for it")
        live.drain()
        _check_commands(live, entry.commands, where)
        _check_run_alive(live, where)
    if live.waiting_seqs() != pending_seqs(record):
        raise NondeterminismError(
            f"after the journal the code waits for {sorted(live.waiting_seqs())}, "
            f"but the record has {sorted(pending_seqs(record))} in flight"
        )
    fields = live.snapshot_fields()
    if fields != record.fields:
        changed = fields_changed(vars(live.instance), record.fields)  # a set may iterate in another order
        if changed:
            raise NondeterminismError(f"replay produced other values for the fields {changed}")
    live.mode = Mode.LIVE
    live.revision = record.revision
    return live


def pending_seqs(record: AgentRecord) -> set[int]:
    seqs = {int(seq) for seq in record.steps}
    seqs |= {int(key[2:]) for key in record.timers if key.startswith("t:")}
    seqs |= {int(seq) for seq, child in record.children.items() if child.awaited and not child.done}
    return seqs


_explained: set[tuple[str, str]] = set()


def _explain_once(agent_type: str, fields: list[str]) -> None:
    for name in fields:
        if (agent_type, name) not in _explained:
            _explained.add((agent_type, name))
            log.warning(
                "%s is not compacted: its field %r would not come back from JSON as it is "
                "(declare its type at class level, e.g. `%s: list[MyModel]`)", agent_type, name, name,
            )


def try_compact(record: AgentRecord, live: LiveAgent, now: datetime) -> LiveAgent | None:
    """Compact `record` in place if guarantee 5 allows it; returns the new live state.

    Compaction restarts every waiting coroutine from its top on fields restored from
    the snapshot, exactly as a replay from the new base would. It is allowed only if
    that changes nothing the code can see: the restored fields equal the live ones
    (same types too), the restarts issue nothing and end up where the live coroutines
    wait, with the same fields and the same locals in every frame of the agent's code
    on each await chain (a loop counter is state too).
    """
    if not live.is_quiescent():
        return None
    waits = live.wait_states()
    if waits is None:  # a local that cannot be snapshotted
        return None
    seeds = live.waiting_seeds()
    fields = live.base_fields(record.fields)
    try:
        rerun = LiveAgent(
            live.definition,
            live.identity,
            fields,
            next_seq=live.next_seq,
            draws=live.draws,
            mode=Mode.RERUN,
            continue_as_new_after=live.continue_as_new_after,
        )
    except Exception:  # a field the base could not restore
        return None
    changed = differences(vars(live.instance), vars(rerun.instance))
    if changed:  # a field would come back as another type or value
        _explain_once(live.definition.name, changed)
        return None
    base = Base(fields=fields, seeds=[], next_seq=live.next_seq, draws=live.draws, at=now)
    try:
        rerun.begin_turn(now, 0)
        for seed in seeds:
            rerun.start(seed)
        rerun.drain()
    except Exception:  # restarting it fails: it cannot be the same wait
        return None
    if (
        rerun.issued
        or any(task.done() for task in rerun.seeds)
        or not rerun.is_quiescent()
        or (rerun.snapshot_fields() != record.fields and fields_changed(vars(rerun.instance), record.fields))
        or rerun.wait_states() != waits
    ):
        return None
    base.seeds = rerun.waiting_seeds()  # each keeps only what its restart actually reused
    rerun.forget_prologues()
    rerun.mode = Mode.LIVE
    record.base = base
    record.journal = []
    record.compactions += 1
    return rerun
