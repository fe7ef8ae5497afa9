"""The LLM agent of tests/integration/test_cli_approval.py, loaded with --app approvalapp.

Its one tool needs a human's approval. The model is whatever `AGENTSTREAM_LLM_BASE_URL`
points the worker at (the test's `ScriptedLLM`). The tool appends one JSON line per run
to the file named by `APPROVALAPP_LOG` (set on the worker by the test): the evidence
that it ran, and how often.
"""

from __future__ import annotations

import json
import os

from agentstream.agents.llm import LLMAgent, Model, tool

LOG_ENV = "APPROVALAPP_LOG"

MODEL = Model(name="scripted-model", api_key_env="APPROVALAPP_API_KEY")  # no key: the scripted server needs none


@tool(needs_approval=True)
def issue_refund(confirmation: str, amount: float) -> str:
    """Refund a booking (a human approves it first).

    Args:
        confirmation: The booking's confirmation number.
        amount: The amount in euros.
    """
    with open(os.environ[LOG_ENV], "a") as log:
        log.write(json.dumps({"tool": "issue_refund", "confirmation": confirmation, "amount": amount}) + "\n")
    return f"refunded {amount} for {confirmation}"


DESK = LLMAgent("ApprovalApp.Desk", model=MODEL, instructions="You refund bookings.", tools=[issue_refund])
