"""deploy/grafana/seckill.json imports as is: valid dashboard JSON, a
Prometheus data source variable that every panel and query uses (no uid to
edit), unique panel ids, a query on every panel, and the panels the issue
asks for. tests/ops/test_prometheus.py runs every query against a real
Prometheus."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = json.loads((ROOT / "deploy" / "grafana" / "seckill.json").read_text())
DS = {"type": "prometheus", "uid": "${datasource}"}


def panels() -> list[dict]:  # type: ignore[type-arg]
    return [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def test_import_ready() -> None:
    assert DASHBOARD["id"] is None and DASHBOARD["uid"] and DASHBOARD["title"]
    assert isinstance(DASHBOARD["schemaVersion"], int)
    (var,) = [v for v in DASHBOARD["templating"]["list"] if v["name"] == "datasource"]
    assert (var["type"], var["query"]) == ("datasource", "prometheus")
    # nothing to fill in at import: no __inputs placeholder, no fixed data source uid
    assert "__inputs" not in DASHBOARD
    assert "DS_" not in json.dumps(DASHBOARD)


def test_every_panel_queries_the_variable_data_source() -> None:
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == DS, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DS and target["expr"].strip(), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_the_panels_an_operator_needs() -> None:
    exprs = " ".join(t["expr"] for p in panels() for t in p["targets"])
    for needed in (
        "job_outcome:seckill_buy_requests:rate1m",  # buys by outcome
        "job:seckill_buys_admitted:rate1m",  # admitted/s
        "job:seckill_buy_duration_seconds:p99_1m",  # latency
        "sale:seckill_sale_stock_left:max",  # stock per sale
        "sale:seckill_sale_backlog:max",  # backlog
        "job:seckill_order_delivery_duration_seconds:p99_1m",  # delivery lag
        "job:seckill_order_workers_busy:sum",  # workers busy
        "job_layer:seckill_rate_limited:rate1m",  # rate-limit layers
        "job:seckill_redis_errors:rate1m",  # Redis errors
    ):
        assert needed in exprs, needed
