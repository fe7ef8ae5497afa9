"""A real worker process on the embedded broker: step-commands in, step-results out.

Commands are produced by hand (no processor), the way a processor would send them.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from agentstream.streams.devstack import ManagedProcess
from agentstream.streams.kafka import partitions_now
from agentstream.topics import StepCommand, derived_message_id

from conftest import PARTITIONS, Cluster, poll

pytestmark = pytest.mark.integration

QUEUE = "restack"


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: Any  # decoded JSON


async def read_records(
    cluster: Cluster, topic: str, until: Callable[[list[Record]], bool], timeout: float = 60.0
) -> list[Record]:
    """Like `cluster.read_topic`, but keeps each record's key (results must be keyed by agent ID)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    try:
        while not until(records):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{topic}: condition not met within {timeout}s; got {len(records)} records: {records[-3:]}"
                )
            batches = await consumer.getmany(timeout_ms=200)
            records.extend(Record(r.key, json.loads(r.value)) for batch in batches.values() for r in batch)
    finally:
        await consumer.stop()
    return records


def make_command(agent_id: str, function: str, input: Any, step: int, **kwargs: Any) -> StepCommand:
    return StepCommand(
        agent_id=agent_id, run_id=f"run-{agent_id}", step_id=f"{agent_id}/step-{step}",
        function=function, input=input, task_queue=QUEUE, **kwargs,
    )


async def send_commands(cluster: Cluster, commands: list[StepCommand]) -> None:
    await cluster.produce(cluster.names.step_commands(QUEUE), [(c.key, c.to_bytes()) for c in commands])


def results_for(commands: list[StepCommand]) -> Callable[[list[Record]], bool]:
    """Until every command has at least one result (matched by step ID; progress records do not count)."""
    wanted = {c.step_id for c in commands}
    return lambda records: wanted <= {r.value["step_id"] for r in records if r.value["kind"] == "step_result"}


async def start_worker(cluster: Cluster, name: str = "worker") -> ManagedProcess:
    worker = cluster.worker(name=name).start()
    await asyncio.to_thread(worker.wait_ready)
    return worker


