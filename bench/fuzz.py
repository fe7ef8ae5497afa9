"""Fuzzing a real processor: `python bench/fuzz.py --records 10000 [--seed S] [--targets N]`.

Starts an embedded broker (or uses AGENTSTREAM_KAFKA_BOOTSTRAP) and one real `agentstream
processor` (agents: bench/fuzz_agents.py), schedules `--targets` FuzzTarget agents, each
with a step, a 30-day timer and a child in flight, and sends `--records` hostile records
(bench/fuzz_records.py, drawn by hypothesis from `--seed`) to agent-events and
step-results, interleaved with valid inputs to those agents (`--valid` of all records;
among them the step results a worker would send: no worker runs, the harness answers each
step command itself). Among the records: values too large for a dead letter to copy,
payloads nested too deep, and inputs that drive FuzzHoard agents to the record size limit
and back (bench/fuzz_hoard.py). Then it checks that

- the processor process is alive and is the one started (never restarted);
- every record is counted once, as what it must come to: agentstream_inputs_total{source,
  outcome} equals the expected count per source and outcome, and sums to the records on
  the two topics (those sent, and those the processor sent itself in reaction);
- the dead letters on the topic equal agentstream_dead_letters_total{reason}, each record
  expected to be dead-lettered has its letter (by topic, partition, offset) with an
  expected reason and its value (or, if too large to copy, none and a reason that says
  where it stays), and no other record has one;
- every real agent's fields equal what its valid inputs make, each applied exactly once,
  and it is running with nothing parked; each hoard is running, or stuck at the limit
  with the inputs it was expected to park.

Prints one table; the exit status is 1 on any failure (with the folder of the processor's
log), else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agentstream.streams.broker import EmbeddedBroker, detect_profile
from agentstream.streams.devstack import ManagedProcess
from agentstream.streams.kafka import partitions_now
from agentstream.topics import DeadLetter

from fuzz_records import Recipe, draw_recipes
from fuzz_world import AGENT_EVENTS, TARGET_GROWTH, Sent, World
from harness import Bench, Row, Slice, agent_state, metric, wait_until
from run import render

RECORD_LIMIT = 300_000  # AGENTSTREAM_MAX_RECORD_BYTES of the processor: "huge" is measured against it
MAX_KEYS = 100  # AGENTSTREAM_DEDUP_MAX_KEYS: small, so that the idempotency window turns over
BATCH = 100  # records produced before their acknowledgements are awaited


@dataclass
class Produced:
    sent: Sent
    topic: str
    partition: int
    offset: int


class Run:
    """One fuzz run against one processor on one slice of the broker."""

    def __init__(self, bench: Bench, space: Slice, processor: ManagedProcess, world: World) -> None:
        self.bench, self.space, self.processor, self.world = bench, space, processor, world
        self.produced: list[Produced] = []
        self.rows: list[Row] = []
        self.failed = False

    def check(self, what: str, ok: bool, value: str, notes: str = "") -> None:
        self.rows.append(Row(what, value, "ok" if ok else "FAIL", notes))
        self.failed |= not ok

    # -- sending -------------------------------------------------------------------------

    async def follow_commands(self) -> None:
        """What a worker would see: every step command, so the harness can answer it (or forge near misses)."""
        consumer = AIOKafkaConsumer(self.space.names.step_commands("restack"), bootstrap_servers=self.bench.bootstrap,
                                    auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=100)
                for record in (r for batch in batches.values() for r in batch):
                    self.world.saw_command(json.loads(record.value))
        finally:
            await consumer.stop()

    async def send(self, producer: AIOKafkaProducer, records: list[Sent]) -> None:
        names = self.space.names
        futures = []
        for sent in records:
            topic = names.agent_events if sent.source == AGENT_EVENTS else names.step_results
            if sent.key is None and sent.value is None:  # aiokafka sends no record without both
                sent.value = b""
            futures.append((sent, topic, await producer.send(topic, key=sent.key, value=sent.value)))
        for sent, topic, future in futures:
            meta = await future
            self.produced.append(Produced(sent, topic, meta.partition, meta.offset))

    async def setup(self, producer: AIOKafkaProducer) -> None:
        """Schedule the targets; learn their step commands, timers and children as a client would."""
        await self.send(producer, self.world.setup())
        url = self.processor.url
        for t in self.world.targets:
            state = await wait_until(lambda: (agent_state(url, t.agent_id) or {}).get("timers"), f"{t.agent_id} timer")
            [(timer_id, fire_at)] = state.items()
            self.world.saw_timer(t.agent_id, timer_id, datetime.fromisoformat(fire_at))
            kid = await wait_until(lambda: agent_state(url, t.kid_id), f"{t.kid_id} scheduled")
            self.world.saw_kid(t.agent_id, kid["run_id"], kid["parent"]["seq"])
        await wait_until(lambda: all(t.command for t in self.world.targets), "first step commands", 60)

    async def fuzz(self, producer: AIOKafkaProducer, recipes: list[Recipe], valid_share: float) -> None:
        batch: list[Sent] = []
        for recipe in recipes:
            while self.world.rng.random() < valid_share:
                batch.append(self.world.valid())
            batch.append(recipe(self.world))
            if len(batch) >= BATCH:
                await self.send(producer, batch)
                batch = []
                await self.steps_moved_on()
        batch.append(self.world.valid())  # the last word is a valid input
        await self.send(producer, batch)

    async def steps_moved_on(self, timeout: float = 3.0) -> None:
        """Give the processor a moment to send the next step commands, so that more valid step
        results can be sent in the next batch (a step answered but never moving on shows at the end)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(
            t.command is not None and t.command["message_id"] in t.answered for t in self.world.targets
        ):
            await asyncio.sleep(0.02)

    # -- checking ------------------------------------------------------------------------

    async def end_offsets(self, *topics: str) -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bench.bootstrap, group_id=None)
        await consumer.start()
        try:
            partitions = [TopicPartition(t, p) for t in topics for p in await partitions_now(consumer, t)]
            return sum((await consumer.end_offsets(partitions)).values())
        finally:
            await consumer.stop()

    async def wait_handled(self, timeout: float) -> tuple[bool, float, int]:
        """Until the processor counted as many inputs as the two topics hold, twice in a row."""
        names, url = self.space.names, self.processor.url
        deadline, seen = time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            on_topics = await self.end_offsets(names.agent_events, names.step_results)
            counted = metric(url, "agentstream_inputs_total")
            seen = seen + 1 if counted == on_topics else 0
            if seen == 2 or self.processor.process is None or self.processor.process.poll() is not None:
                return seen == 2, counted, on_topics
            await asyncio.sleep(0.5)
        return False, metric(url, "agentstream_inputs_total"), await self.end_offsets(names.agent_events, names.step_results)

    async def read_letters(self) -> list[DeadLetter]:
        topic = self.space.names.dead_letters
        total = await self.end_offsets(topic)
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=self.bench.bootstrap, auto_offset_reset="earliest",
                                    group_id=None, fetch_max_bytes=64 * 1024 * 1024)
        await consumer.start()
        letters: list[DeadLetter] = []
        try:
            deadline = time.monotonic() + 120
            while len(letters) < total and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                letters += [DeadLetter.model_validate_json(r.value) for b in batches.values() for r in b]
        finally:
            await consumer.stop()
        return letters

    def expected_counts(self) -> Counter[tuple[str, str]]:
        counts: Counter[tuple[str, str]] = Counter()
        for p in self.produced:
            counts[(p.sent.source, p.sent.expect.outcome)] += 1
            for derived in p.sent.derived:
                counts[(AGENT_EVENTS, derived.outcome)] += 1
        return counts

    def check_counts(self, handled: bool, counted: float, on_topics: int) -> None:
        process = self.processor.process
        alive = process is not None and process.poll() is None
        self.check("processor alive, never restarted", alive, "yes" if alive else "NO",
                   f"pid {process.pid if process else '-'}")
        derived = sum(len(p.sent.derived) for p in self.produced)
        self.check("records on agent-events + step-results", on_topics == len(self.produced) + derived,
                   str(on_topics), f"{len(self.produced)} sent + {derived} the processor sent itself")
        self.check("all of them counted in inputs_total", handled and counted == on_topics, f"{counted:.0f}",
                   "" if handled else "the count never caught up")
        url, expected = self.processor.url, self.expected_counts()
        for source in (AGENT_EVENTS, "step-results"):
            for outcome in ("applied", "ignored", "duplicate", "dead_lettered", "parked"):
                got = metric(url, "agentstream_inputs_total", source=source, outcome=outcome)
                if got or expected[(source, outcome)]:
                    self.check(f"  {source} {outcome}", got == expected[(source, outcome)], f"{got:.0f}",
                               f"expected {expected[(source, outcome)]}")

    def check_letters(self, letters: list[DeadLetter]) -> None:
        url = self.processor.url
        on_topic = Counter(d.reason_code for d in letters)
        counted = {reason: metric(url, "agentstream_dead_letters_total", reason=reason) for reason in on_topic}
        mismatched = {r: (n, counted.get(r, 0)) for r, n in on_topic.items() if n != counted.get(r, 0)}
        total = metric(url, "agentstream_dead_letters_total")
        self.check("dead letters on the topic = dead_letters_total", not mismatched and total == len(letters),
                   str(len(letters)), f"metric {total:.0f}; per reason {dict(sorted(on_topic.items()))}"
                   + (f"; differ (topic, metric): {mismatched}" if mismatched else ""))
        by_position = {(d.source_topic, d.partition, d.offset): d for d in letters}
        mine = {(p.topic, p.partition, p.offset) for p in self.produced}
        wrong: Counter[str] = Counter()
        examples: dict[str, str] = {}
        for p in self.produced:
            letter = by_position.get((p.topic, p.partition, p.offset))
            problem = _letter_problem(p, letter, self.world.letter_value(p.sent.value))
            if problem:
                wrong[p.sent.category] += 1
                examples.setdefault(p.sent.category, f"{problem}; value {(p.sent.value or b'')[:80]!r}")
        derived_expected = Counter(r for p in self.produced for e in p.sent.derived for r in e.reasons)
        derived_got = Counter(d.reason_code for pos, d in by_position.items() if pos not in mine)
        self.check("each record's dead letter as expected", not wrong, f"{len(self.produced) - sum(wrong.values())}",
                   f"of {len(self.produced)}" + "".join(f"; {c}: {n} wrong, e.g. {examples[c]}" for c, n in wrong.items()))
        self.check("dead letters of what the processor sent itself", derived_got == derived_expected,
                   str(sum(derived_got.values())), f"expected {dict(derived_expected)}")

    def check_agents(self) -> None:
        url, differ = self.processor.url, []
        for t in self.world.targets:
            state = agent_state(url, t.agent_id) or {}
            actual = (state.get("status"), state.get("parked_inputs"), state.get("fields"))
            if actual != ("running", 0, t.fields()):
                differ.append(f"{t.agent_id}: {_difference(actual, ('running', 0, t.fields()))}")
            if (agent_state(url, t.kid_id) or {}).get("status") != "running":
                differ.append(f"{t.kid_id} not running")
        valid = sum(1 for p in self.produced if p.sent.valid)
        self.check("real agents exact (valid inputs applied once)", not differ, f"{len(self.world.targets) - len(differ)}",
                   f"of {len(self.world.targets)} agents, {valid} valid inputs" + "".join(f"; {d}" for d in differ[:3]))
        self.check_hoards()

    def check_hoards(self) -> None:
        url, hoards = self.processor.url, self.world.hoards.all
        differ: list[str] = []
        for h in hoards:
            state = agent_state(url, h.agent_id) or {}
            kept = [len(blob) for blob in (state.get("fields") or {}).get("kept", [])]
            actual = (state.get("status"), state.get("parked_inputs"), kept, "limit" in str(state.get("error")))
            expected = ("stuck" if h.stuck else "running", len(h.parked), list(h.kept), h.stuck)
            if actual != expected:
                differ.append(f"{h.agent_id}: {_difference(actual, expected)}")
        stuck = sum(1 for h in hoards if h.stuck)
        self.check("hoards at the record limit exact", not differ, f"{len(hoards) - len(differ)}",
                   f"of {len(hoards)} ({stuck} stuck at the limit, {sum(len(h.parked) for h in hoards)} inputs parked)"
                   + "".join(f"; {d}" for d in differ[:3]))

    def category_rows(self) -> None:
        counts = Counter((p.sent.category, str(p.sent.expect)) for p in self.produced if p.sent.category != "setup")
        for (category, expect), n in sorted(counts.items()):
            self.rows.append(Row(f"  {category}", str(n), "records", f"expected {expect}"))

    def log_rows(self) -> None:
        failures = crashes = 0
        lines = self.processor.log_path.read_text(errors="replace").splitlines() if self.processor.log_path.exists() else []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            message, logger = str(entry.get("msg", "")), str(entry.get("logger", ""))
            failures += logger == "agentstream.processor" and message == "input handling failed"
            crashes += logger.startswith("faust") and "Crashed reason=" in message
        self.check("processor log: handler failures, actor crashes", not failures and not crashes,
                   f"{failures}, {crashes}", "'input handling failed' (last-resort guard) and Faust's 'Crashed reason'")


