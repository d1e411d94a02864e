// The whole gateway: the cards at the top and the buy outcomes table, from two
// stats snapshots (see stats.js) and the sales' backlog.

import { $, el, setText } from "./dom.js";
import { fmtInt, fmtMs, fmtRate } from "./format.js";
import { pushHistory, spark } from "./spark.js";
import { OUTCOMES, REJECTIONS, delta, latencyBetween, maxBound, rate, sumMap } from "./stats.js";

const WINDOW_S = 10; // the longer latency window
const CARDS = ["requests", "admitted", "rejected", "latency", "delivered", "backlog", "workers", "ratelimited"];
const FROM_STATS = ["requests", "admitted", "rejected", "latency", "delivered", "ratelimited"]; // their sub lines

let cards = null; // name -> {value, sub, spark}
const hist = {
  requests: [], admitted: [], rejected: [], p50: [], p99: [],
  delivered: [], backlog: [], busy: [], ratelimited: [],
};
let windows = []; // [{t, buckets}]: the histograms of the last ~WINDOW_S seconds
const outcomeRows = new Map(); // outcome | "total" -> {tr, rate, count}

/** Forget the latency window (a new token: the next snapshot starts afresh). */
export function resetOverview() {
  windows = [];
}

function findCards() {
  if (!cards) {
    cards = {};
    for (const name of CARDS) {
      const root = $('[data-card="' + name + '"]');
      cards[name] = {
        value: $('[data-field="value"]', root),
        sub: $('[data-field="sub"]', root),
        spark: $('[data-field="spark"]', root),
      };
    }
  }
  return cards;
}

/** The cards, for a poll at *now* (ms) *dt* s after the previous one; snap/prevSnap may be null. */
export function renderCards(now, snap, prevSnap, dt, sales) {
  const c = findCards();
  const h = hist;
  const r = (cur, prev) => rate(cur, prev, dt);
  if (!snap) for (const name of FROM_STATS) setText(c[name].sub, ""); // no stale figures under "—"

  // buy requests: all, admitted, rejected (and the main reason)
  let requests = null, admitted = null, rejected = null;
  if (snap) {
    const all = sumMap(snap.byOutcome);
    const adm = snap.byOutcome.get("admitted") || 0;
    let topReason = null;
    let topCount = 0;
    if (prevSnap) {
      const prevAll = sumMap(prevSnap.byOutcome);
      const prevAdm = prevSnap.byOutcome.get("admitted") || 0;
      requests = r(all, prevAll);
      admitted = r(adm, prevAdm);
      rejected = r(all - adm, prevAll - prevAdm);
      for (const o of REJECTIONS) {
        const d = delta(snap.byOutcome.get(o) || 0, prevSnap.byOutcome.get(o) || 0) || 0;
        if (d > topCount) { topCount = d; topReason = o; }
      }
    }
    setText(c.requests.sub, fmtInt(all) + " answered in all");
    setText(c.admitted.sub, fmtInt(adm) + " admitted in all");
    if (topReason && rejected > 0) {
      const share = Math.round((topCount / (rejected * dt)) * 100);
      setText(c.rejected.sub, "mostly " + topReason + " (" + share + "%)");
    } else {
      setText(c.rejected.sub, fmtInt(all - adm) + " rejected in all");
    }
  }
  setText(c.requests.value, fmtRate(requests));
  setText(c.admitted.value, fmtRate(admitted));
  setText(c.rejected.value, fmtRate(rejected));
  pushHistory(h.requests, requests);
  pushHistory(h.admitted, admitted);
  pushHistory(h.rejected, rejected);
  spark(c.requests.spark, h.requests, h.admitted);
  spark(c.admitted.spark, h.admitted);
  spark(c.rejected.spark, h.rejected);

  // latency: p50 · p99 of the buys answered since the last poll, and over ~10 s
  let p50 = null, p99 = null;
  if (snap) {
    const top = maxBound(snap.buckets);
    windows.push({ t: now, buckets: snap.buckets });
    while (windows.length > 1 && now - windows[1].t >= WINDOW_S * 1000) windows.shift();
    if (prevSnap) {
      const last = latencyBetween(snap.buckets, prevSnap.buckets);
      ({ p50, p99 } = last);
      setText(c.latency.value, p50 == null ? "—" : fmtMs(p50, top) + " · " + fmtMs(p99, top) + " ms");
      const old = windows[0];
      const w = latencyBetween(snap.buckets, old.buckets);
      const span = Math.max(1, Math.round((now - old.t) / 1000));
      setText(
        c.latency.sub,
        (last.count ? fmtInt(last.count) + " buys" : "no buys") +
          (w.count ? " · " + span + " s: " + fmtMs(w.p50, top) + " · " + fmtMs(w.p99, top) + " ms" : ""),
      );
    }
  } else {
    setText(c.latency.value, "—");
  }
  pushHistory(h.p99, p99 === Infinity ? null : p99);
  pushHistory(h.p50, p50 === Infinity ? null : p50);
  spark(c.latency.spark, h.p99, h.p50);

  // delivery to the sink
  let delivered = null;
  if (snap) {
    if (prevSnap) delivered = r(snap.confirmed, prevSnap.confirmed);
    const retries = prevSnap ? r(snap.attemptFailed, prevSnap.attemptFailed) : null;
    setText(
      c.delivered.sub,
      fmtInt(snap.confirmed) + " confirmed · " + fmtInt(snap.failed) + " failed" +
        (retries ? " · " + fmtRate(retries) + " retries/s" : ""),
    );
  }
  setText(c.delivered.value, fmtRate(delivered));
  pushHistory(h.delivered, delivered);
  spark(c.delivered.spark, h.delivered);

  // backlog (Redis, every sale) and the in-RAM queues
  const backlog = sales.reduce((s, v) => s + (v.backlog || 0), 0);
  setText(c.backlog.value, fmtInt(backlog));
  setText(c.backlog.sub, snap ? fmtInt(snap.queue) + " in the workers' queues" : "");
  pushHistory(h.backlog, backlog);
  spark(c.backlog.spark, h.backlog);

  setText(c.workers.value, snap ? fmtInt(snap.busy) + " / " + fmtInt(snap.workers) : "—");
  setText(c.workers.sub, "busy / running");
  pushHistory(h.busy, snap ? snap.busy : null);
  spark(c.workers.spark, h.busy);

  // rate limiting, by layer
  let limited = null;
  if (snap && prevSnap) {
    const local = r(snap.local, prevSnap.local);
    const cluster = r(snap.cluster, prevSnap.cluster);
    if (local != null || cluster != null) limited = (local || 0) + (cluster || 0);
    setText(c.ratelimited.sub, "local " + fmtRate(local) + "/s · cluster " + fmtRate(cluster) + "/s");
  }
  setText(c.ratelimited.value, fmtRate(limited));
  pushHistory(h.ratelimited, limited);
  spark(c.ratelimited.spark, h.ratelimited);
}

