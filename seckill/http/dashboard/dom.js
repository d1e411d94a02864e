// The page's only way to put data in the DOM. Data (sale names are user input)
// goes in as text: textContent, Text nodes, setAttribute — never innerHTML.

export const SVG_NS = "http://www.w3.org/2000/svg";

export const $ = (sel, root) => (root || document).querySelector(sel);

/** An element; attrs.text becomes its text, the other attrs attributes; strings in kids become Text nodes. */
export function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  e.append(...kids);
  return e;
}

export function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

/** Set a node's text, touching the DOM only if it changed. */
export function setText(node, text) {
  const t = String(text);
  if (node.textContent !== t) node.textContent = t;
}
