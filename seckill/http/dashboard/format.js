// How the page writes numbers: "—" when unknown, thousands separators,
// rates per second and durations in milliseconds. Pure functions.

const intFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

export function fmtInt(n) {
  return n == null || !Number.isFinite(n) ? "—" : intFormat.format(Math.round(n));
}

export function fmtRate(r) {
  if (r == null || !Number.isFinite(r)) return "—";
  if (r === 0) return "0";
  if (r < 1) return r.toFixed(2);
  if (r < 10) return r.toFixed(1);
  if (r < 100000) return intFormat.format(Math.round(r));
  return intFormat.format(Math.round(r / 1000)) + "k";
}

/** Seconds as milliseconds; Infinity (past the histogram's last bound) as "> <that bound>". */
export function fmtMs(seconds, maxBound) {
  if (seconds == null || Number.isNaN(seconds)) return "—";
  if (seconds === Infinity) {
    return maxBound != null && Number.isFinite(maxBound) ? "> " + fmtMs(maxBound) : "∞";
  }
  const ms = seconds * 1000;
  if (ms < 10) return ms.toFixed(2);
  if (ms < 100) return ms.toFixed(1);
  return intFormat.format(Math.round(ms));
}

export function fmtLimit(rate, burst) {
  return (rate == null ? "unlimited" : fmtRate(rate) + "/s") + ", burst " + fmtInt(burst);
}

export function clock(date) {
  return date.toLocaleTimeString("en-GB", { hour12: false });
}
