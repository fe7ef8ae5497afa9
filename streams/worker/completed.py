"""The commands this worker completed lately, with the result record it published for each.

A processor that restarts re-sends every step command still in flight (issue 7, item
17); a rebalance of the processor does the same. Without this cache a worker would run
each of those functions again. With it, a command seen again is answered with the
result already published: sent once more (the processor may have lost it), not run.

The cache is in memory and bounded (least recently used first out, by count and by
bytes), so across a worker restart, or for a command evicted meanwhile, the function
may run again. That keeps the guarantee steps always had, at least once: a function
must tolerate a second run, and the second result carries the same message ID as the
first (derived from the command's), so the processor applies only one.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple


class Published(NamedTuple):
    """A result record as it went to the broker."""

    key: bytes
    value: bytes


class CompletedCommands:
    """An LRU map from a command's message_id to the result record published for it."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.size_bytes = 0
        self._entries: OrderedDict[str, Published] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, command_id: str) -> Published | None:
        """The result published for `command_id`, if still remembered (it becomes the most recent)."""
        published = self._entries.get(command_id)
        if published is not None:
            self._entries.move_to_end(command_id)
        return published

    def put(self, command_id: str, key: bytes, value: bytes) -> None:
        """Remember a result once the broker acknowledged it; a record larger than the whole cache is not kept."""
        self._drop(command_id)
        size = len(key) + len(value)
        if self.max_entries <= 0 or size > self.max_bytes:
            return
        self._entries[command_id] = Published(key, value)
        self.size_bytes += size
        while len(self._entries) > self.max_entries or self.size_bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, command_id: str) -> None:
        published = self._entries.pop(command_id, None)
        if published is not None:
            self.size_bytes -= len(published.key) + len(published.value)
