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

// A page that could not be drawn: a heading that says so, and the server's reason.
export function showError(error) {
  const title = error.status === 404 ? "Not found" : "This page could not be loaded";
  render(el("h1", {}, title), el("p", { class: "error", role: "alert" }, error.message || String(error)));
}

// A labelled control: `<label for=id>text</label>` then the control, and a place for its error
// (`showFieldError`) right after it, tied to it with aria-describedby.
export function field(text, control, extra) {
  const error = el("span", { class: "field-error", id: `${control.id}-error`, role: "alert" });
  control.setAttribute("aria-describedby", error.id);
  return el("div", { class: "field" }, el("label", { for: control.id }, text), control, extra || null, error);
}

// Shows `message` next to the control (or clears it with null) and marks it invalid.
export function showFieldError(control, message) {
  const error = document.getElementById(`${control.id}-error`);
  if (error) error.textContent = message || "";
  if (message) control.setAttribute("aria-invalid", "true");
  else control.removeAttribute("aria-invalid");
}

// A list of facts, one `dt`/`dd` pair per [name, value] (null values left out).
export function facts(pairs) {
  return el("dl", { class: "facts" }, pairs.filter(([, value]) => value !== null && value !== undefined && value !== "")
    .map(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]));
}

const regionNames = typeof Intl !== "undefined" && Intl.DisplayNames ? new Intl.DisplayNames(["en"], { type: "region" }) : null;

// "Ukraine (UA)" for "UA"; the code alone when the browser knows no name.
export function countryName(code) {
  if (!code) return "—";
  const name = regionNames ? regionNames.of(String(code).toUpperCase()) : null;
  return name && name !== code ? `${name} (${code})` : String(code);
}

let countryTable = null;

// Every ISO 3166 alpha-2 code the browser names, with its English name, sorted by name.
export function countries() {
  if (countryTable) return countryTable;
  countryTable = [];
  const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  for (const a of letters) for (const b of letters) {
    const code = a + b;
    let name = null;
    try { name = regionNames ? regionNames.of(code) : null; } catch { name = null; }
    if (name && name !== code && !/^(Unknown|EU|EZ|UN|QO|XA|XB|ZZ)/.test(name) && !["EU", "EZ", "UN", "QO", "XA", "XB", "ZZ", "AA", "XK"].includes(code)) countryTable.push({ code, name });
  }
  countryTable.sort((x, y) => x.name.localeCompare(y.name));
  return countryTable;
}

// The alpha-2 code a person typed: a code ("ua"), a name ("Ukraine", any case) or "Name (UA)";
// null when it is none of these.
export function countryCode(text) {
  const value = String(text || "").trim();
  if (!value) return "";
  const inParens = value.match(/\(([A-Za-z]{2})\)$/);
  if (inParens) return inParens[1].toUpperCase();
  const table = countries();
  if (/^[A-Za-z]{2}$/.test(value) && table.some((c) => c.code === value.toUpperCase())) return value.toUpperCase();
  const found = table.find((c) => c.name.toLowerCase() === value.toLowerCase());
  return found ? found.code : null;
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

// IANA protocol numbers as people say them.
export function protocolName(number) {
  if (number === null || number === undefined) return "—";
  return { 1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6" }[number] || `protocol ${number}`;
}

// A table with a caption (its accessible name), or a muted line when there are no rows.
export function captioned(caption, columns, rows, empty) {
  if (!rows.length) return el("p", { class: "muted" }, empty);
  const drawn = table(columns, rows);
  drawn.prepend(el("caption", { class: "visually-hidden" }, caption));
  return drawn;
}
