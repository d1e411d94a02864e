"""``make loadtest``: a real flash sale under a locust crowd, then the invariant check.

    python -m loadtest.run [--stock N] [--users N] ...   (see --help)

1. starts ``seckill serve`` through the launcher on 127.0.0.1 (2 processes,
   embedded Valkey, a fresh data dir ``var/loadtest/data``, a free port, a
   generated admin token, its log in ``var/loadtest/gateway.log``);
2. creates the sale, opening a few seconds out so the crowd gathers first;
3. runs locust headless with the spike shape of ``loadtest/locustfile.py``,
   writing ``var/loadtest/report.html`` and ``var/loadtest/locust_*.csv``;
4. waits for the order backlog to drain, then runs ``python -m loadtest.check``
   against the gateway, its Redis and its SQLite sink;
5. prints a summary, stops everything it started (also on Ctrl-C or a
   failure) and exits 0 only when locust recorded no failure, the checker
   passed and the gateway stopped cleanly (1 otherwise, 2 when it could not
   even set up).

Every option also reads a ``LOADTEST_*`` variable (shown in ``--help``), so
``make loadtest LOADTEST_USERS=800 LOADTEST_STOCK=1000`` works; the gateway
is started through the launcher, so no ``SECKILL_*`` variable of this shell
can point it at another Redis or sink.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from loadtest.cli import guarded
from seckill.process.procs import stop_group
from seckill.tools.admin_client import AdminClientError
from seckill.tools.launcher import GatewayProcess, LaunchError

ROOT = Path(__file__).resolve().parent.parent


class SetupError(RuntimeError):
    """The run could not start; the message is for the operator."""


def _opt(
    parser: argparse.ArgumentParser,
    flag: str,
    env: str,
    kind: type[int] | type[float],
    default: float | None,
    help: str,
) -> None:
    # argparse runs `type` over a string default too: a bad LOADTEST_* value is
    # reported like a bad flag.
    parser.add_argument(
        flag,
        type=kind,
        default=os.environ.get(env) or default,
        help=f"{help} (env {env}, default %(default)s)"
        if default is not None
        else f"{help}; env {env}",
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.run", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    p.add_argument(
        "--sale",
        default=os.environ.get("LOADTEST_SALE") or "loadtest",
        help="sale id (env LOADTEST_SALE, default loadtest)",
    )
    _opt(p, "--stock", "LOADTEST_STOCK", int, 500, "units for sale")
    _opt(p, "--per-user-limit", "LOADTEST_PER_USER_LIMIT", int, 1, "units per customer")
    _opt(p, "--users", "LOADTEST_USERS", int, 300, "locust users at the peak")
    _opt(p, "--ramp", "LOADTEST_RAMP", float, 5.0, "seconds to ramp up to --users")
    _opt(p, "--hold", "LOADTEST_HOLD", float, 20.0, "seconds to hold the peak at most")
    _opt(p, "--opens-in", "LOADTEST_OPENS_IN", float, None, "seconds to the opening; "
         "default: ramp + 3, so the whole crowd is waiting")  # fmt: skip
    _opt(p, "--run-time", "LOADTEST_RUN_TIME", int, None, "hard cap on locust's run, "
         "seconds; default: max(60, ramp + hold + 30)")  # fmt: skip
    _opt(p, "--processes", "LOADTEST_PROCESSES", int, 2, "gateway processes")
    _opt(p, "--locust-processes", "LOADTEST_LOCUST_PROCESSES", int, 2, "locust processes")
    _opt(p, "--drain", "LOADTEST_DRAIN", float, 60.0, "seconds to wait for the backlog")
    p.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("LOADTEST_OUT") or ROOT / "var" / "loadtest"),
        help="reports, logs and the data dir (env LOADTEST_OUT, default var/loadtest)",
    )
    args = p.parse_args(argv)
    if args.opens_in is None:
        args.opens_in = args.ramp + 3
    if args.run_time is None:
        args.run_time = max(60, int(args.ramp + args.hold) + 30)
    for name in ("stock", "users", "run_time", "processes", "locust_processes"):
        if getattr(args, name) < (0 if name == "stock" else 1):
            p.error(f"--{name.replace('_', '-')} is out of range")
    if args.per_user_limit < 1 or min(args.ramp, args.hold, args.opens_in, args.drain) < 0:
        p.error("--per-user-limit must be ≥ 1 and the durations ≥ 0")
    return args


def say(line: str) -> None:
    print(f"loadtest: {line}", flush=True)


# -- processes ---------------------------------------------------------------


@contextlib.contextmanager
def gateway(args: argparse.Namespace, data_dir: Path, log_path: Path) -> Iterator[GatewayProcess]:
    """``seckill serve`` through the launcher; SIGTERM (drain) and reap on the way out."""
    gw = GatewayProcess(
        "--processes", str(args.processes), "--data-dir", str(data_dir), "--auth", "header",
        log_path=log_path, cwd=ROOT,
    )  # fmt: skip
    try:
        try:
            gw.wait_ready()
        except LaunchError as exc:
            raise SetupError(f"{exc} (see {log_path})") from None
        yield gw
    finally:
        gw.stop(45)


def admin(gw: GatewayProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    try:
        return gw.admin(method, path, body)
    except AdminClientError as exc:
        raise SetupError(f"{method} {path} failed: {exc}") from None


def run_locust(args: argparse.Namespace, gw: GatewayProcess, out: Path) -> tuple[int | None, float]:
    """Locust headless with the spike shape; its exit code (None = killed) and duration."""
    env = {k: v for k, v in os.environ.items() if k != "LOADTEST_JWT_SECRET"}
    env.update(
        LOADTEST_SALE=args.sale,
        LOADTEST_SHAPE="spike",
        LOADTEST_USERS=str(args.users),
        LOADTEST_RAMP=str(args.ramp),
        LOADTEST_HOLD=str(args.hold),
    )
    cmd = [
        sys.executable, "-m", "locust",
        "-f", str(ROOT / "loadtest" / "locustfile.py"),
        "--headless", "--host", gw.url,
        "--run-time", f"{args.run_time}s",
        "--html", str(out / "report.html"), "--csv", str(out / "locust"),
        "--only-summary", "--exit-code-on-error", "1",
    ]  # fmt: skip
    if args.locust_processes > 1:
        cmd += ["--processes", str(args.locust_processes)]
    start = time.monotonic()
    with (out / "locust.log").open("w") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            # The shape stops at --run-time; the slack covers start-up and the
            # HTML report. Past it, SIGINT (locust writes its reports), then kill.
            proc.wait(args.run_time + 60)
        except subprocess.TimeoutExpired:
            say("locust overran its run time; interrupting it")
        finally:
            code = stop_group(proc, signal.SIGINT, 20)
    return code, time.monotonic() - start


def wait_drained(gw: GatewayProcess, sale: str, seconds: float) -> dict[str, Any]:
    """The admin view once nothing is queued or undelivered (or at the deadline)."""
    deadline = time.monotonic() + seconds
    while True:
        status, view = admin(gw, "GET", f"/admin/v1/sales/{sale}")
        if status != 200:
            raise SetupError(f"GET /admin/v1/sales/{sale} answered {status}: {view}")
        if (view["backlog"] == 0 and view["orders"]["queued"] == 0) or time.monotonic() > deadline:
            return view  # type: ignore[no-any-return]
        time.sleep(0.2)


def run_check(gw: GatewayProcess, sale: str) -> tuple[int, list[str]]:
    if not (ROOT / "loadtest" / "check.py").exists():
        return 2, ["loadtest/check.py is missing: no invariant check ran"]
    cmd = [
        sys.executable, "-m", "loadtest.check", "--url", gw.url, "--sale", sale,
        "--redis-url", gw.redis_url, "--sink", f"sqlite:///{gw.data_dir / 'orders.db'}",
        "--require-drained", "--wait-drained", "30",
    ]  # fmt: skip
    env = {**os.environ, "SECKILL_ADMIN_TOKEN": gw.admin_token}
    try:
        done = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
        )
    except subprocess.TimeoutExpired:
        return 2, ["the checker did not finish in 120 s"]
    return done.returncode, (done.stdout + done.stderr).strip().splitlines()


# -- the summary -------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    name: str
    count: int
    failures: int
    p50: str
    p99: str


def read_stats(path: Path) -> list[Row]:
    """Locust's per-name stats CSV (the "Aggregated" row last)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [
            Row(
                r["Name"],
                int(r["Request Count"]),
                int(r["Failure Count"]),
                r.get("50%", "N/A"),
                r.get("99%", "N/A"),
            )
            for r in csv.DictReader(f)
        ]


