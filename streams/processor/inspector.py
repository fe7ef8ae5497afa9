"""The web inspector: `GET /ui` (one static page, no build step) and `GET /dead-letters`, which
only it and scripts need.

The page is plain HTML and JavaScript shipped in the package (`ui.html`). It calls the same
HTTP API as the CLI (`/agents`, `/agents/{id}`, `/agents/{id}/record`, `/agents/{id}/stream`,
`/agent-types`, `/dead-letters`, `POST /agents/{id}/events/{event}`), with the same bearer
token: the page itself holds no data, so it is served without one, and asks for the token
when the API answers 401 (kept in the tab's sessionStorage, sent as `Authorization`).
"""

from __future__ import annotations

from collections import deque
from importlib import resources
from typing import TYPE_CHECKING, cast

from aiohttp import web as aiohttp_web
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from ..dead_letters import read_dead_letters

if TYPE_CHECKING:
    from .app import Processor

MAX_LETTERS = 1_000
SCANNED = 10_000  # records read per dead-letters partition for one request: the newest ones


def register_inspector(processor: "Processor") -> None:
    app, names = processor.app, processor.names
    page = resources.files(__package__).joinpath("ui.html").read_bytes()  # read once: it is in the package
    bootstrap = ",".join(f"{url.host}:{url.port or 9092}" for url in app.conf.broker)

    async def ui(request: aiohttp_web.Request) -> aiohttp_web.StreamResponse:
        return aiohttp_web.Response(body=page, content_type="text/html", charset="utf-8",
                                    headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})

    async def dead_letters(request: aiohttp_web.Request) -> aiohttp_web.StreamResponse:
        """The newest `limit` dead letters (all, or one `agent`'s) among the last `SCANNED` records of
        each partition, oldest first, each with its reason."""
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LETTERS:
            return aiohttp_web.json_response({"error": "invalid_query", "detail": f"limit must be between 1 and "
                                              f"{MAX_LETTERS}"}, status=400)
        newest: deque[str] = deque(maxlen=limit)
        async for letter in read_dead_letters(bootstrap, names.dead_letters, processor.security,
                                              request.query.get("agent") or None, last=SCANNED):
            newest.append(letter.model_dump_json())
        body = b'{"dead_letters":[' + ",".join(newest).encode() + b"]}"
        return aiohttp_web.Response(body=body, content_type="application/json")

    router = cast(AiohttpWeb, app.web).web_app.router
    router.add_get("/ui", ui, allow_head=False)
    router.add_get("/dead-letters", dead_letters, allow_head=False)
