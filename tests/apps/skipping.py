"""The recorder's agents, in a processor whose consumer skips inputs after every seek.

A fetch answered for an old position after a seek moves Faust's read offset past inputs
that were never delivered; Faust then drops them as "already read" (positions.py). This
module reproduces that effect deterministically: after each seek to the committed
offsets, the read offset of every input partition with a commit is moved
`AGENTSTREAM_TEST_SKIP` inputs further, so the consumer drops that many.

With `AGENTSTREAM_TEST_COMMIT_BEHIND=K` each such partition first resumes as if its
group's commit were K inputs earlier than it is (what the commit looks like when the
input there was lost with a crash while later inputs of other agents were applied).
"""

from __future__ import annotations

import os
from typing import Any

from faust.transport.consumer import Consumer

from recorder import Recorder  # noqa: F401  # the agents this processor runs

SKIP = int(os.environ.get("AGENTSTREAM_TEST_SKIP", "0"))
BEHIND = int(os.environ.get("AGENTSTREAM_TEST_COMMIT_BEHIND", "0"))
_seek = Consumer.perform_seek


async def perform_seek(self: Any) -> None:
    await _seek(self)
    for tp, offset in list(self._read_offset.items()):
        if offset is None or tp.topic.endswith("-changelog"):
            continue
        if BEHIND and offset >= BEHIND:
            offset -= BEHIND
            self._committed_offset[tp] = offset
            await self.seek(tp, offset)
        self._read_offset[tp] = offset + SKIP


Consumer.perform_seek = perform_seek  # type: ignore[method-assign]
