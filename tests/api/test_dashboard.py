"""The operators' dashboard (docs/API.md §5 ``GET /dashboard``) and the sale list it reads.

- ``GET /admin/v1/sales``: every sale's admin view, sorted by id, at most 1000;
- ``GET /dashboard`` and its assets: public, self-contained (no CDN), strict CSP;
  the script is ES modules, one static graph from ``main.js``, no build step;
- the page itself, in a real browser: Debian's ``chromium`` driven headless by
  Playwright (skipped without them, failed under CI) — its pure modules on known
  inputs, the page against a stubbed admin API, and against a running gateway.
  Its screenshots land in ``var/dashboard/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from seckill import schemas
from seckill.http.routes import dashboard as dashboard_route
from seckill.redis import keys
from tests.helpers.api import ADMIN, ADMIN_TOKEN, create_sale
from tests.helpers.ci import missing as lacking
from tests.helpers.gateway import Gateway

ROOT = Path(__file__).resolve().parents[2]
PAGE_DIR = ROOT / "seckill" / "http" / "dashboard"
SHOTS = ROOT / "var" / "dashboard"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


# --- GET /admin/v1/sales --------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": ADMIN_TOKEN}],
    ids=["missing", "wrong", "not-bearer"],
)
async def test_list_sales_needs_the_admin_token(
    client: TestClient, headers: dict[str, str]
) -> None:
    await create_sale(client, "s1")
    resp = await client.get("/admin/v1/sales", headers=headers)
    assert resp.status == 401
    body = await resp.json()
    assert body["error"] == "unauthenticated"
    assert "s1" not in await resp.text()


async def test_list_sales_with_no_sales_is_empty(client: TestClient) -> None:
    resp = await client.get("/admin/v1/sales", headers=ADMIN)
    assert resp.status == 200
    assert await resp.json() == {"sales": [], "truncated": False}


async def test_list_sales_gives_each_admin_view_sorted_by_id(client: TestClient) -> None:
    for sale_id in ("zeta", "Alpha", "beta.2", "beta"):
        await create_sale(client, sale_id, stock=5, per_user_limit=2)
    buy = await client.post("/api/v1/sales/beta/orders", headers={"X-User-Id": "u1"})
    assert buy.status == 202

    resp = await client.get("/admin/v1/sales", headers=ADMIN)
    assert resp.status == 200
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["truncated"] is False
    ids = [view["sale_id"] for view in body["sales"]]
    assert ids == ["Alpha", "beta", "beta.2", "zeta"]
    for view in body["sales"]:
        one = await client.get(f"/admin/v1/sales/{view['sale_id']}", headers=ADMIN)
        assert view == await one.json()
    beta = body["sales"][1]
    assert beta["stock_left"] == 4
    assert sum(beta["orders"].values()) == 1


async def test_list_sales_skips_an_index_entry_without_a_sale(
    client: TestClient, redis: Redis
) -> None:
    await create_sale(client, "real")
    await redis.sadd(keys.SALES_INDEX, "ghost")
    body = await (await client.get("/admin/v1/sales", headers=ADMIN)).json()
    assert [v["sale_id"] for v in body["sales"]] == ["real"]


async def test_list_sales_shows_at_most_1000_and_says_so(client: TestClient, redis: Redis) -> None:
    assert schemas.MAX_LISTED_SALES == 1000
    ids = [f"s{n:04d}" for n in range(1001)]
    async with redis.pipeline(transaction=False) as pipe:
        for sale_id in ids:
            pipe.hset(
                keys.sale(sale_id),
                mapping={
                    "name": sale_id,
                    "stock_total": 1,
                    "stock_left": 1,
                    "starts_at": 0,
                    "ends_at": "",
                    "per_user_limit": 1,
                },
            )
        pipe.sadd(keys.SALES_INDEX, *ids)
        await pipe.execute()
    body = await (await client.get("/admin/v1/sales", headers=ADMIN)).json()
    assert body["truncated"] is True
    assert [v["sale_id"] for v in body["sales"]] == ids[:1000]  # the first by id


# --- the page and its assets ----------------------------------------------------------------


def page_files() -> dict[str, str]:
    return {
        p.name: p.read_text()
        for p in PAGE_DIR.iterdir()
        if p.suffix in {".html", ".js", ".css", ".svg"}
    }


#: the page's ES modules: main.js and what it imports, flat next to index.html
MODULES = sorted(name for name in page_files() if name.endswith(".js"))
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
#: a static ``import … from "x"`` / ``export … from "x"`` / ``import "x"``: its specifier
IMPORT = re.compile(
    r"^\s*(?:import|export)\s+(?:[\w$*{},\s]+?\s+from\s+)?[\"']([^\"']+)[\"']", re.M
)


def code_only(js: str) -> str:
    return re.sub(r"//[^\n]*|/\*.*?\*/", "", js, flags=re.S)


async def test_dashboard_page_is_public_html_with_a_strict_policy(client: TestClient) -> None:
    resp = await client.get("/dashboard")  # no token: the page holds no data
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert resp.charset == "utf-8"
    html = await resp.text()
    assert html == (PAGE_DIR / "index.html").read_text()
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert resp.headers["Referrer-Policy"] == "no-referrer"  # ?token= never leaks
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert (await client.head("/dashboard")).status == 200


@pytest.mark.parametrize("name", sorted(set(page_files()) - {"index.html"}))
async def test_dashboard_assets_are_served_from_the_package(client: TestClient, name: str) -> None:
    """Every module and the stylesheet, at /dashboard/<name>, with the page's headers
    (a module script needs a JavaScript type: nosniff is strict about it)."""
    resp = await client.get(f"/dashboard/{name}")
    assert resp.status == 200
    assert resp.content_type == CONTENT_TYPES[Path(name).suffix]
    assert await resp.text() == (PAGE_DIR / name).read_text()
    for header, value in dashboard_route.SECURITY_HEADERS.items():
        assert resp.headers[header] == value, header


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/nosuch.js",
        "/dashboard/index.html",
        "/dashboard/__init__.py",
        "/dashboard/..%2F..%2Fpyproject.toml",
        "/dashboard/%2e%2e/app.py",
        "/dashboard/",
        "/dashboard/dashboard.js",  # the one script before the modules
    ],
)
async def test_dashboard_serves_nothing_else(client: TestClient, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"


async def test_dashboard_is_read_only(client: TestClient) -> None:
    resp = await client.post("/dashboard")
    assert resp.status == 405
    assert (await resp.json())["error"] == "method_not_allowed"


def test_dashboard_is_self_contained_and_puts_data_in_as_text() -> None:
    files = page_files()
    assert {"index.html", "main.js", "dashboard.css"} <= set(files)
    for name, text in files.items():
        # no CDN, no external fetch: the only absolute URL is the SVG namespace
        urls = set(re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[a-z]{2,}[^\s\"')]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)
    html = files["index.html"]
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs, "the page loads its script and stylesheet"
    for ref in refs:
        if ref.startswith("data:"):
            continue
        assert not ref.startswith("/"), f"{ref}: relative, so a path prefix works"
        assert ref.startswith("dashboard/") and ref.removeprefix("dashboard/") in files, ref
    assert "<script>" not in html, "no inline script (the CSP would block it)"
    assert not re.search(r"\son[a-z]+\s*=", html), "no inline event handlers"
    assert len(MODULES) > 1
    for name in MODULES:
        js = code_only(files[name])
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in js, f"{name} uses {sink}"
        assert "Function(" not in js, f"{name} makes code from a string"


def test_dashboard_modules_are_one_graph_from_main_js() -> None:
    """index.html loads main.js as a module; every other module is imported, by a
    relative ``./name.js`` (served as /dashboard/name.js), and nothing is missing."""
    files = page_files()
    scripts = re.findall(r"<script\b([^>]*)>", files["index.html"])
    assert scripts == [' type="module" src="dashboard/main.js"']
    imports: dict[str, set[str]] = {}
    for name in MODULES:
        js = code_only(files[name])
        assert not re.search(r"\bimport\s*\(", js), f"{name}: static imports only"
        specifiers = IMPORT.findall(js)
        for spec in specifiers:
            assert re.fullmatch(r"\./[A-Za-z0-9_-]+\.js", spec), f"{name} imports {spec!r}"
            assert spec[2:] in files, f"{name} imports {spec}, which is not in the package"
        imports[name] = {spec[2:] for spec in specifiers}
    reachable: set[str] = set()
    todo = ["main.js"]
    while todo:
        name = todo.pop()
        if name not in reachable:
            reachable.add(name)
            todo.extend(imports[name])
    assert reachable == set(MODULES), f"imported by nothing: {set(MODULES) - reachable}"


SETUP = "import setuptools; setuptools.setup()"


def test_the_wheel_ships_the_dashboard(tmp_path: Path) -> None:
    """The page is package data: build the package from the files the wheel is
    made of and find every file of it (each module) next to the route that serves it."""
    src = tmp_path / "src"
    for part in ("pyproject.toml", "README.md"):
        (src / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / part, src / part)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "seckill", src / "seckill", ignore=ignore)
    shutil.copytree(ROOT / "lua", src / "lua", ignore=ignore)
    out = tmp_path / "lib"
    result = subprocess.run(
        [sys.executable, "-c", SETUP, "-q", "build_py", "--build-lib", str(out)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    shipped = {p.name for p in (out / "seckill" / "http" / "dashboard").iterdir()}
    assert set(page_files()) <= shipped  # every module among them
    assert (out / "seckill" / "http" / "routes" / "dashboard.py").is_file()


# --- in a real browser ----------------------------------------------------------------------


def browser_or_skip() -> None:
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (Debian package chromium; .ci/run installs it)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("playwright (the dev extra)")
    if missing:
        lacking("the browser test needs " + " and ".join(missing))


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """Debian's chromium, headless, through Playwright; closed however the test ends."""
    browser_or_skip()
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=15_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


