"""The worker's Prometheus metrics, in one bundle built on a registry passed in.

The `llm_*` metrics describe model calls (the step `agentstream.llm.call`); the worker
observes them from each finished attempt (llm_metrics.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agentstream.topics._envelopes import DECODE_REASON_CODES

# The `outcome` values of agentstream_worker_steps_total (execute.outcome_label gives them).
STEP_OUTCOMES = ("completed", "failed", "retryable_failure", "timed_out", "expired")

# Model calls take seconds to minutes, longer than the default buckets (up to 10 s) reach.
LLM_CALL_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)
LLM_FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)


@dataclass(frozen=True)
class WorkerMetrics:
    steps: Counter
    step_seconds: Histogram
    in_flight: Gauge
    dead_letters: Counter
    heartbeats: Counter
    duplicate_commands: Counter
    llm_calls: Counter
    llm_tokens: Counter
    llm_cost: Counter
    llm_call_seconds: Histogram
    llm_first_token_seconds: Histogram

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
            llm_calls=Counter(
                "agentstream_llm_calls",
                "Attempts of model calls (step agentstream.llm.call) finished by this worker, by the model "
                "the agent configured and outcome: ok, retryable_error (429, 5xx, timeout, cut stream: "
                "retried durably), error (any other 4xx or failure: not retried).",
                ["model", "outcome"],
                registry=registry,
            ),
            llm_tokens=Counter(
                "agentstream_llm_tokens",
                "Tokens of successful model calls as the API reported them, by model and kind: prompt, "
                "completion, cached (prompt tokens served from the provider's cache; part of prompt).",
                ["model", "kind"],
                registry=registry,
            ),
            llm_cost=Counter(
                "agentstream_llm_cost_usd",
                "Cost in US dollars of successful model calls, from the model's price table "
                "(Model.prices; 0 without one), by model.",
                ["model"],
                registry=registry,
            ),
            llm_call_seconds=Histogram(
                "agentstream_llm_call_duration_seconds",
                "Wall time of a successful model call, from the request to the whole answer "
                "(re-asks for an invalid structured output included), by model.",
                ["model"],
                buckets=LLM_CALL_BUCKETS,
                registry=registry,
            ),
            llm_first_token_seconds=Histogram(
                "agentstream_llm_time_to_first_token_seconds",
                "Time from the request to the first streamed token of a successful streamed model call, by model.",
                ["model"],
                buckets=LLM_FIRST_TOKEN_BUCKETS,
                registry=registry,
            ),
        )

    def start_at_zero(self, functions: Iterable[str]) -> None:
        """Give each series that the dashboard and the alerts read a 0 from the start.

        Prometheus knows no series of a label value until it is first observed, so a
        failure ratio or a dead-letter rate would be "no data" until the first failure
        instead of 0. The functions are those this worker can run.
        """
        for code in DECODE_REASON_CODES:
            self.dead_letters.labels(code)
        for action in ("republished", "joined"):
            self.duplicate_commands.labels(action)
        for function in functions:
            self.heartbeats.labels(function)
            for outcome in STEP_OUTCOMES:
                self.steps.labels(function, outcome)
