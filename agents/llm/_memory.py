"""Memory: facts a user's agents keep across sessions, behind `remember` / `recall` tools.

Each user's facts live in one long-lived memory agent (`<store name>:<user>`), so they
are durable, owned by one processor and shared by every session of that user. A
session reaches it with `agent.ensure_started` and `agent.send` (exactly once, after
its turn is recorded); `recall` is answered by an event back to the session.

Search is lexical by default (BM25 over lowercased words: deterministic, no model).
With `embed` (the name of a `@function` taking a list of texts and returning one
vector per text), each fact and each query is embedded by a step and ranked by cosine
similarity instead.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from agentstream.agents._agent import agent, condition

from ._tools import Tool

_WORD = re.compile(r"\w+", re.UNICODE)
BM25_K1, BM25_B = 1.2, 0.75


class Fact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    key: str
    at: datetime
    vector: list[float] | None = None


class Remember(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=4000)
    key: str = Field(min_length=1)  # the same key twice is one fact (a resent tool call)


class Recall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str
    reply_to: str
    request_id: str
    limit: int = Field(default=5, ge=1, le=50)


class Recalled(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str
    facts: list[str]


def _words(text: str) -> list[str]:
    return [word.lower() for word in _WORD.findall(text)]


def lexical_rank(query: str, texts: list[str], limit: int) -> list[int]:
    """Indexes of the `limit` texts that match `query` best (BM25); texts sharing no word are left out."""
    terms = set(_words(query))
    documents = [Counter(_words(text)) for text in texts]
    if not terms or not documents:
        return []
    average = sum(sum(doc.values()) for doc in documents) / len(documents) or 1.0
    frequency = {term: sum(1 for doc in documents if term in doc) for term in terms}
    scores: list[tuple[float, int]] = []
    for index, doc in enumerate(documents):
        length = sum(doc.values())
        score = 0.0
        for term in terms:
            if term not in doc:
                continue
            idf = math.log(1 + (len(documents) - frequency[term] + 0.5) / (frequency[term] + 0.5))
            tf = doc[term]
            score += idf * tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * length / average))
        if score > 0:
            scores.append((-score, -index))  # best first; among equals, the newest first
    return [-index for _, index in sorted(scores)[:limit]]


def cosine_rank(query: list[float], vectors: list[list[float] | None], limit: int) -> list[int]:
    def cosine(vector: list[float]) -> float:
        dot = sum(a * b for a, b in zip(query, vector))
        norm = math.sqrt(sum(a * a for a in query)) * math.sqrt(sum(b * b for b in vector))
        return dot / norm if norm else 0.0

    scored = sorted((-cosine(v), -i) for i, v in enumerate(vectors) if v is not None)
    return [-index for _, index in scored[:limit]]


class MemoryTemplate:
    """Template of a memory agent type (copied per `Memory`, like the session template)."""

    store: ClassVar[Any]  # the Memory this class was generated for

    facts: list[Fact]

    def __init__(self) -> None:
        self.facts = []

    @agent.run
    async def run(self) -> None:
        await condition(lambda: False)  # lives as long as its user

    @agent.event
    async def remember(self, note: Remember) -> str:
        if any(fact.key == note.key for fact in self.facts):
            return "already remembered"
        vector = None
        if self.store.embed is not None:
            [vector] = await agent.step(self.store.embed, [note.text])
        self.facts.append(Fact(text=note.text, key=note.key, at=agent.now(), vector=vector))
        del self.facts[: -self.store.max_facts]
        return "remembered"

    @agent.event
    async def recall(self, query: Recall) -> int:
        if self.store.embed is not None:
            [vector] = await agent.step(self.store.embed, [query.query])
            ranked = cosine_rank(vector, [fact.vector for fact in self.facts], query.limit)
        else:
            ranked = lexical_rank(query.query, [fact.text for fact in self.facts], query.limit)
        found = [self.facts[index].text for index in ranked]
        agent.send(query.reply_to, "memory_recalled", Recalled(request_id=query.request_id, facts=found))
        return len(found)


class Memory:
    """A memory store: the agent type that keeps each user's facts, and how it searches them."""

    def __init__(self, name: str = "agentstream.Memory", *, embed: str | None = None, max_facts: int = 5000,
                 recall_timeout_s: float = 60.0) -> None:
        self.name = name
        self.embed = embed
        self.max_facts = max_facts
        self.recall_timeout_s = recall_timeout_s
        namespace = {k: v for k, v in vars(MemoryTemplate).items() if k not in ("__dict__", "__weakref__")}
        namespace["store"] = self
        namespace["__qualname__"] = f"Memory[{name}]"
        self.agent_class = agent.defn(name=name)(type(f"Memory[{name}]", (), namespace))

    def agent_id(self, user: str) -> str:
        return f"{self.name}:{user}"


class _RememberArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fact: str = Field(min_length=1, max_length=4000,
                      description="One self-contained fact about the user worth keeping for later conversations.")


class _RecallArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, description="Words to search the user's remembered facts for.")


def memory_tools() -> list[Tool]:
    """The `remember` and `recall` tools a session with memory offers the model."""
    return [
        Tool(name="remember", description="Remember a fact about the user for later conversations.",
             arguments=_RememberArguments, memory="remember"),
        Tool(name="recall", description="Search the facts remembered about the user.",
             arguments=_RecallArguments, memory="recall"),
    ]
