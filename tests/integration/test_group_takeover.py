"""A killed processor's or worker's group member is taken out of the group by its restart (membership.py).

Without it the restarted process's join waits for the dead member's session to time out
(on the embedded broker the dead member could even be made the group's leader, and the
join then stalled until its session ended). The test asserts what the restart did, not
how long it took: the dead member was removed by the restart, and the group now holds
only the new member, which has every partition.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agentstream.streams.kafka import admin_client
from agentstream.streams.membership import processor_member_file, worker_member_file

from support import Cluster, poll

pytestmark = pytest.mark.integration


def noted(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text())["member_id"])
    except (OSError, ValueError, KeyError):
        return None


def removed(log: Path) -> list[str]:
    members = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry: dict[str, Any] = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") == "previous group member removed":
            members.append(str(entry["member_id"]))
    return members


async def members_of(cluster: Cluster, group: str) -> list[str]:
    async with admin_client(cluster.bootstrap) as admin:
        [description] = await admin.describe_consumer_groups([group])
    return [member[0] for member in description.groups[0][5]]  # (member_id, ...) per member


@pytest.mark.parametrize("kind", ["processor", "worker"])
async def test_a_restart_takes_the_killed_predecessors_member_out_of_the_group(cluster: Cluster, kind: str) -> None:
    data_dir = cluster.tmp / "state"
    group = cluster.app_id if kind == "processor" else f"{cluster.app_id}-worker-restack"
    member_file = processor_member_file(data_dir) if kind == "processor" else worker_member_file(group)

    def start(name: str) -> Any:
        process = cluster.processor(name, data_dir=data_dir) if kind == "processor" else cluster.worker(name)
        return process.start()

    first = start(f"{kind}-1")
    await asyncio.to_thread(first.wait_ready)
    await poll(lambda: noted(member_file) is not None, 30, what="the first member noted")
    dead = noted(member_file)
    assert dead is not None and dead in await members_of(cluster, group)
    first.kill()  # SIGKILL: no LeaveGroup of its own

    second = start(f"{kind}-2")
    await asyncio.to_thread(second.wait_ready, 90.0)
    assert removed(second.log_path) == [dead]
    await poll(lambda: noted(member_file) not in (None, dead), 30, what="the new member noted")
    assert await members_of(cluster, group) == [noted(member_file)]
