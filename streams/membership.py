"""A restarted processor or worker takes its killed predecessor out of its consumer group at once.

A process killed without a goodbye (SIGKILL, OOM, a lost node) leaves its member in the
group until the broker misses its heartbeats for a session timeout. Meanwhile the
restarted process's join waits for it, or (the embedded broker) is even handed an
assignment that the dead member, elected leader, never completes; measured in W3
(bench/workloads.py), the restarted worker got its partitions 4.1 s after it started.
So each process notes its member ID in a file once it joined, and the next process on
the same file, if the one that wrote it is gone, sends the LeaveGroup that the dead one
could not (Kafka allows leaving on behalf of a member ID) before it joins.

The embedded broker (Tansu) mishandles a member that leaves while its group rebalances:
in the chaos harness, two restarts that each removed their predecessor while the other
processor was joining left the group unable to complete any join (both restarts stayed
unready for 90 s). On it, a predecessor is removed only when it is the stable group's one
member (a lone processor or worker restarted, as in W3), where no rebalance is under way;
otherwise the join waits out the session, as before. Kafka itself handles a leave in any
group state (it starts a new rebalance).

It is an optimisation only: when anything fails (no file, a read-only disk, a broker
that refuses), the join waits for the session timeout as before. It never removes a
live member: the file names the writer's process ID, and a writer still running (a
sibling on the same host) is left alone. With static membership
(`AGENTSTREAM_INSTANCE_ID`) Kafka itself hands a restarted member its place, and
nothing is done here.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from aiokafka.client import AIOKafkaClient, CoordinationType
from aiokafka.protocol.admin import DescribeGroupsRequest
from aiokafka.protocol.group import LeaveGroupRequest

log = logging.getLogger("agentstream")

UNKNOWN_MEMBER_ID = 25  # the member is gone already (its session ended, or it left)

__all__ = ["PreviousMember", "leave_for", "processor_member_file", "worker_member_file"]


def processor_member_file(data_dir: Path) -> Path:
    """Where a processor notes its member ID: its data dir, which no other processor uses."""
    return data_dir / "group-member.json"


def worker_member_file(group_id: str) -> Path:
    """Where a worker notes its member ID: workers keep no state, and the temporary folder is
    writable in a container with a read-only root (the pods mount one) and kept across a
    container's restarts."""
    return Path(tempfile.gettempdir()) / "agentstream-members" / f"{group_id}.json"


class PreviousMember:
    """The member ID of the last process that joined `group_id` with this file, and whether it is gone."""

    def __init__(self, path: Path, group_id: str) -> None:
        self.path = path
        self.group_id = group_id

    def remember(self, member_id: str) -> None:
        """Note this process's member ID (after every join: a rejoin may get a new one)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            written = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            written.write_text(json.dumps({"pid": os.getpid(), "group": self.group_id, "member_id": member_id}))
            written.replace(self.path)
        except OSError as exc:  # e.g. a read-only file system: a restart then waits out the session
            log.debug("group member not noted", extra={"path": str(self.path), "error": repr(exc)})

    def left_behind(self) -> str | None:
        """The member ID a process that no longer runs left behind, if any."""
        try:
            noted = json.loads(self.path.read_text())
            pid, group, member_id = int(noted["pid"]), str(noted["group"]), str(noted["member_id"])
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if group != self.group_id or (pid != os.getpid() and _running(pid)):
            return None
        return member_id


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:  # killed but not yet reaped by its parent: a zombie runs no consumer
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


async def leave_for(
    member_id: str, bootstrap: str, group_id: str, security: dict[str, Any], *, only_if_alone: bool = False
) -> bool:
    """Take `member_id` out of `group_id` (LeaveGroup on its behalf); True if it was a member.

    `only_if_alone`: only when it is the stable group's one member (the embedded broker: see
    the module's docstring)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, **security)
    try:
        await client.bootstrap()
        node = await client.coordinator_lookup(CoordinationType.GROUP, group_id)
        if only_if_alone:
            [(_, _, state, _, _, members, *_)] = (await client.send(node, DescribeGroupsRequest([group_id]))).groups
            if state != "Stable" or [member[0] for member in members] != [member_id]:
                log.info("previous group member left to its session timeout",
                         extra={"group": group_id, "state": state, "members": len(members)})
                return False
        response = await client.send(node, LeaveGroupRequest(group_id, member_id))
    except Exception as exc:  # the join then waits out the dead member's session, as it always did
        log.info("previous group member not removed", extra={"group": group_id, "error": repr(exc)})
        return False
    finally:
        await client.close()
    if response.error_code == 0:
        log.info("previous group member removed", extra={"group": group_id, "member_id": member_id})
        return True
    if response.error_code != UNKNOWN_MEMBER_ID:
        log.info("previous group member not removed", extra={"group": group_id, "error_code": response.error_code})
    return False
