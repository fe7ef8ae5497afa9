"""The envelopes of topics/_envelopes.py: round trips, decode errors, dead letters, IDs."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agentstream.topics import (
    WIRE_VERSION,
    AgentStatus,
    AgentUpdate,
    CancelAgent,
    DeadLetter,
    InvalidMessageError,
    ScheduleAgent,
    SendEvent,
    StepCommand,
    StepError,
    StepProgress,
    StepResult,
    decode_agent_input,
    decode_step_command,
    decode_step_result,
    derived_message_id,
    new_message_id,
    run_id_for,
)

SENT = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


# --- round trips ----------------------------------------------------------------------

@pytest.mark.parametrize(
    "message",
    [
        ScheduleAgent(agent_id="a-1", agent_type="Thing", input={"x": [1, 2.5, None, "s"]}, idempotency_key="k"),
        ScheduleAgent(agent_id="a-1", agent_type="Thing"),
        SendEvent(agent_id="a-1", event="poke", payload={"n": 1}, run_id="r", idempotency_key="k2"),
        SendEvent(agent_id="a-1", event="poke"),
        CancelAgent(agent_id="a-1", reason="done", run_id="r"),
        CancelAgent(agent_id="a-1"),
    ],
    ids=lambda m: m.kind,
)
def test_agent_inputs_round_trip_through_bytes(message: ScheduleAgent | SendEvent | CancelAgent) -> None:
    decoded = decode_agent_input(message.to_bytes())
    assert type(decoded) is type(message)
    assert decoded == message
    assert decoded.v == WIRE_VERSION == 1


def test_step_command_round_trips() -> None:
    command = StepCommand(
        agent_id="a-1", run_id="r", step_id="s1", function="f", input=[1, 2], attempt=3,
        task_queue="q", start_to_close_timeout_s=2.5, heartbeat_timeout_s=1.0,
    )
    assert decode_step_command(command.to_bytes()) == command


def test_step_result_round_trips_with_its_error() -> None:
    result = StepResult(
        agent_id="a-1", run_id="r", step_id="s1", attempt=2, function="f", ok=False,
        error=StepError(type="RetryableError", message="later", retry_after_s=1.5), duration_s=0.25,
    )
    decoded = decode_step_result(result.to_bytes())
    assert decoded == result
    assert decoded.error == StepError(type="RetryableError", message="later", retryable=True, retry_after_s=1.5)


def test_agent_update_and_dead_letter_round_trip() -> None:
    update = AgentUpdate(
        agent_id="a-1", agent_type="Thing", run_id="r", status=AgentStatus.CANCELLED,
        previous_status=AgentStatus.RUNNING, error="bye",
    )
    assert AgentUpdate.model_validate_json(update.to_bytes()) == update
    assert json.loads(update.to_bytes())["status"] == "cancelled"
    letter = DeadLetter.of(
        reason_code="not_json", reason="r", topic="t", partition=1, offset=2, key=b"k", value=b"v", rejected_by="me"
    )
    assert DeadLetter.model_validate_json(letter.to_bytes()) == letter


def test_key_is_the_agent_id_in_utf8() -> None:
    assert SendEvent(agent_id="agént-1", event="e").key == "agént-1".encode()


def test_every_envelope_gets_a_fresh_message_id_and_sent_at_by_default() -> None:
    first, second = CancelAgent(agent_id="a"), CancelAgent(agent_id="a")
    assert first.message_id != second.message_id
    assert first.sent_at.tzinfo is not None


def test_envelopes_are_frozen() -> None:
    message = SendEvent(agent_id="a", event="e")
    with pytest.raises(ValidationError):
        message.event = "other"  # type: ignore[misc]


# --- decode errors ----------------------------------------------------------------------

@pytest.mark.parametrize("value", [None, b""])
def test_empty_value_is_reported_as_empty_value(value: bytes | None) -> None:
    with pytest.raises(InvalidMessageError) as info:
        decode_agent_input(value)
    assert info.value.code == "empty_value"


@pytest.mark.parametrize("value", [b"not json", b"{\"kind\": ", b"\xff\xfe\x00garbage", b" "])
def test_unparseable_value_is_reported_as_not_json(value: bytes) -> None:
    for decode in (decode_agent_input, decode_step_result, decode_step_command):
        with pytest.raises(InvalidMessageError) as info:
            decode(value)
        assert info.value.code == "not_json"


@pytest.mark.parametrize(
    "value",
    [
        b"[1, 2]",  # JSON, but not an object
        b"null",
        b"{}",  # no kind
        b'{"kind": "bogus", "agent_id": "a"}',
        b'{"kind": "schedule", "agent_id": "a"}',  # no agent_type
        b'{"kind": "schedule", "agent_id": "", "agent_type": "T"}',  # empty agent ID
        b'{"kind": "schedule", "agent_id": "a", "agent_type": "T", "surprise": 1}',  # extra field
        b'{"kind": "schedule", "agent_id": "a", "agent_type": "T", "v": 2}',  # unknown version
        b'{"kind": "step_result", "agent_id": "a"}',  # not an agent-events kind
    ],
)
def test_json_that_does_not_match_is_reported_as_invalid_envelope(value: bytes) -> None:
    with pytest.raises(InvalidMessageError) as info:
        decode_agent_input(value)
    assert info.value.code == "invalid_envelope"
    assert str(info.value)  # carries a human-readable reason


def test_step_result_with_an_unknown_field_in_its_error_is_invalid() -> None:
    value = json.dumps({
        "kind": "step_result", "agent_id": "a", "run_id": "r", "step_id": "s", "attempt": 1, "function": "f",
        "ok": False, "error": {"type": "E", "message": "m", "stack": "..."},
    }).encode()
    with pytest.raises(InvalidMessageError) as info:
        decode_step_result(value)
    assert info.value.code == "invalid_envelope"
    assert "stack" in str(info.value)


def test_invalid_message_error_is_an_agentstream_error_with_a_code() -> None:
    from agentstream.topics import AgentstreamError

    error = InvalidMessageError("some_code", "why")
    assert isinstance(error, AgentstreamError)
    assert (error.code, str(error)) == ("some_code", "why")


# --- dead letters -----------------------------------------------------------------------

def _letter(value: bytes | None, key: bytes | None = b"a-1") -> DeadLetter:
    return DeadLetter.of(
        reason_code="not_json", reason="bad", topic="agentstream.agent-events", partition=3, offset=17,
        key=key, value=value, rejected_by="processor-0",
    )


def test_dead_letter_keeps_utf8_values_as_text() -> None:
    letter = _letter('{"x": "é"}'.encode())
    assert letter.value_encoding == "utf-8"
    assert letter.value == '{"x": "é"}'
    assert letter.original_value() == '{"x": "é"}'.encode()
    assert (letter.kind, letter.source_topic, letter.partition, letter.offset, letter.key, letter.rejected_by) == (
        "dead_letter", "agentstream.agent-events", 3, 17, "a-1", "processor-0",
    )


def test_dead_letter_keeps_non_utf8_bytes_as_base64_and_gives_them_back() -> None:
    raw = b"\xff\xfe\x00\x80binary\xc3"
    letter = _letter(raw)
    assert letter.value_encoding == "base64"
    assert base64.b64decode(letter.value) == raw
    assert letter.original_value() == raw
    # and still after a trip over the wire
    assert DeadLetter.model_validate_json(letter.to_bytes()).original_value() == raw


def test_dead_letter_of_a_missing_value_or_key() -> None:
    letter = _letter(None, key=None)
    assert (letter.value, letter.value_encoding, letter.key) == ("", "utf-8", None)
    assert letter.original_value() == b""


# --- IDs --------------------------------------------------------------------------------

def test_derived_message_id_is_deterministic_and_depends_on_both_parts() -> None:
    assert derived_message_id("m1", "update") == derived_message_id("m1", "update")
    assert derived_message_id("m1", "update") != derived_message_id("m2", "update")
    assert derived_message_id("m1", "update") != derived_message_id("m1", "result")
    expected = uuid.uuid5(uuid.NAMESPACE_URL, "agentstream:m1:update").hex
    assert derived_message_id("m1", "update") == expected
    assert len(expected) == 32


def test_new_message_id_is_unique_hex() -> None:
    ids = {new_message_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


@settings(max_examples=500, deadline=None)
@given(message_id=st.text(), purpose=st.text())
def test_derived_message_id_is_uuid5_of_the_documented_name(message_id: str, purpose: str) -> None:
    """WIRE.md's definition, which other languages implement: it must never drift."""
    expected = uuid.uuid5(uuid.NAMESPACE_URL, f"agentstream:{message_id}:{purpose}").hex
    assert derived_message_id(message_id, purpose) == expected


