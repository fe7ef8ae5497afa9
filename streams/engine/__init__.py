"""The durable agent engine: pure Python (no Kafka or Faust), testable turn by turn."""

from .base import Engine, Input, Rejection, StepOutcome, TurnFacts, TurnOutcome
from .durable import TERMINAL, DurableEngine, EngineConfig
from .record import AgentRecord, Delivery, ReceivedEvent

__all__ = [
    "TERMINAL",
    "AgentRecord",
    "Delivery",
    "DurableEngine",
    "Engine",
    "EngineConfig",
    "Input",
    "ReceivedEvent",
    "Rejection",
    "StepOutcome",
    "TurnFacts",
    "TurnOutcome",
]
