"""``make run``: the gateway on 127.0.0.1:8080 with an embedded Redis and a demo sale.

Starts ``seckill serve`` as a child (same flags and ``SECKILL_*`` variables as
always), waits until it is ready, creates the sale ``demo`` unless it exists
(so a restart keeps its state), prints how to try it, and then waits for the
server; Ctrl-C stops both.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request

from seckill.tools.admin_client import AdminClientError, call

DEMO_SALE = {"name": "Demo flash sale", "stock": 100, "per_user_limit": 1}


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def main() -> int:
    env = dict(os.environ)
    env.setdefault("SECKILL_ADMIN_TOKEN", secrets.token_urlsafe(24))
    token = env["SECKILL_ADMIN_TOKEN"]
    host = env.get("SECKILL_HOST", "127.0.0.1")
    port = env.get("SECKILL_PORT", "8080")
    url = f"http://{host}:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "seckill", "serve", *sys.argv[1:]], env=env)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        if not _wait_ready(url, proc):
            proc.terminate()
            return proc.wait() or 2
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

Ctrl-C stops it; its data stays in ./var for the next start.
""",
            flush=True,
        )
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
