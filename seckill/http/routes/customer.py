"""Customer API (docs/API.md §4): buy, order status, public sale view."""

from __future__ import annotations

import functools
import logging
import time

from aiohttp import web
from multidict import CIMultiDict

from seckill import metrics
from seckill.core.views import now_ms, order_view, public_view
from seckill.http import errors
from seckill.http.responses import (
    REDIS_DOWN,
    answers_its_errors,
    error_answer,
    error_response,
    json_response,
)
from seckill.http.state import IDENTIFY, RUNTIME, SETTINGS, Runtime
from seckill.http.validate import CUSTOMER_BODY_LIMIT, IDEMPOTENCY_KEY_RE, body_as, path_id
from seckill.redis import keys
from seckill.redis.scripts import Admit, AdmitResult
from seckill.schemas import Accepted, BuyRequest, Error, OutcomeUnknownError, encode

#: the body of a buy without one
ONE_UNIT = BuyRequest()

log = logging.getLogger("seckill.sales")
routes = web.RouteTableDef()


def _accepted(sale_id: str, result: AdmitResult) -> web.Response:
    body = Accepted(result.order_id, sale_id, result.quantity, result.status)  # type: ignore[arg-type]
    return json_response(body, 202, {"Location": f"/api/v1/orders/{result.order_id}"})


#: the answers given without Redis, encoded once (the hot refusals of a sale)
_SOLD_OUT = encode(Error(errors.SoldOut.code, errors.SoldOut.message))
_RATE_LIMITED = encode(Error(errors.RateLimited.code, errors.RateLimited.message))


#: the headers of those answers, built once: aiohttp copies them per response
_JSON_HEADERS = CIMultiDict({"Content-Type": "application/json"})


@functools.lru_cache(maxsize=64)
def _retry_headers(retry_after: int) -> CIMultiDict[str]:
    return CIMultiDict({"Content-Type": "application/json", "Retry-After": str(retry_after)})


def _refusal(status: int, body: bytes, retry_after: int | None = None) -> web.Response:
    headers = _JSON_HEADERS if retry_after is None else _retry_headers(retry_after)
    return web.Response(body=body, status=status, headers=headers)


#: the outcome label of each refusal, by its error code
_OUTCOME_OF: dict[str, str] = {
    errors.InvalidRequest.code: "invalid",
    errors.PayloadTooLarge.code: "invalid",
    errors.Unauthenticated.code: "unauthenticated",
    errors.SaleNotFound.code: "not_found",
    errors.SaleNotStarted.code: "not_active",
    errors.SaleEnded.code: "not_active",
    errors.SoldOut.code: "sold_out",
    errors.LimitReached.code: "limit_reached",
    errors.RateLimited.code: "rate_limited",
    errors.Overloaded.code: "overloaded",
    errors.Unavailable.code: "unavailable",
    errors.OutcomeUnknown.code: "outcome_unknown",
}


@routes.post("/api/v1/sales/{sale_id}/orders")
@answers_its_errors
async def buy(request: web.Request) -> web.Response:
    """Try to buy; every answer is counted by outcome (``seckill_buy_requests_total``).

    One coroutine from the request to the answer, answering its own errors,
    on purpose: this is the hottest code of the gateway, and the error
    wrapper's layer is a coroutine less per buy.
    """
    started = time.perf_counter()
    try:
        app = request.app
        sale_id = path_id(request, "sale_id")
        user_id = app[IDENTIFY](request)
        quantity = 1
        if request.body_exists:
            quantity = (await body_as(request, BuyRequest, CUSTOMER_BODY_LIMIT, ONE_UNIT)).quantity
        idem = request.headers.get("Idempotency-Key")
        if idem is not None and not IDEMPOTENCY_KEY_RE.match(idem):
            raise errors.InvalidRequest("Idempotency-Key must be 1 to 64 printable characters.")

        # Most of a flash sale's crowd ends here, answered from memory.
        rt = app[RUNTIME]
        shield = rt.shield
        if rt.cache.is_sold_out(sale_id) and (
            idem is None or not await _is_replay(rt, sale_id, user_id, idem)
        ):
            response, outcome = _refusal(409, _SOLD_OUT), "sold_out"
        elif shield.rate is not None and shield.refuses(sale_id):
            metrics.count_rate_limited("local")
            response = _refusal(429, _RATE_LIMITED, shield.retry_after)
            outcome = "rate_limited"
        else:
            if shield.rate is not None:
                await shield.acquire(sale_id)
            settings = app[SETTINGS]
            generation = rt.cache.generation(sale_id)
            result = await rt.scripts.admit(
                sale_id,
                user_id,
                quantity,
                idempotency_key=idem,
                idempotency_ttl=settings.idempotency_ttl,
                limits=rt.limits,
                max_backlog=settings.max_backlog,
            )
            response, outcome = _answer(rt, sale_id, generation, result)
    except Exception as exc:  # not CancelledError: a BaseException
        if isinstance(exc, errors.SeckillError):
            metrics.count_buy("", _OUTCOME_OF.get(exc.code, "invalid"), started)
        elif isinstance(exc, web.HTTPException):  # aiohttp's refusals of the body (413 …)
            metrics.count_buy("", "invalid", started)
        elif isinstance(exc, REDIS_DOWN):
            metrics.REDIS_ERRORS.inc()
            metrics.count_buy("", "unavailable", started)
        return error_answer(request, exc)
    metrics.count_buy(sale_id if sale_id in rt.known_sales else "", outcome, started)
    return response


