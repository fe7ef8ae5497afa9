"""`@function`: declare a step function that workers run outside the agent."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, overload

from ._registry import FunctionDefinition, register_function, single_parameter

F = TypeVar("F", bound=Callable[..., Any])


@overload
def function(fn: F) -> F: ...
@overload
def function(fn: None = None, *, name: str | None = None) -> Callable[[F], F]: ...


def function(fn: F | None = None, *, name: str | None = None) -> F | Callable[[F], F]:
    """Register `fn` (sync or async) under its name; its one argument is validated with pydantic."""

    def decorate(fn: F) -> F:
        register_function(
            FunctionDefinition(
                name=name or fn.__name__,
                fn=fn,
                parameter=single_parameter(fn, skip_self=False),
                is_async=inspect.iscoroutinefunction(fn),
            )
        )
        return fn

    return decorate(fn) if fn is not None else decorate


@contextlib.contextmanager
def import_functions() -> Iterator[None]:
    """Mark imports of step functions inside agent modules.

    Agents only refer to functions by name; importing them registers them for workers
    started with the same `--app`. The block is kept for familiarity and readability.
    """
    yield