def scrape(worker: ManagedProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def steps_total(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[tuple[str, str], float]:
    """The step counts observed (the worker starts every function's outcomes at 0: those are left out)."""
    return {
        (dict(labels)["function"], dict(labels)["outcome"]): value
        for (name, labels), value in metrics.items()
        if name == "agentstream_worker_steps_total" and value
    }


async def test_worker_runs_functions_and_publishes_results(cluster: Cluster) -> None:
    worker = await start_worker(cluster)
    commands = [
        make_command("agent-a", "double", 21, 1),
        make_command("agent-b", "shout", "hi", 1, attempt=2),
        make_command("agent-c", "refuse", 5, 1),
        make_command("agent-d", "flaky", 1, 1, attempt=3),
        make_command("agent-a", "double", 50, 2),
    ]
    await send_commands(cluster, commands)
    records = await read_records(cluster, cluster.names.step_results, results_for(commands))

    by_step = {r.value["step_id"]: r for r in records}
    for command in commands:
        record = by_step[command.step_id]
        assert record.key == command.agent_id.encode()
        result = record.value
        assert result["kind"] == "step_result"
        assert result["agent_id"] == command.agent_id
        assert result["run_id"] == command.run_id
        assert result["attempt"] == command.attempt
        assert result["function"] == command.function
        assert result["message_id"] == derived_message_id(command.message_id, "result")

    double, shout, refuse, flaky, double2 = (by_step[c.step_id].value for c in commands)
    assert (double["ok"], double["output"], double["error"]) == (True, 42, None)
    assert (double2["ok"], double2["output"]) == (True, 100)
    assert (shout["ok"], shout["output"]) == (True, "HI")
    assert refuse["ok"] is False and refuse["output"] is None
    assert refuse["error"]["type"] == "TerminalError"
    assert refuse["error"]["retryable"] is False
    assert "refusing 5" in refuse["error"]["message"]
    assert flaky["ok"] is False
    assert flaky["error"]["type"] == "RetryableError"
    assert flaky["error"]["retryable"] is True
    assert flaky["error"]["retry_after_s"] == 1.5

    # /metrics counts what ran, by function and outcome.
    expected = {
        ("double", "completed"): 2.0,
        ("shout", "completed"): 1.0,
        ("refuse", "failed"): 1.0,
        ("flaky", "retryable_failure"): 1.0,
    }
    seen = await poll(
        lambda: (s := steps_total(scrape(worker))) == expected and s, timeout=20, what="steps_total metrics"
    )
    assert seen == expected
    metrics = scrape(worker)
    assert metrics[("agentstream_worker_steps_in_flight", ())] == 0
    assert metrics[("agentstream_worker_step_duration_seconds_count", (("function", "double"),))] == 2


async def test_malformed_command_goes_to_dead_letters(cluster: Cluster) -> None:
    worker = await start_worker(cluster)
    topic = cluster.names.step_commands(QUEUE)
    malformed = [
        (b"agent-bad-1", b"this is not json"),
        (b"agent-bad-2", json.dumps({"kind": "step_command", "agent_id": "agent-bad-2"}).encode()),
        (b"agent-bad-3", b"\xff\xfe\x00binary"),
    ]
    await cluster.produce(topic, malformed)
    valid = [make_command("agent-ok", "double", 4, 1), make_command("agent-ok2", "shout", "after", 1)]
    await send_commands(cluster, valid)

    letters = await read_records(cluster, cluster.names.dead_letters, lambda rs: len(rs) >= len(malformed))
    by_key = {r.key: r.value for r in letters}
    assert set(by_key) == {key for key, _ in malformed}
    for key, value in malformed:
        letter = by_key[key]
        assert letter["kind"] == "dead_letter"
        assert letter["key"] == key.decode()
        assert letter["source_topic"] == topic
        assert letter["reason"]
        assert letter["reason_code"] in {"not_json", "invalid_envelope"}
        assert letter["rejected_by"] == f"worker:{QUEUE}"
        original = value.decode() if letter["value_encoding"] == "utf-8" else None
        if original is not None:
            assert letter["value"] == original
    assert by_key[b"agent-bad-1"]["reason_code"] == "not_json"
    assert by_key[b"agent-bad-2"]["reason_code"] == "invalid_envelope"
    assert "run_id" in by_key[b"agent-bad-2"]["reason"]  # names a missing field
    assert by_key[b"agent-bad-3"]["value_encoding"] == "base64"

    # Later valid commands still run.
    records = await read_records(cluster, cluster.names.step_results, results_for(valid))
    outputs = {r.value["step_id"]: r.value["output"] for r in records}
    assert outputs == {"agent-ok/step-1": 8, "agent-ok2/step-1": "AFTER"}
    assert all(r.value["agent_id"] in {"agent-ok", "agent-ok2"} for r in records)

    def dead_letter_counts() -> dict[str, float]:
        return {
            dict(labels)["reason"]: v
            for (name, labels), v in scrape(worker).items()
            if name == "agentstream_worker_dead_letters_total" and v  # every reason starts at 0
        }

    expected = {"not_json": 2.0, "invalid_envelope": 1.0}
    await poll(lambda: dead_letter_counts() == expected, timeout=20, what=f"dead_letters metric == {expected}")


async def test_crashed_worker_is_replaced_and_every_command_gets_a_result(cluster: Cluster) -> None:
    first = await start_worker(cluster, "worker1")
    before = [make_command(f"agent-{i % 7}", "double", i, i) for i in range(400)]
    # Kill as soon as the worker has published something, with a backlog still to run:
    # the replacement runs the rest, and batches worker1 published but did not commit
    # run again (at least once; how many varies from run to run).
    producing = asyncio.create_task(send_commands(cluster, before))
    await read_records(cluster, cluster.names.step_results, lambda rs: len(rs) >= 1)
    first.kill()
    await producing
    assert first.process is not None and first.process.returncode is not None

    after = [make_command(f"agent-{i % 7}", "shout", f"text-{i}", 1000 + i) for i in range(20)]
    # A command sent twice: one worker runs it once (the second copy joins or republishes).
    duplicate = make_command("agent-dup", "double", 8, 1)
    await send_commands(cluster, [*after, duplicate, duplicate])

    second = await start_worker(cluster, "worker2")
    commands = [*before, *after, duplicate]
    records = await read_records(cluster, cluster.names.step_results, results_for(commands), timeout=90)

    by_command: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_command[record.value["step_id"]].append(record)
    for command in commands:
        results = by_command[command.step_id]
        assert results, f"no result for {command.step_id}"
        # Every copy of a command's result carries the same, derived message ID ...
        assert {r.value["message_id"] for r in results} == {derived_message_id(command.message_id, "result")}
        # ... and the same outcome, keyed by the agent.
        assert {r.key for r in results} == {command.agent_id.encode()}
        assert all(r.value["ok"] for r in results)
        assert all(r.value["run_id"] == command.run_id and r.value["attempt"] == command.attempt for r in results)
    for command in before:
        assert by_command[command.step_id][0].value["output"] == command.input * 2  # type: ignore[operator]
    for command in after:
        assert by_command[command.step_id][0].value["output"] == str(command.input).upper()
    # Distinct message IDs == distinct commands: duplicates collapse on de-duplication.
    assert len({r.value["message_id"] for r in records}) == len(commands)
    redelivered = Counter(r.value["message_id"] for r in records)
    assert sum(redelivered.values()) >= len(commands)

    # The replacement did real work: it ran every command produced after the crash.
    ran = steps_total(await poll(lambda: scrape(second), timeout=10, what="worker2 metrics"))
    assert ran.get(("shout", "completed"), 0) >= len(after)
    assert ran.get(("double", "completed"), 0) >= 1  # at least the duplicate, once


# --- per-record completion, safe commits, heartbeats, shutdown, rebalance ----------------

GROUP_SUFFIX = f"-worker-{QUEUE}"  # the worker's consumer group is f"{app_id}-worker-{queue}"


async def send_located(cluster: Cluster, commands: list[StepCommand]) -> list[tuple[int, int]]:
    """Produce `commands` in order; (partition, offset) of each, as acknowledged by the broker."""
    producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, **cluster.profile.producer_options())
    await producer.start()
    try:
        located = []
        for command in commands:
            delivery = await producer.send(cluster.names.step_commands(QUEUE), key=command.key, value=command.to_bytes())
            metadata = await delivery
            located.append((metadata.partition, metadata.offset))
        return located
    finally:
        await producer.stop()


async def committed(cluster: Cluster) -> dict[int, int]:
    """The worker group's committed offset per partition of the step-commands topic."""
    topic = cluster.names.step_commands(QUEUE)
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    await admin.start()
    try:
        # Partitions named explicitly: the embedded broker cannot answer "all partitions".
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        offsets = await admin.list_consumer_group_offsets(cluster.app_id + GROUP_SUFFIX, partitions=partitions)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0}


