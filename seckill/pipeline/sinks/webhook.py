"""Webhook sink: one POST per order, ``Idempotency-Key: <order_id>``, 2xx = delivered.

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

    async def deliver(self, order: Order) -> None:
        session = self._session
        if session is None or session.closed:
            raise SinkError(f"webhook sink {self.shown} is not running", definite=True)
        body = order_body(order)
        headers = {"Content-Type": "application/json", "Idempotency-Key": order.order_id}
        try:
            # No redirects: a 303 turns the POST into a GET whose 200 says
            # nothing about the order. Any 3xx is a failure the operator sees.
            async with session.post(
                self.url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                if 200 <= resp.status < 300:
                    await resp.read()  # drain it so the connection is reused
                    return
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
