// The sales table: one row per sale of GET /admin/v1/sales (stock, orders,
// backlog: the cluster's, from Redis) with its refusals by reason from the
// stats' buys_by_sale (this gateway's processes).

import { $, el, setText } from "./dom.js";
import { fmtInt, fmtRate } from "./format.js";
import { newSpark, pushHistory, spark } from "./spark.js";
import { REJECTIONS, delta, ordersTotal, sumMap } from "./stats.js";

const rows = new Map(); // sale id -> the row's cells and its history

function makeRow(id) {
  const c = { hist: { requests: [], admitted: [] } };
  c.tr = el("tr", { "data-sale": id });
  c.id = el("div", { class: "id", text: id });
  c.name = el("div", { class: "name" });
  c.status = el("span", { class: "status" });
  c.stock = el("div", { "data-field": "stock_left" });
  c.stockOf = el("div", { class: "line2" });
  c.bar = el("div");
  c.admRate = el("div", { class: "rate", "data-field": "admitted_rate" });
  c.admTotal = el("div", { class: "line2", "data-field": "admitted_total" });
  c.chips = el("div", { class: "chips", "data-field": "rejected" });
  c.rejTotal = el("div", { class: "line2", "data-field": "rejected_total" });
  c.backlog = el("td", { class: "num", "data-field": "backlog" });
  c.delRate = el("div", { class: "rate", "data-field": "delivered_rate" });
  c.delTotal = el("div", { class: "line2", "data-field": "confirmed" });
  c.lost = el("div", { class: "line2", "data-field": "failed_cancelled" });
  c.paid = el("div", { class: "line2", "data-field": "paid_expired" });
  c.spark = newSpark();
  c.tr.append(
    el("td", {}, c.id, c.name),
    el("td", {}, c.status),
    el("td", { class: "num" }, c.stock, c.stockOf, el("div", { class: "stockbar" }, c.bar)),
    el("td", { class: "num" }, c.admRate, c.admTotal),
    el("td", {}, c.chips, c.rejTotal),
    c.backlog,
    el("td", { class: "num" }, c.delRate, c.delTotal, c.paid, c.lost),
    el("td", {}, c.spark),
  );
  return c;
}

/**
 * *sales*: the views, sorted by id; *prevSales*: Map(id -> view) of the previous
 * poll, *dt* s ago; *snap* and *prevSnap*: stats snapshots (null: unavailable).
 */
export function renderSales(sales, truncated, snap, prevSnap, prevSales, dt) {
  const body = $("#sales tbody");
  const seen = new Set();
  let previousRow = null;
  for (const view of sales) {
    const id = String(view.sale_id);
    seen.add(id);
    let c = rows.get(id);
    if (!c) {
      c = makeRow(id);
      rows.set(id, c);
    }
    // keep the rows in the API's order (sorted by id)
    const want = previousRow ? previousRow.tr.nextSibling : body.firstChild;
    if (want !== c.tr) body.insertBefore(c.tr, want);
    previousRow = c;
    renderRow(c, id, view, prevSales ? prevSales.get(id) : null, dt, snap, prevSnap);
  }
  for (const [id, c] of rows) {
    if (!seen.has(id)) {
      c.tr.remove();
      rows.delete(id);
    }
  }
  $("#no-sales").hidden = sales.length > 0;
  $("#sales-truncated").hidden = !truncated;
  setText($("#sales-count"), sales.length ? "(" + sales.length + (truncated ? "+" : "") + ")" : "");
}

function renderRow(c, id, view, before, dt, snap, prevSnap) {
  const name = String(view.name == null ? "" : view.name);
  setText(c.name, name === id ? "" : name);
  c.name.setAttribute("title", name);
  setText(c.status, String(view.status).replace("_", " "));
  c.status.setAttribute("data-status", String(view.status));
  setText(c.stock, fmtInt(view.stock_left));
  setText(c.stockOf, "of " + fmtInt(view.stock_total));
  const share = view.stock_total > 0 ? Math.max(0, Math.min(1, view.stock_left / view.stock_total)) : 0;
  c.bar.style.width = (share * 100).toFixed(1) + "%";

  // admitted and delivered: the sale's orders in Redis, so the whole cluster's
  const perSec = (cur, prev) => (before && dt > 0 ? (delta(cur, prev) || 0) / dt : null);
  const orders = view.orders || {};
  const admitted = ordersTotal(view);
  const admittedRate = perSec(admitted, before ? ordersTotal(before) : null);
  setText(c.admRate, admittedRate == null ? "—" : fmtRate(admittedRate) + "/s");
  setText(c.admTotal, fmtInt(admitted) + " in all");
  setText(c.backlog, fmtInt(view.backlog));
  // delivered: confirmed, and what a pay window made of them since (paid, expired)
  const delivered = (o) => (o.confirmed || 0) + (o.paid || 0) + (o.expired || 0);
  const deliveredRate = perSec(delivered(orders), before ? delivered(before.orders || {}) : null);
  setText(c.delRate, deliveredRate == null ? "—" : fmtRate(deliveredRate) + "/s");
  setText(c.delTotal, fmtInt(orders.confirmed || 0) + " confirmed");
  const paid = orders.paid || 0;
  const expired = orders.expired || 0;
  setText(
    c.paid,
    view.pay_window_s || paid || expired
      ? fmtInt(paid) + " paid · " + fmtInt(expired) + " expired" +
          (view.pay_window_s ? " (pay within " + fmtInt(view.pay_window_s) + " s)" : "")
      : "",
  );
  const failed = orders.failed || 0;
  const cancelled = orders.cancelled || 0;
  const undetermined = orders.undetermined || 0;
  setText(
    c.lost,
    (failed || cancelled ? fmtInt(failed) + " failed · " + fmtInt(cancelled) + " cancelled" : "") +
      (undetermined ? (failed || cancelled ? " · " : "") + fmtInt(undetermined) + " undetermined (settle)" : ""),
  );
  c.lost.classList.toggle("bad", failed > 0 || undetermined > 0);

  // refusals by reason: only the buys this gateway could attribute to the sale
  const per = snap ? snap.bySale.get(id) : null;
  const prevPer = prevSnap ? prevSnap.bySale.get(id) || new Map() : null;
  const chips = [];
  let rejectedRate = null;
  if (per) {
    const reasons = REJECTIONS.filter((o) => per.get(o)).map((o) => o + " " + fmtInt(per.get(o)));
    setText(c.rejTotal, fmtInt(sumMap(per, REJECTIONS)) + " rejected in all");
    c.rejTotal.setAttribute("title", reasons.join(", ") || "none");
    if (prevPer && dt > 0) {
      rejectedRate = 0;
      for (const o of REJECTIONS) {
        const r = (delta(per.get(o) || 0, prevPer.get(o) || 0) || 0) / dt;
        if (r > 0) {
          rejectedRate += r;
          chips.push(el("span", { class: "chip", "data-outcome": o, text: o.replace("_", " ") + " " + fmtRate(r) + "/s" }));
        }
      }
    }
  } else {
    setText(c.rejTotal, snap ? "none counted yet" : "stats unavailable");
    c.rejTotal.removeAttribute("title");
  }
  if (!chips.length) chips.push(el("span", { class: "chip none", text: rejectedRate === 0 ? "none" : "—" }));
  c.chips.replaceChildren(...chips);

  const requestsRate = admittedRate == null && rejectedRate == null ? null : (admittedRate || 0) + (rejectedRate || 0);
  pushHistory(c.hist.requests, requestsRate);
  pushHistory(c.hist.admitted, admittedRate);
  spark(c.spark, c.hist.requests, c.hist.admitted);
}
