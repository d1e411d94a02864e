"""The log formats of ``seckill serve``: ``--log-format text`` (the default,
one human line per record) or ``json`` (one JSON object per line, for log
shippers).

A JSON line holds ``time`` (RFC 3339 UTC, milliseconds), ``level``,
``logger``, ``message`` and ``process``; ``sale_id`` and ``order_id`` when
the record has them — given with ``extra={"sale_id": …}``, or else an order
id found in the message (an order id names its sale: ``<sale_id>.<token>``);
``exc`` with the traceback of a record that carries one.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from seckill.schemas import ORDER_ID_PATTERN

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s"
#: an order id standing on its own in a message (not part of a longer token)
ORDER_ID_IN_TEXT = re.compile(rf"(?<![\w.:-]){ORDER_ID_PATTERN}(?![\w-])")
#: record attributes copied into a JSON line when present (``extra=``)
IDS = ("sale_id", "order_id")


def _time(created: float) -> str:
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def json_line(
    message: str, *, logger: str = "seckill", level: str = "INFO", created: float | None = None
) -> str:
    """One JSON log line (no newline) for *message*, outside the logging module
    (``serve``'s own stdout lines in ``--log-format json``)."""
    import time

    record: dict[str, Any] = {
        "time": _time(time.time() if created is None else created),
        "level": level,
        "logger": logger,
        "message": message,
    }
    return json.dumps(record, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    """A record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, Any] = {
            "time": _time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            "process": record.process,
        }
        for key in IDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = str(value)
        if "order_id" not in line and (found := ORDER_ID_IN_TEXT.search(message)):
            line["order_id"] = found.group(0)
            line.setdefault("sale_id", found.group(1))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["exc"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str, fmt: str = "text") -> None:
    """The root logger at *level*, to stderr, in *fmt* (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
