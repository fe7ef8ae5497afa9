"""Pure-Python agent engines: no Kafka or Faust import, testable turn by turn."""

from .base import Engine, Input, Rejection, TurnOutcome
from .minimal import MinimalEngine
from .record import AgentRecord, Delivery, ReceivedEvent

__all__ = ["AgentRecord", "Delivery", "Engine", "Input", "MinimalEngine", "ReceivedEvent", "Rejection", "TurnOutcome"]
