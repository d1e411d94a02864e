"""Prometheus metrics (docs/API.md §4 ``/metrics``), correct across ``--processes N``.

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

import asyncio
import contextlib
import math
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
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

from seckill import schemas
from seckill.schemas import DELIVERY_RESULTS, RATE_LIMIT_LAYERS

#: the outcomes of docs/API.md §4; no other family uses the label ``outcome``
OUTCOMES = schemas.OUTCOMES

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

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
for _outcome in OUTCOMES:  # from 0, so that rate() counts the first buys too
    BUY_REQUESTS.labels("", _outcome)
#: the outcomes a buy of an existing sale can have: their series are made at 0
#: for every sale with stock left (see prepare_sales)
SALE_OUTCOMES = (
    "admitted",
    "sold_out",
    "limit_reached",
    "rate_limited",
    "not_active",
    "overloaded",
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
for _layer in RATE_LIMIT_LAYERS:  # every layer from 0: a rate() sees the first refusals
    RATE_LIMITED.labels(_layer)

REDIS_ERRORS = Counter(
    "seckill_redis_errors",
    "Buys answered 503 unavailable or outcome_unknown because Redis failed or timed out.",
)
DELIVERIES = Counter(
    "seckill_order_deliveries",
    "Deliveries to the sink: confirmed, attempt_failed (each failed try), failed (budget spent).",
    ["result"],
)
DELIVERIES_CONFIRMED = DELIVERIES.labels("confirmed")
DELIVERIES_ATTEMPT_FAILED = DELIVERIES.labels("attempt_failed")
DELIVERIES_FAILED = DELIVERIES.labels("failed")
ORDERS_UNDETERMINED = Counter(
    "seckill_orders_undetermined",
    "Orders parked as undetermined: their delivery outcome stayed unknown past"
    " --undetermined-after (stock held until an operator settles them).",
)
ORDERS_EXPIRED = Counter(
    "seckill_orders_expired",
    "Confirmed orders expired unpaid past their sale's pay window (their stock returned).",
)
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

#: buys since the last flush, per (sale, outcome), and the like. The request
#: path and the delivery workers only bump plain numbers: a multiprocess counter,
#: gauge or histogram costs mmap writes under a lock (docs/performance.md), so
#: they are updated in bulk by ``flush()``, every FLUSH_INTERVAL and before a
#: scrape; live gauges (queue depth, busy workers) are sampled then too.
FLUSH_INTERVAL = 0.25
_counts: dict[tuple[str, str], int] = {}
_rate_limited: dict[str, int] = {}
_delivered = [0]
_samplers: list[Callable[[], None]] = []


class _Observations:
    """Observations of one histogram since the last flush."""

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self.bounds = histogram._upper_bounds
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def flush(self) -> None:
        """Into the histogram's per-bucket values and sum, as observe() would."""
        buckets = self.histogram._buckets
        for i, n in enumerate(self.counts):
            if n:
                buckets[i].inc(n)
                self.counts[i] = 0
        if self.sum:
            self.histogram._sum.inc(self.sum)
            self.sum = 0.0


_buy_latency = _Observations(BUY_DURATION)
_delivery_latency = _Observations(DELIVERY_DURATION)


def count_buy(sale: str, outcome: str, started: float) -> None:
    """One answered buy: its outcome and its latency (from ``time.perf_counter()``)."""
    key = (sale, outcome)
    _counts[key] = _counts.get(key, 0) + 1
    _buy_latency.observe(time.perf_counter() - started)


def count_rate_limited(layer: str) -> None:
    """One 429, by the bucket that refused it: ``local`` or ``cluster``."""
    _rate_limited[layer] = _rate_limited.get(layer, 0) + 1


def count_delivery(started: float) -> None:
    """One order delivered to the sink, the try having started at *started*."""
    _delivered[0] += 1
    _delivery_latency.observe(time.perf_counter() - started)


def prepare_sales(sale_ids: list[str]) -> None:
    """Make the buy counters of *sale_ids* (sales with stock left) exist at 0.

    A counter series that first appears with the value N has no earlier
    sample, so ``rate()`` misses those N buys: the first second of a flash
    sale, exactly. Made at 0 once a scrape has seen the sale, its series are
    there before its first buy. Bounded: the sales of ``/metrics`` (at most
    1000) times SALE_OUTCOMES."""
    for sale_id in sale_ids:
        for outcome in SALE_OUTCOMES:
            BUY_REQUESTS.labels(sale_id, outcome)


def add_sampler(sample: Callable[[], None]) -> None:
    """Call *sample* (it sets live gauges) at every flush, until removed."""
    _samplers.append(sample)


def remove_sampler(sample: Callable[[], None]) -> None:
    with contextlib.suppress(ValueError):
        _samplers.remove(sample)


def flush() -> None:
    """Move what was counted since the last flush into the Prometheus metrics."""
    for layer, n in list(_rate_limited.items()):
        RATE_LIMITED.labels(layer).inc(n)
        del _rate_limited[layer]
    if _counts:
        counts = list(_counts.items())
        _counts.clear()
        if len(counts) > 10_000:  # label sets stay bounded by the known sales anyway
            counts = counts[:10_000]
        for (sale, outcome), n in counts:
            BUY_REQUESTS.labels(sale, outcome).inc(n)
    _buy_latency.flush()
    if _delivered[0]:
        DELIVERIES_CONFIRMED.inc(_delivered[0])
        _delivered[0] = 0
    _delivery_latency.flush()
    for sample in list(_samplers):
        sample()


