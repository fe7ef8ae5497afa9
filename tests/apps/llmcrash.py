"""The LLM agents of tests/integration/test_llm_crash.py, loaded with --app llmcrash.

The model is whatever `AGENTSTREAM_LLM_BASE_URL` points the worker at (the test's
`ScriptedLLM`). The tools leave their evidence in the folder named by `LLMCRASH_DIR`
(set on the worker by the test), written by the worker process that ran them:
`calls.jsonl` gets one line per call of a tool (re-runs show), `effects.log` one line
per side effect, and `charge` signals and waits with marker files so the test can kill
the processor while a worker is inside it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from agentstream.agents import StepContext
from agentstream.agents.llm import HistoryPolicy, LLMAgent, Model, tool

DIR_ENV = "LLMCRASH_DIR"
CALLS = "calls.jsonl"
EFFECTS = "effects.log"
STARTED, RELEASE = "charge.started", "charge.release"  # marker files: the worker is inside `charge`; it may return

MODEL = Model(name="scripted-model", api_key_env="LLMCRASH_API_KEY")  # no key: the scripted server needs none
POLICY = HistoryPolicy(max_messages=20, max_tokens=100_000)


def folder() -> Path:
    return Path(os.environ[DIR_ENV])


def note_call(**line: Any) -> None:
    """Append one JSON line to calls.jsonl (one write call, so concurrent lines do not interleave)."""
    with open(folder() / CALLS, "a") as calls:
        calls.write(json.dumps({**line, "pid": os.getpid(), "t": time.time()}) + "\n")


@tool
def lookup(city: str) -> str:
    """Tomorrow's weather in a city.

    Args:
        city: The city.
    """
    note_call(tool="lookup", city=city)
    return f"sunny in {city}"


@tool
async def charge(order: str, context: StepContext) -> str:
    """Charge the customer for an order, once per call however often it runs.

    Args:
        order: The order to charge.
    """
    note_call(tool="charge", order=order, key=context.idempotency_key, attempt=context.attempt)
    (folder() / STARTED).touch()
    while not (folder() / RELEASE).exists():
        await asyncio.sleep(0.02)
    effects = folder() / EFFECTS
    done = effects.read_text().splitlines() if effects.exists() else []
    if context.idempotency_key not in done:  # the side effect, keyed by the step's stable key
        with open(effects, "a") as log:
            log.write(context.idempotency_key + "\n")
    return f"charged {order}"


WEATHER = LLMAgent("LLMCrash.Weather", model=MODEL, instructions="You report the weather.", tools=[lookup])
SHOP = LLMAgent("LLMCrash.Shop", model=MODEL, instructions="You charge orders.", tools=[charge])
CHAT = LLMAgent("LLMCrash.Chat", model=MODEL, instructions="Answer briefly.", history=POLICY)
