"""Talk to agents over HTTP: a chat front end needs no Kafka client.

    POST /agents/{agent_id}/events/{event}   body: the payload (JSON; empty = null)
    POST /agents/{agent_id}                  body: {"agent_type": ..., "input": ...}

Both answer 202 once the record is on `agent-events` (acknowledged by the broker),
carrying the same envelope `AgentClient` sends; the agent applies it in its own turn,
as it would a record from any producer. What the engine would dead-letter for sure is
refused here instead, with the engine's reason: an unknown agent (404), an unknown
type or event, an input or payload its handler's type refuses (400), an event for an
agent that has ended or a schedule for one that runs (409). An `Idempotency-Key` header
becomes the envelope's `idempotency_key`, and its message ID is derived from it, so a
retried request answers the same IDs and the agent applies it once.

An event is checked against the agent's type, which only its record knows: the record
is read here when this processor owns the agent's partition, and from the owner's
`GET /agents/{id}` otherwise (Faust's table routing forwards a request without its body,
so the POST itself cannot be forwarded).
"""

from __future__ import annotations

import builtins
import json
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

import aiohttp
from aiohttp import web as aiohttp_web
from faust import web
from pydantic import JsonValue, ValidationError
from yarl import URL

from agentstream.agents._registry import agent_definitions
from agentstream.topics import (
    Envelope,
    ScheduleAgent,
    SendEvent,
    derived_message_id,
    new_message_id,
    run_id_for,
)

from .exceptions import UndeliverableError
from .publish import FaustPublisher
from .results import ENDED

if TYPE_CHECKING:
    from .app import Processor

OWNER_TIMEOUT_S = 10.0


class Refusal(Exception):
    """An HTTP error answer: status, a machine-readable code and the reason."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def _validation_message(exc: ValidationError) -> str:
    """The engine's wording of a validation error (loc: msg; ...), so both reject alike."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()[:5])


def _path_segment(agent_id: str) -> str:
    """The agent ID as one path segment, as `AgentClient` quotes it (`.` and `..` too)."""
    segment = quote(agent_id, safe="")
    return segment.replace(".", "%2E") if segment in (".", "..") else segment


def _same_server(a: URL, b: URL) -> bool:
    return (a.host, a.port or 80) == (b.host, b.port or 80)


