"""The processor's own Prometheus metrics, in one bundle built on a registry passed in.

Names and labels are stable: dashboards and alerts in deploy/ depend on them. Faust's
sensor adds its metrics under the `agentstream_faust_` prefix on the same registry.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from agentstream.topics import AgentStatus
from agentstream.topics._envelopes import REASON_CODES


@dataclass(frozen=True)
class ProcessorMetrics:
    inputs: Counter
    dead_letters: Counter
    turn_seconds: Histogram
    status_changes: Counter
    updates_published: Counter
    assigned_partitions: Gauge
    ready: Gauge
    build: Info
    turns: Counter
    journal_length: Histogram
    steps: Counter
    step_seconds: Histogram
    step_retries: Counter
    steps_dispatched: Counter
    pending_timers: Gauge
    timers_fired: Counter
    timer_tick_errors: Counter
    compactions: Counter
    compactions_refused: Counter
    agents: Gauge
    nondeterminism: Counter
    blocked_turns: Counter
    record_bytes: Histogram
    input_rewinds: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> "ProcessorMetrics":
        return cls(
            inputs=Counter(
                "agentstream_inputs",
                "Inputs read by the processor, by source topic kind and outcome "
                "(applied, duplicate, ignored, dead_lettered).",
                ["source", "outcome"],
                registry=registry,
            ),
            dead_letters=Counter(
                "agentstream_dead_letters",
                "Records sent to the dead-letter topic, by reason code.",
                ["reason"],
                registry=registry,
            ),
            turn_seconds=Histogram(
                "agentstream_turn_duration_seconds",
                "Time to apply one input to an agent's record, storage included.",
                buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
                registry=registry,
            ),
            status_changes=Counter(
                "agentstream_agent_status_changes",
                "Agent status changes, by the new status.",
                ["status"],
                registry=registry,
            ),
            updates_published=Counter(
                "agentstream_agent_updates_published",
                "Records published on the agent-updates topic.",
                registry=registry,
            ),
            assigned_partitions=Gauge(
                "agentstream_assigned_partitions",
                "Partitions of agent-events this processor currently owns.",
                registry=registry,
            ),
            ready=Gauge(
                "agentstream_processor_ready",
                "1 when the processor owns its partitions and has restored their state, else 0.",
                registry=registry,
            ),
            build=Info("agentstream_build", "agentstream version of this process.", registry=registry),
            turns=Counter(
                "agentstream_turns",
                "Turns run by the engine (inputs that changed an agent), by input kind "
                "(schedule, event, cancel, step_result, timer, child_result).",
                ["kind"],
                registry=registry,
            ),
            journal_length=Histogram(
                "agentstream_journal_length",
                "Journal entries an agent holds after a turn (what a replay would have to redo).",
                buckets=(0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
                registry=registry,
            ),
            steps=Counter(
                "agentstream_steps",
                "Step attempt outcomes seen by agents, by function and outcome (completed, retried, failed, timed_out).",
                ["function", "outcome"],
                registry=registry,
            ),
            step_seconds=Histogram(
                "agentstream_step_duration_seconds",
                "Time from a step's first schedule to its final outcome, retries included.",
                ["function"],
                registry=registry,
            ),
            step_retries=Counter(
                "agentstream_step_retries",
                "Failed step attempts that are retried after a backoff, by function.",
                ["function"],
                registry=registry,
            ),
            steps_dispatched=Counter(
                "agentstream_step_commands_sent",
                "Step commands sent to workers (first attempts and retries).",
                registry=registry,
            ),
            pending_timers=Gauge(
                "agentstream_pending_timers",
                "Durable timers pending in the agents this processor owns.",
                registry=registry,
            ),
            timers_fired=Counter(
                "agentstream_timers_fired", "Timer records sent for due durable timers.", registry=registry
            ),
            timer_tick_errors=Counter(
                "agentstream_timer_tick_errors",
                "Timer ticks that failed (each is retried after a growing pause; the log shows the first of a streak).",
                registry=registry,
            ),
            compactions=Counter(
                "agentstream_compactions",
                "Journals replaced by a snapshot of the agent's fields after a quiescent turn.",
                registry=registry,
            ),
            compactions_refused=Counter(
                "agentstream_compactions_refused",
                "Quiescent turns after which compaction was refused (restarting run would redo work or change a field).",
                registry=registry,
            ),
            agents=Gauge(
                "agentstream_agents",
                "Agents this processor owns, by status (running, completed, failed, cancelled, stuck).",
                ["status"],
                registry=registry,
            ),
            nondeterminism=Counter(
                "agentstream_nondeterminism_errors",
                "Replays that diverged from the journal; each parks its agent with status stuck.",
                registry=registry,
            ),
            blocked_turns=Counter(
                "agentstream_blocked_turns",
                "Turns stopped by the turn time limit because agent code blocked the event loop.",
                registry=registry,
            ),
            record_bytes=Histogram(
                "agentstream_record_bytes",
                "Size of each agent record written (RocksDB and the changelog); a record must fit one Kafka "
                "message (AGENTSTREAM_MAX_RECORD_BYTES).",
                buckets=(1e3, 4e3, 16e3, 64e3, 128e3, 256e3, 512e3, 768e3, 1e6),
                registry=registry,
            ),
            input_rewinds=Counter(
                "agentstream_input_rewinds",
                "Times inputs arrived beyond the position the agents' records reflect: the inputs the consumer "
                "had skipped were read directly and handled first.",
                registry=registry,
            ),
        )

    def start_at_zero(self) -> None:
        """Give each series that the dashboard and the alerts read a 0 from the start (a
        label value has no series until it is first observed: "no data" instead of 0)."""
        for code in REASON_CODES:
            self.dead_letters.labels(code)
        for status in AgentStatus:
            self.status_changes.labels(status.value)
