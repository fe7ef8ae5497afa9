"""The Chat Completions wire format: a `Reply` turned into the JSON the real API sends.

Pure functions, no I/O, so the exact shapes live in one place: a `chat.completion`
object for a plain request, and for a streamed one the `chat.completion.chunk`
sequence the real API produces — the role in the first delta, text deltas, tool-call
deltas by `index` whose first delta alone carries `id`, `type` and `function.name`,
a final delta with `finish_reason`, and (with `stream_options.include_usage`) a last
chunk with empty `choices` and the `usage`, every earlier chunk saying `usage: null`.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ._replies import Reply, Usage

# Roughly how a BPE tokenizer splits: words with their leading space, punctuation runs.
_TOKEN = re.compile(r"\s*\w+|\s*[^\w\s]+|\s+")

# Per-message overhead the real API counts on top of the message text.
_TOKENS_PER_MESSAGE = 4


def tokens(text: str) -> list[str]:
    """`text` split into token-like pieces whose concatenation is `text` again."""
    return _TOKEN.findall(text)


def new_call_id() -> str:
    """A fresh ID shaped like the real API's tool-call IDs."""
    return "call_" + uuid.uuid4().hex[:24]


@dataclass(frozen=True)
class Answer:
    """A reply bound to one request: the IDs, model, time and usage its JSON carries."""

    reply: Reply
    completion_id: str
    created: int
    model: str
    call_ids: tuple[str, ...]
    usage: Usage


def bind(reply: Reply, request: dict[str, Any]) -> Answer:
    """Fixes everything the reply leaves open for `request` (tool-call IDs, model, usage)."""
    return Answer(
        reply=reply,
        completion_id="chatcmpl-" + uuid.uuid4().hex,
        created=int(time.time()),
        model=str(request.get("model", "")),
        call_ids=tuple(call.id or new_call_id() for call in reply.tool_calls),
        usage=reply.usage or Usage(prompt_tokens=prompt_tokens(request), completion_tokens=completion_tokens(reply)),
    )


def prompt_tokens(request: dict[str, Any]) -> int:
    """A deterministic estimate from the messages' and tools' lengths (the real count needs the model's tokenizer)."""
    count = 3
    for message in request.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else message
        text = content if isinstance(content, str) else json.dumps(content)
        if isinstance(message, dict) and message.get("tool_calls"):
            text += json.dumps(message["tool_calls"])
        count += _TOKENS_PER_MESSAGE + len(tokens(text))
    if request.get("tools"):
        count += len(tokens(json.dumps(request["tools"])))
    return count


def completion_tokens(reply: Reply) -> int:
    """The number of token pieces the reply streams (at least one, like a real completion)."""
    count = len(tokens(reply.content or ""))
    for call in reply.tool_calls:
        count += len(tokens(call.name)) + len(tokens(call.arguments_json))
    return max(count, 1)


def usage_json(usage: Usage) -> dict[str, Any]:
    """The `usage` object, with the detail objects the real API includes."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _envelope(answer: Answer, kind: str) -> dict[str, Any]:
    return {
        "id": answer.completion_id,
        "object": kind,
        "created": answer.created,
        "model": answer.model,
        "service_tier": "default",
        "system_fingerprint": "fp_scripted",
    }


def completion(answer: Answer) -> dict[str, Any]:
    """The `chat.completion` object of a non-streamed request."""
    reply = answer.reply
    message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None, "annotations": []}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments_json}}
            for call_id, call in zip(answer.call_ids, reply.tool_calls)
        ]
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": reply.resolved_finish_reason}
    return {**_envelope(answer, "chat.completion"), "choices": [choice], "usage": usage_json(answer.usage)}


@dataclass(frozen=True)
class Chunk:
    """One streamed event: its JSON object, and whether it carries a token (slow replies wait before those)."""

    data: dict[str, Any]
    is_token: bool


def chunks(answer: Answer, include_usage: bool) -> list[Chunk]:
    """The `chat.completion.chunk` objects of a streamed request, in order (without `[DONE]`)."""
    reply = answer.reply
    deltas: list[tuple[dict[str, Any], bool]] = []
    first: dict[str, Any] = {"role": "assistant", "content": "" if reply.content is not None else None, "refusal": None}
    deltas.append((first, False))
    deltas.extend(({"content": piece}, True) for piece in tokens(reply.content or ""))
    for index, (call_id, call) in enumerate(zip(answer.call_ids, reply.tool_calls)):
        header = {"index": index, "id": call_id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        if len(deltas) == 1 and reply.content is None:
            first["tool_calls"] = [header]  # the real API opens the first call in the role's delta
        else:
            deltas.append(({"tool_calls": [header]}, False))
        deltas.extend(
            ({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, True)
            for piece in tokens(call.arguments_json)
        )

    envelope = _envelope(answer, "chat.completion.chunk")
    usage_field: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**envelope, "choices": [choice], **usage_field}

    out = [Chunk(chunk(delta, None), is_token) for delta, is_token in deltas]
    out.append(Chunk(chunk({}, reply.resolved_finish_reason), False))
    if include_usage:
        out.append(Chunk({**envelope, "choices": [], "usage": usage_json(answer.usage)}, False))
    return out
