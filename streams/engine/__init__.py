"""The durable agent engine: pure Python (no Kafka or Faust), testable turn by turn."""

from .base import Engine, Input, Origin, Rejection, StepOutcome, TurnFacts, TurnOutcome, dead_letter
from .dedup import DedupPolicy, Delivery
from .durable import TERMINAL, DurableEngine, EngineConfig
from .local_steps import LocalSteps
from .record import AgentRecord, OutboxItem, ReceivedEvent

__all__ = [
    "TERMINAL",
    "AgentRecord",
    "DedupPolicy",
    "Delivery",
    "DurableEngine",
    "Engine",
    "EngineConfig",
    "Input",
    "LocalSteps",
    "Origin",
    "OutboxItem",
    "ReceivedEvent",
    "Rejection",
    "StepOutcome",
    "TurnFacts",
    "TurnOutcome",
    "dead_letter",
]
