// Building the page with DOM calls only: text is always a text node, never parsed as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function setAttributes(node, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else if (name === "text") {
      node.textContent = String(value);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  return node;
}

// h("a", {href: "#/x"}, "text", child, [more]) -> an HTML element
export function h(tag, attrs, ...children) {
  return append(setAttributes(document.createElement(tag), attrs), children);
}

// s("rect", {x: 1}) -> an SVG element (presentation attributes, no inline style: the CSP forbids it)
export function s(tag, attrs, ...children) {
  return append(setAttributes(document.createElementNS(SVG_NS, tag), attrs), children);
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

export function replace(node, ...children) {
  return append(clear(node), children);
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

export function bytes(n) {
  n = Number(n);
  if (!Number.isFinite(n)) return "—";
  let unit = 0;
  let value = Math.abs(n);
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const text = unit === 0 ? String(value) : value.toFixed(value < 10 ? 2 : 1);
  return (n < 0 ? "-" : "") + text + " " + UNITS[unit];
}

// the exact figure for a title/tooltip: 1234567 -> "1,234,567 bytes"
export function exactBytes(n) {
  return Number(n).toLocaleString("en-US") + " bytes";
}

export function duration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "—";
  seconds = Math.round(seconds);
  if (seconds < 60) return seconds + " s";
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return minutes + " min " + (seconds % 60) + " s";
  return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
}

// microseconds since the epoch -> "2026-11-15 10:04:05.123456 UTC"
export function timestampUs(us) {
  const ms = Math.floor(Number(us) / 1000);
  const iso = new Date(ms).toISOString();
  const micro = String(Number(us) % 1_000_000).padStart(6, "0");
  return iso.slice(0, 10) + " " + iso.slice(11, 19) + "." + micro + " UTC";
}

export function isoDate(text) {
  if (!text) return "—";
  return String(text).replace("T", " ").replace(/\.\d+/, "").replace(/\+00:00$|Z$/, " UTC");
}

// a table inside a keyboard-scrollable region (narrow windows scroll it sideways)
export function table(label, headers, rows, attrs = {}) {
  return h("div", {class: "table-wrap", role: "region", "aria-label": label, tabindex: "0"},
    h("table", attrs,
      h("caption", {class: "visually-hidden"}, label),
      h("thead", {}, h("tr", {}, headers.map((title) => h("th", {scope: "col"}, title)))),
      h("tbody", {}, rows)));
}

export function encodeKey(key) {
  // each segment on its own: "/" stays a separator, everything else is escaped
  return key.split("/").map(encodeURIComponent).join("/");
}
