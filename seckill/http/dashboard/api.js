// Calls to the gateway that served the page: its admin API, with the token,
// JSON both ways, and a deadline. Every failure is a CallError of a kind the
// page knows how to say.

export const TIMEOUT_MS = 3000;

export class CallError extends Error {
  constructor(kind, message, status) {
    super(message);
    this.kind = kind; // unauthorized | unreachable | refused (4xx) | server (5xx, unreadable)
    this.status = status || 0;
  }
}

/** fetch *path* (relative to the page) with the admin token; resolves to the JSON body. */
export async function call(path, { token, method = "GET", body } = {}) {
  const headers = { Accept: "application/json", Authorization: "Bearer " + token };
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
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new CallError("server", "the gateway answered something that is not JSON");
    }
  } finally {
    clearTimeout(timer);
  }
}
