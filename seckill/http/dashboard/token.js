// Where the admin token lives: this tab's sessionStorage (memory if that is off).
// Nothing else keeps it; a ?token= in the address is taken once and removed.

const TOKEN_KEY = "seckill.adminToken";
const memory = { token: null };

export function loadToken() {
  try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return memory.token; }
}

export function saveToken(token) {
  memory.token = token;
  try { sessionStorage.setItem(TOKEN_KEY, token); } catch (e) { /* memory only */ }
}

export function forgetToken() {
  memory.token = null;
  try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* memory only */ }
}

/** A header can carry visible ASCII only; anything else is surely not the token. */
export function plausibleToken(token) {
  return /^[\x21-\x7e]+$/.test(token);
}

/** ?token=…: keep it (if it can be a token) and take it out of the address bar and history. */
export function takeTokenFromAddress() {
  const url = new URL(location.href);
  if (!url.searchParams.has("token")) return;
  const given = (url.searchParams.get("token") || "").trim();
  url.searchParams.delete("token");
  history.replaceState(null, "", url.pathname + url.search + url.hash);
  if (given && plausibleToken(given)) saveToken(given);
}
