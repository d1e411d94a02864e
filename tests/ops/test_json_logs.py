"""``--log-format json``: every line a real gateway writes is one JSON object
(time, level, logger, message; sale_id/order_id where there are any), checked
with Python's json and with ``jq`` when it is installed."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from seckill.process.logs import JsonFormatter
from tests.helpers.api import ADMIN
from tests.helpers.gateway import Gateway, until

pytestmark = pytest.mark.multiprocess


async def test_every_line_is_one_json_object_with_the_ids(
    redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    log_path = tmp_path / "gateway.log"  # outlives the gateway's own temp dir
    with Gateway(
        "--redis-url",
        redis_url,
        "--processes",
        "2",
        env={"SECKILL_LOG_FORMAT": "json"},
        log_path=log_path,
    ) as gw:
        gw.wait_ready()
        async with aiohttp.ClientSession() as s:
            r = await s.put(f"{gw.url}/admin/v1/sales/jl", json={"stock": 2}, headers=ADMIN)
            assert r.status == 201
            orders = []
            for user in ("u1", "u2"):
                r = await s.post(f"{gw.url}/api/v1/sales/jl/orders", headers={"X-User-Id": user})
                assert r.status == 202
                orders.append((await r.json())["order_id"])
            r = await s.post(f"{gw.url}/admin/v1/orders/{orders[0]}/cancel", headers=ADMIN)
            assert r.status == 200
        await until(lambda: "cancelled by an operator" in gw.output(), 5, "the cancel's log line")
        assert gw.stop() == 0
        output = log_path.read_text()

        lines = output.splitlines()
        assert len(lines) >= 5, output
        records = []
        for line in lines:
            record = json.loads(line)  # every line, the serving line too
            assert isinstance(record, dict), line
            assert {"time", "level", "logger", "message"} <= record.keys(), line
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"]), line
            datetime.fromisoformat(record["time"])
            assert record["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
            records.append(record)

        def one(fragment: str) -> dict[str, str]:
            found = [r for r in records if fragment in r["message"]]
            assert len(found) == 1, (fragment, found)
            return found[0]

        assert one("seckill: serving on ")["logger"] == "seckill"
        created = one("sale jl created")
        assert created["sale_id"] == "jl" and "order_id" not in created
        sold_out = one("sale jl sold out")
        assert (sold_out["sale_id"], sold_out["logger"]) == ("jl", "seckill.sales")
        cancelled = one("cancelled by an operator")
        assert (cancelled["sale_id"], cancelled["order_id"]) == ("jl", orders[0])
        # a line that names an order without extra= still carries its ids
        assert not [r for r in records if orders[1] in r["message"] and "order_id" not in r]

        check_with_jq(log_path.read_bytes(), len(lines))


def check_with_jq(log: bytes, n_lines: int) -> None:
    """``jq`` parses every line too (when installed: the operator's tool)."""
    jq = shutil.which("jq")
    if jq is None:
        return
    parsed = subprocess.run(
        [jq, "-c", "{level, logger, message, sale_id}"],
        input=log,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert parsed.returncode == 0, parsed.stderr
    assert len(parsed.stdout.splitlines()) == n_lines


def test_text_stays_the_default(redis_url: str, tmp_path: Path) -> None:
    log_path = tmp_path / "gateway.log"
    with Gateway("--redis-url", redis_url, log_path=log_path) as gw:
        gw.wait_ready()
        assert gw.stop() == 0
        first = log_path.read_text().splitlines()[0]
        assert not first.startswith("{")
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO seckill\.", first), first


def test_ids_from_extra_or_from_an_order_id_in_the_message() -> None:
    fmt = JsonFormatter()

    def line(message: str, *args: object, **extra: str) -> dict[str, str]:
        record = logging.LogRecord(
            "seckill.pipeline", logging.INFO, __file__, 1, message, args, None
        )
        record.__dict__.update(extra)
        parsed: dict[str, str] = json.loads(fmt.format(record))
        return parsed

    found = line("order %s: delivery outcome unknown (round %d)", "fl.sh-1.AbCdEfGh_jKlMn-1", 2)
    assert (found["sale_id"], found["order_id"]) == ("fl.sh-1", "fl.sh-1.AbCdEfGh_jKlMn-1")
    assert line("sale %s sold out", "s9", sale_id="s9")["sale_id"] == "s9"
    assert "order_id" not in line("sale %s sold out", "s9", sale_id="s9")
    # a token that only looks like one inside a longer word is no order id
    assert "order_id" not in line("x-s1.AbCdEfGhIjKlMnOpQ tail")
    assert line('quote " and\nnewline')["message"] == 'quote " and\nnewline'