async def wait_committed(cluster: Cluster, check: Callable[[dict[int, int]], bool], what: str) -> dict[int, int]:
    deadline = time.monotonic() + 30
    last: dict[int, int] = {}
    while time.monotonic() < deadline:
        last = await committed(cluster)
        if check(last):
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"committed offsets: {what} not reached within 30s (last: {last})")


async def end_offsets(cluster: Cluster) -> dict[int, int]:
    """The next offset of every non-empty partition of the step-commands topic."""
    topic = cluster.names.step_commands(QUEUE)
    consumer = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await partitions_now(consumer, topic)]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {tp.partition: end for tp, end in ends.items() if end > 0}


def in_flight(worker: ManagedProcess) -> float:
    return scrape(worker)[("agentstream_worker_steps_in_flight", ())]


async def test_a_blocked_step_holds_back_neither_later_results_nor_other_commits(cluster: Cluster) -> None:
    worker = await start_worker(cluster)
    gate = cluster.tmp / "gate"
    # One agent, so one partition, in this order: the blocked step comes first.
    blocked = make_command("agent-slow", "wait_for_file", str(gate), 1)
    quick = [make_command("agent-slow", "double", 3, 2), make_command("agent-slow", "shout", "next", 3)]
    located = await send_located(cluster, [blocked, *quick])
    partition, blocked_offset = located[0]
    assert {p for p, _ in located} == {partition}

    # The quick steps' results come while the first step is still blocked on the file.
    records = await read_records(cluster, cluster.names.step_results, results_for(quick))
    assert blocked.step_id not in {r.value["step_id"] for r in records}
    assert {r.value["step_id"]: r.value["output"] for r in records} == {quick[0].step_id: 6, quick[1].step_id: "NEXT"}
    assert in_flight(worker) == 1

    # Commits go on for other partitions, but never past the blocked record of its partition.
    markers = [make_command(f"marker-{i}", "double", i, 1) for i in range(8)]
    marked = [(p, o) for p, o in await send_located(cluster, markers) if p != partition]
    assert marked, "all markers landed on the blocked partition"
    await read_records(cluster, cluster.names.step_results, results_for(markers))
    offsets = await wait_committed(
        cluster, lambda c: all(c.get(p, -1) > o for p, o in marked), "markers on other partitions committed"
    )
    assert offsets.get(partition, blocked_offset) == blocked_offset

    gate.touch()
    records = await read_records(cluster, cluster.names.step_results, results_for([blocked]))
    (result,) = [r.value for r in records if r.value["step_id"] == blocked.step_id]
    assert (result["ok"], result["output"]) == (True, str(gate))
    end = (await end_offsets(cluster))[partition]  # markers may have landed there too
    await wait_committed(cluster, lambda c: c.get(partition) == end, f"blocked partition committed to its end {end}")


