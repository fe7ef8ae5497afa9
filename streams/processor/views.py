"""What `GET /agents/{id}` answers, kept per agent until its stored record changes.

Reading an agent's state parsed its whole stored record (pydantic) and serialised the
public part on the processor's event loop for every request; clients that poll (W1 of
the speed issue: 32 pollers) spent the processor's time there while the record had not
changed. A stored record changes in two ways only: the store puts a record the changelog
acknowledged (`changed`), and a rebalance restores partitions from the changelog
(`reset`). So an answer is kept until one of them says otherwise, and a repeat read costs
one dictionary lookup: no RocksDB read, no hash of the record. Answers read while the
processor is not ready (a restore may still be writing) are not kept. Bounded (LRU).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable

from ..engine import AgentRecord

KEPT_VIEWS = 10_000


class PublicViews:
    """JSON of `AgentRecord.public_view()` by agent, read and serialised again only after its record changed."""

    def __init__(self, read: Callable[[bytes], bytes | None], size: int = KEPT_VIEWS) -> None:
        self._read = read  # the stored record (RocksDB: what the changelog has acknowledged)
        self._size = size
        self._views: OrderedDict[bytes, bytes] = OrderedDict()

    def of(self, key: bytes, *, keep: bool = True) -> bytes | None:
        """The public view (JSON bytes) of the agent under `key`; None when it has no record.
        `keep=False` when the store may still change without saying so (a restore in progress)."""
        view = self._views.get(key)
        if view is not None:
            self._views.move_to_end(key)
            return view
        stored = self._read(key)
        if stored is None:
            return None
        view = json.dumps(AgentRecord.from_bytes(stored).public_view(), separators=(",", ":")).encode()
        if keep:
            self._views[key] = view
            if len(self._views) > self._size:
                self._views.popitem(last=False)
        return view

    def changed(self, key: bytes) -> None:
        """The store holds a new record for `key`."""
        self._views.pop(key, None)

    def reset(self) -> None:
        """Any record may change without `changed` (a rebalance: partitions are restored from the changelog)."""
        self._views.clear()
