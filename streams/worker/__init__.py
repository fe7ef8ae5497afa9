"""Workers run step functions outside agents and report results on `step-results`."""

from .execute import execute
from .metrics import WorkerMetrics
from .runner import StepWorker

__all__ = ["StepWorker", "WorkerMetrics", "execute"]
