"""``make bench`` (docs/API.md §8): wrk's output, buy.lua's user ids, and a smoke run.

The end-to-end test runs ``python -m loadtest.bench`` for real (BENCH_QUICK=1:
1 s warm-up, 1 s run) against the yardstick and a ``seckill serve`` it starts.
Without ``wrk`` on PATH those tests skip, or fail when ``CI`` is set (.ci/run
installs it).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from loadtest.bench.cli import parse_args
from loadtest.bench.client import Admin, http_status
from loadtest.bench.console import BenchError
from loadtest.bench.measurement import LINE_RE, SHARD_LINE_RE, Measurement
from loadtest.bench.sampling import cpu_seconds, loadavg, machine_busy_s, memory_kb
from loadtest.bench.servers import Server, start_bare
from loadtest.bench.wrk import WrkResult, parse_wrk_output
from seckill.process.procs import alive, free_port
from seckill.tools.admin_client import AdminClientError
from seckill.tools.launcher import ChildProcess, gateway_env
from tests.helpers.ci import missing
from tests.helpers.gateway import wait_for

pytestmark = pytest.mark.multiprocess

ROOT = Path(__file__).resolve().parents[2]
BUY_LUA = ROOT / "loadtest" / "wrk" / "buy.lua"

FAKE_WRK = """\
Running 1s test @ http://127.0.0.1:40123
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.99ms    1.39ms  24.44ms   86.76%
    Req/Sec    17.11k     4.41k   23.67k    55.00%
  Latency Distribution
     50%    1.61ms
     75%    2.19ms
     90%    3.59ms
     99%    6.61ms
  34130 requests in 1.00s, 9.18MB read
  Non-2xx or 3xx responses: 120
