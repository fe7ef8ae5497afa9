"""Model-call metrics, observed by the worker from each finished attempt of `agentstream.llm.call`.

The step's result already says everything: a successful attempt's output is the
`ModelResponse` (usage, cost, latency, time to first token), a failed one's error says
whether it will be retried. Observing it here, outside the step function, keeps the
model call free of metrics and counts every attempt exactly once, whatever failed.

The `model` label is the name the agent configured (`Model.name` in the step's
input), for successes and failures alike: a provider often reports a more specific
name (e.g. a dated version), which would split a model's calls across label values and
break ratios of failures to calls.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from agentstream.agents.llm._calls import CALL_FUNCTION, ModelResponse
from agentstream.topics import StepCommand, StepResult

from .metrics import WorkerMetrics

log = logging.getLogger("agentstream.worker")

UNKNOWN_MODEL = "unknown"


def observe_llm_call(metrics: WorkerMetrics, command: StepCommand, result: StepResult) -> None:
    """Count one finished attempt of a model call (any other step is ignored); never raises for bad data."""
    if command.function != CALL_FUNCTION:
        return
    model = _requested_model(command)
    if not result.ok:
        retryable = result.error is not None and result.error.retryable
        metrics.llm_calls.labels(model or UNKNOWN_MODEL, "retryable_error" if retryable else "error").inc()
        return
    try:
        response = ModelResponse.model_validate(result.output)
    except ValidationError as exc:
        served = result.output.get("model") if isinstance(result.output, dict) else None
        label = model or (served if isinstance(served, str) and served else UNKNOWN_MODEL)
        metrics.llm_calls.labels(label, "ok").inc()
        log.warning("a model call's output is not a ModelResponse; only the call is counted",
                    extra={"step_id": command.step_id, "error": str(exc)[:500]})
        return
    model = model or response.model or UNKNOWN_MODEL
    usage = response.usage
    metrics.llm_calls.labels(model, "ok").inc()
    # max(0, ...): a counter refuses to go down, and a server's odd usage must not fail the worker.
    metrics.llm_tokens.labels(model, "prompt").inc(max(0, usage.prompt_tokens))
    metrics.llm_tokens.labels(model, "completion").inc(max(0, usage.completion_tokens))
    metrics.llm_tokens.labels(model, "cached").inc(max(0, usage.cached_tokens))
    metrics.llm_cost.labels(model).inc(max(0.0, usage.cost))
    metrics.llm_call_seconds.labels(model).observe(response.latency_s)
    if response.first_token_s is not None:
        metrics.llm_first_token_seconds.labels(model).observe(response.first_token_s)


def _requested_model(command: StepCommand) -> str | None:
    """`Model.name` from the step's input (a `ModelCall` as JSON), if it is there."""
    call = command.input
    model = call.get("model") if isinstance(call, dict) else None
    name = model.get("name") if isinstance(model, dict) else None
    return name if isinstance(name, str) and name else None
