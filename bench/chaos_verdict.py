"""What the chaos harness compares, and how it reports a difference.

An agent's comparable state is the part of `GET /agents/{id}` that depends on its
inputs only: status, result, error, fields, the events it applied (name, payload,
result: not their message IDs or times) and what is still in flight. Counters that
legitimately depend on timing (inputs applied, journal length, compactions, revision:
a step retried after a worker died is one more input) are left out.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from harness import fetch

ENDED = frozenset({"completed", "failed", "cancelled", "stuck"})
COMPARED = ("agent_type", "status", "result", "error", "fields", "steps_in_flight", "timers", "children",
            "parked_inputs", "events")


def read_state(url: str, agent_id: str) -> tuple[int, dict[str, Any] | None]:
    """(HTTP status, the agent's public view); status 0 when no processor answered."""
    status, body = fetch(f"{url}/agents/{agent_id}", timeout=5.0)
    if status != 200:
        return status, None
    try:
        return status, json.loads(body)
    except ValueError:
        return 0, None


def comparable(view: dict[str, Any]) -> dict[str, Any]:
    """The part of an agent's view that must be the same after any crash."""
    return {
        "agent_type": view.get("agent_type"),
        "status": view.get("status"),
        "result": view.get("result"),
        "error": view.get("error"),
        "fields": view.get("fields"),
        "steps_in_flight": view.get("steps_in_flight"),
        "timers": len(view.get("timers") or {}),
        "children": view.get("children"),
        "parked_inputs": view.get("parked_inputs"),
        "events": [[e.get("name"), e.get("payload"), e.get("result"), e.get("error"), e.get("done")]
                   for e in view.get("events") or []],
    }


def summary(view: dict[str, Any] | None, http_status: int = 200) -> dict[str, Any]:
    """What a stuck agent's state says about where it hangs (for the hang report)."""
    if view is None:
        return {"http_status": http_status, "state": "not readable" if http_status == 0 else "not found"}
    fields = view.get("fields") or {}
    return {
        "status": view.get("status"),
        "error": view.get("error"),
        "steps_in_flight": view.get("steps_in_flight"),
        "timers": view.get("timers"),
        "children_not_done": [c for c, info in (view.get("children") or {}).items() if not info.get("done")],
        "parked_inputs": view.get("parked_inputs"),
        "events_not_done": [[e.get("name"), e.get("payload")] for e in view.get("events") or [] if not e.get("done")],
        "journal_length": view.get("journal_length"),
        "inputs_applied": view.get("inputs_applied"),
        "fields": {k: (v if len(json.dumps(v)) < 200 else f"<{len(json.dumps(v))} chars>") for k, v in fields.items()},
    }


@dataclass
class Settled:
    """The agents' views once they ended, and those that did not within the deadline."""

    views: dict[str, dict[str, Any]] = field(default_factory=dict)
    unsettled: dict[str, dict[str, Any]] = field(default_factory=dict)  # agent -> summary of its last state
    seconds: float = 0.0


async def settle(url: Callable[[], str], ids: Iterable[str], timeout: float,
                 progress: Callable[[str], None] = lambda _: None) -> Settled:
    """Poll every agent until it ended (any final status); give up once none ended for `timeout` seconds.

    A large workload legitimately needs longer than a small one, so the deadline moves
    with progress, up to a hard cap of `timeout` plus one second per agent: a hang is
    reported within `timeout` of the last agent that ended. Passes over the agents are
    spaced by at least their own duration, so the polling takes at most half of the
    processor's time away from the agents.
    """
    pending = list(ids)
    started = last_progress = time.monotonic()
    cap = started + timeout + len(pending)
    done: dict[str, dict[str, Any]] = {}
    last: dict[str, tuple[int, dict[str, Any] | None]] = {}
    next_note = started + 30
    while pending:
        base = url()
        pass_started = time.monotonic()
        for agent_id in pending:
            last[agent_id] = await asyncio.to_thread(read_state, base, agent_id)
            view = last[agent_id][1]
            if view is not None and view.get("status") in ENDED:
                done[agent_id] = view
        ended = [a for a in pending if a in done]
        pending = [a for a in pending if a not in done]
        now = time.monotonic()
        if ended:
            last_progress = now
        if not pending or now > min(cap, last_progress + timeout):
            break
        if now > next_note:
            progress(f"  {len(pending)} agents still running after {now - started:.0f}s, e.g. {pending[:3]}")
            next_note = now + 30
        await asyncio.sleep(max(0.5, now - pass_started))
    unsettled = {a: summary(last.get(a, (0, None))[1], last.get(a, (0, None))[0]) for a in pending}
    for agent_id in pending:  # the full last view too, for the verdict (not printed)
        unsettled[agent_id]["view"] = last.get(agent_id, (0, None))[1]
    return Settled(done, unsettled, time.monotonic() - started)


def duplicates(view: dict[str, Any]) -> list[str]:
    """Everything this agent applied more than once, as readable notes (empty: nothing twice)."""
    notes: list[str] = []
    fields = view.get("fields") or {}
    for name in ("steps", "ticks"):
        entries = fields.get(name)
        if isinstance(entries, list):
            seen: set[str] = set()
            for entry in entries:
                key = json.dumps(entry)
                if key in seen:
                    notes.append(f"{name}: {key} applied twice")
                seen.add(key)
    calls, pokes = fields.get("poke_calls"), fields.get("pokes")
    if isinstance(calls, int) and isinstance(pokes, dict) and calls > len(pokes):
        notes.append(f"poke_calls {calls} > {len(pokes)} distinct pokes: a poke applied twice")
    events: set[str] = set()
    for event in view.get("events") or []:
        key = json.dumps([event.get("name"), event.get("payload")])
        if key in events:
            notes.append(f"event {key} applied twice")
        events.add(key)
    return notes


def diff(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """One line per compared key (per field for `fields`) that differs: `key: calm -> chaos`."""
    lines: list[str] = []
    for key in COMPARED:
        want, have = expected.get(key), got.get(key)
        if want == have:
            continue
        if key == "fields" and isinstance(want, dict) and isinstance(have, dict):
            for name in sorted(set(want) | set(have)):
                if want.get(name) != have.get(name):
                    lines.append(f"fields.{name}: {_short(want.get(name))} -> {_short(have.get(name))}")
        else:
            lines.append(f"{key}: {_short(want)} -> {_short(have)}")
    return lines


def _short(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def table(rows: list[tuple[str, str]]) -> str:
    """Two aligned columns."""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}} | {value}" for name, value in rows)


def render(report: dict[str, Any], kinds: list[str], wall: dict[str, float], logs: str | None) -> str:
    """The printed verdict: one table, then the first agents of each kind of failure."""
    kills, agents = report["kills"], report["agents"]
    rows = [("seed", str(report["seed"]))]
    rows += [(f"kills: {kind}", f"{kills['by_kind'].get(kind, 0)} ({kills['with_step_running'].get(kind, 0)} "
              f"with a step running)") for kind in kinds]
    rows += [
        ("kills: total", str(kills["total"])),
        ("processor deaths while its agent's step ran", str(kills["processor_deaths_with_step"])),
        ("rebalance kills while a processor was not ready", str(kills["rebalance_while_not_ready"])),
        ("restarts on a wiped data dir", str(kills["restarts_wiped"])),
        ("agents equal to the calm run", f"{agents['equal']} of {agents['total']}"),
        ("agents differing", str(agents["differing"])),
        ("agents not ended (hang)", str(agents["unsettled"])),
        ("agents with something applied twice", str(len(report["duplicates"]))),
        ("agents missing an event they were sent", str(len(report["events_never_applied"]))),
        ("calm results not as expected", str(len(report["calm_wrong"]))),
        ("components that did not start", str(len(report["start_failures"]))),
        *([("restores differing from the changelog", str(len(report["restore_mismatches"])))]
          if "restore_mismatches" in report else []),
        ("wall time", " ".join(f"{k} {v:.0f}s" for k, v in wall.items())),
        ("verdict", "OK" if report["ok"] else "FAILED"),
    ]
    out = [table(rows)]
    out.append("with a step running: processor/both = the killed processor owned an agent whose step the worker was "
               "inside (for processor, still inside after the kill); worker/rebalance = the worker was inside a step")
    for title, entries in (("differing", report["differing"]), ("applied twice", report["duplicates"]),
                           ("sent but never applied", report["events_never_applied"]),
                           ("calm run not as expected", report["calm_wrong"]),
                           ("not ended (last state)", report["unsettled"])):
        for agent_id, detail in list(entries.items())[:5]:
            if isinstance(detail, dict):
                detail = {k: v for k, v in detail.items() if k != "view"}
            lines = [line if isinstance(line, str) else json.dumps(line) for line in detail] \
                if isinstance(detail, list) else [json.dumps(detail, sort_keys=True)]
            out.append(f"{title}: {agent_id}\n  " + "\n  ".join(lines))
        if len(entries) > 5:
            out.append(f"{title}: ... and {len(entries) - 5} more")
    for failure in report["start_failures"]:
        out.append(f"did not start: {failure['component']}: {failure['error']} (log {failure['log']})")
    for mismatch in report.get("restore_mismatches", [])[:5]:
        out.append("restore differs: " + json.dumps({k: v for k, v in mismatch.items() if k not in ("ts", "logger")}))
    if "evidence" in report:
        out.append(f"every broker record of {sorted(report['evidence'])}: 'evidence' in the report JSON")
    if logs:
        out.append(f"logs and state kept in {logs} (report: {logs}/report.json)")
    return "\n".join(out)