def watch(page: Any, errors: list[str]) -> None:
    """Collect uncaught exceptions, the render errors the page caught and logged, and
    the browser's complaints about a module or the CSP."""
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if any(
                s in msg.text for s in ("seckill dashboard", "Content Security Policy", "module")
            )
            else None
        ),
    )


@pytest.fixture
async def page_server() -> AsyncIterator[str]:
    """The dashboard's route alone, on a free port (no Redis, no gateway): its base URL."""
    app = web.Application()
    app.add_routes(dashboard_route.routes)
    async with TestServer(app) as server:
        yield str(server.make_url("")).rstrip("/")


#: stats.js and format.js, imported by the page's own browser, on known inputs:
#: 100 buys, 20 within 1 ms, 40 in (1, 2] ms, 40 in (2, 4] ms → p50 = 1.75 ms
#: (linear within the bucket, like PromQL's histogram_quantile), p90 3.5, p99 3.95.
ARITHMETIC = """async () => {
  const mod = (name) => import(new URL("dashboard/" + name, location.href).href);
  const s = await mod("stats.js");
  const f = await mod("format.js");
  const stats = (n) => ({
    buys: { admitted: 10 * n, sold_out: 80 * n, not_found: 10 * n },
    buys_by_sale: { s1: { admitted: 10 * n, sold_out: 80 * n }, "": { not_found: 10 * n } },
    buy_latency: {
      bounds: [0.001, 0.002, 0.004], counts: [20 * n, 60 * n, 100 * n, 100 * n], sum: 0,
    },
    deliveries: { confirmed: 9 * n, attempt_failed: 1, failed: 0 },
    rate_limited: { local: 1, cluster: 2 },
    redis_errors: 0,
    workers: { running: 4, busy: 1 },
    queue_depth: 7,
  });
  const one = s.snapshot(stats(1));
  const three = s.snapshot(stats(3));
  const hist = (counts) => [0.001, 0.002, 0.004, Infinity].map((le, k) => [le, counts[k]]);
  const error = (answer) => {
    try { s.snapshot(answer); return null; } catch (e) { return e.message; }
  };
  return {
    buckets: one.buckets,
    byOutcome: Object.fromEntries(one.byOutcome),
    bySale: Object.fromEntries([...one.bySale].map(([k, v]) => [k, Object.fromEntries(v)])),
    scalars: [one.confirmed, one.attemptFailed, one.local, one.cluster,
              one.workers, one.busy, one.queue],
    quantiles: [0.2, 0.5, 0.9, 0.99].map((q) => s.quantile(q, one.buckets)),
    pastLastBound: [s.quantile(0.5, hist([0, 0, 0, 5])), s.quantile(0.99, hist([99, 99, 99, 100])),
                    s.quantile(0.995, hist([99, 99, 99, 100]))],
    empty: s.quantile(0.5, hist([0, 0, 0, 0])),
    delta: s.histogramDelta(three.buckets, one.buckets),
    between: s.latencyBetween(three.buckets, one.buckets),
    reset: s.histogramDelta(one.buckets, three.buckets),
    maxBound: s.maxBound(one.buckets),
    counters: [s.delta(5, 3), s.delta(2, 10), s.delta(null, 1), s.rate(30, 10, 2), s.rate(1, 0, 0),
               s.sumMap(one.byOutcome), s.sumMap(one.byOutcome, s.REJECTIONS)],
    unreadable: [error({}), error(null),
                 error({ ...stats(1), buy_latency: { bounds: [1], counts: [1] } })],
    ms: [f.fmtMs(0.00175), f.fmtMs(0.0123), f.fmtMs(0.25), f.fmtMs(Infinity, 2.5), f.fmtMs(null)],
    rates: [0, 0.5, 2.5, 1234.4, 250000, null].map(f.fmtRate),
    other: [f.fmtInt(1234567), f.fmtLimit(null, 5), f.fmtLimit(50, 10)],
  };
}"""


