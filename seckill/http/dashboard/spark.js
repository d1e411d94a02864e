// Sparklines: the last HISTORY values of a series as a small SVG.

import { svgEl } from "./dom.js";

export const HISTORY = 90; // points: the last ~90 s at one poll a second
const MIN_SPAN = 20; // a young history is drawn over at least this many points
const W = 120;
const H = 24;

/** Append *value* to *list*, keeping the last HISTORY. */
export function pushHistory(list, value) {
  list.push(value);
  if (list.length > HISTORY) list.splice(0, list.length - HISTORY);
}

/** An empty sparkline (the ones in the HTML are the same). */
export function newSpark() {
  return svgEl("svg", {
    class: "spark",
    viewBox: "0 0 " + W + " " + H,
    preserveAspectRatio: "none",
    "data-field": "spark",
  });
}

/** Draw the area under *main*, and *second* as a line, on one scale, right-aligned. */
export function spark(svg, main, second) {
  const values = main.concat(second || []).filter((v) => v != null && Number.isFinite(v));
  const max = values.length ? Math.max(...values) : 0;
  const scale = max > 0 ? (H - 2) / max : 0;
  const span = Math.max(MIN_SPAN, main.length, second ? second.length : 0);
  const x = (i, n) => W - (n - 1 - i) * (W / (span - 1));
  const y = (v) => H - 1 - (v == null || !Number.isFinite(v) ? 0 : v * scale);
  const points = (list) => list.map((v, i) => x(i, list.length).toFixed(1) + "," + y(v).toFixed(1));
  const kids = [];
  if (main.length > 1) {
    const line = points(main).join(" ");
    const first = x(0, main.length).toFixed(1);
    kids.push(svgEl("polygon", { points: line + " " + W + "," + H + " " + first + "," + H }));
    kids.push(svgEl("polyline", { points: line }));
  }
  if (second && second.length > 1) {
    kids.push(svgEl("polyline", { class: "second", points: points(second).join(" ") }));
  }
  svg.replaceChildren(...kids);
  svg.setAttribute("data-max", String(max)); // the peak shown (the tests read it)
}
