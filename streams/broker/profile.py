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
- a group join waits half the session timeout, and at least a second (measured with
  aiokafka: 1.0 s at session timeouts of 0.6, 1 and 2 s, 3.0 s at 6 s), so a short
  session timeout keeps rebalances fast, down to that second;
- a fetch with nothing to read waits about half its max wait even when records arrive
  meanwhile, so every hop of a record would cost up to 750 ms with Faust's 1.5 s: a
  short max wait keeps hops in the tens of milliseconds.

On a real Kafka every producer is idempotent with `acks=all`: a retried send after a
lost acknowledgement (a broker restart, a leader change) is not written twice, and the
order of a partition's records survives retries. Faust has no setting for it (only its
transactional "exactly_once" mode turns it on), so `apply_to_faust_app` adds it to the
app's producer.

A real Kafka answers a fetch as soon as one of the partitions it names has a record, but
aiokafka leaves out of the next fetch a partition whose records are still buffered, and
sends no other fetch to that broker while one is waiting. A partition that ran dry right
after the fetch went out therefore waits for that fetch to end: up to the max wait, 1.5 s
in Faust. Under the speed issue's W2b (32 invocations in flight on Apache Kafka) 1% of
invocations took 1.7 s and throughput halved; with a 100 ms max wait the slowest took
0.4 to 0.5 s. So consumers on a real Kafka wait at most `REAL_KAFKA_FETCH_MAX_WAIT_MS`;
an idle consumer then asks each broker ten times a second, which costs nothing worth counting.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

EMBEDDED_CLUSTER_PREFIX = "agentstream-embedded-"
REAL_KAFKA_FETCH_MAX_WAIT_MS = 100
_PATCHED = "agentstream_producer_extra"
_FAUST_PRODUCER_EXTRA: "weakref.WeakKeyDictionary[Any, dict[str, Any]]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class BrokerProfile:
    """Timeouts and batching for producers, consumers and the Faust app."""

    embedded: bool
    idempotent: bool = False  # enable.idempotence on every producer (InitProducerId must work)
    session_timeout_s: float = 10.0
    heartbeat_interval_s: float = 3.0
    # None leaves the client library's default in place.
    max_batch_size: int | None = None
    fetch_max_wait_ms: int | None = None

    @classmethod
    def real_kafka(cls) -> "BrokerProfile":
        return cls(embedded=False, idempotent=True, fetch_max_wait_ms=REAL_KAFKA_FETCH_MAX_WAIT_MS)

    @classmethod
    def embedded_broker(cls) -> "BrokerProfile":
        # max_batch_size=1 byte: aiokafka still accepts one record into an empty batch,
        # so every batch holds exactly one record.
        return cls(
            embedded=True, session_timeout_s=2.0, heartbeat_interval_s=0.5, max_batch_size=1, fetch_max_wait_ms=20
        )

    def producer_options(self) -> dict[str, Any]:
        """Keyword arguments for `aiokafka.AIOKafkaProducer`."""
        options: dict[str, Any] = {"acks": "all", "enable_idempotence": self.idempotent}
        if self.max_batch_size is not None:
            options["max_batch_size"] = self.max_batch_size
        return options

    def consumer_options(self) -> dict[str, Any]:
        """Keyword arguments for `aiokafka.AIOKafkaConsumer` in a group."""
        options: dict[str, Any] = {
            "session_timeout_ms": int(self.session_timeout_s * 1000),
            "heartbeat_interval_ms": int(self.heartbeat_interval_s * 1000),
        }
        if self.fetch_max_wait_ms is not None:
            options["fetch_max_wait_ms"] = self.fetch_max_wait_ms
        return options

    def apply_to_faust(self) -> None:
        """Settings Faust has no option for (its consumer's fetch wait is fixed at 1.5 s): the profile's."""
        if self.fetch_max_wait_ms is None:
            return
        from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

        create = AIOKafkaConsumerThread._create_worker_consumer
        wait_ms = self.fetch_max_wait_ms
        if getattr(create, "agentstream_fetch_max_wait_ms", None) == wait_ms:
            return

        def create_with_short_fetch_wait(thread: Any, transport: Any) -> Any:
            consumer = create(thread, transport)
            consumer._fetch_max_wait_ms = wait_ms  # read by the fetcher when the consumer starts
            return consumer

        create_with_short_fetch_wait.agentstream_fetch_max_wait_ms = wait_ms  # type: ignore[attr-defined]
        AIOKafkaConsumerThread._create_worker_consumer = create_with_short_fetch_wait  # type: ignore[method-assign,assignment]

    def apply_to_faust_app(self, app: Any) -> None:
        """Make `app`'s producer idempotent when the profile says so (Faust has no option for it).

        Faust builds its producers' aiokafka options from `_settings_extra()`; the patch,
        installed once per process, adds what is registered here for the producer's app.
        """
        if not self.idempotent:
            return
        from faust.transport.drivers.aiokafka import Producer

        _FAUST_PRODUCER_EXTRA[app] = {"acks": "all", "enable_idempotence": True}
        original = Producer._settings_extra
        if getattr(original, _PATCHED, False):
            return

        def settings_extra(producer: Any) -> dict[str, Any]:
            return {**original(producer), **_FAUST_PRODUCER_EXTRA.get(producer.app, {})}

        setattr(settings_extra, _PATCHED, True)
        Producer._settings_extra = settings_extra  # type: ignore[method-assign,assignment]

    def faust_options(self) -> dict[str, Any]:
        """Keyword arguments for `faust.App` (Faust's own settings names)."""
        options: dict[str, Any] = {
            "broker_session_timeout": self.session_timeout_s,
            "broker_heartbeat_interval": self.heartbeat_interval_s,
        }
        if self.max_batch_size is not None:
            options["producer_max_batch_size"] = self.max_batch_size
        return options


async def detect_profile(
    bootstrap: str, forced: bool | None = None, security: Mapping[str, Any] | None = None
) -> BrokerProfile:
    """Pick the profile for `bootstrap`: `forced` if given, else by the broker's cluster ID.

    `security`: the clients' TLS/SASL options (`security.kafka_options(settings)`).
    """
    if forced is not None:
        return BrokerProfile.embedded_broker() if forced else BrokerProfile.real_kafka()
    from agentstream.streams.kafka import describe_cluster_id

    cluster_id = await describe_cluster_id(bootstrap, security)
    if cluster_id.startswith(EMBEDDED_CLUSTER_PREFIX):
        return BrokerProfile.embedded_broker()
    return BrokerProfile.real_kafka()