async def _json_body(request: aiohttp_web.Request) -> JsonValue:
    raw = await request.read()  # over the server's client_max_size (1 MiB): aiohttp answers 413
    if not raw.strip():
        return None
    try:
        return cast(JsonValue, json.loads(raw))
    except ValueError as exc:  # UnicodeDecodeError included
        raise Refusal(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc


def _idempotency_key(request: aiohttp_web.Request) -> str | None:
    return request.headers.get("Idempotency-Key") or None


def _message_id(key: str | None, purpose: str) -> str:
    """A new message ID, or with an idempotency key one derived from it: the same for every retry."""
    return new_message_id() if key is None else derived_message_id(key, purpose)


def register_http_inputs(processor: "Processor") -> None:
    app, table, names = processor.app, processor.table, processor.names
    publisher = FaustPublisher(app, max_bytes=int(app.conf.producer_max_request_size))

    async def agent_view(agent_id: str) -> dict[str, Any] | None:
        """The agent's public record (as `GET /agents/{id}` shows it), or None when there is none."""
        try:
            owner: URL = app.router.key_store(table.name, agent_id)
        except KeyError:
            raise Refusal(503, "not_ready", "no processor owns this agent's partition yet; retry shortly") from None
        if _same_server(owner, URL(str(app.conf.canonical_url))):
            await processor.store.caught_up(agent_id.encode())
            view = processor.views.of(agent_id.encode(), keep=processor.is_ready())
            return None if view is None else cast(dict[str, Any], json.loads(view))
        url = owner.with_path(f"/agents/{_path_segment(agent_id)}", encoded=True)
        headers = {"Authorization": f"Bearer {processor.api_token}"} if processor.api_token else None
        try:
            async with app.http_client.get(url, timeout=aiohttp.ClientTimeout(total=OWNER_TIMEOUT_S),
                                           headers=headers) as response:
                status, body = response.status, await response.text()
        except (aiohttp.ClientError, builtins.TimeoutError, OSError) as exc:
            raise Refusal(503, "owner_unavailable", f"the processor that owns the agent ({owner}) did not answer: {exc!r}") from exc
        if status == 200:
            return cast(dict[str, Any], json.loads(body))
        if status == 404:
            return None
        raise Refusal(503, "owner_unavailable", f"the processor that owns the agent answered HTTP {status}: {body[:300]}")

    async def produce(message: Envelope) -> None:
        try:
            await (await publisher.publish(names.agent_events, message.key, message.to_bytes()))
        except UndeliverableError as exc:
            raise Refusal(503, "undeliverable", str(exc)) from exc

    async def send_event(request: aiohttp_web.Request, agent_id: str, event: str) -> dict[str, Any]:
        payload = await _json_body(request)
        view = await agent_view(agent_id)
        if view is None:
            raise Refusal(404, "agent_not_found", f"no agent {agent_id!r}: it was never scheduled, or its schedule is not processed yet")
        definition = agent_definitions().get(str(view["agent_type"]))
        if definition is None:
            raise Refusal(400, "unknown_agent_type", f"agent type {view['agent_type']!r} is not registered on this processor")
        handler = definition.events.get(event)
        if handler is None:
            known = ", ".join(sorted(definition.events)) or "none"
            raise Refusal(400, "unknown_event", f"agent type {definition.name} has no event {event!r}; its events: {known}")
        try:
            if handler.parameter is not None:
                handler.parameter.arguments(payload)
        except ValidationError as exc:
            raise Refusal(400, "invalid_payload", f"event {event!r}: {_validation_message(exc)}") from exc
        if view["status"] in ENDED:
            raise Refusal(409, "agent_not_running", f"agent {agent_id!r} has {view['status']}; it takes no more events")
        key = _idempotency_key(request)
        try:
            message = SendEvent(agent_id=agent_id, event=event, payload=payload, idempotency_key=key,
                                message_id=_message_id(key, f"http-event:{agent_id}"))
        except ValidationError as exc:
            raise Refusal(400, "invalid_envelope", _validation_message(exc)) from exc
        await produce(message)
        return {"message_id": message.message_id, "agent_id": agent_id}

    async def schedule(request: aiohttp_web.Request, agent_id: str) -> dict[str, Any]:
        body = await _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("agent_type"), str) or set(body) - {"agent_type", "input"}:
            raise Refusal(400, "invalid_schedule", 'the body must be {"agent_type": "<type>", "input": <JSON, optional>}')
        agent_type, run_input = str(body["agent_type"]), body.get("input")
        definition = agent_definitions().get(agent_type)
        if definition is None:
            known = ", ".join(sorted(agent_definitions())) or "none"
            raise Refusal(400, "unknown_agent_type", f"unknown agent type {agent_type!r}; registered: {known}")
        try:
            if definition.run_parameter is not None:
                definition.run_parameter.arguments(run_input)
        except ValidationError as exc:
            raise Refusal(400, "invalid_input", f"input of {definition.name}: {_validation_message(exc)}") from exc
        key = _idempotency_key(request)
        try:
            message = ScheduleAgent(agent_id=agent_id, agent_type=agent_type, input=run_input, idempotency_key=key,
                                    message_id=_message_id(key, f"http-schedule:{agent_id}"))
        except ValidationError as exc:
            raise Refusal(400, "invalid_envelope", _validation_message(exc)) from exc
        view = await agent_view(agent_id)
        if view is not None and view["status"] not in ENDED and view.get("origin") != message.message_id:
            raise Refusal(409, "already_running", f"agent {agent_id!r} is already running as {view['agent_type']}; "
                          "cancel it first or pick another agent ID")
        await produce(message)
        return {"run_id": run_id_for(message.message_id), "message_id": message.message_id, "agent_id": agent_id}

    async def answer(view: web.View, work: Any) -> web.Response:
        try:
            return view.json(await work, status=202)
        except Refusal as refusal:
            return view.json({"error": refusal.error, "detail": refusal.detail}, status=refusal.status)

    @app.page("/agents/{agent_id}/events/{event}")
    class AgentEvents(web.View):
        async def post(self, request: web.Request, agent_id: str, event: str) -> web.Response:
            return await answer(self, send_event(cast(aiohttp_web.Request, request), agent_id, event))

    @app.page("/agents/{agent_id}")
    class ScheduleView(web.View):
        async def post(self, request: web.Request, agent_id: str) -> web.Response:
            return await answer(self, schedule(cast(aiohttp_web.Request, request), agent_id))
