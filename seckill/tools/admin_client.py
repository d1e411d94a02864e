"""A small synchronous client of the admin API, for the CLI and the tools.

:func:`request` answers ``(status, parsed JSON)`` whatever the status;
:func:`call` raises :class:`AdminClientError` unless the answer is 2xx.
"""

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


def request(
    base_url: str, token: str | None, method: str, path: str, body: Any = None, timeout: float = 10
) -> tuple[int, Any]:
    """``(status, parsed JSON body or None)``; AdminClientError (exit code 2)
    when the gateway cannot be reached or does not answer with JSON."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base_url.rstrip("/") + path, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw or b"null")
            except ValueError:
                return exc.code, None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminClientError(f"cannot reach the gateway at {base_url}: {reason}", 2) from None


def call(
    base_url: str, token: str | None, method: str, path: str, body: Any = None, timeout: float = 10
) -> tuple[int, Any]:
    """Like :func:`request`, but a non-2xx answer raises AdminClientError with
    the contract's ``error: message``."""
    status, answer = request(base_url, token, method, path, body, timeout)
    if 200 <= status < 300:
        return status, answer
    try:
        message = f"{answer['error']}: {answer['message']}"
    except (KeyError, TypeError):
        message = f"HTTP {status}"
    raise AdminClientError(message, 2 if status in (400, 401, 413) else 1)
