"""`GET /agents/{agent_id}/stream`: an agent's `agent-stream` as Server-Sent Events, on every processor.

Each request reads the topic itself (`StreamReader`: the agent's partition, no consumer
group), so any processor serves any agent and a browser's `EventSource` needs nothing
but this URL. Each event is one frame:

    id: <cursor>
    event: <type>
    data: <the StreamEvent envelope as one line of JSON>

The `id` is the event's cursor; `EventSource` sends the last one back as `Last-Event-ID`
when it reconnects, and the stream resumes right after it (`?after=<cursor>` does the
same for the first connection; the header wins). `?follow=false` ends the response once
the backlog is sent; otherwise it stays open, following new events, with a comment line
every 15 s of silence so proxies keep the connection and a gone client is noticed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, cast

from aiohttp import web as aiohttp_web
from faust import web

from agentstream.topics import ConfigurationError, InvalidCursorError, StreamItem

from ..broker.profile import BrokerProfile, detect_profile
from ..exceptions import BrokerUnavailableError
from ..stream_in import POLL_S, StreamReader

if TYPE_CHECKING:
    from .app import Processor

HEARTBEAT_S = 15.0
HEARTBEAT = b": heartbeat\n\n"
FOLLOW_VALUES = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def sse_frame(item: StreamItem) -> bytes:
    """One event as an SSE frame; the envelope's JSON has no newline, so one `data:` line holds it."""
    return f"id: {item.cursor}\nevent: {item.event.type}\ndata: {item.event.model_dump_json()}\n\n".encode()


class Reader(Protocol):
    async def poll(self, timeout_s: float) -> list[StreamItem]: ...

    async def caught_up(self) -> bool: ...


class StreamPump:
    """Moves events from a reader to an SSE response until caught up (no follow), stopped, or the client leaves."""

    def __init__(
        self,
        reader: Reader,
        write: Callable[[bytes], Awaitable[None]],
        *,
        follow: bool,
        heartbeat_s: float = HEARTBEAT_S,
        clock: Callable[[], float] = time.monotonic,
        stopped: Callable[[], bool] = lambda: False,
    ) -> None:
        self._reader = reader
        self._write = write
        self._follow = follow
        self._heartbeat_s = heartbeat_s
        self._clock = clock
        self._stopped = stopped

    async def run(self) -> None:
        last_write = self._clock()
        try:
            while not self._stopped():
                if not self._follow and await self._reader.caught_up():
                    return
                items = await self._reader.poll(min(POLL_S, self._heartbeat_s))
                for item in items:
                    await self._write(sse_frame(item))
                now = self._clock()
                if items:
                    last_write = now
                elif now - last_write >= self._heartbeat_s:
                    await self._write(HEARTBEAT)
                    last_write = now
        except ConnectionResetError:  # the client is gone: nothing to tell anyone
            return


def _problem(view: web.View, status: int, error: str, detail: str) -> web.Response:
    return view.json({"error": error, "detail": detail}, status=status)


def register_stream_view(processor: "Processor") -> None:
    app, names = processor.app, processor.names
    bootstrap = ",".join(f"{url.host}:{url.port or 9092}" for url in app.conf.broker)
    profiles: list[BrokerProfile] = []  # detected once, on the first request

    async def profile() -> BrokerProfile:
        if not profiles:
            profiles.append(await detect_profile(bootstrap, security=processor.security))
        return profiles[0]

    @app.page("/agents/{agent_id}/stream")
    async def agent_stream(self: web.View, request: web.Request, agent_id: str) -> web.Response:
        http = cast(aiohttp_web.Request, request)
        after = http.headers.get("Last-Event-ID") or http.query.get("after") or None
        follow = FOLLOW_VALUES.get(http.query.get("follow", "true").lower())
        if follow is None:
            return _problem(self, 400, "invalid_follow", "follow must be true or false")
        try:
            reader = StreamReader(bootstrap, names.agent_stream, agent_id, after, profile=await profile(),
                                  security=processor.security)
            await reader.start()
        except InvalidCursorError as exc:
            return _problem(self, 400, "invalid_cursor", str(exc))
        except (ConfigurationError, BrokerUnavailableError) as exc:
            return _problem(self, 503, "stream_unavailable", str(exc))
        try:
            response = aiohttp_web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream; charset=utf-8",
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",  # nginx: pass each frame on at once
                }
            )
            await response.prepare(http)

            def stopped() -> bool:
                transport = http.transport
                return app.should_stop or transport is None or transport.is_closing()

            await StreamPump(reader, response.write, follow=follow, stopped=stopped).run()
            with contextlib.suppress(ConnectionResetError):
                await response.write_eof()
        finally:
            await reader.stop()
        return cast(web.Response, response)
