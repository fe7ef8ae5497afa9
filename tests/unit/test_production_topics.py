"""Production settings of producers and topics: idempotence on a real broker, replication and
`min.insync.replicas` on every topic agentstream creates and on the processor's changelog.

These check what agentstream *asks* for; tests/integration/test_real_kafka.py checks on
Apache Kafka that the broker got it (idempotent batches, a changelog actually compacted).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agentstream.streams.broker import BrokerProfile
from agentstream.streams.processor import create_processor
from agentstream.streams.settings import Settings
from agentstream.topics import TopicNames


def test_producers_on_a_real_broker_are_idempotent_with_acks_all() -> None:
    options = BrokerProfile.real_kafka().producer_options()
    assert options["acks"] == "all"
    assert options["enable_idempotence"] is True


def test_the_embedded_profile_keeps_its_non_idempotent_one_record_batches() -> None:
    options = BrokerProfile.embedded_broker().producer_options()
    assert options == {"acks": "all", "enable_idempotence": False, "max_batch_size": 1}


def test_topic_specs_take_replication_and_min_insync_replicas_from_settings() -> None:
    settings = Settings(replication_factor=3, min_insync_replicas=2, topic_prefix="p.", task_queue="q")
    specs = settings.topic_specs(partitions=6)
    assert {s.name for s in specs} == {s.name for s in TopicNames("p.").specs(6, task_queues=("q",))}
    for spec in specs:
        assert spec.partitions == 6
        assert spec.replication_factor == 3
        assert spec.configs()["min.insync.replicas"] == "2"


def test_topic_specs_default_to_the_configured_partitions_and_queues() -> None:
    specs = Settings(partitions=5, task_queue="restack").topic_specs(task_queues=("a", "b"))
    assert all(s.partitions == 5 for s in specs)
    assert {"agentstream.step-commands.a", "agentstream.step-commands.b"} <= {s.name for s in specs}
    assert "agentstream.step-commands.restack" not in {s.name for s in specs}


def test_without_min_insync_replicas_the_broker_default_applies() -> None:
    for spec in Settings().topic_specs():
        assert "min.insync.replicas" not in spec.configs()
        assert spec.replication_factor == 1


def test_min_insync_replicas_above_the_replication_factor_is_refused() -> None:
    """Every acks=all write would fail with NotEnoughReplicas: say so at start-up instead."""
    with pytest.raises(ValidationError, match="min_insync_replicas"):
        Settings(replication_factor=2, min_insync_replicas=3)


def test_changelog_configs_come_from_settings_and_keep_it_compacted() -> None:
    from agentstream.streams.processor.app import changelog_configs

    settings = Settings(
        replication_factor=3, min_insync_replicas=2,
        changelog_topic_configs={"segment.ms": 1000, "min.cleanable.dirty.ratio": 0.01},
    )
    assert changelog_configs(settings) == {
        "min.insync.replicas": "2", "segment.ms": "1000", "min.cleanable.dirty.ratio": "0.01",
    }
    assert changelog_configs(Settings()) == {}  # production default: the broker's own cleaning settings


def test_changelog_configs_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentstream.streams.processor.app import changelog_configs

    monkeypatch.setenv("AGENTSTREAM_CHANGELOG_TOPIC_CONFIGS", '{"segment.ms": 500, "max.compaction.lag.ms": "1000"}')
    assert changelog_configs(Settings()) == {"segment.ms": "500", "max.compaction.lag.ms": "1000"}


def test_a_changelog_config_cannot_turn_compaction_off() -> None:
    with pytest.raises(ValidationError, match="cleanup.policy"):
        Settings(changelog_topic_configs={"cleanup.policy": "delete"})


async def test_the_processor_declares_its_changelog_with_the_configs_and_replication(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, replication_factor=3, min_insync_replicas=2,
                        changelog_topic_configs={"segment.ms": "1000"})
    processor = create_processor(settings, BrokerProfile.real_kafka(), 4, http_port=6099)
    topic = processor.table.changelog_topic
    assert (topic.replicas or processor.app.conf.topic_replication_factor) == 3  # what Faust creates it with
    assert dict(topic.config or {}) == {"min.insync.replicas": "2", "segment.ms": "1000"}
    assert topic.compacting


async def test_the_processors_faust_producer_is_idempotent_on_a_real_broker(tmp_path: Path) -> None:
    real = create_processor(Settings(data_dir=tmp_path / "real", app_id="real"), BrokerProfile.real_kafka(), 4,
                            http_port=6099)
    extra = real.app.producer._settings_extra()
    assert extra["enable_idempotence"] is True
    assert extra["acks"] == "all"


async def test_the_processors_faust_producer_stays_plain_on_the_embedded_broker(tmp_path: Path) -> None:
    embedded = create_processor(Settings(data_dir=tmp_path / "emb", app_id="emb"), BrokerProfile.embedded_broker(), 4,
                                http_port=6099)
    assert not embedded.app.producer._settings_extra().get("enable_idempotence")
