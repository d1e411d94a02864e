"""The error tree: each error carries its HTTP status and contract code.

Handlers raise these; one wrapper around every handler (``seckill.http.responses``)
turns them, and aiohttp's own HTTP exceptions, into
``{"error": code, "message": text}``.
"""

from __future__ import annotations


class SeckillError(Exception):
    status: int = 500
    code: str = "internal"
    message: str = "Internal error."

    def __init__(self, message: str | None = None, *, retry_after: int | None = None) -> None:
        super().__init__(message or self.message)
        if message:
            self.message = message
        self.retry_after = retry_after


class InvalidRequest(SeckillError):
    status, code, message = 400, "invalid_request", "The request is malformed."


class Unauthenticated(SeckillError):
    status, code, message = 401, "unauthenticated", "Missing or invalid credentials."


class SaleNotStarted(SeckillError):
    status, code, message = 403, "sale_not_started", "The sale has not started yet."


class SaleEnded(SeckillError):
    status, code, message = 403, "sale_ended", "The sale has ended."


class SaleNotFound(SeckillError):
    status, code, message = 404, "sale_not_found", "No such sale."


class OrderNotFound(SeckillError):
    status, code, message = 404, "order_not_found", "No such order."


class NotFound(SeckillError):
    status, code, message = 404, "not_found", "No such resource."


class MethodNotAllowed(SeckillError):
    status, code, message = 405, "method_not_allowed", "Method not allowed on this resource."


class SoldOut(SeckillError):
    status, code, message = 409, "sold_out", "Not enough stock left."


class LimitReached(SeckillError):
    status, code, message = 409, "limit_reached", "You already hold the most units allowed."


class StockConflict(SeckillError):
    status, code, message = 409, "stock_conflict", "Stock cannot go below what is already sold."


class BucketsImmutable(SeckillError):
    status, code, message = 409, "buckets_immutable", "A sale's buckets are fixed at creation."


class OrderNotCancellable(SeckillError):
    status, code, message = 409, "order_not_cancellable", "The order is already final."


class OrderNotUndetermined(SeckillError):
    status, code, message = 409, "order_not_undetermined", "The order is not undetermined."


class OrderExpired(SeckillError):
    status, code, message = 409, "order_expired", "The order's pay window is over."


class OrderNotPayable(SeckillError):
    status, code, message = 409, "order_not_payable", "Only a confirmed order can be paid."


class PayloadTooLarge(SeckillError):
    status, code, message = 413, "payload_too_large", "The request body is too large."


class RateLimited(SeckillError):
    status, code, message = 429, "rate_limited", "Too many requests; retry later."


class Overloaded(SeckillError):
    status, code, message = 503, "overloaded", "Too many orders waiting; retry later."


class Unavailable(SeckillError):
    status, code, message = 503, "unavailable", "The service is unavailable; retry later."


class OutcomeUnknown(SeckillError):
    """A buy whose script was sent but whose answer was lost, and Redis did
    not say in time whether it admitted (docs/API.md §4). Its body also
    carries the ``order_id`` the buy would have created
    (``seckill.schemas.OutcomeUnknownError``)."""

    status, code = 503, "outcome_unknown"
    message = "Redis did not answer in time: this buy may have been admitted."
