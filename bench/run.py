"""One-command benchmark of agentstream: `python bench/run.py [--quick] [--only NAME,...] [--brokers LIST]`.

Starts its own broker (or uses AGENTSTREAM_KAFKA_BOOTSTRAP), runs each measurement on
private topics with freshly spawned processors and workers, and prints one table.
`--brokers embedded,apache` runs everything on the embedded broker, then on a
single-node Apache Kafka (needs java and mvn), one broker at a time, and prints both
tables and a side-by-side comparison. Every spawned process is killed on exit, Ctrl-C
included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn

from agentstream.streams.broker import EmbeddedBroker, detect_profile
from agentstream.streams.broker.apache import ApacheKafkaCluster
from agentstream.streams.broker.embedded import BrokerStartError

from durable import invocation_latency, steps_per_second
from harness import Bench, Row
from longlived import engine_long_lived
from restart import processor_restart
from throughput import agentstream_events, faust_events
from workloads import (
    idle_memory,
    w1_keyed_events,
    w2a_latency,
    w2a_local_latency,
    w2b_local_throughput,
    w2b_throughput,
    w3_recovery,
)

Measurement = Callable[[Bench], Awaitable[list[Row]]]
MEASUREMENTS: dict[str, tuple[Measurement, str]] = {
    "events": (agentstream_events, "events/s through one agentstream processor"),
    "faust": (faust_events, "events/s through a bare Faust app (same records)"),
    "latency": (invocation_latency, "schedule -> result of a 3-step agent"),
    "steps": (steps_per_second, "steps/s with 32 agents looping at once"),
    "longlived": (engine_long_lived, "journal and restart of an old agent, pure engine"),
    "restart": (processor_restart, "SIGKILL + restart of a processor with an old agent"),
    # The speed issue's workloads, defined as in ../shared/peers (Restate, DBOS): bench/workloads.py
    "w1": (w1_keyed_events, "W1 keyed events through the client, state polled over HTTP"),
    "w2a": (w2a_latency, "W2a sequential 3-step invocations, get_agent_result and push"),
    "w2b": (w2b_throughput, "W2b 3-step invocations, 32 in flight"),
    "w2a-local": (w2a_local_latency, "W2a with local steps (run by the processor, like the peers' steps)"),
    "w2b-local": (w2b_local_throughput, "W2b with local steps"),
    "w3": (w3_recovery, "W3 SIGKILL processor + worker mid-step, time to the next event"),
    "memory": (idle_memory, "one processor holding idle agents: RSS and bytes on disk"),
}


def render(rows: list[Row], header: Row = Row("measurement", "value", "unit", "notes")) -> str:
    """Plain-text table with aligned columns; numbers right-aligned."""
    table = [header, *rows]
    widths = [max(len(getattr(r, f)) for r in table) for f in ("measurement", "value", "unit")]

    def line(r: Row) -> str:
        return f"{r.measurement:<{widths[0]}} | {r.value:>{widths[1]}} | {r.unit:<{widths[2]}} | {r.notes}".rstrip()

    rule = "-+-".join("-" * w for w in widths) + "-+-" + "-" * 5
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


async def run_all(bench: Bench, names: list[str], progress: Callable[[str], None]) -> list[Row]:
    rows: list[Row] = []
    for name in names:
        measure, what = MEASUREMENTS[name]
        progress(f"[{name}] {what} ...")
        started = time.monotonic()
        try:
            rows.extend(await measure(bench))
        except Exception as exc:  # one broken measurement should not cost the others' numbers
            bench.failed = True
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            rows.append(Row(f"{name}: FAILED", "-", "-", f"{type(exc).__name__}: {reason}"[:160]))
        finally:
            bench.kill_all()  # idle processors still poll the broker: they would slow the next measurement
        progress(f"[{name}] done in {time.monotonic() - started:.0f}s")
    if "events" in bench.rates and "faust" in bench.rates:
        ratio = bench.rates["events"] / bench.rates["faust"]
        at = next(i + 1 for i, r in enumerate(rows) if r.measurement == "events/s, bare Faust")
        rows.insert(at, Row("ratio agentstream / bare Faust", f"{ratio:.2f}", "x", "events/s over events/s"))
    return rows


class MeasurementFailed(Exception):
    """Some measurement failed; the rows (with the failures) are still worth printing."""

    def __init__(self, rows: list[Row]) -> None:
        super().__init__("some measurements failed")
        self.rows = rows


def _terminate(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def load_row() -> Row:
    """The machine's load when a table's run starts: other work on it skews every number."""
    one, five, fifteen = os.getloadavg()
    return Row("machine load at start (1/5/15 min)", f"{one:.2f} / {five:.2f} / {fifteen:.2f}", "load",
               f"os.getloadavg(); {os.cpu_count()} CPUs (os.cpu_count())")


async def main_async(args: argparse.Namespace, bootstrap: str, workdir: Path, load: Row) -> list[Row]:
    profile = await detect_profile(bootstrap)
    bench = Bench(bootstrap, profile, workdir, args.quick, memory_agents=args.memory_agents)
    names = args.only or list(MEASUREMENTS)
    try:
        rows = [load, *await run_all(bench, names, lambda text: print(text, file=sys.stderr, flush=True))]
    finally:
        bench.kill_all()
    if bench.failed:
        raise MeasurementFailed(rows)
    return rows


BROKERS = {"embedded": "embedded broker", "apache": "Apache Kafka (1 node)"}


@contextlib.contextmanager
def started_broker(kind: str, workdir: Path) -> Iterator[str]:
    """The bootstrap of a broker of `kind` started for this run; stopped (its data dropped) on exit."""
    if kind == "apache":
        with ApacheKafkaCluster(workdir / "apache-kafka") as cluster:
            yield cluster.bootstrap
    else:
        with EmbeddedBroker() as broker:
            yield broker.bootstrap


def _number(value: str) -> float | None:
    try:
        return float(value.replace(",", ""))
    except ValueError:
        return None


def compare(tables: dict[str, list[Row]]) -> str:
    """One line per measurement with each broker's value side by side, and the ratio of the last to the first."""
    kinds = list(tables)
    first, last = kinds[0], kinds[-1]
    by_kind = {kind: {r.measurement: r for r in rows} for kind, rows in tables.items()}
    rows: list[Row] = []
    for measurement, row in by_kind[first].items():
        values = [by_kind[kind].get(measurement) for kind in kinds]
        a, b = _number(row.value), _number(values[-1].value if values[-1] else "")
        ratio = f"{b / a:.2f}x" if a and b is not None else "-"
        cells = " | ".join(f"{kind}: {v.value if v else '-'}" for kind, v in zip(kinds, values))
        rows.append(Row(measurement, ratio, row.unit, cells))
    header = Row("measurement", f"{last}/{first}", "unit", "values")
    return render(rows, header)


