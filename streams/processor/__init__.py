"""The stream processor: Faust app, input handling, HTTP views and metrics."""

from .app import Processor, create_processor
from .handler import InputHandler
from .metrics import ProcessorMetrics

__all__ = ["InputHandler", "Processor", "ProcessorMetrics", "create_processor"]
