"""Prometheus metrics (API.md §4 ``/metrics``), correct across ``--processes N``.

Counters, histograms and live gauges use prometheus-client's multiprocess
mode: ``seckill serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
``<data-dir>/metrics/`` before any process imports this module, every process
writes its own mmap file, and ``/metrics`` in any process sums them all (no
process is counted twice, a dead one's counts stay in the totals). Without
that variable (tests, an embedded use) the default in-process registry is used.

State that lives in Redis — stock left and backlog per sale, the current
limits — is read at scrape time, so it is the same whichever process answers.

Label sets are bounded: ``sale`` is only ever a sale that exists (known to the
order pipeline), else ``""``; never a user id.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: the outcomes of API.md §4; no other family uses the label ``outcome``
OUTCOMES = (
    "admitted",
    "sold_out",
    "limit_reached",
    "rate_limited",
    "invalid",
    "unauthenticated",
    "not_found",
    "not_active",
    "unavailable",
    "overloaded",
)

#: resolve 0.5–50 ms finely: that is where a healthy buy lands
BUY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip

BUY_REQUESTS = Counter(
    "seckill_buy_requests",
    "Buy requests by outcome and sale ('' when the sale is unknown or not reached).",
    ["sale", "outcome"],
)
BUY_DURATION = Histogram(
    "seckill_buy_duration_seconds",
    "Time to answer a buy request, in the handler.",
    buckets=BUY_BUCKETS,
)
RATE_LIMITED = Counter(
    "seckill_rate_limited",
    "Buys refused by a token bucket: 'local' (this process, no Redis call) or 'cluster'.",
    ["layer"],
)
RATE_LIMITED_LOCAL = RATE_LIMITED.labels("local")
RATE_LIMITED_CLUSTER = RATE_LIMITED.labels("cluster")
REDIS_ERRORS = Counter(
    "seckill_redis_errors",
    "Requests answered 503 unavailable because Redis failed or timed out.",
)
DELIVERIES = Counter(
    "seckill_order_deliveries",
    "Deliveries to the sink: confirmed, attempt_failed (each failed try), failed (budget spent).",
    ["result"],
)
DELIVERIES_CONFIRMED = DELIVERIES.labels("confirmed")
DELIVERIES_ATTEMPT_FAILED = DELIVERIES.labels("attempt_failed")
DELIVERIES_FAILED = DELIVERIES.labels("failed")
DELIVERY_DURATION = Histogram(
    "seckill_order_delivery_duration_seconds",
    "Time of one successful delivery to the sink.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
WORKERS = Gauge(
    "seckill_order_workers", "Order workers (all processes).", multiprocess_mode="livesum"
)
WORKERS_BUSY = Gauge(
    "seckill_order_workers_busy",
    "Order workers delivering right now (all processes).",
    multiprocess_mode="livesum",
)
QUEUE_DEPTH = Gauge(
    "seckill_order_queue_depth",
    "Orders read from the stream, waiting for a worker (all processes).",
    multiprocess_mode="livesum",
)

_buy_children: dict[tuple[str, str], Any] = {}


def count_buy(sale: str, outcome: str, started: float) -> None:
    """One answered buy: its outcome and its latency (from ``time.perf_counter()``)."""
    child = _buy_children.get((sale, outcome))
    if child is None:
        if len(_buy_children) > 10_000:  # sales come and go: do not grow forever
            _buy_children.clear()
        child = _buy_children[(sale, outcome)] = BUY_REQUESTS.labels(sale, outcome)
    child.inc()
    BUY_DURATION.observe(time.perf_counter() - started)


class RedisState(Collector):
    """Gauges read from Redis just before a scrape (see ``render``)."""

    def __init__(self, sales: dict[str, dict[str, str]], limits: dict[str, Any]) -> None:
        self.sales, self.limits = sales, limits

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stock = GaugeMetricFamily(
            "seckill_sale_stock_left", "Units left per sale.", labels=["sale"]
        )
        total = GaugeMetricFamily("seckill_sale_stock_total", "Units per sale.", labels=["sale"])
        backlog = GaugeMetricFamily(
            "seckill_sale_backlog", "Admitted orders not yet delivered, per sale.", labels=["sale"]
        )
        for sale_id, sale in sorted(self.sales.items()):
            stock.add_metric([sale_id], float(sale.get("stock_left") or 0))
            total.add_metric([sale_id], float(sale.get("stock_total") or 0))
            backlog.add_metric([sale_id], float(sale.get("backlog") or 0))
        yield from (stock, total, backlog)
        rate = GaugeMetricFamily(
            "seckill_limit_rate",
            "Token-bucket rate in requests/s; absent = unlimited.",
            labels=["bucket"],
        )
        burst = GaugeMetricFamily(
            "seckill_limit_burst", "Token-bucket size in tokens.", labels=["bucket"]
        )
        for bucket, prefix in (("sale", ""), ("user", "per_user_")):
            if self.limits.get(f"{prefix}rate") is not None:
                rate.add_metric([bucket], float(self.limits[f"{prefix}rate"]))
            burst.add_metric([bucket], float(self.limits[f"{prefix}burst"]))
        yield from (rate, burst)


def render(sales: dict[str, dict[str, str]], limits: dict[str, Any]) -> tuple[bytes, str]:
    """The text exposition of every process's metrics plus the Redis state."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        processes = CollectorRegistry()
        multiprocess.MultiProcessCollector(processes)  # type: ignore[no-untyped-call]
        base = generate_latest(processes)
    else:
        base = generate_latest(REGISTRY)
    state = CollectorRegistry()
    state.register(RedisState(sales, limits))
    return base + generate_latest(state), CONTENT_TYPE_LATEST
