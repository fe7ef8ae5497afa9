"""Faust's fetch loop looks at its partitions again every 0.1 s, not every second.

Faust's fetcher asks the consumer for records of the partitions active at that moment
and waits up to one second for some to arrive. Partitions resumed meanwhile (the input
partitions, once a restart's recovery is done) may wait out the rest of that second:
measured in W3 on Apache Kafka (bench/workloads.py), 3 restarts in 78 had their first
input begin 1.0 s after the processor was ready (one of them logged right after a fetch
that had waited 1,002 ms and returned nothing); the others began within 0.1 s.

So the fetcher waits at most `FETCH_WAIT_S` per round. Records that arrive end a wait at
once, as before; an idle processor goes round ten times a second instead of once.
"""

from __future__ import annotations

from typing import Any

from faust.transport.consumer import Consumer

FETCH_WAIT_S = 0.1
_MARK = "_agentstream_fetch_wait_s"


def install() -> None:
    """Idempotent; process-wide (every Faust app of the process is a processor)."""
    original = Consumer.getmany
    if getattr(original, _MARK, None) == FETCH_WAIT_S:
        return

    def getmany(self: Any, timeout: float) -> Any:
        return original(self, timeout=min(timeout, FETCH_WAIT_S))

    setattr(getmany, _MARK, FETCH_WAIT_S)
    Consumer.getmany = getmany  # type: ignore[method-assign]