async def flush_forever() -> None:
    """Run until cancelled (then flush once more)."""
    try:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            flush()
    finally:
        flush()


class RedisState(Collector):
    """Gauges read from Redis just before a scrape (see ``render``)."""

    def __init__(
        self,
        sales: dict[str, dict[str, str]],
        limits: dict[str, Any] | None,
        redis_up: bool = True,
    ) -> None:
        self.sales, self.limits, self.redis_up = sales, limits, redis_up

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "seckill_redis_up",
            "1 when this scrape's reads of the Redis state succeeded, 0 when Redis did not"
            " answer (the sale and limit gauges are then left out).",
        )
        up.add_metric([], 1.0 if self.redis_up else 0.0)
        yield up
        stock = GaugeMetricFamily(
            "seckill_sale_stock_left", "Units left per sale.", labels=["sale"]
        )
        total = GaugeMetricFamily("seckill_sale_stock_total", "Units per sale.", labels=["sale"])
        backlog = GaugeMetricFamily(
            "seckill_sale_backlog", "Admitted orders not yet delivered, per sale.", labels=["sale"]
        )
        undetermined = GaugeMetricFamily(
            "seckill_sale_undetermined",
            "Orders parked as undetermined (stock held) awaiting an operator, per sale.",
            labels=["sale"],
        )
        drift = GaugeMetricFamily(
            "seckill_sale_reconciliation_drift",
            "Units sold by the sale's counters (stock_total - stock_left) less the units its"
            " users hold (paid orders hold theirs, expired ones gave them back); 0 unless the"
            " books disagree. Only sales of at most 10000 holders; a sale with buckets: the"
            " periodic reconciler's last figure.",
            labels=["sale"],
        )
        for sale_id, sale in sorted(self.sales.items()):
            stock.add_metric([sale_id], float(sale.get("stock_left") or 0))
            total.add_metric([sale_id], float(sale.get("stock_total") or 0))
            backlog.add_metric([sale_id], float(sale.get("backlog") or 0))
            undetermined.add_metric([sale_id], float(sale.get("undetermined") or 0))
            if "drift" in sale:
                drift.add_metric([sale_id], float(sale["drift"]))
        yield from (stock, total, backlog, undetermined, drift)
        if self.limits is None:
            return
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


def _processes() -> CollectorRegistry:
    """What every process of this gateway counted (after a flush of ours)."""
    flush()
    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    from prometheus_client import multiprocess

    processes = CollectorRegistry()
    multiprocess.MultiProcessCollector(processes)  # type: ignore[no-untyped-call]
    return processes


def render(
    sales: dict[str, dict[str, str]], limits: dict[str, Any] | None, *, redis_up: bool = True
) -> tuple[bytes, str]:
    """The text exposition of every process's metrics plus the Redis state
    (*limits* None and *redis_up* False: Redis did not answer)."""
    base = generate_latest(_processes())
    state = CollectorRegistry()
    state.register(RedisState(sales, limits, redis_up))
    return base + generate_latest(state), CONTENT_TYPE_LATEST


def stats() -> schemas.Stats:
    """The counters and gauges of every process of this gateway, as JSON for
    the dashboard (``GET /admin/v1/stats``): what ``/metrics`` says about the
    processes, without the Redis state (the sale and limits routes have it).
    Counters are totals since start; the page takes rates between two reads."""
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in _processes().collect():
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            values[key] = values.get(key, 0.0) + sample.value

    def total(name: str, **labels: str) -> int:
        return round(
            sum(v for (n, ls), v in values.items() if n == name and labels.items() <= set(ls))
        )

    by_sale: dict[str, dict[str, int]] = {}
    for (name, labels), value in values.items():
        if name == "seckill_buy_requests_total" and value:
            label = dict(labels)
            per = by_sale.setdefault(label["sale"], {})
            per[label["outcome"]] = per.get(label["outcome"], 0) + round(value)
    latency: dict[float, float] = {}  # upper bound -> cumulative count
    for (name, labels), value in values.items():
        if name == "seckill_buy_duration_seconds_bucket":
            bound = float(dict(labels)["le"])  # "+Inf" too
            latency[bound] = latency.get(bound, 0.0) + value
    return schemas.Stats(
        buys=schemas.BuyCounts(
            **{o: total("seckill_buy_requests_total", outcome=o) for o in OUTCOMES}
        ),
        buys_by_sale=by_sale,
        buy_latency=schemas.Histogram(
            bounds=list(BUY_BUCKETS),
            counts=[round(latency.get(b, 0.0)) for b in (*BUY_BUCKETS, math.inf)],
            sum=sum(v for (n, _), v in values.items() if n == "seckill_buy_duration_seconds_sum"),
        ),
        deliveries=schemas.DeliveryCounts(
            **{r: total("seckill_order_deliveries_total", result=r) for r in DELIVERY_RESULTS}
        ),
        rate_limited=schemas.RateLimitCounts(
            **{x: total("seckill_rate_limited_total", layer=x) for x in RATE_LIMIT_LAYERS}
        ),
        redis_errors=total("seckill_redis_errors_total"),
        workers=schemas.Workers(
            running=total("seckill_order_workers"), busy=total("seckill_order_workers_busy")
        ),
        queue_depth=total("seckill_order_queue_depth"),
    )
