"""How far each input partition is committed: the processor's own bookkeeping, not Faust's.

Faust commits what its stream acked, from a sorted list of acked offsets per partition,
and after a restart that commit could stay put for good (nothing was lost, but the lag
grew and every restart read it all again). One cause is reproduced by
tests/integration/test_commits.py: inputs the processor reads again itself
(`positions.read_range`, after the consumer skipped them) never pass through Faust's
stream, so they are never acked there, and Faust refuses to commit while its first
acked offset lies more than one past its committed one. Stop 18's logs also showed a
commit stuck with acks missing and no skip at all, which was never explained.

The processor knows better: its input window reports inputs done in arrival order,
each once its writes are acknowledged (window.py), and every input before it on its
partition was handled first (positions.py). So the offset to commit for a partition is
one past the last input reported done. Faust's acks are off for the input topics; the
processor commits from here every 0.5 s, and once more wherever Faust waits for its
streams (before its partitions are revoked, and before it stops), after every input
in flight is done.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger("agentstream.processor")

P = TypeVar("P")  # how a partition is named (Faust's TP in the processor)


@dataclass
class InputCommits(Generic[P]):
    """The offset each input partition may be committed to, and what was committed."""

    _next: dict[P, int] = field(default_factory=dict)  # every input before it is durable
    _committed: dict[P, int] = field(default_factory=dict)
    _held: set[P] = field(default_factory=set)  # an input's writes failed: no further commit until reassigned

    def done(self, partition: P, offset: int) -> None:
        """The input at `offset` is durable, and so is every input before it on `partition`."""
        if partition not in self._held:
            self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def lost(self, partition: P) -> None:
        """An input's writes failed: its partition is committed no further (the input is redelivered)."""
        self._held.add(partition)
        log.error("an input partition stops committing until it is assigned again", extra={"partition": str(partition)})

    def due(self, assignment: Collection[P]) -> dict[P, int]:
        """What to commit now: the owned partitions that moved on since their last commit."""
        return {p: offset for p, offset in self._next.items()
                if p in assignment and p not in self._held and offset > self._committed.get(p, -1)}

    def committed(self, offsets: Mapping[P, int]) -> None:
        self._committed.update(offsets)

    def revoked(self, partitions: Collection[P]) -> None:
        """Forget `partitions`: their next owner (maybe this processor again) starts from the group's commit."""
        for partition in partitions:
            self._next.pop(partition, None)
            self._committed.pop(partition, None)
            self._held.discard(partition)

    async def commit(self, assignment: Collection[P], send: Callable[[dict[P, int]], Awaitable[bool]]) -> None:
        """Commit what is due through `send` (which says whether the broker took it)."""
        offsets = self.due(assignment)
        if offsets and await send(offsets):
            self.committed(offsets)
