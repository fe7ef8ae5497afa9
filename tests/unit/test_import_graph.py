"""The engine's import graph holds no Kafka, Faust or HTTP client (DESIGN.md).

The engine is pure: it turns inputs into a record and outputs. It must be importable
(and testable, and embeddable) without the broker, the client or their libraries. Each
probe runs in a fresh interpreter, because this test process has imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN_IN_ENGINE = (
    "aiokafka",
    "aiohttp",
    "faust",
    "mode",  # Faust's service library
    "kafka",
    "agentstream.streams.broker",
    "agentstream.streams.kafka",
    "agentstream.streams.processor",
    "agentstream.agents._client",
)
NETWORK_LIBRARIES = ("aiokafka", "aiohttp", "faust", "kafka", "agentstream.agents._client")


def modules_after(statement: str) -> list[str]:
    """The names in `sys.modules` of a fresh interpreter after it runs `statement`."""
    probe = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def loaded_from(modules: list[str], packages: tuple[str, ...]) -> list[str]:
    """The modules that are one of `packages` or lie inside one of them."""
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)]


def test_the_probe_sees_network_libraries_when_they_are_imported() -> None:
    # Guards the two tests below against a probe that can never see anything.
    modules = modules_after("import agentstream.agents._client")
    assert {"aiokafka", "aiohttp", "agentstream.agents._client"} <= set(loaded_from(modules, NETWORK_LIBRARIES))


def test_importing_the_engine_loads_no_kafka_faust_http_broker_or_client() -> None:
    modules = modules_after("import agentstream.streams.engine")
    assert "agentstream.streams.engine" in modules
    assert loaded_from(modules, FORBIDDEN_IN_ENGINE) == []


def test_importing_the_authoring_api_loads_no_kafka_or_http_client() -> None:
    modules = modules_after("import agentstream.agents")
    assert loaded_from(modules, NETWORK_LIBRARIES) == []


@pytest.mark.parametrize(
    "statement",
    [
        "from agentstream.agents import AgentClient\nassert AgentClient.__module__ == 'agentstream.agents._client'",
        "import agentstream.agents as a\nassert a.AgentClient.__module__ == 'agentstream.agents._client'",
    ],
)
def test_the_client_is_still_reachable_from_the_authoring_api(statement: str) -> None:
    assert "agentstream.agents._client" in modules_after(statement)
