"""HTTP to the servers under measurement, outside wrk: readiness, a few
probing buys, ``/metrics``, and the admin API.

Buys and ``/metrics`` go through :func:`http`, a plain urllib call that
never raises (status 0: nothing answered), because a probe's job is to
report what came back, whatever it was. Admin calls go through the
launcher's :meth:`~seckill.tools.launcher.GatewayProcess.admin`, with the
gateway's own token.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

from loadtest.bench.console import BenchError
from seckill.tools.admin_client import AdminClientError
from seckill.tools.launcher import GatewayProcess

#: buys sent after each gateway run, to see what it answers.
PROBES = 5

_METRIC_RE = re.compile(r'^seckill_buy_requests_total\{[^}]*outcome="([a-z_]+)"[^}]*\}\s+(\S+)')


def http(
    method: str, url: str, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, Any]:
    """(status, parsed JSON body or text); status 0 when nothing answered."""
    req = urllib.request.Request(url, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except OSError:
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def http_status(method: str, url: str) -> int:
    return http(method, url, timeout=1.0)[0]


def buy(base: str, sale: str, user: str) -> tuple[int, Any]:
    """One buy of *sale* as *user*: (status, body)."""
    return http("POST", f"{base}/api/v1/sales/{sale}/orders", headers={"X-User-Id": user})


def probe(base: str, sale: str, prefix: str) -> dict[str, int]:
    """A few buys by new users: ``{"<status> <error code>": count}``."""
    seen: Counter[str] = Counter()
    for i in range(PROBES):
        status, body = buy(base, sale, f"{prefix}{i}")
        code = body.get("error", "") if isinstance(body, dict) else ""
        seen[f"{status} {code}".strip()] += 1
    return dict(seen)


def buy_outcomes(base: str) -> dict[str, float] | None:
    """``seckill_buy_requests_total`` by outcome from /metrics, None without one."""
    status, text = http("GET", base + "/metrics")
    if status != 200 or not isinstance(text, str):
        return None
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _METRIC_RE.match(line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


class Admin:
    """The admin calls the scenarios make; an answer other than the expected
    one ends the run (BenchError), since every figure after it would be wrong."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.gateway = gateway

    def call(self, method: str, path: str, body: Any, expect: tuple[int, ...]) -> Any:
        try:
            status, data = self.gateway.admin(method, path, body)
        except AdminClientError as exc:
            raise BenchError(f"{method} {path}: {exc}") from None
        if status not in expect:
            raise BenchError(f"{method} {path} answered {status}: {data}")
        return data

    def put_sale(self, sale: str, stock: int) -> None:
        self.call("PUT", f"/admin/v1/sales/{sale}", {"stock": stock}, expect=(200, 201))

    def sale(self, sale: str) -> dict[str, Any]:
        data: dict[str, Any] = self.call("GET", f"/admin/v1/sales/{sale}", None, expect=(200,))
        return data

    def sold(self, sale: str) -> int:
        view = self.sale(sale)
        return int(view["stock_total"]) - int(view["stock_left"])

    def stock_left(self, sale: str) -> int | None:
        """The units left, or None when the gateway did not say (a watcher
        polling during a run asks again rather than ending it)."""
        try:
            status, view = self.gateway.admin("GET", f"/admin/v1/sales/{sale}")
        except AdminClientError:
            return None
        return int(view["stock_left"]) if status == 200 else None

    def limits(self, body: dict[str, Any]) -> None:
        self.call("PUT", "/admin/v1/limits", body, expect=(200,))
