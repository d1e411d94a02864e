// The gateway's counters (GET /admin/v1/stats) and what the page derives from
// them: rates as differences between two reads, latency quantiles from the
// histogram's difference. Pure functions: no DOM, no fetch.

export const OUTCOMES = [
  "admitted", "sold_out", "limit_reached", "rate_limited", "invalid",
  "unauthenticated", "not_found", "not_active", "unavailable", "overloaded",
  "outcome_unknown",
];
export const REJECTIONS = OUTCOMES.filter((o) => o !== "admitted");

function count(v) {
  return typeof v === "number" && Number.isFinite(v) ? v : 0;
}

function object(v, what) {
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error(what + " is not an object");
  return v;
}

function counts(obj, what) {
  return new Map(Object.entries(object(obj, what)).map(([k, v]) => [k, count(v)]));
}

/** buy_latency {bounds, counts, sum} -> cumulative buckets [[le, n], …], the last le = Infinity. */
export function buckets(latency) {
  const { bounds, counts: cum } = object(latency, "buy_latency");
  if (!Array.isArray(bounds) || !Array.isArray(cum) || cum.length !== bounds.length + 1) {
    throw new Error("buy_latency needs one count per bound and one for +Inf");
  }
  return bounds.concat([Infinity]).map((le, k) => [le, count(cum[k])]);
}

/** A GET /admin/v1/stats answer as the page uses it; throws on an answer it cannot read. */
export function snapshot(stats) {
  object(stats, "the answer");
  const byOutcome = new Map(OUTCOMES.map((o) => [o, 0]));
  for (const [o, n] of counts(stats.buys, "buys")) byOutcome.set(o, n); // and outcomes added since
  const bySale = new Map();
  for (const [sale, per] of Object.entries(object(stats.buys_by_sale || {}, "buys_by_sale"))) {
    bySale.set(sale, counts(per, "buys_by_sale[" + sale + "]"));
  }
  const deliveries = stats.deliveries || {};
  const limited = stats.rate_limited || {};
  const workers = stats.workers || {};
  return {
    byOutcome, // outcome -> n
    bySale, // sale id ('' = not attributed) -> Map(outcome -> n)
    buckets: buckets(stats.buy_latency),
    confirmed: count(deliveries.confirmed),
    attemptFailed: count(deliveries.attempt_failed),
    failed: count(deliveries.failed),
    local: count(limited.local),
    cluster: count(limited.cluster),
    workers: count(workers.running),
    busy: count(workers.busy),
    queue: count(stats.queue_depth),
  };
}

/** How much a counter grew; a counter that went back (the gateway restarted) counts from 0. */
export function delta(cur, prev) {
  if (cur == null || prev == null) return null;
  return cur >= prev ? cur - prev : cur;
}

/** Per second, over *dt* seconds; null when unknown. */
export function rate(cur, prev, dt) {
  const d = delta(cur, prev);
  return d == null || !(dt > 0) ? null : d / dt;
}

/** The sum of a Map's values (of *keys* only, if given). */
export function sumMap(map, keys) {
  let s = 0;
  for (const k of keys || map.keys()) s += map.get(k) || 0;
  return s;
}

/** Bucket counts observed between two cumulative histograms (a reset: the newer whole). */
export function histogramDelta(cur, prev) {
  if (!prev || prev.length !== cur.length) return cur;
  const out = [];
  for (let k = 0; k < cur.length; k++) {
    const d = cur[k][1] - prev[k][1];
    if (cur[k][0] !== prev[k][0] || d < 0) return cur;
    out.push([cur[k][0], d]);
  }
  return out;
}

/** Like PromQL histogram_quantile: linear within the bucket; Infinity past the last bound; null if empty. */
export function quantile(q, cumulative) {
  const n = cumulative.length ? cumulative[cumulative.length - 1][1] : 0;
  if (!(n > 0)) return null;
  const rank = q * n;
  let lower = 0;
  let below = 0;
  for (const [le, cum] of cumulative) {
    if (cum >= rank && cum > 0) {
      if (le === Infinity) return Infinity;
      const inside = cum - below;
      if (inside <= 0) return le;
      return lower + (le - lower) * ((rank - below) / inside);
    }
    lower = le;
    below = cum;
  }
  return null;
}

/** The buys answered between two histograms: how many, their p50 and p99 (null if none). */
export function latencyBetween(cur, prev) {
  const d = histogramDelta(cur, prev);
  return {
    count: d.length ? d[d.length - 1][1] : 0,
    p50: quantile(0.5, d),
    p99: quantile(0.99, d),
  };
}

/** The last finite bound of a histogram (what "> …" means). */
export function maxBound(cumulative) {
  const finite = cumulative.filter((b) => b[0] !== Infinity);
  return finite.length ? finite[finite.length - 1][0] : null;
}

/** A sale's admitted orders, whatever became of them (GET /admin/v1/sales view). */
export function ordersTotal(view) {
  const o = view.orders || {};
  return (o.queued || 0) + (o.confirmed || 0) + (o.failed || 0) + (o.cancelled || 0) +
    (o.undetermined || 0) + (o.paid || 0) + (o.expired || 0);
}
