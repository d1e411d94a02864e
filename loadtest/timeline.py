"""A locust plugin that writes when each admitted and each sold-out buy was
sent and answered: ``locust -f loadtest/locustfile.py,loadtest/timeline.py``
with ``LOADTEST_TIMELINE=DIR``.

Every locust process appends to ``DIR/timeline-<pid>.jsonl`` one JSON line
per ``buy: admitted`` or ``buy: sold_out`` answer: ``{"name", "sent",
"answered", "order_id"}`` (wall-clock seconds: ``sent`` is locust's
``start_time``, ``answered`` adds the response time; ``order_id`` for a 202).
``python -m loadtest.cluster_trial`` reads them (without importing locust,
which monkey-patches the process that imports it) to prove that no buy was
told ``sold_out`` while the sale still had a unit
(:func:`loadtest.cluster_trial.false_sold_out`). Without
``LOADTEST_TIMELINE`` it records nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

from locust import events

RECORDED = frozenset({"buy: admitted", "buy: sold_out"})


class _Writer:
    """One file per process, opened after locust's fork (line-buffered)."""

    def __init__(self) -> None:
        self.pid = -1
        self.file: IO[str] | None = None

    def write(self, record: dict[str, Any]) -> None:
        where = os.environ.get("LOADTEST_TIMELINE", "").strip()
        if not where:
            return
        if self.pid != os.getpid():
            self.pid = os.getpid()
            Path(where).mkdir(parents=True, exist_ok=True)
            self.file = (Path(where) / f"timeline-{self.pid}.jsonl").open("a", buffering=1)
        assert self.file is not None
        self.file.write(json.dumps(record) + "\n")


WRITER = _Writer()


def _order_id(response: Any) -> str | None:
    try:
        body = json.loads(response.content or b"")
    except (AttributeError, ValueError, UnicodeDecodeError):
        return None
    value = body.get("order_id") if isinstance(body, dict) else None
    return value if isinstance(value, str) else None


@events.request.add_listener  # type: ignore[untyped-decorator]  # locust's hooks are untyped
def _record(
    name: str,
    response_time: float,
    exception: Any,
    start_time: float | None = None,
    response: Any = None,
    **_: Any,
) -> None:
    if name not in RECORDED or exception is not None or start_time is None:
        return
    WRITER.write(
        {
            "name": name,
            "sent": start_time,
            "answered": start_time + response_time / 1000.0,
            "order_id": _order_id(response) if name == "buy: admitted" else None,
        }
    )