async def test_dashboard_arithmetic_in_a_browser(page_server: str) -> None:
    """The pure modules (stats, format), imported by chromium from the route that
    serves them, on inputs whose answers are known."""
    async with chromium() as browser:
        page = await browser.new_page()
        errors: list[str] = []
        watch(page, errors)
        await page.goto(f"{page_server}/dashboard")  # no token: it only asks for one
        r = await page.evaluate(ARITHMETIC)
        inf = math.inf
        assert r["buckets"] == [[0.001, 20], [0.002, 60], [0.004, 100], [inf, 100]]
        assert r["byOutcome"]["admitted"] == 10 and r["byOutcome"]["sold_out"] == 80
        assert r["byOutcome"]["overloaded"] == 0  # every outcome, even one not in the answer
        assert r["bySale"] == {"s1": {"admitted": 10, "sold_out": 80}, "": {"not_found": 10}}
        assert r["scalars"] == [9, 1, 1, 2, 4, 1, 7]
        assert r["quantiles"] == pytest.approx([0.001, 0.00175, 0.0035, 0.00395])
        assert r["pastLastBound"] == [inf, pytest.approx(0.001), inf]
        assert r["empty"] is None
        # between the reads after 1 and 3 polls: 200 more buys, the same shape
        assert r["delta"] == [[0.001, 40], [0.002, 120], [0.004, 200], [inf, 200]]  # cumulative
        assert r["between"] == {
            "count": 200,
            "p50": pytest.approx(0.00175),
            "p99": pytest.approx(0.00395),
        }
        assert r["reset"] == r["buckets"]  # counters went back: a restart, the newer whole
        assert r["maxBound"] == 0.004
        assert r["counters"] == [2, 2, None, 10, None, 100, 90]
        assert [bool(e) for e in r["unreadable"]] == [True, True, True]
        assert "buy_latency" in r["unreadable"][2]
        assert r["ms"] == ["1.75", "12.3", "250", "> 2,500", "—"]
        assert r["rates"] == ["0", "0.50", "2.5", "1,234", "250k", "—"]
        assert r["other"] == ["1,234,567", "unlimited, burst 5", "50/s, burst 10"]
        await expect_login(page)
        assert errors == []


