"""What `GET /agent-types` says of an agent type: its events and the JSON schema of its run
input and of each event payload, so a user (or a form) knows what to send."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel

from agentstream.agents import agent, condition
from agentstream.agents._registry import agent_definitions, describe_agent


class Order(BaseModel):
    sku: str
    quantity: int = 1


@agent.defn(name="Types.Shop")
class Shop:
    def __init__(self) -> None:
        self.orders: list[Order] = []

    @agent.event
    async def order(self, order: Order) -> None:
        self.orders.append(order)

    @agent.event
    async def mode(self, value: Literal["open", "closed"] = "open") -> None:
        pass

    @agent.event
    async def anything(self, value) -> None:  # type: ignore[no-untyped-def]  # no annotation: any JSON
        pass

    @agent.event
    async def close(self) -> None:
        pass

    @agent.event
    async def hook(self, value: Callable[[], None]) -> None:  # validates, but has no JSON schema
        pass

    @agent.run
    async def run(self, greeting: str) -> None:
        await condition(lambda: False)


def test_each_event_payload_and_the_run_input_come_with_their_json_schema() -> None:
    described = describe_agent(agent_definitions()["Types.Shop"])
    assert described["events"] == ["anything", "close", "hook", "mode", "order"]
    assert described["input"] == {"name": "greeting", "schema": {"type": "string"}, "optional": False}
    order = described["payloads"]["order"]
    assert order["schema"]["required"] == ["sku"] and order["schema"]["properties"]["quantity"]["default"] == 1
    assert described["payloads"]["mode"] == {"name": "value", "schema": {"enum": ["open", "closed"], "type": "string"},
                                             "optional": True}
    assert described["payloads"]["anything"] == {"name": "value", "schema": {}, "optional": False}
    assert described["payloads"]["close"] is None  # takes no payload
    assert described["payloads"]["hook"]["schema"]["description"].startswith("not expressible as JSON schema")
