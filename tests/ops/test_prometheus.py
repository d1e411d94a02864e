"""The rules and the dashboard against a real Prometheus scraping a real gateway.

Debian's ``prometheus`` (.ci/run installs it) runs on a temp dir and a free
port, scraping ``seckill serve --processes 2`` every second and evaluating
deploy/prometheus's rules every second. A crowd buys a sale out, a second
sale meets a rate limit; then Prometheus's HTTP API must give every
recording rule and every panel query of deploy/grafana/seckill.json, with
the values the crowd produced (admitted = the units sold, the outcome totals
= what the clients were answered, the stock left 0, the backlog drained).
Then Redis is stopped (SIGSTOP): SeckillRedisUnavailable goes pending, then
firing, while the gateway stays scrapeable; after SIGCONT it resolves.

The rules are the shipped ones, except that the test copy of
SeckillRedisUnavailable waits 2 s (``for: 2s``) instead of 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from seckill.process.embedded import EmbeddedRedis
from seckill.process.procs import free_port
from seckill.tools.launcher import ChildProcess, gateway_env
from tests.helpers.api import ADMIN
from tests.helpers.ci import missing
from tests.helpers.gateway import Gateway, until

pytestmark = [
    pytest.mark.ops,
    pytest.mark.multiprocess,
    pytest.mark.fault,
    pytest.mark.timeout(150),
]

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "seckill.json"
JOB = "seckill-gateway"
#: the crowd: SOLD units for CUSTOMERS distinct customers, one buy each
SOLD, CUSTOMERS = 150, 400
#: the second sale's limit: a blast of RL_SECONDS at far over RL_RATE buys/s
RL_RATE, RL_BURST, RL_SECONDS = 20, 5, 1.5


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None
    )
    if found is None:
        missing("prometheus is not installed (Debian package prometheus)")
    return found


def recording_rules() -> list[str]:
    groups = yaml.safe_load((PROM / "recording.yml").read_text())["groups"]
    return [rule["record"] for group in groups for rule in group["rules"]]


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of the dashboard."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [
        (panel["title"], target["expr"])
        for panel in panels
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def write_config(directory: Path, target: str) -> Path:
    """prometheus.yml scraping *target* as the gateway job, with the shipped
    rules (SeckillRedisUnavailable's ``for`` cut to 2 s) and 1 s intervals."""
    shutil.copy(PROM / "recording.yml", directory / "recording.yml")
    alerts = yaml.safe_load((PROM / "alerts.yml").read_text())
    shortened = 0
    for group in alerts["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "SeckillRedisUnavailable":
                rule["for"] = "2s"
                shortened += 1
    assert shortened == 1
    (directory / "alerts.yml").write_text(yaml.safe_dump(alerts, sort_keys=False))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["recording.yml", "alerts.yml"],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
    }
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Prometheus:
    """Prometheus's HTTP API (instant queries, alerts, rules)."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url

    async def get(self, path: str, **params: str) -> Any:
        async with self.session.get(f"{self.url}{path}", params=params) as resp:
            body = await resp.json()
            assert resp.status == 200 and body["status"] == "success", body
            return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        data = await self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return data["result"]  # type: ignore[no-any-return]

    async def values(self, expr: str) -> dict[str, float]:
        """{a label of the series (its sale, outcome, layer, result or ''): value}."""
        out = {}
        for series in await self.query(expr):
            labels = series["metric"]
            key = next(
                (labels[k] for k in ("sale", "outcome", "layer", "result") if k in labels), ""
            )
            out[key] = float(series["value"][1])
        return out

    async def value(self, expr: str) -> float:
        found = await self.values(expr)
        assert len(found) == 1, (expr, found)
        return next(iter(found.values()))

    async def range_has_data(self, expr: str, start: float) -> bool:
        """What Grafana asks a panel for: a range query; True when some series
        has a number in it."""
        data = await self.get(
            "/api/v1/query_range", query=expr, start=str(start), end=str(time.time()), step="1"
        )
        return any(
            v[1] not in ("NaN", "+Inf", "-Inf")
            for series in data["result"]
            for v in series["values"]
        )

    async def alert_state(self, name: str) -> str | None:
        """'pending', 'firing' or None (inactive) of alert *name*."""
        alerts = (await self.get("/api/v1/alerts"))["alerts"]
        states = {a["state"] for a in alerts if a["labels"]["alertname"] == name}
        assert len(states) <= 1, alerts
        return states.pop() if states else None


@pytest.fixture
def redis_server(tmp_path: Path, redis_binary: str | None) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own: it gets SIGSTOPped."""
    server = EmbeddedRedis(tmp_path / "redis", redis_binary)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:  # never leave it stopped
            with contextlib.suppress(OSError):
                os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


@pytest.fixture
def gateway(redis_server: EmbeddedRedis) -> Iterator[Gateway]:
    url = redis_server.url
    with Gateway("--processes", "2", "--redis-url", url, "--redis-timeout", "0.5") as gw:
        gw.wait_ready()
        yield gw


@pytest.fixture
async def prometheus(tmp_path: Path, gateway: Gateway) -> AsyncIterator[Prometheus]:
    binary = prometheus_binary()
    directory = tmp_path / "prometheus"
    directory.mkdir()
    config = write_config(directory, gateway.url.removeprefix("http://"))
    port = free_port()
    proc = ChildProcess(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        env=gateway_env(),
        name="prometheus",
        log_path=directory / "prometheus.log",
    )
    try:
        async with aiohttp.ClientSession() as session:
            api = Prometheus(session, f"http://127.0.0.1:{port}")

            async def ready() -> bool:
                assert proc.running(), proc.tail()
                try:
                    async with session.get(f"{api.url}/-/ready") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await until(ready, 30, "Prometheus ready")
            yield api
        assert proc.stop(timeout=10) == 0, proc.tail()
    finally:
        proc.kill()


async def buy(session: aiohttp.ClientSession, url: str, sale: str, user: str) -> str:
    """One buy; its outcome as the metrics name it."""
    async with session.post(
        f"{url}/api/v1/sales/{sale}/orders", headers={"X-User-Id": user}
    ) as resp:
        body = await resp.json()
        return "admitted" if resp.status == 202 else str(body["error"])


async def test_rules_panels_and_the_redis_alert_on_a_real_prometheus(
    gateway: Gateway, prometheus: Prometheus, redis_server: EmbeddedRedis
) -> None:
    started = time.time()
    api, url = prometheus, gateway.url
    await until(
        lambda: equals(api.values(f'up{{job="{JOB}"}}'), {"": 1.0}),
        30,
        "the gateway scraped (up 1)",
    )
    rules = await api.get("/api/v1/rules")
    loaded = [rule for group in rules["groups"] for rule in group["rules"]]
    assert {r["name"] for r in loaded if r["type"] == "recording"} == set(recording_rules())

    # -- the crowd: SOLD units, CUSTOMERS customers; then a rate-limited blast ---
    answers: Counter[str] = Counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as s:
        for sale, stock in (("ops", SOLD), ("rl", 10**6)):
            async with s.put(
                f"{url}/admin/v1/sales/{sale}", json={"stock": stock}, headers=ADMIN
            ) as r:
                assert r.status == 201
        # a scrape has seen the sales: their buy counters exist at 0 before the first buy
        await until(
            lambda: equals(
                api.values('seckill_buy_requests_total{sale!="",outcome="sold_out"}'),
                {"ops": 0, "rl": 0},
            ),
            15,
            "the sales' buy counters at 0 in Prometheus",
        )
        answers.update(
            await asyncio.gather(*(buy(s, url, "ops", f"c{i}") for i in range(CUSTOMERS)))
        )
        assert answers["admitted"] == SOLD, answers
        limits = {"rate": RL_RATE, "burst": RL_BURST}
        async with s.put(f"{url}/admin/v1/limits", json=limits, headers=ADMIN) as r:
            assert r.status == 200
        await until(
            lambda: gateway.output().count('limits now in force here: {"rate":20.0') == 2,
            10,
            "both processes to apply the limit",
        )
        deadline = time.monotonic() + RL_SECONDS
        n = iter(range(10**6))

        async def blaster() -> None:
            while time.monotonic() < deadline:
                answers[await buy(s, url, "rl", f"r{next(n)}")] += 1

        await asyncio.gather(*(blaster() for _ in range(16)))
        async with s.put(f"{url}/admin/v1/limits", json={"rate": None}, headers=ADMIN) as r:
            assert r.status == 200
    assert answers["rate_limited"] > 0 and answers["sold_out"] > 0, answers
    rl_admitted = answers["admitted"] - SOLD

    # -- Prometheus sees exactly what the clients were answered ---------------------
    async def totals_match() -> bool:
        got = await api.values(f'sum by (outcome) (seckill_buy_requests_total{{job="{JOB}"}})')
        return {k: round(v) for k, v in got.items() if v} == dict(answers)

    await until(totals_match, 20, f"Prometheus's outcome totals to equal {dict(answers)}")
    await until(
        lambda: equals(api.values("sale:seckill_sale_backlog:max"), {"ops": 0, "rl": 0}),
        20,
        "every order delivered (backlog 0 in Prometheus)",
    )
    await until(
        lambda: equals(
            api.values('sum by (result) (seckill_order_deliveries_total{result="confirmed"})'),
            {"confirmed": answers["admitted"]},
        ),
        20,
        "every admitted order confirmed",
    )

    # -- every recording rule has data, with the crowd's values -----------------------
    for record in recording_rules():  # a rate needs two scrapes of a new series, then an evaluation
        await until(lambda r=record: has_data(api.query(r)), 15, f"data from {record}")
    # a rule's value trails the scrape by up to one evaluation: each settles on its value
    expected: dict[str, dict[str, float]] = {
        "sale:seckill_sale_stock_sold:max": {"ops": SOLD, "rl": rl_admitted},
        "sale:seckill_sale_stock_left:max": {"ops": 0, "rl": 10**6 - rl_admitted},
        "sale:seckill_sale_stock_total:max": {"ops": SOLD, "rl": 10**6},
        "sale:seckill_sale_backlog:max": {"ops": 0, "rl": 0},
        "sale:seckill_sale_undetermined:max": {"ops": 0, "rl": 0},
        "sale:seckill_sale_reconciliation_drift:max_abs": {"ops": 0, "rl": 0},
        "job:seckill_order_workers:sum": {"": 16},  # 2 processes x 8 workers
        "job:seckill_order_queue_depth:sum": {"": 0},
        "job:seckill_redis_errors:rate1m": {"": 0},
        "job:seckill_redis_up:min": {"": 1},
    }
    for record, values in expected.items():
        await until(lambda r=record, v=values: equals(api.values(r), v), 10, f"{record} = {values}")
    # admitted = the stock sold, sale by sale and in all
    admitted_total = await api.value(
        f'sum(seckill_buy_requests_total{{job="{JOB}",outcome="admitted"}})'
    )
    assert admitted_total == answers["admitted"] == SOLD + rl_admitted
    observed: dict[str, Any] = {"admitted": admitted_total, "units sold": SOLD + rl_admitted}
    observed["peak admitted/s"] = await api.value(
        "max_over_time(job:seckill_buys_admitted:rate1m[2m])"
    )
    assert observed["peak admitted/s"] > 0
    peak = await api.values("max_over_time(job_outcome:seckill_buy_requests:rate1m[2m])")
    assert {"admitted", "sold_out", "rate_limited"} <= {k for k, v in peak.items() if v > 0}, peak
    observed["p50 s"] = p50 = await api.value("job:seckill_buy_duration_seconds:p50_1m")
    observed["p99 s"] = p99 = await api.value("job:seckill_buy_duration_seconds:p99_1m")
    assert 0 < p50 <= p99 <= 2.5
    deliveries = await api.values("max_over_time(job_result:seckill_order_deliveries:rate1m[2m])")
    assert deliveries["confirmed"] > 0 and deliveries["failed"] == deliveries["attempt_failed"] == 0
    observed["delivery p99 s"] = await api.value(
        "max_over_time(job:seckill_order_delivery_duration_seconds:p99_1m[2m])"
    )
    assert 0 < observed["delivery p99 s"] <= 5
    assert 0 <= await api.value("job:seckill_order_workers_busy:sum") <= 16
    layers = await api.values('sum by (layer) (seckill_rate_limited_total{job="seckill-gateway"})')
    assert set(layers) == {"local", "cluster"} and sum(layers.values()) == answers["rate_limited"]
    observed["429s by layer"] = layers

    # -- every dashboard panel query returns data ------------------------------------
    queries = panel_queries()
    assert len(queries) >= 15
    for title, expr in queries:
        assert await api.range_has_data(expr, started), f"panel {title!r}: {expr} has no data"
    by_title = dict(queries)
    assert (
        await api.value(by_title["Admitted buys (since the gateways started)"])
        == (answers["admitted"])
    )
    assert await api.value(by_title["Redis reachable"]) == 1

    # -- Redis stops: the alert goes pending, fires, and resolves after SIGCONT -------
    assert await api.alert_state("SeckillRedisUnavailable") is None
    # the buys made while Redis is stopped are for a sale with stock: "ops" is
    # sold out, and a process that knows it answers sold_out without Redis
    async with (
        aiohttp.ClientSession() as s,
        s.put(f"{url}/admin/v1/sales/down", json={"stock": 100}, headers=ADMIN) as r,
    ):
        assert r.status == 201
    assert redis_server.process is not None
    pid = redis_server.process.pid
    os.kill(pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        async with aiohttp.ClientSession() as s:
            failed = Counter(
                await asyncio.gather(*(buy(s, url, "down", f"late{i}") for i in range(5)))
            )
        assert set(failed) <= {"unavailable", "outcome_unknown"}, failed
        await until(
            lambda: equals(api.values(f'seckill_redis_up{{job="{JOB}"}}'), {"": 0}),
            15,
            "seckill_redis_up 0 in Prometheus",
        )
        states = []

        async def firing() -> bool:
            state = await api.alert_state("SeckillRedisUnavailable")
            if not states or states[-1] != state:
                states.append(state)
            return state == "firing"

        await until(firing, 20, "SeckillRedisUnavailable firing")
        observed["fired after s"] = round(time.monotonic() - stopped_at, 1)
        assert "pending" in states, states
        assert await api.value("job:seckill_redis_up:min") == 0
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed_at = time.monotonic()
    await until(
        lambda: equals(api.alert_state("SeckillRedisUnavailable"), None),
        20,
        "SeckillRedisUnavailable resolved after SIGCONT",
    )
    observed["resolved after s"] = round(time.monotonic() - resumed_at, 1)
    # the gateway stayed scrapeable throughout: the outage is seckill_redis_up 0, not up 0
    assert await api.value(f'min_over_time(up{{job="{JOB}"}}[2m])') == 1
    await until(
        lambda: api.value("sum(seckill_redis_errors_total)"),
        10,
        "the failed buys counted as Redis errors",
    )
    redis_errors = await api.value("sum(seckill_redis_errors_total)")
    assert redis_errors == sum(failed.values()), (redis_errors, failed)
    observed["answers"] = dict(answers)
    print(f"\nreal Prometheus observed: {json.dumps(observed, default=str)}")
    assert gateway.stop() == 0


async def has_data(answer: Awaitable[list[Any]]) -> bool:
    return bool(await answer)


async def equals(answer: Awaitable[Any], expected: Any) -> bool:
    return await answer == expected
