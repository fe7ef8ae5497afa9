"""`GET /agents`: the agents of every processor, with their type and status, filtered.

Each processor knows only the agents of the partitions it owns (their records are in its
RocksDB). Asked with `scope=local` it lists those; asked without, it lists its own and
asks every other processor of the application (the hosts Faust's assignor knows for the
table) for theirs, so one URL answers for the whole application, as a user expects from
`agentstream list`. A processor that does not answer is named in `unreachable` instead of
failing the listing.

Filters: `status` and `type` (repeatable or comma-separated), `prefix` of the agent ID,
`limit` (default 100, at most 10,000). Agents come sorted by ID; `truncated` says that
more matched than were returned. A listing reads the records of the owned partitions
(as the state API does: what the changelog has acknowledged), so it costs one JSON parse
per agent; it is an operator's tool, not something to poll.
"""

from __future__ import annotations

import asyncio
import builtins
import json
from typing import TYPE_CHECKING, Any, cast

import aiohttp
from aiohttp import web as aiohttp_web
from faust.web.drivers.aiohttp import Web as AiohttpWeb
from yarl import URL

if TYPE_CHECKING:
    from .app import Processor

DEFAULT_LIMIT, MAX_LIMIT = 100, 10_000
PEER_TIMEOUT_S = 10.0
SHOWN = ("agent_id", "agent_type", "status", "created_at", "updated_at", "error")


class Query:
    """The filters of one listing request."""

    def __init__(self, request: aiohttp_web.Request) -> None:
        def values(name: str) -> frozenset[str]:
            return frozenset(v for raw in request.query.getall(name, []) for v in raw.split(",") if v)

        self.statuses, self.types = values("status"), values("type")
        self.prefix = request.query.get("prefix", "")
        try:
            self.limit = int(request.query.get("limit", DEFAULT_LIMIT))
        except ValueError:
            raise ValueError("limit must be a whole number") from None
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")

    def matches(self, agent: dict[str, Any]) -> bool:
        return ((not self.statuses or agent.get("status") in self.statuses)
                and (not self.types or agent.get("agent_type") in self.types)
                and str(agent.get("agent_id", "")).startswith(self.prefix))


def local_agents(records: Any, query: Query) -> tuple[list[dict[str, Any]], bool]:
    """The matching agents among `records` (stored record bytes), sorted; and whether more matched."""
    found = []
    for value in records:
        data = json.loads(value)
        agent = {key: data.get(key) for key in SHOWN}
        if query.matches(agent):
            found.append(agent)
    found.sort(key=lambda a: str(a["agent_id"]))
    return found[: query.limit], len(found) > query.limit


def register_listing(processor: "Processor") -> None:
    app, table = processor.app, processor.table

    async def peer(session: aiohttp.ClientSession, host: str, request: aiohttp_web.Request) -> dict[str, Any]:
        url = URL(host).with_path("/agents").with_query([*request.query.items(), ("scope", "local")])
        headers = {"Authorization": f"Bearer {processor.api_token}"} if processor.api_token else None
        async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)) as answer:
            if answer.status != 200:
                raise aiohttp.ClientError(f"HTTP {answer.status}: {(await answer.text())[:200]}")
            return dict(await answer.json())

    async def list_agents(request: aiohttp_web.Request) -> aiohttp_web.StreamResponse:
        try:
            query = Query(request)
        except ValueError as exc:
            return aiohttp_web.json_response({"error": "invalid_query", "detail": str(exc)}, status=400)
        if not processor.is_ready():
            return aiohttp_web.json_response({"error": "not_ready", "detail": "this processor is restoring or "
                                              "rebalancing; retry shortly"}, status=503)
        agents, truncated = local_agents((value for _, value in table.items()), query)
        body: dict[str, Any] = {"agents": agents, "truncated": truncated, "processors": 1, "unreachable": []}
        if request.query.get("scope") == "local":
            return aiohttp_web.json_response(body)
        own = str(app.conf.canonical_url).rstrip("/")
        hosts = sorted(h for h in app.router.table_metadata(table.name) if str(h).rstrip("/") != own)
        if hosts:
            async with aiohttp.ClientSession() as session:
                answers = await asyncio.gather(*(peer(session, str(h), request) for h in hosts), return_exceptions=True)
            for host, answer in zip(hosts, answers):
                if isinstance(answer, (aiohttp.ClientError, builtins.TimeoutError, OSError, ValueError)):
                    body["unreachable"].append({"processor": str(host), "error": repr(answer)})
                elif isinstance(answer, BaseException):
                    raise answer
                else:
                    body["agents"] += answer.get("agents", [])
                    body["truncated"] = body["truncated"] or bool(answer.get("truncated"))
                    body["processors"] += 1
            body["agents"].sort(key=lambda a: str(a.get("agent_id")))
            if len(body["agents"]) > query.limit:
                body["agents"], body["truncated"] = body["agents"][: query.limit], True
        return aiohttp_web.json_response(body)

    cast(AiohttpWeb, app.web).web_app.router.add_get("/agents", list_agents, allow_head=False)