async def expect_login(page: Any) -> None:
    from playwright.async_api import expect

    await expect(page.locator("#login")).to_be_visible()
    await expect(page.locator("#conn")).to_have_text("no token")


STUB_TOKEN = "stub-token-0123456789"


class StubAdminApi:
    """The three admin routes the page polls, answered by Playwright in the browser:
    each stats read is one more poll of 100 buys (10 admitted, 80 sold out on s1,
    10 unattributed not_found) whose latency is the known histogram above."""

    def __init__(self) -> None:
        self.polls = 0
        self.stats_fail = False
        self.stock_left = 100
        self.limits: dict[str, Any] = {
            "rate": 100.0,
            "burst": 20,
            "per_user_rate": None,
            "per_user_burst": 1,
        }
        self.puts: list[Any] = []
        self.paths: list[str] = []

    def stats(self) -> dict[str, Any]:
        n = self.polls
        return {
            "buys": {"admitted": 10 * n, "sold_out": 80 * n, "not_found": 10 * n},
            "buys_by_sale": {
                "s1": {"admitted": 10 * n, "sold_out": 80 * n},
                "": {"not_found": 10 * n},
            },
            "buy_latency": {
                "bounds": [0.001, 0.002, 0.004],
                "counts": [20 * n, 60 * n, 100 * n, 100 * n],
                "sum": 0.25 * n,
            },
            "deliveries": {"confirmed": 10 * n, "attempt_failed": 0, "failed": 0},
            "rate_limited": {"local": 0, "cluster": 0},
            "redis_errors": 0,
            "workers": {"running": 4, "busy": 1},
            "queue_depth": 0,
        }

    def sales(self) -> dict[str, Any]:
        confirmed = 100 - self.stock_left
        return {
            "sales": [
                {
                    "sale_id": "s1",
                    "name": "Stub sale",
                    "status": "active",
                    "stock_total": 100,
                    "stock_left": self.stock_left,
                    "starts_at": "2024-01-01T00:00:00Z",
                    "ends_at": None,
                    "per_user_limit": 1,
                    "orders": {
                        "queued": 0,
                        "confirmed": confirmed,
                        "failed": 0,
                        "cancelled": 0,
                        "undetermined": 0,
                        "paid": 7,
                        "expired": 3,
                    },
                    "backlog": 0,
                    "pay_window_s": 6,
                }
            ],
            "truncated": False,
        }

    async def handle(self, route: Any) -> None:
        request = route.request
        path = urlsplit(request.url).path
        self.paths.append(path)
        if request.headers.get("authorization") != f"Bearer {STUB_TOKEN}":
            await route.fulfill(status=401, json={"error": "unauthenticated", "message": "no"})
        elif path == "/admin/v1/stats" and self.stats_fail:
            await route.fulfill(status=500, json={"error": "internal", "message": "boom"})
        elif path == "/admin/v1/stats":
            self.polls += 1
            await route.fulfill(json=self.stats())
        elif path == "/admin/v1/sales":
            await route.fulfill(json=self.sales())
        elif path == "/admin/v1/limits" and request.method == "PUT":
            body = request.post_data_json
            self.puts.append(body)
            self.limits.update(body)
            await route.fulfill(json=self.limits)
        elif path == "/admin/v1/limits":
            await route.fulfill(json=self.limits)
        else:
            await route.fulfill(status=404, json={"error": "not_found", "message": path})


