"""membership.PreviousMember: which noted group member a restart may take out of its group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from agentstream.streams.membership import PreviousMember, worker_member_file


def test_a_member_noted_by_a_process_that_is_gone_is_left_behind(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "m.json").write_text(json.dumps({"pid": int(gone.stdout), "group": "g", "member_id": "old-1"}))
    assert PreviousMember(tmp_path / "m.json", "g").left_behind() == "old-1"
    assert PreviousMember(tmp_path / "m.json", "other-group").left_behind() is None


def test_a_member_noted_by_a_running_sibling_is_never_taken(tmp_path: Path) -> None:
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "m.json").write_text(json.dumps({"pid": sibling.pid, "group": "g", "member_id": "live-1"}))
        assert PreviousMember(tmp_path / "m.json", "g").left_behind() is None
        sibling.kill()
        sibling.wait()  # reaped: gone
        assert PreviousMember(tmp_path / "m.json", "g").left_behind() == "live-1"
    finally:
        sibling.kill()


def test_a_killed_but_unreaped_writer_counts_as_gone(tmp_path: Path) -> None:
    zombie = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        zombie.kill()
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped: a zombie
        (tmp_path / "m.json").write_text(json.dumps({"pid": zombie.pid, "group": "g", "member_id": "z-1"}))
        assert PreviousMember(tmp_path / "m.json", "g").left_behind() == "z-1"
    finally:
        zombie.wait()


def test_remember_then_read_back_in_a_new_process_and_bad_files_are_ignored(tmp_path: Path) -> None:
    member = PreviousMember(tmp_path / "deep" / "m.json", "g")
    member.remember("mine-1")
    # This very process wrote it: a restarted container may get the same PID (1), so it is ours to take.
    assert member.left_behind() == "mine-1"
    (tmp_path / "deep" / "m.json").write_text("not json")
    assert member.left_behind() is None
    assert PreviousMember(tmp_path / "missing.json", "g").left_behind() is None
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    unwritable = PreviousMember(not_a_folder / "m.json", "g")  # as on a read-only disk, even for root
    unwritable.remember("x")  # no error: only the optimisation is lost
    assert unwritable.left_behind() is None
    assert worker_member_file("app-worker-q").name == "app-worker-q.json"
