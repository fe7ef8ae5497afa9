"""The LLM agents of tests/integration/test_llm_agents.py, loaded with --app llmapp.

The model is whatever `AGENTSTREAM_LLM_BASE_URL` points the worker at (the test's
`ScriptedLLM`). Tools whose timing or side effects a test must prove append one JSON
line per event to the file named by `LLMAPP_LOG` (set on the worker by the test):
the line is the evidence, written by the worker process that ran the tool.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from pydantic import BaseModel

from agentstream.agents.llm import Budget, HistoryPolicy, LLMAgent, Memory, Model, tool

LOG_ENV = "LLMAPP_LOG"
OVERLAP_WAIT_S = 15.0  # how long a probe waits for its sibling to start before it gives up

MODEL = Model(name="scripted-model", api_key_env="LLMAPP_API_KEY")  # no key: the scripted server needs none


def record(**line: Any) -> None:
    """Append one JSON line to the test's log file (one write call, so concurrent lines do not interleave)."""
    with open(os.environ[LOG_ENV], "a") as log:
        log.write(json.dumps(line) + "\n")


def lines() -> list[dict[str, Any]]:
    try:
        with open(os.environ[LOG_ENV]) as log:
            return [json.loads(line) for line in log if line.strip()]
    except FileNotFoundError:
        return []


class Review(BaseModel):
    """A structured review, as Agno's reviewer example answers."""

    title: str
    rating: int
    summary: str


@tool
async def probe(label: str) -> str:
    """Probe one thing; returns only once another probe has started too.

    Args:
        label: What to probe.
    """
    record(tool="probe", label=label, event="start", t=time.time())
    deadline = time.monotonic() + OVERLAP_WAIT_S
    while sum(1 for line in lines() if line.get("tool") == "probe" and line.get("event") == "start") < 2:
        if time.monotonic() > deadline:
            record(tool="probe", label=label, event="gave_up", t=time.time())
            raise RuntimeError(f"no other probe started within {OVERLAP_WAIT_S}s: the calls are not concurrent")
        await asyncio.sleep(0.02)
    record(tool="probe", label=label, event="end", t=time.time())
    return f"probed {label}"


@tool
def lookup(city: str) -> str:
    """Tomorrow's weather in a city.

    Args:
        city: The city.
    """
    return f"sunny in {city}"


@tool(needs_approval=True)
def send_invoice(confirmation: str, amount: float) -> str:
    """Send the customer an invoice (a human approves it first).

    Args:
        confirmation: The booking's confirmation number.
        amount: The amount in euros.
    """
    record(tool="send_invoice", confirmation=confirmation, amount=amount, pid=os.getpid(), t=time.time())
    return f"invoice for {confirmation} sent"


@tool(needs_approval=True, approval_timeout=1.5)
def wire_money(amount: float) -> str:
    """Wire money to the customer (a human must approve within 1.5 s).

    Args:
        amount: The amount in euros.
    """
    record(tool="wire_money", amount=amount, t=time.time())
    return "wired"


CHAT = LLMAgent("LLMApp.Chat", model=MODEL, instructions="You are brief.")
PROBER = LLMAgent("LLMApp.Prober", model=MODEL, tools=[probe])
REVIEWER = LLMAgent("LLMApp.Reviewer", model=MODEL, instructions="Review what you are given.", output=Review)
BUDGETED = LLMAgent("LLMApp.Budgeted", model=MODEL, tools=[lookup], budget=Budget(tokens=100))
CLERK = LLMAgent("LLMApp.Clerk", model=MODEL, instructions="You help airline customers.",
                 tools=[send_invoice, wire_money])
REMEMBERING = LLMAgent("LLMApp.Remembering", model=MODEL, memory=Memory("LLMApp.Memory"))
SUMMARIZING = LLMAgent("LLMApp.Summarizing", model=MODEL, instructions="You are brief.",
                       history=HistoryPolicy(max_messages=2, summarize=True))
