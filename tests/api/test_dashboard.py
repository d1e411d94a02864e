"""The operators' dashboard (docs/API.md §5 ``GET /dashboard``) and the sale list it reads.

- ``GET /admin/v1/sales``: every sale's admin view, sorted by id, at most 1000;
- ``GET /dashboard`` and its assets: public, self-contained (no CDN), strict CSP;
- the page itself, in a real browser: Debian's ``chromium`` driven headless by
  Playwright against a running gateway (skipped without them, failed under CI).
  Its screenshots land in ``var/dashboard/``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from seckill.http.routes import admin
from seckill.redis import keys
from tests.helpers.api import ADMIN, ADMIN_TOKEN, create_sale
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
    assert admin.MAX_LISTED_SALES == 1000
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


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")],
)
async def test_dashboard_assets_are_served_from_the_package(
    client: TestClient, name: str, content_type: str
) -> None:
    resp = await client.get(f"/dashboard/{name}")
    assert resp.status == 200
    assert resp.content_type == content_type
    assert await resp.text() == (PAGE_DIR / name).read_text()
    assert "Content-Security-Policy" in resp.headers


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/nosuch.js",
        "/dashboard/index.html",
        "/dashboard/__init__.py",
        "/dashboard/..%2F..%2Fpyproject.toml",
        "/dashboard/%2e%2e/app.py",
        "/dashboard/",
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
    assert {"index.html", "dashboard.js", "dashboard.css"} <= set(files)
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
    js = re.sub(r"//[^\n]*|/\*.*?\*/", "", files["dashboard.js"], flags=re.S)  # code only
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js, f"dashboard.js uses {sink}"


SETUP = "import setuptools; setuptools.setup()"


def test_the_wheel_ships_the_dashboard(tmp_path: Path) -> None:
    """The page is package data: build the package from the files the wheel is
    made of and find it next to the route that serves it."""
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
    assert set(page_files()) <= shipped
    assert (out / "seckill" / "http" / "routes" / "dashboard.py").is_file()


# --- in a real browser ----------------------------------------------------------------------


def browser_or_skip() -> None:
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (Debian package chromium; .ci/run installs it)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("playwright (the dev extra)")
    if missing:
        message = "the browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


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


@pytest.mark.multiprocess
async def test_dashboard_in_a_browser() -> None:
    """Load the page against a running gateway, see a burst move its numbers,
    change a limit from the form; a wrong token and a dead gateway say so."""
    browser_or_skip()
    from playwright.async_api import async_playwright, expect

    SHOTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=15_000)
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
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1366, "height": 768})
                errors: list[str] = []

                def watch(p: Any) -> None:  # uncaught exceptions, and render errors it caught
                    p.on("pageerror", lambda exc: errors.append(str(exc)))
                    p.on(
                        "console",
                        lambda msg: (
                            errors.append(msg.text) if "seckill dashboard" in msg.text else None
                        ),
                    )

                watch(page)

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

                # the parser and the quantile, on a known histogram
                q = await page.evaluate(
                    """() => {
                      const d = window.seckillDashboard;
                      const m = d.parseMetrics('# TYPE h histogram\\n'
                        + 'h_bucket{le="0.001"} 50\\nh_bucket{le="0.01"} 90\\n'
                        + 'h_bucket{le="+Inf"} 100\\nx{a="q\\\\"uote",b=""} 2\\n');
                      const b = d.histogram(m, 'h');
                      return [d.quantile(0.5, b), d.quantile(0.9, b), d.quantile(0.99, b),
                              m.get('x')[0].labels.a, m.get('x')[0].value];
                    }"""
                )
                assert q[:2] == [pytest.approx(0.001), pytest.approx(0.01)]
                assert q[2] == math.inf  # past the last finite bound
                assert q[3:] == ['q"uote', 2]

                # a burst: 150 admitted, the rest sold out; the page follows
                statuses = await buy_burst(gw.url, "flash", 400)
                assert statuses.count(202) == 150
                assert statuses.count(409) == 250
                await expect(row.locator('[data-field="stock_left"]')).to_have_text("0")
                await expect(row.locator(".status")).to_have_text("sold out")
                await expect(row.locator('[data-field="admitted_total"]')).to_have_text(
                    "150 in all"
                )
                outcomes = page.locator("#outcomes")
                await expect(
                    outcomes.locator('tr[data-outcome="admitted"] [data-field="total"]')
                ).to_have_text("150")
                await expect(
                    outcomes.locator('tr[data-outcome="sold_out"] [data-field="total"]')
                ).to_have_text("250")
                await expect(row.locator('[data-field="backlog"]')).to_have_text("0")
                await page.wait_for_function(
                    "Number(document.querySelector("
                    "'[data-card=requests] [data-field=spark]').dataset.max) > 0"
                )  # a rate was drawn, not just the totals
                await expect(
                    page.locator('[data-card="latency"] [data-field="sub"]')
                ).to_contain_text("ms")

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
                await expect(
                    page.locator('[data-card="requests"] [data-field="value"]')
                ).to_have_text("0")
                await page.screenshot(path=str(SHOTS / "dashboard.png"))

                # a wrong token: a clear message and a way to enter it again
                other = await browser.new_page(viewport={"width": 1366, "height": 768})
                watch(other)
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
                await expect(page.locator("#banner")).to_contain_text(
                    "Gateway unreachable, retrying…"
                )
                assert time.monotonic() - started < 15
                await page.screenshot(path=str(SHOTS / "unreachable.png"))
                assert errors == []
            finally:
                await browser.close()
