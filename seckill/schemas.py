"""The one set of typed definitions of the contract (docs/API.md §2, §4, §5).

Request bodies, the views the API answers with, the stored limits and the
dashboard's stats are msgspec ``Struct``s, with their bounds beside their
fields. From this one place:

- the routes decode and validate a body in one C call
  (:func:`decode`), and encode their answers;
- the CLI checks what it is about to send;
- ``seckill.http.openapi`` generates the OpenAPI components
  (``msgspec.json.schema_components``) and adds only the table of paths.

msgspec rather than pydantic: it decoded and validated a buy body faster
than the hand checks it replaced, and pydantic several times slower; it
encodes an answer as fast as orjson did (docs/performance.md, "one schema
source"). The buy path decodes a body only when one is sent.

This module imports nothing of seckill: every layer may use it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar, get_args

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

# -- bounds -------------------------------------------------------------------------

#: a user or sale id (docs/API.md §2)
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"
#: the random part of an order id: 16 url-safe characters, never a dot
ORDER_TOKEN_PATTERN = r"[A-Za-z0-9_-]{16}"
#: an order id is ``<sale_id>.<token>``: it carries its sale (its Redis slot)
ORDER_ID_PATTERN = rf"({ID_PATTERN})\.({ORDER_TOKEN_PATTERN})"
#: the Idempotency-Key header: 1-64 printable ASCII characters
IDEMPOTENCY_KEY_PATTERN = r"[\x21-\x7e]{1,64}"
#: quantity is capped by the sale's per_user_limit inside admit.lua; this
#: bound only keeps absurd numbers out of Redis
MAX_QUANTITY = 1_000_000
#: stays exact in Lua's doubles (2^53) with room to spare
MAX_STOCK = 10**12
MAX_PER_USER_LIMIT = 1_000_000
#: a sale's stock on at most this many buckets (shards), each with its own hash tag
MAX_BUCKETS = 64
MAX_NAME = 200
#: a sale's pay window: 1 s to 30 days (issue 15)
MAX_PAY_WINDOW_S = 30 * 86_400
#: rates in requests/s: one request in 1000 s is the slowest (slower is no
#: rate limit but a closed sale)
MIN_RATE, MAX_RATE = 0.001, 1e9
MAX_BURST = 1_000_000_000
#: ``GET /admin/v1/sales`` lists at most this many sales (the first by id)
MAX_LISTED_SALES = 1000
#: orders one GET /admin/v1/orders answers at most
MAX_LISTED_ORDERS = 1000

# -- field types ----------------------------------------------------------------------

Id = Annotated[str, Meta(pattern=f"^{ID_PATTERN}$")]
OrderId = Annotated[str, Meta(pattern=f"^{ORDER_ID_PATTERN}$")]
Count = Annotated[int, Meta(ge=0)]
Timestamp = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
Quantity = Annotated[int, Meta(ge=1, le=MAX_QUANTITY)]
Stock = Annotated[int, Meta(ge=0, le=MAX_STOCK)]
PerUserLimit = Annotated[int, Meta(ge=1, le=MAX_PER_USER_LIMIT)]
Buckets = Annotated[
    int,
    Meta(
        ge=1,
        le=MAX_BUCKETS,
        description="Shards the sale's stock is spread over (default 1); fixed at creation.",
    ),
]
Name = Annotated[str, Meta(min_length=1, max_length=MAX_NAME)]
PayWindow = Annotated[
    int,
    Meta(
        ge=1,
        le=MAX_PAY_WINDOW_S,
        description="Seconds a confirmed order has to be paid before it expires and its "
        "units go back on sale; null = no pay window.",
    ),
]
Rate = Annotated[
    float, Meta(ge=MIN_RATE, le=MAX_RATE, description="Requests per second; null = unlimited.")
]
Burst = Annotated[int, Meta(ge=1, le=MAX_BURST)]
#: an RFC 3339 timestamp with an offset, as a client sends it (checked by
#: ``seckill.timefmt.parse_rfc3339`` after decoding)
ClientTimestamp = Annotated[
    str, Meta(extra_json_schema={"format": "date-time"}, description="RFC 3339 with an offset.")
]

OrderStatus = Literal[
    "queued", "confirmed", "failed", "cancelled", "undetermined", "paid", "expired"
]
#: how an operator settles an undetermined order (docs/API.md §5)
SettleOutcome = Literal["confirm", "release"]
SaleStatus = Literal["upcoming", "active", "sold_out", "ended"]
#: every answer to a buy, as counted by ``seckill_buy_requests_total`` (§4)
Outcome = Literal[
    "admitted",
    "sold_out",
    "limit_reached",
    "rate_limited",
    "invalid",
    "unauthenticated",
    "not_found",
    "not_active",
    "unavailable",
    "overloaded",
    "outcome_unknown",
]
ORDER_STATUSES: tuple[str, ...] = get_args(OrderStatus)
SALE_STATUSES: tuple[str, ...] = get_args(SaleStatus)
OUTCOMES: tuple[str, ...] = get_args(Outcome)
DELIVERY_RESULTS = ("confirmed", "attempt_failed", "failed")
RATE_LIMIT_LAYERS = ("local", "cluster")

# -- request bodies ---------------------------------------------------------------------


class BuyRequest(Struct):
    """Optional; no body buys one unit. Other fields are ignored."""

    quantity: Annotated[Quantity, Meta(description="1 ≤ quantity ≤ the sale's per_user_limit.")] = 1


StartsAt = Annotated[ClientTimestamp, Meta(description="null at creation = now.")]
EndsAt = Annotated[ClientTimestamp, Meta(description="After starts_at; null = open-ended.")]


class SaleUpdate(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Create (stock required) or update (fields left out keep their values;
    stock is the new total)."""

    name: Annotated[Name, Meta(description="Default: the sale id.")] | UnsetType = UNSET
    stock: Stock | UnsetType = UNSET
    starts_at: StartsAt | UnsetType | None = UNSET
    ends_at: EndsAt | UnsetType | None = UNSET
    per_user_limit: Annotated[PerUserLimit, Meta(description="Default 1.")] | UnsetType = UNSET
    buckets: Buckets | UnsetType = UNSET
    pay_window_s: PayWindow | UnsetType | None = UNSET


