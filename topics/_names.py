"""Topic names and specs: what agentstream creates and expects on the broker."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

DAY_MS = 24 * 3600 * 1000
DEFAULT_PREFIX = "agentstream."


@dataclass(frozen=True)
class TopicSpec:
    """How one topic must look on the broker."""

    name: str
    partitions: int
    replication_factor: int = 1
    cleanup_policy: Literal["delete", "compact"] = "delete"
    retention_ms: int | None = 7 * DAY_MS
    # Deployment-wide configs on top of the topic's own, e.g. {"min.insync.replicas": "2"}.
    extra_configs: Mapping[str, str] = field(default_factory=dict, hash=False)

    def configs(self) -> dict[str, str]:
        configs: dict[str, str] = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
        return {**configs, **self.extra_configs}


@dataclass(frozen=True)
class TopicNames:
    """The names of agentstream's topics under one prefix."""

    prefix: str = DEFAULT_PREFIX

    @property
    def agent_events(self) -> str:
        return f"{self.prefix}agent-events"

    @property
    def step_results(self) -> str:
        return f"{self.prefix}step-results"

    @property
    def agent_updates(self) -> str:
        return f"{self.prefix}agent-updates"

    @property
    def agent_stream(self) -> str:
        """Live output of agents (token deltas, tool-call progress, run events), keyed by agent ID."""
        return f"{self.prefix}agent-stream"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}dead-letters"

    def step_commands(self, task_queue: str) -> str:
        return f"{self.prefix}step-commands.{task_queue}"

    def specs(
        self, partitions: int, replication_factor: int = 1, task_queues: tuple[str, ...] = ()
    ) -> list[TopicSpec]:
        """Every topic agentstream needs; agent-events and step-results are co-partitioned.

        agent-stream gets the same partition count too (readers find an agent's partition
        by its key, like every producer) and keeps a day: it carries progress a client
        may catch up on after a disconnect, while the step results stay authoritative.
        """

        def spec(name: str, **kwargs: object) -> TopicSpec:
            return TopicSpec(name, partitions, replication_factor, **kwargs)  # type: ignore[arg-type]

        return [
            spec(self.agent_events),
            spec(self.step_results),
            spec(self.agent_updates),
            spec(self.agent_stream, retention_ms=DAY_MS),
            spec(self.dead_letters, retention_ms=30 * DAY_MS),
            *(spec(self.step_commands(queue)) for queue in task_queues),
        ]
