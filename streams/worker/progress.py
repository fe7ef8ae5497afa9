"""Progress records of a running attempt: `started`, and heartbeats forwarded throttled.

The processor enforces start_to_close, schedule_to_start and heartbeat timeouts with
durable timers (DESIGN.md guarantee 3), so they hold even when the worker dies. For
that it needs to know when an attempt really started and when its function last
heartbeated; these records tell it, on `step-results`.

They are sent fire and forget: the step never waits for the broker because of them.
The only wait is before the attempt's result, which is handed to the producer after
the progress records sent so far (`flushed`), so on the partition `started` comes
before the result. A lost progress record is not sent again: the result still comes,
and a lost heartbeat is followed by the next one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from agentstream.topics import StepCommand, StepProgress, derived_message_id

log = logging.getLogger("agentstream.worker")

SendProgress = Callable[[StepProgress], Awaitable["asyncio.Future[Any]"]]
"""Hands a record to the producer; returns once it is queued, with the broker's acknowledgement to come."""

# Sends still waiting for their acknowledgement: referenced until done, so they are not collected.
_background: set[asyncio.Task[None]] = set()


def needs_started(command: StepCommand) -> bool:
    """Whether the processor times this attempt from its start (so needs the `started` record)."""
    return any(
        limit is not None
        for limit in (command.start_to_close_timeout_s, command.schedule_to_start_timeout_s,
                      command.heartbeat_timeout_s)
    )


class HeartbeatThrottle:
    """When to forward a heartbeat: at most once per `interval`, and the latest one never lost.

    A beat within `interval` of the previous record is not dropped but deferred to the
    end of the interval (later beats fold into it). So the processor hears of the
    latest beat at most `interval` late, and its heartbeat deadline, counted from a
    record, is never earlier than the worker's own, counted from the beat itself.
    Times are plain numbers (monotonic seconds), so the rule is tested without a clock.
    """

    def __init__(self, interval: float, now: float) -> None:
        self.interval = interval
        self._last = now  # the attempt's start counts as the first sign of life
        self._deferred = False

    def beat(self, now: float) -> float | None:
        """Seconds until this beat is to be forwarded (0: now), or None if a deferred record will carry it."""
        if self._deferred:
            return None
        wait = self._last + self.interval - now
        if wait <= 0:
            self._last = now
            return 0.0
        self._deferred = True
        return wait

    def deferred_sent(self, now: float) -> None:
        """The deferred record went out at `now`."""
        self._deferred = False
        self._last = now


class AttemptProgress:
    """The progress records of one attempt; created when it starts, closed when its result goes out.

    `heartbeat` may be called from the step's worker thread (sync functions): it only
    hands the beat over to the event loop. Everything else runs on the event loop.
    """

    def __init__(self, command: StepCommand, send: SendProgress) -> None:
        self._command = command
        self._send = send
        self._loop = asyncio.get_running_loop()
        timeout = command.heartbeat_timeout_s
        self._throttle = None if timeout is None else HeartbeatThrottle(timeout / 3, time.monotonic())
        self._heartbeats = 0
        self._deferred: asyncio.TimerHandle | None = None
        self._queued: list[asyncio.Future[None]] = []  # one per record: set once it is handed to the producer
        self._closed = False

    def started(self) -> None:
        """The function is being called: send `started`."""
        self._emit("started", "started")

    def heartbeat(self) -> None:
        """The function heartbeated (from any thread); forwarded subject to the throttle."""
        if self._throttle is None or self._closed:
            return
        try:
            self._loop.call_soon_threadsafe(self._beat)
        except RuntimeError:
            pass  # the loop is closed: an abandoned thread beating after the worker stopped

    async def flushed(self) -> None:
        """Wait until every record sent so far is queued in the producer (not acknowledged)."""
        if self._queued:
            await asyncio.gather(*self._queued)

    def close(self) -> None:
        """The result is on its way: a deferred heartbeat and later beats are dropped."""
        self._closed = True
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None

    def _beat(self) -> None:
        if self._throttle is None or self._closed:
            return
        wait = self._throttle.beat(time.monotonic())
        if wait == 0.0:
            self._emit_heartbeat()
        elif wait is not None:
            self._deferred = self._loop.call_later(wait, self._deferred_beat)

    def _deferred_beat(self) -> None:
        self._deferred = None
        if self._throttle is None or self._closed:
            return
        self._throttle.deferred_sent(time.monotonic())
        self._emit_heartbeat()

    def _emit_heartbeat(self) -> None:
        self._heartbeats += 1
        self._emit("heartbeat", f"heartbeat:{self._heartbeats}")

    def _emit(self, event: Literal["started", "heartbeat"], purpose: str) -> None:
        command = self._command
        record = StepProgress(
            message_id=derived_message_id(command.message_id, purpose),
            agent_id=command.agent_id,
            run_id=command.run_id,
            step_id=command.step_id,
            attempt=command.attempt,
            function=command.function,
            event=event,
            command_id=command.message_id,
        )
        queued: asyncio.Future[None] = self._loop.create_future()
        self._queued = [*(f for f in self._queued if not f.done()), queued]
        task = self._loop.create_task(self._deliver(record, queued))
        _background.add(task)
        task.add_done_callback(_background.discard)
        task.add_done_callback(lambda _: _resolve(queued))  # also if cancelled before it ran

    async def _deliver(self, record: StepProgress, queued: asyncio.Future[None]) -> None:
        try:
            delivery = await self._send(record)
        except Exception as exc:  # noqa: BLE001 - best effort: the step goes on regardless
            log.warning("could not send a progress record", extra={"step_id": record.step_id,
                                                                   "event": record.event, "error": repr(exc)})
            return
        finally:
            _resolve(queued)
        try:
            await delivery
        except Exception as exc:  # noqa: BLE001
            log.warning("a progress record was not acknowledged", extra={"step_id": record.step_id,
                                                                         "event": record.event, "error": repr(exc)})


def _resolve(queued: asyncio.Future[None]) -> None:
    if not queued.done():
        queued.set_result(None)
