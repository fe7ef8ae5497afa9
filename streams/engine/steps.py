"""Steps in flight: the command for each attempt, retries with backoff, timeouts.

A step's attempts are engine bookkeeping; the agent's code only sees the final
outcome, which is journaled. Retry backoff and schedule_to_close are durable timers
in the agent's record (`retry:<seq>`, `s2c:<seq>`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from agentstream.agents._context import StepOptions
from agentstream.agents._policy import RetryPolicy
from agentstream.topics import StepCommand, StepResult, derived_message_id

from .base import StepOutcome
from .record import AgentRecord, Outcome, StepState

DEFAULT_POLICY = RetryPolicy()


def new_step(seq: int, function: str, value: object, options: StepOptions, task_queue: str, now: datetime) -> StepState:
    return StepState(
        seq=seq,
        function=function,
        input=value,  # type: ignore[arg-type]
        task_queue=options.task_queue or task_queue,
        options=options.model_dump(mode="json", exclude_none=True),
        scheduled_at=now,
    )


def command_for(record: AgentRecord, step: StepState) -> StepCommand:
    options = StepOptions.model_validate(step.options)
    return StepCommand(
        # The same attempt always gets the same ID, however often it is sent.
        message_id=derived_message_id(record.run_id, f"step:{step.seq}:{step.attempt}"),
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
    )


def deadline_timer(step: StepState) -> tuple[str, datetime] | None:
    seconds = StepOptions.model_validate(step.options).schedule_to_close_timeout
    if seconds is None:
        return None
    return f"s2c:{step.seq}", step.scheduled_at + timedelta(seconds=seconds)


def forget_step(record: AgentRecord, seq: int) -> None:
    record.steps.pop(str(seq), None)
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
    error = result.error
    assert error is not None
    options = StepOptions.model_validate(step.options)
    policy = options.retry_policy or DEFAULT_POLICY
    next_attempt = step.attempt + 1
    delay = error.retry_after_s if error.retry_after_s is not None else policy.delay_before(next_attempt)
    deadline = deadline_timer(step)
    in_time = deadline is None or now + timedelta(seconds=delay) < deadline[1]
    if error.retryable and policy.allows(next_attempt, error.type) and in_time:
        retried = step.model_copy(update={"attempt": next_attempt, "last_error": f"{error.type}: {error.message}"})
        record.steps[str(step.seq)] = retried
        record.timers[f"retry:{step.seq}"] = now + timedelta(seconds=delay)
        return None, StepOutcome(step.function, "retried", _latency(step, now))
    label = "timed_out" if error.type.endswith("Timeout") else "failed"
    return Outcome(ok=False, error_type=error.type, message=error.message, attempts=step.attempt), StepOutcome(
        step.function, label, _latency(step, now)
    )


def timed_out(step: StepState, now: datetime) -> tuple[Outcome, StepOutcome]:
    seconds = StepOptions.model_validate(step.options).schedule_to_close_timeout
    message = f"{step.function} did not complete within its schedule_to_close_timeout of {seconds}s"
    if step.last_error:
        message += f" (last error: {step.last_error})"
    return Outcome(ok=False, error_type="ScheduleToCloseTimeout", message=message, attempts=step.attempt), StepOutcome(
        step.function, "timed_out", _latency(step, now)
    )
