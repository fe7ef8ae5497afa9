"""The durable agent behind every `LLMAgent`: a session whose state is the conversation.

One agent ID is one conversation (Restate's virtual-object model). Each `message`
event runs the loop once: the model is called as a step, the tools it asks for run as
steps (in parallel) or child agents, tools that need approval wait durably for an
`approve` / `reject` event, and the answer is returned as the event's result. Messages
are answered one at a time, in arrival order. Scheduled with a task (`input`), the
agent runs the loop once on it and completes with the `RunResult`.

Everything here runs inside the engine's deterministic loop: no I/O, no clocks.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

from agentstream.agents._agent import agent, condition
from agentstream.agents.exceptions import TimeoutError

from ._calls import CALL_FUNCTION, Message, ModelCall, ModelResponse, Usage
from ._memory import Recalled
from ._tools import Tool, ToolArgumentsError
from ._types import ApprovalRequest, Decision, RunResult, StopReason, UserMessage

SETTLED_KEPT = 100  # decided approval requests remembered, to say why a late decision is refused
SHOWN_CHARS = 2000  # of tool arguments and results in stream events


class ApprovalError(ValueError):
    """A decision for an approval request that is not waiting (unknown, decided, timed out)."""


class LLMSession:
    """Template of the generated agent classes (copied per `LLMAgent`, never subclassed)."""

    spec: ClassVar[Any]  # the LLMAgent this class was generated for

    history: list[dict[str, Any]]
    summary: str | None
    usage: Usage
    runs: int
    pending: dict[str, ApprovalRequest]
    decisions: dict[str, Decision | None]  # request ID -> the decision; None: rejected by its timeout
    approved: dict[str, bool]
    settled: dict[str, str]
    busy: bool  # a run is in progress (or its `resume` has not come back yet)
    served: int  # runs finished; names the `resume` that may start the next
    closed: bool
    user: str | None
    recalling: list[str]  # recall requests waiting for the memory agent's answer
    recalled: dict[str, list[str]]

    def __init__(self) -> None:
        self.history = []
        self.summary = None
        self.usage = Usage()
        self.runs = 0
        self.pending = {}
        self.decisions = {}
        self.approved = {}
        self.settled = {}
        self.busy = False
        self.served = 0
        self.closed = False
        self.user = None
        self.recalling = []
        self.recalled = {}

    # -- inputs ----------------------------------------------------------------------------

    @agent.run
    async def run(self, task: str | None = None) -> RunResult | None:
        """With a task: answer it once and complete. Without: a session, open until `close`."""
        if task is not None:
            return await self._respond(task, resume=False)
        await condition(lambda: self.closed)
        return None

    @agent.event
    async def message(self, message: UserMessage) -> RunResult:
        """One user turn: answered after the messages before it."""
        return await self._respond(message.text, user=message.user)

    @agent.event
    async def approve(self, decision: Decision) -> str:
        return self._decide(decision, approved=True)

    @agent.event
    async def reject(self, decision: Decision) -> str:
        return self._decide(decision, approved=False)

    @agent.event
    async def resume(self, served: int) -> None:
        """Sent by the session to itself when a run ends: the next waiting message may start."""
        if served == self.served:
            self.busy = False

    @agent.event
    async def memory_recalled(self, recalled: Recalled) -> None:
        """The memory agent's answer to a `recall` (late answers are dropped)."""
        if recalled.request_id in self.recalling:
            self.recalled[recalled.request_id] = recalled.facts

    @agent.event
    async def close(self) -> None:
        """End the session once the messages already received are answered."""
        self.closed = True

    # -- the loop -------------------------------------------------------------------------

    async def _respond(self, text: str, *, user: str | None = None, resume: bool = True) -> RunResult:
        """Run the loop for one message, after the ones before it (in arrival order).

        Nothing may change before the wait: a message still waiting when the journal is
        compacted is restarted from here and must come back to the same state. And the
        next message starts only in a later turn, on the `resume` this run sends itself
        when it ends, so the turn that ends a run has nothing in flight and the journal
        can be compacted even when messages keep arriving.
        """
        await condition(lambda: not self.busy)
        self.busy = True
        if user is not None:
            self.user = user
        start = len(self.history)
        try:
            self.history.append({"role": "user", "content": text})
            await self._fit_history()
            start = len(self.history) - 1  # this run's messages begin at its user message, after the cut
            self.runs += 1
            result = await self._loop(self.runs, text)
            self.usage = self.usage + result.usage
        except (GeneratorExit, asyncio.CancelledError):
            raise  # the coroutine is discarded or the agent cancelled: nothing durable may happen now
        except BaseException:
            del self.history[start:]  # a failed run leaves the conversation as it was before it
            self._end_run(resume)
            raise
        self._end_run(resume)
        return result

    def _end_run(self, resume: bool) -> None:
        self.served += 1
        if resume:
            agent.send(agent.agent_info().agent_id, "resume", self.served)
        else:
            self.busy = False

    async def _loop(self, run: int, text: str) -> RunResult:
        spec = self.spec
        agent.emit("run_started", {"run": run, "input": text[:SHOWN_CHARS]})
        usage, turns, calls, stop = Usage(), 0, 0, "done"
        final: ModelResponse | None = None
        while True:
            if turns >= spec.max_turns:
                stop = "max_turns"
                break
            if spec.budget is not None and spec.budget.exhausted(usage):
                stop = "budget"
                break
            response = await self._call_model(self._prompt(), with_tools=True)
            turns += 1
            usage = usage + response.usage
            self.history.append(response.message)
            requested = response.tool_calls
            if not requested:
                final = response
                break
            if calls + len(requested) > spec.max_tool_calls:
                for call in requested:  # every call gets an answer, so the history stays well-formed
                    self._tool_message(call, f"not run: the limit of {spec.max_tool_calls} tool calls per run")
                stop = "max_tool_calls"
                break
            calls += len(requested)
            outcomes = await asyncio.gather(*(self._run_tool(run, call) for call in requested))
            for call, (content, child_usage) in zip(requested, outcomes):
                self._tool_message(call, content)
                usage = usage + child_usage
        result = RunResult(
            text=final.content if final is not None else "",
            output=final.output if final is not None else None,
            usage=usage, stop_reason=_stop(stop), turns=turns, tool_calls=calls,
        )
        agent.emit("run_finished", {"run": run, "text": result.text, "output": result.output,
                                    "usage": result.usage.model_dump(), "stop_reason": result.stop_reason})
        return result

    async def _call_model(self, messages: list[Message], *, with_tools: bool) -> ModelResponse:
        spec = self.spec
        call = ModelCall(
            model=spec.model, messages=messages,
            tools=[tool.schema() for tool in spec.tools.values()] if with_tools else [],
            output=spec.output_spec if with_tools else None, output_retries=spec.output_retries,
        )
        raw = await agent.step(
            CALL_FUNCTION, call, task_queue=spec.task_queue, retry_policy=spec.model.retry_policy(),
            start_to_close_timeout=spec.model.timeout_s * (spec.output_retries + 1) + 5,
        )
        return ModelResponse.model_validate(raw)

    def _prompt(self) -> list[Message]:
        system = self.spec.instructions
        if self.summary:
            system = f"{system}\n\nSummary of the earlier conversation:\n{self.summary}"
        return [{"role": "system", "content": system}, *self.history] if system else list(self.history)

    async def _fit_history(self) -> None:
        """Bound the history by the policy; with `summarize`, fold the cut part into the summary first."""
        policy = self.spec.history
        cut, kept = policy.split(self.history)
        if not cut:
            return
        if policy.summarize:
            earlier = f"Summary so far:\n{self.summary}\n\n" if self.summary else ""
            transcript = "\n".join(f"{m.get('role')}: {_text(m)}" for m in cut)
            response = await self._call_model([
                {"role": "system", "content": "Summarise this conversation for whoever continues it: facts, "
                 f"decisions, open questions. At most {policy.summary_max_chars} characters."},
                {"role": "user", "content": f"{earlier}Conversation:\n{transcript}"},
            ], with_tools=False)
            self.usage = self.usage + response.usage
            self.summary = response.content[: policy.summary_max_chars]
        self.history = kept

    def _tool_message(self, call: dict[str, Any], content: str) -> None:
        self.history.append({"role": "tool", "tool_call_id": call.get("id"), "content": content})

    async def _run_tool(self, run: int, call: dict[str, Any]) -> tuple[str, Usage]:
        """Run one tool call; what the model is told, and the usage of a child agent."""
        function = call.get("function") or {}
        name, arguments_json, call_id = function.get("name"), function.get("arguments") or "{}", call.get("id")
        agent.emit("tool_call", {"run": run, "id": call_id, "name": name, "arguments": arguments_json[:SHOWN_CHARS]})
        tool = self.spec.tools.get(name) if isinstance(name, str) else None
        usage = Usage()
        if tool is None:
            outcome: dict[str, Any] = {"ok": False, "error": f"there is no tool {name!r}; use one of "
                                       f"{sorted(self.spec.tools)}"}
        else:
            try:
                arguments = tool.validate(arguments_json)
            except ToolArgumentsError as exc:
                outcome = {"ok": False, "error": f"invalid arguments: {exc}"}
            else:
                refused = await self._approval(run, str(call_id), tool, arguments) if tool.needs_approval else None
                if refused is not None:
                    outcome = {"ok": False, "error": refused}
                else:
                    outcome, usage = await self._invoke(tool, arguments)
        content = json.dumps(outcome["value"], ensure_ascii=False) if outcome["ok"] else f"Error: {outcome['error']}"
        agent.emit("tool_result", {"run": run, "id": call_id, "name": name, "ok": outcome["ok"],
                                   "content": content[:SHOWN_CHARS]})
        return content, usage

    async def _invoke(self, tool: Tool, arguments: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        if tool.memory is not None:
            return await self._memory(tool.memory, arguments), Usage()
        if tool.agent_type is not None:
            value = await agent.child_execute(tool.agent_type, agent_input=arguments["task"])
            if isinstance(value, dict) and "usage" in value and "text" in value:  # an LLM child's RunResult
                child = RunResult.model_validate(value)
                return {"ok": True, "value": child.output if child.output is not None else child.text}, child.usage
            return {"ok": True, "value": value}, Usage()
        assert tool.function is not None
        outcome = await agent.step(
            tool.function, arguments, task_queue=self.spec.task_queue,
            start_to_close_timeout=tool.start_to_close_timeout_s, retry_policy=tool.retry_policy,
        )
        return outcome, Usage()

    async def _memory(self, kind: str, arguments: dict[str, Any]) -> dict[str, Any]:
        store = self.spec.memory
        me = agent.agent_info().agent_id
        memory_id = store.agent_id(self.user or me)
        agent.ensure_started(store.name, memory_id)
        if kind == "remember":
            agent.send(memory_id, "remember", {"text": arguments["fact"], "key": agent.uuid()})
            return {"ok": True, "value": "remembered"}
        request_id = agent.uuid()
        self.recalling.append(request_id)
        agent.send(memory_id, "recall", {"query": arguments["query"], "reply_to": me, "request_id": request_id})
        try:
            await condition(lambda: request_id in self.recalled, timeout=store.recall_timeout_s)
        except TimeoutError:
            return {"ok": False, "error": f"the memory did not answer within {store.recall_timeout_s}s"}
        finally:
            self.recalling.remove(request_id)
        return {"ok": True, "value": self.recalled.pop(request_id)}

    # -- approvals ------------------------------------------------------------------------

    async def _approval(self, run: int, call_id: str, tool: Tool, arguments: dict[str, Any]) -> str | None:
        """Ask a human; None when approved, else why not (what the model is told)."""
        request = ApprovalRequest(
            request_id=agent.uuid().replace("-", "")[:16], tool=tool.name, arguments=arguments,
            tool_call_id=call_id, run=run, timeout_s=tool.approval_timeout_s,
        )
        rid = request.request_id
        self.pending[rid] = request
        agent.emit("approval_requested", request.model_dump(), update=True)
        try:
            await condition(lambda: rid in self.decisions, timeout=tool.approval_timeout_s)
        except TimeoutError:
            self.decisions[rid] = None
            self._settle(rid, "timed out")
        decision = self.decisions.pop(rid)
        approved = self.approved.pop(rid, False)
        del self.pending[rid]
        reason = decision.reason if decision is not None else f"no decision within {tool.approval_timeout_s}s"
        agent.emit("approval_decided", {"request_id": rid, "approved": approved, "reason": reason}, update=True)
        if approved:
            return None
        return f"a human rejected this call ({reason})" if decision is not None else f"not approved: {reason}"

    def _decide(self, decision: Decision, *, approved: bool) -> str:
        rid = decision.request_id
        if rid not in self.pending or rid in self.decisions:
            before = self.settled.get(rid)
            raise ApprovalError(
                f"approval request {rid!r} is not waiting for a decision: "
                + (f"it was already {before}" if before else "there is no such request")
            )
        self.decisions[rid] = decision
        self.approved[rid] = approved
        outcome = "approved" if approved else "rejected"
        self._settle(rid, outcome)
        return outcome

    def _settle(self, rid: str, how: str) -> None:
        self.settled[rid] = how
        while len(self.settled) > SETTLED_KEPT:
            del self.settled[next(iter(self.settled))]


def _stop(reason: str) -> StopReason:
    assert reason in ("done", "budget", "max_turns", "max_tool_calls")
    return reason  # type: ignore[return-value]


def _text(message: Message) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    calls = message.get("tool_calls")
    return json.dumps(calls, ensure_ascii=False) if calls else ""
