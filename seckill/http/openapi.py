"""The OpenAPI 3.1 description of the HTTP contract (docs/API.md §2–§5).

Hand-written as a Python dict so that its bounds and patterns come from the
code that enforces them (ids from ``seckill.keys``, error codes from
``seckill.errors``, limits from the routes); ``GET /openapi.json`` serves it
and ``tests/api/test_openapi.py`` checks that it names exactly the app's routes
and runs schemathesis against a live gateway with it.
"""

from __future__ import annotations

import functools
from typing import Any

from seckill import __version__, metrics
from seckill.core import limits
from seckill.core.views import ORDER_STATUSES
from seckill.http import errors
from seckill.http.routes.admin import MAX_LISTED_SALES, MAX_NAME, MAX_PER_USER_LIMIT, MAX_STOCK
from seckill.http.routes.customer import MAX_QUANTITY
from seckill.http.validate import CUSTOMER_BODY_LIMIT, IDEMPOTENCY_KEY_RE
from seckill.redis import keys

Json = dict[str, Any]

ID_PATTERN = f"^{keys.ID_PATTERN}$"
ORDER_ID_PATTERN = keys.ORDER_ID_RE.pattern
SALE_STATUSES = ("upcoming", "active", "sold_out", "ended")


def error_codes() -> list[str]:
    """Every contract error code, in the order of ``seckill.errors``."""
    codes: list[str] = []
    for cls in vars(errors).values():
        if (
            isinstance(cls, type)
            and issubclass(cls, errors.SeckillError)
            and cls is not errors.SeckillError
            and cls.code not in codes
        ):
            codes.append(cls.code)
    return codes


def _ref(kind: str, name: str) -> Json:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> Json:
    return _ref("schemas", name)


def _json(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


RETRY_AFTER = {
    "description": "Seconds to wait before trying again (at least 1).",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}


def _error(description: str, *codes: str, retry_after: bool = False) -> Json:
    """An error response whose ``error`` is one of *codes*."""
    response: Json = {
        "description": f"{description} (`{'` / `'.join(codes)}`).",
        "content": _json(
            {
                "allOf": [
                    _schema("Error"),
                    {"properties": {"error": {"enum": list(codes)}}},
                ]
            }
        ),
    }
    if retry_after:
        response["headers"] = {"Retry-After": RETRY_AFTER}
    return response


def _ok(description: str, schema: Json) -> Json:
    return {"description": description, "content": _json(schema)}


#: the answers every route of a kind can give
BAD_REQUEST = _error("Malformed id, body or header", "invalid_request")
UNAUTHENTICATED = _error("No or bad identity", "unauthenticated")
ADMIN_UNAUTHENTICATED = _error("No or wrong admin token", "unauthenticated")
UNAVAILABLE = _error("Redis is unreachable", "unavailable", retry_after=True)
TOO_LARGE = _error("The body is too large", "payload_too_large")


def _id_param(name: str, pattern: str, description: str, example: str) -> Json:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": pattern},
        "example": example,
    }


SALE_ID = _id_param(
    "sale_id",
    ID_PATTERN,
    "A sale id: 1–64 of `A-Z a-z 0-9 _ . : -`, not starting with one of `_.:-`.",
    "demo",
)
ORDER_ID = _id_param(
    "order_id",
    ORDER_ID_PATTERN,
    "An order id: `<sale_id>.<16 url-safe characters>`, as a buy returned it.",
    "demo.AAAAAAAAAAAAAAAA",
)

CUSTOMER_SECURITY: list[Json] = [{"userHeader": []}, {"userJwt": []}]
ADMIN_SECURITY: list[Json] = [{"adminToken": []}]
PUBLIC: list[Json] = []


