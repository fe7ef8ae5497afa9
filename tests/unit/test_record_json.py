"""A record's JSON is written with each kept event's JSON serialised once (record.py says why);
what it says must be exactly what pydantic would write, whatever happened to the events since."""

from __future__ import annotations

import gc
import json
from datetime import datetime, timezone

from agentstream.streams.engine import AgentRecord
from agentstream.streams.engine import record as record_module
from agentstream.streams.engine.record import ReceivedEvent
from agentstream.topics import AgentStatus

NOW = datetime(2026, 12, 3, tzinfo=timezone.utc)


def a_record(events: int) -> AgentRecord:
    return AgentRecord(
        agent_id="r-1", agent_type="T", run_id="run", status=AgentStatus.RUNNING, fields={"n": events},
        events=[ReceivedEvent(name="add", payload={"i": i}, message_id=f"m-{i}", received_at=NOW, done=False)
                for i in range(events)],
        created_at=NOW, updated_at=NOW,
    )


def test_the_bytes_say_what_pydantic_says_and_read_back_as_the_record() -> None:
    for events in (0, 1, 50):
        record = a_record(events)
        assert json.loads(record.to_bytes()) == json.loads(record.model_dump_json())
        assert AgentRecord.from_bytes(record.to_bytes()) == record


def test_an_event_changed_after_it_was_written_is_written_as_it_is_now() -> None:
    record = a_record(3)
    before = record.to_bytes()
    record.events[1] = record.events[1].model_copy(update={"done": True, "result": {"ok": 1}})
    after = json.loads(record.to_bytes())
    assert after["events"][1]["done"] is True and after["events"][1]["result"] == {"ok": 1}
    assert after == json.loads(record.model_dump_json()) != json.loads(before)
    assert json.loads(record.public_json())["events"] == after["events"]


def test_the_public_view_shows_the_events_as_pydantic_writes_them() -> None:
    record = a_record(5)
    view = json.loads(record.public_json())
    assert view["events"] == json.loads(record.model_dump_json())["events"]
    assert view["agent_id"] == "r-1" and "journal" not in view and view["journal_length"] == 0


def test_the_events_json_is_not_kept_longer_than_the_events() -> None:
    gc.collect()
    kept_before = len(record_module._EVENT_JSON)
    records = [a_record(20) for _ in range(50)]
    for record in records:
        record.to_bytes()
    assert len(record_module._EVENT_JSON) == kept_before + 50 * 20
    del records, record
    gc.collect()
    assert len(record_module._EVENT_JSON) == kept_before
