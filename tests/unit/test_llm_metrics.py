"""LLM metrics on the worker: what one finished attempt of `agentstream.llm.call` adds.

The attempts are real: the step runs through the worker's `execute` with the real
`openai` client against `ScriptedLLM`, so the `StepResult` observed is exactly what the
worker would publish (its output the JSON of a `ModelResponse`, or its error).
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agentstream.agents._registry import function_definitions
from agentstream.agents.llm import Model, Prices
from agentstream.agents.llm._calls import CALL_FUNCTION, ModelCall
from agentstream.agents.testing import Reply, ScriptedLLM
from agentstream.streams.worker.execute import execute
from agentstream.streams.worker.llm_metrics import observe_llm_call
from agentstream.streams.worker.metrics import WorkerMetrics
from agentstream.topics import StepCommand, StepResult

MODEL_NAME = "gpt-test"
PRICES = Prices(input=2.0, output=8.0, cached_input=1.0)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> WorkerMetrics:
    return WorkerMetrics.create(registry)


def command(llm: ScriptedLLM, *, stream: bool = True) -> StepCommand:
    model = Model(name=MODEL_NAME, base_url=llm.base_url, api_key_env="AGENTSTREAM_TEST_NO_SUCH_KEY",
                  stream=stream, prices=PRICES)
    call = ModelCall(model=model, messages=[{"role": "user", "content": "hi"}])
    return StepCommand(agent_id="a1", run_id="r1", step_id="s1", function=CALL_FUNCTION,
                       input=call.model_dump(mode="json"), task_queue="q")


async def attempt(reply: Reply, *, stream: bool = True) -> tuple[StepCommand, StepResult]:
    """One real attempt of the model-call step, as the worker runs it (streaming to a list)."""
    emitted: list[tuple[str, Any]] = []

    async def emit(type: str, data: Any) -> None:
        emitted.append((type, data))

    async with ScriptedLLM([reply], model="scripted-served-model") as llm:
        step = command(llm, stream=stream)
        result = await execute(step, function_definitions(), emit=emit)
    return step, result


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    sample = registry.get_sample_value(name, labels)
    return 0.0 if sample is None else sample


async def test_a_streamed_call_counts_its_tokens_cost_latency_and_time_to_first_token(
    registry: CollectorRegistry, metrics: WorkerMetrics
) -> None:
    step, result = await attempt(Reply.text("Hello there, traveller").with_usage(1000, 200, cached=400))
    assert result.ok, result.error

    observe_llm_call(metrics, step, result)

    model = {"model": MODEL_NAME}
    assert value(registry, "agentstream_llm_calls_total", **model, outcome="ok") == 1
    assert value(registry, "agentstream_llm_tokens_total", **model, kind="prompt") == 1000
    assert value(registry, "agentstream_llm_tokens_total", **model, kind="completion") == 200
    assert value(registry, "agentstream_llm_tokens_total", **model, kind="cached") == 400
    expected_cost = (600 * 2.0 + 400 * 1.0 + 200 * 8.0) / 1e6
    assert value(registry, "agentstream_llm_cost_usd_total", **model) == pytest.approx(expected_cost)
    assert value(registry, "agentstream_llm_call_duration_seconds_count", **model) == 1
    latency = result.output["latency_s"]  # type: ignore[index, call-overload]
    assert value(registry, "agentstream_llm_call_duration_seconds_sum", **model) == pytest.approx(latency)
    assert value(registry, "agentstream_llm_time_to_first_token_seconds_count", **model) == 1
    first_token = result.output["first_token_s"]  # type: ignore[index, call-overload]
    assert 0 < first_token <= latency
    assert value(registry, "agentstream_llm_time_to_first_token_seconds_sum", **model) == pytest.approx(first_token)


async def test_a_call_that_did_not_stream_has_no_time_to_first_token(
    registry: CollectorRegistry, metrics: WorkerMetrics
) -> None:
    step, result = await attempt(Reply.text("Hi").with_usage(10, 2), stream=False)
    assert result.ok, result.error

    observe_llm_call(metrics, step, result)

    assert value(registry, "agentstream_llm_calls_total", model=MODEL_NAME, outcome="ok") == 1
    assert value(registry, "agentstream_llm_call_duration_seconds_count", model=MODEL_NAME) == 1
    assert value(registry, "agentstream_llm_time_to_first_token_seconds_count", model=MODEL_NAME) == 0


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [(Reply.rate_limited(retry_after=1), "retryable_error"), (Reply.server_error(), "retryable_error"),
     (Reply.bad_request("no such parameter"), "error")],
    ids=["429", "500", "400"],
)
async def test_a_failed_attempt_counts_under_the_requested_model_and_its_outcome(
    registry: CollectorRegistry, metrics: WorkerMetrics, reply: Reply, outcome: str
) -> None:
    step, result = await attempt(reply)
    assert not result.ok

    observe_llm_call(metrics, step, result)

    assert value(registry, "agentstream_llm_calls_total", model=MODEL_NAME, outcome=outcome) == 1
    assert value(registry, "agentstream_llm_calls_total", model=MODEL_NAME, outcome="ok") == 0
    assert value(registry, "agentstream_llm_tokens_total", model=MODEL_NAME, kind="prompt") == 0
    assert value(registry, "agentstream_llm_call_duration_seconds_count", model=MODEL_NAME) == 0


async def test_success_and_failure_share_the_model_label_the_agent_configured(
    registry: CollectorRegistry, metrics: WorkerMetrics
) -> None:
    """The server reports another model name (e.g. a dated version): the label stays the configured one,
    so the failure ratio by model divides matching series."""
    for reply in (Reply.text("ok").with_usage(5, 1), Reply.server_error()):
        step, result = await attempt(reply)
        observe_llm_call(metrics, step, result)

    models = {s.labels["model"] for f in registry.collect() if f.name == "agentstream_llm_calls" for s in f.samples}
    assert models == {MODEL_NAME}


def test_other_steps_are_not_model_calls(registry: CollectorRegistry, metrics: WorkerMetrics) -> None:
    other = StepCommand(agent_id="a1", run_id="r1", step_id="s1", function="tool.refund",
                        input={"model": {"name": MODEL_NAME}}, task_queue="q")
    result = StepResult(agent_id="a1", run_id="r1", step_id="s1", attempt=1, function="tool.refund", ok=True,
                        output={"model": MODEL_NAME, "usage": {"prompt_tokens": 5}, "latency_s": 1.0})

    observe_llm_call(metrics, other, result)

    assert not [s for f in registry.collect() if f.name.startswith("agentstream_llm") for s in f.samples
                if s.name.endswith("_total") or s.name.endswith("_count")]


def test_an_output_that_is_not_a_model_response_is_counted_but_never_raises(
    registry: CollectorRegistry, metrics: WorkerMetrics
) -> None:
    step = StepCommand(agent_id="a1", run_id="r1", step_id="s1", function=CALL_FUNCTION,
                       input={"unexpected": True}, task_queue="q")
    result = StepResult(agent_id="a1", run_id="r1", step_id="s1", attempt=1, function=CALL_FUNCTION, ok=True,
                        output={"usage": "not usage"})

    observe_llm_call(metrics, step, result)

    assert value(registry, "agentstream_llm_calls_total", model="unknown", outcome="ok") == 1
    assert value(registry, "agentstream_llm_tokens_total", model="unknown", kind="prompt") == 0