class SettleRequest(Struct, forbid_unknown_fields=True):
    """How the operator settles an undetermined order."""

    outcome: Annotated[
        SettleOutcome,
        Meta(
            description="confirm: the sink has the order. release: it has not; its units "
            "go back to stock."
        ),
    ]


class ReconcileRequest(Struct, forbid_unknown_fields=True):
    """Which sale to reconcile, and whether to repair the safe cases (issue 15)."""

    sale_id: Annotated[Id, Meta(description="Default: every sale.")] | None = None
    repair: Annotated[
        bool,
        Meta(
            description="Fix the safe cases: deadline set, overdue expiries, lost stream "
            "entries, sink statuses."
        ),
    ] = False


class LimitsUpdate(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The fields to change; at least one."""

    rate: Rate | UnsetType | None = UNSET
    burst: Burst | UnsetType = UNSET
    per_user_rate: Rate | UnsetType | None = UNSET
    per_user_burst: Burst | UnsetType = UNSET


# -- answers ----------------------------------------------------------------------------


class Limits(Struct, frozen=True, forbid_unknown_fields=True):
    """The buy endpoint's token buckets, cluster-wide: rates in requests/s
    (None = unlimited), bursts in tokens. All off when nothing is stored."""

    rate: Rate | None = None
    burst: Burst = 1
    per_user_rate: Rate | None = None
    per_user_burst: Burst = 1


UNLIMITED = Limits()


class Accepted(Struct, forbid_unknown_fields=True):
    """An admitted buy, or the replay of one (its current status)."""

    order_id: OrderId
    sale_id: Id
    quantity: Annotated[int, Meta(ge=1)]
    status: OrderStatus


class Order(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """An order, as its own user (or an operator) sees it."""

    order_id: OrderId
    sale_id: Id
    user_id: Id
    quantity: Annotated[int, Meta(ge=1)]
    status: OrderStatus
    created_at: Annotated[Timestamp, Meta(description="RFC 3339, UTC.")]
    pay_deadline: (
        Annotated[
            Timestamp,
            Meta(
                description="RFC 3339, UTC: a confirmed order of a sale with a pay window "
                "expires unless paid by then. Absent otherwise."
            ),
        ]
        | None
    ) = None


class OrderList(Struct, forbid_unknown_fields=True):
    """Orders, oldest first per sale, sales sorted by id; at most ``MAX_LISTED_ORDERS``."""

    orders: list[Order]
    truncated: Annotated[
        bool, Meta(description="True when there are more orders than the list holds.")
    ]


class SaleView(Struct, forbid_unknown_fields=True):
    """The public view of a sale; may be up to 1 s stale."""

    sale_id: Id
    name: str
    status: SaleStatus
    stock_total: Count
    stock_left: Count
    starts_at: Annotated[Timestamp, Meta(description="RFC 3339, UTC.")]
    ends_at: Annotated[Timestamp, Meta(description="RFC 3339, UTC; null = open-ended.")] | None
    per_user_limit: Annotated[int, Meta(ge=1)]


def _counts(name: str, names: tuple[str, ...], doc: str) -> type[Struct]:
    """A Struct of one count per name: the field list comes from the tuple."""
    struct: type[Struct] = msgspec.defstruct(
        name, [(n, Count) for n in names], forbid_unknown_fields=True
    )
    struct.__doc__ = doc
    return struct


OrderCounts = _counts(
    "OrderCounts", ORDER_STATUSES, "How many orders of the sale are in each status."
)


class AdminSaleView(SaleView):
    """The public view plus the order counts and the backlog."""

    orders: OrderCounts  # type: ignore[valid-type]
    backlog: Annotated[Count, Meta(description="Admitted orders not yet delivered to the sink.")]
    buckets: Annotated[int, Meta(ge=1, le=MAX_BUCKETS)] = 1
    pay_window_s: Annotated[int, Meta(ge=1)] | None = None


class ReconcileCheck(Struct, forbid_unknown_fields=True):
    name: str
    ok: bool
    detail: str


class SaleReconciliation(Struct, forbid_unknown_fields=True):
    sale_id: Id
    ok: bool
    drift: Annotated[
        int, Meta(description="stock_total − stock left − units held by live orders (0).")
    ]
    checks: list[ReconcileCheck]
    repaired: list[str]


class Reconciliation(Struct, forbid_unknown_fields=True):
    """The books of each sale checked (``seckill reconcile``)."""

    ok: bool
    sales: list[SaleReconciliation]


class SaleList(Struct, forbid_unknown_fields=True):
    """Every sale, sorted by id; at most the first ``MAX_LISTED_SALES``."""

    sales: list[AdminSaleView]
    truncated: Annotated[
        bool, Meta(description="True when there are more sales than the list holds.")
    ]


class Error(Struct, forbid_unknown_fields=True):
    """Every non-2xx answer (docs/API.md §3)."""

    error: str
    message: Annotated[str, Meta(description="One sentence for a human.")]


class OutcomeUnknownError(Struct, forbid_unknown_fields=True):
    """503 ``outcome_unknown`` to a buy (docs/API.md §4): its order may exist.
    ``GET /api/v1/orders/{order_id}`` says: 200 = admitted; 404 = not admitted,
    and it never will be."""

    error: Literal["outcome_unknown"]
    message: Annotated[str, Meta(description="One sentence for a human.")]
    order_id: Annotated[OrderId, Meta(description="The order this buy would have created.")]


class Health(Struct, forbid_unknown_fields=True):
    status: Literal["ok"]


class Ready(Struct, forbid_unknown_fields=True):
    status: Literal["ready"]


BuyCounts = _counts("BuyCounts", OUTCOMES, "Answered buys by outcome.")
DeliveryCounts = _counts("DeliveryCounts", DELIVERY_RESULTS, "Deliveries to the sink by result.")
RateLimitCounts = _counts("RateLimitCounts", RATE_LIMIT_LAYERS, "429s by the bucket that said no.")


class Histogram(Struct, forbid_unknown_fields=True):
    """Cumulative counts per upper bound (seconds), the last one for +Inf
    (every observation), and the sum of the observed seconds."""

    bounds: list[float]
    counts: list[Count]
    sum: Annotated[float, Meta(ge=0)]


class Workers(Struct, forbid_unknown_fields=True):
    running: Count
    busy: Count


class Stats(Struct, forbid_unknown_fields=True):
    """Counters of every process of the answering gateway since it started
    (``GET /admin/v1/stats``); rates are differences between two reads."""

    buys: BuyCounts  # type: ignore[valid-type]
    buys_by_sale: Annotated[
        dict[str, dict[str, Count]],
        Meta(description="Per sale ('' = not known to this gateway yet), per outcome."),
    ]
    buy_latency: Annotated[Histogram, Meta(description="The buy handler's latency.")]
    deliveries: DeliveryCounts  # type: ignore[valid-type]
    rate_limited: RateLimitCounts  # type: ignore[valid-type]
    redis_errors: Count
    workers: Workers
    queue_depth: Count


# -- decoding ---------------------------------------------------------------------------

S = TypeVar("S", bound=Struct)

_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


class SchemaError(ValueError):
    """A body does not fit its schema; the message is one sentence for the client."""


def decode(raw: bytes, kind: type[S]) -> S:
    """*raw* JSON as a valid *kind*; SchemaError with msgspec's reason otherwise."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        result: S = decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise SchemaError(f"The body does not fit: {exc}.") from None
    except msgspec.DecodeError:
        raise SchemaError("The body is not valid JSON.") from None
    return result


def to_builtins(value: Any) -> Any:
    """A Struct (or anything msgspec encodes) as plain dicts and lists."""
    return msgspec.to_builtins(value)


encode = msgspec.json.Encoder().encode
