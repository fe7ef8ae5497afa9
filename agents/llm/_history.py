"""`HistoryPolicy`: how much of a conversation an LLM agent keeps and sends to the model.

A session lives as long as the conversation (months, thousands of turns); its history
is agent state, so it must stay bounded, and so must every model call's input. The
policy keeps the most recent messages within a message count and an estimated token
budget, cutting only before a user message, so a tool call is never separated from
its result. With `summarize`, what is cut is first folded into a running summary by a
model call (a step like any other).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Message = dict[str, Any]

CHARS_PER_TOKEN = 4  # a rough estimate; good enough for a budget, no tokenizer needed


def estimate_tokens(messages: list[Message]) -> int:
    """An estimate of the tokens `messages` take (about 4 characters of JSON per token)."""
    return sum(len(json.dumps(message, ensure_ascii=False)) for message in messages) // CHARS_PER_TOKEN + 1


class HistoryPolicy(BaseModel):
    """The bounds of a session's history: `max_messages` and an estimated `max_tokens`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_messages: int = Field(default=40, ge=2)
    max_tokens: int = Field(default=16_000, ge=100)
    summarize: bool = False  # fold cut messages into a summary (a model call) instead of dropping them
    summary_max_chars: int = Field(default=4_000, ge=100)

    def split(self, history: list[Message]) -> tuple[list[Message], list[Message]]:
        """(cut, kept): the oldest messages to let go and the recent ones that fit the bounds.

        The newest user message and what follows it are always kept, even when they alone
        exceed the budget (the model must see the question).
        """
        starts = [i for i, message in enumerate(history) if message.get("role") == "user"]
        keep_from = starts[-1] if starts else 0
        for start in reversed(starts):
            kept = history[start:]
            if len(kept) > self.max_messages or estimate_tokens(kept) > self.max_tokens:
                break
            keep_from = start
        return history[:keep_from], history[keep_from:]
