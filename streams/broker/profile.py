"""Client settings that depend on which broker we talk to.

The *embedded broker profile* gathers every workaround for the embedded Tansu broker
in one place. It is chosen only when the broker identifies itself as one started by
agentstream (by its cluster ID), so a real Kafka cluster always gets plain defaults.

What the embedded broker does differently (Tansu 0.6.0 with aiokafka 0.14):
- memory storage only: a broker restart loses every topic;
- InitProducerId v0 fails: no idempotent or transactional producers, and
  read_committed does not hide aborted records (we never rely on transactions);
- ListOffsets LATEST answers the last *batch's* base offset + 1, so a batch of several
  records hides its tail from anyone reading "up to the end" (Faust table recovery
  did restore stale values). One record per batch makes the answer exact;
- a group join waits half the session timeout, so a short session timeout keeps
  rebalances fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EMBEDDED_CLUSTER_PREFIX = "agentstream-embedded-"


@dataclass(frozen=True)
class BrokerProfile:
    """Timeouts and batching for producers, consumers and the Faust app."""

    embedded: bool
    session_timeout_s: float = 10.0
    heartbeat_interval_s: float = 3.0
    # None leaves the client library's default in place.
    max_batch_size: int | None = None

    @classmethod
    def real_kafka(cls) -> "BrokerProfile":
        return cls(embedded=False)

    @classmethod
    def embedded_broker(cls) -> "BrokerProfile":
        # max_batch_size=1 byte: aiokafka still accepts one record into an empty batch,
        # so every batch holds exactly one record.
        return cls(embedded=True, session_timeout_s=2.0, heartbeat_interval_s=0.5, max_batch_size=1)

    def producer_options(self) -> dict[str, Any]:
        """Keyword arguments for `aiokafka.AIOKafkaProducer`."""
        options: dict[str, Any] = {"acks": "all", "enable_idempotence": False}
        if self.max_batch_size is not None:
            options["max_batch_size"] = self.max_batch_size
        return options

    def consumer_options(self) -> dict[str, Any]:
        """Keyword arguments for `aiokafka.AIOKafkaConsumer` in a group."""
        return {
            "session_timeout_ms": int(self.session_timeout_s * 1000),
            "heartbeat_interval_ms": int(self.heartbeat_interval_s * 1000),
        }

    def faust_options(self) -> dict[str, Any]:
        """Keyword arguments for `faust.App` (Faust's own settings names)."""
        options: dict[str, Any] = {
            "broker_session_timeout": self.session_timeout_s,
            "broker_heartbeat_interval": self.heartbeat_interval_s,
        }
        if self.max_batch_size is not None:
            options["producer_max_batch_size"] = self.max_batch_size
        return options


async def detect_profile(bootstrap: str, forced: bool | None = None) -> BrokerProfile:
    """Pick the profile for `bootstrap`: `forced` if given, else by the broker's cluster ID."""
    if forced is not None:
        return BrokerProfile.embedded_broker() if forced else BrokerProfile.real_kafka()
    from agentstream.streams.kafka import describe_cluster_id

    cluster_id = await describe_cluster_id(bootstrap)
    if cluster_id.startswith(EMBEDDED_CLUSTER_PREFIX):
        return BrokerProfile.embedded_broker()
    return BrokerProfile.real_kafka()
