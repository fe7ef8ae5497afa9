"""Testing helpers shipped with agentstream, for users' tests and ours.

`ScriptedLLM` is an OpenAI-compatible HTTP server that answers from a script of
`Reply` values, so code using the real `openai` client can be tested end to end
without a model or an API key::

    async with ScriptedLLM([Reply.text("Hello!")]) as llm:
        client = openai.AsyncOpenAI(base_url=llm.base_url, api_key="test")
        ...

`AgentTestEnvironment` runs agents in-process, turn by turn, on the durable engine, with a
clock the test moves (durable timers fire when time is skipped); `replay_record` checks
a stored record against the current code before a deploy.

This package imports aiohttp; `agentstream.agents` never imports it, so the authoring
API stays free of HTTP libraries (tests/unit/test_import_graph.py).
"""

from ._environment import AgentTestEnvironment
from ._replayer import ReplayReport, replay_record
from ._replies import HttpError, Reply, ToolCall, Usage
from ._scripted_llm import RecordedRequest, Responder, ScriptedLLM

__all__ = [
    "AgentTestEnvironment",
    "HttpError",
    "RecordedRequest",
    "ReplayReport",
    "Reply",
    "Responder",
    "ScriptedLLM",
    "ToolCall",
    "Usage",
    "replay_record",
]
