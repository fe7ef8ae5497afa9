"""What `GET /agents/{id}` answers, kept per agent until its stored record changes.

Reading an agent's state parsed its whole stored record (pydantic) and serialised the
public part on the processor's event loop for every request; clients that poll (W1 of
the speed issue: 32 pollers) spent the processor's time there while the record had not
changed. A stored record changes in two ways only: the store puts a record the changelog
acknowledged (`changed`), and a rebalance restores partitions from the changelog
(`reset`). So an answer is kept until one of them says otherwise, and a repeat read costs
one dictionary lookup: no RocksDB read, no hash of the record. Answers read while the
processor is not ready (a restore may still be writing) are not kept. Bounded (LRU).

An agent that is being read and keeps changing (W1's pollers) would have its new record
parsed from the stored bytes after every change; so the handler also says what it wrote
(`written`: the record it already holds, with the bytes), and once the store reports those
very bytes stored, that record is kept, with no parse, and rendered at the next read (an
agent written ten times between two reads is rendered once, not ten times). Only agents
with a kept view are noted, so the notes are bounded like the views.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from ..engine import AgentRecord

KEPT_VIEWS = 10_000


class PublicViews:
    """`AgentRecord.public_json()` by agent, read and serialised again only after its record changed."""

    def __init__(self, read: Callable[[bytes], bytes | None], size: int = KEPT_VIEWS) -> None:
        self._read = read  # the stored record (RocksDB: what the changelog has acknowledged)
        self._size = size
        # key -> the view, or the record to render it from at the next read (a record written many
        # times between two reads is rendered once)
        self._views: OrderedDict[bytes, bytes | AgentRecord] = OrderedDict()
        self._written: dict[bytes, tuple[bytes, AgentRecord]] = {}  # key -> (bytes on their way, the record)

    def of(self, key: bytes, *, keep: bool = True) -> bytes | None:
        """The public view (JSON bytes) of the agent under `key`; None when it has no record.
        `keep=False` when the store may still change without saying so (a restore in progress)."""
        view = self._views.get(key)
        if isinstance(view, AgentRecord):  # changed since the last read: rendered now, once
            view = self._views[key] = view.public_json()
        if view is not None:
            self._views.move_to_end(key)
            return view
        stored = self._read(key)
        if stored is None:
            return None
        view = AgentRecord.from_bytes(stored).public_json()
        if keep:
            self._keep(key, view)
        return view

    def written(self, key: bytes, value: bytes, record: AgentRecord) -> None:
        """The handler wrote `record` as `value` (not stored yet: its changelog write is on its way)."""
        if key in self._views:
            self._written[key] = (value, record)

    def changed(self, key: bytes, value: bytes | None = None) -> None:
        """The store holds a new record for `key` (`value`, when the store says which)."""
        self._views.pop(key, None)
        written = self._written.get(key)
        if written is not None and written[0] == value:  # the very bytes the handler wrote: no parse
            del self._written[key]
            self._keep(key, written[1])

    def reset(self) -> None:
        """Any record may change without `changed` (a rebalance: partitions are restored from the changelog)."""
        self._views.clear()
        self._written.clear()

    def _keep(self, key: bytes, view: bytes | AgentRecord) -> None:
        self._views[key] = view
        self._views.move_to_end(key)
        if len(self._views) > self._size:
            dropped, _ = self._views.popitem(last=False)
            self._written.pop(dropped, None)
