// DOM helpers and the small widgets every page uses. Text from the API always goes in as text
// nodes or attribute values, never as HTML.

export const SEVERITIES = ["info", "low", "medium", "high", "critical"];

// An element with attributes (`on…` ones become listeners) and children (strings become text).
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children.flat(Infinity)) if (child) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// Replaces the page's content.
export function render(...nodes) {
  const main = document.getElementById("main");
  // Pages pass `cond ? node : null`; replaceChildren would show those as the text "null".
  main.replaceChildren(...nodes.flat(Infinity).filter((node) => node !== null && node !== undefined && node !== false));
}

export function showError(error) {
  render(el("p", { class: "error" }, error.message || String(error)));
}

export function fmtTime(value) {
  if (!value) return "—";
  return new Date(value).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function fmtBytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function commaList(text) {
  return text.split(",").map((item) => item.trim()).filter(Boolean);
}

// "?a=1&b=2" from the parameters that have a value, or "".
export function query(params) {
  const entries = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "");
  return entries.length ? "?" + new URLSearchParams(entries).toString() : "";
}

export function sev(severity) {
  return el("span", { class: `sev ${severity}` }, severity);
}

// A table of `rows`, one column per { title, value(row), class }; rows clickable with `onClick`.
export function table(columns, rows, onClick) {
  return el("table", {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c.title)))),
    el("tbody", {}, rows.map((row) => el("tr", { class: onClick ? "clickable" : null, onclick: onClick ? () => onClick(row) : null },
      columns.map((c) => el("td", { class: c.class }, c.value(row)))))));
}

// A resource id, linked to the audit trail of the events that named it.
export function resourceLink(id) {
  return el("a", { href: "#/audit" + query({ resource: id, read_only: "false" }), title: "who changed this resource" }, id);
}

// A configuration change, one line per changed path.
export function diffList(diff) {
  return el("ul", { class: "diff mono" }, diff.map((d) => el("li", { class: d.op },
    `${d.op} ${d.path}: `, d.old !== undefined ? JSON.stringify(d.old) : "", d.old !== undefined && d.new !== undefined ? " → " : "",
    d.new !== undefined ? JSON.stringify(d.new) : "")));
}
