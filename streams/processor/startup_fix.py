"""A processor's tables are registered when it starts: Faust need not wait a second for more.

Faust's table manager sleeps one second when it starts, so that tables an application
defines after the app started still make the first subscription, and the consumer does
not subscribe (or join its group) until that second has passed. Every table of a
processor exists before the app starts (`create_processor`), so the second only delays
every start and restart: measured in a W3 restart (bench/workloads.py), the consumer
joined its group one second after the agents had started, doing nothing in between.
`install` replaces the manager's `on_start` with the same steps minus the sleep.
"""

from __future__ import annotations

from typing import Any

from faust.tables.manager import TableManager

_MARK = "_agentstream_starts_at_once"


def install() -> None:
    """Idempotent; process-wide (every Faust app of the process is a processor)."""
    if getattr(TableManager.on_start, _MARK, False):
        return

    async def on_start(self: Any) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()

    setattr(on_start, _MARK, True)
    TableManager.on_start = on_start  # type: ignore[method-assign]
