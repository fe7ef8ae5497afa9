"""`ScriptedLLM`: an OpenAI-compatible HTTP server that answers from a script.

Tests of LLM agents must run the real `openai` client over real HTTP (its retries,
its SSE parser, its stream accumulation) without a model or a key. This server plays
the model: each `POST /v1/chat/completions` takes the next scripted `Reply` (or asks a
`responder` once the script is used up) and answers exactly as the real API would,
streamed or not; errors, slow tokens and cut connections are part of the script. It
records every chat request so a test can assert what the model was sent.

It runs in the caller's event loop (`async with ScriptedLLM(...)`) or, for synchronous
code, in a thread of its own (`with ScriptedLLM(...)`, `start_in_thread()` / `stop()`).
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

from . import _wire
from ._replies import HttpError, Reply

__all__ = ["RecordedRequest", "Responder", "ScriptedLLM"]

Responder = Callable[[dict[str, Any]], Reply]
"""Answers a request (its JSON body) once the script is used up, e.g. by its last user message."""

_SECRET_HEADERS = frozenset({"authorization", "api-key", "openai-api-key"})


@dataclass(frozen=True)
class RecordedRequest:
    """One chat completion request as received: number (from 1), JSON body, headers (names lowercased, secrets redacted)."""

    number: int
    body: dict[str, Any]
    headers: dict[str, str] = field(repr=False)
    raw: str = field(default="", repr=False)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The conversation the model was sent."""
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []

    @property
    def tools(self) -> list[dict[str, Any]] | None:
        """The tool schemas the model was offered, if any."""
        tools = self.body.get("tools")
        return tools if isinstance(tools, list) else None

    @property
    def response_format(self) -> dict[str, Any] | None:
        """The requested response format (e.g. a strict `json_schema`), if any."""
        response_format = self.body.get("response_format")
        return response_format if isinstance(response_format, dict) else None

    @property
    def stream(self) -> bool:
        """Whether the client asked for a streamed answer."""
        return self.body.get("stream") is True

    @property
    def last_user_message(self) -> str | None:
        """The text of the last user message (text parts joined), if there is one."""
        for message in reversed(self.messages):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list):
                    return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
                return content if isinstance(content, str) else None
        return None


