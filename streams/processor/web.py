"""HTTP endpoints of a processor: health, readiness, agent state (routed to its owner),
the agent stream as SSE (sse.py) and events and schedules over HTTP (http_inputs.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faust import web

from agentstream.agents._registry import agent_definitions

from ..engine import AgentRecord
from .http_inputs import register_http_inputs
from .sse import register_stream_view

if TYPE_CHECKING:
    from .app import Processor


def register_views(processor: "Processor") -> None:
    app, table = processor.app, processor.table

    @app.page("/health")
    async def health(self: web.View, request: web.Request) -> web.Response:
        return self.json({"status": "ok"})

    @app.page("/ready")
    async def ready(self: web.View, request: web.Request) -> web.Response:
        is_ready = processor.is_ready()
        body = {"ready": is_ready, "assigned_partitions": processor.assigned_partitions()}
        return self.json(body, status=200 if is_ready else 503)

    @app.page("/agent-types")
    async def agent_types(self: web.View, request: web.Request) -> web.Response:
        return self.json(
            {name: {"events": sorted(d.events)} for name, d in sorted(agent_definitions().items())}
        )

    @app.page("/agents/{agent_id}")
    @app.table_route(table=table, match_info="agent_id")
    async def get_agent(self: web.View, request: web.Request, agent_id: str) -> web.Response:
        # table_route forwards GETs to the partition owner and runs this there.
        stored = table.get(agent_id.encode())
        if stored is None:
            body: dict[str, Any] = {
                "error": "agent_not_found",
                "detail": f"no agent {agent_id!r}: it was never scheduled, or its schedule is not processed yet",
            }
            return self.json(body, status=404)
        return self.json(AgentRecord.from_bytes(stored).public_view())

    register_stream_view(processor)
    register_http_inputs(processor)