async def test_heartbeat_and_schedule_to_start_through_the_worker(cluster: Cluster) -> None:
    worker = await start_worker(cluster)
    beating = make_command("agent-hb", "heartbeating", 10, 1, heartbeat_timeout_s=0.5)  # runs ~1 s
    silent = make_command("agent-silent", "wait_for_file", str(cluster.tmp / "never"), 1, heartbeat_timeout_s=0.3)
    stale = make_command(
        "agent-stale", "double", 1, 1,
        sent_at=datetime.now(timezone.utc) - timedelta(hours=1), schedule_to_start_timeout_s=10,
    )
    commands = [beating, silent, stale]
    await send_commands(cluster, commands)
    records = await read_records(cluster, cluster.names.step_results, results_for(commands))
    by_step = {r.value["step_id"]: r.value for r in records if r.value["kind"] == "step_result"}

    assert (by_step[beating.step_id]["ok"], by_step[beating.step_id]["output"]) == (True, 10)
    assert by_step[beating.step_id]["duration_s"] > 0.5
    error = by_step[silent.step_id]["error"]
    assert (error["type"], error["retryable"]) == ("HeartbeatTimeout", True)
    error = by_step[stale.step_id]["error"]
    assert (error["type"], error["retryable"]) == ("ScheduleToStartTimeout", False)

    expected = {("heartbeating", "completed"): 1.0, ("wait_for_file", "timed_out"): 1.0, ("double", "expired"): 1.0}
    await poll(lambda: steps_total(scrape(worker)) == expected, timeout=20, what=f"steps_total == {expected}")
    metrics = scrape(worker)
    assert metrics[("agentstream_worker_heartbeats_total", (("function", "heartbeating"),))] == 10


async def test_shutdown_finishes_quick_steps_and_leaves_blocked_ones_uncommitted(cluster: Cluster) -> None:
    first = await start_worker(cluster, "worker1")
    gate = cluster.tmp / "gate"
    finishing = make_command("agent-stop", "heartbeating", 15, 1)  # ~1.5 s: ends within the grace period
    blocked = make_command("agent-stop", "wait_for_file", str(gate), 2)
    located = await send_located(cluster, [finishing, blocked])
    (partition, _), (_, blocked_offset) = located
    assert located[1][0] == partition
    await poll(lambda: in_flight(first) == 2, timeout=20, what="both steps running")

    started = time.monotonic()
    await asyncio.to_thread(first.stop, 30)  # SIGTERM, then wait for the process to exit
    assert first.process is not None and first.process.returncode is not None
    assert time.monotonic() - started < 15  # grace (5 s) for the blocked step, then cancelled

    records = await read_records(cluster, cluster.names.step_results, results_for([finishing]))
    assert blocked.step_id not in {r.value["step_id"] for r in records}  # cancelled, never reported
    # Committed past the step that finished, not past the cancelled one.
    assert (await committed(cluster)).get(partition) == blocked_offset

    # A new worker runs the cancelled step again.
    await start_worker(cluster, "worker2")
    gate.touch()
    records = await read_records(cluster, cluster.names.step_results, results_for([blocked]))
    assert [r.value["ok"] for r in records if r.value["step_id"] == blocked.step_id] == [True]


