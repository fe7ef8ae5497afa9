"""`execute`: one step command through its registered function, called directly (no broker)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import BaseModel

from agentstream.agents import RetryableError, TerminalError, function
from agentstream.agents._registry import function_definitions
from agentstream.streams.worker.execute import execute, outcome_label
from agentstream.topics import StepCommand, StepError, StepResult, derived_message_id

# Unique names so these registrations never collide with other test modules or apps.
P = "test_execute."
SYNC_THREADS: list[int] = []
NEVER = asyncio.Event()  # never set: a function waiting on it can only end by timeout


class Pair(BaseModel):
    a: int
    b: int


@function(name=P + "add")
async def add(pair: Pair) -> int:
    return pair.a + pair.b


@function(name=P + "echo_model")
async def echo_model(pair: Pair) -> Pair:
    return Pair(a=pair.b, b=pair.a)


@function(name=P + "no_input")
async def no_input() -> str:
    return "done"


@function(name=P + "sync_upper")
def sync_upper(text: str) -> str:
    SYNC_THREADS.append(threading.get_ident())
    return text.upper()


@function(name=P + "terminal")
async def terminal(value: int) -> int:
    raise TerminalError(f"no way with {value}")


@function(name=P + "retry_later")
async def retry_later(value: int) -> int:
    raise RetryableError("busy", retry_after=2)


@function(name=P + "boom")
async def boom(value: int) -> int:
    raise ValueError(f"boom {value}")


@function(name=P + "sync_terminal")
def sync_terminal(value: int) -> int:
    raise TerminalError("sync refusal")


@function(name=P + "hang")
async def hang(value: int) -> int:
    await NEVER.wait()
    return value


@pytest.fixture
def functions() -> dict[str, Any]:
    return dict(function_definitions())


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(2, thread_name_prefix="test-step")
    yield pool
    pool.shutdown(wait=True)


def command(fn: str, input: Any = None, **kwargs: Any) -> StepCommand:
    defaults: dict[str, Any] = dict(agent_id="agent-1", run_id="run-1", step_id="step-1", task_queue="restack")
    defaults.update(kwargs)
    return StepCommand(function=P + fn, input=input, **defaults)


async def test_async_function_ok(functions: dict[str, Any], executor: ThreadPoolExecutor) -> None:
    cmd = command("add", {"a": 2, "b": 3}, attempt=3)
    result = await execute(cmd, functions, executor)
    assert isinstance(result, StepResult)
    assert result.ok is True
    assert result.error is None
    assert result.output == 5
    assert (result.agent_id, result.run_id, result.step_id, result.attempt, result.function) == (
        "agent-1", "run-1", "step-1", 3, P + "add",
    )
    assert result.key == b"agent-1"
    assert result.duration_s >= 0
    assert outcome_label(result) == "completed"


async def test_model_output_is_made_json(functions: dict[str, Any]) -> None:
    result = await execute(command("echo_model", {"a": 1, "b": 2}), functions)
    assert result.ok and result.output == {"a": 2, "b": 1}
    StepResult.model_validate_json(result.to_bytes())  # round-trips on the wire


async def test_function_without_parameter(functions: dict[str, Any]) -> None:
    result = await execute(command("no_input"), functions)
    assert result.ok and result.output == "done"


async def test_sync_function_runs_in_a_thread(functions: dict[str, Any], executor: ThreadPoolExecutor) -> None:
    SYNC_THREADS.clear()
    loop_thread = threading.get_ident()
    result = await execute(command("sync_upper", "hi"), functions, executor)
    assert result.ok and result.output == "HI"
    assert len(SYNC_THREADS) == 1
    assert SYNC_THREADS[0] != loop_thread


async def test_sync_function_default_executor(functions: dict[str, Any]) -> None:
    SYNC_THREADS.clear()
    result = await execute(command("sync_upper", "abc"), functions, None)
    assert result.ok and result.output == "ABC"
    assert SYNC_THREADS and SYNC_THREADS[0] != threading.get_ident()


@pytest.mark.parametrize("bad", [{"a": "x", "b": 1}, {"a": 1}, "not a pair", None])
async def test_invalid_input_is_not_retryable(functions: dict[str, Any], bad: Any) -> None:
    result = await execute(command("add", bad), functions)
    assert result.ok is False and result.output is None
    assert result.error is not None
    assert result.error.type == "InvalidInput"
    assert result.error.retryable is False
    assert outcome_label(result) == "failed"


async def test_invalid_input_to_sync_function(functions: dict[str, Any], executor: ThreadPoolExecutor) -> None:
    SYNC_THREADS.clear()
    result = await execute(command("sync_upper", {"not": "text"}), functions, executor)
    assert result.error is not None and result.error.type == "InvalidInput" and not result.error.retryable
    assert SYNC_THREADS == []  # never called


async def test_terminal_error_is_not_retryable(functions: dict[str, Any]) -> None:
    result = await execute(command("terminal", 7), functions)
    assert result.ok is False
    assert result.error == StepError(type="TerminalError", message="no way with 7", retryable=False)
    assert outcome_label(result) == "failed"


async def test_terminal_error_from_sync_function(functions: dict[str, Any], executor: ThreadPoolExecutor) -> None:
    result = await execute(command("sync_terminal", 1), functions, executor)
    assert result.error is not None and result.error.type == "TerminalError" and not result.error.retryable


async def test_retryable_error_with_retry_after(functions: dict[str, Any]) -> None:
    result = await execute(command("retry_later", 1), functions)
    assert result.ok is False
    assert result.error is not None
    assert result.error.type == "RetryableError"
    assert result.error.retryable is True
    assert result.error.retry_after_s == 2
    assert result.error.message == "busy"
    assert outcome_label(result) == "retryable_failure"


async def test_generic_exception_is_retryable(functions: dict[str, Any]) -> None:
    result = await execute(command("boom", 4), functions)
    assert result.ok is False
    assert result.error is not None
    assert result.error.type == "ValueError"
    assert result.error.message == "boom 4"
    assert result.error.retryable is True
    assert result.error.retry_after_s is None
    assert outcome_label(result) == "retryable_failure"


async def test_unknown_function_is_retryable_and_named(functions: dict[str, Any]) -> None:
    result = await execute(command("does_not_exist", 1), functions)
    assert result.ok is False
    assert result.error is not None
    assert result.error.retryable is True
    assert P + "does_not_exist" in result.error.message
    assert (result.step_id, result.function) == ("step-1", P + "does_not_exist")


async def test_start_to_close_timeout(functions: dict[str, Any]) -> None:
    result = await execute(command("hang", 1, start_to_close_timeout_s=0.2), functions)
    assert result.ok is False
    assert result.error is not None
    assert result.error.type == "StartToCloseTimeout"
    assert "0.2" in result.error.message
    assert result.error.retryable is True
    assert 0.2 <= result.duration_s < 5
    assert outcome_label(result) == "timed_out"


async def test_message_id_is_deterministic(functions: dict[str, Any]) -> None:
    cmd = command("add", {"a": 1, "b": 1})
    first = await execute(cmd, functions)
    second = await execute(cmd, functions)
    assert first.message_id == second.message_id == derived_message_id(cmd.message_id, "result")
    # Re-decoded from the wire (as a re-delivered record would be), still the same.
    again = await execute(StepCommand.model_validate_json(cmd.to_bytes()), functions)
    assert again.message_id == first.message_id
    # A failed attempt is deterministic too.
    failing = command("boom", 1)
    assert (await execute(failing, functions)).message_id == (await execute(failing, functions)).message_id


async def test_message_id_differs_across_commands(functions: dict[str, Any]) -> None:
    one = command("add", {"a": 1, "b": 1})
    two = command("add", {"a": 1, "b": 1})  # same content, new command message_id
    retry = one.model_copy(update={"message_id": "retry-of-one", "attempt": 2})
    ids = {(await execute(c, functions)).message_id for c in (one, two, retry)}
    assert len(ids) == 3
    assert one.message_id not in ids


def _result(ok: bool, error: StepError | None = None) -> StepResult:
    return StepResult(agent_id="a", run_id="r", step_id="s", attempt=1, function="f", ok=ok, error=error)


@pytest.mark.parametrize(
    ("ok", "error", "label"),
    [
        (True, None, "completed"),
        (False, StepError(type="TerminalError", message="", retryable=False), "failed"),
        (False, StepError(type="InvalidInput", message="", retryable=False), "failed"),
        (False, StepError(type="ValueError", message="", retryable=True), "retryable_failure"),
        (False, StepError(type="RetryableError", message="", retryable=True, retry_after_s=1), "retryable_failure"),
        (False, StepError(type="StartToCloseTimeout", message=""), "timed_out"),
        (False, StepError(type="HeartbeatTimeout", message=""), "timed_out"),
        (False, StepError(type="ScheduleToStartTimeout", message="", retryable=False), "expired"),
    ],
)
def test_outcome_label(ok: bool, error: StepError | None, label: str) -> None:
    assert outcome_label(_result(ok, error)) == label


class Strict(BaseModel):
    x: int


@function(name=P + "validates_inside")
async def validates_inside(value: int) -> int:
    return Strict(x="not a number").x  # type: ignore[arg-type]


@function(name=P + "own_timeout")
async def own_timeout(value: int) -> int:
    raise TimeoutError("upstream HTTP call timed out")


@function(name=P + "unserialisable")
async def unserialisable(value: int) -> object:
    return object()


@function(name=P + "raises_cancelled")
async def raises_cancelled(value: int) -> int:
    raise asyncio.CancelledError()


async def test_validation_error_inside_the_function_is_retryable_not_invalid_input(functions: dict[str, Any]) -> None:
    result = await execute(command("validates_inside", 1), functions)
    assert result.error is not None
    assert (result.error.type, result.error.retryable) == ("ValidationError", True)


async def test_the_functions_own_timeout_is_not_a_start_to_close_timeout(functions: dict[str, Any]) -> None:
    result = await execute(command("own_timeout", 1, start_to_close_timeout_s=30), functions)
    assert result.error is not None
    assert (result.error.type, result.error.retryable) == ("TimeoutError", True)
    assert outcome_label(result) == "retryable_failure"


async def test_unserialisable_output_fails_for_good(functions: dict[str, Any]) -> None:
    result = await execute(command("unserialisable", 1), functions)
    assert result.error is not None
    assert (result.error.type, result.error.retryable) == ("InvalidOutput", False)


async def test_cancelled_error_from_user_code_is_a_step_failure(functions: dict[str, Any]) -> None:
    result = await execute(command("raises_cancelled", 1), functions)
    assert result.error is not None
    assert (result.error.type, result.error.retryable) == ("CancelledError", True)
