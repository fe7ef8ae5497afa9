"""What `GET /agents/{id}` answers, computed once per record version.

Reading an agent's state parsed its whole stored record (pydantic) and serialised the
public part on the processor's event loop for every request; clients that poll (W1 of
the speed issue: 32 pollers) spent the processor's time there while the record had not
changed. The answer is kept per agent next to a hash of the stored bytes it came from,
so a repeat read costs one hash of the stored record; the cache is bounded (LRU).
"""

from __future__ import annotations

import json
from collections import OrderedDict

from ..engine import AgentRecord

KEPT_VIEWS = 10_000


class PublicViews:
    """JSON of `AgentRecord.public_view()` by agent, recomputed only when the stored record changed."""

    def __init__(self, size: int = KEPT_VIEWS) -> None:
        self._size = size
        self._views: OrderedDict[bytes, tuple[int, bytes]] = OrderedDict()

    def of(self, key: bytes, stored: bytes) -> bytes:
        """The public view (JSON bytes) of the record `stored` under `key`."""
        version = hash(stored)
        cached = self._views.get(key)
        if cached is not None and cached[0] == version:
            self._views.move_to_end(key)
            return cached[1]
        view = json.dumps(AgentRecord.from_bytes(stored).public_view(), separators=(",", ":")).encode()
        self._views[key] = (version, view)
        self._views.move_to_end(key)
        while len(self._views) > self._size:
            self._views.popitem(last=False)
        return view
