"""Run one step command through its registered function and describe the outcome."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from functools import partial
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from agentstream.agents._registry import FunctionDefinition
from agentstream.agents.exceptions import RetryableError, TerminalError
from agentstream.topics import StepCommand, StepError, StepResult, derived_message_id


class _Failed(Exception):
    def __init__(self, error: StepError) -> None:
        self.error = error


def _error(
    exc: BaseException, *, retryable: bool = True, type: str | None = None, message: str | None = None, **extra: Any
) -> _Failed:
    return _Failed(
        StepError(type=type or exc.__class__.__name__, message=message or str(exc), retryable=retryable, **extra)
    )


async def _call(command: StepCommand, definition: FunctionDefinition, executor: Executor | None) -> Any:
    try:
        args = [] if definition.parameter is None else [definition.parameter.validate(command.input)]
    except ValidationError as exc:
        raise _error(exc, retryable=False, type="InvalidInput") from exc
    if definition.is_async:
        call = definition.fn(*args)
    else:
        # A sync function that overruns keeps its thread until it returns: Python cannot stop it.
        call = asyncio.get_running_loop().run_in_executor(executor, partial(definition.fn, *args))
    try:
        async with asyncio.timeout(command.start_to_close_timeout_s) as scope:
            return await call
    except TerminalError as exc:
        raise _error(exc, retryable=False) from exc
    except RetryableError as exc:
        raise _error(exc, retry_after_s=exc.retry_after) from exc
    except TimeoutError as exc:
        if scope.expired():
            raise _error(
                exc,
                type="StartToCloseTimeout",
                message=f"{command.function} did not finish within {command.start_to_close_timeout_s}s",
            ) from exc
        raise _error(exc) from exc  # the function's own timeout, e.g. an HTTP call
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the worker itself is being cancelled
        raise _error(exc) from exc
    except Exception as exc:  # any other failure of user code is worth a retry
        raise _error(exc) from exc


async def execute(
    command: StepCommand, functions: Mapping[str, FunctionDefinition], executor: Executor | None = None
) -> StepResult:
    started = time.perf_counter()
    output, error = None, None
    definition = functions.get(command.function)
    try:
        if definition is None:
            # Retryable: a worker that knows the function may be deployed later.
            raise _Failed(StepError(
                type="FunctionNotFound",
                message=f"no function {command.function!r} is registered on this worker's task queue",
            ))
        value = await _call(command, definition, executor)
        try:
            output = to_jsonable_python(value)
        except PydanticSerializationError as exc:
            raise _error(exc, retryable=False, type="InvalidOutput") from exc
    except _Failed as failed:
        error = failed.error
    return StepResult(
        # A re-run of the same command yields the same ID, so the processor counts it once.
        message_id=derived_message_id(command.message_id, "result"),
        agent_id=command.agent_id,
        run_id=command.run_id,
        step_id=command.step_id,
        attempt=command.attempt,
        function=command.function,
        ok=error is None,
        output=output,
        error=error,
        duration_s=time.perf_counter() - started,
    )


def outcome_label(result: StepResult) -> str:
    if result.ok:
        return "completed"
    assert result.error is not None
    if result.error.type == "StartToCloseTimeout":
        return "timed_out"
    return "retryable_failure" if result.error.retryable else "failed"
