"""Field types survive compaction and replay: class-level annotations, and the value's own type otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from agentstream.agents import agent, condition
from agentstream.agents._registry import agent_definition
from agentstream.streams.engine import DurableEngine
from agentstream.streams.engine.fields import fields_changed
from agentstream.topics import AgentStatus

from turns import Turns


class Config(BaseModel):
    retries: int = 3


@dataclass
class Point:
    x: int
    y: int


def type_names(instance: Any) -> dict[str, str]:
    return {name: type(value).__name__ for name, value in sorted(vars(instance).items())}


@agent.defn(name="Fields.Untyped")
class Untyped:
    """No annotations at all: each field's value decides its type."""

    def __init__(self) -> None:
        self.config = Config()
        self.when = datetime(2026, 1, 1, tzinfo=timezone.utc)
        self.pair = (1, "a")
        self.tags = {"x"}
        self.point = Point(1, 2)
        self.count = 0
        self.note: str | None = None  # invisible at runtime: plain JSON, as before

    @agent.event
    async def change(self) -> None:
        self.config = Config(retries=self.config.retries + 1)
        self.when = self.when.replace(year=self.when.year + 1)
        self.pair = (self.pair[0] + 1, self.pair[1])
        self.tags = self.tags | {f"t{self.count}"}
        self.point = Point(self.point.x + 1, self.point.y)
        self.count += 1

    @agent.event
    async def kinds(self) -> dict[str, str]:
        return type_names(self)

    @agent.run
    async def run(self) -> None:
        await condition(lambda: self.count < 0)


@agent.defn(name="Fields.ClassLevel")
class ClassLevel:
    """Annotations at class level: the runtime reads them with typing.get_type_hints."""

    config: Config | None
    history: list[Config]
    anything: Any

    def __init__(self) -> None:
        self.config = None
        self.history = []
        self.anything = None

    @agent.event
    async def configure(self, retries: int) -> None:
        self.config = Config(retries=retries)
        self.history.append(self.config)
        self.anything = (retries, retries)

    @agent.event
    async def kinds(self) -> dict[str, Any]:
        return {**type_names(self), "history": [type(c).__name__ for c in self.history]}

    @agent.run
    async def run(self) -> None:
        await condition(lambda: self.config is not None and self.config.retries < 0)


@agent.defn(name="Fields.NestedUntyped")
class NestedUntyped:
    """An untyped list of models: restoring it from JSON would hand the code dicts."""

    def __init__(self) -> None:
        self.items: list[Config] = []  # invisible at runtime: the list is untyped
        self.end = False

    @agent.event
    async def add(self, retries: int) -> None:
        self.items.append(Config(retries=retries))

    @agent.event
    async def end(self) -> None:
        self.end = True

    @agent.run
    async def run(self) -> int:
        await condition(lambda: self.end)
        return sum(item.retries for item in self.items)


def thinned_set() -> set[int]:
    """{3, 17} in the 64-slot table of the set it was thinned from: iterates 3, 17. A set
    built from [3, 17] gets 8 slots, where 17 lands in slot 1 and 3 in slot 3: 17, 3.
    Small ints hash to themselves, so this holds in every process."""
    ids = set(range(40))
    for i in range(40):
        if i not in (3, 17):
            ids.discard(i)
    return ids


@agent.defn(name="Fields.SetOrder")
class SetOrder:
    """A set whose iteration order is not the one a set rebuilt from its JSON has."""

    def __init__(self) -> None:
        self.ids: set[int] = set()
        self.fills = 0

    @agent.event
    async def fill(self) -> None:
        self.ids = thinned_set()
        self.fills += 1

    @agent.run
    async def run(self) -> None:
        await condition(lambda: self.fills < 0)


UNTYPED_KINDS = {
    "config": "Config", "count": "int", "note": "NoneType", "pair": "tuple", "point": "Point", "tags": "set",
    "when": "datetime",
}


