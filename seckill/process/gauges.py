"""Prometheus families of the process layer: connections and the embedded
server. Sampled into prometheus-client's multiprocess files at every metrics
flush (``seckill.metrics.add_sampler``), like the pipeline's gauges: the
connection guard itself only bumps plain integers.

Imported only by the worker, after ``seckill serve`` has pointed
``PROMETHEUS_MULTIPROC_DIR`` at the gateway's metrics directory.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge

from seckill import metrics
from seckill.process.connections import ConnectionGuard
from seckill.process.embedded import ServerState

CONNECTIONS_OPEN = Gauge(
    "seckill_connections_open",
    "Open client connections (all processes).",
    multiprocess_mode="livesum",
)
CONNECTIONS_REFUSED = Counter(
    "seckill_connections_refused",
    "Connections answered 503 overloaded at once: over --max-connections.",
)
HEAD_TIMEOUTS = Counter(
    "seckill_connections_head_timeouts",
    "Connections closed for not sending a whole request head within --head-timeout.",
)
EMBEDDED_UP = Gauge(
    "seckill_embedded_server_up",
    "1 while the embedded Redis server runs, 0 while it is down (absent with --redis-url).",
    multiprocess_mode="liveall",
)


def sample(guard: ConnectionGuard, server: ServerState | None) -> Callable[[], None]:
    """A sampler for ``metrics.add_sampler``: moves what *guard* counted since
    the last call into the families above."""
    seen = {"refused": 0, "head_timeouts": 0}

    def sampler() -> None:
        CONNECTIONS_OPEN.set(guard.open)
        if guard.refused > seen["refused"]:
            CONNECTIONS_REFUSED.inc(guard.refused - seen["refused"])
            seen["refused"] = guard.refused
        if guard.head_timeouts > seen["head_timeouts"]:
            HEAD_TIMEOUTS.inc(guard.head_timeouts - seen["head_timeouts"])
            seen["head_timeouts"] = guard.head_timeouts
        if server is not None:
            EMBEDDED_UP.set(1 if server.problem() is None else 0)

    return sampler


def watch(guard: ConnectionGuard, server: ServerState | None) -> Callable[[], None]:
    """Start sampling; the returned function stops it."""
    sampler = sample(guard, server)
    metrics.add_sampler(sampler)
    return lambda: metrics.remove_sampler(sampler)
