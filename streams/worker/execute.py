"""Run one step command through its registered function and describe the outcome."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from functools import partial

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from agentstream.agents._registry import FunctionDefinition
from agentstream.agents.exceptions import RetryableError, TerminalError
from agentstream.topics import StepCommand, StepError, StepResult, derived_message_id


async def execute(
    command: StepCommand, functions: Mapping[str, FunctionDefinition], executor: Executor | None = None
) -> StepResult:
    started = time.perf_counter()
    output, error = None, None
    definition = functions.get(command.function)
    try:
        if definition is None:
            # Retryable: a worker that knows the function may be deployed later.
            raise RetryableError(f"no function {command.function!r} is registered on this worker's task queue")
        args = [] if definition.parameter is None else [definition.parameter.validate(command.input)]
        if definition.is_async:
            call = definition.fn(*args)
        else:
            call = asyncio.get_running_loop().run_in_executor(executor, partial(definition.fn, *args))
        output = to_jsonable_python(await asyncio.wait_for(call, command.start_to_close_timeout_s))
    except ValidationError as exc:
        error = StepError(type="InvalidInput", message=str(exc), retryable=False)
    except TerminalError as exc:
        error = StepError(type=type(exc).__name__, message=str(exc), retryable=False)
    except RetryableError as exc:
        error = StepError(type=type(exc).__name__, message=str(exc), retryable=True, retry_after_s=exc.retry_after)
    except asyncio.TimeoutError:
        error = StepError(
            type="StartToCloseTimeout",
            message=f"{command.function} did not finish within {command.start_to_close_timeout_s}s",
        )
    except Exception as exc:  # any other failure of user code is worth a retry
        error = StepError(type=type(exc).__name__, message=str(exc), retryable=True)
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
