"""LLM agents: model calls and tools as durable steps, sessions, approvals, streaming.

    from agentstream.agents.llm import LLMAgent, Model, tool

    @tool
    def lookup_booking(confirmation: str) -> dict:
        \"\"\"Look up a booking.

        Args:
            confirmation: The booking's confirmation number.
        \"\"\"

    airline = LLMAgent("Airline", model=Model(name="gpt-4o-mini"),
                       instructions="You help airline customers.", tools=[lookup_booking])

Each `LLMAgent` is an agent type: schedule one per conversation and send it `message`
events; its model calls run on workers (step `agentstream.llm.call`), streaming to
`agent-stream`.
"""

from ._agent import LLMAgent
from ._calls import ModelResponse, Usage
from ._history import HistoryPolicy
from ._memory import Memory
from ._model import Model, Prices
from ._session import ApprovalError
from ._stream_text import AnswerText, DroppedText, StepText, StreamedText
from ._tools import Tool, ToolArgumentsError, agent_tool, tool
from ._types import ApprovalRequest, Budget, Decision, RunResult, UserMessage

__all__ = [
    "AnswerText",
    "ApprovalError",
    "ApprovalRequest",
    "Budget",
    "Decision",
    "DroppedText",
    "HistoryPolicy",
    "LLMAgent",
    "Memory",
    "Model",
    "ModelResponse",
    "Prices",
    "RunResult",
    "StepText",
    "StreamedText",
    "Tool",
    "ToolArgumentsError",
    "Usage",
    "UserMessage",
    "agent_tool",
    "tool",
]
