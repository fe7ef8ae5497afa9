"""The processor's own Prometheus metrics, in one bundle built on a registry passed in.

Names and labels are stable: dashboards and alerts in deploy/ depend on them. Faust's
sensor adds its metrics under the `agentstream_faust_` prefix on the same registry.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info


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
        )