async def test_dashboard_renders_the_stats_it_reads(page_server: str) -> None:
    """The page against a stubbed admin API: the latency card shows the known p50 ·
    p99, refusals land under their sale; when only the stats call fails, the sales
    stay live and the page says what is missing; the form PUTs only what was edited."""
    from playwright.async_api import expect

    api = StubAdminApi()
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1366, "height": 768})
        errors: list[str] = []
        watch(page, errors)
        await page.route("**/admin/v1/**", api.handle)
        await page.goto(f"{page_server}/dashboard?token={STUB_TOKEN}")
        await expect(page.locator("#conn")).to_have_text("live")
        latency = page.locator('[data-card="latency"]')
        # every poll adds the same 100 buys: p50 · p99 of the last second and of ~10 s
        await expect(latency.locator('[data-field="value"]')).to_have_text("1.75 · 3.95 ms")
        await expect(latency.locator('[data-field="sub"]')).to_have_text(
            re.compile(r"^100 buys · \d+ s: 1\.75 · 3\.95 ms$")
        )
        row = page.locator('tr[data-sale="s1"]')
        await expect(row.locator('.chip[data-outcome="sold_out"]')).to_have_text(
            re.compile(r"^sold out [\d.,]+/s$")
        )
        # the pay window's outcomes (issue 15)
        await expect(row.locator('[data-field="paid_expired"]')).to_have_text(
            "7 paid · 3 expired (pay within 6 s)"
        )
        await expect(row.locator('[data-field="rejected_total"]')).to_have_text(
            re.compile(r"^[\d,]+ rejected in all$")
        )
        await expect(page.locator("#outcomes-note")).to_contain_text("not attributed to a sale")
        await expect(page.locator('[data-card="workers"] [data-field="value"]')).to_have_text(
            "1 / 4"
        )
        for card in ("requests", "admitted", "rejected", "delivered"):
            await expect(page.locator(f'[data-card="{card}"] [data-field="value"]')).to_have_text(
                re.compile(r"^[1-9][\d.,]*$")
            )
        await expect(page.locator('[data-card="rejected"] [data-field="sub"]')).to_have_text(
            "mostly sold_out (89%)"
        )
        await page.screenshot(path=str(SHOTS / "stubbed.png"))

        # the stats call fails, the sales answer: those stay live, the rest says why
        api.stats_fail = True
        api.stock_left = 42
        banner = page.locator("#banner")
        await expect(banner).to_contain_text("Gateway stats unavailable, retrying…")
        await expect(banner).to_contain_text("GET /admin/v1/stats: 500 internal: boom")
        await expect(row.locator('[data-field="stock_left"]')).to_have_text("42")
        await expect(page.locator("#conn")).to_have_text("no stats")
        await expect(latency.locator('[data-field="value"]')).to_have_text("—")
        await expect(latency.locator('[data-field="sub"]')).to_have_text("")
        await expect(row.locator('[data-field="rejected_total"]')).to_have_text("stats unavailable")
        await expect(page.locator("#outcomes-note")).to_contain_text("did not answer")
        await page.screenshot(path=str(SHOTS / "no-stats.png"))
        api.stats_fail = False
        await expect(banner).to_be_hidden()
        await expect(page.locator("#conn")).to_have_text("live")
        await expect(latency.locator('[data-field="value"]')).to_have_text("1.75 · 3.95 ms")

        # only the edited fields are sent; an empty rate means unlimited
        await page.fill('#limits input[name="rate"]', "")
        await page.fill('#limits input[name="per_user_burst"]', "3")
        await page.click('#limits button[type="submit"]')
        await expect(page.locator("#limits-msg")).to_contain_text("Applied")
        assert api.puts == [{"rate": None, "per_user_burst": 3}]
        await expect(page.locator("#limits-current")).to_have_text(
            "sale unlimited, burst 20; per user unlimited, burst 3"
        )
        assert "/metrics" not in api.paths
        assert errors == []


