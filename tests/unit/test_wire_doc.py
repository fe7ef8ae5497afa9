"""topics/WIRE.md must match the pydantic models in topics/_envelopes.py.

Every ```json block must validate against the model of its `kind`, every kind must be
documented with a complete example, the field tables must list exactly the models'
fields with the right required/optional marking, and the reason-code table must list
exactly the codes the decoder, the processor and the engine produce.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel, TypeAdapter

import agentstream.streams.engine.durable as durable_module
import agentstream.streams.engine.seal as seal_module
import agentstream.streams.processor.handler as handler_module
import agentstream.topics as topics_package
from agentstream.topics import _envelopes
from agentstream.topics import AgentInput, Envelope, run_id_for

WIRE_MD = Path(topics_package.__file__).parent / "WIRE.md"
DOC = WIRE_MD.read_text(encoding="utf-8")


# --- what the models say ------------------------------------------------------------

def _models_of_module() -> list[type[BaseModel]]:
    return [
        obj
        for obj in vars(_envelopes).values()
        if isinstance(obj, type) and issubclass(obj, BaseModel) and obj.__module__ == _envelopes.__name__
    ]


KIND_MODELS: dict[str, type[BaseModel]] = {
    model.model_fields["kind"].default: model for model in _models_of_module() if "kind" in model.model_fields
}
NESTED_MODELS: dict[str, type[BaseModel]] = {
    model.__name__: model
    for model in _models_of_module()
    if "kind" not in model.model_fields and model is not Envelope
}
AGENT_INPUT_MODELS: tuple[type[BaseModel], ...] = get_args(get_args(AgentInput)[0])
AGENT_INPUT_ADAPTER: TypeAdapter[Any] = TypeAdapter(AgentInput)


def _expected_required(model: type[BaseModel], name: str) -> bool:
    # `kind` has a default but is the discriminator of agent-events, so it must be sent there;
    # on step-results a record without it is a step_result, so a step_progress must send it.
    must_send_kind = model in AGENT_INPUT_MODELS or model is _envelopes.StepProgress
    return model.model_fields[name].is_required() or (name == "kind" and must_send_kind)


# --- what the doc says --------------------------------------------------------------

HEADING = re.compile(r"^(#{2,4}) (.+)$", re.MULTILINE)
JSON_BLOCK = re.compile(r"```json\n(.*?)```", re.DOTALL)


def _sections() -> dict[str, str]:
    """Heading text -> body up to the next heading of any level."""
    matches = list(HEADING.finditer(DOC))
    sections: dict[str, str] = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(DOC)
        sections[match.group(2).strip()] = DOC[match.end() : end]
    return sections


SECTIONS = _sections()


def _section_named(name: str) -> str:
    """The section whose heading starts with `name` in backticks (a kind or a nested model)."""
    found = [body for heading, body in SECTIONS.items() if heading.startswith(f"`{name}`")]
    assert len(found) == 1, f"WIRE.md needs exactly one heading starting with `{name}`, found {len(found)}"
    return found[0]


def _table_rows(body: str) -> list[list[str]]:
    """Cells of the first markdown table in `body`, header and separator excluded."""
    rows: list[list[str]] = []
    started = False
    for line in body.splitlines():
        if line.startswith("|"):
            started = True
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif started:
            break
    assert len(rows) >= 2, "expected a table with a header"
    return [row for row in rows[2:]]


def _field_table(body: str) -> dict[str, bool | None]:
    """field name -> required (True/False), or None for names that refer to the common fields."""
    fields: dict[str, bool | None] = {}
    for row in _table_rows(body):
        names = re.findall(r"`(\w+)`", row[0])
        required_cell = row[2].lower()
        if not required_cell:
            for name in names:
                fields[name] = None
            continue
        assert len(names) == 1, f"one field per row: {row}"
        assert required_cell.startswith(("yes", "no")), f"required must say yes or no: {row}"
        fields[names[0]] = required_cell.startswith("yes")
    return fields


def _examples() -> list[dict[str, Any]]:
    return [json.loads(block) for block in JSON_BLOCK.findall(DOC)]


def _validate(raw: str) -> BaseModel:
    kind = json.loads(raw)["kind"]
    model = KIND_MODELS[kind]
    if model in AGENT_INPUT_MODELS:
        return AGENT_INPUT_ADAPTER.validate_json(raw)  # type: ignore[no-any-return]
    return model.model_validate_json(raw)


# --- the tests ----------------------------------------------------------------------

def test_the_doc_exists_and_has_examples() -> None:
    assert JSON_BLOCK.findall(DOC), "WIRE.md has no ```json blocks"


@pytest.mark.parametrize("raw", JSON_BLOCK.findall(DOC), ids=lambda raw: json.loads(raw).get("kind", "?"))
def test_every_example_validates_against_the_model_of_its_kind(raw: str) -> None:
    value = json.loads(raw)
    assert isinstance(value, dict), "every example is one JSON object"
    assert value.get("kind") in KIND_MODELS, f"example with unknown kind {value.get('kind')!r}"
    parsed = _validate(raw)
    assert type(parsed) is KIND_MODELS[value["kind"]]
    # Nothing the example says is lost or changed by the model.
    dumped = json.loads(parsed.model_dump_json())
    for field, sent in value.items():
        if field not in ("sent_at", "rejected_at"):  # datetimes are re-formatted
            assert dumped[field] == sent, field


def test_every_kind_of_the_models_is_documented_with_a_complete_example() -> None:
    assert set(KIND_MODELS) >= {
        "schedule", "event", "cancel", "step_command", "step_result", "agent_update", "dead_letter"
    }, "model discovery is broken"
    examples = _examples()
    for kind, model in KIND_MODELS.items():
        of_kind = [e for e in examples if e.get("kind") == kind]
        assert of_kind, f"WIRE.md has no example of kind {kind!r}"
        assert any(set(e) == set(model.model_fields) for e in of_kind), (
            f"no example of {kind!r} shows every field {sorted(model.model_fields)}"
        )
        section = _section_named(kind)
        assert any(json.loads(b).get("kind") == kind for b in JSON_BLOCK.findall(section)), (
            f"the section of {kind!r} has no example of that kind"
        )


def test_examples_show_every_field_of_nested_models() -> None:
    def dicts(value: Any) -> list[dict[str, Any]]:
        if isinstance(value, dict):
            return [value, *(d for v in value.values() for d in dicts(v))]
        if isinstance(value, list):
            return [d for v in value for d in dicts(v)]
        return []

    found = [d for example in _examples() for d in dicts(example)]
    for name, model in NESTED_MODELS.items():
        assert any(set(d) == set(model.model_fields) for d in found), f"no example shows a complete {name}"


def test_common_field_table_matches_the_envelope() -> None:
    table = _field_table(SECTIONS["Common envelope fields"])
    assert set(table) == set(Envelope.model_fields)
    for name, required in table.items():
        assert required == Envelope.model_fields[name].is_required(), name


@pytest.mark.parametrize("kind", sorted(KIND_MODELS))
def test_field_table_of_each_kind_matches_its_model(kind: str) -> None:
    model = KIND_MODELS[kind]
    table = _field_table(_section_named(kind))
    common = {name for name, required in table.items() if required is None}
    if common:
        assert issubclass(model, Envelope) and common == set(Envelope.model_fields), (
            f"{kind}: the reference row must name exactly the common envelope fields"
        )
    assert set(table) == set(model.model_fields), f"{kind}: documented fields differ from the model"
    for name, required in table.items():
        if required is not None:
            assert required == _expected_required(model, name), f"{kind}.{name}: required marking is wrong"


@pytest.mark.parametrize("name", sorted(NESTED_MODELS))
def test_field_table_of_each_nested_model_matches(name: str) -> None:
    model = NESTED_MODELS[name]
    table = _field_table(_section_named(name))
    assert set(table) == set(model.model_fields)
    for field, required in table.items():
        assert required == model.model_fields[field].is_required(), f"{name}.{field}"


def _produced_reason_codes() -> set[str]:
    patterns = [
        r'InvalidMessageError\(\s*"(\w+)"',
        r'_reject\(\s*origin,\s*"(\w+)"',
        r'Rejection\(\s*"(\w+)"',
        r'parked_letter\([^,]+,\s*"(\w+)"',
        r'rejected\(\s*[\w.]+,\s*"(\w+)"',
        r'\breject\(\s*"(\w+)"',  # the schedule's local helper in the engine
    ]
    codes: set[str] = set()
    for module in (_envelopes, handler_module, durable_module, seal_module):
        source = Path(module.__file__).read_text(encoding="utf-8")  # type: ignore[arg-type]
        found = {code for pattern in patterns for code in re.findall(pattern, source)}
        assert found, f"no reason codes found in {module.__name__}; update this test's patterns"
        codes |= found
    return codes


def test_reason_code_table_lists_exactly_the_codes_produced() -> None:
    produced = _produced_reason_codes()
    assert {"empty_value", "not_json", "invalid_envelope", "key_mismatch", "unknown_event"} <= produced
    documented = {re.findall(r"`(\w+)`", row[0])[0] for row in _table_rows(SECTIONS["Reason codes"])}
    assert documented == produced
    assert set(_envelopes.REASON_CODES) == produced, "the list the metrics start at 0 (REASON_CODES) is out of step"
    assert len(_envelopes.REASON_CODES) == len(set(_envelopes.REASON_CODES))
    assert set(_envelopes.DECODE_REASON_CODES) == set(re.findall(
        r'InvalidMessageError\(\s*"(\w+)"', Path(_envelopes.__file__).read_text(encoding="utf-8")))


def test_the_run_id_example_is_right() -> None:
    match = re.search(r'`message_id` `"(\w+)"` gives `(\w+)`', DOC)
    assert match, "WIRE.md should show a worked run_id example"
    assert run_id_for(match.group(1)) == match.group(2)
    assert str(uuid.NAMESPACE_URL) in DOC
