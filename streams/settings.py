"""Configuration for every agentstream component, read from `AGENTSTREAM_*` variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


class Settings(BaseSettings):
    """One settings object shared by processor, worker, client and CLI.

    Every field can be set as `AGENTSTREAM_<FIELD>` (e.g. `AGENTSTREAM_KAFKA_BOOTSTRAP`).
    """

    model_config = SettingsConfigDict(env_prefix="AGENTSTREAM_", extra="ignore")

    kafka_bootstrap: str = Field(
        default=DEFAULT_BOOTSTRAP, description="Kafka bootstrap servers, comma separated."
    )
    embedded_broker: bool | None = Field(
        default=None,
        description=(
            "Force the embedded broker profile on or off. Unset: on exactly when the broker's "
            "cluster ID says it is agentstream's embedded broker."
        ),
    )
    topic_prefix: str = Field(default="agentstream.", description="Prefix of every topic name.")
    partitions: int = Field(default=8, ge=1, description="Partitions of topics created by agentstream.")
    replication_factor: int = Field(default=1, ge=1)
    app_id: str = Field(default="agentstream", description="Processor consumer group and changelog prefix.")
    data_dir: Path = Field(default=Path(".agentstream"), description="Where processors keep RocksDB state.")
    advertise_host: str | None = Field(
        default=None,
        description="Host other processors dial to forward requests to this one (default: the bind host, "
        "or the hostname when binding to all interfaces). In Kubernetes: the pod IP.",
    )
    task_queue: str = Field(default="restack", description="Default task queue of steps and workers.")
    api_url: str = Field(
        default="http://127.0.0.1:6066", description="Any processor's HTTP address, for state queries."
    )
    dedup_window_seconds: float = Field(
        default=24 * 3600, gt=0, description="How long idempotency keys are remembered per agent."
    )
    dedup_max_keys: int = Field(
        default=1000, ge=1, description="At most this many idempotency keys are remembered per agent."
    )
    turn_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Longest a turn of agent code may run before the agent is parked as stuck."
    )
    continue_as_new_after: int = Field(
        default=2000, ge=1, description="Journal length past which agent.should_continue_as_new() turns true."
    )
    max_record_bytes: int = Field(
        default=900_000, ge=10_000,
        description="Largest agent record (and output record) a processor writes; keep it below the broker's "
        "message.max.bytes. An agent whose record would grow past it is parked as stuck with the reason.",
    )
    max_parked_inputs: int = Field(
        default=1000, ge=1, description="Inputs a stuck agent keeps parked; later ones are dead-lettered."
    )
    worker_concurrency: int = Field(default=16, ge=1, description="Steps a worker runs at once.")
    worker_result_cache_entries: int = Field(
        default=10_000, ge=0,
        description="Completed commands a worker remembers with their result, so a command sent again is "
        "answered with that result instead of being run again (0: none).",
    )
    worker_result_cache_mb: float = Field(
        default=64, ge=0, description="At most this many MiB of result records in that cache."
    )
    log_format: str = Field(default="json", pattern="^(json|text)$")
    log_level: str = Field(default="INFO")

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"