async def buy_burst(url: str, sale: str, buys: int, concurrency: int = 50) -> list[int]:
    """*buys* buys, each by a new user, *concurrency* at a time; their statuses."""
    statuses: list[int] = []
    users = iter(range(buys))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def worker() -> None:
            for n in users:
                async with http.post(
                    f"{url}/api/v1/sales/{sale}/orders", headers={"X-User-Id": f"burst{n}"}
                ) as resp:
                    await resp.read()
                    statuses.append(resp.status)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


async def admin_call(method: str, url: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, json=body, headers=ADMIN) as resp,
    ):
        assert resp.status in (200, 201), await resp.text()
        return await resp.json()


#: markup in a sale name must arrive as text
NASTY_NAME = 'Flash <img src=x onerror="window.__pwned=1"> & <b>friends</b>'

#: every text the page shows for the numbers a burst moves, as they change: a
#: rate lasts one poll, so it is recorded rather than looked for afterwards
RECORD = """() => {
  const seen = (window.__seen = { latency: [], requests: [], admitted: [], soldOut: [] });
  const text = (sel) => { const e = document.querySelector(sel); return e ? e.textContent : null; };
  const note = (list, t) => { if (t != null && list[list.length - 1] !== t) list.push(t); };
  new MutationObserver(() => {
    note(seen.latency, text('[data-card="latency"] [data-field="value"]'));
    note(seen.requests, text('[data-card="requests"] [data-field="value"]'));
    note(seen.admitted, text('tr[data-sale="flash"] [data-field="admitted_rate"]'));
    note(seen.soldOut, text('tr[data-sale="flash"] .chip[data-outcome="sold_out"]'));
  }).observe(document.querySelector("#main"),
             { subtree: true, childList: true, characterData: true });
}"""
MOVED = """() => {
  const s = window.__seen;
  const moved = (list) => list.some((t) => parseFloat(t.replace(/,/g, "")) > 0);
  return s.latency.some((t) => t.endsWith(" ms")) && moved(s.requests) && moved(s.admitted);
}"""
NUMBER = r"\d[\d,]*(?:\.\d+)?"


