"""Every bundled LLM example in one app: `agentstream dev --app examples.llm_agents`.

Processors and workers load one `--app` module; this one registers the agents and
tools of the airline, reviewer, deploy and research examples.
"""

from __future__ import annotations

from .airline import AIRLINE
from .deploy import DEPLOYER
from .research import COORDINATOR, RESEARCHER
from .reviewer import REVIEWER

__all__ = ["AIRLINE", "COORDINATOR", "DEPLOYER", "RESEARCHER", "REVIEWER"]