async def test_untyped_fields_keep_their_values_types_after_compaction_and_after_a_replay() -> None:
    turns = Turns()
    await turns.schedule("Fields.Untyped", "u")
    outcome = await turns.send("u", "change")
    assert outcome.facts.compacted
    outcome = await turns.send("u", "kinds")  # runs on the instance rebuilt from the compacted fields
    assert outcome.facts.compacted and outcome.record is not None
    assert outcome.record.events[-1].result == UNTYPED_KINDS
    turns.forget_live_state()
    outcome = await turns.send("u", "change")  # replays from the compacted base
    assert outcome.record is not None and outcome.record.status is AgentStatus.RUNNING, outcome.record.error
    assert outcome.record.fields["config"] == {"retries": 5} and outcome.record.fields["pair"] == [3, "a"]
    assert outcome.record.fields["when"] == "2028-01-01T00:00:00Z"
    turns.forget_live_state()
    outcome = await turns.send("u", "kinds")
    assert outcome.record is not None and outcome.record.events[-1].result == UNTYPED_KINDS
    assert "__types__" not in outcome.record.fields  # the type names stay out of what the API shows


async def test_a_set_rebuilt_in_another_order_is_still_compacted_and_replayed() -> None:
    """Sets are compared in sorted order (fields.py `fields_changed`): compaction compared the
    live set's JSON with the rebuilt set's, in their iteration orders, and refused; and a replay
    after a restart (string hashes differ per process) called the agent nondeterministic."""
    assert list(thinned_set()) == [3, 17] and list(set([3, 17])) == [17, 3]  # the premise
    turns = Turns()
    await turns.schedule("Fields.SetOrder", "s")
    outcome = await turns.send("s", "fill")
    assert outcome.facts.compacted and outcome.record is not None
    assert outcome.record.fields["ids"] == [3, 17]
    turns.forget_live_state()
    outcome = await turns.send("s", "fill")  # replays from the compacted base, then the set comes back as 3, 17
    assert outcome.record is not None and outcome.record.status is AgentStatus.RUNNING, outcome.record.error
    assert outcome.facts.compacted and outcome.record.fields["fills"] == 2


async def test_a_record_saved_with_a_set_in_another_order_still_replays() -> None:
    """A record holds a set in the order of the process that wrote it."""
    turns = Turns()
    await turns.schedule("Fields.SetOrder", "old")
    outcome = await turns.send("old", "fill")
    assert outcome.record is not None
    turns.records["old"] = outcome.record.model_copy(update={"fields": {"ids": [17, 3], "fills": 1}})
    turns.forget_live_state()
    outcome = await turns.send("old", "fill")
    assert outcome.record is not None and outcome.record.status is AgentStatus.RUNNING, outcome.record.error


members = st.one_of(st.integers(), st.text(max_size=8), st.tuples(st.integers(), st.text(max_size=3)))


@settings(max_examples=300, deadline=None)
@given(items=st.lists(members, min_size=1, max_size=30, unique=True), order=st.randoms(use_true_random=False))
def test_a_set_saved_in_any_order_is_the_same_field_and_one_member_more_is_not(items: list[Any], order: Any) -> None:
    shuffled = list(items)
    order.shuffle(shuffled)
    built = set(items)
    pruned = set(range(-64, 64)) | built  # a larger table, thinned: another layout again
    pruned -= set(range(-64, 64)) - built
    for value in (built, pruned):
        fields = {"tags": value, "nested": {"in": [value]}, "n": 1}
        saved = to_jsonable_python({"tags": shuffled, "nested": {"in": [shuffled]}, "n": 1})
        assert fields_changed(fields, saved) == []
        assert fields_changed(fields, {**saved, "tags": saved["tags"][1:], "n": 2}) == ["n", "tags"]


async def test_class_level_annotations_type_the_fields_after_compaction_and_replay() -> None:
    turns = Turns()
    await turns.schedule("Fields.ClassLevel", "c")
    await turns.send("c", "configure", 2)
    turns.forget_live_state()
    await turns.send("c", "configure", 4)
    outcome = await turns.send("c", "kinds")
    assert outcome.record is not None and outcome.facts.compacted
    assert outcome.record.events[-1].result == {
        "anything": "tuple", "config": "Config", "history": ["Config", "Config"],
    }