def _components() -> Json:
    timestamp = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC."}
    nullable_timestamp = {
        "type": ["string", "null"],
        "format": "date-time",
        "description": "RFC 3339, UTC; null = open-ended.",
    }
    order_status = {"type": "string", "enum": list(ORDER_STATUSES)}
    sale_view: Json = {
        "sale_id": {"type": "string", "pattern": ID_PATTERN},
        "name": {"type": "string"},
        "status": {"type": "string", "enum": list(SALE_STATUSES)},
        "stock_total": {"type": "integer", "minimum": 0},
        "stock_left": {"type": "integer", "minimum": 0},
        "starts_at": timestamp,
        "ends_at": nullable_timestamp,
        "per_user_limit": {"type": "integer", "minimum": 1},
    }
    admin_view: Json = {
        **sale_view,
        "orders": {
            "type": "object",
            "description": "How many orders of the sale are in each status.",
            "properties": {s: {"type": "integer", "minimum": 0} for s in ORDER_STATUSES},
            "required": list(ORDER_STATUSES),
            "additionalProperties": False,
        },
        "backlog": {
            "type": "integer",
            "minimum": 0,
            "description": "Admitted orders not yet delivered to the sink.",
        },
    }
    rate = {
        "type": ["number", "null"],
        "minimum": limits.MIN_RATE,
        "maximum": limits.MAX_RATE,
        "description": "Requests per second; null = unlimited.",
    }
    burst = {"type": "integer", "minimum": 1, "maximum": limits.MAX_BURST}
    limit_fields = {
        "rate": rate,
        "burst": burst,
        "per_user_rate": rate,
        "per_user_burst": burst,
    }
    schemas: Json = {
        "Error": {
            "type": "object",
            "description": "Every non-2xx answer (docs/API.md §3).",
            "properties": {
                "error": {"type": "string", "enum": error_codes()},
                "message": {"type": "string", "description": "One sentence for a human."},
            },
            "required": ["error", "message"],
            "additionalProperties": False,
        },
        "BuyRequest": {
            "type": "object",
            "description": "Optional; no body buys one unit.",
            "properties": {
                "quantity": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_QUANTITY,
                    "default": 1,
                    "description": "1 ≤ quantity ≤ the sale's per_user_limit.",
                }
            },
        },
        "Accepted": {
            "type": "object",
            "description": "An admitted buy, or the replay of one (its current status).",
            "properties": {
                "order_id": {"type": "string", "pattern": ORDER_ID_PATTERN},
                "sale_id": {"type": "string", "pattern": ID_PATTERN},
                "quantity": {"type": "integer", "minimum": 1},
                "status": order_status,
            },
            "required": ["order_id", "sale_id", "quantity", "status"],
            "additionalProperties": False,
        },
        "Order": {
            "type": "object",
            "properties": {
                "order_id": {"type": "string", "pattern": ORDER_ID_PATTERN},
                "sale_id": {"type": "string", "pattern": ID_PATTERN},
                "user_id": {"type": "string", "pattern": ID_PATTERN},
                "quantity": {"type": "integer", "minimum": 1},
                "status": order_status,
                "created_at": timestamp,
            },
            "required": ["order_id", "sale_id", "user_id", "quantity", "status", "created_at"],
            "additionalProperties": False,
        },
        "SaleView": {
            "type": "object",
            "description": "The public view of a sale; may be up to 1 s stale.",
            "properties": sale_view,
            "required": list(sale_view),
            "additionalProperties": False,
        },
        "AdminSaleView": {
            "type": "object",
            "description": "The public view plus the order counts and the backlog.",
            "properties": admin_view,
            "required": list(admin_view),
            "additionalProperties": False,
        },
        "SaleList": {
            "type": "object",
            "description": f"Every sale, sorted by id; at most the first {MAX_LISTED_SALES}.",
            "properties": {
                "sales": {"type": "array", "items": _schema("AdminSaleView")},
                "truncated": {
                    "type": "boolean",
                    "description": "True when there are more sales than the list holds.",
                },
            },
            "required": ["sales", "truncated"],
            "additionalProperties": False,
        },
        "SaleUpdate": {
            "type": "object",
            "description": (
                "Create (stock required) or update (fields left out keep their values; "
                "stock is the new total)."
            ),
            "properties": {
                "name": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_NAME,
                    "description": "Default: the sale id.",
                },
                "stock": {"type": "integer", "minimum": 0, "maximum": MAX_STOCK},
                "starts_at": {
                    "type": ["string", "null"],
                    "format": "date-time",
                    "description": "RFC 3339 with an offset; null at creation = now.",
                },
                "ends_at": {
                    "type": ["string", "null"],
                    "format": "date-time",
                    "description": "RFC 3339 with an offset, after starts_at; null = open-ended.",
                },
                "per_user_limit": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_PER_USER_LIMIT,
                    "default": 1,
                },
            },
            "additionalProperties": False,
        },
        "Stats": _stats_schema(),
        "Limits": {
            "type": "object",
            "description": "The buy endpoint's token buckets, cluster-wide.",
            "properties": limit_fields,
            "required": list(limit_fields),
            "additionalProperties": False,
        },
        "LimitsUpdate": {
            "type": "object",
            "description": "The fields to change; at least one.",
            "properties": limit_fields,
            "minProperties": 1,
            "additionalProperties": False,
        },
    }
    return {
        "schemas": schemas,
        "responses": {
            "NotFound": _error("No route has this path", "not_found"),
            "MethodNotAllowed": {
                **_error("The path exists but not with this method", "method_not_allowed"),
                "headers": {
                    "Allow": {
                        "description": "The methods the path allows.",
                        "schema": {"type": "string"},
                    }
                },
            },
        },
        "securitySchemes": {
            "adminToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "`Authorization: Bearer $SECKILL_ADMIN_TOKEN` on every admin route.",
            },
            "userHeader": {
                "type": "apiKey",
                "in": "header",
                "name": "X-User-Id",
                "description": (
                    "The customer's id (`--auth header`, the default), set by an "
                    "authenticating edge."
                ),
            },
            "userJwt": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": (
                    "`--auth jwt`: HS256 with SECKILL_JWT_SECRET; user = `sub`, `exp` enforced."
                ),
            },
        },
    }