def test_run_id_for_is_derived_from_the_schedule_message_id() -> None:
    assert run_id_for("abc") == derived_message_id("abc", "run") == "9af702ebfd065634b5f480ce53567540"
    assert run_id_for("abc") != run_id_for("abd")
    schedule = ScheduleAgent(agent_id="a", agent_type="T")
    assert run_id_for(schedule.message_id) == run_id_for(decode_agent_input(schedule.to_bytes()).message_id)


# --- step-results: results and progress records -------------------------------------------

def _progress(**overrides: object) -> StepProgress:
    fields: dict[str, object] = dict(
        message_id=derived_message_id("cmd-1", "started"), agent_id="a-1", run_id="r", step_id="1", attempt=2,
        function="f", event="started", command_id="cmd-1",
    )
    return StepProgress(**{**fields, **overrides})  # type: ignore[arg-type]


@pytest.mark.parametrize("event", ["started", "heartbeat"])
def test_step_progress_round_trips_through_decode_step_result(event: str) -> None:
    progress = _progress(event=event)
    decoded = decode_step_result(progress.to_bytes())
    assert type(decoded) is StepProgress
    assert decoded == progress
    assert json.loads(progress.to_bytes())["kind"] == "step_progress"


def test_step_result_carries_the_command_id_and_still_decodes_as_a_step_result() -> None:
    result = StepResult(agent_id="a-1", run_id="r", step_id="1", attempt=1, function="f", ok=True, command_id="cmd-1")
    decoded = decode_step_result(result.to_bytes())
    assert type(decoded) is StepResult
    assert decoded.command_id == "cmd-1"
    assert StepResult(agent_id="a", run_id="r", step_id="1", attempt=1, function="f", ok=True).command_id is None


