"""Where each input partition resumes: right after the last input the agents' records reflect.

Faust resumes a partition at its committed offset. The chaos harness showed that offset
running ahead of what was applied (inputs committed that no processor handled, around
SIGKILLs and rebalances), and an input behind a committed offset is never read again.
The agents' records are the authority instead: each one notes the last offset of every
input partition it applied (`delivery.last_offsets`), and a record reaches the
changelog before its input counts as done, so after a (re)assignment the highest offset
the restored records hold, plus one, is where nothing can have been skipped. Reading
from there repeats at most some inputs, which de-duplication recognises.

So after every rebalance the positions are taken from the records, and an input that
arrives beyond its partition's position means inputs in between were skipped: the
partition is sought back (the inputs in between are read again) and the early input is
left unacknowledged, to come again in its turn.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

log = logging.getLogger("agentstream.processor")

GIVE_UP_AFTER_S = 30.0  # a position that cannot be read again (retention deleted it) is given up


@dataclass(frozen=True)
class Verdict:
    """Handle the input now, or leave it unacknowledged (and maybe seek its partition back)."""

    handle: bool
    seek_to: int | None = None


HANDLE = Verdict(True)


@dataclass
class _Rewind:
    to: int
    since: float
    skipped: int = 0


@dataclass
class InputPositions:
    """The next offset each input source (`topic#partition`) must deliver."""

    scan: Callable[[], Iterable[bytes]]
    clock: Callable[[], float] = time.monotonic
    _generation: object = None
    _next: dict[str, int] = field(default_factory=dict)
    _rewinds: dict[str, _Rewind] = field(default_factory=dict)

    def check(self, generation: object, source: str, offset: int) -> Verdict:
        """Whether the input at `offset` of `source` may be handled now (`generation` changes
        with every rebalance: positions are then taken from the records again)."""
        if generation != self._generation:
            self._generation = generation
            self._next = self._from_records()
            self._rewinds.clear()
        expected = self._next.get(source)
        if expected is None or offset <= expected:
            self._rewinds.pop(source, None)
            return HANDLE
        rewind = self._rewinds.get(source)
        if rewind is None or rewind.to != expected:
            rewind = self._rewinds[source] = _Rewind(expected, self.clock())
            log.warning("input partition behind its committed offset: reading it again from the records' position",
                        extra={"source": source, "from": expected, "arrived": offset})
        rewind.skipped += 1
        if self.clock() - rewind.since > GIVE_UP_AFTER_S:
            log.error("inputs could not be read again; going on without them",
                      extra={"source": source, "from": expected, "to": offset, "skipped": rewind.skipped})
            self._rewinds.pop(source, None)
            return HANDLE
        return Verdict(False, expected if rewind.skipped == 1 else None)

    def handled(self, source: str, offset: int) -> None:
        self._next[source] = max(self._next.get(source, 0), offset + 1)

    def _from_records(self) -> dict[str, int]:
        positions: dict[str, int] = {}
        for value in self.scan():
            try:
                offsets = json.loads(value).get("delivery", {}).get("last_offsets", {})
            except (ValueError, AttributeError):
                continue
            for source, offset in offsets.items():
                if isinstance(offset, int) and offset + 1 > positions.get(source, 0):
                    positions[source] = offset + 1
        return positions
