"""Steps in flight: the command for each attempt, retries with backoff, timeouts.

A step's attempts are engine bookkeeping; the agent's code only sees the final
outcome, which is journaled. Every timeout of DESIGN.md guarantee 3 is a durable timer
in the agent's record, so a step never waits forever on a worker that died, a command
that was lost, or a queue that no worker serves:

- `retry:<seq>`: the backoff before the next attempt;
- `s2c:<seq>`: schedule_to_close, over all attempts;
- `s2s:<seq>`: schedule_to_start of the current attempt (cleared when a worker reports
  it started the attempt; not retried, as in Temporal);
- `stc:<seq>`: start_to_close of the current attempt. Armed when the command is sent,
  allowing one more start_to_close (or the schedule_to_start) for the command to be
  picked up, and re-armed from the start once a worker reports it started. The worker
  enforces it too, more precisely; this timer catches the attempts nobody answers;
- `hb:<seq>`: heartbeat timeout, re-armed by every heartbeat a worker forwards.

Timers carry their due time; a fire for another due time is stale (see dedup.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from agentstream.agents._context import StepOptions
from agentstream.agents._policy import RetryPolicy
from agentstream.topics import StepCommand, StepError, StepProgress, StepResult, derived_message_id

from .base import StepOutcome
from .record import AgentRecord, Outcome, StepState

DEFAULT_POLICY = RetryPolicy()
ATTEMPT_TIMERS = ("s2s", "stc", "hb")  # belong to one attempt
GRACE = timedelta(seconds=1)  # the worker's own timeout usually reports first, with more detail

TIMEOUT_TYPES = {
    "s2s": "ScheduleToStartTimeout",
    "stc": "StartToCloseTimeout",
    "hb": "HeartbeatTimeout",
}


def new_step(seq: int, function: str, value: object, options: StepOptions, task_queue: str, now: datetime) -> StepState:
    return StepState(
        seq=seq,
        function=function,
        input=value,  # type: ignore[arg-type]
        task_queue=options.task_queue or task_queue,
        options=options.model_dump(mode="json", exclude_none=True),
        scheduled_at=now,
    )


def command_id(record: AgentRecord, step: StepState) -> str:
    """The same attempt always gets the same ID, however often it is sent."""
    return derived_message_id(record.run_id, f"step:{step.seq}:{step.attempt}")


def command_for(record: AgentRecord, step: StepState) -> StepCommand:
    options = StepOptions.model_validate(step.options)
    return StepCommand(
        message_id=command_id(record, step),
        agent_id=record.agent_id,
        run_id=record.run_id,
        step_id=str(step.seq),
        function=step.function,
        input=step.input,
        attempt=step.attempt,
        task_queue=step.task_queue,
        start_to_close_timeout_s=options.start_to_close_timeout,
        schedule_to_start_timeout_s=options.schedule_to_start_timeout,
        heartbeat_timeout_s=options.heartbeat_timeout,
        sent_at=step.sent_at or step.scheduled_at,
    )


def send_attempt(record: AgentRecord, step: StepState, now: datetime) -> StepCommand:
    """Record that the current attempt's command goes out now, arm its timers, return it."""
    options = StepOptions.model_validate(step.options)
    step = step.model_copy(update={"sent_at": now, "started_at": None})
    record.steps[str(step.seq)] = step
    _clear_attempt_timers(record, step.seq)
    if options.schedule_to_start_timeout is not None:
        record.timers[f"s2s:{step.seq}"] = now + timedelta(seconds=options.schedule_to_start_timeout)
    if options.start_to_close_timeout is not None:
        pickup = options.schedule_to_start_timeout or options.start_to_close_timeout
        record.timers[f"stc:{step.seq}"] = now + timedelta(seconds=pickup + options.start_to_close_timeout) + GRACE
    return command_for(record, step)


def on_progress(record: AgentRecord, step: StepState, progress: StepProgress, now: datetime) -> None:
    """A worker started the current attempt, or heartbeated: move its timers."""
    options = StepOptions.model_validate(step.options)
    if progress.event == "started":
        record.steps[str(step.seq)] = step.model_copy(update={"started_at": now})
        record.timers.pop(f"s2s:{step.seq}", None)
        if options.start_to_close_timeout is not None:
            record.timers[f"stc:{step.seq}"] = now + timedelta(seconds=options.start_to_close_timeout) + GRACE
    if options.heartbeat_timeout is not None:
        record.timers[f"hb:{step.seq}"] = now + timedelta(seconds=options.heartbeat_timeout) + GRACE