def _answer(
    rt: Runtime, sale_id: str, generation: int, result: AdmitResult
) -> tuple[web.Response, str]:
    """(answer, outcome) for what admit.lua decided."""
    outcome = result.outcome
    if outcome is Admit.OK or outcome is Admit.REPLAY:
        if result.stock_left == 0:
            # exactly one admission takes the last unit: one log line per sell-out
            log.info("sale %s sold out", sale_id, extra={"sale_id": sale_id})
            rt.cache.mark_sold_out(sale_id, generation)
        return _accepted(sale_id, result), "admitted"
    if outcome is Admit.SOLD_OUT:
        if result.stock_left == 0:
            rt.cache.mark_sold_out(sale_id, generation)
        return _refusal(409, _SOLD_OUT), "sold_out"
    if outcome is Admit.RATE_LIMITED:
        metrics.count_rate_limited("cluster")
        retry_after = max(1, -(-result.retry_after_ms // 1000))
        return _refusal(429, _RATE_LIMITED, retry_after), "rate_limited"
    if outcome is Admit.UNKNOWN:
        return _outcome_unknown(result.order_id), "outcome_unknown"
    if outcome is Admit.OVERLOADED:
        refusal: errors.SeckillError = errors.Overloaded(retry_after=1)
    elif outcome is Admit.LATE:
        # the script's answer was lost, and Redis then showed that it did not
        # admit and never will: "unavailable" is the truth (docs/API.md §4)
        metrics.REDIS_ERRORS.inc()
        refusal = errors.Unavailable(retry_after=1)
    elif outcome is Admit.BAD_QUANTITY:
        refusal = errors.InvalidRequest("quantity is over the sale's per_user_limit.")
    else:
        refusal = _REFUSALS[outcome]()
    # returned, not raised: counted under its sale like the answers above
    response = error_response(refusal.status, refusal.code, refusal.message, refusal.retry_after)
    return response, _OUTCOME_OF[refusal.code]


def _outcome_unknown(order_id: str) -> web.Response:
    """503 ``outcome_unknown``: the buy may have been admitted as *order_id*."""
    metrics.REDIS_ERRORS.inc()
    message = (
        f"Redis did not answer in time: GET /api/v1/orders/{order_id} says whether this "
        "buy was admitted (200) or not (404, final)."
    )
    body = OutcomeUnknownError(errors.OutcomeUnknown.code, message, order_id)  # type: ignore[arg-type]
    return json_response(body, 503, {"Retry-After": "1"})


async def _is_replay(rt: Runtime, sale_id: str, user_id: str, idem: str) -> bool:
    """True when *idem* already maps to an order of this user in this sale.

    A retry of an admitted buy must get its order back (docs/API.md §4) even after
    the sale sold out, so the local sold-out flag may not answer it: one EXISTS
    here, and admit.lua then replays the order.
    """
    owner = await rt.scripts.user_owner(sale_id, user_id)  # the sale, or the user's bucket
    return bool(
        await rt.redis.exists(
            keys.idem(owner, user_id, idem), keys.legacy_idem(owner, user_id, idem)
        )
    )


_REFUSALS: dict[Admit, type[errors.SeckillError]] = {
    Admit.LIMIT_REACHED: errors.LimitReached,
    Admit.NOT_FOUND: errors.SaleNotFound,
    Admit.NOT_STARTED: errors.SaleNotStarted,
    Admit.ENDED: errors.SaleEnded,
}


@routes.get("/api/v1/orders/{order_id}")
async def get_order(request: web.Request) -> web.Response:
    order_id = request.match_info["order_id"]
    sale_id = keys.sale_of_order(order_id)
    if sale_id is None:
        raise errors.InvalidRequest("Malformed order_id.")
    user_id = request.app[IDENTIFY](request)
    rt = request.app[RUNTIME]
    owner = await rt.scripts.order_owner(order_id) or sale_id  # the sale, or its bucket
    order: dict[str, str] = await rt.redis.hgetall(keys.order(owner, order_id))  # type: ignore[assignment]
    if not order or order.get("user_id") != user_id:
        raise errors.OrderNotFound()
    return json_response(order_view(order))


@routes.get("/api/v1/sales/{sale_id}")
async def get_sale(request: web.Request) -> web.Response:
    sale_id = path_id(request, "sale_id")
    rt = request.app[RUNTIME]
    hit, sale = rt.cache.cached_view(sale_id)
    if not hit:
        sale = await rt.scripts.read_sale(sale_id)
        rt.cache.store_view(sale_id, sale)
    if sale is None:
        raise errors.SaleNotFound()
    return json_response(public_view(sale_id, sale, now_ms()))
