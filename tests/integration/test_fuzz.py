"""The fuzz harness in CI: `python bench/fuzz.py --records 500` against a real processor.

Issue 7, "Proof that lasts": hostile records on agent-events and step-results, interleaved
with valid inputs, through a real `agentstream processor` on the session's broker. The
harness exits 0 only if the processor stayed up, every record was counted as what it must
come to, the dead letters on the topic match the metric and each record, and the real
agents' state counts each valid input exactly once (see bench/fuzz.py). The seed is fixed
so that a failure reproduces; AGENTSTREAM_FUZZ_SEED picks another.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
RECORDS = 500

pytestmark = pytest.mark.integration


@pytest.mark.timeout(180)
def test_hostile_records_against_a_real_processor_are_all_accounted_for_and_valid_inputs_still_apply(
    broker: str,
) -> None:
    seed = os.environ.get("AGENTSTREAM_FUZZ_SEED", "20260107")
    done = subprocess.run(
        [sys.executable, str(BENCH / "fuzz.py"), "--records", str(RECORDS), "--seed", seed, "--targets", "6"],
        env={**os.environ, "AGENTSTREAM_KAFKA_BOOTSTRAP": broker}, cwd=BENCH, capture_output=True, text=True,
        timeout=170,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    assert "agentstream fuzz passed" in done.stdout, report
    sent = re.search(r"^hostile records sent\s+\|\s+(\d+)", done.stdout, re.MULTILINE)
    assert sent is not None and int(sent.group(1)) == RECORDS, report
    assert not re.search(r"\|\s+FAIL\s+\|", done.stdout), report
