"""What became of a client's input: `GET /agents/{id}/inputs/{input_id}?wait=S`.

A schedule, an event or a cancel is produced to Kafka and applied later by whichever
processor owns the agent; the producer's acknowledgement says nothing about whether the
agent accepted it. A user who sends an event with a typo in its name would otherwise learn
of it only from the dead-letters topic. So the owner remembers the outcome of each client
input it handled (applied, duplicate, parked, ignored, or dead-lettered with the reason
code and reason) and answers a client that asks, holding the request until the outcome is
known, as `results.py` does for results. An input is known by its message ID; a schedule
also by the run ID it starts (clients know that one up front).

The memory is bounded and in-process: after a restart or a rebalance the new owner knows
only what it handled itself. The endpoint then falls back on the agent's record, which
remembers the client keys it applied for a day (`dedup.py`): such an input was applied.
An input rejected before the restart is reported as pending until the wait ends; its
dead letter is still on the dead-letters topic.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from agentstream.topics import CancelAgent, ScheduleAgent, SendEvent, run_id_for

from .results import Waiters

KEEP = 10_000  # outcomes remembered per processor, the oldest forgotten first


def input_ids(message: object) -> tuple[str, ...]:
    """The IDs a client may ask about `message` by; empty for inputs that are not a client's."""
    if isinstance(message, ScheduleAgent):
        return message.message_id, run_id_for(message.message_id)
    if isinstance(message, (SendEvent, CancelAgent)):
        return (message.message_id,)
    return ()


class InputOutcomes:
    """Recent outcomes of client inputs by input ID, and the requests waiting for them."""

    def __init__(self, keep: int = KEEP) -> None:
        self._keep = keep
        self._known: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.waiters = Waiters()  # `watching(input_id)`: resolves once the input has an outcome

    def settled(self, ids: tuple[str, ...], outcome: str, reason_code: str | None = None,
                reason: str | None = None) -> None:
        """The input with these IDs reached `outcome` and everything it wrote is on the broker."""
        answer = {"outcome": outcome, "reason_code": reason_code, "reason": reason}
        for input_id in ids:
            self._known[input_id] = answer
            self._known.move_to_end(input_id)
            self.waiters.wake(input_id)
        while len(self._known) > self._keep:
            self._known.popitem(last=False)

    def get(self, input_id: str) -> dict[str, Any] | None:
        return self._known.get(input_id)

    def __len__(self) -> int:
        return len(self._known)
