"""`execute`: one step command through its registered function, called directly (no broker).

Also the worker's helpers around an attempt that need no broker either: the progress
records it sends (`started`, throttled `heartbeat`) and its cache of completed commands.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import pytest
from pydantic import BaseModel

from agentstream.agents import RetryableError, TerminalError, function
from agentstream.agents._registry import function_definitions
from agentstream.streams.worker.completed import CompletedCommands
from agentstream.streams.worker.execute import execute, outcome_label
from agentstream.streams.worker.progress import AttemptProgress, HeartbeatThrottle, needs_started
from agentstream.topics import StepCommand, StepError, StepProgress, StepResult, derived_message_id

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


# --- the result names its command; on_start ----------------------------------------------

async def test_the_result_names_the_command_it_answers(functions: dict[str, Any]) -> None:
    cmd = command("add", {"a": 1, "b": 2})
    assert (await execute(cmd, functions)).command_id == cmd.message_id
    failed = command("boom", 1)
    assert (await execute(failed, functions)).command_id == failed.message_id


STARTED_SEEN: list[bool] = []
ON_START_CALLS: list[str] = []


@function(name=P + "checks_started")
async def checks_started(value: int) -> int:
    STARTED_SEEN.append(bool(ON_START_CALLS))
    return value


async def test_on_start_is_called_once_just_before_the_function_runs(functions: dict[str, Any]) -> None:
    STARTED_SEEN.clear()
    ON_START_CALLS.clear()
    result = await execute(command("checks_started", 7), functions, on_start=lambda: ON_START_CALLS.append("x"))
    assert result.ok and result.output == 7
    assert ON_START_CALLS == ["x"]
    assert STARTED_SEEN == [True]


@pytest.mark.parametrize(
    "cmd",
    [
        command("checks_started", 1, schedule_to_start_timeout_s=1, sent_at=datetime(2020, 1, 1, tzinfo=timezone.utc)),
        command("not_registered_anywhere", 1),
        command("checks_started", "not an int"),
    ],
    ids=["expired", "unknown_function", "invalid_input"],
)
async def test_on_start_is_not_called_for_an_attempt_that_never_runs(functions: dict[str, Any], cmd: StepCommand) -> None:
    calls: list[int] = []
    result = await execute(cmd, functions, on_start=lambda: calls.append(1))
    assert result.ok is False
    assert calls == []


# --- progress records: when, what, and how often --------------------------------------------

@pytest.mark.parametrize(
    ("timeouts", "expected"),
    [
        ({}, False),
        ({"start_to_close_timeout_s": 5}, True),
        ({"schedule_to_start_timeout_s": 5}, True),
        ({"heartbeat_timeout_s": 5}, True),
    ],
)
def test_started_is_needed_only_for_a_command_with_a_timeout_the_engine_times(
    timeouts: dict[str, float], expected: bool
) -> None:
    assert needs_started(command("add", **timeouts)) is expected


def test_throttle_sends_a_beat_at_once_when_the_interval_has_passed() -> None:
    throttle = HeartbeatThrottle(interval=1.0, now=100.0)
    assert throttle.beat(101.0) == 0.0
    assert throttle.beat(102.5) == 0.0


def test_throttle_defers_a_beat_inside_the_interval_to_its_end_and_folds_later_ones_in() -> None:
    throttle = HeartbeatThrottle(interval=1.0, now=100.0)  # the start counts as the first sign of life
    assert throttle.beat(100.25) == pytest.approx(0.75)
    assert throttle.beat(100.5) is None  # already deferred: one record carries both
    assert throttle.beat(100.9) is None
    throttle.deferred_sent(101.0)
    assert throttle.beat(101.5) == pytest.approx(0.5)  # counted from the deferred send
    throttle.deferred_sent(102.0)
    assert throttle.beat(103.0) == 0.0


class Sent:
    """A fake producer send: records each progress record and when it was handed over."""

    def __init__(self) -> None:
        self.records: list[tuple[float, StepProgress]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail = False

    async def __call__(self, record: StepProgress) -> asyncio.Future[None]:
        await self.release.wait()
        if self.fail:
            raise RuntimeError("broker gone")
        self.records.append((time.monotonic(), record))
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered

    def of(self, event: str) -> list[StepProgress]:
        return [record for _, record in self.records if record.event == event]


async def until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_started_record_describes_the_attempt_and_is_sent_without_waiting() -> None:
    sent = Sent()
    sent.release.clear()  # the broker is slow: starting must not wait for it
    cmd = command("add", attempt=3, start_to_close_timeout_s=5)
    progress = AttemptProgress(cmd, sent)
    progress.started()  # returns at once
    assert sent.records == []
    sent.release.set()
    await progress.flushed()
    (started,) = sent.of("started")
    assert started == StepProgress(
        message_id=derived_message_id(cmd.message_id, "started"), agent_id=cmd.agent_id, run_id=cmd.run_id,
        step_id=cmd.step_id, attempt=3, function=cmd.function, event="started", command_id=cmd.message_id,
        sent_at=started.sent_at,
    )
    progress.close()


async def test_flushed_waits_until_every_record_so_far_is_handed_to_the_producer() -> None:
    sent = Sent()
    sent.release.clear()
    progress = AttemptProgress(command("add", heartbeat_timeout_s=5), sent)
    progress.started()
    flushing = asyncio.create_task(progress.flushed())
    await asyncio.sleep(0.05)  # give it the chance to finish wrongly
    assert not flushing.done()
    sent.release.set()
    await asyncio.wait_for(flushing, 5)
    assert len(sent.of("started")) == 1
    progress.close()


async def test_a_failing_progress_send_is_logged_not_raised() -> None:
    sent = Sent()
    sent.fail = True
    progress = AttemptProgress(command("add", heartbeat_timeout_s=5), sent)
    progress.started()
    await progress.flushed()  # does not raise
    assert sent.records == []
    progress.close()


async def test_heartbeats_are_throttled_to_one_per_third_of_the_timeout_and_the_last_is_kept() -> None:
    sent = Sent()
    cmd = command("add", heartbeat_timeout_s=0.3)  # at most one heartbeat record per 0.1 s
    progress = AttemptProgress(cmd, sent)
    started = time.monotonic()
    progress.started()
    beats = 0
    while time.monotonic() - started < 0.55:  # the step's work: beating every 10 ms
        progress.heartbeat()
        beats += 1
        await asyncio.sleep(0.01)
    last_beat = time.monotonic()
    await until(lambda: any(at >= last_beat for at, _ in sent.records if _.event == "heartbeat"))
    progress.close()

    times = [at for at, record in sent.records if record.event == "heartbeat"]
    records = sent.of("heartbeat")
    assert beats >= 20
    assert 3 <= len(records) <= 7
    gaps = [b - a for a, b in zip([started, *times], times)]
    assert min(gaps) >= 0.1 - 0.01
    assert [r.message_id for r in records] == [
        derived_message_id(cmd.message_id, f"heartbeat:{n}") for n in range(1, len(records) + 1)
    ]
    assert all(r.command_id == cmd.message_id and r.attempt == cmd.attempt for r in records)


async def test_heartbeats_from_a_worker_thread_are_forwarded() -> None:
    sent = Sent()
    progress = AttemptProgress(command("add", heartbeat_timeout_s=0.3), sent)
    progress.started()
    beating = threading.Thread(target=progress.heartbeat)
    beating.start()
    beating.join()
    await until(lambda: len(sent.of("heartbeat")) == 1)
    progress.close()


async def test_no_heartbeat_records_without_a_heartbeat_timeout_or_after_close() -> None:
    sent = Sent()
    progress = AttemptProgress(command("add", start_to_close_timeout_s=5), sent)
    progress.started()
    progress.heartbeat()
    closing = AttemptProgress(command("add", heartbeat_timeout_s=0.15), sent)
    closing.heartbeat()  # deferred to 50 ms from now ...
    closing.close()  # ... and dropped: the result is on its way
    closing.heartbeat()
    await asyncio.sleep(0.15)  # the time in which a deferred record would have gone out
    await progress.flushed()
    assert sent.of("heartbeat") == []
    progress.close()


# --- the cache of completed commands -------------------------------------------------------

def test_completed_commands_give_back_what_was_published() -> None:
    cache = CompletedCommands(max_entries=10, max_bytes=1000)
    cache.put("c1", b"agent-1", b"result-1")
    assert cache.get("c1") == (b"agent-1", b"result-1")
    assert cache.get("c2") is None


def test_completed_commands_forget_the_least_recently_used_first() -> None:
    cache = CompletedCommands(max_entries=2, max_bytes=1000)
    cache.put("c1", b"k", b"1")
    cache.put("c2", b"k", b"2")
    assert cache.get("c1") is not None  # c1 is now the most recently used
    cache.put("c3", b"k", b"3")
    assert cache.get("c2") is None
    assert cache.get("c1") == (b"k", b"1") and cache.get("c3") == (b"k", b"3")
    assert len(cache) == 2


def test_completed_commands_are_bounded_by_bytes_too() -> None:
    cache = CompletedCommands(max_entries=100, max_bytes=10)
    cache.put("c1", b"k", b"1234")
    cache.put("c2", b"k", b"1234")
    cache.put("c3", b"k", b"1234")  # 3 x (1 + 4) bytes > 10: c1 goes
    assert cache.get("c1") is None
    assert cache.get("c2") is not None and cache.get("c3") is not None
    cache.put("huge", b"k", b"x" * 50)  # larger than the whole cache: not kept, nothing else lost
    assert cache.get("huge") is None
    assert len(cache) == 2
    assert cache.size_bytes <= 10


def test_completed_commands_of_size_zero_keep_nothing() -> None:
    cache = CompletedCommands(max_entries=0, max_bytes=1000)
    cache.put("c1", b"k", b"v")
    assert cache.get("c1") is None and len(cache) == 0


def test_putting_a_command_again_replaces_it_without_double_counting() -> None:
    cache = CompletedCommands(max_entries=10, max_bytes=100)
    cache.put("c1", b"k", b"first")
    cache.put("c1", b"k", b"second")
    assert cache.get("c1") == (b"k", b"second")
    assert (len(cache), cache.size_bytes) == (1, len(b"k") + len(b"second"))
