"""`RetryPolicy`: how often and how far apart a failed step is tried again."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field


class RetryPolicy(BaseModel):
    """Retry a failed step attempt with exponential backoff.

    `max_attempts` counts the first attempt too; None (the default) retries until the
    step succeeds, fails with a non-retryable error or reaches its schedule_to_close
    timeout. `non_retryable_errors` lists error type names (the exception's class name,
    e.g. "ValueError") that end the step at once.
    """

    model_config = ConfigDict(frozen=True)

    max_attempts: int | None = Field(default=None, ge=1)
    initial_interval: timedelta = timedelta(seconds=1)
    max_interval: timedelta | None = None  # default: 100 x initial_interval
    backoff_coefficient: float = Field(default=2.0, ge=1.0)
    non_retryable_errors: tuple[str, ...] = ()

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before `attempt` (2 for the first retry)."""
        initial = self.initial_interval.total_seconds()
        ceiling = self.max_interval.total_seconds() if self.max_interval is not None else 100 * initial
        return float(min(initial * self.backoff_coefficient ** max(attempt - 2, 0), ceiling))

    def allows(self, next_attempt: int, error_type: str) -> bool:
        if error_type in self.non_retryable_errors:
            return False
        return self.max_attempts is None or next_attempt <= self.max_attempts
