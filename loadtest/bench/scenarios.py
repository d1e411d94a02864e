"""The five scenarios: what each sets up on the server, which answers it
expects, and what it checks against the gateway's own account afterwards.

wrk's non-2xx counter lumps the expected refusals (409, 429) with any 5xx,
so a gateway scenario does not trust it alone: it compares the 2xx wrk saw
with the units the sale sold, counts 5xx from ``/metrics``, and probes a few
buys once wrk is done. What does not add up is a problem (a warning and an
entry in the report), not the end of the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from loadtest.bench.client import Admin, buy, buy_outcomes, probe
from loadtest.bench.console import BenchError, warn
from loadtest.bench.measurement import Measurement
from loadtest.bench.servers import Server
from seckill.tools.launcher import ChildProcess, GatewayProcess

if TYPE_CHECKING:
    from loadtest.bench.runner import Bench, Options

SCENARIOS = ("bare", "admit", "sold_out", "rate_limited", "mixed_spike")
SPIKE_STOCK = 10_000
SPIKE_USERS = 200_000
#: the rate_limited scenario's limits (docs/API.md §5), far below any offered load.
LIMITED = {"rate": 1, "burst": 1}
UNLIMITED = {"rate": None, "burst": 1, "per_user_rate": None, "per_user_burst": 1}
#: seconds for the limits to reach every process (docs/API.md §5: within 1 s).
LIMITS_PROPAGATION = 1.2
#: /metrics is current within 1 s (docs/API.md §4).
METRICS_LAG = 1.1
#: seconds after an admit run during which the delivery's CPU per order is read
DELIVERY_WINDOW = 3.0
#: the roles of a gateway's processes that count as the gateway (not Valkey)
GATEWAY_ROLES = ("worker", "supervisor")


def _cpu_by_role(rows: list[dict[str, Any]]) -> dict[str, float]:
    spent: dict[str, float] = {}
    for row in rows:
        if row["cpu_s"] is not None:
            spent[row["role"]] = spent.get(row["role"], 0.0) + row["cpu_s"]
    return spent


def spike_cpu_per_order(m: Measurement, drained: list[dict[str, Any]]) -> dict[str, float]:
    """mixed_spike: the server's CPU from the start of the run until the
    backlog was drained, by role, per unit sold — every admission, its
    delivery, and the sale's share of the crowd's refusals."""
    sold = max(1, int(m.extra.get("server_admitted") or 0))
    start, end = _cpu_by_role(m.rss_start), _cpu_by_role(drained)
    spent = {role: end[role] - start.get(role, 0.0) for role in end}
    gw = sum(spent.get(r, 0.0) for r in GATEWAY_ROLES) * 1e6 / sold
    valkey = spent.get("redis", 0.0) * 1e6 / sold
    return {
        "sold": sold,
        "gateway_us_per_order": round(gw, 2),
        "valkey_us_per_order": round(valkey, 2),
        "server_us_per_order": round(gw + valkey, 2),
    }


def cpu_per_order(m: Measurement, delivery: dict[str, Any]) -> dict[str, float]:
    """The server's CPU per admitted order, by role, delivery included.

    During the run the gateway processes admit and deliver at once, so the
    delivery's share is taken out of the run's CPU with the cost per
    delivered order measured after it (:meth:`GatewayScenarios._delivery_cost`):
    admission = (CPU in the run − delivered in the run × delivery cost) /
    admitted, per role; then the order's total = admission + delivery, gateway
    and Valkey. With nothing delivered in the window the delivery counts 0."""
    admitted = max(1, int(m.extra.get("server_admitted") or m.wrk.ok))
    run = m.cpu_seconds()
    delivered = int(delivery.get("delivered", 0))
    spent = delivery.get("cpu_s", {})

    def per_delivered(roles: tuple[str, ...]) -> float:
        if delivered <= 0:
            return 0.0
        return float(sum(spent.get(r, 0.0) for r in roles)) / delivered

    in_run = int(m.extra.get("delivered_in_run", 0))
    gw_delivery, valkey_delivery = per_delivered(GATEWAY_ROLES), per_delivered(("redis",))
    gw = max(0.0, sum(run.get(r, 0.0) for r in GATEWAY_ROLES) - in_run * gw_delivery)
    valkey = max(0.0, run.get("redis", 0.0) - in_run * valkey_delivery)
    us = 1e6
    figures = {
        "admits_per_s": admitted / m.wrk.duration_s if m.wrk.duration_s else 0.0,
        "gateway_us_per_admit": gw * us / admitted,
        "valkey_us_per_admit": valkey * us / admitted,
        "delivery_gateway_us": gw_delivery * us,
        "delivery_valkey_us": valkey_delivery * us,
        "delivered_in_run": in_run,
    }
    figures["server_us_per_order"] = (
        figures["gateway_us_per_admit"]
        + figures["valkey_us_per_admit"]
        + figures["delivery_gateway_us"]
        + figures["delivery_valkey_us"]
    )
    return {k: round(v, 2) for k, v in figures.items()}


def bare(bench: Bench, server: Server[ChildProcess], c: int) -> None:
    """The yardstick at *c* connections: it only ever answers 202, so every
    other answer is an error."""
    m = bench.measure("bare", server, c, "/api/v1/sales/bare/orders")
    m.errors["total"] += m.wrk.non2xx
    bench.results.append(m)


class GatewayScenarios:
    """The gateway scenarios, for one running ``seckill serve``."""

    def __init__(self, bench: Bench, server: Server[GatewayProcess]) -> None:
        self.bench, self.server = bench, server
        self.base = server.url
        self.admin = Admin(server.child)
        self.has_metrics = buy_outcomes(self.base) is not None

    @property
    def opts(self) -> Options:
        return self.bench.opts

    def _problem(self, message: str) -> None:
        warn(self.bench.problems, message)

    def _checked(
        self,
        scenario: str,
        c: int,
        sale: str,
        expect: set[str],
        *,
        warmup: bool = True,
        users: int = 0,
        during: Callable[[], Iterator[dict[str, Any]]] | None = None,
    ) -> Measurement:
        """measure(), plus what the gateway itself says about the run: units
        sold during it, 5xx from /metrics, and a probe of what it answers now."""
        before_metrics = buy_outcomes(self.base) if self.has_metrics else None
        path = f"/api/v1/sales/{sale}/orders"
        marks: dict[str, int] = {}

        def before_run() -> None:
            marks["sold"] = self.admin.sold(sale)

        m = self.bench.measure(
            scenario,
            self.server,
            c,
            path,
            warmup=warmup,
            users=users,
            during=during,
            before_run=before_run,
        )
        key = m.key
        sold = self.admin.sold(sale) - marks["sold"]
        m.extra["server_admitted"] = sold
        # wrk does not count the answers in flight when it stops (up to C), nor
        # those of the warm-up still in flight when the count was read (up to C).
        if not m.wrk.ok <= sold <= m.wrk.ok + 2 * c:
            self._problem(f"{key}: wrk saw {m.wrk.ok} 2xx but the sale sold {sold} units")
        if before_metrics is not None:
            time.sleep(METRICS_LAG)  # /metrics is only current within a second
            after = buy_outcomes(self.base) or {}
            delta = {k: int(v - before_metrics.get(k, 0.0)) for k, v in after.items()}
            m.extra["outcomes_incl_warmup"] = {k: v for k, v in delta.items() if v}
            m.errors["status_5xx"] = sum(
                delta.get(o, 0) for o in ("unavailable", "overloaded", "outcome_unknown")
            )
            m.errors["total"] += m.errors["status_5xx"]
        else:
            m.errors["status_5xx"] = None  # unknown: no /metrics; see the probe
        answers = probe(self.base, sale, f"{self.bench.run_id}probe{key}-")
        m.extra["probe"] = answers
        bad = {k: v for k, v in answers.items() if k not in expect}
        if bad:
            self._problem(f"{key}: after the run the gateway answered {bad}, expected {expect}")
        self.bench.results.append(m)
        return m

    def admit(self, c: int) -> None:
        sale = f"admit-c{c}"
        self.admin.put_sale(sale, 10**9)
        m = self._checked("admit", c, sale, {"202"}, during=lambda: self._count_delivered(sale))
        # Nothing but 202 is expected: every other answer is an error.
        m.errors["non2xx"] = m.wrk.non2xx
        m.errors["total"] += m.wrk.non2xx - (m.errors["status_5xx"] or 0)
        delivery = self._delivery_cost(sale)
        view = self.admin.sale(sale)
        m.extra["backlog_at_end"] = view.get("backlog")
        m.extra["orders_at_end"] = view.get("orders")
        m.extra["delivery_window"] = delivery
        m.extra["cpu_per_order"] = cpu_per_order(m, delivery)

    def _delivered(self, sale: str) -> int:
        """Orders of *sale* no longer waiting for delivery (sold minus the backlog)."""
        view = self.admin.sale(sale)
        return int(view["stock_total"]) - int(view["stock_left"]) - int(view.get("backlog", 0))

    def _count_delivered(self, sale: str) -> Iterator[dict[str, Any]]:
        """While wrk runs: the orders delivered meanwhile."""
        start = self._delivered(sale)
        yield {}
        yield {"delivered_in_run": self._delivered(sale) - start}

    def _delivery_cost(self, sale: str) -> dict[str, Any]:
        """CPU per delivered order, by role, over :data:`DELIVERY_WINDOW` seconds
        after the run: no buys arrive, the gateway delivers the backlog."""
        window = 1.0 if self.opts.quick else DELIVERY_WINDOW
        sampler = self.server.sampler
        before, done = _cpu_by_role(sampler.snapshot()), self._delivered(sale)
        started = time.monotonic()
        time.sleep(window)  # a measurement window, not a wait for something
        after, delivered = _cpu_by_role(sampler.snapshot()), self._delivered(sale) - done
        spent = {role: after[role] - before.get(role, 0.0) for role in after}
        return {
            "seconds": round(time.monotonic() - started, 3),
            "delivered": delivered,
            "cpu_s": {k: round(v, 3) for k, v in spent.items()},
        }

    def sold_out(self, c: int) -> None:
        sale = f"soldout-c{c}"
        self.admin.put_sale(sale, 1)
        status, _ = buy(self.base, sale, f"{self.bench.run_id}seed")
        if status != 202:
            raise BenchError(f"sold_out: the one buy of {sale} answered {status}")
        m = self._checked("sold_out", c, sale, {"409 sold_out"})
        if m.wrk.ok:
            self._problem(f"{m.key}: {m.wrk.ok} 2xx answers from a sold-out sale")

    def rate_limited(self, c: int) -> None:
        sale = f"limited-c{c}"
        self.admin.put_sale(sale, 10**9)
        self.admin.limits(LIMITED)
        try:
            time.sleep(LIMITS_PROPAGATION)  # no call says when every process has them
            m = self._checked("rate_limited", c, sale, {"429 rate_limited", "202"})
        finally:
            self.admin.limits(UNLIMITED)
            time.sleep(LIMITS_PROPAGATION)
        admitted = m.extra.get("server_admitted", 0)
        # docs/API.md §5: at most rate × seconds + burst (slack: one second).
        bound = LIMITED["rate"] * (m.wrk.duration_s + 1) + LIMITED["burst"]
        m.extra["admitted_bound"] = bound
        if admitted > bound:
            self._problem(f"{m.key}: {admitted} admitted, over the bound {bound:.0f}")

    def mixed_spike(self, c: int) -> None:
        sale = f"spike-c{c}"
        self.admin.put_sale(sale, SPIKE_STOCK)
        m = self._checked(
            "mixed_spike",
            c,
            sale,
            {"409 sold_out", "202"},
            warmup=False,
            users=SPIKE_USERS,
            during=lambda: self._watch_sale(sale),
        )
        if m.extra.get("time_to_sold_out_s") is None and not self.opts.quick:
            self._problem(f"{m.key}: not sold out within {self.opts.duration}s")
        started = m.extra.pop("_started")
        drained = self._drain(sale)
        m.extra["time_to_drain_s"] = (
            None if drained is None else round(time.monotonic() - started, 3)
        )
        m.extra["orders"] = self.admin.sale(sale).get("orders")
        if drained is not None:
            m.extra["spike_cpu_per_order"] = spike_cpu_per_order(m, self.server.sampler.snapshot())

    def _watch_sale(self, sale: str) -> Iterator[dict[str, Any]]:
        """While wrk runs: when did the stock reach 0 (seconds since wrk started)?"""
        found: dict[str, Any] = {"time_to_sold_out_s": None}
        stop = threading.Event()
        started = time.monotonic()

        def poll() -> None:
            while not stop.is_set():
                if self.admin.stock_left(sale) == 0:
                    found["time_to_sold_out_s"] = round(time.monotonic() - started, 3)
                    return
                stop.wait(0.05)

        thread = threading.Thread(target=poll, name="watch-sale", daemon=True)
        thread.start()
        yield {}
        stop.set()
        thread.join(15)
        view = self.admin.sale(sale)
        yield {**found, "backlog_at_end": view.get("backlog"), "_started": started}

    def _drain(self, sale: str) -> float | None:
        """Wait until the sale's order backlog is 0 (bounded); the seconds it took."""
        started = time.monotonic()
        deadline = started + self.opts.drain_timeout
        while time.monotonic() < deadline:
            if int(self.admin.sale(sale).get("backlog", 0)) == 0:
                return round(time.monotonic() - started, 3)
            time.sleep(0.1)
        self._problem(f"{sale}: backlog not drained within {self.opts.drain_timeout:.0f}s")
        return None
