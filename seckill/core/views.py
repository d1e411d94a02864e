"""Sale and order views (docs/API.md §4, §5), built from their Redis hashes
into the Structs of ``seckill.schemas``."""

from __future__ import annotations

import time

from seckill.schemas import ORDER_STATUSES, AdminSaleView, Order, OrderCounts, SaleView
from seckill.timefmt import format_rfc3339


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def sale_status(sale: dict[str, str], at_ms: int) -> str:
    ends_at = sale.get("ends_at") or ""
    if ends_at and at_ms >= int(ends_at):
        return "ended"
    if at_ms < int(sale["starts_at"]):
        return "upcoming"
    if int(sale["stock_left"]) <= 0:
        return "sold_out"
    return "active"


def _fields(sale_id: str, sale: dict[str, str], at_ms: int) -> dict[str, object]:
    ends_at = sale.get("ends_at") or ""
    return {
        "sale_id": sale_id,
        "name": sale["name"],
        "status": sale_status(sale, at_ms),
        "stock_total": int(sale["stock_total"]),
        "stock_left": int(sale["stock_left"]),
        "starts_at": format_rfc3339(int(sale["starts_at"])),
        "ends_at": format_rfc3339(int(ends_at)) if ends_at else None,
        "per_user_limit": int(sale["per_user_limit"]),
    }


def public_view(sale_id: str, sale: dict[str, str], at_ms: int) -> SaleView:
    return SaleView(**_fields(sale_id, sale, at_ms))  # type: ignore[arg-type]


def admin_view(sale_id: str, sale: dict[str, str], at_ms: int) -> AdminSaleView:
    """The public view plus the order counts and the backlog (the queued
    orders; a "backlog" field an older version left in the hash is stale and
    ignored), and the sale's buckets. A sale with buckets is read as one
    (``Scripts.read_sale``: stock_left and the counters summed over its pool
    and buckets)."""
    counts = {status: int(sale.get(f"n_{status}", 0)) for status in ORDER_STATUSES}
    return AdminSaleView(
        **_fields(sale_id, sale, at_ms),  # type: ignore[arg-type]
        orders=OrderCounts(**counts),
        backlog=counts["queued"],
        buckets=int(sale.get("buckets") or 1),
        pay_window_s=int(sale["pay_window_s"]) if sale.get("pay_window_s") else None,
    )


def order_view(order: dict[str, str]) -> Order:
    return Order(
        order_id=order["order_id"],
        sale_id=order["sale_id"],
        user_id=order["user_id"],
        quantity=int(order["quantity"]),
        status=order["status"],  # type: ignore[arg-type]
        created_at=format_rfc3339(int(order["created_at"])),
        pay_deadline=format_rfc3339(int(order["pay_deadline"]))
        if order.get("status") == "confirmed" and order.get("pay_deadline")
        else None,
    )
