"""Run one step command through its registered function and describe the outcome.

The worker enforces an attempt's own deadlines (schedule_to_start before calling
anything, start_to_close and heartbeat while it runs) so that a stuck attempt frees
its slot and is reported early; the processor enforces the same deadlines with
durable timers, so nothing depends on this worker staying alive.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from datetime import datetime, timezone
from functools import partial
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from agentstream.agents._heartbeat import _beat
from agentstream.agents._step_context import Emitter, StepContext
from agentstream.agents._step_context import _current as _step
from agentstream.agents._registry import FunctionDefinition
from agentstream.agents.exceptions import RetryableError, TerminalError
from agentstream.topics import StepCommand, StepError, StepResult, derived_message_id

TIMED_OUT = frozenset({"StartToCloseTimeout", "HeartbeatTimeout"})
EXPIRED = frozenset({"ScheduleToStartTimeout"})

# Calls given up on (timeout) that have not ended yet: kept referenced until they do,
# so an async one is not garbage-collected mid-cancellation and its outcome is consumed.
_abandoned: set[asyncio.Future[Any]] = set()


class _Failed(Exception):
    def __init__(self, error: StepError) -> None:
        self.error = error


def _error(
    exc: BaseException, *, retryable: bool = True, type: str | None = None, message: str | None = None, **extra: Any
) -> _Failed:
    return _Failed(
        StepError(type=type or exc.__class__.__name__, message=message or str(exc), retryable=retryable, **extra)
    )


class _Heartbeats:
    """The `heartbeat()` callback of one attempt: remembers when it was last called.

    It may be called from the step's worker thread (sync functions); assigning a float
    is atomic, and the optional `on_beat` hook must be thread-safe (Prometheus is).
    `details` are accepted for API compatibility; they are not reported yet.
    """

    def __init__(self, on_beat: Callable[[], None] | None) -> None:
        self.last = time.monotonic()
        self._on_beat = on_beat

    def __call__(self, details: Any = None) -> None:
        self.last = time.monotonic()
        if self._on_beat is not None:
            self._on_beat()


def _schedule_to_start_error(command: StepCommand, now: datetime) -> StepError | None:
    """A failure when the command waited longer than its schedule_to_start (from `sent_at`).

    `sent_at` comes from the sender's clock, so clock skew between hosts counts too.
    """
    limit = command.schedule_to_start_timeout_s
    if limit is None:
        return None
    sent_at = command.sent_at if command.sent_at.tzinfo else command.sent_at.replace(tzinfo=timezone.utc)
    waited = (now - sent_at).total_seconds()
    if waited <= limit:
        return None
    return StepError(
        type="ScheduleToStartTimeout",
        message=f"{command.function} was picked up {waited:.3f}s after it was sent, "
        f"later than its schedule_to_start timeout of {limit}s",
        retryable=False,
    )


async def _watch(call: asyncio.Future[Any], beats: _Heartbeats, command: StepCommand) -> Any:
    """Wait for `call`; fail with HeartbeatTimeout once it goes `heartbeat_timeout_s` without a beat."""
    timeout = command.heartbeat_timeout_s
    if timeout is None:
        return await call
    while True:
        remaining = beats.last + timeout - time.monotonic()
        if remaining <= 0:
            raise _Failed(StepError(
                type="HeartbeatTimeout",
                message=f"{command.function} sent no heartbeat for {timeout}s",
                retryable=True,
            ))
        done, _ = await asyncio.wait({call}, timeout=remaining)
        if done:
            return call.result()


def _abandon(call: asyncio.Future[Any]) -> None:
    """Stop waiting for `call`: cancel it if it is async; a thread cannot be stopped."""
    if call.done():
        return
    # For an async function this cancels its task. For a sync function it only cancels
    # the future: its thread runs on until the function returns (Python cannot stop a
    # thread) and its result is dropped; it keeps its executor thread meanwhile.
    call.cancel()
    _abandoned.add(call)
    call.add_done_callback(_forget)


def _forget(call: asyncio.Future[Any]) -> None:
    _abandoned.discard(call)
    if not call.cancelled():
        call.exception()  # consumed: the attempt was already reported as timed out


async def _call(
    command: StepCommand,
    definition: FunctionDefinition,
    executor: Executor | None,
    on_heartbeat: Callable[[], None] | None,
    on_start: Callable[[], None] | None,
    emit: Emitter | None,
) -> Any:
    try:
        args = [] if definition.parameter is None else [definition.parameter.validate(command.input)]
    except ValidationError as exc:
        raise _error(exc, retryable=False, type="InvalidInput") from exc
    if on_start is not None:
        on_start()
    beats = _Heartbeats(on_heartbeat)
    # The attempt runs in its own copy of the context with `_beat` set, so heartbeat()
    # finds this attempt's callback in its task or (via context.run) in its thread.
    context = contextvars.copy_context()
    context.run(_beat.set, beats)
    context.run(_step.set, StepContext(
        agent_id=command.agent_id, run_id=command.run_id, step_id=command.step_id, attempt=command.attempt,
        function=command.function, _emit=emit,
    ))
    loop = asyncio.get_running_loop()
    call: asyncio.Future[Any]
    if definition.is_async:
        call = loop.create_task(definition.fn(*args), context=context)
    else:
        call = loop.run_in_executor(executor, context.run, partial(definition.fn, *args))
    try:
        async with asyncio.timeout(command.start_to_close_timeout_s) as scope:
            return await _watch(call, beats, command)
    except _Failed:
        raise
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
    finally:
        _abandon(call)


async def execute(
    command: StepCommand,
    functions: Mapping[str, FunctionDefinition],
    executor: Executor | None = None,
    *,
    on_heartbeat: Callable[[], None] | None = None,
    on_start: Callable[[], None] | None = None,
    emit: Emitter | None = None,
    now: datetime | None = None,
) -> StepResult:
    """Run one attempt of `command`; never raises for a failure of the step itself.

    `on_start` is called on the event loop just before the function is called (not for
    an attempt that never calls it: expired, unknown function, invalid input).
    `on_heartbeat` is called (possibly from a worker thread) on every heartbeat().
    `emit` is what `step_context().emit` calls: the attempt's way onto agent-stream.
    `now` is the time the attempt starts (default: the clock's; a test environment's own time).
    Cancelling the caller cancels an async function; a sync one runs on in its thread.
    """
    started = time.perf_counter()
    output, error = None, None
    definition = functions.get(command.function)
    try:
        expired = _schedule_to_start_error(command, now or datetime.now(timezone.utc))
        if expired is not None:
            raise _Failed(expired)
        if definition is None:
            # Retryable: a worker that knows the function may be deployed later.
            raise _Failed(StepError(
                type="FunctionNotFound",
                message=f"no function {command.function!r} is registered on this worker's task queue",
            ))
        value = await _call(command, definition, executor, on_heartbeat, on_start, emit)
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
        command_id=command.message_id,
    )


def outcome_label(result: StepResult) -> str:
    """The `outcome` label of `agentstream_worker_steps_total` for one attempt."""
    if result.ok:
        return "completed"
    assert result.error is not None
    if result.error.type in TIMED_OUT:
        return "timed_out"
    if result.error.type in EXPIRED:
        return "expired"
    return "retryable_failure" if result.error.retryable else "failed"
