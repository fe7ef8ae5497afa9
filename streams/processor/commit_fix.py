"""Faust's offset commit must not wait for its producer buffer to run dry.

Before each commit Faust flushes its producer, and the buffer's flush loops until the
buffer is empty (it gives up only after 0.1 s in which nothing was sent). Under
sustained load the processor refills that buffer faster than it empties, so the flush
never returns and no offset is committed for as long as the load lasts: in the bench's
`restart` row, 10,014 of 10,014 inputs of a 30 s burst were still uncommitted at the
kill, with a 0.5 s commit interval, and the next owner read every one of them again.

An input is committed only once its own writes are acknowledged (window.py,
commits.py), so the commit does not need the flush for correctness at all;
it only has to stop blocking. A flush now sends what was buffered when it was called.
"""

from __future__ import annotations

from faust.transport.producer import ProducerBuffer

_MARK = "agentstream_bounded_flush"


def install() -> None:
    """Patch `ProducerBuffer.flush` once per process."""
    original = ProducerBuffer.flush
    if getattr(original, _MARK, False):
        return

    async def flush(self: ProducerBuffer) -> None:
        await self.flush_atmost(self.size)  # what is buffered now; later messages are the next flush's

    setattr(flush, _MARK, True)
    flush.__wrapped__ = original  # type: ignore[attr-defined]  # what inspect.unwrap finds
    ProducerBuffer.flush = flush  # type: ignore[method-assign]