def test_a_step_result_without_kind_is_still_read_as_a_step_result() -> None:
    value = json.dumps({"agent_id": "a", "run_id": "r", "step_id": "1", "attempt": 1, "function": "f", "ok": True})
    decoded = decode_step_result(value.encode())
    assert type(decoded) is StepResult
    assert decoded.ok is True


@pytest.mark.parametrize(
    "value",
    [
        {"kind": "bogus", "agent_id": "a"},
        {"kind": "step_progress", "agent_id": "a", "run_id": "r", "step_id": "1", "attempt": 1, "function": "f",
         "event": "finished", "command_id": "c"},  # not a progress event
        {"kind": "step_progress", "agent_id": "a", "run_id": "r", "step_id": "1", "attempt": 0, "function": "f",
         "event": "started", "command_id": "c"},  # attempts start at 1
        {"kind": "step_progress", "agent_id": "a", "run_id": "r", "step_id": "1", "attempt": 1, "function": "f",
         "event": "started"},  # no command_id
        {"agent_id": "a", "run_id": "r", "step_id": "1", "attempt": 1, "function": "f",
         "event": "started", "command_id": "c"},  # no kind: read as a step_result, which it is not
        {"kind": "schedule", "agent_id": "a", "agent_type": "T"},  # an agent-events kind
        [1, 2],
    ],
)
def test_records_on_step_results_that_match_neither_kind_are_invalid_envelopes(value: object) -> None:
    with pytest.raises(InvalidMessageError) as info:
        decode_step_result(json.dumps(value).encode())
    assert info.value.code == "invalid_envelope"
    assert str(info.value)


def test_step_progress_is_exported_and_frozen() -> None:
    import agentstream.topics as topics

    assert "StepProgress" in topics.__all__
    progress = _progress()
    with pytest.raises(ValidationError):
        progress.event = "heartbeat"  # type: ignore[misc]


def test_the_wire_doc_examples_of_a_step_agree_on_their_ids() -> None:
    """WIRE.md's step_command, step_progress and step_result examples are one attempt, IDs derived as documented."""
    import agentstream.topics as topics

    doc = (Path(topics.__file__).parent / "WIRE.md").read_text(encoding="utf-8")
    examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", doc, re.DOTALL)]
    (command,) = [e for e in examples if e["kind"] == "step_command"]
    (result,) = [e for e in examples if e["kind"] == "step_result"]
    progress = [e for e in examples if e["kind"] == "step_progress"]
    assert {p["event"] for p in progress} == {"started", "heartbeat"}
    assert result["command_id"] == command["message_id"]
    assert result["message_id"] == derived_message_id(command["message_id"], "result")
    for record in progress:
        assert record["command_id"] == command["message_id"]
        assert (record["run_id"], record["step_id"], record["attempt"], record["function"]) == (
            command["run_id"], command["step_id"], command["attempt"], command["function"],
        )
        purpose = "started" if record["event"] == "started" else "heartbeat:1"
        assert record["message_id"] == derived_message_id(command["message_id"], purpose)
        assert isinstance(decode_step_result(json.dumps(record).encode()), StepProgress)
