"""Every Redis key and channel name seckill uses, in one place.

All keys of one sale carry the hash tag ``{sale_id}`` so that every script
touches a single cluster slot. Order ids start with their sale id
(``<sale_id>.<token>``), so an order lookup finds its slot from the id alone.
A sale with buckets (issue 13) also has one tag per bucket (``S/k``, below);
its order ids name their bucket in the token (``seckill.redis.scripts``).
"""

from __future__ import annotations

import re

from seckill.schemas import ID_PATTERN, ORDER_ID_PATTERN

PREFIX = "seckill"

#: pub/sub channel on which processes announce restocks and limit changes.
EVENTS_CHANNEL = f"{PREFIX}:events"
#: set of every sale id ever created (the order reader walks it).
SALES_INDEX = f"{PREFIX}:sales"
#: hash of the cluster-wide token-bucket limits.
LIMITS = f"{PREFIX}:limits"
#: sorted set: live gateway process -> last heartbeat (unix seconds).
GATEWAYS = f"{PREFIX}:gateways"

ID_RE = re.compile(f"^{ID_PATTERN}$")
ORDER_ID_RE = re.compile(f"^{ORDER_ID_PATTERN}$")


def valid_id(value: str) -> bool:
    """True when *value* is a well-formed user or sale id (docs/API.md §2)."""
    return ID_RE.match(value) is not None


def sale_of_order(order_id: str) -> str | None:
    """The sale id an order id belongs to, or None when the id is malformed."""
    m = ORDER_ID_RE.match(order_id)
    return m.group(1) if m else None


def sale(sale_id: str) -> str:
    """Hash: name, stock_total, stock_left, window, per_user_limit, counters."""
    return f"{PREFIX}:{{{sale_id}}}:sale"


def units(sale_id: str) -> str:
    """Hash: user id -> units that user holds in the sale (queued or confirmed)."""
    return f"{PREFIX}:{{{sale_id}}}:units"


def idem(sale_id: str, user_id: str, key: str) -> str:
    """String: the order id an Idempotency-Key of one user maps to (with a TTL).

    ``…:idemkey:<length of the user id>:<user id>:<key>``: the length says
    where the user id ends, so no two (user, key) pairs share a Redis key even
    though both may contain ``:`` (user ``a`` with key ``b:c`` is
    ``…:1:a:b:c``, user ``a:b`` with key ``c`` is ``…:3:a:b:c``). The segment
    name differs from the old layout's (:func:`legacy_idem`), so no key of
    one layout can be read as a key of the other.
    """
    return f"{PREFIX}:{{{sale_id}}}:idemkey:{len(user_id)}:{user_id}:{key}"


def legacy_idem(sale_id: str, user_id: str, key: str) -> str:
    """The Idempotency-Key layout of versions before issue 12, ambiguous
    (``…:idem:<user>:<key>``: user ``a`` with key ``b:c`` and user ``a:b``
    with key ``c`` share it). Only read, by admit.lua, and only honoured when
    the order it names belongs to the asking user: a buy retried across the
    upgrade still gets its order. These keys expire by their TTL
    (``Settings.idempotency_ttl``, 24 h); once that long has passed after an upgrade,
    none is left.
    """
    return f"{PREFIX}:{{{sale_id}}}:idem:{user_id}:{key}"


def order(sale_id: str, order_id: str) -> str:
    """Hash: order_id, sale_id, user_id, quantity, status, created_at (ms)."""
    return f"{PREFIX}:{{{sale_id}}}:order:{order_id}"


def stream(sale_id: str) -> str:
    """Stream: the durable queue of admitted orders of the sale."""
    return f"{PREFIX}:{{{sale_id}}}:orders"


def undetermined(sale_id: str) -> str:
    """Sorted set: order ids of the sale parked as undetermined -> when (ms)."""
    return f"{PREFIX}:{{{sale_id}}}:undetermined"


def pay_deadlines(sale_id: str) -> str:
    """Sorted set: confirmed orders of a sale with a pay window -> their pay
    deadline (ms); the sweeper expires those past it (issue 15). Per bucket
    tag for a sale with buckets (each bucket is its own slot)."""
    return f"{PREFIX}:{{{sale_id}}}:pay_deadlines"


def sweeper_lock(sale_id: str) -> str:
    """The pay-window sweeper's lock of one sale or bucket (its slot)."""
    return f"{PREFIX}:{{{sale_id}}}:sweeper"


def reconciled(sale_id: str) -> str:
    """String with a TTL: the periodic reconciler checked the sale this period."""
    return f"{PREFIX}:{{{sale_id}}}:reconciled"


def bucket(sale_id: str) -> str:
    """Hash: the sale's cluster-wide token bucket (tokens, ts)."""
    return f"{PREFIX}:{{{sale_id}}}:bucket"


def user_bucket(sale_id: str, user_id: str) -> str:
    """Hash: one user's token bucket in the sale."""
    return f"{PREFIX}:{{{sale_id}}}:ubucket:{user_id}"


# -- buckets (issue 13): one sale on several shards ------------------------------------
#
# A sale created with ``buckets`` N > 1 keeps its home hash (``sale(S)``: the
# metadata and the central ``pool``) and N buckets, each under a hash tag of
# its own, ``S/<k>`` or ``S/<k>.<salt>`` (the salt moves it to another
# cluster slot). ``/`` is not allowed in a sale id, so no bucket tag is a sale
# id and no bucket's keys are another sale's. A bucket's keys are the keys
# above with its tag in place of the sale id (``sale(tag)`` is the bucket's
# hash: its stock_left and counters), so every per-order script runs on a
# bucket unchanged.

#: between a sale id and its bucket number in a bucket tag (never in an id)
BUCKET_SEP = "/"


def bucket_tag(sale_id: str, k: int, salt: int = 0) -> str:
    """The hash tag of bucket *k* of a sale: ``S/k``, or ``S/k.salt``."""
    return f"{sale_id}{BUCKET_SEP}{k}" if salt == 0 else f"{sale_id}{BUCKET_SEP}{k}.{salt}"


def sale_of_tag(tag: str) -> str:
    """The sale id of a key owner: a sale id itself, or a bucket tag's sale."""
    return tag.partition(BUCKET_SEP)[0]


def is_bucket_tag(member: str) -> bool:
    return BUCKET_SEP in member


def xfer_out(owner: str) -> str:
    """Hash: transfers taken from this owner (home pool or bucket) and not yet
    acknowledged: transfer id -> ``<destination tag> <amount> <ms>``."""
    return f"{PREFIX}:{{{owner}}}:xfer_out"


def xfer_in(owner: str) -> str:
    """Sorted set: transfer ids credited to this owner -> when (ms); a credit
    is applied at most once while its id is here (kept a day)."""
    return f"{PREFIX}:{{{owner}}}:xfer_in"


def xfer_done(owner: str) -> str:
    """Sorted set: transfer ids taken from this owner and acknowledged -> when
    (ms); a re-run take of one of them is a no-op (kept a day)."""
    return f"{PREFIX}:{{{owner}}}:xfer_done"
