"""Configuration for every agentstream component, read from `AGENTSTREAM_*` variables."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic import field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentstream.topics import TopicNames, TopicSpec

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


class Settings(BaseSettings):
    """One settings object shared by processor, worker, client and CLI.

    Every field can be set as `AGENTSTREAM_<FIELD>` (e.g. `AGENTSTREAM_KAFKA_BOOTSTRAP`).
    """

    # hide_input_in_errors: a validator of the whole object would print every input, secrets too.
    model_config = SettingsConfigDict(env_prefix="AGENTSTREAM_", extra="ignore", hide_input_in_errors=True)

    kafka_bootstrap: str = Field(
        default=DEFAULT_BOOTSTRAP, description="Kafka bootstrap servers, comma separated."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How every client talks to Kafka: TLS (SSL), SASL, both, or neither."
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="PEM file of the CA(s) that signed the brokers' certificates (default: the system's)."
    )
    kafka_ssl_certfile: Path | None = Field(default=None, description="PEM client certificate, for brokers that ask for one.")
    kafka_ssl_keyfile: Path | None = Field(default=None, description="PEM private key of the client certificate.")
    kafka_ssl_key_password: SecretStr | None = Field(default=None, description="Password of an encrypted key file.")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(default="PLAIN")
    kafka_sasl_username: str | None = Field(default=None)
    kafka_sasl_password: SecretStr | None = Field(default=None)
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token a processor's HTTP API demands on every endpoint but /health, /ready and /metrics; "
        "clients send it. Unset: the API is open.",
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
    replication_factor: int = Field(
        default=1, ge=1, description="Replication of the topics agentstream creates and of the processors' changelog."
    )
    min_insync_replicas: int | None = Field(
        default=None, ge=1,
        description="min.insync.replicas of those topics (acks=all writes need this many replicas). Unset: the "
        "broker's default. In production with replication 3: 2.",
    )
    changelog_topic_configs: dict[str, str | int | float] = Field(
        default_factory=dict,
        description="Extra topic configs of the processors' changelog, applied when it is created, as JSON, e.g. "
        '{"segment.ms": 3600000, "min.cleanable.dirty.ratio": 0.1}. It is always compacted. Unset: the broker\'s '
        "defaults (a hot agent's updates are compacted once their segment rolls: after 7 days or 1 GiB).",
    )
    app_id: str = Field(default="agentstream", description="Processor consumer group and changelog prefix.")
    data_dir: Path = Field(default=Path(".agentstream"), description="Where processors keep RocksDB state.")
    advertise_host: str | None = Field(
        default=None,
        description="Host other processors dial to forward requests to this one (default: the bind host, "
        "or the hostname when binding to all interfaces). In Kubernetes: the pod IP.",
    )
    instance_id: str | None = Field(
        default=None, min_length=1, max_length=249,
        description="A stable name of this processor or worker, unique among the processors (or the workers of "
        "one task queue) of its app, such as a StatefulSet pod's name. Set, it is the consumer's "
        "group.instance.id (Kafka's static membership, Apache Kafka 2.3+): a component restarted within the "
        "session timeout gets its partitions back without a rebalance, while one stopped for good keeps them "
        "until the session timeout. A processor's advertised address must stay the same across restarts too. Two "
        "running components with one name fence each other.",
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
    turn_isolation: Literal["inline", "thread"] = Field(
        default="inline",
        description="Where agent code runs: 'inline' on the event loop, interrupted past the time limit (fastest); "
        "'thread' on a thread of its own, abandoned past it (also stops code that swallows the interruption).",
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
    verify_restore: bool = Field(
        default=False,
        description="After every restore, read the owned changelog partitions from the start and compare the "
        "table with them (a difference is logged as an error and repaired). For tests and the chaos harness: "
        "it costs a full read of those partitions per rebalance.",
    )
    log_format: str = Field(default="json", pattern="^(json|text)$")
    log_level: str = Field(default="INFO")

    @field_validator("changelog_topic_configs")
    @classmethod
    def _changelog_stays_compacted(cls, configs: dict[str, str | int | float]) -> dict[str, str | int | float]:
        if "cleanup.policy" in configs:
            raise ValueError("cleanup.policy cannot be set: the changelog must stay compacted (processors restore "
                             "agents from it)")
        return configs

    @model_validator(mode="after")
    def _insync_within_replicas(self) -> Settings:
        if self.min_insync_replicas is not None and self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"min_insync_replicas={self.min_insync_replicas} exceeds replication_factor={self.replication_factor}: "
                "every acks=all write would fail (NotEnoughReplicas)"
            )
        return self

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def topic_configs(self) -> dict[str, str]:
        """Configs set on every topic agentstream creates (beyond each topic's own cleanup and retention)."""
        return {} if self.min_insync_replicas is None else {"min.insync.replicas": str(self.min_insync_replicas)}

    def topic_specs(self, partitions: int | None = None, task_queues: tuple[str, ...] | None = None) -> list[TopicSpec]:
        """Every topic to create: `partitions` (default: this `partitions`), step-commands of `task_queues`
        (default: this `task_queue`), replication and `min.insync.replicas` from these settings."""
        names = TopicNames(self.topic_prefix)
        specs = names.specs(partitions or self.partitions, self.replication_factor, task_queues or (self.task_queue,))
        return [replace(spec, extra_configs=self.topic_configs()) for spec in specs]