def summary(rows: list[Row]) -> list[str]:
    if not rows:
        return ["no locust stats (see locust.log)"]
    width = max(len(r.name) for r in rows)
    out = [f"  {'outcome':<{width}}  {'count':>7}  {'fail':>5}  {'p50 ms':>7}  {'p99 ms':>7}"]
    for r in rows:
        out.append(f"  {r.name:<{width}}  {r.count:>7}  {r.failures:>5}  {r.p50:>7}  {r.p99:>7}")
    return out


# -- the run -----------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    out = args.out.resolve()
    data_dir = out / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    for old in [*out.glob("locust_*.csv"), out / "report.html"]:
        old.unlink(missing_ok=True)
    problems: list[str] = []
    checker: tuple[int, list[str]] = (2, ["not run"])
    view: dict[str, Any] = {}
    with gateway(args, data_dir, out / "gateway.log") as gw:
        say(
            f"gateway {gw.url} ({args.processes} processes, Redis at {gw.shown_redis_url}), "
            f"data in {_rel(data_dir)}"
        )
        opens = datetime.now(UTC) + timedelta(seconds=args.opens_in)
        status, made = admin(
            gw,
            "PUT",
            f"/admin/v1/sales/{args.sale}",
            {
                "name": "load test",
                "stock": args.stock,
                "per_user_limit": args.per_user_limit,
                "starts_at": opens.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            },
        )
        if status != 201:
            raise SetupError(f"creating sale {args.sale} answered {status}: {made}")
        say(
            f"sale {args.sale}: stock {args.stock}, per_user_limit {args.per_user_limit}, "
            f"opens in {args.opens_in:g} s"
        )
        say(
            f"locust: {args.users} users ramped in {args.ramp:g} s, held ≤ {args.hold:g} s "
            f"(cap {args.run_time} s, {args.locust_processes} process(es)); "
            f"log in {_rel(out / 'locust.log')}"
        )
        locust_code, took = run_locust(args, gw, out)
        say(f"locust exited {locust_code} after {took:.1f} s")
        if locust_code != 0:
            problems.append(f"locust exited {locust_code}")
        if not gw.running():
            problems.append(f"the gateway died during the run (exit {gw.proc.returncode})")
        else:
            view = wait_drained(gw, args.sale, args.drain)
            checker = run_check(gw, args.sale)
    if gw.returncode != 0:
        problems.append(f"the gateway stopped with exit code {gw.returncode} (see gateway.log)")

    rows = read_stats(out / "locust_stats.csv")
    total = next((r for r in rows if r.name == "Aggregated"), None)
    if total and total.failures:
        problems.append(f"locust recorded {total.failures} failures")
    print("\n== summary ==")
    if total:
        print(
            f"requests {total.count}, failures {total.failures}, "
            f"p50 {total.p50} ms, p99 {total.p99} ms"
        )
    print("\n".join(summary([r for r in rows if r.name != "Aggregated"])))
    if view:
        orders = ", ".join(f"{k} {v}" for k, v in view.get("orders", {}).items())
        print(
            f"sale {args.sale}: {view.get('status')}, stock_left {view.get('stock_left')} "
            f"of {view.get('stock_total')}; orders {orders}; backlog {view.get('backlog')}"
        )
    print("== invariant check ==")
    print("\n".join(f"  {line}" for line in checker[1]))
    if checker[0] != 0:
        problems.append(f"the invariant check exited {checker[0]}")
    print(f"report: {_rel(out / 'report.html')}, stats: {_rel(out)}/locust_stats.csv")
    if problems:
        say("FAILED: " + "; ".join(problems))
        return 1
    say("OK")
    return 0


def _rel(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return guarded(lambda: run(args), say, SetupError)


if __name__ == "__main__":
    sys.exit(main())
