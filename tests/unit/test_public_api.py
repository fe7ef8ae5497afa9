"""The public names of agentstream.agents (and its llm and testing kits) and agentstream.topics are pinned.

Changing them is an API change: update these lists on purpose, never by accident.
"""

from __future__ import annotations

import importlib

import pytest

AGENTS_ALL = [
    "AgentClient",
    "AgentContextError",
    "AgentDefinitionError",
    "AgentFailedError",
    "AgentInfo",
    "AgentNotFoundError",
    "ApiUnavailableError",
    "BrokerUnavailableError",
    "ChildFailedError",
    "ChildHandle",
    "InputOutcome",
    "InputRejectedError",
    "NondeterminismError",
    "RetryPolicy",
    "RetryableError",
    "StepContext",
    "StepFailedError",
    "TerminalError",
    "TimeoutError",
    "UnknownAgentTypeError",
    "agent",
    "agent_info",
    "child_execute",
    "child_start",
    "condition",
    "event",
    "function",
    "heartbeat",
    "import_functions",
    "log",
    "step",
    "step_context",
    "uuid",
]

TOPICS_ALL = [
    "AgentInput",
    "AgentStatus",
    "AgentUpdate",
    "AgentstreamError",
    "CancelAgent",
    "ChildCompleted",
    "ConfigurationError",
    "DeadLetter",
    "Envelope",
    "InvalidCursorError",
    "InvalidMessageError",
    "ParentRef",
    "ScheduleAgent",
    "SendEvent",
    "StepCommand",
    "StepError",
    "StepProgress",
    "StepResult",
    "StreamEvent",
    "StreamEventType",
    "StreamItem",
    "TimerFired",
    "TopicNames",
    "TopicSpec",
    "WIRE_VERSION",
    "decode_agent_input",
    "decode_step_command",
    "decode_step_result",
    "derived_message_id",
    "new_message_id",
    "parse_stream_cursor",
    "run_id_for",
    "stream_cursor",
    "stream_event_id",
]

LLM_ALL = [
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

TESTING_ALL = ["AgentTestEnvironment", "HttpError", "RecordedRequest", "ReplayReport", "Reply", "Responder",
               "ScriptedLLM", "ToolCall", "Usage", "replay_record"]

PINNED = {
    "agentstream.agents": AGENTS_ALL,
    "agentstream.agents.llm": LLM_ALL,
    "agentstream.agents.testing": TESTING_ALL,
    "agentstream.topics": TOPICS_ALL,
}


@pytest.mark.parametrize("module_name", sorted(PINNED))
def test_all_is_exactly_the_pinned_sorted_list(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert PINNED[module_name] == sorted(PINNED[module_name])
    assert sorted(module.__all__) == PINNED[module_name]
    assert len(set(module.__all__)) == len(module.__all__), "duplicate names in __all__"


@pytest.mark.parametrize(
    ("module_name", "name"), [(module, name) for module, names in sorted(PINNED.items()) for name in names]
)
def test_every_public_name_is_importable(module_name: str, name: str) -> None:
    module = importlib.import_module(module_name)
    assert getattr(module, name, None) is not None, f"{module_name}.{name} is in __all__ but missing"
    namespace: dict[str, object] = {}
    exec(f"from {module_name} import {name}", namespace)  # noqa: S102 - the import statement itself
    assert namespace[name] is getattr(module, name)


@pytest.mark.parametrize("module_name", sorted(PINNED))
def test_star_import_gives_exactly_all(module_name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {module_name} import *", namespace)  # noqa: S102
    assert sorted(k for k in namespace if k != "__builtins__") == PINNED[module_name]