def completed(worker: ManagedProcess, function: str) -> float:
    return steps_total(scrape(worker)).get((function, "completed"), 0.0)


async def test_a_rebalance_hands_running_steps_over_without_losing_or_wedging_any(cluster: Cluster) -> None:
    first = await start_worker(cluster, "worker1")
    gate = cluster.tmp / "gate"
    blocked = [make_command(f"rebalanced-{i}", "wait_for_file", str(gate), 1) for i in range(8)]
    located = await send_located(cluster, blocked)
    assert {p for p, _ in located} == set(range(PARTITIONS))  # whichever partitions worker1 keeps hold some
    await poll(lambda: in_flight(first) == len(blocked), timeout=20, what="worker1 runs every blocked step")

    # A second worker joins: the partitions it takes over resume from the committed
    # offsets, i.e. before the steps worker1 is still running, so it runs them too.
    second = await start_worker(cluster, "worker2")
    await poll(lambda: in_flight(second) >= 1, timeout=30, what="worker2 takes over running steps")

    gate.touch()
    quick = [make_command(f"rebalanced-{i}", "double", i, 2) for i in range(8)]
    await send_commands(cluster, quick)
    records = await read_records(cluster, cluster.names.step_results, results_for([*blocked, *quick]))
    assert all(r.value["ok"] for r in records)
    outputs = {r.value["step_id"]: r.value["output"] for r in records if r.value["function"] == "double"}
    assert outputs == {c.step_id: 2 * c.input for c in quick}  # type: ignore[operator]

    # Both workers survived the rebalance, and every partition's commit reaches its end
    # (nothing is left pending, by either worker).
    assert first.process is not None and first.process.poll() is None
    assert second.process is not None and second.process.poll() is None
    ends = await end_offsets(cluster)
    await wait_committed(cluster, lambda c: all(c.get(p, 0) == end for p, end in ends.items()), f"commits at {ends}")

    # worker1 ran each blocked step once: the ones of partitions it got back were handed
    # out again and adopted while still running, not started a second time.
    await poll(lambda: completed(first, "wait_for_file") >= len(blocked), timeout=20, what="worker1's steps done")
    assert completed(first, "wait_for_file") == len(blocked)
    assert 1 <= completed(second, "wait_for_file") < len(blocked)


# --- duplicates of a command, progress records ------------------------------------------

def duplicates(worker: ManagedProcess) -> dict[str, float]:
    return {
        dict(labels)["action"]: value
        for (name, labels), value in scrape(worker).items()
        if name == "agentstream_worker_duplicate_commands_total" and value  # both actions start at 0
    }


async def test_a_command_seen_again_after_it_completed_is_not_run_again_but_its_result_is_republished(
    cluster: Cluster,
) -> None:
    worker = await start_worker(cluster)
    command = make_command("agent-again", "double", 21, 1)
    await send_commands(cluster, [command])
    await read_records(cluster, cluster.names.step_results, results_for([command]))
    await send_commands(cluster, [command])  # e.g. re-sent by a processor after its restart

    records = await read_records(
        cluster, cluster.names.step_results,
        lambda rs: sum(r.value.get("step_id") == command.step_id for r in rs) >= 2,
    )
    results = [r for r in records if r.value["kind"] == "step_result"]
    assert len(results) == 2
    first, second = results
    assert first == second  # the very same record: key, message ID, output, even sent_at
    assert first.value["message_id"] == derived_message_id(command.message_id, "result")
    assert first.value["command_id"] == command.message_id
    assert first.value["output"] == 42

    await poll(lambda: duplicates(worker) == {"republished": 1.0}, timeout=20, what="one republished duplicate")
    assert steps_total(scrape(worker)) == {("double", "completed"): 1.0}  # the function ran once
    ends = await end_offsets(cluster)
    await wait_committed(cluster, lambda c: all(c.get(p, 0) == end for p, end in ends.items()), "both copies acked")


