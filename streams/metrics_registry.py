"""The Prometheus registry of a processor or worker pod: its own metrics plus the process's.

Both pods serve one registry each on /metrics. Besides their metric bundles it carries
`process_*` (CPU, memory, open files) and `python_gc_*` and `python_info`, which the
default registry would have had; and no `*_created` series, which prometheus_client
adds beside every counter and histogram and which only double what a scrape stores.
"""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    disable_created_metrics,
)


def pod_registry() -> CollectorRegistry:
    """A registry for one pod's metrics, with the process's own collectors on it."""
    disable_created_metrics()  # type: ignore[no-untyped-call]  # process-wide in prometheus_client
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry
