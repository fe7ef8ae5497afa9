"""The processor's HTTP API behind a bearer token (`AGENTSTREAM_API_TOKEN`).

One aiohttp middleware in front of every route, so nothing slips through: agentstream's
pages (`/agents/...`, `/agent-types`, the SSE stream) and whatever Faust registers itself
(`/router`, `/table/...`, `/graph`, `/`) answer 401 without `Authorization: Bearer <token>`.
Only the probes a platform polls without credentials stay open: `/health`, `/ready`,
`/metrics`. Processors forwarding a request to the agent's owner pass the caller's
header on (Faust's table routing copies the headers; http_inputs.py adds it).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import faust
from aiohttp import web
from aiohttp.typedefs import Middleware
from faust.web.drivers.aiohttp import Web as AiohttpWeb

OPEN_PATHS = frozenset({"/health", "/ready", "/metrics", "/ui"})  # /ui: a static page, no data

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def authorized(header: str | None, token: str) -> bool:
    """Whether an `Authorization` header carries `token` as a bearer token (compared in constant time)."""
    if not header:
        return False
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode(), token.encode())


def bearer_guard(token: str, open_paths: frozenset[str] = OPEN_PATHS) -> Middleware:
    """A middleware answering 401 to any request but `open_paths` that lacks the token."""
    if not token:
        raise ValueError("an empty API token would let anyone in")

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in open_paths or authorized(request.headers.get("Authorization"), token):
            return await handler(request)
        return web.json_response(
            {"error": "unauthorized",
             "detail": "this processor requires `Authorization: Bearer <AGENTSTREAM_API_TOKEN>`"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="agentstream"'},
        )

    return guard


def protect(app: faust.App, token: str | None) -> None:
    """Put the guard in front of every route of `app`'s web server when a token is set (before it starts)."""
    if not token:
        return
    server = app.web
    if not isinstance(server, AiohttpWeb):  # the only driver Faust has; a new one must be guarded too
        raise TypeError(f"cannot guard Faust web driver {type(server).__name__}")
    server.web_app.middlewares.insert(0, bearer_guard(token))  # first: before anything Faust may add
