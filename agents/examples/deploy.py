"""AGNT5's deploy agent: it runs the tests, then waits for a human before it deploys.

`deploy` needs approval: when the model asks for it, the agent publishes an approval
request (on agent-updates and agent-stream, and in its state under `pending`) and waits,
durably, across restarts, until an `approve` or `reject` event names the request. A
rejection is told to the model as the tool's error, so nothing is deployed.

    run_id = await client.schedule_agent("Deployer", "deploy-42", input="Deploy version 2.0 of checkout")
    ... # a human reads the request, then:
    await client.send_agent_event("deploy-42", "approve", {"request_id": rid})
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from agentstream.agents import StepContext
from agentstream.agents.llm import LLMAgent, Model, tool

SERVICES = {"checkout": 128, "billing": 74, "search": 211}  # service -> its number of tests


@tool
def run_tests(service: str) -> dict[str, Any]:
    """Run a service's test suite.

    Args:
        service: The service to test, e.g. "checkout".
    """
    if service not in SERVICES:
        raise LookupError(f"unknown service {service!r}; known: {sorted(SERVICES)}")
    return {"service": service, "passed": SERVICES[service], "failed": 0}


@tool(needs_approval=True, approval_timeout=24 * 3600)
def deploy(service: str, version: str, context: StepContext) -> dict[str, Any]:
    """Deploy a version of a service to production. A human approves every deployment.

    Args:
        service: The service to deploy.
        version: The version to deploy, e.g. "2.0".
    """
    if service not in SERVICES:
        raise LookupError(f"unknown service {service!r}; known: {sorted(SERVICES)}")
    # The key is the same in every attempt of this call: the deploy system can drop a repeat.
    return {"service": service, "version": version, "environment": "production",
            "deployment": "dep-" + hashlib.sha256(context.idempotency_key.encode()).hexdigest()[:10]}


INSTRUCTIONS = """You deploy services to production.
Always run the service's tests first, and deploy only when they all pass. Every deployment \
needs a human's approval; if it is rejected, do not try again: say that it was not deployed and why."""

DEPLOYER = LLMAgent(
    "Deployer",
    model=Model(name=os.environ.get("AGENTSTREAM_LLM_MODEL", "gpt-4o-mini")),
    instructions=INSTRUCTIONS,
    tools=[run_tests, deploy],
    max_tool_calls=6,
)
