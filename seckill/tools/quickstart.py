"""``make run``: the gateway on 127.0.0.1:8080 with an embedded Redis and a demo sale.

Starts ``seckill serve`` through the launcher as the operator's own gateway:
every ``SECKILL_*`` variable and every flag given here reaches it, its data
stay in ``--data-dir`` (``./var``), and it writes to this terminal. Waits
until it is ready, creates the sale ``demo`` unless it exists (so a restart
keeps its state), prints how to try it, then waits for the server. Ctrl-C
(or SIGTERM) stops it: it drains, and this exits with its code.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

from seckill.tools.admin_client import AdminClientError, call
from seckill.tools.launcher import GatewayProcess, LaunchError

DEMO_SALE = {"name": "Demo flash sale", "stock": 100, "per_user_limit": 1}


def _take(flags: list[str], name: str, env: str, default: str) -> str:
    """The value of ``--name V`` or ``--name=V`` (removed from *flags*), else
    ``$env``, else *default*."""
    for i, flag in enumerate(flags):
        if flag == name:
            value = flags[i + 1] if i + 1 < len(flags) else default
            del flags[i : i + 2]
            return value
        if flag.startswith(f"{name}="):
            del flags[i]
            return flag.split("=", 1)[1]
    return os.environ.get(env) or default


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    flags = sys.argv[1:]
    host = _take(flags, "--host", "SECKILL_HOST", "127.0.0.1")
    port = _take(flags, "--port", "SECKILL_PORT", "8080")
    if not port.isdigit():
        print(f"seckill: error: --port must be a number, got {port!r}", file=sys.stderr)
        return 2
    gateway = GatewayProcess(
        *flags,
        host=host,
        port=int(port),
        admin_token=os.environ.get("SECKILL_ADMIN_TOKEN") or None,
        operator=True,
        terminal=True,
    )
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        try:
            gateway.wait_ready()
        except LaunchError:
            code = gateway.stop()
            return code or 2
        url, token = gateway.url, gateway.admin_token
        try:
            call(url, token, "GET", "/admin/v1/sales/demo")
        except AdminClientError:
            call(url, token, "PUT", "/admin/v1/sales/demo", DEMO_SALE)
        print(
            f"""
seckill is running on {url} with the sale "demo" (stock 100, one per customer).

  export SECKILL_ADMIN_TOKEN={token}
  curl -s {url}/api/v1/sales/demo
  curl -s -X POST -H 'X-User-Id: alice' {url}/api/v1/sales/demo/orders
  .venv/bin/seckill sale show demo
  .venv/bin/seckill sale create flash1 --stock 10 --per-user-limit 2
  dashboard: {url}/dashboard?token={token}

Ctrl-C stops it; its data stay in {gateway.data_dir} for the next start.
""",
            flush=True,
        )
        return gateway.proc.wait()
    except KeyboardInterrupt:
        code = gateway.stop()
        return 130 if code is None else code
    finally:
        gateway.kill()


if __name__ == "__main__":
    sys.exit(main())
