"""One agent's live state: its instance, its loop and what its coroutines wait for.

`LiveAgent` is the `AgentRuntime` behind `agent.step`, `condition` and friends. The
engine feeds it one input per turn and drains its loop; it records the commands the
code issued. The same class replays a journal (mode REPLAY) and re-runs waiting
coroutines for compaction (mode RERUN); in both, nothing it issues is sent.

Every value handed to agent code (fields, payloads, step and child results) is its own
copy, so nothing the code mutates can reach back into the record or the journal.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
import uuid as uuidlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from functools import cache
from typing import Any, NoReturn

from pydantic_core import to_jsonable_python

from agentstream.agents._context import AgentInfo, AgentRuntime, ChildHandle, StepOptions
from agentstream.agents._registry import AgentDefinition
from agentstream.agents.exceptions import ChildFailedError, StepFailedError, TimeoutError
from agentstream.topics import AgentStatus, ParentRef, derived_message_id, run_id_for

from . import waits
from .commands import Cancel, ChildCall, Command, EmitCall, SendCall, StepCall, TimerCall
from .fields import field_types, json_copy, make_instance, with_types
from .loop import AgentLoop
from .record import Consumed, Outcome, Seed, WaitKind, Waiting


class Mode(Enum):
    LIVE = "live"
    REPLAY = "replay"
    RERUN = "rerun"


@dataclass(frozen=True)
class Identity:
    agent_id: str
    agent_type: str
    run_id: str
    task_queue: str
    started_at: datetime
    parent: ParentRef | None = None


class LiveAgent(AgentRuntime):
    def __init__(
        self,
        definition: AgentDefinition,
        identity: Identity,
        fields: dict[str, Any] | None,
        *,
        next_seq: int,
        draws: int,
        mode: Mode,
        continue_as_new_after: int,
    ) -> None:
        self.definition = definition
        self.identity = identity
        self.mode = mode
        self.continue_as_new_after = continue_as_new_after
        self.loop = AgentLoop(self)  # type: ignore[abstract]  # only what asyncio tasks use is needed
        self.instance = make_instance(definition.cls, fields)
        self.next_seq = next_seq
        self.draws = draws
        self.revision = 0
        self.journal_length = 0
        self.current_time = identity.started_at
        self.issued: list[Command] = []
        self._waiting: dict[int, asyncio.Future[Any] | asyncio.TimerHandle] = {}
        self._loop_timers: dict[int, int] = {}  # id(TimerHandle) -> seq
        self._conditions: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._what: dict[int, tuple[WaitKind, str]] = {}  # id of a future code awaits -> what it stands for (waits.py)
        self.seeds: dict[asyncio.Task[Any], Seed] = {}
        self._consumed: dict[asyncio.Task[Any], list[Consumed]] = {}
        self._prologues: dict[asyncio.Task[Any], deque[Consumed]] = {}
        self.run_task: asyncio.Task[Any] | None = None

    # -- driven by the engine ----------------------------------------------------------

    def begin_turn(self, at: datetime, journal_length: int) -> None:
        self.current_time = at
        self.journal_length = journal_length
        self.loop.set_time(at.timestamp())
        self.issued = []

    def start(self, seed: Seed) -> asyncio.Task[Any]:
        """Start `run` or an event handler (through the class: a field may share its name)."""
        definition = self.definition
        if seed.kind == "run":
            assert definition.run_method is not None
            method, parameter = definition.run_method, definition.run_parameter
        else:
            event = definition.events[seed.name or ""]
            method, parameter = event.method_name, event.parameter
        args = [] if parameter is None else parameter.arguments(json_copy(seed.payload))
        coro = getattr(definition.cls, method)(self.instance, *args)
        task = self.loop.create_task(coro, name=f"{self.identity.agent_id}:{seed.name or seed.kind}")
        self.seeds[task] = seed
        self._consumed[task] = []
        self._prologues[task] = deque(seed.prologue)
        if seed.kind == "run":
            self.run_task = task
        return task

    def drain(self) -> None:
        self.loop.run_until_blocked(self._settle_one_condition)

    def resolve(self, seq: int, outcome: Outcome) -> bool:
        """Hand a step's or child's outcome to the code awaiting it; False if nobody waits."""
        waiter = self._waiting.get(seq)
        if not isinstance(waiter, asyncio.Future) or waiter.done():
            return False
        del self._waiting[seq]
        waiter.set_result(outcome)
        return True

    def fire_timer(self, seq: int) -> bool:
        waiter = self._waiting.pop(seq, None)
        if waiter is None:
            return False
        if isinstance(waiter, asyncio.TimerHandle):
            self._loop_timers.pop(id(waiter), None)
            self.loop.fire(waiter)
        elif not waiter.done():
            waiter.set_result(None)
        return True

    def waiting_seqs(self) -> set[int]:
        return set(self._waiting)

    def finished_seeds(self) -> list[tuple[Seed, asyncio.Task[Any]]]:
        """Seeds (run or handlers) that finished since the last call; they are forgotten."""
        done = [(seed, task) for task, seed in self.seeds.items() if task.done()]
        for _, task in done:
            del self.seeds[task]
            self._consumed.pop(task, None)
            self._prologues.pop(task, None)
        return done

    def snapshot_fields(self) -> dict[str, Any]:
        return to_jsonable_python(vars(self.instance))  # type: ignore[no-any-return]

    def base_fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        """`fields`, this agent's snapshot, as a base keeps them: with the types of its
        unannotated non-JSON values, so a restore hands the code the same kinds of objects."""
        try:
            return with_types(fields, field_types(self.definition.cls, vars(self.instance)))
        except Exception:  # cannot name them: they come back as plain JSON (compaction sees it)
            return fields

    def is_quiescent(self) -> bool:
        """Nothing in flight, and every live coroutine is a seed waiting on a condition."""
        if self._waiting:
            return False
        condition_futures = {id(future) for _, future in self._conditions}
        for task in self.loop.live_tasks():
            if task not in self.seeds or id(getattr(task, "_fut_waiter", None)) not in condition_futures:
                return False
        return True

    def waiting_seeds(self) -> list[Seed]:
        """The seeds to restart at a new base, each with what it received so far."""
        return [
            seed.model_copy(update={"prologue": list(self._consumed[task])})
            for task, seed in self.seeds.items()
            if not task.done()
        ]

    def wait_states(self) -> list[tuple[WaitFrame, ...]] | None:
        """Where each waiting seed is suspended, with the locals of its own frames as JSON.

        None if a local cannot be snapshotted: then nobody can show that a restart
        would rebuild it, and compaction must not happen.
        """
        try:
            return [_await_stack(task.get_coro(), self.instance) for task in self.seeds if not task.done()]
        except Exception:
            return None

    def waits(self) -> list[Waiting]:
        """What each live coroutine is suspended on, for people (`AgentRecord.waiting`)."""
        found = []
        for task in self.loop.live_tasks():
            seed = self.seeds.get(task)
            coro = task.get_coro()
            on, detail = self._what.get(id(getattr(task, "_fut_waiter", None)), ("other", ""))
            found.append(Waiting(
                # a task the code started is named by its function: asyncio's "Task-N" differs per process
                coroutine=(seed.name or seed.kind) if seed is not None else getattr(coro, "__qualname__", "task"),
                on=on, detail=detail, where=waits.innermost(coro, _is_machinery),
            ))
        return found

    def forget_prologues(self) -> None:
        for prologue in self._prologues.values():
            prologue.clear()

    def _settle_one_condition(self) -> bool:
        for predicate, future in self._conditions:
            if future.done():
                continue
            try:
                ready = predicate()
            except Exception as exc:  # the predicate's error surfaces where it is awaited
                future.set_exception(exc)
                return True
            if ready:
                future.set_result(True)
                return True
        return False

    # -- AgentRuntime: what agent code calls -------------------------------------------

    def info(self) -> AgentInfo:
        identity = self.identity
        return AgentInfo(
            agent_id=identity.agent_id,
            agent_type=identity.agent_type,
            run_id=identity.run_id,
            task_queue=identity.task_queue,
            started_at=identity.started_at,
            parent_agent_id=identity.parent.agent_id if identity.parent else None,
            parent_run_id=identity.parent.run_id if identity.parent else None,
            journal_length=self.journal_length,
            is_replaying=self.is_replaying(),
        )

    def is_replaying(self) -> bool:
        return self.mode is not Mode.LIVE

    def now(self) -> datetime:
        return self.current_time

    def _draw(self) -> bytes:
        self.draws += 1
        return hashlib.sha256(f"{self.identity.run_id}:{self.draws}".encode()).digest()

    def uuid(self) -> str:
        return str(uuidlib.UUID(bytes=self._draw()[:16], version=4))

    def random(self) -> float:
        return int.from_bytes(self._draw()[:7], "big") / float(1 << 56)

    def should_continue_as_new(self) -> bool:
        return self.journal_length >= self.continue_as_new_after

    def continue_as_new(self, agent_input: Any) -> NoReturn:
        raise AssertionError("agent.agent_continue_as_new raises ContinueAsNew itself")

    def log_context(self) -> dict[str, Any]:
        return {"agent_id": self.identity.agent_id, "run_id": self.identity.run_id,
                "agent_type": self.identity.agent_type}

    async def step(self, function: str, function_input: Any, options: StepOptions) -> Any:
        task = asyncio.current_task()
        outcome = self._reuse(task, "step", function, function_input)
        if outcome is None:
            seq = self._take_seq()
            outcome = await self._await(seq, StepCall(seq, function, function_input, options))
            self._remember(task, Consumed(kind="step", key=function, input=function_input, outcome=outcome))
        if not outcome.ok:
            raise StepFailedError(
                f"step {function} failed after {outcome.attempts} attempt(s): {outcome.error_type}: {outcome.message}",
                function=function,
                error_type=outcome.error_type or "Error",
                attempts=outcome.attempts,
            )
        return json_copy(outcome.value)  # the journal keeps the original

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        seq = self._take_seq()
        await self._await(seq, TimerCall(seq, self.loop.time() + seconds))

    async def condition(self, predicate: Callable[[], Any], timeout: float | None) -> bool:
        if predicate():
            return True
        future: asyncio.Future[Any] = self.loop.create_future()
        entry = (predicate, future)
        self._conditions.append(entry)
        self._what[id(future)] = waits.for_condition(
            predicate, None if timeout is None else self.loop.time() + timeout)
        timer_seq: int | None = None
        if timeout is not None:
            timer_seq = self._take_seq()
            timer: asyncio.Future[Any] = self.loop.create_future()
            self._issue(TimerCall(timer_seq, self.loop.time() + timeout), timer_seq, timer)

            def expire(fired: asyncio.Future[Any]) -> None:
                if not fired.cancelled() and not future.done():
                    future.set_exception(TimeoutError(f"condition not met within {timeout}s"))

            timer.add_done_callback(expire)
        try:
            return bool(await future)
        finally:
            self._conditions.remove(entry)
            del self._what[id(future)]
            if timer_seq is not None and timer_seq in self._waiting:
                self._cancel(timer_seq)

    async def child(self, agent_type: str, agent_id: str | None, agent_input: Any, wait: bool) -> Any:
        task = asyncio.current_task()
        key = f"{agent_type}/{agent_id or ''}"
        outcome = self._reuse(task, "child", key, agent_input) if wait else None
        if outcome is None:
            seq = self._take_seq()
            identity = self.identity
            child_id = agent_id or f"{identity.agent_id}-child{seq}-{identity.run_id[:6]}"
            message_id = derived_message_id(identity.run_id, f"child:{seq}")
            call = ChildCall(seq, agent_type, child_id, agent_input, wait, message_id)
            if not wait:
                self._issue(call)
                return ChildHandle(agent_id=child_id, run_id=run_id_for(message_id), agent_type=agent_type)
            outcome = await self._await(seq, call)
            self._remember(task, Consumed(kind="child", key=key, input=agent_input, outcome=outcome))
        if not outcome.ok:
            raise ChildFailedError(
                f"child {agent_type} ended {outcome.error_type}: {outcome.message}",
                child_id=agent_id or "", status=outcome.error_type or AgentStatus.FAILED.value,
            )
        return json_copy(outcome.value)  # the journal keeps the original

    def emit(self, type: str, data: Any, update: bool) -> None:
        task = asyncio.current_task()
        if self._reuse(task, "emit", type, data) is not None:
            return  # a coroutine restarted after compaction: it was published before
        seq = self._take_seq()
        self._issue(EmitCall(seq, type, data, update))
        self._remember(task, Consumed(kind="emit", key=type, input=data, outcome=Outcome(ok=True)))

    def send(self, kind: str, agent_id: str, name: str, payload: Any) -> None:
        task = asyncio.current_task()
        key = f"{kind}:{agent_id}:{name}"
        if self._reuse(task, "send", key, payload) is not None:
            return  # a coroutine restarted after compaction: it was sent before
        seq = self._take_seq()
        self._issue(SendCall(seq, kind, agent_id, name, payload))  # type: ignore[arg-type]  # checked by the API
        self._remember(task, Consumed(kind="send", key=key, input=payload, outcome=Outcome(ok=True)))

    # -- loop timers: asyncio.sleep / asyncio.timeout in agent code are durable too ------

    def start_loop_timer(self, handle: asyncio.TimerHandle) -> None:
        seq = self._take_seq()
        self._loop_timers[id(handle)] = seq
        self._issue(TimerCall(seq, handle.when()), seq, handle)
        for arg in getattr(handle, "_args", None) or ():  # asyncio.sleep: the future its coroutine awaits
            if isinstance(arg, asyncio.Future):
                self._what[id(arg)] = waits.for_sleep(handle.when())
                arg.add_done_callback(lambda done: self._what.pop(id(done), None))

    def cancel_loop_timer(self, handle: asyncio.TimerHandle) -> None:
        seq = self._loop_timers.pop(id(handle), None)
        if seq is not None and seq in self._waiting:
            self._cancel(seq)

    # -- helpers -----------------------------------------------------------------------

    def _take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq

    def _issue(self, command: Command, seq: int | None = None, waiter: Any = None) -> None:
        self.issued.append(command)
        if seq is not None:
            self._waiting[seq] = waiter

    def _cancel(self, seq: int) -> None:
        del self._waiting[seq]
        self.issued.append(Cancel(seq))

    async def _await(self, seq: int, command: Command) -> Outcome:
        future: asyncio.Future[Any] = self.loop.create_future()
        self._issue(command, seq, future)
        self._what[id(future)] = waits.for_command(command)
        try:
            return await future  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            if seq in self._waiting:
                self._cancel(seq)
            raise
        finally:
            del self._what[id(future)]

    def _reuse(self, task: asyncio.Task[Any] | None, kind: str, key: str, value: Any) -> Outcome | None:
        prologue = self._prologues.get(task) if task is not None else None
        if not prologue:
            return None
        item = prologue[0]
        if item.kind != kind or item.key != key or item.input != value:
            prologue.clear()  # the code took another path: nothing after this can be reused
            return None
        prologue.popleft()
        self._remember(task, item)
        return item.outcome

    def _remember(self, task: asyncio.Task[Any] | None, item: Consumed) -> None:
        if task is not None and task in self._consumed:
            self._consumed[task].append(item)


# (file, function, line, locals as JSON); the locals are None for agentstream's and asyncio's own frames
WaitFrame = tuple[str, str, int, Any]

# Frames of these folders are the machinery (condition's predicate, futures), not agent
# state; agent code, including agentstream's examples, lives elsewhere.
_MACHINERY = frozenset(
    os.path.dirname(os.path.abspath(path))
    for path in (__file__, asyncio.__file__, inspect.getfile(AgentRuntime))
)


@cache
def _is_machinery(filename: str) -> bool:
    return os.path.dirname(os.path.abspath(filename)) in _MACHINERY


def _await_stack(coro: Any, instance: Any) -> tuple[WaitFrame, ...]:
    """Each frame down a coroutine's await chain: where it is suspended, and its locals.

    The locals of the agent's code are snapshotted as JSON, without `self` (the fields
    are compared on their own); raises PydanticSerializationError for a local that is
    not JSON.
    """
    frames: list[WaitFrame] = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        code = frame.f_code
        state = None
        if not _is_machinery(code.co_filename):
            own = {name: value for name, value in frame.f_locals.items() if name != "self" and value is not instance}
            state = to_jsonable_python(own) if own else {}
        frames.append((code.co_filename, code.co_qualname, frame.f_lineno, state))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return tuple(frames)


def utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc)