def _letter_problem(p: Produced, letter: DeadLetter | None, copied: bytes | None) -> str | None:
    """What is wrong with the dead letter of `p` (None: nothing); `copied`: the value it must
    copy, None if it must leave the value out and say where it stays."""
    expect = p.sent.expect
    if expect.outcome != "dead_lettered":
        return None if letter is None else f"dead-lettered as {letter.reason_code}, expected {expect}"
    if letter is None:
        return "no dead letter"
    if expect.reasons and letter.reason_code not in expect.reasons:
        return f"dead letter {letter.reason_code} ({letter.reason[:120]}), expected {expect}"
    if letter.original_value() != (copied or b"") or letter.original_key() != p.sent.key:
        return f"dead letter with another key or value ({len(letter.original_value())} bytes), expected {expect}"
    if copied is None and f"{p.topic} partition {p.partition} offset {p.offset}" not in letter.reason:
        return f"value left out, but the reason does not say where it stays: {letter.reason[-200:]}"
    return None


def _difference(actual: Any, expected: Any) -> str:
    got, want = json.dumps(actual, default=str), json.dumps(expected, default=str)
    at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    return f"got ...{got[max(0, at - 60):at + 60]}... expected ...{want[max(0, at - 60):at + 60]}..."


async def fuzz_run(bench: Bench, args: argparse.Namespace, recipes: list[Recipe]) -> Run:
    space = await bench.slice("fuzz")
    env = {"AGENTSTREAM_MAX_RECORD_BYTES": str(RECORD_LIMIT), "AGENTSTREAM_DEDUP_MAX_KEYS": str(MAX_KEYS)}
    processor = space.processor(app="fuzz_agents", env=env)
    await bench.ready(processor)
    world = World([f"fz-{i}" for i in range(args.targets)], record_limit=RECORD_LIMIT, max_keys=MAX_KEYS,
                  seed=args.seed)
    run = Run(bench, space, processor, world)
    follower = asyncio.create_task(run.follow_commands())
    producer = AIOKafkaProducer(bootstrap_servers=bench.bootstrap, **bench.profile.producer_options(),
                                max_request_size=4 * RECORD_LIMIT)
    await producer.start()
    try:
        await run.setup(producer)
        started = time.monotonic()
        await run.fuzz(producer, recipes, args.valid)
        sent_s = time.monotonic() - started
        handled, counted, on_topics = await run.wait_handled(timeout=120 + len(run.produced) / 20)
        handled_s = time.monotonic() - started
    finally:
        await producer.stop()
        follower.cancel()
    valid = sum(1 for p in run.produced if p.sent.category == "setup" or p.sent.category.startswith("valid "))
    run.rows.append(Row("hostile records sent", str(len(run.produced) - valid), "records",
                        f"seed {args.seed}, {len(recipes)} drawn"))
    run.rows.append(Row("valid inputs sent", str(valid), "records", f"to {args.targets} agents (setup, adds, "
                        "step results), interleaved"))
    run.rows.append(Row("sent / all handled after", f"{sent_s:.0f} / {handled_s:.0f}", "s", ""))
    run.check_counts(handled, counted, on_topics)
    run.check_letters(await run.read_letters())
    run.check_agents()
    run.log_rows()
    run.category_rows()
    return run


