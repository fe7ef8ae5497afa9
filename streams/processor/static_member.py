"""Static group membership (`AGENTSTREAM_INSTANCE_ID`) needs a processor address that stays put.

With a group.instance.id, Kafka hands a processor that rejoins under a known instance ID
the assignment it had, without a rebalance. Faust's assignment also carries the address
(`http://host:port`) every processor routes `GET /agents/{id}` to, as it was when the
assignment was made. A processor that comes back under another address would be
reached by nobody (Faust's assignor asserts the address, and the consumer then silently
stops joining). So a changed address stops the processor with what to do instead.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faust.assignor.client_assignment import ClientMetadata

from ..exceptions import ConfigurationError

log = logging.getLogger("agentstream.processor")


def address_changed(instance_id: str, before: str, now: str) -> str:
    return (
        f"this processor rejoined its consumer group as instance {instance_id!r} (AGENTSTREAM_INSTANCE_ID), which "
        f"Kafka remembers at the address {before}, but it now serves {now}: the other processors would route "
        "requests to the old address. Keep the address stable across restarts (AGENTSTREAM_ADVERTISE_HOST as a "
        "stable DNS name, e.g. the StatefulSet pod's, and the same --http-port), or unset AGENTSTREAM_INSTANCE_ID "
        "(or wait one session timeout: Kafka then forgets the old member)"
    )


def guard_address(app: Any, instance_id: str) -> None:
    """Stop `app` with a clear error when Kafka hands it an assignment made for another address."""
    assignor = app.assignor
    original = assignor.on_assignment

    def on_assignment(assignment: Any) -> None:
        metadata = ClientMetadata.loads(assignor._decompress(assignment.user_data))
        if metadata.url != str(assignor._url):
            message = address_changed(instance_id, metadata.url, str(assignor._url))
            log.error("static membership: address changed", extra={"reason": message})
            asyncio.ensure_future(app.crash(ConfigurationError(message)))
            return
        original(assignment)

    assignor.on_assignment = on_assignment
