"""The processor's tuning of Faust."""

from __future__ import annotations

from pathlib import Path

from agentstream.streams.broker import BrokerProfile
from agentstream.streams.processor.app import COMMIT_INTERVAL_S, create_processor
from agentstream.streams.settings import Settings


async def test_handled_inputs_are_committed_every_half_second(tmp_path: Path) -> None:
    # Inputs not committed when a processor dies are read again by the next owner (each costs a
    # turn's overhead to recognise as a duplicate); Faust's default waits 2.8 s between commits.
    processor = create_processor(Settings(data_dir=tmp_path, app_id="commits"), BrokerProfile.real_kafka(), 4,
                                 http_port=6099)
    assert processor.app.conf.broker_commit_interval == COMMIT_INTERVAL_S == 0.5
