"""An agent instance from its fields: `__init__` for a new agent, else the saved JSON.

Fields are saved as JSON. When a field's type is declared, at class level
(`config: Config | None`) or where `__init__` sets it (`self.config: Config | None = None`),
the saved value is validated back into that type, so the code sees the same objects
after a restart or a compaction as before.
"""

from __future__ import annotations

import ast
import copy
import inspect
import textwrap
from functools import cache
from typing import Any, get_type_hints

from pydantic import TypeAdapter


def _init_annotations(cls: type) -> dict[str, Any]:
    """`self.name: T = ...` in the `__init__`s of `cls` and its bases, evaluated where they are written."""
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or not inspect.isfunction(init):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
        except (OSError, TypeError, SyntaxError):
            continue
        for node in ast.walk(tree):
            target = getattr(node, "target", None)
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
            ):
                try:
                    found[target.attr] = eval(  # noqa: S307 - the user's own annotation, in its module
                        compile(ast.Expression(node.annotation), "<annotation>", "eval"), init.__globals__
                    )
                except Exception:
                    continue
    return found


@cache
def _adapters(cls: type) -> dict[str, TypeAdapter[Any]]:
    hints: dict[str, Any] = _init_annotations(cls)
    try:
        hints.update(get_type_hints(cls))
    except Exception:  # unresolvable class annotations: keep what __init__ declares
        pass
    adapters = {}
    for name, hint in hints.items():
        if name.startswith("__"):
            continue
        try:
            adapters[name] = TypeAdapter(hint)
        except Exception:  # not a type pydantic knows: the field stays plain JSON
            continue
    return adapters


def make_instance(cls: type, fields: dict[str, Any] | None) -> Any:
    if fields is None:
        return cls()
    instance: Any = object.__new__(cls)
    adapters = _adapters(cls)
    restored = {}
    for name, value in fields.items():
        adapter = adapters.get(name)
        restored[name] = adapter.validate_python(value) if adapter is not None else copy.deepcopy(value)
    instance.__dict__.update(restored)
    return instance