async def test_a_command_seen_again_while_it_runs_joins_the_running_attempt(cluster: Cluster) -> None:
    worker = await start_worker(cluster)
    gate = cluster.tmp / "gate"
    command = make_command("agent-join", "wait_for_file", str(gate), 1)
    await send_commands(cluster, [command, command])
    await poll(lambda: duplicates(worker) == {"joined": 1.0}, timeout=20, what="the second copy joined")
    assert in_flight(worker) == 1  # one attempt runs, not two

    gate.touch()
    ends = await end_offsets(cluster)
    # Both copies are acknowledged once the one attempt's result is on the broker.
    await wait_committed(cluster, lambda c: all(c.get(p, 0) == end for p, end in ends.items()), "both copies acked")
    records = await read_records(cluster, cluster.names.step_results, results_for([command]))
    assert [r.value["output"] for r in records if r.value["kind"] == "step_result"] == [str(gate)]
    assert steps_total(scrape(worker)) == {("wait_for_file", "completed"): 1.0}


def progress_of(records: list[Record], command: StepCommand, event: str) -> list[dict[str, Any]]:
    return [
        r.value for r in records
        if r.value["kind"] == "step_progress" and r.value["command_id"] == command.message_id and r.value["event"] == event
    ]


async def test_a_command_with_a_timeout_the_engine_times_gets_a_started_record_before_its_result(
    cluster: Cluster,
) -> None:
    await start_worker(cluster)
    timed = make_command("agent-timed", "heartbeating", 3, 1, start_to_close_timeout_s=30)  # beats, no hb timeout
    untimed = make_command("agent-untimed", "double", 2, 1)
    await send_commands(cluster, [timed, untimed])
    records = await read_records(cluster, cluster.names.step_results, results_for([timed, untimed]))

    of_timed = [r for r in records if r.value["command_id"] == timed.message_id]
    assert [(r.value["kind"], r.value.get("event")) for r in of_timed] == [
        ("step_progress", "started"), ("step_result", None),
    ]
    started = of_timed[0]
    assert started.key == timed.agent_id.encode()
    assert started.value == {
        "v": 1, "kind": "step_progress", "message_id": derived_message_id(timed.message_id, "started"),
        "agent_id": timed.agent_id, "sent_at": started.value["sent_at"], "run_id": timed.run_id,
        "step_id": timed.step_id, "attempt": 1, "function": "heartbeating", "event": "started",
        "command_id": timed.message_id,
    }
    # No timeout for the engine to time: no progress records at all.
    assert [r.value["kind"] for r in records if r.value["command_id"] == untimed.message_id] == ["step_result"]


async def test_heartbeats_are_forwarded_throttled_when_the_command_has_a_heartbeat_timeout(cluster: Cluster) -> None:
    worker = await start_worker(cluster)
    command = make_command("agent-beats", "heartbeating", 12, 1, heartbeat_timeout_s=0.6)  # 12 beats over ~1.2 s
    await send_commands(cluster, [command])
    records = await read_records(cluster, cluster.names.step_results, results_for([command]))

    beats = progress_of(records, command, "heartbeat")
    assert len(progress_of(records, command, "started")) == 1
    # At most one record per 0.2 s (a third of the timeout) out of 12 heartbeat() calls in ~1.2 s.
    assert 2 <= len(beats) <= 7
    assert [b["message_id"] for b in beats] == [
        derived_message_id(command.message_id, f"heartbeat:{n}") for n in range(1, len(beats) + 1)
    ]
    sent = [datetime.fromisoformat(b["sent_at"]) for b in beats]
    assert all((later - earlier).total_seconds() >= 0.19 for earlier, later in zip(sent, sent[1:]))
    result = [r.value for r in records if r.value["kind"] == "step_result"]
    assert [(r["ok"], r["output"]) for r in result] == [(True, 12)]
    metrics = scrape(worker)
    assert metrics[("agentstream_worker_heartbeats_total", (("function", "heartbeating"),))] == 12
