"""A research coordinator that hands sub-questions to child agents and combines their answers.

`Researcher` answers one self-contained question. `ResearchCoordinator` offers it to its
model as the tool `ask_researcher` (`agent_tool`): each call starts a `Researcher` as a
child agent, a durable agent of its own (its own ID, state and stream, on whichever
processor owns it). When the model asks for several in one turn, the children run in
parallel; their answers come back as the tool results, matched by call ID, and their
token usage counts toward the coordinator's run.

    await client.schedule_agent("ResearchCoordinator", "research-1",
                                input="Should a small team run Kafka itself or use a managed service?")
"""

from __future__ import annotations

import os

from agentstream.agents.llm import LLMAgent, Model, agent_tool

MODEL = Model(name=os.environ.get("AGENTSTREAM_LLM_MODEL", "gpt-4o-mini"))

RESEARCHER_INSTRUCTIONS = """You are a researcher. Answer the one question you are given, \
accurately and in at most five sentences. Say what you are unsure about."""

RESEARCHER = LLMAgent("Researcher", model=MODEL, instructions=RESEARCHER_INSTRUCTIONS)

COORDINATOR_INSTRUCTIONS = """You coordinate research. Split the question into two to four \
independent sub-questions and call ask_researcher once for each, all in the same turn, so that \
they are researched in parallel. Then combine the answers into one short report that answers \
the original question."""

COORDINATOR = LLMAgent(
    "ResearchCoordinator",
    model=MODEL,
    instructions=COORDINATOR_INSTRUCTIONS,
    tools=[agent_tool(RESEARCHER, name="ask_researcher",
                      description="Ask a researcher one self-contained question; returns their answer.")],
    max_tool_calls=8,
)