def _stats_schema() -> Json:
    count = {"type": "integer", "minimum": 0}

    def counts(*names: str) -> Json:
        return {
            "type": "object",
            "properties": {n: count for n in names},
            "required": list(names),
            "additionalProperties": False,
        }

    return {
        "type": "object",
        "description": "Counters of every process of the answering gateway since it started.",
        "properties": {
            "buys": counts(*metrics.OUTCOMES),
            "buys_by_sale": {
                "type": "object",
                "description": "Per sale ('' = not known to this gateway), per outcome.",
                "additionalProperties": {"type": "object", "additionalProperties": count},
            },
            "buy_latency": {
                "type": "object",
                "description": (
                    "The buy handler's latency histogram: cumulative counts per upper bound "
                    "(seconds), the last count for +Inf (all), and the sum of seconds."
                ),
                "properties": {
                    "bounds": {"type": "array", "items": {"type": "number"}},
                    "counts": {"type": "array", "items": count},
                    "sum": {"type": "number", "minimum": 0},
                },
                "required": ["bounds", "counts", "sum"],
                "additionalProperties": False,
            },
            "deliveries": counts("confirmed", "attempt_failed", "failed"),
            "rate_limited": counts("local", "cluster"),
            "redis_errors": count,
            "workers": counts("running", "busy"),
            "queue_depth": count,
        },
        "required": [
            "buys",
            "buys_by_sale",
            "buy_latency",
            "deliveries",
            "rate_limited",
            "redis_errors",
            "workers",
            "queue_depth",
        ],
        "additionalProperties": False,
    }


def _status(value: str) -> Json:
    return {
        "type": "object",
        "properties": {"status": {"const": value}},
        "required": ["status"],
        "additionalProperties": False,
    }


def _not_found(*codes: str) -> Json:
    """404 for an unknown resource, or a path no route matches (``not_found``)."""
    return _error("No such resource", *codes, "not_found")


