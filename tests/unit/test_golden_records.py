"""Golden records: agents stored by this release, mid-flight, must go on working (issue 7).

As temporalio's replayer tests replay committed workflow histories against the current
workflow code (tests/worker/test_replayer.py in temporalio/sdk-python), these load
committed agent records (tests/golden/records/, written by tests/golden/make_records.py)
with the current code, rebuild each live agent by replay, apply the inputs that came
next and compare the end the agent reaches with the stored one. A change that breaks
agents already stored in RocksDB and the changelogs fails here.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agentstream.agents import NondeterminismError, agent
from agentstream.agents._registry import AgentDefinition, agent_definition
from agentstream.streams.engine import AgentRecord, DurableEngine, EngineConfig, Origin, TurnOutcome
from agentstream.streams.engine import record as record_module
from agentstream.streams.engine.base import Input
from agentstream.streams.engine.record import FORMAT
from agentstream.streams.engine.replay import pending_seqs, replay
from agentstream.topics import AgentStatus, decode_agent_input, decode_step_result

from golden import make_records
from golden.agents import Pipeline, golden_fetch, golden_ship

GOLDEN_FILES = sorted(make_records.RECORDS.glob("*.json"))

# Every stored shape; a golden file is never dropped silently.
SHAPES = {
    "children-child-awaiting-step",
    "children-parent-awaiting-child",
    "continue-as-new-once",
    "event-handler-awaiting-step",
    "gather-one-of-three-done",
    "loop-compacted",
    "loop-not-compacted",
    "pipeline-awaiting-second-step",
    "retry-in-backoff",
    "stuck-parked-inputs",
    "timer-sleeping",
}


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _stored(doc: dict[str, Any]) -> AgentRecord:
    return AgentRecord.from_bytes(doc["stored"].encode())


def _config(doc: dict[str, Any]) -> EngineConfig:
    return EngineConfig(task_queue=doc["engine"]["task_queue"])


def _next_input(item: dict[str, Any]) -> tuple[Input, Origin, datetime]:
    """A stored next input as the processor gets it: decoded from its topic's bytes."""
    value = json.dumps(item["value"]).encode()
    message = decode_step_result(value) if item["topic"] == "step-results" else decode_agent_input(value)
    origin = Origin(topic=item["topic"], partition=item["partition"], offset=item["offset"], key=message.key, value=value)
    return message, origin, datetime.fromisoformat(item["at"])


async def _apply_next(
    doc: dict[str, Any], *, restart_every_turn: bool, lookup: Any = agent_definition
) -> tuple[AgentRecord, list[TurnOutcome]]:
    config = _config(doc)
    engine = DurableEngine(config, lookup)
    record = _stored(doc)
    outcomes = []
    try:
        for item in doc["next"]:
            if restart_every_turn:  # every turn replays from the stored record, as after a crash
                engine.close()
                engine = DurableEngine(config, lookup)
            message, origin, at = _next_input(item)
            outcome = await engine.apply(record, message, at, origin)
            outcomes.append(outcome)
            if outcome.stored is not None:
                record = AgentRecord.from_bytes(outcome.stored)
    finally:
        engine.close()
    return record, outcomes


def test_every_shape_has_its_golden_record() -> None:
    assert {path.stem for path in GOLDEN_FILES} == SHAPES


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda path: path.stem)
def test_golden_record_loads_and_replays_with_the_current_code(path: Path) -> None:
    doc = _load(path)
    record = _stored(doc)
    loaded = doc["loaded"]
    assert record.agent_type == loaded["agent_type"]
    assert record.status.value == loaded["status"]
    assert len(record.journal) == loaded["journal"]
    assert record.compactions == loaded["compactions"]
    assert sorted(pending_seqs(record)) == loaded["waiting_on"]
    assert sorted(record.timers) == loaded["timers"]
    assert len(record.parked) == loaded["parked"]
    # Raises NondeterminismError if the code no longer issues what the journal recorded,
    # waits for something else, or rebuilds other fields.
    live = replay(record, agent_definition(record.agent_type), _config(doc).task_queue,
                  _config(doc).continue_as_new_after)
    assert live.waiting_seqs() == pending_seqs(record)
    assert live.snapshot_fields() == record.fields


@pytest.mark.parametrize("restart_every_turn", [False, True], ids=["cached", "restarted"])
@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda path: path.stem)
async def test_golden_record_reaches_its_stored_end(path: Path, restart_every_turn: bool) -> None:
    doc = _load(path)
    record, outcomes = await _apply_next(doc, restart_every_turn=restart_every_turn)
    for outcome in outcomes:
        assert not outcome.facts.nondeterminism, outcome.record.error if outcome.record else outcome
        assert outcome.label != "parked", outcome.record.error if outcome.record else outcome
    assert record.status is not AgentStatus.STUCK, record.error
    expect = doc["expect"]
    assert [outcome.label for outcome in outcomes] == expect["labels"]
    assert [item for outcome in outcomes for item in make_records.sent_summary(outcome)] == expect["sent"]
    end = make_records.end_summary(record)
    assert end["status"] == expect["status"]
    assert end["result"] == expect["result"]
    assert end["error"] == expect["error"]
    assert end["fields"] == expect["fields"]
    assert end["events"] == expect["events"]


def test_golden_records_are_in_a_format_this_code_reads() -> None:
    """A record format change must keep reading what production already stores.

    When FORMAT moves on, record.py declares the older formats it still reads in
    READABLE_FORMATS (and these records keep passing); regenerating them instead would
    hide that stored agents of this release can no longer be read.
    """
    readable = set(getattr(record_module, "READABLE_FORMATS", ())) | {FORMAT}
    for path in GOLDEN_FILES:
        doc = _load(path)
        written = json.loads(doc["stored"])["format"]
        assert written == doc["format"]
        assert written in readable, (
            f"{path.name} holds a record of format {written}; this code writes {FORMAT} and declares "
            f"READABLE_FORMATS={sorted(readable)}"
        )


async def test_the_generator_writes_byte_identical_files(tmp_path: Path) -> None:
    first = await make_records.generate(tmp_path / "first")
    second = await make_records.generate(tmp_path / "second")
    assert [path.name for path in first] == [path.name for path in second]
    assert {path.stem for path in first} == SHAPES
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name


# --- the golden tests can fail: an incompatible edit of a stored agent's code ------------------


@agent.defn(name="GoldenTest.PipelineChanged")
class PipelineChanged(Pipeline):
    """Golden.Pipeline after an incompatible edit: its second step calls another function."""

    @agent.run
    async def run(self, order: Any) -> Any:
        self.token = agent.uuid()
        self.lucky = agent.random()
        fetched = await agent.step(function=golden_fetch, function_input=order["id"])
        shipped = await agent.step(function=golden_ship, function_input=order["id"])
        return {"fetched": fetched, "shipped": shipped}


def _changed(name: str) -> AgentDefinition:
    return agent_definition("GoldenTest.PipelineChanged" if name == "Golden.Pipeline" else name)


async def test_an_incompatible_edit_of_a_stored_agent_fails_its_golden_record() -> None:
    doc = _load(make_records.RECORDS / "pipeline-awaiting-second-step.json")
    with pytest.raises(NondeterminismError):
        replay(_stored(doc), _changed("Golden.Pipeline"), _config(doc).task_queue, _config(doc).continue_as_new_after)
    record, outcomes = await _apply_next(doc, restart_every_turn=False, lookup=_changed)
    assert outcomes[0].label == "parked" and outcomes[0].facts.nondeterminism
    assert record.status is AgentStatus.STUCK
