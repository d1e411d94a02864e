"""The OpenAPI 3.1 description of the HTTP contract (docs/API.md §2–§5).

Generated, not written: every body and answer is a Struct of
``seckill.schemas``, turned into ``components/schemas`` by
``msgspec.json.schema_components``; error codes come from
``seckill.http.errors``. What this module adds is the table of paths
(:func:`_operations`): per operation its summary, who may call it, its
parameters, its body and its answers. ``GET /openapi.json`` serves it;
``tests/api/test_openapi.py`` checks that it names exactly the app's routes
and runs schemathesis against a live gateway with it.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec
from msgspec import Struct

from seckill import __version__, schemas
from seckill.http import errors
from seckill.http.validate import CUSTOMER_BODY_LIMIT

Json = dict[str, Any]

SCHEMA_REF = "#/components/schemas/{name}"


def error_codes() -> list[str]:
    """Every contract error code, in the order of ``seckill.http.errors``."""
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


def _schema(struct: type[Struct]) -> Json:
    return _ref("schemas", struct.__name__)


def _json(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


RETRY_AFTER = {
    "description": "Seconds to wait before trying again (at least 1).",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}


def _error(
    description: str,
    *codes: str,
    retry_after: bool = False,
    bodies: tuple[type[Struct], ...] = (),
) -> Json:
    """An error answer whose ``error`` is one of *codes*; its body an ``Error``,
    or one of *bodies* (errors that say more)."""
    body = _schema(schemas.Error)
    if bodies:
        body = {"anyOf": [body, *(_schema(b) for b in bodies)]}
    response: Json = {
        "description": f"{description} (`{'` / `'.join(codes)}`).",
        "content": _json({"allOf": [body, {"properties": {"error": {"enum": list(codes)}}}]}),
    }
    if retry_after:
        response["headers"] = {"Retry-After": RETRY_AFTER}
    return response


def _ok(description: str, struct: type[Struct], **extra: Any) -> Json:
    return {"description": description, "content": _json(_schema(struct)), **extra}


#: the answers every route of a kind can give
BAD_REQUEST = _error("Malformed id, body or header", "invalid_request")
UNAUTHENTICATED = _error("No or bad identity", "unauthenticated")
ADMIN_UNAUTHENTICATED = _error("No or wrong admin token", "unauthenticated")
UNAVAILABLE = _error("Redis is unreachable", "unavailable", retry_after=True)
TOO_LARGE = _error("The body is too large", "payload_too_large")


def _not_found(*codes: str) -> Json:
    """404 for an unknown resource, or a path no route matches (``not_found``)."""
    return _error("No such resource", *codes, "not_found")


def _id_param(name: str, pattern: str, description: str, example: str) -> Json:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": f"^{pattern}$"},
        "example": example,
    }


SALE_ID = _id_param(
    "sale_id",
    schemas.ID_PATTERN,
    "A sale id: 1–64 of `A-Z a-z 0-9 _ . : -`, not starting with one of `_.:-`.",
    "demo",
)
ORDER_ID = _id_param(
    "order_id",
    schemas.ORDER_ID_PATTERN,
    "An order id: `<sale_id>.<16 url-safe characters>`, as a buy returned it.",
    "demo.AAAAAAAAAAAAAAAA",
)
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "1–64 printable ASCII characters; one key per user → at most one order.",
    "schema": {"type": "string", "pattern": f"^{schemas.IDEMPOTENCY_KEY_PATTERN}$"},
}

CUSTOMER: list[Json] = [{"userHeader": []}, {"userJwt": []}]
ADMIN: list[Json] = [{"adminToken": []}]
PUBLIC: list[Json] = []


def _operation(
    operation_id: str,
    tag: str,
    summary: str,
    security: list[Json],
    responses: Json,
    *,
    description: str | None = None,
    parameters: list[Json] | None = None,
    body: type[Struct] | None = None,
    body_required: bool = True,
    body_description: str | None = None,
) -> Json:
    op: Json = {"operationId": operation_id, "tags": [tag], "summary": summary}
    if description:
        op["description"] = description
    op["security"] = security
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": _json(_schema(body))}
        if body_description:
            op["requestBody"]["description"] = body_description
    op["responses"] = responses
    return op


def _operations() -> dict[str, dict[str, Json]]:
    """The table of paths: ``{path: {method: operation}}``."""
    sale_links = {
        "GetSale": {"operationId": "getSale", "parameters": {"sale_id": "$request.path.sale_id"}},
        "AdminGetSale": {
            "operationId": "adminGetSale",
            "parameters": {"sale_id": "$request.path.sale_id"},
        },
        "Buy": {"operationId": "buy", "parameters": {"sale_id": "$request.path.sale_id"}},
    }
    order_links = {
        "GetOrder": {
            "operationId": "getOrder",
            "parameters": {"order_id": "$response.body#/order_id"},
        },
        "CancelOrder": {
            "operationId": "cancelOrder",
            "parameters": {"order_id": "$response.body#/order_id"},
        },
    }
    location = {
        "Location": {
            "description": "`/api/v1/orders/{order_id}`.",
            "required": True,
            "schema": {"type": "string"},
        }
    }

    def public_get(operation_id: str, summary: str, responses: Json, tag: str = "ops") -> Json:
        return {"get": _operation(operation_id, tag, summary, PUBLIC, responses)}

    return {
        "/api/v1/sales/{sale_id}/orders": {
            "post": _operation(
                "buy",
                "customer",
                "Try to buy",
                CUSTOMER,
                description=(
                    "Admits the buy (202, the order is queued) or refuses it. A retry with the "
                    "same Idempotency-Key by the same user answers 202 with the original order."
                ),
                parameters=[SALE_ID, IDEMPOTENCY_KEY],
                body=schemas.BuyRequest,
                body_required=False,
                body_description=f"Optional, at most {CUSTOMER_BODY_LIMIT} bytes.",
                responses={
                    "202": _ok(
                        "Admitted (or an Idempotency-Key replay).",
                        schemas.Accepted,
                        headers=location,
                        links=order_links,
                    ),
                    "400": _error(
                        "Malformed sale id, body, quantity or Idempotency-Key", "invalid_request"
                    ),
                    "401": UNAUTHENTICATED,
                    "403": _error("Outside the sale window", "sale_not_started", "sale_ended"),
                    "404": _not_found("sale_not_found"),
                    "409": _error(
                        "Not enough stock, or the user's limit", "sold_out", "limit_reached"
                    ),
                    "413": _error(
                        f"The body is over {CUSTOMER_BODY_LIMIT} bytes", "payload_too_large"
                    ),
                    "429": _error("A token bucket said no", "rate_limited", retry_after=True),
                    "503": _error(
                        "The order backlog is over its bound; Redis is unreachable (the buy "
                        "was not admitted and never will be); or Redis did not say in time "
                        "whether it admitted the buy — the body then names the order it "
                        "would be, which GET /api/v1/orders/{order_id} shows if it was",
                        "overloaded",
                        "unavailable",
                        "outcome_unknown",
                        retry_after=True,
                        bodies=(schemas.OutcomeUnknownError,),
                    ),
                },
            )
        },
        "/api/v1/orders/{order_id}": {
            "get": _operation(
                "getOrder",
                "customer",
                "An order, as its own user sees it",
                CUSTOMER,
                description="Anyone but the order's user gets 404 `order_not_found`.",
                parameters=[ORDER_ID],
                responses={
                    "200": _ok("The order.", schemas.Order),
                    "400": BAD_REQUEST,
                    "401": UNAUTHENTICATED,
                    "404": _not_found("order_not_found"),
                    "503": UNAVAILABLE,
                },
            )
        },
        "/api/v1/sales/{sale_id}": {
            "get": _operation(
                "getSale",
                "customer",
                "The public view of a sale",
                PUBLIC,
                parameters=[SALE_ID],
                responses={
                    "200": _ok("The sale (up to 1 s stale).", schemas.SaleView),
                    "400": BAD_REQUEST,
                    "404": _not_found("sale_not_found"),
                    "503": UNAVAILABLE,
                },
            )
        },
        "/healthz": public_get(
            "healthz",
            "Liveness",
            {
                "200": _ok(
                    "The process runs, and so does its embedded Redis server (if any).",
                    schemas.Health,
                ),
                "503": _error(
                    "The embedded Redis server is down and being restarted",
                    "unavailable",
                    retry_after=True,
                ),
            },
        ),
        "/readyz": public_get(
            "readyz",
            "Readiness",
            {
                "200": _ok(
                    "The embedded server (if any) is up, both Redis clients answer and the "
                    "order workers run.",
                    schemas.Ready,
                ),
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
                "401": _error("With --metrics-token: no or wrong bearer token", "unauthenticated"),
                "503": UNAVAILABLE,
            },
        ),
        "/openapi.json": public_get(
            "openapi",
            "This document",
            {
                "200": {
                    "description": "The OpenAPI 3.1 description.",
                    "content": _json({"type": "object"}),
                }
            },
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
        "/admin/v1/sales": {
            "get": _operation(
                "listSales",
                "admin",
                "Every sale, in the admin view",
                ADMIN,
                responses={
                    "200": _ok("The sales.", schemas.SaleList),
                    "401": ADMIN_UNAUTHENTICATED,
                    "503": UNAVAILABLE,
                },
            )
        },
        "/admin/v1/sales/{sale_id}": {
            "get": _operation(
                "adminGetSale",
                "admin",
                "A sale with its order counts and backlog",
                ADMIN,
                parameters=[SALE_ID],
                responses={
                    "200": _ok("The sale.", schemas.AdminSaleView),
                    "400": BAD_REQUEST,
                    "401": ADMIN_UNAUTHENTICATED,
                    "404": _not_found("sale_not_found"),
                    "503": UNAVAILABLE,
                },
            ),
            "put": _operation(
                "putSale",
                "admin",
                "Create or update a sale",
                ADMIN,
                description=(
                    "At creation `stock` is required, `starts_at` null = now and `ends_at` null "
                    "= open-ended. On update `stock` is the new total and `stock_left` moves by "
                    "the difference; fields left out keep their values."
                ),
                parameters=[SALE_ID],
                body=schemas.SaleUpdate,
                responses={
                    "200": _ok("Updated.", schemas.AdminSaleView, links=sale_links),
                    "201": _ok("Created.", schemas.AdminSaleView, links=sale_links),
                    "400": _error(
                        "Malformed sale id or body, no stock at creation, ends_at not after "
                        "starts_at",
                        "invalid_request",
                    ),
                    "401": ADMIN_UNAUTHENTICATED,
                    "404": _ref("responses", "NotFound"),
                    "409": _error(
                        "The new stock is below what is already sold / buckets given differ "
                        "from the sale's",
                        "stock_conflict",
                        "buckets_immutable",
                    ),
                    "413": TOO_LARGE,
                    "503": UNAVAILABLE,
                },
            ),
        },
        "/admin/v1/orders/{order_id}/cancel": {
            "post": _operation(
                "cancelOrder",
                "admin",
                "Cancel an order",
                ADMIN,
                description="Its units go back to stock and the user may buy again.",
                parameters=[ORDER_ID],
                responses={
                    "200": _ok("The cancelled order.", schemas.Order),
                    "400": BAD_REQUEST,
                    "401": ADMIN_UNAUTHENTICATED,
                    "404": _not_found("order_not_found"),
                    "409": _error(
                        "The order is already cancelled or failed, or undetermined (settle it)",
                        "order_not_cancellable",
                    ),
                    "503": UNAVAILABLE,
                },
            )
        },
        "/admin/v1/orders": {
            "get": _operation(
                "listOrders",
                "admin",
                "The undetermined orders",
                ADMIN,
                description=(
                    "Orders whose delivery outcome stayed unknown past `--undetermined-after`: "
                    "their stock is held until an operator settles them. Oldest first per "
                    "sale, sales by id; at most 1000."
                ),
                parameters=[
                    {
                        "name": "status",
                        "in": "query",
                        "required": True,
                        "description": "The only status listed: `undetermined`.",
                        "schema": {"type": "string", "enum": ["undetermined"]},
                    },
                    {
                        "name": "sale_id",
                        "in": "query",
                        "required": False,
                        "description": "Only this sale's orders (default: every sale's).",
                        "schema": {"type": "string", "pattern": f"^{schemas.ID_PATTERN}$"},
                    },
                ],
                responses={
                    "200": _ok("The orders.", schemas.OrderList),
                    "400": _error("No or another status, malformed sale_id", "invalid_request"),
                    "401": ADMIN_UNAUTHENTICATED,
                    "503": UNAVAILABLE,
                },
            )
        },
        "/admin/v1/orders/{order_id}/settle": {
            "post": _operation(
                "settleOrder",
                "admin",
                "Settle an undetermined order",
                ADMIN,
                description=(
                    "`confirm`: the sink has the order, it becomes `confirmed`. `release`: it "
                    "has not, it becomes `failed` and its units go back to stock."
                ),
                parameters=[ORDER_ID],
                body=schemas.SettleRequest,
                responses={
                    "200": _ok("The settled order.", schemas.Order),
                    "400": BAD_REQUEST,
                    "401": ADMIN_UNAUTHENTICATED,
                    "404": _not_found("order_not_found"),
                    "409": _error("The order is not undetermined", "order_not_undetermined"),
                    "413": TOO_LARGE,
                    "503": UNAVAILABLE,
                },
            )
        },
        "/admin/v1/orders/{order_id}/paid": {
            "post": _operation(
                "payOrder",
                "admin",
                "Settle a confirmed order as paid",
                ADMIN,
                description=(
                    "confirmed → `paid`: it no longer expires at the end of its sale's pay "
                    "window. Repeated: 200 with the order, nothing changes."
                ),
                parameters=[ORDER_ID],
                responses={
                    "200": _ok("The paid order.", schemas.Order),
                    "400": BAD_REQUEST,
                    "401": ADMIN_UNAUTHENTICATED,
                    "404": _not_found("order_not_found"),
                    "409": _error(
                        "Its pay deadline has passed, or it is not confirmed (queued, "
                        "undetermined, failed, cancelled)",
                        "order_expired",
                        "order_not_payable",
                    ),
                    "503": UNAVAILABLE,
                },
            )
        },
        "/admin/v1/reconcile": {
            "post": _operation(
                "reconcile",
                "admin",
                "Check the books of a sale, or of every sale",
                ADMIN,
                description=(
                    "stock_total = stock left + units of live orders; each user's units = "
                    "their live orders; streams and pending entries; pay deadlines; the "
                    "sink's statuses = Redis's. `repair` fixes the safe cases."
                ),
                body=schemas.ReconcileRequest,
                responses={
                    "200": _ok("The reports (`ok` false: a finding).", schemas.Reconciliation),
                    "400": BAD_REQUEST,
                    "401": ADMIN_UNAUTHENTICATED,
                    "404": _not_found("sale_not_found"),
                    "413": TOO_LARGE,
                    "503": UNAVAILABLE,
                },
            )
        },
        "/admin/v1/limits": {
            "get": _operation(
                "getLimits",
                "admin",
                "The buy endpoint's token buckets",
                ADMIN,
                responses={
                    "200": _ok(
                        "The stored limits (all off when nothing is stored).", schemas.Limits
                    ),
                    "401": ADMIN_UNAUTHENTICATED,
                    "503": UNAVAILABLE,
                },
            ),
            "put": _operation(
                "putLimits",
                "admin",
                "Change the limits",
                ADMIN,
                description="Changes the fields given; every gateway process applies them in 1 s.",
                body=schemas.LimitsUpdate,
                responses={
                    "200": _ok("The whole stored object.", schemas.Limits),
                    "400": BAD_REQUEST,
                    "401": ADMIN_UNAUTHENTICATED,
                    "413": TOO_LARGE,
                    "503": UNAVAILABLE,
                },
            ),
        },
        "/admin/v1/stats": {
            "get": _operation(
                "getStats",
                "admin",
                "This gateway's counters, for the dashboard",
                ADMIN,
                description=(
                    "What every process of the answering gateway counted since it started. "
                    "Totals; rates are differences between two reads. No Redis call."
                ),
                responses={
                    "200": _ok("The counters.", schemas.Stats),
                    "401": ADMIN_UNAUTHENTICATED,
                },
            )
        },
    }


def _components(paths: dict[str, dict[str, Json]]) -> Json:
    """The schemas of every Struct the paths refer to, and what they refer to."""
    named = {
        name: struct
        for name, struct in vars(schemas).items()
        if isinstance(struct, type) and issubclass(struct, Struct) and struct is not Struct
    }
    used = {
        ref.rsplit("/", 1)[1] for ref in _refs(paths) if ref.startswith("#/components/schemas/")
    }
    _, found = msgspec.json.schema_components(
        [named[name] for name in sorted(used)], ref_template=SCHEMA_REF
    )
    # what JSON Schema cannot say from the types alone
    found["Error"]["properties"]["error"]["enum"] = error_codes()
    found["LimitsUpdate"]["minProperties"] = 1
    return {
        "schemas": dict(sorted(found.items())),
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


def _refs(node: Any) -> list[str]:
    """Every ``$ref`` under *node*."""
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


@functools.cache
def document() -> Json:
    """The whole OpenAPI document (built once; do not mutate)."""
    paths = _operations()
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
            {"name": "customer", "description": "Buy, follow an order, see a sale (§4)."},
            {"name": "admin", "description": "Sales, cancels, settles, limits and stats (§5)."},
            {"name": "ops", "description": "Health, readiness, metrics, this document."},
        ],
        "paths": paths,
        "components": _components(paths),
    }