def _paths() -> Json:
    not_found = _ref("responses", "NotFound")
    buy = {
        "operationId": "buy",
        "tags": ["customer"],
        "summary": "Try to buy",
        "description": (
            "Admits the buy (202, the order is queued) or refuses it. A retry with the same "
            "Idempotency-Key by the same user answers 202 with the original order."
        ),
        "security": CUSTOMER_SECURITY,
        "parameters": [
            SALE_ID,
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": (
                    "1–64 printable ASCII characters; one key per user → at most one order."
                ),
                "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_RE.pattern},
            },
        ],
        "requestBody": {
            "required": False,
            "description": f"Optional, at most {CUSTOMER_BODY_LIMIT} bytes.",
            "content": _json(_schema("BuyRequest")),
        },
        "responses": {
            "202": {
                "description": "Admitted (or an Idempotency-Key replay).",
                "headers": {
                    "Location": {
                        "description": "`/api/v1/orders/{order_id}`.",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                },
                "content": _json(_schema("Accepted")),
                "links": {
                    "GetOrder": {
                        "operationId": "getOrder",
                        "parameters": {"order_id": "$response.body#/order_id"},
                    },
                    "CancelOrder": {
                        "operationId": "cancelOrder",
                        "parameters": {"order_id": "$response.body#/order_id"},
                    },
                },
            },
            "400": _error(
                "Malformed sale id, body, quantity or Idempotency-Key", "invalid_request"
            ),
            "401": UNAUTHENTICATED,
            "403": _error("Outside the sale window", "sale_not_started", "sale_ended"),
            "404": _not_found("sale_not_found"),
            "409": _error("Not enough stock, or the user's limit", "sold_out", "limit_reached"),
            "413": _error(f"The body is over {CUSTOMER_BODY_LIMIT} bytes", "payload_too_large"),
            "429": _error("A token bucket said no", "rate_limited", retry_after=True),
            "503": _error(
                "The order backlog is over its bound, or Redis is unreachable",
                "overloaded",
                "unavailable",
                retry_after=True,
            ),
        },
    }
    get_order = {
        "operationId": "getOrder",
        "tags": ["customer"],
        "summary": "An order, as its own user sees it",
        "description": "Anyone but the order's user gets 404 `order_not_found`.",
        "security": CUSTOMER_SECURITY,
        "parameters": [ORDER_ID],
        "responses": {
            "200": _ok("The order.", _schema("Order")),
            "400": BAD_REQUEST,
            "401": UNAUTHENTICATED,
            "404": _not_found("order_not_found"),
            "503": UNAVAILABLE,
        },
    }
    get_sale = {
        "operationId": "getSale",
        "tags": ["customer"],
        "summary": "The public view of a sale",
        "security": PUBLIC,
        "parameters": [SALE_ID],
        "responses": {
            "200": _ok("The sale (up to 1 s stale).", _schema("SaleView")),
            "400": BAD_REQUEST,
            "404": _not_found("sale_not_found"),
            "503": UNAVAILABLE,
        },
    }
    admin_get_sale = {
        "operationId": "adminGetSale",
        "tags": ["admin"],
        "summary": "A sale with its order counts and backlog",
        "security": ADMIN_SECURITY,
        "parameters": [SALE_ID],
        "responses": {
            "200": _ok("The sale.", _schema("AdminSaleView")),
            "400": BAD_REQUEST,
            "401": ADMIN_UNAUTHENTICATED,
            "404": _not_found("sale_not_found"),
            "503": UNAVAILABLE,
        },
    }
    sale_links = {
        "GetSale": {"operationId": "getSale", "parameters": {"sale_id": "$request.path.sale_id"}},
        "AdminGetSale": {
            "operationId": "adminGetSale",
            "parameters": {"sale_id": "$request.path.sale_id"},
        },
        "Buy": {"operationId": "buy", "parameters": {"sale_id": "$request.path.sale_id"}},
    }
    put_sale = {
        "operationId": "putSale",
        "tags": ["admin"],
        "summary": "Create or update a sale",
        "description": (
            "At creation `stock` is required, `starts_at` null = now and `ends_at` null = "
            "open-ended. On update `stock` is the new total and `stock_left` moves by the "
            "difference; fields left out keep their values."
        ),
        "security": ADMIN_SECURITY,
        "parameters": [SALE_ID],
        "requestBody": {"required": True, "content": _json(_schema("SaleUpdate"))},
        "responses": {
            "200": {**_ok("Updated.", _schema("AdminSaleView")), "links": sale_links},
            "201": {**_ok("Created.", _schema("AdminSaleView")), "links": sale_links},
            "400": _error(
                "Malformed sale id or body, no stock at creation, ends_at not after starts_at",
                "invalid_request",
            ),
            "401": ADMIN_UNAUTHENTICATED,
            "404": not_found,
            "409": _error("The new stock is below what is already sold", "stock_conflict"),
            "413": TOO_LARGE,
            "503": UNAVAILABLE,
        },
    }
    list_sales = {
        "operationId": "listSales",
        "tags": ["admin"],
        "summary": "Every sale, in the admin view",
        "security": ADMIN_SECURITY,
        "responses": {
            "200": _ok("The sales.", _schema("SaleList")),
            "401": ADMIN_UNAUTHENTICATED,
            "503": UNAVAILABLE,
        },
    }
    cancel = {
        "operationId": "cancelOrder",
        "tags": ["admin"],
        "summary": "Cancel an order",
        "description": "Its units go back to stock and the user may buy again.",
        "security": ADMIN_SECURITY,
        "parameters": [ORDER_ID],
        "responses": {
            "200": _ok("The cancelled order.", _schema("Order")),
            "400": BAD_REQUEST,
            "401": ADMIN_UNAUTHENTICATED,
            "404": _not_found("order_not_found"),
            "409": _error("The order is already cancelled or failed", "order_not_cancellable"),
            "503": UNAVAILABLE,
        },
    }
    get_stats = {
        "operationId": "getStats",
        "tags": ["admin"],
        "summary": "This gateway's counters, for the dashboard",
        "description": (
            "What every process of the answering gateway counted since it started: buys by "
            "outcome (and by sale), the buy latency histogram, deliveries, rate limiting by "
            "layer, workers and queue. Totals; rates are differences between two reads. "
            "No Redis call."
        ),
        "security": ADMIN_SECURITY,
        "responses": {
            "200": _ok("The counters.", _schema("Stats")),
            "401": ADMIN_UNAUTHENTICATED,
        },
    }
    get_limits = {
        "operationId": "getLimits",
        "tags": ["admin"],
        "summary": "The buy endpoint's token buckets",
        "security": ADMIN_SECURITY,
        "responses": {
            "200": _ok("The stored limits (all off when nothing is stored).", _schema("Limits")),
            "401": ADMIN_UNAUTHENTICATED,
            "503": UNAVAILABLE,
        },
    }
    put_limits = {
        "operationId": "putLimits",
        "tags": ["admin"],
        "summary": "Change the limits",
        "description": "Changes the fields given; every gateway process applies it within 1 s.",
        "security": ADMIN_SECURITY,
        "requestBody": {"required": True, "content": _json(_schema("LimitsUpdate"))},
        "responses": {
            "200": _ok("The whole stored object.", _schema("Limits")),
            "400": BAD_REQUEST,
            "401": ADMIN_UNAUTHENTICATED,
            "413": TOO_LARGE,
            "503": UNAVAILABLE,
        },
    }

    def public_get(operation_id: str, summary: str, responses: Json, tag: str = "ops") -> Json:
        return {
            "get": {
                "operationId": operation_id,
                "tags": [tag],
                "summary": summary,
                "security": PUBLIC,
                "responses": responses,
            }
        }

    return {
        "/api/v1/sales/{sale_id}/orders": {"post": buy},
        "/api/v1/orders/{order_id}": {"get": get_order},
        "/api/v1/sales/{sale_id}": {"get": get_sale},
        "/healthz": public_get(
            "healthz", "Liveness", {"200": _ok("The process runs.", _status("ok"))}
        ),
        "/readyz": public_get(
            "readyz",
            "Readiness",
            {
                "200": _ok("Redis answers and the order workers run.", _status("ready")),
                "503": _error("Not ready", "unavailable", retry_after=True),
            },
        ),
        "/metrics": public_get(
            "metrics",
            "Prometheus metrics of every gateway process",
            {
                "200": {
                    "description": "Prometheus text exposition format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "503": UNAVAILABLE,
            },
        ),
        "/openapi.json": public_get(
            "openapi",
            "This document",
            {"200": _ok("The OpenAPI 3.1 description.", {"type": "object"})},
        ),
        "/dashboard": public_get(
            "dashboard",
            "The operators' live page",
            {
                "200": {
                    "description": (
                        "An HTML page holding no data: it asks for the admin token (or takes "
                        "`?token=`) and reads the admin API with it. Its scripts and styles are "
                        "served under `/dashboard/<file>`."
                    ),
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
            tag="admin",
        ),
        "/admin/v1/sales": {"get": list_sales},
        "/admin/v1/sales/{sale_id}": {"get": admin_get_sale, "put": put_sale},
        "/admin/v1/orders/{order_id}/cancel": {"post": cancel},
        "/admin/v1/limits": {"get": get_limits, "put": put_limits},
        "/admin/v1/stats": {"get": get_stats},
    }


@functools.cache
def document() -> Json:
    """The whole OpenAPI document (built once; do not mutate)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "seckill",
            "version": __version__,
            "summary": "A flash-sale gateway: sells exactly the stock, answers everyone fast.",
            "description": (
                "Every non-2xx answer, 404 and 405 included, is JSON "
                '`{"error": "<code>", "message": "<one sentence>"}`; 429 and 503 carry '
                "`Retry-After`. A path no route matches answers 404 `not_found` "
                "(components/responses/NotFound); a known path with a method it does not "
                "allow answers 405 `method_not_allowed` with `Allow` "
                "(components/responses/MethodNotAllowed)."
            ),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [
            {
                "name": "customer",
                "description": "Buy, follow an order, see a sale (docs/API.md §4).",
            },
            {"name": "admin", "description": "Sales, cancels and rate limits (docs/API.md §5)."},
            {"name": "ops", "description": "Health, readiness, metrics, this document."},
        ],
        "paths": _paths(),
        "components": _components(),
    }
