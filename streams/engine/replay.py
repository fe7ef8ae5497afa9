"""Rebuild an agent's live state from its record, and compact its journal.

A replay starts the base's coroutines on the base's fields, then feeds the journal
through them turn by turn, checking that the code issues exactly the commands the
journal recorded. Compaction re-runs the waiting coroutines from their top on the
current fields (DESIGN.md guarantee 5) and, if that reaches the same waits without
issuing anything or changing a field, makes the current fields the new base.
"""

from __future__ import annotations

from datetime import datetime

from agentstream.agents._registry import AgentDefinition
from agentstream.agents.exceptions import NondeterminismError

from .record import AgentRecord, Base, JournalEntry, Seed
from .runtime import Identity, LiveAgent, Mode


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
        changed = sorted(k for k in fields.keys() | record.fields.keys() if fields.get(k) != record.fields.get(k))
        raise NondeterminismError(f"replay produced other values for the fields {changed}")
    live.mode = Mode.LIVE
    live.revision = record.revision
    return live


def pending_seqs(record: AgentRecord) -> set[int]:
    seqs = {int(seq) for seq in record.steps}
    seqs |= {int(key[2:]) for key in record.timers if key.startswith("t:")}
    seqs |= {int(seq) for seq, child in record.children.items() if child.awaited and not child.done}
    return seqs


def try_compact(record: AgentRecord, live: LiveAgent, now: datetime) -> LiveAgent | None:
    """Compact `record` in place if guarantee 5 allows it; returns the new live state."""
    if not live.is_quiescent():
        return None
    seeds = live.waiting_seeds()
    rerun = LiveAgent(
        live.definition,
        live.identity,
        record.fields,
        next_seq=live.next_seq,
        draws=live.draws,
        mode=Mode.RERUN,
        continue_as_new_after=live.continue_as_new_after,
    )
    base = Base(fields=record.fields, seeds=[], next_seq=live.next_seq, draws=live.draws, at=now)
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
        or rerun.snapshot_fields() != record.fields
        or rerun.wait_positions() != live.wait_positions()
    ):
        return None
    base.seeds = rerun.waiting_seeds()  # each keeps only what its restart actually reused
    rerun.forget_prologues()
    rerun.mode = Mode.LIVE
    record.base = base
    record.journal = []
    record.compactions += 1
    return rerun