Requests/sec:  34113.48
Transfer/sec:      9.17MB
WRK_JSON {"requests":34130,"duration_us":1000500,"bytes":9624660,\
"latency_us":{"min":147,"mean":1988.1,"stdev":1392.3,"max":24439,\
"p50":1605,"p90":3589,"p99":6609,"p999":17241},\
"errors":{"connect":0,"read":2,"write":0,"timeout":1,"status":120},"threads":2}
"""


@pytest.fixture
def wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        missing("wrk is not installed (apt-get install -y wrk)")
    return path


def test_parse_wrk_output() -> None:
    result = parse_wrk_output(FAKE_WRK)
    assert result.requests == 34130
    assert result.duration_s == pytest.approx(1.0005)
    assert result.rps == pytest.approx(34113, abs=1)
    assert result.ms("p50") == pytest.approx(1.605)
    assert result.ms("p99") == pytest.approx(6.609)
    assert result.socket_errors == 3
    assert result.non2xx == 120
    assert result.ok == 34130 - 120


def test_parse_wrk_output_without_the_json_line() -> None:
    with pytest.raises(BenchError, match="no WRK_JSON line"):
        parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_bench_line_format() -> None:
    result = parse_wrk_output(FAKE_WRK)
    m = Measurement("admit", 2, 256, result, 0.5, [], [], {"total": 0}, {}, 0.0)
    m.ratio_to_bare = 0.6123
    assert m.line() == "bench admit-2p-c256 rps=34113 p50_ms=1.60 p99_ms=6.61 ratio_to_bare=0.61"
    assert LINE_RE.match(m.line())


def test_an_admit_line_adds_the_cpu_per_order() -> None:
    """Additive fields (API.md §8): the five of every line first, then the CPU
    per admitted order by role, the delivery's taken out of the run's CPU."""
    from loadtest.bench.scenarios import cpu_per_order

    result = parse_wrk_output(FAKE_WRK)
    rows = [
        {"pid": 1, "role": "worker", "cpu_s": 10.0},
        {"pid": 2, "role": "redis", "cpu_s": 5.0},
    ]
    end = [
        {"pid": 1, "role": "worker", "cpu_s": 10.0 + 1.2},
        {"pid": 2, "role": "redis", "cpu_s": 5.0 + 0.5},
    ]
    m = Measurement("admit", 2, 64, result, 0.5, rows, end, {"total": 0}, {}, 0.0)
    m.extra.update(server_admitted=20_000, delivered_in_run=5_000)
    delivery = {"delivered": 10_000, "cpu_s": {"worker": 0.4, "redis": 0.1}}
    cost = cpu_per_order(m, delivery)
    # gateway: (1.2 s - 5000 × 40 µs) / 20000 = 50 µs; Valkey: (0.5 - 5000 × 10 µs) / 20000
    assert (cost["gateway_us_per_admit"], cost["valkey_us_per_admit"]) == (50.0, 22.5)
    assert (cost["delivery_gateway_us"], cost["delivery_valkey_us"]) == (40.0, 10.0)
    assert cost["server_us_per_order"] == 122.5
    m.extra["cpu_per_order"] = cost
    m.ratio_to_bare = 0.5
    line = m.line()
    assert line.startswith(
        "bench admit-2p-c64 rps=34113 p50_ms=1.60 p99_ms=6.61 ratio_to_bare=0.50 admits_per_s="
    )
    assert line.endswith(
        " gateway_us_per_admit=50.0 valkey_us_per_admit=22.5"
        " delivery_us_per_order=40.0/10.0 server_us_per_order=122.5"
    )
    assert LINE_RE.match(line)


def test_a_spike_line_adds_the_cpu_per_unit_sold_until_drained() -> None:
    from loadtest.bench.scenarios import spike_cpu_per_order

    result = parse_wrk_output(FAKE_WRK)
    start = [
        {"pid": 1, "role": "supervisor", "cpu_s": 1.0},
        {"pid": 2, "role": "worker", "cpu_s": 10.0},
        {"pid": 3, "role": "redis", "cpu_s": 5.0},
    ]
    drained = [
        {"pid": 1, "role": "supervisor", "cpu_s": 1.1},
        {"pid": 2, "role": "worker", "cpu_s": 11.9},
        {"pid": 3, "role": "redis", "cpu_s": 6.0},
    ]
    m = Measurement("mixed_spike", 2, 64, result, 0.5, start, [], {"total": 0}, {}, 0.0)
    m.extra["server_admitted"] = 10_000
    cost = spike_cpu_per_order(m, drained)
    assert cost == {
        "sold": 10_000,
        "gateway_us_per_order": 200.0,
        "valkey_us_per_order": 100.0,
        "server_us_per_order": 300.0,
    }
    m.extra["spike_cpu_per_order"] = cost
    m.ratio_to_bare = 0.8
    assert m.line() == (
        "bench mixed_spike-2p-c64 rps=34113 p50_ms=1.60 p99_ms=6.61 ratio_to_bare=0.80"
        " sold=10000 gateway_us_per_order=200.0 valkey_us_per_order=100.0"
        " server_us_per_order=300.0"
    )
    assert LINE_RE.match(m.line())


def test_proc_readings_of_this_process_and_of_a_gone_one() -> None:
    me = memory_kb(os.getpid())
    assert me["VmHWM"] >= me["VmRSS"] > 0
    assert (cpu_seconds(os.getpid()) or 0.0) > 0.0
    assert len(loadavg()) == 3
    assert machine_busy_s() > 0.0
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait(30)
    assert memory_kb(gone.pid) == {} and cpu_seconds(gone.pid) is None


@pytest.mark.parametrize("processes", [1, 2])
def test_a_launched_yardstick_is_sampled_by_role(tmp_path: Path, processes: int) -> None:
    """One process serves itself; with two, the leader supervises and its two
    spawned children serve. Every process's peak RSS is kept, and stop()
    leaves none of them behind."""
    server = start_bare(f"bare-{processes}p", processes, tmp_path / "bare.log")
    try:
        server.wait_ready()
        roles = server.sampler.pids()
        top = server.child.pid
        if processes == 1:
            assert roles == {"worker": [top]}
        else:
            assert roles["supervisor"] == [top] and len(roles["worker"]) == 2
            assert set(roles) == {"supervisor", "worker"}
        rows = server.sampler.snapshot()
        assert sorted(row["pid"] for row in rows) == sorted(p for ps in roles.values() for p in ps)
        assert all(row["rss_kb"] > 0 and row["cpu_s"] is not None for row in rows)
        assert http_status("POST", f"{server.url}/api/v1/sales/bare/orders") == 202
    finally:
        code = server.stop()
    assert code == 0, server.log_tail()
    assert [row["role"] for row in server.sampler.peaks()].count("worker") == processes
    assert all(row["hwm_kb"] > 0 for row in server.sampler.peaks())
    pids = [row["pid"] for row in rows]
    wait_for(lambda: not any(alive(pid) for pid in pids), 10, "every process to be gone")
    assert (tmp_path / "bare.log").exists()


def test_a_server_that_exits_while_starting_is_one_bench_error(tmp_path: Path) -> None:
    child = ChildProcess(
        [sys.executable, "-c", "import sys; print('port taken'); sys.exit(3)"],
        env=gateway_env(), name="bare-1p", log_path=tmp_path / "bare.log",
    )  # fmt: skip
    server = Server("bare-1p", 1, free_port(), child, lambda: False, "/healthz 200")
    try:
        with pytest.raises(BenchError, match=r"bare-1p exited with code 3 .*port taken"):
            server.wait_ready()
    finally:
        assert server.stop() == 3


class _FakeGateway:
    """What Admin uses of a GatewayProcess: ``admin()``, answering *answer*."""

    def __init__(self, answer: tuple[int, object] | Exception) -> None:
        self.answer = answer

    def admin(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _admin(answer: tuple[int, object] | Exception) -> Admin:
    return Admin(_FakeGateway(answer))  # type: ignore[arg-type]


def test_admin_calls_end_the_run_on_an_unexpected_answer() -> None:
    ok = _admin((200, {"stock_total": 10, "stock_left": 4}))
    assert ok.sold("s1") == 6 and ok.stock_left("s1") == 4
    refused = _admin((503, {"error": "unavailable"}))
    with pytest.raises(BenchError, match="GET /admin/v1/sales/s1 answered 503"):
        refused.sale("s1")
    assert refused.stock_left("s1") is None
    unreachable = _admin(AdminClientError("cannot reach the gateway", 2))
    with pytest.raises(BenchError, match="PUT /admin/v1/limits: cannot reach the gateway"):
        unreachable.limits({"rate": 1})
    assert unreachable.stock_left("s1") is None  # the watcher asks again


def test_nothing_listening_is_status_0() -> None:
    assert http_status("GET", f"http://127.0.0.1:{free_port()}/healthz") == 0


async def _wrk_against_counter(wrk: str, users: int) -> tuple[Counter[str], WrkResult]:
    """wrk + buy.lua for 1 s against a server that counts X-User-Id."""
    seen: Counter[str] = Counter()

    async def buy(request: web.Request) -> web.Response:
        seen[request.headers["X-User-Id"]] += 1
        return web.Response(status=202 if request.match_info["sale"] == "s1" else 409)

    app = web.Application()
    app.router.add_post("/api/v1/sales/{sale}/orders", buy)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        proc = await asyncio.create_subprocess_exec(
            wrk, "-t2", "-c8", "-d1s", "-s", str(BUY_LUA), f"http://127.0.0.1:{server.port}",
            "--", "/api/v1/sales/s1/orders", str(users), "2", "t",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
    finally:
        await server.close()
    return seen, parse_wrk_output(out.decode())


async def test_buy_lua_gives_every_request_its_own_user(wrk: str) -> None:
    seen, result = await _wrk_against_counter(wrk, users=0)
    assert result.requests > 100
    assert result.non2xx == 0
    assert max(seen.values()) == 1, "a user id was sent twice"
    # both threads' sequences: t0, t2, t4 … and t1, t3, t5 … (wrk calls
    # request() once to check the script, so t0 itself may be skipped)
    assert {"t1", "t2", "t3", "t4"} <= set(seen)
    # wrk does not count the answers still in flight when it stops
    assert result.requests <= sum(seen.values()) <= result.requests + 8


async def test_buy_lua_cycles_through_a_user_population(wrk: str) -> None:
    seen, result = await _wrk_against_counter(wrk, users=50)
    assert set(seen) == {f"t{n}" for n in range(50)}
    assert result.requests > 100


def test_bench_without_wrk_is_one_clear_line(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no wrk there
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.bench", "--out-dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "wrk is not installed" in done.stderr
    assert not list(tmp_path.iterdir())


def test_bench_end_to_end(wrk: str, tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_QUICK": "1"}
    done = subprocess.run(
        [
            sys.executable, "-m", "loadtest.bench", "--scenarios", "bare,sold_out",
            "--processes", "1", "--connections", "64", "--out-dir", str(tmp_path),
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("bench ")]
    assert [line.split()[1] for line in lines] == ["bare-1p-c64", "sold_out-1p-c64"], done.stdout
    for line in lines:
        assert LINE_RE.match(line), line
    assert lines[0].endswith("ratio_to_bare=1.00")
    # The §8 lines are the last thing printed.
    assert done.stdout.rstrip().splitlines()[-2:] == lines

    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["lines"] == lines
    assert list(tmp_path.glob("bench-*.json"))
    assert (tmp_path / "latest.md").read_text().count("\n| ") == 3
    machine = report["machine"]
    assert machine["nproc"] >= 1 and machine["python"] and "cpu_model" in machine
    bare, sold_out = report["results"]
    assert bare["errors"]["total"] == 0 and bare["non2xx"] == 0
    assert sold_out["errors"]["total"] == 0
    # every answer of the sold-out sale was a refusal, and the gateway says why
    assert sold_out["non2xx"] == sold_out["requests"] > 0
    assert sold_out["server_admitted"] == 0
    assert sold_out["probe"] == {"409 sold_out": 5}
    assert report["problems"] == []
    # peak RSS of every process it started, and RSS at the start and end of each run
    gateway = report["services"]["gateway-1p"]
    assert {row["role"] for row in gateway["peak_rss_kb"]} == {"worker", "redis"}
    assert all(row["hwm_kb"] > 0 for row in gateway["peak_rss_kb"])
    assert sold_out["rss_start"] and sold_out["rss_end"]
    assert report["services"]["bare-1p"]["exit_code"] == 0
    assert gateway["exit_code"] == 0


def test_shard_line_format() -> None:
    result = parse_wrk_output(FAKE_WRK)
    nodes = [{"cpu_us_per_admit": us} for us in (11.25, 9.8, 10.0)]
    shards = {"nodes": nodes, "admits_per_s": 13175.5, "busiest_node_share": 0.349}
    m = Measurement("shards3", 1, 64, result, 0.5, [], [], {"total": 0}, {"shards": shards}, 0.0)
    m.ratio_to_bare = 0.4
    assert m.line() == (
        "bench shards3-1p-c64 rps=34113 p50_ms=1.60 p99_ms=6.61 ratio_to_bare=0.40 "
        "admits_per_s=13176 valkey_us_per_admit=11.2/9.8/10.0 busiest_node_share=0.35"
    )
    assert SHARD_LINE_RE.match(m.line()) and not LINE_RE.match(m.line())


@pytest.mark.cluster
def test_bench_shards_end_to_end(wrk: str, tmp_path: Path) -> None:
    """The opt-in shard scenario, 1 s runs: a 1-primary and a 3-primary local
    cluster, a gateway on each, a sale with 1 and 3 buckets; well-formed
    lines after bare's, each primary's CPU per admission, the three buckets
    on three primaries. No timing is asserted."""
    env = {**os.environ, "BENCH_QUICK": "1"}
    done = subprocess.run(
        [
            sys.executable, "-m", "loadtest.bench", "--scenarios", "shards",
            "--processes", "1", "--connections", "64", "--out-dir", str(tmp_path),
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("bench ")]
    assert [line.split()[1] for line in lines] == [
        "bare-1p-c64", "shards1-1p-c64", "shards3-1p-c64",
    ], done.stdout  # fmt: skip
    assert LINE_RE.match(lines[0]), lines[0]
    for line in lines[1:]:
        assert SHARD_LINE_RE.match(line), line
    assert done.stdout.rstrip().splitlines()[-3:] == lines
    assert lines[1].count("/") == 0 and lines[2].split("valkey_us_per_admit=")[1].count("/") == 2

    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["problems"] == [], report["problems"]
    one, three = report["results"][1:]
    for result, n in ((one, 1), (three, 3)):
        assert result["errors"]["total"] == 0 and result["non2xx"] == 0
        assert result["server_admitted"] > 0
        shards = result["shards"]
        assert len(shards["nodes"]) == n
        assert all(node["cpu_s"] >= 0 and node["pid"] for node in shards["nodes"])
        assert 0 < shards["busiest_node_share"] <= 1
        # every bucket found on the primary its slot names, one bucket per primary
        assert sorted(shards["bucket_nodes"].values()) == list(range(n))
    assert one["shards"]["busiest_node_share"] == 1.0
    # every node it started is gone: the clusters' pids are not alive any more
    pids = [node["pid"] for r in (one, three) for node in r["shards"]["nodes"]]
    wait_for(lambda: not any(alive(pid) for pid in pids), 10, "every node to be gone")


def test_the_shard_scenario_is_opt_in() -> None:
    assert parse_args([]).shards == ()
    assert parse_args(["--scenarios", "shards"]).shards == (1, 3)
    assert parse_args(["--scenarios", "shards"]).scenarios == ("bare",)
    assert parse_args(["--shards", "3"]).shards == (3,)
    assert parse_args(["--scenarios", "admit", "--shards", "1,3,3"]).shards == (1, 3)
    with pytest.raises(SystemExit) as exc:
        parse_args(["--shards", "0"])
    assert exc.value.code == 2
