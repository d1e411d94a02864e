"""Webhook sink: one POST per order, ``Idempotency-Key: <order_id>``, 2xx = delivered.

An answer ``{"paid": true}`` to an order's POST settles it as paid (issue 15);
every final status after confirmed (paid, expired, cancelled) is POSTed to the
same URL as a status event, ``Idempotency-Key: <order_id>:<status>``.

The receiver makes it idempotent: the pipeline may POST the same order again
(a retry after a timeout whose request did arrive, a re-claimed order), always
with the same key. One ClientSession, reused for every order (keep-alive).

Failures are classified (see :class:`SinkError`): a 4xx other than 408/429 is
a refusal (permanent); a connection that could not be made (refused, DNS, TLS
handshake) never sent the order (definite); anything after the request may
have gone out — a timeout, a reset, a 5xx, 408, 429, a 3xx — is unknown.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp
import msgspec

from seckill.pipeline.sinks import Order, SinkError, created_at_text, one_line, safe_url

USER_AGENT = "seckill-order-sink/1"
#: 4xx answers that do not say the order was refused: retry, outcome unknown.
RETRYABLE_4XX = frozenset({408, 429})


def refused(status: int) -> bool:
    """True when an HTTP status says the receiver refused the order for good."""
    return 400 <= status < 500 and status not in RETRYABLE_4XX


def order_body(order: Order) -> bytes:
    created_at = created_at_text(order)
    return msgspec.json.encode(
        {
            "order_id": order.order_id,
            "sale_id": order.sale_id,
            "user_id": order.user_id,
            "quantity": order.quantity,
            "created_at": created_at,
        }
    )


def status_body(order: Order, status: str, at_ms: int) -> bytes:
    return msgspec.json.encode(
        {
            "event": "status",
            "order_id": order.order_id,
            "sale_id": order.sale_id,
            "user_id": order.user_id,
            "quantity": order.quantity,
            "status": status,
            "at": created_at_text(Order(order.order_id, order.sale_id, order.user_id, 1, at_ms)),
        }
    )


def says_paid(body: bytes) -> bool:
    """True when a 2xx answer's body is a JSON object with ``"paid": true``."""
    if not body.strip().startswith(b"{"):
        return False
    try:
        answer = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return False
    return isinstance(answer, dict) and answer.get("paid") is True


class WebhookSink:
    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        #: the URL as messages show it: no password, no query string.
        self.shown = safe_url(urlsplit(url))
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._seconds = timeout
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"WebhookSink({self.shown!r})"

    async def start(self) -> None:
        # The receiver may well be down right now: that is for deliver() (and
        # the pipeline's retries) to find out, not a reason to refuse to start.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={"User-Agent": USER_AGENT},
                raise_for_status=False,
            )

    async def deliver(self, order: Order) -> bool | None:
        return await self._post(order, order_body(order), order.order_id)

    async def set_status(self, order: Order, status: str, at_ms: int) -> None:
        await self._post(order, status_body(order, status, at_ms), f"{order.order_id}:{status}")

    async def _post(self, order: Order, body: bytes, key: str) -> bool | None:
        session = self._session
        if session is None or session.closed:
            raise SinkError(f"webhook sink {self.shown} is not running", definite=True)
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        try:
            # No redirects: a 303 turns the POST into a GET whose 200 says
            # nothing about the order. Any 3xx is a failure the operator sees.
            async with session.post(
                self.url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                if 200 <= resp.status < 300:
                    # read it all: the connection is reused, and it may say paid
                    return True if says_paid(await resp.read()) else None
                excerpt = (await resp.content.read(200)).decode("utf-8", "replace")
                status = f"{resp.status} {resp.reason or ''}".strip()
        except TimeoutError:  # aiohttp's timeouts (asyncio.TimeoutError is TimeoutError)
            raise SinkError(
                f"webhook {self.shown} did not answer order {order.order_id}"
                f" within {self._seconds:g}s"
            ) from None
        except aiohttp.ClientConnectorError as exc:  # no connection: nothing was sent
            raise SinkError(
                f"webhook {self.shown} unreachable for order {order.order_id}: {one_line(exc)}",
                definite=True,
            ) from exc
        except aiohttp.ClientError as exc:  # after connecting: it may have been received
            raise SinkError(
                f"webhook {self.shown} failed for order {order.order_id}: {one_line(exc)}"
            ) from exc
        detail = " ".join(excerpt.split())
        raise SinkError(
            f"webhook {self.shown} answered {status} for order {order.order_id}"
            + (f": {detail[:120]}" if detail else ""),
            permanent=refused(resp.status),
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