/** Every buy outcome per second and in all. */
export function renderOutcomes(snap, prevSnap, dt) {
  if (!outcomeRows.size) {
    const body = $("#outcomes tbody");
    for (const o of OUTCOMES.concat(["total"])) {
      const rateCell = el("td", { class: "num", "data-field": "rate" });
      const count = el("td", { class: "num", "data-field": "total" });
      const tr = el("tr", { "data-outcome": o, class: o === "total" ? "total" : "" },
        el("td", { text: o === "total" ? "all outcomes" : o.replace("_", " ") }), rateCell, count);
      body.append(tr);
      outcomeRows.set(o, { tr, rate: rateCell, count });
    }
  }
  const value = (s, o) => (o === "total" ? sumMap(s.byOutcome) : s.byOutcome.get(o) || 0);
  for (const [o, row] of outcomeRows) {
    if (!snap) {
      setText(row.rate, "—");
      setText(row.count, "—");
      continue;
    }
    const cur = value(snap, o);
    setText(row.rate, fmtRate(prevSnap ? rate(cur, value(prevSnap, o), dt) : null));
    setText(row.count, fmtInt(cur));
    row.tr.classList.toggle("muted", cur === 0 && o !== "total");
  }
  let note = "";
  if (snap) {
    const unknown = snap.bySale.get("");
    const n = unknown ? sumMap(unknown) : 0;
    if (n) note = "Of these, " + fmtInt(n) + " are not attributed to a sale (not in the per-sale column).";
  } else {
    note = "GET /admin/v1/stats did not answer: buy outcomes and latency are unavailable.";
  }
  setText($("#outcomes-note"), note);
}
