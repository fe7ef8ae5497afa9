"""The agent shapes whose stored records are kept as golden records (see README.md).

These classes are the "user code" the golden records were written by. A change to
agentstream must keep replaying them: that is the whole point. So edit this module only
the way a user may edit a deployed agent (nothing that changes what a stored run
replays), and never to make a golden test pass; a new shape is a new class.

Step functions are declared for their names only: the records' next inputs carry
their results, nobody runs them.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from agentstream.agents import RetryPolicy, agent, agent_info, condition, function

# --- step functions (never run here) ------------------------------------------------------


@function(name="golden_fetch")
async def golden_fetch(key: str) -> str:
    return key.upper()


@function(name="golden_price")
async def golden_price(order: dict[str, Any]) -> int:
    return 10 * len(order["items"])


@function(name="golden_ship")
async def golden_ship(order_id: str) -> str:
    return f"shipped:{order_id}"


@function(name="golden_part")
async def golden_part(part: str) -> str:
    return part * 2


@function(name="golden_flaky")
async def golden_flaky(n: int) -> int:
    return n * 2


@function(name="golden_answer")
async def golden_answer(question: str) -> str:
    return f"answer to {question}"


@function(name="golden_sum")
async def golden_sum(items: list[int]) -> int:
    return sum(items)


@function(name="golden_check")
async def golden_check(topic: str) -> bool:
    return bool(topic)


@function(name="golden_publish")
async def golden_publish(notes: list[str]) -> str:
    return ",".join(notes)


# --- shapes -----------------------------------------------------------------------------------


class Order(BaseModel):
    id: str
    items: list[str]


@agent.defn(name="Golden.Pipeline")
class Pipeline:
    """Three steps in a row with timeouts and a retry policy; a typed input and field,
    deterministic uuid/random/now draws kept in fields."""

    order: Order | None
    trace: list[str]
    token: str
    lucky: float

    def __init__(self) -> None:
        self.order = None
        self.trace = []
        self.token = ""
        self.lucky = 0.0

    @agent.run
    async def run(self, order: Order) -> dict[str, Any]:
        self.order = order
        self.token = agent.uuid()
        self.lucky = agent.random()
        self.trace.append(f"start:{agent.now().isoformat()}")
        fetched = await agent.step(
            function=golden_fetch, function_input=order.id, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), max_attempts=5),
        )
        self.trace.append(f"fetched:{fetched}")
        price = await agent.step(
            function=golden_price, function_input={"id": order.id, "items": order.items},
            start_to_close_timeout=timedelta(seconds=30), schedule_to_close_timeout=timedelta(minutes=10),
        )
        self.trace.append(f"priced:{price}")
        shipped = await agent.step(function=golden_ship, function_input=order.id)
        self.trace.append(f"shipped:{agent.now().isoformat()}")
        return {"order": order.id, "fetched": fetched, "price": price, "shipped": shipped, "token": self.token}


class Entry(BaseModel):
    label: str
    amount: int


@agent.defn(name="Golden.Ledger")
class Ledger:
    """A loop whose locals a restart rebuilds (derived from the input and the fields): compacted."""

    entries: list[Entry]
    balance: int
    closing: bool

    def __init__(self) -> None:
        self.entries = []
        self.balance = 0
        self.closing = False

    @agent.event
    async def post(self, entry: Entry) -> None:
        self.entries.append(entry)

    @agent.event
    async def close(self) -> None:
        self.closing = True

    @agent.run
    async def run(self, account: str) -> dict[str, Any]:
        name = account.upper()
        while not self.closing:
            seen = len(self.entries)
            await condition(lambda: len(self.entries) > seen or self.closing)
            self.balance = sum(entry.amount for entry in self.entries)
        return {"account": name, "balance": self.balance, "entries": len(self.entries)}


@agent.defn(name="Golden.Countdown")
class Countdown:
    """A loop with a counter only its frame holds (issue 7 item 2): compaction must refuse."""

    pending: int
    bumps: int

    def __init__(self) -> None:
        self.pending = 0
        self.bumps = 0

    @agent.event
    async def bump(self) -> None:
        self.pending += 1
        self.bumps += 1

    @agent.run
    async def run(self, needed: int) -> dict[str, int]:
        seen = 0
        while seen < needed:
            await condition(lambda: self.pending > 0)
            self.pending -= 1
            seen += 1
        return {"seen": seen, "bumps": self.bumps}


@agent.defn(name="Golden.Gather")
class Gather:
    """Three steps awaited together with asyncio.gather."""

    parts: list[str]

    def __init__(self) -> None:
        self.parts = []

    @agent.run
    async def run(self, parts: list[str]) -> str:
        self.parts = parts
        results = await asyncio.gather(
            *(agent.step(function=golden_part, function_input=part) for part in parts)
        )
        return "|".join(results)


@agent.defn(name="Golden.Child")
class Child:
    """Started by Golden.Parent: one step, then reports to its parent."""

    word: str

    def __init__(self) -> None:
        self.word = ""

    @agent.run
    async def run(self, word: str) -> str:
        self.word = word
        fetched: str = await agent.step(function=golden_fetch, function_input=word)
        return f"{fetched}!"


@agent.defn(name="Golden.Parent")
class Parent:
    """Waits on a child it started with child_execute."""

    child_result: str | None

    def __init__(self) -> None:
        self.child_result = None

    @agent.run
    async def run(self, word: str) -> dict[str, Any]:
        self.child_result = await agent.child_execute(Child, agent_input=word)
        return {"parent": agent_info().agent_id, "child": self.child_result}


@agent.defn(name="Golden.Sleeper")
class Sleeper:
    """Sleeps on a durable timer for days."""

    went_to_sleep: str
    woke: str

    def __init__(self) -> None:
        self.went_to_sleep = ""
        self.woke = ""

    @agent.run
    async def run(self, days: int) -> dict[str, str]:
        self.went_to_sleep = agent.now().isoformat()
        await agent.sleep(timedelta(days=days))
        self.woke = agent.now().isoformat()
        return {"slept": self.went_to_sleep, "woke": self.woke}


@agent.defn(name="Golden.Retrier")
class Retrier:
    """A step whose first attempt failed: the record waits on the retry backoff timer."""

    doubled: int | None

    def __init__(self) -> None:
        self.doubled = None

    @agent.run
    async def run(self, n: int) -> int:
        self.doubled = await agent.step(
            function=golden_flaky, function_input=n, start_to_close_timeout=timedelta(seconds=20),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=2.0, max_attempts=4),
        )
        return self.doubled


@agent.defn(name="Golden.Rolling")
class Rolling:
    """Sums batches of events with a step, continuing as new after its first batch."""

    generation: int
    total: int
    pending: list[int]

    def __init__(self) -> None:
        self.generation = 0
        self.total = 0
        self.pending = []

    @agent.event
    async def add(self, n: int) -> None:
        self.pending.append(n)

    @agent.run
    async def run(self, batch: int) -> dict[str, int]:
        self.generation += 1
        await condition(lambda: len(self.pending) >= batch)
        items, self.pending = self.pending[:batch], self.pending[batch:]
        self.total += await agent.step(function=golden_sum, function_input=items)
        if self.generation < 2:
            agent.agent_continue_as_new(batch)
        return {"generation": self.generation, "total": self.total}


@agent.defn(name="Golden.Desk")
class Desk:
    """An event handler awaits a step while run waits on a condition with a timeout."""

    answers: dict[str, str]
    closed: bool

    def __init__(self) -> None:
        self.answers = {}
        self.closed = False

    @agent.event
    async def ask(self, question: str) -> str:
        answer: str = await agent.step(
            function=golden_answer, function_input=question, start_to_close_timeout=timedelta(seconds=60)
        )
        self.answers[question] = answer
        return answer

    @agent.event
    async def close(self) -> None:
        self.closed = True

    @agent.run
    async def run(self) -> dict[str, Any]:
        closed = await condition(lambda: self.closed, timeout=timedelta(hours=1))
        return {"answers": self.answers, "closed": closed}


@agent.defn(name="Golden.Fixable")
class Fixable:
    """The code the stuck record was started with (and that a fix brings back)."""

    notes: list[str]
    closed: bool

    def __init__(self) -> None:
        self.notes = []
        self.closed = False

    @agent.event
    async def note(self, text: str) -> None:
        self.notes.append(text)

    @agent.event
    async def close(self) -> None:
        self.closed = True

    @agent.run
    async def run(self, topic: str) -> dict[str, Any]:
        checked = await agent.step(function=golden_check, function_input=topic)
        await condition(lambda: self.closed)
        published = await agent.step(function=golden_publish, function_input=self.notes)
        return {"checked": checked, "published": published}


@agent.defn(name="Golden.FixableBadDeploy")
class FixableBadDeploy(Fixable):
    """An incompatible deploy of Golden.Fixable (its first step calls another function):
    the generator runs the stuck record's later turns with it, so the agent gets stuck."""

    @agent.event
    async def note(self, text: str) -> None:
        self.notes.append(text)

    @agent.event
    async def close(self) -> None:
        self.closed = True

    @agent.run
    async def run(self, topic: str) -> dict[str, Any]:
        checked = await agent.step(function="golden_check_v2", function_input=topic)
        await condition(lambda: self.closed)
        return {"checked": checked}