@pytest.mark.multiprocess
async def test_dashboard_in_a_browser() -> None:
    """Load the page against a running gateway, see a burst move its numbers,
    change a limit from the form; a wrong token and a dead gateway say so."""
    browser_or_skip()  # before starting anything
    from playwright.async_api import expect

    with Gateway("--processes", "2") as gw:
        await asyncio.to_thread(gw.wait_ready)
        await admin_call(
            "PUT", f"{gw.url}/admin/v1/sales/flash", {"stock": 150, "name": NASTY_NAME}
        )
        await admin_call(
            "PUT",
            f"{gw.url}/admin/v1/sales/later",
            {"stock": 40, "starts_at": "2099-01-01T00:00:00Z"},
        )
        async with chromium() as browser:
            page = await browser.new_page(viewport={"width": 1366, "height": 768})
            errors: list[str] = []
            watch(page, errors)
            paths: list[str] = []
            page.on("request", lambda request: paths.append(urlsplit(request.url).path))

            await page.goto(f"{gw.url}/dashboard?token={ADMIN_TOKEN}")
            row = page.locator('tr[data-sale="flash"]')
            await expect(row).to_be_visible()
            await expect(page.locator("#conn")).to_have_text("live")
            assert "token" not in page.url, "the token is taken out of the address bar"
            stored = await page.evaluate("sessionStorage.getItem('seckill.adminToken')")
            assert stored == ADMIN_TOKEN
            await expect(row.locator(".name")).to_have_text(NASTY_NAME)
            assert await page.locator("#sales img, #sales b").count() == 0
            await expect(row.locator('[data-field="stock_left"]')).to_have_text("150")
            await expect(page.locator('tr[data-sale="later"] .status')).to_have_text("upcoming")

            # a burst: 150 admitted, the rest sold out; the page follows
            await page.evaluate(RECORD)
            statuses = await buy_burst(gw.url, "flash", 400)
            assert statuses.count(202) == 150
            assert statuses.count(409) == 250
            await page.wait_for_function(MOVED, polling=100, timeout=15_000)
            seen = await page.evaluate("window.__seen")
            for text in seen["latency"]:
                if text == "—":
                    continue
                m = re.fullmatch(rf"({NUMBER}) · (> )?({NUMBER}) ms", text)
                assert m, text
                if not m[2]:
                    assert float(m[1].replace(",", "")) <= float(m[3].replace(",", "")), text
            for text in seen["admitted"]:
                assert text == "—" or re.fullmatch(rf"{NUMBER}k?/s", text), text
            await expect(row.locator('[data-field="stock_left"]')).to_have_text("0")
            await expect(row.locator(".status")).to_have_text("sold out")
            await expect(row.locator('[data-field="admitted_total"]')).to_have_text("150 in all")
            outcomes = page.locator("#outcomes")
            await expect(
                outcomes.locator('tr[data-outcome="admitted"] [data-field="total"]')
            ).to_have_text("150")
            await expect(
                outcomes.locator('tr[data-outcome="sold_out"] [data-field="total"]')
            ).to_have_text("250")
            # refusals under the sale: those a process answered once it knew the sale
            # (it looks for new ones every second), the rest unattributed; as /stats says
            stats = await admin_call("GET", f"{gw.url}/admin/v1/stats")
            assert stats["buys"]["sold_out"] == 250
            by_sale = stats["buys_by_sale"]
            refused = by_sale.get("flash", {}).get("sold_out", 0)
            await expect(row.locator('[data-field="rejected_total"]')).to_have_text(
                f"{refused} rejected in all" if "flash" in by_sale else "none counted yet"
            )
            unattributed = sum(by_sale.get("", {}).values())
            await expect(page.locator("#outcomes-note")).to_have_text(
                f"Of these, {unattributed:,} are not attributed to a sale"
                " (not in the per-sale column)."
                if unattributed
                else ""
            )
            seen = await page.evaluate("window.__seen")
            assert bool(seen["soldOut"]) == (refused > 0), seen["soldOut"]
            for text in seen["soldOut"]:
                assert re.fullmatch(rf"sold out {NUMBER}k?/s", text), text
            await expect(row.locator('[data-field="backlog"]')).to_have_text("0")
            await page.wait_for_function(
                "Number(document.querySelector("
                "'[data-card=requests] [data-field=spark]').dataset.max) > 0"
            )  # a rate was drawn, not just the totals
            await expect(page.locator('[data-card="latency"] [data-field="sub"]')).to_contain_text(
                "ms"
            )

            # change the limits from the form
            before = await admin_call("GET", f"{gw.url}/admin/v1/limits")
            assert before["rate"] is None
            await page.fill('#limits input[name="rate"]', "50")
            await page.fill('#limits input[name="burst"]', "10")
            await page.click('#limits button[type="submit"]')
            await expect(page.locator("#limits-msg")).to_contain_text("Applied")
            after = await admin_call("GET", f"{gw.url}/admin/v1/limits")
            assert after == {
                "rate": 50.0,
                "burst": 10,
                "per_user_rate": None,
                "per_user_burst": 1,
            }
            await expect(page.locator("#limits-current")).to_contain_text("sale 50/s, burst 10")
            # the form refuses nonsense before it reaches the gateway
            await page.fill('#limits input[name="per_user_burst"]', "0")
            await page.click('#limits button[type="submit"]')
            await expect(page.locator("#limits-msg")).to_contain_text("whole number")
            await page.click("#limits-reset")
            # rates are rates: once the burst is over they fall back to 0
            await expect(page.locator('[data-card="requests"] [data-field="value"]')).to_have_text(
                "0"
            )
            await page.screenshot(path=str(SHOTS / "dashboard.png"))

            # the numbers came from the stats call, through the modules, never /metrics
            assert "/admin/v1/stats" in paths
            assert "/metrics" not in paths
            loaded = {p.removeprefix("/dashboard/") for p in paths if p.endswith(".js")}
            assert loaded == set(MODULES)

            # a wrong token: a clear message and a way to enter it again
            other = await browser.new_page(viewport={"width": 1366, "height": 768})
            watch(other, errors)
            await other.goto(f"{gw.url}/dashboard?token=wrong-token-0123456789")
            await expect(other.locator("#banner")).to_contain_text("Wrong admin token")
            await expect(other.locator("#login")).to_be_visible()
            assert await other.evaluate("sessionStorage.getItem('seckill.adminToken')") is None
            await other.screenshot(path=str(SHOTS / "wrong-token.png"))
            await other.fill("#token-input", ADMIN_TOKEN)
            await other.click('#login button[type="submit"]')
            await expect(other.locator('tr[data-sale="flash"]')).to_be_visible()
            await expect(other.locator("#banner")).to_be_hidden()

            # the gateway goes away: the page says so and keeps retrying
            started = time.monotonic()
            await asyncio.to_thread(gw.stop)
            took = time.monotonic() - started
            # a gateway with nothing in flight stops at once (the drain has nothing to wait for)
            assert took < 8, f"the gateway took {took:.1f}s to stop:\n{gw.output()[-4000:]}"
            stopped = time.monotonic()
            await expect(page.locator("#banner")).to_contain_text("Gateway unreachable, retrying…")
            assert time.monotonic() - stopped < 15
            await page.screenshot(path=str(SHOTS / "unreachable.png"))
            assert errors == []
