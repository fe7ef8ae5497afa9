"""Evidence for a failed chaos run: every record the broker holds about a few agents.

When an agent differs or hangs, its state alone rarely says why. Before the broker goes
away (the embedded one keeps everything in memory), the harness reads the chaos run's
topics from the beginning and keeps, per suspect agent, a one-line summary of each
record keyed by it: the inputs it was sent (agent-events), the step commands and
results, dead letters with their reasons, and every version of its stored record on the
changelog (revision, status, what was in flight), so a lost or repeated turn shows as a
gap or a step back in the revisions.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from agentstream.streams.broker import BrokerProfile
from agentstream.streams.kafka import partitions_now

ENVELOPE_KEYS = ("kind", "event", "payload", "step_id", "attempt", "function", "ok", "output", "timer_id",
                 "fire_at", "child_id", "status", "reason_code", "reason", "agent_type")


def _summary(topic: str, value: bytes | None) -> dict[str, Any]:
    if value is None:
        return {"tombstone": True}
    try:
        body = json.loads(value)
    except ValueError:
        return {"undecodable": len(value)}
    if not isinstance(body, dict):
        return {"value": str(body)[:100]}
    if topic.endswith("-changelog"):
        delivery = body.get("delivery") or {}
        return {
            "revision": body.get("revision"), "status": body.get("status"),
            "inputs_applied": body.get("inputs_applied"), "steps": sorted(body.get("steps") or {}),
            "timers": sorted(body.get("timers") or {}), "journal": len(body.get("journal") or []),
            "parked": len(body.get("parked") or []), "last_offsets": delivery.get("last_offsets"),
            "fields": {k: v for k, v in (body.get("fields") or {}).items() if k in ("steps", "ticks", "poke_calls")},
        }
    return {k: body[k] for k in ENVELOPE_KEYS if body.get(k) is not None}


def _add(entries: list[dict[str, Any]], entry: dict[str, Any]) -> None:
    """Append `entry`, or count it on the previous one when only its offset differs (rewrites of one record)."""
    if entries:
        last = entries[-1]
        if {k: v for k, v in last.items() if k not in ("offset", "repeated_until")} == \
                {k: v for k, v in entry.items() if k != "offset"}:
            last["repeated_until"] = entry["offset"]
            return
    entries.append(entry)


async def history(bootstrap: str, profile: BrokerProfile, prefix: str, topics: list[str], keys: set[str],
                  timeout: float = 60.0) -> dict[str, list[dict[str, Any]]]:
    """agent ID -> its records on `topics`, in each partition's order (topic, partition, offset, summary)."""
    found: dict[str, list[dict[str, Any]]] = {key: [] for key in keys}
    if not keys:
        return found
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                **profile.consumer_options())
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in await partitions_now(consumer, t)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        left = {tp for tp, end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    key = record.key.decode(errors="replace") if record.key else ""
                    if key in found:
                        found[key].append({"topic": tp.topic.removeprefix(prefix), "partition": tp.partition,
                                           "offset": record.offset, **_summary(tp.topic, record.value)})
                    if record.offset >= ends[tp] - 1:
                        left.discard(tp)
    finally:
        await consumer.stop()
    order = {t.removeprefix(prefix): i for i, t in enumerate(topics)}
    for key, entries in found.items():
        collapsed: list[dict[str, Any]] = []
        for entry in sorted(entries, key=lambda e: (order.get(e["topic"], 0), e["partition"], e["offset"])):
            _add(collapsed, entry)
        if left:
            collapsed.append({"incomplete": f"{len(left)} partitions not read to their end in {timeout}s"})
        found[key] = collapsed
    return found