def _terminate(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


async def main_async(args: argparse.Namespace, bootstrap: str, workdir: Path, recipes: list[Recipe]) -> Run:
    bench = Bench(bootstrap, await detect_profile(bootstrap), workdir, quick=False)
    try:
        return await fuzz_run(bench, args, recipes)
    finally:
        bench.kill_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000, help="hostile records to send")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    parser.add_argument("--targets", type=int, help="real agents the records aim at (default: 16, more for "
                        "many records, so that no agent's record nears the size limit)")
    parser.add_argument("--valid", type=float, default=0.25, help="share of valid inputs among all records")
    parser.add_argument("--keep-logs", action="store_true", help="keep the work folder (processor log, state)")
    args = parser.parse_args()
    room = RECORD_LIMIT // 2 // TARGET_GROWTH - 10  # the setup's inputs, and some slack
    args.targets = args.targets or max(16, math.ceil(args.records * args.valid / (1 - args.valid) * 1.3 / room))
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    print(f"drawing {args.records} hostile records (seed {args.seed}) ...", file=sys.stderr, flush=True)
    recipes = draw_recipes(args.records, args.seed)
    drawn_s = time.monotonic() - started
    workdir = Path(tempfile.mkdtemp(prefix="agentstream-fuzz-"))
    external = os.environ.get("AGENTSTREAM_KAFKA_BOOTSTRAP")
    status = 1
    try:
        print("running ...", file=sys.stderr, flush=True)
        if external:
            run = asyncio.run(main_async(args, external, workdir, recipes))
        else:
            with EmbeddedBroker() as broker:
                run = asyncio.run(main_async(args, broker.bootstrap, workdir, recipes))
        status = 1 if run.failed else 0
    except KeyboardInterrupt:
        print("interrupted; spawned processes killed", file=sys.stderr)
        return 130
    finally:
        if status or args.keep_logs:
            print(f"logs and state kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    verdict = "FAILED" if run.failed else "passed"
    print(f"agentstream fuzz {verdict}: seed {args.seed}, {args.records} hostile records, drawn in {drawn_s:.0f}s, "
          f"{time.monotonic() - started:.0f}s total, {'external Kafka' if external else 'embedded broker'}")
    print(render(run.rows))
    return status


if __name__ == "__main__":
    sys.exit(main())
