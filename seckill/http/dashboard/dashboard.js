// seckill dashboard: plain JavaScript, no dependencies, no external fetches.
//
// Every second it reads, from the gateway that served it:
//   GET /admin/v1/sales   every sale's admin view (stock, orders by status, backlog)
//   GET /admin/v1/limits  the token buckets (and PUT from the form)
//   GET /metrics          Prometheus text: buy outcomes, latency histogram, deliveries…
// and shows rates as deltas between two polls over the time between them.
//
// Data (sale names are user input) only ever reaches the DOM as text:
// textContent, Text nodes, setAttribute — never innerHTML.
(function () {
  "use strict";

  const POLL_MS = 1000;
  const TIMEOUT_MS = 3000;
  const HISTORY = 90; // sparkline points: the last ~90 s
  const MIN_SPAN = 20;
  const WINDOW_S = 10; // the longer latency window
  const TOKEN_KEY = "seckill.adminToken";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const OUTCOMES = [
    "admitted", "sold_out", "limit_reached", "rate_limited", "invalid",
    "unauthenticated", "not_found", "not_active", "unavailable", "overloaded",
  ];
  const REJECTIONS = OUTCOMES.filter((o) => o !== "admitted");
  const RATE_FIELDS = new Set(["rate", "per_user_rate"]);

  // ---------------------------------------------------------------- Prometheus text

  function parseValue(text) {
    if (text === "+Inf") return Infinity;
    if (text === "-Inf") return -Infinity;
    return Number(text);
  }

  /** Prometheus text format -> Map(sample name -> [{labels, value}]). */
  function parseMetrics(text) {
    const out = new Map();
    for (const raw of text.split("\n")) {
      const line = raw.trim();
      if (!line || line[0] === "#") continue;
      const m = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
      if (!m) continue;
      const name = m[0];
      let i = name.length;
      const labels = {};
      if (line[i] === "{") {
        i++;
        for (;;) {
          while (line[i] === " " || line[i] === ",") i++;
          if (i >= line.length || line[i] === "}") break;
          const lm = /^([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"/.exec(line.slice(i));
          if (!lm) { i = line.length; break; }
          i += lm[0].length;
          let value = "";
          while (i < line.length && line[i] !== '"') {
            if (line[i] === "\\" && i + 1 < line.length) {
              const c = line[i + 1];
              value += c === "n" ? "\n" : c;
              i += 2;
            } else {
              value += line[i];
              i++;
            }
          }
          i++; // the closing quote
          labels[lm[1]] = value;
        }
        i++; // the closing brace
      }
      const fields = line.slice(i).trim().split(/\s+/);
      const value = parseValue(fields[0]);
      if (Number.isNaN(value) && fields[0] !== "NaN") continue;
      if (!out.has(name)) out.set(name, []);
      out.get(name).push({ labels, value });
    }
    return out;
  }

  function samples(m, name) {
    return m.get(name) || [];
  }

  function total(m, name, where) {
    let sum = 0;
    let seen = false;
    for (const s of samples(m, name)) {
      if (where && !where(s.labels)) continue;
      sum += s.value;
      seen = true;
    }
    return seen ? sum : null;
  }

  /** Cumulative histogram buckets, sorted: [[le, count], …], the last le = Infinity. */
  function histogram(m, name) {
    const byLe = new Map();
    for (const s of samples(m, name + "_bucket")) {
      const le = parseValue(s.labels.le);
      if (Number.isNaN(le)) continue;
      byLe.set(le, (byLe.get(le) || 0) + s.value);
    }
    return [...byLe.entries()].sort((a, b) => a[0] - b[0]);
  }

  /** Bucket counts observed between two cumulative snapshots (a reset: the newer whole). */
  function histogramDelta(cur, prev) {
    if (!prev || prev.length !== cur.length) return cur;
    const out = [];
    for (let k = 0; k < cur.length; k++) {
      const d = cur[k][1] - prev[k][1];
      if (cur[k][0] !== prev[k][0] || d < 0) return cur;
      out.push([cur[k][0], d]);
    }
    return out;
  }

  /** Like PromQL histogram_quantile: linear within the bucket; Infinity past the last bound. */
  function quantile(q, buckets) {
    const count = buckets.length ? buckets[buckets.length - 1][1] : 0;
    if (!(count > 0)) return null;
    const rank = q * count;
    let lower = 0;
    let below = 0;
    for (const [le, cum] of buckets) {
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

  function delta(cur, prev) {
    if (cur == null || prev == null) return null;
    return cur >= prev ? cur - prev : cur; // a counter went back: the gateway restarted
  }

  // ---------------------------------------------------------------- formatting

  const intFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

  function fmtInt(n) {
    return n == null || !Number.isFinite(n) ? "—" : intFormat.format(Math.round(n));
  }

  function fmtRate(r) {
    if (r == null || !Number.isFinite(r)) return "—";
    if (r === 0) return "0";
    if (r < 1) return r.toFixed(2);
    if (r < 10) return r.toFixed(1);
    if (r < 100000) return intFormat.format(Math.round(r));
    return intFormat.format(Math.round(r / 1000)) + "k";
  }

  function fmtMs(seconds, maxBound) {
    if (seconds == null) return "—";
    if (seconds === Infinity) return "> " + fmtMs(maxBound, maxBound);
    const ms = seconds * 1000;
    if (ms < 10) return ms.toFixed(2);
    if (ms < 100) return ms.toFixed(1);
    return intFormat.format(Math.round(ms));
  }

  function fmtLimit(rate, burst) {
    return (rate == null ? "unlimited" : fmtRate(rate) + "/s") + ", burst " + fmtInt(burst);
  }

  function clock(date) {
    return date.toLocaleTimeString("en-GB", { hour12: false });
  }

  // ---------------------------------------------------------------- DOM helpers

  const $ = (sel, root) => (root || document).querySelector(sel);

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v;
      else e.setAttribute(k, v);
    }
    e.append(...kids); // strings become Text nodes
    return e;
  }

  function setText(node, text) {
    const t = String(text);
    if (node.textContent !== t) node.textContent = t;
  }

  function pushHistory(list, value) {
    list.push(value);
    if (list.length > HISTORY) list.splice(0, list.length - HISTORY);
  }

  /** A sparkline: the area under *main*, and *second* as a line, scaled together. */
  function spark(svg, main, second) {
    const W = 120;
    const H = 24;
    const values = main.concat(second || []).filter((v) => v != null && Number.isFinite(v));
    const max = values.length ? Math.max(...values) : 0;
    const scale = max > 0 ? (H - 2) / max : 0;
    // right-aligned; a young history is drawn over at least MIN_SPAN points
    const span = Math.max(MIN_SPAN, main.length, second ? second.length : 0);
    const x = (i, n) => W - (n - 1 - i) * (W / (span - 1));
    const y = (v) => H - 1 - (v == null || !Number.isFinite(v) ? 0 : v * scale);
    const points = (list) => list.map((v, i) => x(i, list.length).toFixed(1) + "," + y(v).toFixed(1));
    const kids = [];
    if (main.length > 1) {
      const line = points(main);
      const area = document.createElementNS(SVG_NS, "polygon");
      const first = x(0, main.length).toFixed(1);
      area.setAttribute("points", line.join(" ") + " " + W + "," + H + " " + first + "," + H);
      kids.push(area);
      const poly = document.createElementNS(SVG_NS, "polyline");
      poly.setAttribute("points", line.join(" "));
      kids.push(poly);
    }
    if (second && second.length > 1) {
      const poly = document.createElementNS(SVG_NS, "polyline");
      poly.setAttribute("class", "second");
      poly.setAttribute("points", points(second).join(" "));
      kids.push(poly);
    }
    svg.replaceChildren(...kids);
    svg.setAttribute("data-max", String(max)); // the peak shown (tests read it)
  }

  // ---------------------------------------------------------------- token

  const memory = { token: null }; // if sessionStorage is off

  function loadToken() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return memory.token; }
  }

  function saveToken(token) {
    memory.token = token;
    try { sessionStorage.setItem(TOKEN_KEY, token); } catch (e) { /* memory only */ }
  }

  function forgetToken() {
    memory.token = null;
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* memory only */ }
  }

  /** A header can carry visible ASCII only; anything else is surely not the token. */
  function plausibleToken(token) {
    return /^[\x21-\x7e]+$/.test(token);
  }

  // ---------------------------------------------------------------- HTTP

  class CallError extends Error {
    constructor(kind, message, status) {
      super(message);
      this.kind = kind; // unauthorized | unreachable | refused
      this.status = status || 0;
    }
  }

  /** fetch with a deadline; resolves to the body (JSON or text), rejects with CallError. */
  async function call(path, { method = "GET", body, admin = true, json = true } = {}) {
    const headers = { Accept: json ? "application/json" : "text/plain" };
    if (admin) headers.Authorization = "Bearer " + state.token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    try {
      let resp;
      try {
        resp = await fetch(path, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          cache: "no-store",
          credentials: "omit",
          signal: ctl.signal,
        });
      } catch (e) {
        const why = e && e.name === "AbortError" ? "no answer within " + TIMEOUT_MS / 1000 + " s" : "no connection";
        throw new CallError("unreachable", why);
      }
      if (resp.status === 401) throw new CallError("unauthorized", "401", 401);
      let text;
      try {
        text = await resp.text();
      } catch (e) {
        throw new CallError("unreachable", "the answer was cut off");
      }
      if (!resp.ok) {
        let message = "HTTP " + resp.status;
        try {
          const err = JSON.parse(text);
          if (err && err.error) message = resp.status + " " + err.error + (err.message ? ": " + err.message : "");
        } catch (e) { /* not JSON */ }
        throw new CallError(resp.status >= 500 ? "server" : "refused", message, resp.status);
      }
      if (!json) return text;
      try {
        return JSON.parse(text);
      } catch (e) {
        throw new CallError("server", "the gateway answered something that is not JSON");
      }
    } finally {
      clearTimeout(timer);
    }
  }

  // ---------------------------------------------------------------- state

  const state = {
    token: null,
    generation: 0, // bumped when the token changes: late answers are dropped
    timer: null,
    prev: null, // {t, snap, sales: Map}
    windows: [], // [{t, buckets}] for the longer latency window
    hist: {
      requests: [], admitted: [], rejected: [], p50: [], p99: [],
      delivered: [], backlog: [], busy: [], ratelimited: [],
    },
    saleHist: new Map(), // sale id -> {requests: [], admitted: []}
    rows: new Map(), // sale id -> the row's cells
    outcomeRows: new Map(),
    limits: null,
    lastOk: null,
  };

  function snapshot(m) {
    const bySale = new Map(); // sale -> Map(outcome -> count)
    const byOutcome = new Map(OUTCOMES.map((o) => [o, 0]));
    for (const s of samples(m, "seckill_buy_requests_total")) {
      const outcome = s.labels.outcome || "";
      const sale = s.labels.sale || "";
      byOutcome.set(outcome, (byOutcome.get(outcome) || 0) + s.value);
      if (!bySale.has(sale)) bySale.set(sale, new Map());
      const per = bySale.get(sale);
      per.set(outcome, (per.get(outcome) || 0) + s.value);
    }
    const result = (r) => total(m, "seckill_order_deliveries_total", (l) => l.result === r);
    const layer = (n) => total(m, "seckill_rate_limited_total", (l) => l.layer === n);
    return {
      byOutcome,
      bySale,
      buckets: histogram(m, "seckill_buy_duration_seconds"),
      confirmed: result("confirmed"),
      attemptFailed: result("attempt_failed"),
      failed: result("failed"),
      local: layer("local"),
      cluster: layer("cluster"),
      workers: total(m, "seckill_order_workers"),
      busy: total(m, "seckill_order_workers_busy"),
      queue: total(m, "seckill_order_queue_depth"),
    };
  }

  function sumMap(map, keys) {
    let s = 0;
    for (const k of keys || map.keys()) s += map.get(k) || 0;
    return s;
  }

  function ordersTotal(view) {
    const o = view.orders || {};
    return (o.queued || 0) + (o.confirmed || 0) + (o.failed || 0) + (o.cancelled || 0);
  }

  // ---------------------------------------------------------------- rendering

  function card(name) {
    const root = $('[data-card="' + name + '"]');
    return {
      value: $('[data-field="value"]', root),
      sub: $('[data-field="sub"]', root),
      spark: $('[data-field="spark"]', root),
      unit: $(".big small", root),
    };
  }

  const cards = {};

  function renderCards(now, snap, prevSnap, dt, sales) {
    const rate = (cur, prev) => {
      const d = delta(cur, prev);
      return d == null || !(dt > 0) ? null : d / dt;
    };
    const h = state.hist;
    let requests = null, admitted = null, rejected = null, topReason = null;
    if (snap) {
      const all = sumMap(snap.byOutcome);
      const adm = snap.byOutcome.get("admitted") || 0;
      if (prevSnap) {
        requests = rate(all, sumMap(prevSnap.byOutcome));
        admitted = rate(adm, prevSnap.byOutcome.get("admitted") || 0);
        rejected = rate(all - adm, sumMap(prevSnap.byOutcome) - (prevSnap.byOutcome.get("admitted") || 0));
        let best = 0;
        for (const o of REJECTIONS) {
          const d = delta(snap.byOutcome.get(o) || 0, prevSnap.byOutcome.get(o) || 0) || 0;
          if (d > best) { best = d; topReason = o; }
        }
      }
      setText(cards.requests.sub, fmtInt(all) + " answered in all");
      setText(cards.admitted.sub, fmtInt(adm) + " admitted in all");
      if (topReason && rejected > 0) {
        const share = Math.round(((delta(snap.byOutcome.get(topReason), prevSnap.byOutcome.get(topReason)) || 0) / (rejected * dt)) * 100);
        setText(cards.rejected.sub, "mostly " + topReason + " (" + share + "%)");
      } else {
        setText(cards.rejected.sub, fmtInt(all - adm) + " rejected in all");
      }
    }
    setText(cards.requests.value, fmtRate(requests));
    setText(cards.admitted.value, fmtRate(admitted));
    setText(cards.rejected.value, fmtRate(rejected));
    pushHistory(h.requests, requests);
    pushHistory(h.admitted, admitted);
    pushHistory(h.rejected, rejected);
    spark(cards.requests.spark, h.requests, h.admitted);
    spark(cards.admitted.spark, h.admitted);
    spark(cards.rejected.spark, h.rejected);

    // latency: p50/p99 of the buys answered since the last poll, and over ~10 s
    let p50 = null, p99 = null;
    if (snap && snap.buckets.length) {
      const bounds = snap.buckets.filter((b) => b[0] !== Infinity);
      const maxBound = bounds.length ? bounds[bounds.length - 1][0] : 0;
      state.windows.push({ t: now, buckets: snap.buckets });
      while (state.windows.length > 1 && now - state.windows[1].t >= WINDOW_S * 1000) state.windows.shift();
      if (prevSnap && prevSnap.buckets.length) {
        const d = histogramDelta(snap.buckets, prevSnap.buckets);
        p50 = quantile(0.5, d);
        p99 = quantile(0.99, d);
        const n = d[d.length - 1][1];
        setText(cards.latency.value, p50 == null ? "—" : fmtMs(p50, maxBound) + " · " + fmtMs(p99, maxBound) + " ms");
        const old = state.windows[0];
        const w = histogramDelta(snap.buckets, old.buckets);
        const wn = w[w.length - 1][1];
        const span = Math.max(1, Math.round((now - old.t) / 1000));
        setText(
          cards.latency.sub,
          (n ? fmtInt(n) + " buys" : "no buys") +
            (wn ? " · " + span + " s: " + fmtMs(quantile(0.5, w), maxBound) + " · " + fmtMs(quantile(0.99, w), maxBound) + " ms" : ""),
        );
      }
    } else {
      setText(cards.latency.value, "—");
    }
    pushHistory(h.p99, p99 === Infinity ? null : p99);
    pushHistory(h.p50, p50 === Infinity ? null : p50);
    spark(cards.latency.spark, h.p99, h.p50);

    // delivery to the sink
    let delivered = null;
    if (snap) {
      if (prevSnap) delivered = rate(snap.confirmed, prevSnap.confirmed);
      const retries = prevSnap ? rate(snap.attemptFailed, prevSnap.attemptFailed) : null;
      setText(
        cards.delivered.sub,
        fmtInt(snap.confirmed) + " confirmed · " + fmtInt(snap.failed) + " failed" +
          (retries ? " · " + fmtRate(retries) + " retries/s" : ""),
      );
    }
    setText(cards.delivered.value, fmtRate(delivered));
    pushHistory(h.delivered, delivered);
    spark(cards.delivered.spark, h.delivered);

    // backlog (Redis, every sale) and the in-RAM queues
    const backlog = sales.reduce((s, v) => s + (v.backlog || 0), 0);
    setText(cards.backlog.value, fmtInt(backlog));
    setText(cards.backlog.sub, snap ? fmtInt(snap.queue) + " in the workers' queues" : "");
    pushHistory(h.backlog, backlog);
    spark(cards.backlog.spark, h.backlog);

    setText(cards.workers.value, snap ? fmtInt(snap.busy) + " / " + fmtInt(snap.workers) : "—");
    setText(cards.workers.sub, "busy / running");
    pushHistory(h.busy, snap ? snap.busy : null);
    spark(cards.workers.spark, h.busy);

    let limited = null;
    if (snap && prevSnap) {
      const local = rate(snap.local, prevSnap.local);
      const cluster = rate(snap.cluster, prevSnap.cluster);
      if (local != null || cluster != null) limited = (local || 0) + (cluster || 0);
      setText(cards.ratelimited.sub, "local " + fmtRate(local) + "/s · cluster " + fmtRate(cluster) + "/s");
    }
    setText(cards.ratelimited.value, fmtRate(limited));
    pushHistory(h.ratelimited, limited);
    spark(cards.ratelimited.spark, h.ratelimited);
  }

  function makeSaleRow(id) {
    const c = {};
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
    c.spark = document.createElementNS(SVG_NS, "svg");
    c.spark.setAttribute("class", "spark");
    c.spark.setAttribute("viewBox", "0 0 120 24");
    c.spark.setAttribute("preserveAspectRatio", "none");
    c.spark.setAttribute("data-field", "spark");
    c.tr.append(
      el("td", {}, c.id, c.name),
      el("td", {}, c.status),
      el("td", { class: "num" }, c.stock, c.stockOf, el("div", { class: "stockbar" }, c.bar)),
      el("td", { class: "num" }, c.admRate, c.admTotal),
      el("td", {}, c.chips, c.rejTotal),
      c.backlog,
      el("td", { class: "num" }, c.delRate, c.delTotal, c.lost),
      el("td", {}, c.spark),
    );
    return c;
  }

  function renderSales(sales, truncated, snap, prevSnap, prevSales, dt) {
    const body = $("#sales tbody");
    const seen = new Set();
    let previousRow = null;
    for (const view of sales) {
      const id = String(view.sale_id);
      seen.add(id);
      let c = state.rows.get(id);
      if (!c) {
        c = makeSaleRow(id);
        state.rows.set(id, c);
        state.saleHist.set(id, { requests: [], admitted: [] });
      }
      // keep the rows in the API's order (sorted by id)
      const want = previousRow ? previousRow.tr.nextSibling : body.firstChild;
      if (want !== c.tr) body.insertBefore(c.tr, want);
      previousRow = c;

      const name = String(view.name == null ? "" : view.name);
      setText(c.name, name === id ? "" : name);
      c.name.setAttribute("title", name);
      setText(c.status, String(view.status).replace("_", " "));
      c.status.setAttribute("data-status", String(view.status));
      setText(c.stock, fmtInt(view.stock_left));
      setText(c.stockOf, "of " + fmtInt(view.stock_total));
      const share = view.stock_total > 0 ? Math.max(0, Math.min(1, view.stock_left / view.stock_total)) : 0;
      c.bar.style.width = (share * 100).toFixed(1) + "%";

      const before = prevSales ? prevSales.get(id) : null;
      const perSec = (cur, prev) => (before && dt > 0 ? (delta(cur, prev) || 0) / dt : null);
      const orders = view.orders || {};
      const admitted = ordersTotal(view);
      const admittedRate = perSec(admitted, before ? ordersTotal(before) : null);
      setText(c.admRate, admittedRate == null ? "—" : fmtRate(admittedRate) + "/s");
      setText(c.admTotal, fmtInt(admitted) + " in all");
      setText(c.backlog, fmtInt(view.backlog));
      const deliveredRate = perSec(orders.confirmed || 0, before ? (before.orders || {}).confirmed || 0 : null);
      setText(c.delRate, deliveredRate == null ? "—" : fmtRate(deliveredRate) + "/s");
      setText(c.delTotal, fmtInt(orders.confirmed || 0) + " confirmed");
      const failed = orders.failed || 0;
      const cancelled = orders.cancelled || 0;
      setText(c.lost, failed || cancelled ? fmtInt(failed) + " failed · " + fmtInt(cancelled) + " cancelled" : "");
      c.lost.classList.toggle("bad", failed > 0);

      // refusals by reason: only the buys the gateway could attribute to this sale
      const per = snap ? snap.bySale.get(id) : null;
      const prevPer = prevSnap ? prevSnap.bySale.get(id) || new Map() : null;
      const chips = [];
      let rejectedRate = null;
      if (per) {
        const rejectedAll = sumMap(per, REJECTIONS);
        const reasons = REJECTIONS.filter((o) => per.get(o)).map((o) => o + " " + fmtInt(per.get(o)));
        setText(c.rejTotal, fmtInt(rejectedAll) + " rejected in all");
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
        setText(c.rejTotal, snap ? "none counted yet" : "metrics unavailable");
        c.rejTotal.removeAttribute("title");
      }
      if (!chips.length) chips.push(el("span", { class: "chip none", text: rejectedRate === 0 ? "none" : "—" }));
      c.chips.replaceChildren(...chips);

      const hist = state.saleHist.get(id);
      const requestsRate = admittedRate == null && rejectedRate == null ? null : (admittedRate || 0) + (rejectedRate || 0);
      pushHistory(hist.requests, requestsRate);
      pushHistory(hist.admitted, admittedRate);
      spark(c.spark, hist.requests, hist.admitted);
    }
    for (const [id, c] of state.rows) {
      if (!seen.has(id)) {
        c.tr.remove();
        state.rows.delete(id);
        state.saleHist.delete(id);
      }
    }
    $("#no-sales").hidden = sales.length > 0;
    $("#sales-truncated").hidden = !truncated;
    setText($("#sales-count"), sales.length ? "(" + sales.length + (truncated ? "+" : "") + ")" : "");
  }

  function renderOutcomes(snap, prevSnap, dt) {
    const body = $("#outcomes tbody");
    if (!state.outcomeRows.size) {
      for (const o of OUTCOMES.concat(["total"])) {
        const rate = el("td", { class: "num", "data-field": "rate" });
        const count = el("td", { class: "num", "data-field": "total" });
        const tr = el("tr", { "data-outcome": o, class: o === "total" ? "total" : "" },
          el("td", { text: o === "total" ? "all outcomes" : o.replace("_", " ") }), rate, count);
        body.append(tr);
        state.outcomeRows.set(o, { tr, rate, count });
      }
    }
    for (const [o, r] of state.outcomeRows) {
      if (!snap) {
        setText(r.rate, "—");
        setText(r.count, "—");
        continue;
      }
      const cur = o === "total" ? sumMap(snap.byOutcome) : snap.byOutcome.get(o) || 0;
      const prev = prevSnap ? (o === "total" ? sumMap(prevSnap.byOutcome) : prevSnap.byOutcome.get(o) || 0) : null;
      const rate = prev == null || !(dt > 0) ? null : delta(cur, prev) / dt;
      setText(r.rate, fmtRate(rate));
      setText(r.count, fmtInt(cur));
      r.tr.classList.toggle("muted", cur === 0 && o !== "total");
    }
    let note = "";
    if (snap) {
      const unknown = snap.bySale.get("");
      const n = unknown ? sumMap(unknown) : 0;
      if (n) note = "Of these, " + fmtInt(n) + " are not attributed to a sale (not in the per-sale column).";
    } else {
      note = "/metrics did not answer: buy outcomes and latency are unavailable.";
    }
    setText($("#outcomes-note"), note);
  }

  function renderLimits(limits) {
    state.limits = limits;
    setText(
      $("#limits-current"),
      "sale " + fmtLimit(limits.rate, limits.burst) + "; per user " + fmtLimit(limits.per_user_rate, limits.per_user_burst),
    );
    const form = $("#limits");
    for (const input of form.querySelectorAll("input")) {
      if (input.getAttribute("data-dirty") === "1" || document.activeElement === input) continue;
      const v = limits[input.name];
      const text = v == null ? "" : String(v);
      if (input.value !== text) input.value = text;
    }
  }

  // ---------------------------------------------------------------- status and messages

  function setConn(kind, text) {
    const pill = $("#conn");
    pill.setAttribute("data-state", kind);
    setText(pill, text);
  }

  function banner(kind, title, text, action) {
    const b = $("#banner");
    if (!kind) {
      b.hidden = true;
      return;
    }
    b.setAttribute("data-kind", kind);
    setText($("#banner-title"), title);
    const t = $("#banner-text");
    t.replaceChildren(text);
    if (action) t.append(action);
    b.hidden = false;
  }

  function stale(on) {
    $("#main").classList.toggle("stale", on);
  }

  function askForToken(wrong) {
    state.generation++;
    clearTimeout(state.timer);
    state.token = null;
    forgetToken();
    $("#main").hidden = true;
    $("#change-token").hidden = true;
    $("#login").hidden = false;
    const input = $("#token-input");
    input.value = "";
    if (wrong) {
      setConn("unauthorized", "wrong admin token");
      banner(
        "error",
        "Wrong admin token.",
        "The gateway refused it (401 unauthenticated), so the page has forgotten it. Enter the admin token again below.",
      );
    } else {
      setConn("connecting", "no token");
      banner(null);
    }
    input.focus();
  }

  function start(token) {
    state.token = token;
    state.generation++;
    state.prev = null;
    state.windows = [];
    $("#login").hidden = true;
    $("#change-token").hidden = false;
    setConn("connecting", "connecting…");
    banner(null);
    clearTimeout(state.timer);
    poll(state.generation);
  }

  // ---------------------------------------------------------------- the loop

  async function poll(generation) {
    const started = performance.now();
    const [sales, limits, metrics] = await Promise.allSettled([
      call("admin/v1/sales"),
      call("admin/v1/limits"),
      call("metrics", { admin: false, json: false }),
    ]);
    if (generation !== state.generation) return; // the token changed meanwhile
    const failures = [sales, limits].filter((r) => r.status === "rejected").map((r) => r.reason);
    if (failures.some((e) => e.kind === "unauthorized")) {
      askForToken(true);
      return;
    }
    if (failures.length) {
      const e = failures[0];
      stale(true);
      const since = state.lastOk ? " Showing the numbers from " + clock(state.lastOk) + "." : "";
      if (e.kind === "unreachable") {
        setConn("unreachable", "unreachable");
        banner("warn", "Gateway unreachable, retrying…", "No answer from " + location.host + " (" + e.message + ")." + since);
      } else {
        setConn("stale", "gateway error");
        banner("warn", "The gateway answered with an error, retrying…", e.message + "." + since);
      }
    } else {
      const now = performance.now();
      let snap = null;
      if (metrics.status === "fulfilled") {
        try { snap = snapshot(parseMetrics(metrics.value)); } catch (e) { snap = null; }
      }
      const prev = state.prev;
      const dt = prev ? (now - prev.t) / 1000 : null;
      const prevSnap = prev && snap ? prev.snap : null;
      const list = Array.isArray(sales.value.sales) ? sales.value.sales : [];
      const prevSales = prev ? prev.sales : null;
      $("#main").hidden = false;
      stale(false);
      try {
        renderCards(now, snap, prevSnap, dt, list);
        renderSales(list, !!sales.value.truncated, snap, prevSnap, prevSales, dt);
        renderOutcomes(snap, prevSnap, dt);
        renderLimits(limits.value);
        state.prev = { t: now, snap, sales: new Map(list.map((v) => [String(v.sale_id), v])) };
        state.lastOk = new Date();
        setText($("#updated"), "updated " + clock(state.lastOk) + " · every " + POLL_MS / 1000 + " s");
        if (snap) {
          setConn("live", "live");
          banner(null);
        } else {
          setConn("stale", "no metrics");
          const why = metrics.reason ? metrics.reason.message : "unreadable";
          banner("warn", "/metrics unavailable, retrying…", "Sales and limits are live; rates and latency are not (" + why + ").");
        }
      } catch (e) {
        // an answer this page does not understand (another gateway version?): say so, keep going
        console.error("seckill dashboard:", e);
        setConn("stale", "page error");
        banner("error", "The page could not show the gateway's answer.", String(e && e.message ? e.message : e));
      }
    }
    const wait = Math.max(100, POLL_MS - (performance.now() - started));
    state.timer = setTimeout(() => poll(generation), wait);
  }

  // ---------------------------------------------------------------- the limits form

  function limitsMessage(kind, text) {
    const msg = $("#limits-msg");
    msg.setAttribute("data-kind", kind);
    setText(msg, text);
  }

  async function submitLimits(event) {
    event.preventDefault();
    const form = $("#limits");
    const body = {};
    for (const input of form.querySelectorAll("input")) {
      if (input.getAttribute("data-dirty") !== "1") continue;
      const label = input.closest("label").firstChild.textContent.trim();
      const raw = input.value.trim();
      if (input.validity.badInput) {
        limitsMessage("error", label + ": not a number.");
        input.focus();
        return;
      }
      if (RATE_FIELDS.has(input.name)) {
        if (raw === "") {
          body[input.name] = null;
          continue;
        }
        const n = Number(raw);
        if (!(n > 0) || !Number.isFinite(n)) {
          limitsMessage("error", label + " must be a number > 0, or empty for unlimited.");
          input.focus();
          return;
        }
        body[input.name] = n;
      } else {
        const n = Number(raw);
        if (raw === "" || !Number.isInteger(n) || n < 1) {
          limitsMessage("error", label + " must be a whole number ≥ 1.");
          input.focus();
          return;
        }
        body[input.name] = n;
      }
    }
    if (!Object.keys(body).length) {
      limitsMessage("error", "Nothing to apply: change a field first.");
      return;
    }
    const generation = state.generation;
    limitsMessage("", "Applying…");
    try {
      const stored = await call("admin/v1/limits", { method: "PUT", body });
      if (generation !== state.generation) return;
      for (const input of form.querySelectorAll("input")) input.removeAttribute("data-dirty");
      document.activeElement && document.activeElement.blur();
      renderLimits(stored);
      limitsMessage("ok", "Applied at " + clock(new Date()) + ".");
    } catch (e) {
      if (generation !== state.generation) return;
      if (e.kind === "unauthorized") askForToken(true);
      else if (e.kind === "unreachable") limitsMessage("error", "Not applied: the gateway is unreachable (" + e.message + ").");
      else limitsMessage("error", "Not applied: " + e.message);
    }
  }

  function resetLimits() {
    for (const input of $("#limits").querySelectorAll("input")) input.removeAttribute("data-dirty");
    if (state.limits) renderLimits(state.limits);
    limitsMessage("", "");
  }

  // ---------------------------------------------------------------- start

  function init() {
    for (const name of ["requests", "admitted", "rejected", "latency", "delivered", "backlog", "workers", "ratelimited"]) {
      cards[name] = card(name);
    }
    $("#login").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("#token-input").value.trim();
      if (!token) return;
      if (!plausibleToken(token)) {
        banner("error", "That cannot be the admin token.", "It has spaces or characters outside ASCII.");
        return;
      }
      saveToken(token);
      start(token);
    });
    $("#change-token").addEventListener("click", () => askForToken(false));
    const form = $("#limits");
    form.addEventListener("submit", submitLimits);
    form.addEventListener("input", (event) => {
      if (event.target.matches("input")) event.target.setAttribute("data-dirty", "1");
    });
    $("#limits-reset").addEventListener("click", resetLimits);

    // ?token=… : keep it in this tab's sessionStorage and take it out of the address bar
    const url = new URL(location.href);
    if (url.searchParams.has("token")) {
      const given = (url.searchParams.get("token") || "").trim();
      url.searchParams.delete("token");
      history.replaceState(null, "", url.pathname + url.search + url.hash);
      if (given && plausibleToken(given)) saveToken(given);
    }
    const token = loadToken();
    if (token && plausibleToken(token)) start(token);
    else askForToken(false);
  }

  // for the browser test: the pure functions
  window.seckillDashboard = { parseMetrics, histogram, histogramDelta, quantile };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
