// seckill dashboard: the entry module. Plain JavaScript modules, no build step,
// no dependencies, nothing fetched from elsewhere.
//
// Every second it reads, from the gateway that served it (admin token):
//   GET /admin/v1/sales   every sale's admin view (stock, orders by status, backlog)
//   GET /admin/v1/limits  the token buckets (and PUT from the form, limits.js)
//   GET /admin/v1/stats   this gateway's counters: buy outcomes, latency histogram…
// and shows rates as differences between two polls over the time between them.
//
// The modules: api.js (calls), token.js (where the token lives), stats.js (pure
// arithmetic on the counters), format.js (numbers as text), dom.js (text-only
// DOM helpers), spark.js (sparklines), overview.js (cards, outcomes),
// sales.js (the sales table), limits.js (the limits form).

import { call } from "./api.js";
import { $, setText } from "./dom.js";
import { clock } from "./format.js";
import { renderLimits, setupLimits } from "./limits.js";
import { renderCards, renderOutcomes, resetOverview } from "./overview.js";
import { renderSales } from "./sales.js";
import { snapshot } from "./stats.js";
import { forgetToken, loadToken, plausibleToken, saveToken, takeTokenFromAddress } from "./token.js";

const POLL_MS = 1000;

/** {token} while the page polls with it: a new object per token, so late answers for an old one are dropped. */
let session = null;
let timer = null;
let prev = null; // the last poll: {t, snap, sales: Map(id -> view)}
let lastOk = null;

// ---------------------------------------------------------------- status and messages

function setConn(kind, text) {
  const pill = $("#conn");
  pill.setAttribute("data-state", kind);
  setText(pill, text);
}

function banner(kind, title, text) {
  const b = $("#banner");
  if (!kind) {
    b.hidden = true;
    return;
  }
  b.setAttribute("data-kind", kind);
  setText($("#banner-title"), title);
  setText($("#banner-text"), text);
  b.hidden = false;
}

function stale(on) {
  $("#main").classList.toggle("stale", on);
}

// ---------------------------------------------------------------- the token

function askForToken(wrong) {
  session = null;
  clearTimeout(timer);
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
  session = { token };
  prev = null;
  resetOverview();
  $("#login").hidden = true;
  $("#change-token").hidden = false;
  setConn("connecting", "connecting…");
  banner(null);
  clearTimeout(timer);
  poll(session);
}

// ---------------------------------------------------------------- the loop

async function poll(s) {
  const started = performance.now();
  const [sales, limits, stats] = await Promise.allSettled([
    call("admin/v1/sales", { token: s.token }),
    call("admin/v1/limits", { token: s.token }),
    call("admin/v1/stats", { token: s.token }),
  ]);
  if (s !== session) return; // the token changed meanwhile
  const failed = (results) => results.filter((r) => r.status === "rejected").map((r) => r.reason);
  if (failed([sales, limits, stats]).some((e) => e.kind === "unauthorized")) {
    askForToken(true);
    return;
  }
  const failures = failed([sales, limits]);
  if (failures.length) {
    const e = failures[0];
    stale(true);
    const since = lastOk ? " Showing the numbers from " + clock(lastOk) + "." : "";
    if (e.kind === "unreachable") {
      setConn("unreachable", "unreachable");
      banner("warn", "Gateway unreachable, retrying…", "No answer from " + location.host + " (" + e.message + ")." + since);
    } else {
      setConn("stale", "gateway error");
      banner("warn", "The gateway answered with an error, retrying…", e.message + "." + since);
    }
  } else {
    show(sales.value, limits.value, stats);
  }
  const wait = Math.max(100, POLL_MS - (performance.now() - started));
  timer = setTimeout(() => poll(s), wait);
}

/** One poll's answers on the page; *stats* is the settled stats call (it may have failed). */
function show(sales, limits, stats) {
  const now = performance.now();
  let snap = null;
  let why = null; // why there are no stats
  if (stats.status === "fulfilled") {
    try {
      snap = snapshot(stats.value);
    } catch (e) {
      why = "an answer this page cannot read: " + e.message;
    }
  } else {
    why = stats.reason.message;
  }
  const dt = prev ? (now - prev.t) / 1000 : null;
  const prevSnap = prev && snap ? prev.snap : null;
  const list = Array.isArray(sales.sales) ? sales.sales : [];
  $("#main").hidden = false;
  stale(false);
  try {
    renderCards(now, snap, prevSnap, dt, list);
    renderSales(list, !!sales.truncated, snap, prevSnap, prev ? prev.sales : null, dt);
    renderOutcomes(snap, prevSnap, dt);
    renderLimits(limits);
    prev = { t: now, snap, sales: new Map(list.map((v) => [String(v.sale_id), v])) };
    lastOk = new Date();
    setText($("#updated"), "updated " + clock(lastOk) + " · every " + POLL_MS / 1000 + " s");
    if (snap) {
      setConn("live", "live");
      banner(null);
    } else {
      setConn("stale", "no stats");
      banner(
        "warn",
        "Gateway stats unavailable, retrying…",
        "Sales and limits are live; rates and latency are not (GET /admin/v1/stats: " + why + ").",
      );
    }
  } catch (e) {
    // an answer this page does not understand (another gateway version?): say so, keep going
    console.error("seckill dashboard:", e);
    setConn("stale", "page error");
    banner("error", "The page could not show the gateway's answer.", String(e && e.message ? e.message : e));
  }
}

// ---------------------------------------------------------------- start

function init() {
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
  setupLimits({ session: () => session, onUnauthorized: () => askForToken(true) });

  takeTokenFromAddress();
  const token = loadToken();
  if (token && plausibleToken(token)) start(token);
  else askForToken(false);
}

init(); // a module runs once the document is parsed