def measurement_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MEASUREMENTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown measurement {', '.join(unknown) or text!r}; choose from "
                                         + ", ".join(MEASUREMENTS))
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller loads (about a minute)")
    parser.add_argument("--only", type=measurement_names, metavar="NAME,...",
                        help="run these measurements only (comma-separated): " + ", ".join(MEASUREMENTS))
    parser.add_argument("--keep-logs", action="store_true", help="keep the work folder (component logs, state)")
    parser.add_argument("--memory-agents", type=int, default=None, metavar="N",
                        help="idle agents held by the memory row (default 10,000; 100000 measures the "
                             "target's own size, about 6 min on Apache Kafka)")
    parser.add_argument("--brokers", default="embedded",
                        help="comma-separated brokers to run on, one after the other: " + ", ".join(BROKERS)
                        + " (default: embedded; ignored when AGENTSTREAM_KAFKA_BOOTSTRAP is set)")
    args = parser.parse_args()
    kinds = [kind.strip() for kind in args.brokers.split(",") if kind.strip()]
    if not kinds or any(kind not in BROKERS for kind in kinds):
        parser.error(f"--brokers {args.brokers!r}: choose from {', '.join(BROKERS)}")
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    workdir = Path(tempfile.mkdtemp(prefix="agentstream-bench-"))
    external = os.environ.get("AGENTSTREAM_KAFKA_BOOTSTRAP")
    status = 0
    tables: dict[str, list[Row]] = {}
    headers: list[str] = []
    unstarted: set[str] = set()
    try:
        for kind in ["external"] if external else kinds:
            started = time.monotonic()
            load_before = os.getloadavg()[0]  # other work on the machine skews every number: say so
            load = load_row()
            try:
                if external:
                    rows = asyncio.run(main_async(args, external, workdir, load))
                else:
                    print(f"== {BROKERS[kind]} ==", file=sys.stderr, flush=True)
                    (workdir / kind).mkdir()
                    with started_broker(kind, workdir / kind) as bootstrap:
                        rows = asyncio.run(main_async(args, bootstrap, workdir / kind, load))
            except MeasurementFailed as failed:
                rows, status = failed.rows, 1
            except BrokerStartError as exc:  # e.g. no java: the other broker's table is still worth printing
                rows, status = [Row(f"{kind} broker: FAILED", "-", "-", str(exc).splitlines()[0][:160])], 1
                unstarted.add(kind)
            tables[kind] = rows
            when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
            broker = "external Kafka" if external else BROKERS[kind]
            headers.append(f"agentstream benchmark{' (--quick)' if args.quick else ''} — {when}, {machine}, {broker}, "
                           f"1-min load avg at start {load_before:.1f}, {time.monotonic() - started:.0f}s total")
    except KeyboardInterrupt:
        print("interrupted; spawned processes killed", file=sys.stderr)
        return 130
    finally:
        if status or args.keep_logs:
            print(f"logs and state kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\n\n".join(f"{header}\n{render(rows)}" for header, rows in zip(headers, tables.values())))
    compared = {kind: rows for kind, rows in tables.items() if kind not in unstarted}
    if len(compared) > 1:
        print(f"\nside by side ({' vs '.join(BROKERS[k] for k in compared)}):")
        print(compare(compared))
    return status


if __name__ == "__main__":
    sys.exit(main())
