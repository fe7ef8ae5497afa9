"""Scripted models for the LLM examples, so they run end to end without a model or a key.

`scripted_llm()` is a `ScriptedLLM` (an OpenAI-compatible server) that plays the model
of every example: it reads the conversation it is sent (whose system message names the
example) and answers the way a good model would, tool calls included:

    with scripted_llm() as llm:        # then start workers with AGENTSTREAM_LLM_BASE_URL=llm.base_url
        ...

The answers depend only on the conversation, never on the order requests arrive in, so
they hold when child agents call the model in parallel, when a step is retried, and in
every session at once. `agentstream demo --llm` and tests/integration/test_llm_examples.py
use them; they are also a worked example of testing an agent with `agentstream.agents.testing`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentstream.agents.testing import Reply, Responder, ScriptedLLM, ToolCall

from . import airline, deploy, research, reviewer

CONFIRMATION = re.compile(r"\b([A-Z]{2}\d{4})\b", re.IGNORECASE)
SEAT = re.compile(r"\bseat\s+(\d{1,2}[A-F])\b", re.IGNORECASE)
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
VERSION = re.compile(r"\bv?(\d+(?:\.\d+)+)\b")
SERVICE = re.compile(r"\b(?:of|service)\s+([a-z][\w-]*)", re.IGNORECASE)
MOVIE = re.compile(r"\bmovie\s+[\"']?(.+?)[\"']?[.?!]*$", re.IGNORECASE)


@dataclass(frozen=True)
class Result:
    """What a tool call of the current run returned, as the model sees it."""

    name: str
    arguments: dict[str, Any]
    ok: bool
    value: Any  # the decoded JSON value, or the error text


class Conversation:
    """The messages of one chat request, read the way the scripted model needs them."""

    def __init__(self, body: dict[str, Any]) -> None:
        messages = body.get("messages")
        self.messages: list[dict[str, Any]] = [m for m in messages if isinstance(m, dict)] if isinstance(
            messages, list) else []

    @property
    def system(self) -> str:
        first = self.messages[0] if self.messages else {}
        return str(first.get("content") or "") if first.get("role") == "system" else ""

    @property
    def user_texts(self) -> list[str]:
        return [str(m.get("content") or "") for m in self.messages if m.get("role") == "user"]

    @property
    def last_user(self) -> str:
        texts = self.user_texts
        return texts[-1] if texts else ""

    def found(self, pattern: re.Pattern[str]) -> str | None:
        """The latest match of `pattern` in what the user said (group 1, or the whole match)."""
        for text in reversed(self.user_texts):
            matches = list(pattern.finditer(text))
            if matches:
                match = matches[-1]
                return match.group(1) if pattern.groups else match.group(0)
        return None

    def results(self, *, this_run: bool = True) -> list[Result]:
        """The tool results after the last user message (or in the whole conversation), in order."""
        start = 0
        if this_run:
            users = [i for i, m in enumerate(self.messages) if m.get("role") == "user"]
            start = users[-1] if users else 0
        calls: dict[str, tuple[str, dict[str, Any]]] = {}
        results: list[Result] = []
        for message in self.messages[start:]:
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                try:
                    arguments = json.loads(function.get("arguments") or "{}")
                except ValueError:
                    arguments = {}
                calls[str(call.get("id"))] = (str(function.get("name")), arguments)
            if message.get("role") == "tool":
                name, arguments = calls.get(str(message.get("tool_call_id")), ("?", {}))
                content = str(message.get("content") or "")
                if content.startswith("Error: "):
                    results.append(Result(name, arguments, False, content.removeprefix("Error: ")))
                else:
                    results.append(Result(name, arguments, True, json.loads(content)))
        return results

    @property
    def answering_tools(self) -> bool:
        """Whether the model is being asked to go on after tool results (not a new user message)."""
        return bool(self.messages) and self.messages[-1].get("role") == "tool"


# -- the airline -----------------------------------------------------------------------------


def airline_reply(conversation: Conversation) -> Reply:
    """Asks for the confirmation number first; then looks up, changes seats, sends invoices."""
    confirmation = conversation.found(CONFIRMATION)
    seat = conversation.found(SEAT)
    if conversation.answering_tools:
        last = conversation.results()[-1]
        if not last.ok:
            return Reply.text(f"Sorry, that did not work: {last.value}")
        if last.name == "lookup_booking":
            booking = last.value
            if seat is not None and booking["seat"] != seat.upper():
                return Reply.tools(ToolCall("change_seat", {"confirmation": booking["confirmation"], "seat": seat.upper()}))
            return Reply.text(f"You are on flight {booking['flight']} ({booking['route']}) on {booking['date']}, "
                              f"seat {booking['seat']}. How can I help?")
        if last.name == "change_seat":
            return Reply.text(f"Done! Your seat on flight {last.value['flight']} is now {last.value['seat']}. "
                              "Anything else I can do for you?")
        if last.name == "send_invoice":
            return Reply.text(f"I've sent the invoice {last.value['invoice']} to {last.value['sent_to']}.")
        return Reply.text("Done.")
    if confirmation is None:
        return Reply.text("I'd be glad to help. What is your booking's confirmation number?")
    confirmation = confirmation.upper()
    if "invoice" in conversation.last_user.lower():
        email = conversation.found(EMAIL)
        if email is None:
            return Reply.text("Which e-mail address should I send the invoice to?")
        return Reply.tools(ToolCall("send_invoice", {"confirmation": confirmation, "email": email}))
    return Reply.tools(ToolCall("lookup_booking", {"confirmation": confirmation}))


# -- the reviewer ----------------------------------------------------------------------------


def reviewer_reply(conversation: Conversation) -> Reply:
    """A valid `MovieReview` of the movie the task names."""
    match = MOVIE.search(conversation.last_user)
    title = match.group(1).strip() if match else conversation.last_user.strip()
    return Reply.structured(reviewer.MovieReview(
        title=title, rating=9,
        summary=f"{title} is inventive and gripping; its plot asks for attention and rewards it.",
    ))


# -- the deployer ----------------------------------------------------------------------------


def deploy_reply(conversation: Conversation) -> Reply:
    """Runs the tests, asks to deploy when they pass, and reports what happened."""
    service = conversation.found(SERVICE) or "checkout"
    version = conversation.found(VERSION) or "1.0"
    results = conversation.results()
    if not results:
        return Reply.tools(ToolCall("run_tests", {"service": service}))
    last = results[-1]
    if last.name == "run_tests":
        if not last.ok or last.value["failed"]:
            return Reply.text(f"The tests of {service} did not pass, so I did not deploy it.")
        return Reply.tools(ToolCall("deploy", {"service": service, "version": version}),
                           content=f"All {last.value['passed']} tests of {service} passed. ")
    if last.name == "deploy" and last.ok:
        return Reply.text(f"Deployed {service} {version} to production ({last.value['deployment']}).")
    return Reply.text(f"I did not deploy {service} {version}: {last.value}")


# -- the research coordinator and its researchers ---------------------------------------------


def sub_questions(question: str) -> list[str]:
    """How the scripted coordinator splits a question: for, against."""
    return [f"What speaks for this: {question}", f"What speaks against this: {question}"]


def coordinator_reply(conversation: Conversation) -> Reply:
    """Asks a researcher per sub-question, all in one turn; then combines their answers."""
    if not conversation.answering_tools:
        return Reply.tools(*(ToolCall("ask_researcher", {"task": q}) for q in sub_questions(conversation.last_user)))
    findings = "\n".join(f"- {r.value}" for r in conversation.results())
    return Reply.text(f"Here is what the research found:\n{findings}")


def researcher_reply(conversation: Conversation) -> Reply:
    """One short answer to the one question."""
    return Reply.text(f"Findings on '{conversation.last_user}': it depends on the team's size and skills.")


# -- routing ---------------------------------------------------------------------------------

REPLIES: dict[str, Callable[[Conversation], Reply]] = {
    airline.INSTRUCTIONS: airline_reply,
    reviewer.INSTRUCTIONS: reviewer_reply,
    deploy.INSTRUCTIONS: deploy_reply,
    research.COORDINATOR_INSTRUCTIONS: coordinator_reply,
    research.RESEARCHER_INSTRUCTIONS: researcher_reply,
}


def responder(*, token_delay: float = 0.0) -> Responder:
    """Answers the conversations of every example, recognised by their system message.

    `token_delay` (seconds) slows streamed text down, so a demo shows it arriving.
    """

    def respond(body: dict[str, Any]) -> Reply:
        conversation = Conversation(body)
        reply = REPLIES.get(conversation.system)
        if reply is None:
            return Reply.bad_request("scripted examples: no script for a conversation whose system message is "
                                     f"{conversation.system[:80]!r}")
        answer = reply(conversation)
        return answer.slow(token_delay) if token_delay else answer

    return respond


def scripted_llm(*, token_delay: float = 0.0) -> ScriptedLLM:
    """A not-yet-started `ScriptedLLM` playing the model of every example."""
    return ScriptedLLM(responder=responder(token_delay=token_delay))
