"""heartbeat(), heartbeat_timeout and schedule_to_start in `execute` (no broker).

The sleeps inside the step functions below are the work under test (a step that runs
for a while); the tests themselves synchronise on events.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from agentstream.agents import function, heartbeat
from agentstream.agents._heartbeat import _beat
from agentstream.agents._registry import function_definitions
from agentstream.streams.worker.execute import execute, outcome_label
from agentstream.topics import StepCommand

P = "test_worker_heartbeat."
CALLS: list[str] = []
CANCELLED = asyncio.Event()  # set by `silent` when the worker cancels it
RELEASE_SYNC = threading.Event()  # lets the blocked sync function return
SYNC_ENDED = threading.Event()


@function(name=P + "beats")
async def beats(count: int) -> int:
    for _ in range(count):
        heartbeat({"done": _})
        await asyncio.sleep(0.05)
    return count


@function(name=P + "beats_then_stops")
async def beats_then_stops(count: int) -> int:
    for _ in range(count):
        heartbeat()
        await asyncio.sleep(0.05)
    await asyncio.Event().wait()  # never set: only a timeout ends it
    return count


@function(name=P + "silent")
async def silent(value: int) -> int:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        CANCELLED.set()
        raise
    return value


@function(name=P + "sync_beats")
def sync_beats(count: int) -> str:
    for _ in range(count):
        heartbeat()
        time.sleep(0.05)
    return threading.current_thread().name


@function(name=P + "sync_silent")
def sync_silent(value: int) -> int:
    RELEASE_SYNC.wait(30)
    SYNC_ENDED.set()
    return value


@function(name=P + "recorded")
async def recorded(value: int) -> int:
    CALLS.append(f"recorded {value}")
    return value


@function(name=P + "sees_beat")
async def sees_beat(value: int) -> bool:
    return _beat.get() is not None


@pytest.fixture
def functions() -> dict[str, Any]:
    return dict(function_definitions())


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(2, thread_name_prefix="test-beat")
    yield pool
    RELEASE_SYNC.set()  # never leave a blocked thread behind
    pool.shutdown(wait=True)


def command(fn: str, input: Any = None, **kwargs: Any) -> StepCommand:
    return StepCommand(
        function=P + fn, input=input, agent_id="agent-1", run_id="run-1", step_id="step-1", task_queue="restack",
        **kwargs,
    )


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.count += 1


# --- heartbeat keeps a step alive -------------------------------------------------------


async def test_heartbeats_keep_an_async_step_alive_past_its_heartbeat_timeout(functions: dict[str, Any]) -> None:
    counter = Counter()
    result = await execute(command("beats", 20, heartbeat_timeout_s=0.3), functions, on_heartbeat=counter)
    assert result.ok and result.output == 20, result.error
    assert result.duration_s > 0.3 * 2  # ran well past one heartbeat timeout
    assert counter.count == 20
    assert outcome_label(result) == "completed"


async def test_heartbeats_from_a_sync_function_reach_the_worker(
    functions: dict[str, Any], executor: ThreadPoolExecutor
) -> None:
    counter = Counter()
    result = await execute(command("sync_beats", 20, heartbeat_timeout_s=0.3), functions, executor, on_heartbeat=counter)
    assert result.ok, result.error
    assert str(result.output).startswith("test-beat")  # it ran in the executor's thread
    assert result.duration_s > 0.3 * 2
    assert counter.count == 20


# --- a missing heartbeat fails the attempt ----------------------------------------------


async def test_a_silent_async_step_fails_with_heartbeat_timeout_and_is_cancelled(functions: dict[str, Any]) -> None:
    CANCELLED.clear()
    result = await execute(command("silent", 1, heartbeat_timeout_s=0.2), functions)
    assert result.ok is False and result.output is None
    assert result.error is not None
    assert (result.error.type, result.error.retryable) == ("HeartbeatTimeout", True)
    assert "0.2" in result.error.message and P + "silent" in result.error.message
    assert 0.2 <= result.duration_s < 5
    assert outcome_label(result) == "timed_out"
    await asyncio.wait_for(CANCELLED.wait(), timeout=5)  # its task was cancelled, not left running


async def test_heartbeat_timeout_counts_from_the_latest_heartbeat(functions: dict[str, Any]) -> None:
    counter = Counter()
    result = await execute(command("beats_then_stops", 10, heartbeat_timeout_s=0.2), functions, on_heartbeat=counter)
    assert result.error is not None and result.error.type == "HeartbeatTimeout"
    assert counter.count == 10
    # Ten beats 0.05 s apart kept it alive for ~0.5 s, then 0.2 s of silence ended it.
    assert result.duration_s >= 0.45 + 0.2


async def test_a_silent_sync_step_fails_and_its_thread_is_left_to_finish(
    functions: dict[str, Any], executor: ThreadPoolExecutor
) -> None:
    RELEASE_SYNC.clear()
    SYNC_ENDED.clear()
    result = await execute(command("sync_silent", 1, heartbeat_timeout_s=0.2), functions, executor)
    assert result.error is not None
    assert (result.error.type, result.error.retryable) == ("HeartbeatTimeout", True)
    assert outcome_label(result) == "timed_out"
    # Python cannot stop a thread: it is still blocked in the function, and ends when released.
    assert not SYNC_ENDED.is_set()
    RELEASE_SYNC.set()
    assert await asyncio.to_thread(SYNC_ENDED.wait, 10)


async def test_start_to_close_still_applies_to_a_step_that_keeps_beating(functions: dict[str, Any]) -> None:
    result = await execute(command("beats", 1000, heartbeat_timeout_s=0.2, start_to_close_timeout_s=0.3), functions)
    assert result.error is not None and result.error.type == "StartToCloseTimeout"
    assert outcome_label(result) == "timed_out"


async def test_concurrent_attempts_have_their_own_heartbeats(functions: dict[str, Any]) -> None:
    CANCELLED.clear()
    beating, quiet = Counter(), Counter()
    ok, timed_out = await asyncio.gather(
        execute(command("beats", 12, heartbeat_timeout_s=0.25), functions, on_heartbeat=beating),
        execute(command("silent", 1, heartbeat_timeout_s=0.25), functions, on_heartbeat=quiet),
    )
    assert ok.ok, ok.error
    assert timed_out.error is not None and timed_out.error.type == "HeartbeatTimeout"
    assert (beating.count, quiet.count) == (12, 0)


# --- heartbeat() outside a worker -------------------------------------------------------


async def test_heartbeat_outside_a_worker_is_a_no_op(functions: dict[str, Any]) -> None:
    assert _beat.get() is None
    assert heartbeat() is None
    assert heartbeat({"progress": 0.5}) is None
    assert await beats(3) == 3  # a step function called directly, e.g. in a unit test
    assert await asyncio.to_thread(sync_beats, 1)
    # The worker's callback is visible inside an attempt and does not leak out of it.
    result = await execute(command("sees_beat", 1), functions)
    assert result.output is True
    assert _beat.get() is None


# --- schedule_to_start ------------------------------------------------------------------


async def test_a_command_picked_up_after_schedule_to_start_expires_without_running(functions: dict[str, Any]) -> None:
    CALLS.clear()
    sent = datetime.now(timezone.utc) - timedelta(seconds=30)
    result = await execute(command("recorded", 1, sent_at=sent, schedule_to_start_timeout_s=5), functions)
    assert result.ok is False
    assert result.error is not None
    assert (result.error.type, result.error.retryable) == ("ScheduleToStartTimeout", False)
    assert "5" in result.error.message and P + "recorded" in result.error.message
    assert outcome_label(result) == "expired"
    assert CALLS == []  # the function never ran


async def test_a_command_picked_up_in_time_runs(functions: dict[str, Any]) -> None:
    CALLS.clear()
    sent = datetime.now(timezone.utc) - timedelta(seconds=1)
    result = await execute(command("recorded", 2, sent_at=sent, schedule_to_start_timeout_s=60), functions)
    assert result.ok and result.output == 2
    assert CALLS == ["recorded 2"]


async def test_an_old_command_without_schedule_to_start_runs(functions: dict[str, Any]) -> None:
    CALLS.clear()
    sent = datetime.now(timezone.utc) - timedelta(days=1)
    result = await execute(command("recorded", 3, sent_at=sent), functions)
    assert result.ok
    assert CALLS == ["recorded 3"]


async def test_schedule_to_start_from_the_wire_with_a_naive_timestamp_is_read_as_utc(
    functions: dict[str, Any],
) -> None:
    CALLS.clear()
    naive_old = (datetime.now(timezone.utc) - timedelta(seconds=30)).replace(tzinfo=None)
    wire = command("recorded", 4, schedule_to_start_timeout_s=5).model_dump(mode="json")
    wire["sent_at"] = naive_old.isoformat()
    cmd = StepCommand.model_validate(wire)
    assert cmd.sent_at.tzinfo is None
    result = await execute(cmd, functions)
    assert result.error is not None and result.error.type == "ScheduleToStartTimeout"
    assert CALLS == []
