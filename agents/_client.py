"""`AgentClient`: schedule agents, send them events, read their state."""

from __future__ import annotations

import json
import uuid
from types import TracebackType
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer
from pydantic_core import to_jsonable_python

from agentstream.streams.broker.profile import detect_profile
from agentstream.streams.kafka import producer as kafka_producer
from agentstream.streams.settings import Settings
from agentstream.topics import CancelAgent, Envelope, ScheduleAgent, SendEvent, TopicNames, run_id_for

from .exceptions import AgentNotFoundError, ApiUnavailableError


def _type_name(agent: str | type) -> str:
    if isinstance(agent, str):
        return agent
    from ._registry import agent_definitions

    for name, definition in agent_definitions().items():
        if definition.cls is agent:
            return name
    return agent.__name__


class AgentClient:
    """Talks to agents through Kafka (writes) and a processor's HTTP API (reads).

    Connects lazily on first use; use `async with AgentClient() as client:` or call
    `close()` when done. Settings come from `AGENTSTREAM_*` variables unless given.
    """

    def __init__(self, settings: Settings | None = None, *, bootstrap: str | None = None, api_url: str | None = None) -> None:
        self.settings = settings or Settings()
        if bootstrap is not None:
            self.settings = self.settings.model_copy(update={"kafka_bootstrap": bootstrap})
        if api_url is not None:
            self.settings = self.settings.model_copy(update={"api_url": api_url})
        self.names = TopicNames(self.settings.topic_prefix)
        self._producer_cm: Any = None
        self._producer: AIOKafkaProducer | None = None
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "AgentClient":
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._producer_cm is not None:
            await self._producer_cm.__aexit__(None, None, None)
            self._producer_cm = self._producer = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _send(self, envelope: Envelope) -> None:
        if self._producer is None:
            profile = await detect_profile(self.settings.kafka_bootstrap, self.settings.embedded_broker)
            self._producer_cm = kafka_producer(self.settings.kafka_bootstrap, profile)
            self._producer = await self._producer_cm.__aenter__()
        await self._producer.send_and_wait(self.names.agent_events, key=envelope.key, value=envelope.to_bytes())

    async def schedule_agent(
        self,
        agent_name: str | type,
        agent_id: str | None = None,
        input: Any = None,
        *,
        task_queue: str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Start an agent; returns its run ID. `agent_id` defaults to a new unique ID.

        `task_queue` is accepted for compatibility; agents run on processors, which
        take every task queue.
        """
        name = _type_name(agent_name)
        message = ScheduleAgent(
            agent_id=agent_id or f"{name}-{uuid.uuid4().hex[:12]}",
            agent_type=name,
            input=to_jsonable_python(input),
            idempotency_key=idempotency_key,
        )
        await self._send(message)
        return run_id_for(message.message_id)

    async def send_agent_event(
        self,
        agent_id: str,
        event_name: str,
        event_input: Any = None,
        *,
        run_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Deliver an event to an agent; returns the event's message ID."""
        message = SendEvent(
            agent_id=agent_id,
            event=event_name,
            payload=to_jsonable_python(event_input),
            run_id=run_id,
            idempotency_key=idempotency_key,
        )
        await self._send(message)
        return message.message_id

    async def cancel_agent(self, agent_id: str, reason: str | None = None, *, run_id: str | None = None) -> str:
        message = CancelAgent(agent_id=agent_id, reason=reason, run_id=run_id)
        await self._send(message)
        return message.message_id

    async def get_agent_state(self, agent_id: str) -> dict[str, Any]:
        """The agent's record as its owning processor has it now."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        url = f"{self.settings.api_url.rstrip('/')}/agents/{agent_id}"
        try:
            async with self._http.get(url) as response:
                text = await response.text()
                status = response.status
        except aiohttp.ClientError as exc:
            raise ApiUnavailableError(
                f"no processor answered at {self.settings.api_url} ({exc}); start one with "
                "`agentstream dev` or `agentstream processor`, or set AGENTSTREAM_API_URL"
            ) from exc
        if status == 404:
            raise AgentNotFoundError(f"no agent {agent_id!r}: it was never scheduled, or is not processed yet")
        if status != 200:
            raise ApiUnavailableError(f"{url} answered HTTP {status}: {text[:300]}")
        return json.loads(text)  # type: ignore[no-any-return]
