"""CI's short chaos run: bench/chaos.py with 20 SIGKILLs must find every agent equal to a calm run.

The harness (see its docstring) runs its workload once without kills and once while
processors (alone, while the worker is inside a step of an agent they own), the worker,
both, and one of two processors during a rebalance are SIGKILLed and restarted; it
exits 1 and writes `ok: false` when any agent ends differently, hangs, misses an event
it was sent or applied something twice. It runs as a subprocess on the session's
broker, exactly as `python bench/chaos.py --kills 20` runs by hand; set
AGENTSTREAM_CHAOS_SEED to replay a seed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CHAOS = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"
KILLS = 20
STEP_KILLS = 5  # processor deaths while the worker is inside a step of an agent that processor owns


@pytest.mark.timeout(600)
def test_twenty_sigkills_with_steps_running_leave_every_agent_as_in_the_calm_run(broker: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("AGENTSTREAM_CHAOS_SEED", time.time()))
    out = tmp_path / "chaos.json"
    command = [sys.executable, str(CHAOS), "--kills", str(KILLS), "--seed", str(seed), "--min-step-kills",
               str(STEP_KILLS), "--settle-timeout", "90", "--out", str(out)]
    run = subprocess.run(command, env={**os.environ, "AGENTSTREAM_KAFKA_BOOTSTRAP": broker},
                         capture_output=True, text=True, timeout=540)
    shown = f"seed {seed}, exit {run.returncode}\n{run.stdout}\n{run.stderr[-3000:]}"
    print(shown)
    assert out.exists(), shown
    report = json.loads(out.read_text())

    assert report.get("kills", {}).get("total", 0) >= KILLS, shown
    assert report["kills"]["processor_deaths_with_step"] >= STEP_KILLS, shown
    assert report["agents"]["equal"] == report["agents"]["total"], shown
    assert report["duplicates"] == {} and report["events_never_applied"] == {}, shown
    assert report["ok"] and run.returncode == 0, shown
