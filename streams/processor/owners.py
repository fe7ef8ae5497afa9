"""Whether this processor owns an agent's partition, cheaply enough to ask on every state read.

Faust's table routing answers it per request by serialising the key, hashing it to a
partition and looking the partition's host up in the assignor's map: a quarter of the
processor's event loop under W1's 32 pollers. An agent's partition never changes (a
processor stops when partitions are added), and the partitions this processor owns change
only with a rebalance (Faust's `rebalancing` is set from the revocation until the
restore completed). So both are kept: the partition per agent, and the set of owned
partitions per rebalance. Anything but "surely here" goes to Faust's router, which
forwards a request to the owner (or finds it is this processor after all).
"""

from __future__ import annotations

from typing import Any

KEPT_PARTITIONS = 100_000  # agents whose partition is kept (the map starts over beyond it)


class LocalOwnership:
    """`owns(key)`: True when this processor owns the key's partition of `topic` and no rebalance is
    under way; False when another one owns it, or it cannot tell (not started, rebalancing)."""

    def __init__(self, app: Any, topic: str, size: int = KEPT_PARTITIONS) -> None:
        self._app, self._topic, self._size = app, topic, size
        self._partitions: dict[bytes, int] = {}
        self._owned: tuple[int, frozenset[int]] | None = None  # (rebalance count, partitions owned)

    def owns(self, key: bytes) -> bool:
        app = self._app
        if app.rebalancing:
            return False
        count = app.rebalancing_count
        if self._owned is None or self._owned[0] != count:
            try:
                assignment = app.consumer.assignment()
            except Exception:  # not started yet, or stopping
                return False
            self._owned = (count, frozenset(tp.partition for tp in assignment if tp.topic == self._topic))
        partition = self._partitions.get(key)
        if partition is None:
            try:
                partition = int(app.producer.key_partition(self._topic, key).partition)
            except Exception:  # the producer is not started yet
                return False
            if len(self._partitions) >= self._size:
                self._partitions.clear()
            self._partitions[key] = partition
        return partition in self._owned[1]
