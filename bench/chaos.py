"""Chaos harness: `python bench/chaos.py --kills N [--seed S] [--agents A] [--out FILE]`.

Runs a workload of agents (bench/chaos_agents.py: steps of 50-500 ms, durable timers,
children, an event-driven loop with locals in flight, event handlers awaiting steps)
twice on the embedded broker (or AGENTSTREAM_KAFKA_BOOTSTRAP), each time on its own
topics, through public surfaces only (`AgentClient`, the HTTP state API, `agentstream
processor` / `agentstream worker` processes):

1. calm: one processor, one worker, no kills; every agent's end state is the reference
   (and every ChaosAgent's result is checked against `expected_result` too);
2. chaos: two processors (own data dirs) and one worker, the same inputs, while N
   SIGKILLs land at random moments (seeded): a processor alone while the worker is
   inside a step of an agent it owns (`processor`), the worker alone (`worker`), the
   owning processor and the worker together (`both`), and one of two processors while
   the other is rejoining the group (`rebalance`). What was killed is restarted on the
   same data dir, sometimes wiped so that it restores from the changelog alone. With
   `--freeze-weight W`, also `freeze`: SIGSTOP the processor that owns a running step for
   three session timeouts, then SIGCONT, so that it wakes as a zombie after the other
   processor took its partitions over (what a GC pause or an overloaded node does).

Then every agent's status, result, fields, applied events and what is in flight must
equal the calm run's, and nothing may be applied twice. One table is printed; the exit
status is 1 on any difference, with the first differing agents, a diff, and the folder
where the components' logs are kept. Every wait is a poll with a deadline; agents that
do not end in time are reported with their state.

Agents are scheduled in waves (`--agents` per wave, one wave per `--kills-per-wave`
kills) and their events are spread over their wave's kills, so that long runs keep
work in flight to the last kill. "A step is running" is read from marker files the
step writes while it runs (see chaos_agents.py); which processor owns an agent is read
from what each processor's `/ready` says it owns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from aiokafka.partitioner import DefaultPartitioner

from agentstream.agents import AgentClient
from agentstream.streams.broker import EmbeddedBroker, detect_profile
from agentstream.streams.devstack import ManagedProcess, ProcessStartError
from agentstream.streams.processor.restore_check import MISMATCH_MESSAGE

from chaos_agents import MARKS_ENV, Plan, children_of, expected_result
from chaos_evidence import history
from chaos_verdict import Settled, comparable, diff, duplicates, render, settle
from harness import PARTITIONS, Bench, Slice, fetch

APP = "chaos_agents"
SLOTS = ("p0", "p1")
KINDS = {"processor": 30, "worker": 30, "both": 20, "rebalance": 20}  # weights of each kill kind
FREEZE_SESSIONS = 3  # a frozen processor stays stopped for this many consumer session timeouts
WIPE_CHANCE = 0.2  # a restarted processor finds its data dir gone: it restores from the changelog
CALM_PAUSE_MS = 50
READY_S = 90.0
EVIDENCE_AGENTS = 5  # suspects whose every record is kept in the report
STEP_WAIT_S = 3.0  # longest wait for "a worker is inside a step" before a processor kill
LOGS = {"AGENTSTREAM_LOG_LEVEL": "INFO"}  # the kept logs are evidence: starts, rebalances, dead letters
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Spec:
    """One scheduled agent: its plan, its events in send order, and the children it will start."""

    agent_id: str
    wave: int
    plan: Plan
    chaos_pause_ms: int
    events: tuple[tuple[str, int], ...]

    @property
    def children(self) -> list[str]:
        return children_of(self.agent_id, self.plan)


def workload(seed: int, waves: int, per_wave: int) -> list[Spec]:
    """The same agents and events for both runs, from the seed alone."""
    rng = random.Random(f"{seed}/workload")
    specs: list[Spec] = []
    for wave in range(waves):
        for i in range(per_wave):
            plan = Plan(rounds=rng.randint(2, 5), ticks=rng.randint(1, 5), pokes=rng.randint(1, 4), pause_ms=0)
            kinds = ["tick"] * plan.ticks + ["poke"] * plan.pokes
            rng.shuffle(kinds)
            numbers: Counter[str] = Counter()
            events = []
            for kind in kinds:
                events.append((kind, numbers[kind]))
                numbers[kind] += 1
            specs.append(Spec(f"w{wave}-a{i}", wave, plan, rng.randint(300, 3000), tuple(events)))
    return specs


def all_ids(specs: list[Spec]) -> list[str]:
    return [a for s in specs for a in (s.agent_id, *s.children)]


_PARTITIONER = DefaultPartitioner()


def partition_of(agent_id: str) -> int:
    """The agent-events partition of `agent_id` (the client's partitioner, murmur2 of the key)."""
    every = list(range(PARTITIONS))
    return int(_PARTITIONER(agent_id.encode(), every, every))


async def send_events(client: AgentClient, spec: Spec, events: list[tuple[str, int]]) -> None:
    for name, n in events:
        await client.send_agent_event(spec.agent_id, name, n)


async def schedule(client: AgentClient, spec: Spec, pause_ms: int) -> None:
    await client.schedule_agent("ChaosAgent", spec.agent_id, spec.plan.model_copy(update={"pause_ms": pause_ms}))


# ---------------------------------------------------------------------------------------------- calm run


async def calm_run(bench: Bench, specs: list[Spec], settle_s: float, progress: Progress) -> Settled:
    """Every agent with all its events at once, no kills: the reference end states."""
    space = await bench.slice("calm")
    processor = space.processor("calm-processor", app=APP, env=LOGS)
    worker = space.worker("calm-worker", app=APP, env=LOGS)
    await bench.ready(processor, worker, timeout=READY_S)
    async with space.client(processor.url) as client:
        await schedule(client, specs[0], CALM_PAUSE_MS)  # one send first: the client's producer starts once
        await asyncio.gather(*(schedule(client, s, CALM_PAUSE_MS) for s in specs[1:]))
        await asyncio.gather(*(send_events(client, s, list(s.events)) for s in specs))
        progress(f"[calm] {len(specs)} agents scheduled with their events; "
                 f"waiting for all {len(all_ids(specs))} to end")
        return await settle(lambda: processor.url, all_ids(specs), settle_s, progress)


# ---------------------------------------------------------------------------------------------- the fleet


class Fleet:
    """Two processors on their own data dirs and one worker; restarts reuse (or wipe) the data dirs."""

    def __init__(self, bench: Bench, space: Slice, marks: Path, verify_restore: bool = False) -> None:
        self.bench, self.space, self.marks = bench, space, marks
        self.env = {**LOGS, "AGENTSTREAM_VERIFY_RESTORE": "1"} if verify_restore else LOGS
        self.data = {slot: bench.workdir / f"chaos-state-{slot}" for slot in SLOTS}
        self.procs: dict[str, ManagedProcess] = {}
        self.starts = 0
        self.start_failures: list[dict[str, str]] = []

    def start(self, slot: str, wipe: bool = False) -> ManagedProcess:
        self.starts += 1
        name = f"chaos-{slot}-{self.starts}"
        if slot == "worker":
            process = self.space.worker(name, app=APP, env={**LOGS, MARKS_ENV: str(self.marks)})
        else:
            if wipe:
                shutil.rmtree(self.data[slot], ignore_errors=True)
            process = self.space.processor(name, data_dir=self.data[slot], app=APP, env=self.env)
        self.procs[slot] = process
        return process

    def kill(self, slot: str) -> None:
        self.procs[slot].kill()  # SIGKILL

    def signal(self, slot: str, sig: signal.Signals) -> None:
        process = self.procs[slot].process
        if process is not None and process.poll() is None:
            process.send_signal(sig)

    async def ready(self, slots: tuple[str, ...] | None = None) -> None:
        """Until these components (default: all) are ready; one that never gets there is reported and
        started once more, wiped."""
        for slot, process in list(self.procs.items()):
            if slots is not None and slot not in slots:
                continue
            try:
                await asyncio.to_thread(process.wait_ready, READY_S)
            except ProcessStartError as exc:
                self.start_failures.append({"component": slot, "log": str(process.log_path),
                                            "error": str(exc).splitlines()[0]})
                process.kill()
                again = self.start(slot, wipe=True)
                await asyncio.to_thread(again.wait_ready, READY_S)  # raises: the storm cannot go on

    def is_ready(self, slot: str) -> bool:
        return fetch(self.procs[slot].url + "/ready", timeout=2.0)[0] == 200

    def url(self) -> str:
        """A processor that answers (the state API routes every read to the owner)."""
        for slot in SLOTS:
            if self.is_ready(slot):
                return self.procs[slot].url
        return self.procs[SLOTS[0]].url

    def owners(self) -> dict[int, str]:
        """partition -> processor slot, from what each ready processor says it owns (`/ready`);
        {} when unknown (a rebalance)."""
        owned: dict[int, str] = {}
        for slot in SLOTS:
            status, body = fetch(self.procs[slot].url + "/ready", timeout=2.0)
            if status != 200:
                continue
            try:
                partitions = json.loads(body)["partitions"]
            except (ValueError, KeyError):
                continue
            owned.update({int(p): slot for p in partitions})
        return owned

    def running_steps(self) -> list[str]:
        """`agent~label` of every step the live worker is inside right now."""
        process = self.procs["worker"].process
        prefix = f"{process.pid}~" if process else "-"
        return sorted(p.name.split("~", 1)[1].rsplit("~", 1)[0] for p in self.marks.iterdir()
                      if p.name.startswith(prefix))

    def clear_dead_marks(self) -> None:
        process = self.procs["worker"].process
        alive = f"{process.pid}~" if process and process.poll() is None else None
        for path in self.marks.iterdir():
            if alive is None or not path.name.startswith(alive):
                path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- the storm


@dataclass
class Kill:
    n: int
    kind: str
    victims: list[str]
    at_s: float
    step_running: bool  # see the table's legend
    steps: list[str]  # agent~label of the steps running at the kill (for the killed processor, if one)
    wiped: list[str] = field(default_factory=list)
    during_rebalance: bool | None = None
    waited_s: float = 0.0  # before the kill, for what it needs to be ready (everything, or the worker)


class Storm:
    """Sends the workload in waves and kills components at random moments until `target` kills."""

    def __init__(self, fleet: Fleet, client: AgentClient, specs: list[Spec], args: argparse.Namespace,
                 rng: random.Random, progress: Progress) -> None:
        self.fleet, self.client, self.specs, self.rng, self.progress = fleet, client, specs, rng, progress
        self.target, self.per_wave = args.kills, args.kills_per_wave
        self.kinds = kinds_of(args)
        self.freeze_s = FREEZE_SESSIONS * fleet.bench.profile.session_timeout_s
        self.min_step_kills = args.min_step_kills
        self.waves = max(s.wave for s in specs) + 1
        self.scheduled = 0
        self.pending: dict[str, deque[tuple[str, int]]] = {s.agent_id: deque(s.events) for s in specs}
        self.by_id = {s.agent_id: s for s in specs}
        self.kills: list[Kill] = []
        self.noted = 0
        self.started = time.monotonic()

    def step_kills(self) -> int:
        return sum(k.step_running for k in self.kills if k.kind in ("processor", "both"))

    async def run(self) -> None:
        while len(self.kills) < self.target:
            await self.schedule_waves()
            await self.feed()
            kind = self.choose()
            waited = time.monotonic()
            # A worker kill needs a worker; the others need the owners known and turning (everything ready).
            await self.fleet.ready(("worker",) if kind == "worker" else None)
            waited = time.monotonic() - waited
            kills = len(self.kills)
            await asyncio.sleep(self.rng.uniform(0.05, 0.5))  # a random moment
            if kind == "worker":
                await self.kill_worker()
            elif kind == "freeze":
                await self.freeze_owner()
            elif kind == "rebalance":
                await self.kill_during_rebalance()
            else:
                await self.kill_owner(with_worker=kind == "both")
            self.kills[kills].waited_s = round(waited, 2)
            self.fleet.clear_dead_marks()
            if len(self.kills) >= self.noted + 10 or len(self.kills) >= self.target:
                self.noted = len(self.kills)
                self.progress(f"[chaos] {len(self.kills)}/{self.target} kills, {self.step_kills()} processor deaths "
                              f"with a step running, {time.monotonic() - self.started:.0f}s")
        await self.fleet.ready()
        await self.schedule_waves(force=True)
        for spec in self.specs:  # whatever was not sent yet
            await self.send(spec.agent_id, len(self.pending[spec.agent_id]))

    def choose(self) -> str:
        left = self.target - len(self.kills)
        if self.min_step_kills - self.step_kills() >= left:
            return "processor"  # the quota of processor deaths with a step running comes first
        kind = self.rng.choices(list(self.kinds), weights=list(self.kinds.values()))[0]
        return "processor" if kind == "rebalance" and left < 2 else kind

    async def schedule_waves(self, force: bool = False) -> None:
        while self.scheduled < self.waves and (force or len(self.kills) >= self.scheduled * self.per_wave):
            wave = [s for s in self.specs if s.wave == self.scheduled]
            for spec in wave:
                await schedule(self.client, spec, spec.chaos_pause_ms)
            self.scheduled += 1

    async def feed(self) -> None:
        """Send part of each scheduled wave's events, so that all are out by the end of its kills."""
        done = len(self.kills)
        for wave in range(self.scheduled):
            ids = [s.agent_id for s in self.specs if s.wave == wave and self.pending[s.agent_id]]
            left = sum(len(self.pending[a]) for a in ids)
            if not left:
                continue
            end = min(self.target, (wave + 1) * self.per_wave)
            quota = left if done >= end - 1 else math.ceil(left / (end - done))
            for _ in range(quota):
                ids = [a for a in ids if self.pending[a]]
                await self.send(self.rng.choice(ids), 1)

    async def send(self, agent_id: str, count: int) -> None:
        for _ in range(count):
            name, n = self.pending[agent_id].popleft()
            await self.client.send_agent_event(agent_id, name, n)

    async def poke_one(self) -> None:
        """Send some agent's events up to its next poke: its handler starts a step."""
        candidates = [a for a, events in self.pending.items()
                      if self.by_id[a].wave < self.scheduled and any(name == "poke" for name, _ in events)]
        if candidates:
            agent_id = self.rng.choice(sorted(candidates))
            events = self.pending[agent_id]
            await self.send(agent_id, next(i for i, (name, _) in enumerate(events) if name == "poke") + 1)

    def steps_owned(self, owners: dict[int, str]) -> dict[str, list[str]]:
        owned: dict[str, list[str]] = {}
        for step in self.fleet.running_steps():
            slot = owners.get(partition_of(step.split("~")[0]))
            if slot is not None:
                owned.setdefault(slot, []).append(step)
        return owned

    async def find_step(self, owners: dict[int, str]) -> dict[str, list[str]]:
        """Until the worker is inside a step of an agent whose owner is known (poking one if needed)."""
        deadline = time.monotonic() + STEP_WAIT_S
        poked = False
        while time.monotonic() < deadline:
            if self.steps_owned(owners):
                await asyncio.sleep(self.rng.uniform(0.0, 0.1))  # a random moment inside it
                owned = self.steps_owned(owners)
                if owned:
                    return owned
            if not poked:
                await self.poke_one()
                poked = True
            await asyncio.sleep(0.01)
        return {}

    def record(self, kind: str, victims: list[str], step_running: bool, steps: list[str], **extra: Any) -> None:
        self.kills.append(Kill(len(self.kills) + 1, kind, victims, round(time.monotonic() - self.started, 2),
                               step_running, steps, **extra))

    def restart_processor(self, slot: str) -> list[str]:
        wipe = self.rng.random() < WIPE_CHANCE
        self.fleet.start(slot, wipe=wipe)
        return [slot] if wipe else []

    async def kill_owner(self, with_worker: bool) -> str:
        """Kill the processor that owns an agent whose step the worker is inside (and the worker); its slot."""
        owners = await asyncio.to_thread(self.fleet.owners)
        owned = await self.find_step(owners)
        slot = self.rng.choice(sorted(owned)) if owned else self.rng.choice(SLOTS)
        before = owned.get(slot, [])
        victims = [slot, "worker"] if with_worker else [slot]
        self.rng.shuffle(victims)
        for victim in victims:
            self.fleet.kill(victim)
        # With the worker alive, a marker still there after the kill proves the step was running at it.
        steps = before if with_worker else sorted(set(before) & set(self.fleet.running_steps()))
        wiped = self.restart_processor(slot)
        if with_worker:
            self.fleet.start("worker")
        self.record("both" if with_worker else "processor", victims, bool(steps), steps, wiped=wiped)
        return slot

    async def freeze_owner(self) -> None:
        """SIGSTOP the processor that owns an agent whose step the worker is inside, long enough for the
        group to drop it, then SIGCONT: it wakes as a zombie that may still finish what it was doing
        (write records, publish, commit) after another processor took its partitions over."""
        owners = await asyncio.to_thread(self.fleet.owners)
        owned = await self.find_step(owners)
        slot = self.rng.choice(sorted(owned)) if owned else self.rng.choice(SLOTS)
        steps = owned.get(slot, [])
        self.fleet.signal(slot, signal.SIGSTOP)
        await asyncio.sleep(self.freeze_s)  # the fault itself: frozen this long
        self.fleet.signal(slot, signal.SIGCONT)
        self.record("freeze", [slot], bool(steps), steps)

    async def kill_worker(self) -> None:
        deadline = time.monotonic() + 1.0
        while not self.fleet.running_steps() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        steps = self.fleet.running_steps()
        self.fleet.kill("worker")
        self.fleet.start("worker")
        self.record("worker", ["worker"], bool(steps), steps)

    async def kill_during_rebalance(self) -> None:
        """Kill processor A (as `kill_owner`) and restart it; while it rejoins the group, kill processor B."""
        first = await self.kill_owner(with_worker=False)
        second = next(slot for slot in SLOTS if slot != first)
        await asyncio.sleep(self.rng.uniform(0.2, 3.0))
        during = not (self.fleet.is_ready(first) and self.fleet.is_ready(second))
        steps = self.fleet.running_steps()
        self.fleet.kill(second)
        self.record("rebalance", [second], bool(steps), steps, wiped=self.restart_processor(second),
                    during_rebalance=during)


async def chaos_run(bench: Bench, space: Slice, specs: list[Spec], args: argparse.Namespace, progress: Progress
                    ) -> tuple[Storm, Settled, list[dict[str, str]]]:
    marks = bench.workdir / "step-marks"
    marks.mkdir(exist_ok=True)
    fleet = Fleet(bench, space, marks, verify_restore=args.verify_restore)
    for slot in (*SLOTS, "worker"):
        fleet.start(slot)
    await fleet.ready()
    rng = random.Random(f"{args.seed}/kills")
    async with space.client(fleet.procs[SLOTS[0]].url) as client:
        storm = Storm(fleet, client, specs, args, rng, progress)
        await storm.run()
    progress(f"[chaos] {len(storm.kills)} kills done; waiting for all {len(all_ids(specs))} agents to end")
    settled = await settle(fleet.url, all_ids(specs), args.settle_timeout, progress)
    return storm, settled, fleet.start_failures


# ---------------------------------------------------------------------------------------------- verdict


def verdict(specs: list[Spec], calm: Settled, storm: Storm, chaos: Settled, start_failures: list[dict[str, str]],
            args: argparse.Namespace) -> dict[str, Any]:
    """Everything the run found, as one JSON-able report; `ok` is the harness's verdict."""
    ids = all_ids(specs)
    differing: dict[str, list[str]] = {}
    for agent_id in ids:
        if agent_id in chaos.unsettled or agent_id not in calm.views:
            continue
        lines = diff(comparable(calm.views[agent_id]), comparable(chaos.views[agent_id]))
        if lines:
            differing[agent_id] = lines
    doubles = {a: notes for a, view in chaos.views.items() if (notes := duplicates(view))}
    never_applied = {}  # events sent to an agent that its (last readable) state does not show
    for spec in specs:
        view = chaos.views.get(spec.agent_id) or chaos.unsettled.get(spec.agent_id, {}).get("view")
        if view is not None:
            applied = {(e.get("name"), e.get("payload")) for e in view.get("events") or []}
            if missing := [list(e) for e in spec.events if e not in applied]:
                never_applied[spec.agent_id] = missing
    calm_doubles = {a: notes for a, view in calm.views.items() if (notes := duplicates(view))}
    calm_wrong = {s.agent_id: {"expected": expected_result(s.plan), "calm": calm.views[s.agent_id].get("result")}
                  for s in specs if s.agent_id in calm.views
                  and calm.views[s.agent_id].get("result") != expected_result(s.plan)}
    kinds = Counter(k.kind for k in storm.kills)
    with_step = Counter(k.kind for k in storm.kills if k.step_running)
    equal = len(ids) - len(differing) - len(chaos.unsettled)
    ok = (not differing and not chaos.unsettled and not doubles and not calm_wrong and not calm_doubles
          and not start_failures and storm.step_kills() >= args.min_step_kills and len(storm.kills) >= args.kills)
    return {
        "ok": ok,
        "seed": args.seed,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "agents": {"total": len(ids), "equal": equal, "differing": len(differing), "unsettled": len(chaos.unsettled)},
        "kills": {"total": len(storm.kills), "by_kind": dict(kinds), "with_step_running": dict(with_step),
                  "processor_deaths_with_step": storm.step_kills(),
                  "rebalance_while_not_ready": sum(bool(k.during_rebalance) for k in storm.kills),
                  "restarts_wiped": sum(len(k.wiped) for k in storm.kills)},
        "duplicates": doubles,
        "calm_duplicates": calm_doubles,
        "calm_wrong": calm_wrong,
        "differing": differing,
        "events_never_applied": never_applied,
        "unsettled": chaos.unsettled,
        "start_failures": start_failures,
        "kill_log": [asdict(k) for k in storm.kills],
    }


async def main_async(args: argparse.Namespace, bootstrap: str, workdir: Path, progress: Progress
                     ) -> tuple[dict[str, Any], dict[str, float]]:
    profile = await detect_profile(bootstrap)
    bench = Bench(bootstrap, profile, workdir, quick=False)
    waves = max(1, math.ceil(args.kills / args.kills_per_wave))
    specs = workload(args.seed, waves, args.agents)
    wall: dict[str, float] = {}
    try:
        started = time.monotonic()
        calm = await calm_run(bench, specs, args.settle_timeout, progress)
        wall["calm"] = time.monotonic() - started
        bench.kill_all()
        if calm.unsettled:
            report = {"ok": False, "seed": args.seed, "calm_unsettled": calm.unsettled}
            return report, wall
        progress(f"[calm] all {len(calm.views)} agents ended in {wall['calm']:.0f}s")
        started = time.monotonic()
        space = await bench.slice("chaos")
        storm, chaos, failures = await chaos_run(bench, space, specs, args, progress)
        wall["storm"] = time.monotonic() - started - chaos.seconds
        wall["settle"] = chaos.seconds
    finally:
        bench.kill_all()
    report = verdict(specs, calm, storm, chaos, failures, args)
    if args.verify_restore:
        report["restore_mismatches"] = restore_mismatches(bench.workdir)
        report["ok"] = report["ok"] and not report["restore_mismatches"]
    suspects = [*report["differing"], *report["unsettled"], *report["duplicates"], *report["events_never_applied"]]
    if suspects:
        keep = set(list(dict.fromkeys(suspects))[:EVIDENCE_AGENTS])
        names = space.names
        topics = [names.agent_events, names.step_commands("restack"), names.step_results, names.dead_letters,
                  f"{space.app_id}-agents-changelog"]
        progress(f"reading the broker's records of {sorted(keep)} ...")
        report["evidence"] = await history(bootstrap, profile, space.prefix, topics, keep)
    return report, wall


def restore_mismatches(workdir: Path) -> list[dict[str, Any]]:
    """What the processors' restore audits found (`--verify-restore`): each a log line's fields."""
    found = []
    for path in sorted(workdir.glob("*chaos-p*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if MISMATCH_MESSAGE in line:
                try:
                    found.append({"log": path.name, **json.loads(line)})
                except ValueError:
                    found.append({"log": path.name, "line": line[:500]})
    return found


def kinds_of(args: argparse.Namespace) -> dict[str, int]:
    """The fault kinds of this run and their weights (`freeze` only when asked for)."""
    return {**KINDS, "freeze": args.freeze_weight} if args.freeze_weight else dict(KINDS)


def _terminate(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, required=True, help="SIGKILLs to deliver")
    parser.add_argument("--seed", type=int, default=None, help="seed of the workload and the kills (default: time)")
    parser.add_argument("--agents", type=int, default=4, help="agents per wave (plus their children)")
    parser.add_argument("--kills-per-wave", type=int, default=10, help="a new wave of agents every this many kills")
    parser.add_argument("--min-step-kills", type=int, default=None,
                        help="processor deaths with a step running to reach (default: a fifth of --kills)")
    parser.add_argument("--settle-timeout", type=float, default=180.0,
                        help="give up waiting for the agents to end once none ended for this long (per run)")
    parser.add_argument("--freeze-weight", type=int, default=0,
                        help="also freeze (SIGSTOP, then SIGCONT) the processor that owns a running step, with "
                             "this weight beside the kills' (processor 30, worker 30, both 20, rebalance 20)")
    parser.add_argument("--verify-restore", action="store_true",
                        help="processors audit every restore against the changelog (AGENTSTREAM_VERIFY_RESTORE); "
                             "a difference fails the run")
    parser.add_argument("--out", type=Path, default=None, help="write the report (JSON) here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the work folder even when the run passes")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = int(time.time())
    if args.min_step_kills is None:
        args.min_step_kills = math.ceil(args.kills / 5)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir = Path(tempfile.mkdtemp(prefix="agentstream-chaos-"))
    external = os.environ.get("AGENTSTREAM_KAFKA_BOOTSTRAP")
    progress: Progress = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    progress(f"chaos harness: seed {args.seed}, {args.kills} kills, {args.agents} agents per wave; "
             f"work folder {workdir}")
    started = time.monotonic()
    try:
        if external:
            report, wall = asyncio.run(main_async(args, external, workdir, progress))
        else:
            with EmbeddedBroker() as broker:
                report, wall = asyncio.run(main_async(args, broker.bootstrap, workdir, progress))
    except KeyboardInterrupt:
        print(f"interrupted; spawned processes killed; logs in {workdir}", file=sys.stderr)
        return 130
    except Exception as exc:  # a harness that cannot finish still says why and where the logs are
        report, wall = {"ok": False, "seed": args.seed, "error": f"{type(exc).__name__}: {exc}"}, {}
    wall["total"] = time.monotonic() - started
    keep = not report["ok"] or args.keep_logs
    report["logs"] = str(workdir) if keep else None
    report["wall_s"] = {k: round(v, 1) for k, v in wall.items()}
    text = json.dumps(report, indent=2, sort_keys=True, default=str)
    if args.out:
        args.out.write_text(text)
    if keep:
        (workdir / "report.json").write_text(text)
    if "kills" in report:
        print(render(report, list(kinds_of(args)), wall, report["logs"]))
    else:
        print(json.dumps(report, indent=2, sort_keys=True, default=str))
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
