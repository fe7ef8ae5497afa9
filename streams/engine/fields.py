"""An agent instance from its fields: `__init__` for a new agent, else the saved JSON.

Fields are saved as JSON; restoring them (after a compaction, a continue-as-new or a
restart) must hand the code the same kinds of objects it had before. A field's type is:

1. its class-level annotation, read with `typing.get_type_hints` (`config: Config | None`
   in the class body). Python keeps no annotation written inside a method
   (`self.config: Config | None = None` in `__init__` is a plain assignment at runtime),
   so declare typed fields at class level;
2. otherwise (no annotation, or `Any`) the type of its value when the base was taken: a
   base's fields carry, under the reserved key `__types__`, the type of every such field
   whose value is not plain JSON (a pydantic model, dataclass, datetime, tuple, set, ...).

What neither can describe, such as an unannotated list of models, would come back as
plain JSON; `differences` finds that so compaction is refused rather than changing it.

The code always gets its own copy of the saved values: nothing it mutates can reach
back into a record.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Mapping
from functools import cache
from typing import Any, ClassVar, get_origin, get_type_hints

from pydantic import TypeAdapter
from pydantic_core import to_jsonable_python

from agentstream.agents.exceptions import NondeterminismError

log = logging.getLogger("agentstream.engine")

TYPES_KEY = "__types__"  # a dunder name: Python reserves those, so no field of the agent's own has it
_JSON_TYPES = (dict, list, str, int, float, bool, type(None))


def json_copy(value: Any) -> Any:
    """A copy of a JSON value (dicts, lists and immutable scalars); much cheaper than deepcopy."""
    if isinstance(value, dict):
        return {key: json_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_copy(item) for item in value]
    return value


def _hints(cls: type) -> dict[str, Any]:
    """The class-level annotations of `cls` and its bases; those that do not resolve are left out."""
    try:
        return get_type_hints(cls)
    except Exception:  # e.g. a name imported only for type checkers: resolve them one by one
        pass
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            holder = type("_", (), {"__annotations__": {name: annotation}, "__module__": klass.__module__})
            try:
                hints.update(get_type_hints(holder, localns=dict(vars(klass))))
            except Exception as exc:
                hints.pop(name, None)
                log.warning(
                    "the annotation of %s.%s does not resolve at runtime (%s); its values' own types are used",
                    cls.__qualname__, name, exc,
                )
    return hints


@cache
def _adapters(cls: type) -> dict[str, TypeAdapter[Any]]:
    """Adapters of the class-level annotations of `cls` and its bases (`Any` counts as none)."""
    hints = _hints(cls)
    adapters = {}
    for name, hint in hints.items():
        if name.startswith("__") or hint is Any or get_origin(hint) is ClassVar:
            continue
        try:
            adapters[name] = TypeAdapter(hint)
        except Exception:  # not a type pydantic knows: the value's own type is used instead
            continue
    return adapters


@cache
def _adapter_for(klass: type) -> TypeAdapter[Any]:
    return TypeAdapter(klass)


def _resolve(name: str) -> type:
    module, _, qualname = name.partition(":")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    if not isinstance(found, type):
        raise TypeError(f"{name} is not a type")
    return found


_type_names: dict[type, str | None] = {}


def _type_name(klass: type) -> str | None:
    """`module:qualname` of a type that can be found again by that name and validated into."""
    if klass not in _type_names:
        name = f"{klass.__module__}:{klass.__qualname__}"
        try:
            restorable = _resolve(name) is klass and _adapter_for(klass) is not None
        except Exception:  # a local class, or one pydantic cannot build: not restorable by name
            restorable = False
        _type_names[klass] = name if restorable else None
    return _type_names[klass]


def field_types(cls: type, values: Mapping[str, Any]) -> dict[str, str]:
    """The type names to save with a snapshot of `values`: unannotated fields holding non-JSON values."""
    adapters = _adapters(cls)
    types = {}
    for name, value in values.items():
        if name in adapters or type(value) in _JSON_TYPES:
            continue
        type_name = _type_name(type(value))
        if type_name is not None:
            types[name] = type_name
    return types


def with_types(fields: dict[str, Any], types: dict[str, str]) -> dict[str, Any]:
    """Saved fields plus the types of their unannotated values, as a base keeps them."""
    return {**fields, TYPES_KEY: types} if types else fields


def make_instance(cls: type, fields: Mapping[str, Any] | None) -> Any:
    """A new instance (`fields` None) or one restored from saved fields, with its own copies."""
    if fields is None:
        return cls()
    instance: Any = object.__new__(cls)
    adapters = _adapters(cls)
    types = fields.get(TYPES_KEY) or {}
    restored = {}
    for name, value in fields.items():
        if name == TYPES_KEY:
            continue
        try:
            adapter = adapters.get(name)
            if adapter is None and name in types:
                adapter = _adapter_for(_resolve(types[name]))
            copied = json_copy(value)
            restored[name] = copied if adapter is None else adapter.validate_python(copied)
        except Exception as exc:  # the code's type for it changed since the record was saved
            raise NondeterminismError(
                f"field {name!r} of {cls.__qualname__} cannot be restored from the record: {type(exc).__name__}: {exc}"
            ) from exc
    instance.__dict__.update(restored)
    return instance


def fields_changed(values: Mapping[str, Any], saved: Mapping[str, Any]) -> list[str]:
    """The fields whose JSON in `values` is not `saved`, whatever order their sets iterate in.

    A set's JSON is a list in its iteration order, and that order depends on the order of
    insertion whenever two members share a hash slot, and string hashes differ in every
    process (PYTHONHASHSEED). A set rebuilt from that list, by a compaction or by a replay
    after a restart, can iterate differently with the same members: compared as plain JSON,
    the fields looked changed, so compaction was refused and a replay called the agent
    nondeterministic (stuck). Here both sides' sets are compared sorted: `values`' sets, and
    the lists of `saved` where `values` holds a set. Callers compare the plain JSON first, so
    this walk runs only when that differs. Sets inside a model or dataclass are not reached.
    """
    current = to_jsonable_python(_sets_sorted(values))
    expected = {name: _sorted_like(value, values.get(name)) for name, value in saved.items()}
    return sorted(name for name in current.keys() | expected.keys() if current.get(name) != expected.get(name))


def _sets_sorted(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted((_sets_sorted(item) for item in value), key=_json_key)
    if isinstance(value, dict):
        return {key: _sets_sorted(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_sets_sorted(item) for item in value]
    return value


def _sorted_like(saved: Any, value: Any) -> Any:
    if isinstance(value, (set, frozenset)) and isinstance(saved, list):
        guide = next(iter(value), None)  # a set's members share a shape: one guides them all
        return sorted((_sorted_like(item, guide) for item in saved), key=_json_key)
    if isinstance(value, dict) and isinstance(saved, dict):
        return {key: _sorted_like(item, value.get(key)) for key, item in saved.items()}
    if isinstance(value, (list, tuple)) and isinstance(saved, list):
        return [_sorted_like(item, value[i] if i < len(value) else None) for i, item in enumerate(saved)]
    return saved


def _json_key(value: Any) -> tuple[int, float, str]:
    """Where a set member goes: numbers by value, then strings, then anything else by its JSON.
    Taken from the member's JSON, so a live set and its saved list sort alike."""
    data = to_jsonable_python(value, fallback=repr)
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return (0, data, "")
    if isinstance(data, str):
        return (1, 0, data)
    return (2, 0, json.dumps(data, sort_keys=True))


def differences(original: Mapping[str, Any], restored: Mapping[str, Any]) -> list[str]:
    """Fields whose restored value is not the same type and value as the original's."""
    changed = []
    for name in original.keys() | restored.keys():
        if name not in original or name not in restored:
            changed.append(name)
            continue
        a, b = original[name], restored[name]
        try:
            same = type(a) is type(b) and bool(a == b)
        except Exception:  # a value that cannot even be compared cannot be shown to be the same
            same = False
        if not same:
            changed.append(name)
    return sorted(changed)
