"""`AgentClient`: schedule agents, send them events, read their state."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from types import TracebackType
from typing import Any, NoReturn
from urllib.parse import quote

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from pydantic_core import to_jsonable_python
from yarl import URL

from agentstream.streams.broker.profile import detect_profile
from agentstream.streams.dead_letters import read_dead_letters
from agentstream.streams.kafka import connection_failed, partitions_now
from agentstream.streams.kafka import producer as kafka_producer
from agentstream.streams.security import bearer_headers, kafka_options
from agentstream.streams.settings import Settings
from agentstream.streams.stream_in import read_agent_stream
from agentstream.topics import (
    AgentStatus,
    AgentUpdate,
    CancelAgent,
    DeadLetter,
    Envelope,
    ScheduleAgent,
    SendEvent,
    StreamItem,
    TopicNames,
    run_id_for,
)

from ._cron import CRON_TYPE, cron_input
from ._outcome import InputOutcome
from ._registry import type_name
from .exceptions import AgentFailedError, AgentNotFoundError, ApiUnavailableError, InputRejectedError, TimeoutError

ENDED = {AgentStatus.COMPLETED.value, AgentStatus.FAILED.value, AgentStatus.CANCELLED.value}
RESULT_WAIT_S = 25.0  # how long one `get_agent_result` request lets the processor hold it
Wait = float | timedelta | None


class AgentClient:
    """Talks to agents through Kafka (writes) and a processor's HTTP API (reads).

    Connects lazily on first use; use `async with AgentClient() as client:` or call
    `close()` when done. Settings come from `AGENTSTREAM_*` variables unless given.
    One client may be shared by many concurrent tasks: they share one producer.

    Two different timeouts: `api_timeout` bounds one HTTP request to the processor; when
    it runs out (or nothing listens at the API URL) the client raises
    `ApiUnavailableError`, naming the URL and `AGENTSTREAM_API_URL`. agentstream's
    `TimeoutError` means only that an agent did not end within `get_agent_result`'s
    `timeout`.

    Kafka TLS/SASL settings (`AGENTSTREAM_KAFKA_SECURITY_PROTOCOL`, ...) apply to every
    connection it opens; with `AGENTSTREAM_API_TOKEN` its HTTP requests carry the token.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        bootstrap: str | None = None,
        api_url: str | None = None,
        api_timeout: float = 10.0,
    ) -> None:
        self.settings = settings or Settings()
        if bootstrap is not None:
            self.settings = self.settings.model_copy(update={"kafka_bootstrap": bootstrap})
        if api_url is not None:
            self.settings = self.settings.model_copy(update={"api_url": api_url})
        self.names = TopicNames(self.settings.topic_prefix)
        self.api_timeout = api_timeout
        self._producer_cm: Any = None
        self._producer: AIOKafkaProducer | None = None
        # Concurrent first sends must start one producer, not one each: the losers' producers
        # would leak, and closing them under the winner fails later sends with ProducerClosed.
        self._producer_lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None
        self._security: dict[str, Any] | None = None

    def _kafka_options(self) -> dict[str, Any]:
        """TLS/SASL options of every Kafka client this client opens (built once: it reads the key files)."""
        if self._security is None:
            self._security = kafka_options(self.settings)
        return self._security

    async def __aenter__(self) -> "AgentClient":
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        async with self._producer_lock:
            if self._producer_cm is not None:
                producer_cm, self._producer_cm, self._producer = self._producer_cm, None, None
                await producer_cm.__aexit__(None, None, None)
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()

    async def _started_producer(self) -> AIOKafkaProducer:
        """The client's one producer, started by whichever caller gets here first."""
        async with self._producer_lock:
            if self._producer is None:
                security = self._kafka_options()
                profile = await detect_profile(self.settings.kafka_bootstrap, self.settings.embedded_broker, security)
                producer_cm = kafka_producer(self.settings.kafka_bootstrap, profile, security)
                self._producer = await producer_cm.__aenter__()
                self._producer_cm = producer_cm
            return self._producer

    async def _send(self, envelope: Envelope) -> None:
        producer = self._producer if self._producer is not None else await self._started_producer()
        await producer.send_and_wait(self.names.agent_events, key=envelope.key, value=envelope.to_bytes())

    async def schedule_agent(
        self,
        agent_name: str | type,
        agent_id: str | None = None,
        input: Any = None,
        *,
        task_queue: str | None = None,
        idempotency_key: str | None = None,
        wait: Wait = None,
    ) -> str:
        """Start an agent; returns its run ID. `agent_id` defaults to a new unique ID.

        With `wait` (seconds or timedelta), returns only once the processor has applied the
        schedule, and raises `InputRejectedError` if it dead-lettered it (an agent of that ID
        already runs, an unknown type, an input `run` refuses); see `input_outcome`.
        `task_queue` is accepted for compatibility; agents run on processors, which
        take every task queue.
        """
        message = _schedule(agent_name, agent_id, input, idempotency_key)
        await self._send(message)
        run_id = run_id_for(message.message_id)
        await self._confirm(message.agent_id, run_id, wait)
        return run_id

    async def execute_agent(
        self,
        agent_name: str | type,
        agent_id: str | None = None,
        input: Any = None,
        *,
        timeout: float | timedelta | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Start an agent and wait for what its `run` returns: the request/response call.

        `schedule_agent` and `get_agent_result` in one, tied to the run it starts: the result
        of an earlier run under the same ID is never taken for this one's, and a schedule the
        processor rejects (an agent of that ID already runs, an unknown type, an input `run`
        refuses) raises `InputRejectedError` as soon as it is known. Raises
        `AgentFailedError` and agentstream's `TimeoutError` as `get_agent_result` does.
        """
        message = _schedule(agent_name, agent_id, input, idempotency_key)
        await self._send(message)
        run_id = run_id_for(message.message_id)
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        result = asyncio.ensure_future(self._result(message.agent_id, seconds, run_id))
        # The outcome of the schedule, for a rejection only: a result means it was applied.
        confirmed = asyncio.ensure_future(self._confirm(message.agent_id, run_id, seconds or RESULT_WAIT_S))
        try:
            await asyncio.wait({result, confirmed}, return_when=asyncio.FIRST_COMPLETED)
            rejection = confirmed.exception() if confirmed.done() and not confirmed.cancelled() else None
            if isinstance(rejection, InputRejectedError):
                raise rejection
            return await result
        finally:
            for task in (result, confirmed):
                task.cancel()
            await asyncio.gather(result, confirmed, return_exceptions=True)

    async def schedule_cron(
        self, agent_name: str | type, cron: str, *, schedule_id: str | None = None, input: Any = None,
        timezone: str = "UTC", wait: Wait = None,
    ) -> str:
        """Start `agent_name` with `input` on every slot of `cron`, durably, until the schedule is
        cancelled; returns the schedule's ID (an agent of type `agentstream.Cron`: `cancel_agent` it
        to stop). Each run's agent ID is `<schedule ID>@<slot, UTC>`, so a slot runs once. Raises
        ValueError for an expression or time zone it cannot use. `wait` as for `schedule_agent`.
        """
        name = type_name(agent_name)
        spec = cron_input(name, cron, to_jsonable_python(input), timezone)
        schedule_id = schedule_id or f"cron-{name}-{uuid.uuid4().hex[:8]}"
        await self.schedule_agent(CRON_TYPE, schedule_id, spec, wait=wait)
        return schedule_id

    async def send_agent_event(
        self,
        agent_id: str,
        event_name: str,
        event_input: Any = None,
        *,
        run_id: str | None = None,
        idempotency_key: str | None = None,
        wait: Wait = None,
    ) -> str:
        """Deliver an event to an agent; returns the event's message ID.

        With `wait`, returns once the agent applied it and raises `InputRejectedError` if it
        was dead-lettered (no such agent, no such event, a payload the handler refuses).
        """
        message = SendEvent(
            agent_id=agent_id,
            event=event_name,
            payload=to_jsonable_python(event_input),
            run_id=run_id,
            idempotency_key=idempotency_key,
        )
        await self._send(message)
        await self._confirm(agent_id, message.message_id, wait)
        return message.message_id

    async def cancel_agent(
        self, agent_id: str, reason: str | None = None, *, run_id: str | None = None, cancel_children: bool = False,
        wait: Wait = None,
    ) -> str:
        """Stop an agent (and, with `cancel_children`, the children it started); returns the message ID.
        With `wait`, as `send_agent_event`."""
        message = CancelAgent(agent_id=agent_id, reason=reason, run_id=run_id, cancel_children=cancel_children)
        await self._send(message)
        await self._confirm(agent_id, message.message_id, wait)
        return message.message_id

    async def _confirm(self, agent_id: str, input_id: str, wait: Wait) -> None:
        if wait is None:
            return
        outcome = await self.input_outcome(agent_id, input_id, timeout=wait)
        if outcome.rejected:
            raise InputRejectedError(
                f"agent {agent_id!r} rejected input {input_id}: {outcome.reason} ({outcome.reason_code})",
                agent_id=agent_id, input_id=input_id, reason_code=outcome.reason_code, reason=outcome.reason,
            )

    async def input_outcome(self, agent_id: str, input_id: str, timeout: float | timedelta = 30.0) -> InputOutcome:
        """Wait until the processor owning `agent_id` has handled an input sent to it, and say how.

        `input_id` is what the send returned: an event's or cancel's message ID, a schedule's
        run ID. Raises agentstream's `TimeoutError` when no outcome is known within `timeout`
        (no processor running, a backlog, or an input rejected before the processor
        restarted: its dead letter is on the dead-letters topic). The owner holds each
        request until the outcome is known, as for `get_agent_result`.
        """
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        deadline = time.monotonic() + seconds
        pause = 0.02
        while True:
            wait = max(0.0, min(RESULT_WAIT_S, deadline - time.monotonic()))
            agent_url = self._agent_url(agent_id)
            url = agent_url.with_path(f"{agent_url.raw_path}/inputs/{quote(input_id, safe='')}", encoded=True
                                      ).with_query(wait=f"{wait:.3f}")
            status, text = await self._get(url, extra_seconds=wait)
            body = _json_or_none(text)
            if status == 200 and isinstance(body, dict):
                return InputOutcome(agent_id=agent_id, input_id=input_id, outcome=str(body.get("outcome")),
                                    reason_code=body.get("reason_code"), reason=body.get("reason"))
            if status not in (202, 503):  # 503: no processor owns the agent's partition now (a rebalance)
                self._raise_for(status, text, url)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no processor reported what became of input {input_id} of agent {agent_id!r} "
                                   f"within {seconds}s; is a processor running and caught up?")
            if status == 503:
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.25)

    async def get_agent_result(self, agent_id: str, timeout: float | timedelta | None = None) -> Any:
        """Wait until the agent ends and return what its `run` returned.

        Raises AgentFailedError if it failed or was cancelled, and agentstream's
        TimeoutError if it is still running after `timeout` (seconds or timedelta).
        The agent's processor holds each request until the agent ends (up to
        `RESULT_WAIT_S` at a time), so the result arrives as soon as it exists; a
        processor that is not ready (a rebalance) is asked again until the timeout.
        """
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        return await self._result(agent_id, seconds)

    async def _result(self, agent_id: str, seconds: float | None, run_id: str | None = None) -> Any:
        """`get_agent_result`; with `run_id`, only that run's end counts (an earlier run's is waited past)."""
        deadline = None if seconds is None else time.monotonic() + seconds
        pause, shown = 0.02, "not found"
        while True:
            remaining = RESULT_WAIT_S if deadline is None else deadline - time.monotonic()
            wait = max(0.0, min(RESULT_WAIT_S, remaining))
            agent_url = self._agent_url(agent_id)
            url = agent_url.with_path(f"{agent_url.raw_path}/result", encoded=True).with_query(wait=f"{wait:.3f}")
            status, text = await self._get(url, extra_seconds=wait)
            body = _json_or_none(text)
            held = status == 202  # the processor waited for the agent: ask again at once
            other_run = isinstance(body, dict) and run_id is not None and body.get("run_id", run_id) != run_id
            if status in (200, 202) and isinstance(body, dict) and not other_run:
                shown = str(body.get("status"))
                if body.get("status") == AgentStatus.COMPLETED.value:
                    return body.get("result")
                if body.get("status") in ENDED:
                    raise AgentFailedError(
                        f"agent {agent_id!r} {body['status']}: {body.get('error')}",
                        agent_id=agent_id, status=body["status"], error=body.get("error"),
                    )
            elif not (status == 404 and _is_agent_not_found(text) or status == 503 or other_run):
                self._raise_for(status, text, url)
            # else: not scheduled yet (or still an earlier run), or no processor owns its partition now (a rebalance)
            if deadline is not None and time.monotonic() + (0 if held else pause) >= deadline:
                raise TimeoutError(f"agent {agent_id!r} did not end within {seconds}s (status: {shown})")
            if not held:
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.25)

    async def agent_updates(self, agent_id: str, *, from_beginning: bool = True) -> AsyncIterator[AgentUpdate]:
        """The agent's status changes as published on agent-updates, as they happen.

        Reads only the partition that holds the agent's key. `from_beginning=False`
        starts at the end of the topic. The iterator runs until you stop iterating.
        """
        topic = self.names.agent_updates
        security = self._kafka_options()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False, group_id=None, **security
        )
        try:
            await consumer.start()
        except (KafkaError, OSError) as exc:
            await consumer.stop()
            raise await connection_failed(self.settings.kafka_bootstrap, security, exc) from exc
        try:
            partitions = await partitions_now(consumer, topic)
            if not partitions:
                raise AgentNotFoundError(f"topic {topic} does not exist; run `agentstream topics create`")
            key = agent_id.encode()
            partition = TopicPartition(topic, DefaultPartitioner()(key, partitions, partitions))
            consumer.assign([partition])
            if from_beginning:
                await consumer.seek_to_beginning(partition)
            else:
                await consumer.seek_to_end(partition)
            while True:
                batches = await consumer.getmany(partition, timeout_ms=500)
                for record in batches.get(partition, []):
                    if record.key == key:
                        yield AgentUpdate.model_validate_json(record.value)
        finally:
            await consumer.stop()

    async def dead_letters(self, agent_id: str | None = None, *, follow: bool = False) -> AsyncIterator[DeadLetter]:
        """The rejected records on dead-letters, oldest first, each with `reason_code` and `reason`.

        With `agent_id`, only that agent's (the partition that holds its key). Without
        `follow` the iterator ends at the end of the topic as it was when it started;
        with it, it waits for new ones until you stop iterating.
        """
        letters = read_dead_letters(self.settings.kafka_bootstrap, self.names.dead_letters, self._kafka_options(),
                                    agent_id, follow=follow)
        async with contextlib.aclosing(letters):
            async for letter in letters:
                yield letter

    async def stream(
        self, agent_id: str, after: str | None = None, *, follow: bool = True, timeout: float | timedelta | None = None
    ) -> AsyncIterator[StreamItem]:
        """The agent's live output on agent-stream (text deltas, tool calls, run events), in order.

        Each item has `.event` (a `StreamEvent`) and `.cursor`: keep the cursor of the
        last item you handled and pass it as `after` to resume right after it, in this
        process or another, missing nothing and seeing nothing twice. Without `after`
        the stream starts at the oldest event the topic keeps (a day). With `follow` the
        iterator waits for new events until you stop iterating, or until `timeout`
        (seconds or timedelta) passes without one; `follow=False` ends once it has
        what is on the topic now. Reads only the partition that holds the agent's key.
        Raises `InvalidCursorError` for a cursor it did not hand out.
        """
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        security = self._kafka_options()
        profile = await detect_profile(self.settings.kafka_bootstrap, self.settings.embedded_broker, security)
        items = read_agent_stream(
            self.settings.kafka_bootstrap, self.names.agent_stream, agent_id, after,
            follow=follow, idle_timeout=seconds, profile=profile, security=security,
        )
        async with contextlib.aclosing(items):  # stopping this iterator stops the reader's consumer at once
            async for item in items:
                yield item

    def _agent_url(self, agent_id: str) -> URL:
        """The API URL of one agent. The ID is one path segment: `/`, `#`, `?`, `%` are quoted.

        Built as an already-encoded URL so that nothing re-normalises it: an ID `..`
        (sent as `%2E%2E`) must not be resolved away as a relative path.
        """
        segment = quote(agent_id, safe="")
        if segment in (".", ".."):
            segment = segment.replace(".", "%2E")
        base = URL(self.settings.api_url)
        return base.with_path(f"{base.raw_path.rstrip('/')}/agents/{segment}", encoded=True)

    async def get_agent_record(self, agent_id: str) -> dict[str, Any]:
        """The agent's whole stored record, as its owner keeps it (for `agents.testing.replay_record`)."""
        agent_url = self._agent_url(agent_id)
        return await self._agent_json(agent_id, agent_url.with_path(f"{agent_url.raw_path}/record", encoded=True))

    async def list_agents(
        self, *, status: str | list[str] | None = None, agent_type: str | list[str] | None = None,
        prefix: str = "", limit: int = 100,
    ) -> dict[str, Any]:
        """Agents of every processor of the application, sorted by ID: `{"agents": [{agent_id,
        agent_type, status, created_at, updated_at, error}], "truncated": ..., "processors": ...,
        "unreachable": [...]}`. Filters by status(es), type(s) and ID prefix; at most `limit`."""
        query: list[tuple[str, str]] = [("limit", str(limit))]
        for name, wanted in (("status", status), ("type", agent_type)):
            for value in [wanted] if isinstance(wanted, str) else wanted or []:
                query.append((name, value))
        if prefix:
            query.append(("prefix", prefix))
        base = URL(self.settings.api_url)
        url = base.with_path(f"{base.raw_path.rstrip('/')}/agents", encoded=True).with_query(query)
        status_code, text = await self._get(url)
        if status_code == 400:
            raise ValueError(str((_json_or_none(text) or {}).get("detail", text)))
        if status_code != 200:
            self._raise_for(status_code, text, url)
        return json.loads(text)  # type: ignore[no-any-return]

    async def get_agent_state(self, agent_id: str) -> dict[str, Any]:
        """The agent's record as its owning processor has it now.

        Raises AgentNotFoundError if the processor does not know the agent, and
        ApiUnavailableError if no processor answers at the API URL within `api_timeout`.
        """
        if not agent_id:
            raise AgentNotFoundError("no agent has an empty ID")
        return await self._agent_json(agent_id, self._agent_url(agent_id))

    async def _agent_json(self, agent_id: str, url: URL) -> dict[str, Any]:
        """GET one of an agent's resources: its JSON, AgentNotFoundError, or the API's error."""
        status, text = await self._get(url)
        if status == 404 and _is_agent_not_found(text):
            raise AgentNotFoundError(f"no agent {agent_id!r}: it was never scheduled, or is not processed yet")
        if status != 200:
            self._raise_for(status, text, url)
        return json.loads(text)  # type: ignore[no-any-return]

    async def _get(self, url: URL, extra_seconds: float = 0.0) -> tuple[int, str]:
        """GET `url` from the processor API: (status, body); ApiUnavailableError when nobody answers."""
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.api_timeout), headers=bearer_headers(self.settings)
            )
        try:
            async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=self.api_timeout + extra_seconds)
                                      ) as response:
                return response.status, await response.text()
        except (aiohttp.ClientError, builtins.TimeoutError, OSError) as exc:
            why = f"no answer within {self.api_timeout}s" if isinstance(exc, builtins.TimeoutError) else repr(exc)
            raise ApiUnavailableError(
                f"no processor answered at {url} ({why}); start one with `agentstream dev` or "
                "`agentstream processor`, or set AGENTSTREAM_API_URL to a processor's HTTP address "
                f"(now {self.settings.api_url})"
            ) from exc

    def _raise_for(self, status: int, text: str, url: URL) -> NoReturn:
        if status == 404:
            raise ApiUnavailableError(
                f"{url} answered HTTP 404 but not as an agentstream processor; check AGENTSTREAM_API_URL "
                f"(now {self.settings.api_url})"
            )
        if status == 401:
            raise ApiUnavailableError(
                f"{url} answered HTTP 401: the processor requires an API token; set AGENTSTREAM_API_TOKEN to "
                "the processor's token" + (" (the one set is refused)" if self.settings.api_token else "")
            )
        raise ApiUnavailableError(f"{url} answered HTTP {status}: {text[:300]}")


def _json_or_none(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _is_agent_not_found(body: str) -> bool:
    """Whether a 404 body is a processor's "no such agent" (not another server's missing page)."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return False
    return isinstance(decoded, dict) and decoded.get("error") == "agent_not_found"


def _schedule(agent_name: str | type, agent_id: str | None, input: Any, idempotency_key: str | None) -> ScheduleAgent:
    name = type_name(agent_name)
    return ScheduleAgent(
        agent_id=agent_id or f"{name}-{uuid.uuid4().hex[:12]}",
        agent_type=name,
        input=to_jsonable_python(input),
        idempotency_key=idempotency_key,
    )
