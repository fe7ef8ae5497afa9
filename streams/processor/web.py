"""HTTP endpoints of a processor: health, readiness, agent state and result (routed to the
owner; the result waits without polling, results.py), the agent stream as SSE (sse.py) and
events and schedules over HTTP (http_inputs.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web as aiohttp_web
from faust import web
from faust.exceptions import SameNode
from faust.web.drivers.aiohttp import Web as AiohttpWeb
from faust.web.exceptions import ServiceUnavailable

from agentstream.agents._registry import agent_definitions, describe_agent

from ..engine import AgentRecord
from .http_inputs import register_http_inputs
from .inspector import register_inspector
from .listing import register_listing
from .owners import LocalOwnership
from .results import ENDED, MAX_WAIT_S
from .sse import register_stream_view

if TYPE_CHECKING:
    from .app import Processor

AgentAnswer = Callable[[aiohttp_web.Request, str], Awaitable[aiohttp_web.StreamResponse]]


def register_views(processor: "Processor") -> None:
    app, table = processor.app, processor.table

    @app.page("/health")
    async def health(self: web.View, request: web.Request) -> web.Response:
        return self.json({"status": "ok"})

    @app.page("/ready")
    async def ready(self: web.View, request: web.Request) -> web.Response:
        is_ready = processor.is_ready()
        owned = processor.owned_partitions()  # which agents it owns (Faust's /router page is off)
        body = {"ready": is_ready, "assigned_partitions": len(owned), "partitions": owned}
        return self.json(body, status=200 if is_ready else 503)

    described = {name: describe_agent(d) for name, d in sorted(agent_definitions().items())}  # fixed once loaded

    @app.page("/agent-types")
    async def agent_types(self: web.View, request: web.Request) -> web.Response:
        """Each agent type: its events, and the JSON schemas of its run input and event payloads."""
        return self.json(described)

    local = LocalOwnership(app, processor.names.agent_events)

    async def from_the_owner(agent_id: str, request: aiohttp_web.Request) -> aiohttp_web.StreamResponse | None:
        """The owner's answer when another processor owns the agent (Faust's table routing forwards
        the request); None when this processor answers itself."""
        if local.owns(agent_id.encode()):
            return None
        try:
            return cast(aiohttp_web.StreamResponse,
                        await app.router.route_req(table.name, agent_id, app.web, cast(web.Request, request)))
        except SameNode:
            return None
        except ServiceUnavailable:
            return aiohttp_web.json_response({"error": "not_ready", "detail": "no processor owns this agent's "
                                              "partition yet (a rebalance); retry shortly"}, status=503)

    # An agent's routes are plain aiohttp routes, not Faust pages: a Faust page costs a view dispatch
    # and a routing lookup on every request, and clients repeat two of them all the time (state
    # polls, result waits).

    async def get_agent(request: aiohttp_web.Request, agent_id: str) -> aiohttp_web.StreamResponse:
        """The agent's public view, answered by its owner from `processor.views` (views.py, owners.py say why)."""
        key = agent_id.encode()
        await processor.store.caught_up(key)
        view = processor.views.of(key, keep=processor.is_ready())
        if view is None:
            return _not_found(agent_id)
        return aiohttp_web.Response(body=view, content_type="application/json")

    async def get_result(request: aiohttp_web.Request, agent_id: str) -> aiohttp_web.StreamResponse:
        """The agent's result once it ended (200), else its status (202) after waiting up to `?wait=` s.
        An agent not found is waited for too (404 only when the wait ends first): a client that
        schedules and then asks for the result usually asks before the schedule is applied."""
        wait = _wait_seconds(request)
        if wait is None:
            return aiohttp_web.json_response({"error": "invalid_wait", "detail": "wait must be a number of seconds"},
                                             status=400)
        key = agent_id.encode()
        with processor.handler.results.watching(agent_id) as ended:
            await processor.store.caught_up(key)
            # From the agent's public view (views.py): kept between changes, no parse of the whole record.
            view = processor.views.of(key, keep=processor.is_ready())
            state = json.loads(view) if view is not None else None
            if wait and (state is None or state["status"] not in ENDED):
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(ended), wait)
                record = ended.result() if ended.done() else None
                if isinstance(record, AgentRecord):  # the durable record that ended it: the answer, no state read
                    state = {"agent_id": record.agent_id, "run_id": record.run_id, "status": record.status.value,
                             "result": record.result, "error": record.error}
                else:
                    view = processor.views.of(key, keep=processor.is_ready())
                    state = json.loads(view) if view is not None else None
        if state is None:
            return _not_found(agent_id)
        body = {name: state.get(name) for name in ("agent_id", "run_id", "status", "result", "error")}
        return aiohttp_web.json_response(body, status=200 if state["status"] in ENDED else 202)

    async def get_record(request: aiohttp_web.Request, agent_id: str) -> aiohttp_web.StreamResponse:
        """The agent's whole stored record (journal, base, delivery bookkeeping included): what
        `agentstream replay` runs through new code before a deploy (agents.testing.replay_record)."""
        await processor.store.caught_up(agent_id.encode())
        stored = table.get(agent_id.encode())
        if stored is None:
            return _not_found(agent_id)
        return aiohttp_web.Response(body=stored, content_type="application/json")

    async def get_input_outcome(request: aiohttp_web.Request, agent_id: str) -> aiohttp_web.StreamResponse:
        """What became of a client's input (outcomes.py): 200 with the outcome, else 202 "pending"
        after waiting up to `?wait=` s. `input_id` is the message ID, or a schedule's run ID."""
        input_id = request.match_info["input_id"]
        wait = _wait_seconds(request)
        if wait is None:
            return aiohttp_web.json_response({"error": "invalid_wait", "detail": "wait must be a number of seconds"},
                                             status=400)
        outcomes = processor.handler.outcomes
        with outcomes.waiters.watching(input_id) as known:
            if wait and outcomes.get(input_id) is None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(known), wait)
        answer = outcomes.get(input_id) or _remembered_by_the_agent(table.get(agent_id.encode()), input_id)
        if answer is None:
            return aiohttp_web.json_response({"agent_id": agent_id, "input_id": input_id, "outcome": "pending"},
                                             status=202)
        return aiohttp_web.json_response({"agent_id": agent_id, "input_id": input_id, **answer})

    routes = cast(AiohttpWeb, app.web).web_app.router

    def agent_route(path: str, answer: AgentAnswer) -> None:
        """GET `path` answered by the owner of the agent it names: forwarded, or `answer` here."""

        async def route(request: aiohttp_web.Request) -> aiohttp_web.StreamResponse:
            agent_id = request.match_info["agent_id"]
            forwarded = await from_the_owner(agent_id, request)  # (a response is a mapping: empty is falsy)
            return forwarded if forwarded is not None else await answer(request, agent_id)

        routes.add_get(path, route, allow_head=False)

    agent_route("/agents/{agent_id}", get_agent)
    agent_route("/agents/{agent_id}/result", get_result)
    agent_route("/agents/{agent_id}/record", get_record)
    agent_route("/agents/{agent_id}/inputs/{input_id}", get_input_outcome)

    register_listing(processor)
    register_inspector(processor)
    register_stream_view(processor)
    register_http_inputs(processor)


def _not_found(agent_id: str) -> aiohttp_web.Response:
    return aiohttp_web.json_response({"error": "agent_not_found", "detail": f"no agent {agent_id!r}: it was never "
                                      "scheduled, or its schedule is not processed yet"}, status=404)


def _wait_seconds(request: web.Request | aiohttp_web.Request) -> float | None:
    """`?wait=` as seconds, cut to `MAX_WAIT_S`; None when it is not a number."""
    try:
        asked = float(request.query.get("wait", "0"))
    except ValueError:
        return None
    return min(max(asked, 0.0), MAX_WAIT_S) if math.isfinite(asked) else None


def _remembered_by_the_agent(stored: bytes | None, input_id: str) -> dict[str, Any] | None:
    """An outcome this process no longer knows (a restart, a rebalance), from the agent's record:
    the client keys it applied, and the run ID its schedule started."""
    if stored is None:
        return None
    record = AgentRecord.from_bytes(stored)
    if record.delivery.is_duplicate(input_id) or input_id == record.run_id:
        return {"outcome": "applied", "reason_code": None, "reason": None}
    return None
