// The limits panel: the live token buckets (GET /admin/v1/limits) and the form
// that changes them (PUT /admin/v1/limits with only the fields edited).

import { call } from "./api.js";
import { $, setText } from "./dom.js";
import { clock, fmtLimit } from "./format.js";

const RATE_FIELDS = new Set(["rate", "per_user_rate"]); // empty = unlimited (null)
let shown = null; // the limits last shown

/** Show *limits*; the inputs being edited (or with the focus) keep what the operator typed. */
export function renderLimits(limits) {
  shown = limits;
  setText(
    $("#limits-current"),
    "sale " + fmtLimit(limits.rate, limits.burst) + "; per user " + fmtLimit(limits.per_user_rate, limits.per_user_burst),
  );
  for (const input of $("#limits").querySelectorAll("input")) {
    if (input.getAttribute("data-dirty") === "1" || document.activeElement === input) continue;
    const v = limits[input.name];
    const text = v == null ? "" : String(v);
    if (input.value !== text) input.value = text;
  }
}

function message(kind, text) {
  const msg = $("#limits-msg");
  msg.setAttribute("data-kind", kind);
  setText(msg, text);
}

/** The PUT body from the edited inputs: {body}, or {error, input} for the first bad one. */
function editedBody(form) {
  const body = {};
  for (const input of form.querySelectorAll("input")) {
    if (input.getAttribute("data-dirty") !== "1") continue;
    const label = input.closest("label").firstChild.textContent.trim();
    const raw = input.value.trim();
    const n = Number(raw);
    if (input.validity.badInput) return { error: label + ": not a number.", input };
    if (RATE_FIELDS.has(input.name)) {
      if (raw === "") body[input.name] = null;
      else if (n > 0 && Number.isFinite(n)) body[input.name] = n;
      else return { error: label + " must be a number > 0, or empty for unlimited.", input };
    } else if (raw !== "" && Number.isInteger(n) && n >= 1) {
      body[input.name] = n;
    } else {
      return { error: label + " must be a whole number ≥ 1.", input };
    }
  }
  return { body };
}

/**
 * Wire the form. *session()* is the current {token} (a new object per token,
 * null without one); *onUnauthorized()* asks for the token again.
 */
export function setupLimits({ session, onUnauthorized }) {
  const form = $("#limits");
  form.addEventListener("input", (event) => {
    if (event.target.matches("input")) event.target.setAttribute("data-dirty", "1");
  });
  $("#limits-reset").addEventListener("click", () => {
    for (const input of form.querySelectorAll("input")) input.removeAttribute("data-dirty");
    if (shown) renderLimits(shown);
    message("", "");
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const { body, error, input } = editedBody(form);
    if (error) {
      message("error", error);
      input.focus();
      return;
    }
    if (!Object.keys(body).length) {
      message("error", "Nothing to apply: change a field first.");
      return;
    }
    const s = session();
    if (!s) return;
    message("", "Applying…");
    try {
      const stored = await call("admin/v1/limits", { token: s.token, method: "PUT", body });
      if (s !== session()) return; // the token changed meanwhile
      for (const input of form.querySelectorAll("input")) input.removeAttribute("data-dirty");
      if (document.activeElement) document.activeElement.blur();
      renderLimits(stored);
      message("ok", "Applied at " + clock(new Date()) + ".");
    } catch (e) {
      if (s !== session()) return;
      if (e.kind === "unauthorized") onUnauthorized();
      else if (e.kind === "unreachable") message("error", "Not applied: the gateway is unreachable (" + e.message + ").");
      else message("error", "Not applied: " + e.message);
    }
  });
}
