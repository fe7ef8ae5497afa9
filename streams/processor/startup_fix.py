"""A restarted processor's tables and topics exist: Faust need not wait a second for more.

Faust's table manager sleeps one second when it starts, so that tables an application
defines after the app started still make the first subscription; the consumer does not
subscribe (or join its group) until that second has passed. Every table of a processor
exists before its app starts (`create_processor`), but the second still matters on a
first start: the changelog and assignor topics Faust creates then need a moment to reach
the cluster's metadata, and a consumer that joined without them got an assignment
without the changelog and never recovered (seen on Apache Kafka in the chaos harness's
first start once the second was gone).

So the manager waits that second only when a topic it needs is not in the cluster's
metadata yet. A restart, whose topics all exist, joins at once: measured in a W3 restart
(bench/workloads.py), the consumer had joined its group one second after the agents
started, doing nothing in between.
"""

from __future__ import annotations

import logging
from typing import Any

from faust.tables.manager import TableManager

log = logging.getLogger("agentstream.processor")

FAUST_WAIT_S = 1.0
_MARK = "_agentstream_starts_at_once"


def install() -> None:
    """Idempotent; process-wide (every Faust app of the process is a processor)."""
    if getattr(TableManager.on_start, _MARK, False):
        return

    async def on_start(self: Any) -> None:
        if not await topics_exist(self):
            await self.sleep(FAUST_WAIT_S)
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()

    setattr(on_start, _MARK, True)
    TableManager.on_start = on_start  # type: ignore[method-assign]


async def topics_exist(manager: Any) -> bool:
    """Whether the cluster's metadata already has every changelog and the assignor's topic."""
    app = manager.app
    needed = {table.changelog_topic.get_topic_name() for table in manager.values()}
    if not app.conf.topic_disable_leader:
        needed.add(f"{app.conf.id}-__assignor-__leader")  # faust/assignor/leader_assignor.py
    try:
        cluster = await app.producer._ensure_producer().client.fetch_all_metadata()
    except Exception as exc:  # not known: wait as Faust does
        log.debug("topics not checked before the first join", extra={"error": repr(exc)})
        return False
    return needed <= set(cluster.topics())
