"""Workers run step functions outside agents and report results on `step-results`.

`StepWorker` and `WorkerMetrics` are imported on first use: the processor runs local
steps with `execute` and should not pay for the worker's runner (and the `openai` client
its LLM steps bring) at every start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .execute import execute

if TYPE_CHECKING:
    from .metrics import WorkerMetrics
    from .runner import StepWorker

__all__ = ["StepWorker", "WorkerMetrics", "execute"]


def __getattr__(name: str) -> Any:
    if name == "StepWorker":
        from .runner import StepWorker

        return StepWorker
    if name == "WorkerMetrics":
        from .metrics import WorkerMetrics

        return WorkerMetrics
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