async def test_an_untyped_container_of_models_refuses_compaction_instead_of_changing_the_type() -> None:
    turns = Turns()
    await turns.schedule("Fields.NestedUntyped", "n")
    for retries in (1, 2, 3):
        outcome = await turns.send("n", "add", retries)
        assert outcome.facts.compaction_refused and not outcome.facts.compacted
    turns.forget_live_state()  # the journal replays from the base __init__ built: models again
    outcome = await turns.send("n", "end")
    assert outcome.record is not None and outcome.record.status is AgentStatus.COMPLETED, outcome.record.error
    assert outcome.record.result == 6


@agent.defn(name="Fields.ClassLevelChanged")
class ClassLevelChanged:
    """ClassLevel after a deploy that changed the type of `config` incompatibly."""

    config: Point | None

    def __init__(self) -> None:
        self.config = None

    @agent.event
    async def kinds(self) -> dict[str, str]:
        return type_names(self)

    @agent.run
    async def run(self) -> None:
        await condition(lambda: self.config is not None and self.config.x < 0)


async def test_a_saved_field_that_no_longer_validates_parks_the_agent_naming_the_field() -> None:
    turns = Turns()
    await turns.schedule("Fields.ClassLevel", "c")
    outcome = await turns.send("c", "configure", 2)
    assert outcome.facts.compacted  # the base now holds config as saved JSON

    def deployed(name: str) -> Any:
        return agent_definition("Fields.ClassLevelChanged" if name == "Fields.ClassLevel" else name)

    turns.engine = DurableEngine(lookup=deployed)
    outcome = await turns.send("c", "kinds")
    record = turns.record("c")
    assert outcome.facts.nondeterminism and record.status is AgentStatus.STUCK
    assert record.error is not None and "field 'config'" in record.error and len(record.parked) == 1


@agent.defn(name="Fields.Renewed")
class Renewed:
    """Continues as new on `renew`: the fields carry over to the new run."""

    def __init__(self) -> None:
        self.when = datetime(2026, 1, 1, tzinfo=timezone.utc)
        self.pair = (1, "a")
        self.renew = False

    @agent.event
    async def renew(self) -> None:
        self.renew = True

    @agent.event
    async def kinds(self) -> dict[str, str]:
        return type_names(self)

    @agent.run
    async def run(self, generation: int = 0) -> None:
        await condition(lambda: self.renew)
        self.renew = False
        agent.agent_continue_as_new(input=generation + 1)


async def test_untyped_fields_keep_their_types_across_continue_as_new() -> None:
    turns = Turns()
    await turns.schedule("Fields.Renewed", "r")
    await turns.send("r", "renew")
    outcome = await turns.send("r", "kinds")
    assert outcome.record is not None and outcome.record.events[-1].result == {
        "pair": "tuple", "renew": "bool", "when": "datetime",
    }


@agent.defn(name="Fields.Unresolvable")
class Unresolvable:
    """One annotation names a type that only exists for type checkers."""

    config: Config | None
    ghost: NotDefinedAtRuntime  # type: ignore[name-defined]  # noqa: F821

    def __init__(self) -> None:
        self.config = None
        self.ghost = datetime(2026, 1, 1, tzinfo=timezone.utc)

    @agent.event
    async def configure(self, retries: int) -> None:
        self.config = Config(retries=retries)

    @agent.event
    async def kinds(self) -> dict[str, str]:
        return type_names(self)

    @agent.run
    async def run(self) -> None:
        await condition(lambda: self.config is not None and self.config.retries < 0)


async def test_an_annotation_that_does_not_resolve_leaves_the_others_and_the_values_types_working() -> None:
    turns = Turns()
    await turns.schedule("Fields.Unresolvable", "u")
    await turns.send("u", "configure", 2)
    turns.forget_live_state()
    outcome = await turns.send("u", "kinds")
    assert outcome.record is not None and outcome.record.status is AgentStatus.RUNNING, outcome.record.error
    assert outcome.record.events[-1].result == {"config": "Config", "ghost": "datetime"}
