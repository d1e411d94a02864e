"""A small synchronous client of the admin API, for the CLI."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any


class AdminClientError(Exception):
    """The call failed; ``exit_code`` 2 for bad input/credentials/unreachable, 1 otherwise."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def call(
    base_url: str, token: str | None, method: str, path: str, body: Any = None, timeout: float = 10
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base_url.rstrip("/") + path, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            err = json.loads(exc.read())
            message = f"{err['error']}: {err['message']}"
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {exc.code}"
        raise AdminClientError(message, 2 if exc.code in (400, 401, 413) else 1) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminClientError(f"cannot reach the gateway at {base_url}: {reason}", 2) from None