class ScriptedLLM:
    """A scripted OpenAI-compatible server on 127.0.0.1 and a free port; `base_url` ends in `/v1`.

    Replies are served in request arrival order. When none is left, `responder` (if
    given) answers; otherwise the request gets a 500 saying so, with `x-should-retry:
    false` so the client's retries do not hide which request ran out.
    """

    def __init__(
        self,
        script: Iterable[Reply] = (),
        *,
        responder: Responder | None = None,
        model: str = "scripted-model",
        shutdown_timeout: float = 1.0,
    ) -> None:
        self._script: collections.deque[Reply] = collections.deque(script)
        self._scripted = len(self._script)
        self._responder = responder
        self._model = model
        self._shutdown_timeout = shutdown_timeout
        self._lock = threading.Lock()  # the script and the records are shared with the server's thread
        self._requests: list[RecordedRequest] = []
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_stop: asyncio.Event | None = None

    # What tests read and change.

    @property
    def base_url(self) -> str:
        """The URL to give `openai.AsyncOpenAI(base_url=...)`."""
        if self._port is None:
            raise RuntimeError("ScriptedLLM is not running: use `async with`, `with` or start_in_thread()")
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every chat completion request received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def remaining(self) -> int:
        """How many scripted replies are still unused."""
        with self._lock:
            return len(self._script)

    def add(self, *replies: Reply) -> None:
        """Appends replies to the script (safe from any thread while the server runs)."""
        with self._lock:
            self._script.extend(replies)
            self._scripted += len(replies)

    # Running in the caller's event loop.

    async def start(self) -> ScriptedLLM:
        """Starts serving in the running event loop."""
        if self._runner is not None:
            raise RuntimeError("ScriptedLLM is already running")
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        return self

    async def close(self) -> None:
        """Stops serving; open streams are ended after `shutdown_timeout`."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> ScriptedLLM:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # Running in a thread of its own, for synchronous code.

    def start_in_thread(self, timeout: float = 10.0) -> ScriptedLLM:
        """Starts serving on an event loop in a daemon thread; returns once the port is open."""
        if self._thread is not None or self._runner is not None:
            raise RuntimeError("ScriptedLLM is already running")
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            self._thread_loop = asyncio.get_running_loop()
            self._thread_stop = asyncio.Event()
            try:
                await self.start()
            except BaseException as error:  # handed to the starting thread
                failure.append(error)
                return
            finally:
                ready.set()
            try:
                await self._thread_stop.wait()
            finally:
                await self.close()

        self._thread = threading.Thread(target=asyncio.run, args=(serve(),), name="scripted-llm", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"ScriptedLLM did not start within {timeout} s")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stops a server started with `start_in_thread()` and waits for its thread."""
        thread, loop, stop = self._thread, self._thread_loop, self._thread_stop
        if thread is None or loop is None or stop is None:
            return
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"ScriptedLLM did not stop within {timeout} s")
        self._thread = self._thread_loop = self._thread_stop = None

    def __enter__(self) -> ScriptedLLM:
        return self.start_in_thread()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.stop()

    # The endpoints.

    async def _models(self, request: web.Request) -> web.Response:
        model = {"id": self._model, "object": "model", "created": 0, "owned_by": "agentstream"}
        return web.json_response({"object": "list", "data": [model]})

    async def _not_found(self, request: web.Request) -> web.Response:
        message = f"scripted LLM: no route {request.method} {request.path} (it serves POST /v1/chat/completions, GET /v1/models)"
        return _error_response(HttpError(404, message, "invalid_request_error", "unknown_url"))

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        raw = await request.text()
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = None
        body: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        headers = {name.lower(): value for name, value in request.headers.items()}
        headers.update({name: "<redacted>" for name in _SECRET_HEADERS & headers.keys()})
        with self._lock:
            number = len(self._requests) + 1
            self._requests.append(RecordedRequest(number, body, headers, raw))
            problem = _invalid(parsed)
            reply = self._script.popleft() if problem is None and self._script else None
            scripted = self._scripted
        if problem is not None:
            return _error_response(HttpError(400, problem, "invalid_request_error"))
        if reply is None:
            reply_or_error = self._ask_responder(body, number, scripted)
            if isinstance(reply_or_error, HttpError):
                return _error_response(reply_or_error, retry=False)
            reply = reply_or_error
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.error is not None:
            return _error_response(reply.error)
        answer = _wire.bind(reply, body)
        if body.get("stream") is True:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return await _stream(request, answer, include_usage)
        if reply.cut_after is not None:
            _cut(request)
            return web.Response()  # aiohttp finds the connection closed and sends nothing
        if reply.token_delay:
            await asyncio.sleep(reply.token_delay * sum(chunk.is_token for chunk in _wire.chunks(answer, False)))
        return web.json_response(_wire.completion(answer), headers=_request_id())

    def _ask_responder(self, body: dict[str, Any], number: int, scripted: int) -> Reply | HttpError:
        """The responder's reply, or the 500 that explains why there is none."""
        if self._responder is None:
            message = f"scripted LLM: no reply left for request #{number} (the script had {scripted}, and no responder)"
            return HttpError(500, message, "server_error", "script_exhausted")
        try:
            reply = self._responder(body)
        except Exception as error:  # the test's own bug: show it to the client that asked
            message = f"scripted LLM: the responder failed on request #{number}: {type(error).__name__}: {error}"
            return HttpError(500, message, "server_error", "responder_failed")
        if not isinstance(reply, Reply):
            message = f"scripted LLM: the responder returned {type(reply).__name__} for request #{number}, not a Reply"
            return HttpError(500, message, "server_error", "responder_failed")
        return reply


def _invalid(body: Any) -> str | None:
    """Why the real API would refuse this body with a 400, or None."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request. (scripted LLM: the body is not a JSON object)"
    if not isinstance(body.get("model"), str):
        return "Missing required parameter: 'model'."
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return "Missing required parameter: 'messages'."
    return None


def _request_id() -> dict[str, str]:
    return {"x-request-id": "req_" + uuid.uuid4().hex}


def _error_response(error: HttpError, retry: bool | None = None) -> web.Response:
    """The real API's error answer; `retry=False` tells the openai client not to retry it."""
    headers = _request_id()
    if error.retry_after is not None:
        seconds = error.retry_after
        headers["retry-after"] = str(int(seconds)) if seconds == int(seconds) else str(seconds)
    if retry is not None:
        headers["x-should-retry"] = "true" if retry else "false"
    return web.json_response(error.body(), status=error.status, headers=headers)


def _cut(request: web.Request) -> None:
    """Closes the connection after what was written so far, as a dropped network would.

    An HTTP/1.1 chunked body then ends without its last chunk, which the client reports
    as an incomplete response (the openai client raises `APIConnectionError`).
    """
    if request.transport is not None:
        request.transport.close()


async def _stream(request: web.Request, answer: _wire.Answer, include_usage: bool) -> web.StreamResponse:
    """Sends the answer as Server-Sent Events, waiting before tokens and cutting where the reply says."""
    reply = answer.reply
    chunks = _wire.chunks(answer, include_usage)
    events = [(json.dumps(chunk.data, separators=(",", ":")), chunk.is_token) for chunk in chunks]
    events.append(("[DONE]", False))
    headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", **_request_id()}
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    try:
        for index, (event, is_token) in enumerate(events):
            if reply.cut_after is not None and index >= reply.cut_after:
                _cut(request)
                return response
            if is_token and reply.token_delay:
                await asyncio.sleep(reply.token_delay)
            await response.write(f"data: {event}\n\n".encode())
    except ConnectionResetError:
        pass  # the client went away: nothing more to send
    return response
