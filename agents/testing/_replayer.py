"""`replay_record`: would the code you are about to deploy take the path a stored agent took?

A processor rebuilds an agent from its record (base snapshot plus journal) by replaying
its code; code that changed incompatibly parks the agent as `stuck` with a
`NondeterminismError` (DESIGN.md guarantee 4). Run the replay before the deploy instead,
on records taken from production (`GET /agents/{id}/record`, `agentstream replay`) or
kept as test fixtures (Temporal's replayer over committed histories is the model), and
the incompatibility shows up in CI rather than on live agents.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agentstream.agents._registry import agent_definitions
from agentstream.streams.engine import TERMINAL, AgentRecord, EngineConfig
from agentstream.streams.engine.replay import replay


@dataclass(frozen=True)
class ReplayReport:
    """What replaying one record through the current code showed. `ok`: the code takes the same path."""

    agent_id: str
    agent_type: str
    status: str
    journal_entries: int
    ok: bool
    problem: str | None = None  # why not: the nondeterminism, an unknown type, a field that no longer validates

    def __str__(self) -> str:
        head = f"{self.agent_id} ({self.agent_type}, {self.status}, {self.journal_entries} journal entries)"
        return f"{head}: {'replays as recorded' if self.ok else self.problem}"


def replay_record(record: AgentRecord | bytes | str | dict[str, Any], config: EngineConfig | None = None) -> ReplayReport:
    """Replay a stored agent record through the agent code loaded now; never raises for what it finds.

    An agent that ended has nothing left to replay (ok). Load your agents' module first
    (import it), as a processor does with `--app`.
    """
    if isinstance(record, AgentRecord):
        stored = record
    else:  # read as a processor reads its store
        raw = json.dumps(record) if isinstance(record, dict) else record
        stored = AgentRecord.from_bytes(raw.encode() if isinstance(raw, str) else raw)
    config = config or EngineConfig()

    def report(ok: bool, problem: str | None = None) -> ReplayReport:
        return ReplayReport(agent_id=stored.agent_id, agent_type=stored.agent_type, status=stored.status.value,
                            journal_entries=len(stored.journal), ok=ok, problem=problem)

    if stored.status in TERMINAL or stored.base is None:
        return report(True)
    definition = agent_definitions().get(stored.agent_type)
    if definition is None:
        known = ", ".join(sorted(agent_definitions())) or "none: import your agents' module first"
        return report(False, f"no agent type {stored.agent_type!r} in this code (it has: {known})")
    try:
        replay(stored, definition, config.task_queue, config.continue_as_new_after)
    except Exception as exc:  # the replay's verdict, whatever raised it
        return report(False, f"{type(exc).__name__}: {exc}")
    return report(True)
