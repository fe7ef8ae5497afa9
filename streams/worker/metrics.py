"""The worker's Prometheus metrics, in one bundle built on a registry passed in."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True)
class WorkerMetrics:
    steps: Counter
    step_seconds: Histogram
    in_flight: Gauge
    dead_letters: Counter
    heartbeats: Counter
    duplicate_commands: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> "WorkerMetrics":
        return cls(
            steps=Counter(
                "agentstream_worker_steps",
                "Step attempts finished by this worker, by function and outcome: completed, failed "
                "(not retryable), retryable_failure, timed_out (start_to_close or heartbeat timeout), "
                "expired (schedule_to_start passed before the worker picked it up).",
                ["function", "outcome"],
                registry=registry,
            ),
            step_seconds=Histogram(
                "agentstream_worker_step_duration_seconds",
                "Wall time of one step attempt in the worker.",
                ["function"],
                registry=registry,
            ),
            in_flight=Gauge(
                "agentstream_worker_steps_in_flight", "Step attempts running right now.", registry=registry
            ),
            dead_letters=Counter(
                "agentstream_worker_dead_letters",
                "Step commands the worker could not decode, sent to the dead-letter topic.",
                ["reason"],
                registry=registry,
            ),
            heartbeats=Counter(
                "agentstream_worker_heartbeats",
                "heartbeat() calls from running step functions, by function; "
                "a step with a heartbeat_timeout that stops calling it times out.",
                ["function"],
                registry=registry,
            ),
            duplicate_commands=Counter(
                "agentstream_worker_duplicate_commands",
                "Step commands this worker got again and did not run again, by action: republished "
                "(it had completed them: the result it published is sent once more), joined (still "
                "running: the copy completes with that attempt). Typical after a processor restart.",
                ["action"],
                registry=registry,
            ),
        )