def deadline_timer(step: StepState) -> tuple[str, datetime] | None:
    seconds = StepOptions.model_validate(step.options).schedule_to_close_timeout
    if seconds is None:
        return None
    return f"s2c:{step.seq}", step.scheduled_at + timedelta(seconds=seconds)


def _clear_attempt_timers(record: AgentRecord, seq: int) -> None:
    for prefix in ATTEMPT_TIMERS:
        record.timers.pop(f"{prefix}:{seq}", None)


def forget_step(record: AgentRecord, seq: int) -> None:
    record.steps.pop(str(seq), None)
    _clear_attempt_timers(record, seq)
    for prefix in ("s2c", "retry"):
        record.timers.pop(f"{prefix}:{seq}", None)


def _latency(step: StepState, now: datetime) -> float:
    return max((now - step.scheduled_at).total_seconds(), 0.0)


def on_result(record: AgentRecord, step: StepState, result: StepResult, now: datetime) -> tuple[Outcome | None, StepOutcome]:
    """Decide what a result of the current attempt means.

    Returns the final outcome for the agent's code, or None when the step is retried
    (then `record` already holds the next attempt and its backoff timer).
    """
    if result.ok:
        return Outcome(ok=True, value=result.output, attempts=step.attempt), StepOutcome(
            step.function, "completed", _latency(step, now)
        )
    assert result.error is not None
    return on_failure(record, step, result.error, now)


def on_failure(record: AgentRecord, step: StepState, error: StepError, now: datetime) -> tuple[Outcome | None, StepOutcome]:
    """The current attempt failed (as the worker reported, or an attempt timer fired)."""
    options = StepOptions.model_validate(step.options)
    policy = options.retry_policy or DEFAULT_POLICY
    next_attempt = step.attempt + 1
    delay = error.retry_after_s if error.retry_after_s is not None else policy.delay_before(next_attempt)
    deadline = deadline_timer(step)
    in_time = deadline is None or now + timedelta(seconds=delay) < deadline[1]
    _clear_attempt_timers(record, step.seq)
    if error.retryable and policy.allows(next_attempt, error.type) and in_time:
        retried = step.model_copy(update={
            "attempt": next_attempt, "last_error": f"{error.type}: {error.message}", "started_at": None,
        })
        record.steps[str(step.seq)] = retried
        record.timers[f"retry:{step.seq}"] = now + timedelta(seconds=delay)
        return None, StepOutcome(step.function, "retried", _latency(step, now))
    label = "timed_out" if error.type.endswith("Timeout") else "failed"
    return Outcome(ok=False, error_type=error.type, message=error.message, attempts=step.attempt), StepOutcome(
        step.function, label, _latency(step, now)
    )


def attempt_timed_out(purpose: str, step: StepState) -> StepError:
    """The error an attempt timer stands for; schedule_to_start is not retried."""
    options = StepOptions.model_validate(step.options)
    seconds = {
        "s2s": options.schedule_to_start_timeout,
        "stc": options.start_to_close_timeout,
        "hb": options.heartbeat_timeout,
    }[purpose]
    kind = TIMEOUT_TYPES[purpose]
    what = {
        "s2s": "no worker started it",
        "stc": "no worker finished it",
        "hb": "its worker stopped heartbeating",
    }[purpose]
    return StepError(
        type=kind,
        message=f"{step.function} attempt {step.attempt}: {what} within {seconds}s ({kind})",
        retryable=purpose != "s2s",
    )


def timed_out(step: StepState, now: datetime) -> tuple[Outcome, StepOutcome]:
    seconds = StepOptions.model_validate(step.options).schedule_to_close_timeout
    message = f"{step.function} did not complete within its schedule_to_close_timeout of {seconds}s"
    if step.last_error:
        message += f" (last error: {step.last_error})"
    return Outcome(ok=False, error_type="ScheduleToCloseTimeout", message=message, attempts=step.attempt), StepOutcome(
        step.function, "timed_out", _latency(step, now)
    )
