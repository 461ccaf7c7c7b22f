// Skywarden dashboard. Plain JavaScript, no build step, nothing loaded from elsewhere.
// Every value shown comes from the API and is written with textContent, never as HTML.
"use strict";

const state = { csrf: null, user: null, role: null, world: null, flash: null };
const ROLE_RANK = { viewer: 1, analyst: 2, admin: 3 };

// ---------------------------------------------------------------- helpers

function el(tag, attrs, ...children) {
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

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children.flat(Infinity)) if (child) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.field = body && body.field;
  }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (options.method && options.method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    credentials: "same-origin",
  });
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = text; }
  if (response.status === 401 && path !== "/api/v1/session") {
    state.user = null;
    location.hash = "#/login";
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

function query(params) {
  const entries = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "");
  return entries.length ? "?" + new URLSearchParams(entries).toString() : "";
}

function fmtTime(value) {
  if (!value) return "—";
  return new Date(value).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function fmtBytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function sev(severity) {
  return el("span", { class: `sev ${severity}` }, severity);
}

function table(columns, rows, onClick) {
  return el("table", {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c.title)))),
    el("tbody", {}, rows.map((row) => el("tr", { class: onClick ? "clickable" : null, onclick: onClick ? () => onClick(row) : null },
      columns.map((c) => el("td", { class: c.class }, c.value(row)))))));
}

function render(...nodes) {
  const main = document.getElementById("main");
  // Pages pass `cond ? node : null`; replaceChildren would show those as the text "null".
  main.replaceChildren(...nodes.flat(Infinity).filter((node) => node !== null && node !== undefined && node !== false));
}

function showError(error) {
  render(el("p", { class: "error" }, error.message || String(error)));
}

function resourceLink(id) {
  return el("a", { href: "#/audit" + query({ resource: id, read_only: "false" }), title: "who changed this resource" }, id);
}

function can(role) {
  return ROLE_RANK[state.role] >= ROLE_RANK[role];
}

// ---------------------------------------------------------------- charts and map

function barChart(points, { label, value, failed, height = 140 }) {
  const width = 900;
  const max = Math.max(1, ...points.map(value));
  const barWidth = Math.max(1, width / Math.max(points.length, 1) - 1);
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height + 18}`, width: "100%" });
  points.forEach((point, i) => {
    const h = (value(point) / max) * height;
    const x = i * (barWidth + 1);
    chart.append(svg("rect", { x, y: height - h, width: barWidth, height: h }, svg("title", {}, `${label(point)}: ${value(point)}`)));
    if (failed) {
      const f = (failed(point) / max) * height;
      if (f > 0) chart.append(svg("rect", { class: "failed", x, y: height - f, width: barWidth, height: f }));
    }
  });
  if (points.length) {
    chart.append(svg("text", { x: 0, y: height + 14 }, label(points[0])));
    chart.append(svg("text", { x: width, y: height + 14, "text-anchor": "end" }, label(points[points.length - 1])));
  }
  return chart;
}

// TopoJSON (world-atlas, Natural Earth data) decoded to polygons of [lon, lat].
function decodeTopology(topo, name) {
  const { scale, translate } = topo.transform;
  const arcs = topo.arcs.map((arc) => {
    let x = 0, y = 0;
    return arc.map(([dx, dy]) => { x += dx; y += dy; return [x * scale[0] + translate[0], y * scale[1] + translate[1]]; });
  });
  const arcPoints = (i) => (i >= 0 ? arcs[i] : arcs[~i].slice().reverse());
  const ring = (indexes) => indexes.flatMap((i, k) => (k ? arcPoints(i).slice(1) : arcPoints(i)));
  return topo.objects[name].geometries.map((g) => {
    const polygons = g.type === "Polygon" ? [g.arcs] : g.type === "MultiPolygon" ? g.arcs : [];
    return { name: g.properties && g.properties.name, polygons: polygons.map((p) => p.map(ring)) };
  });
}

async function worldMap(usual, alertPoints) {
  if (!state.world) {
    const topo = await fetch("/assets/countries-110m.json").then((r) => r.json());
    state.world = decodeTopology(topo, "countries");
  }
  const W = 960, H = 480;
  const project = ([lon, lat]) => [((lon + 180) / 360) * W, ((90 - lat) / 180) * H];
  const map = svg("svg", { class: "map", viewBox: `0 0 ${W} ${H}`, "data-testid": "login-map" });
  // A ring that jumps across the antimeridian starts a new sub-path there instead of drawing
  // a line across the whole map.
  const ringPath = (ring) => ring.map((p, i) => {
    const jump = i > 0 && Math.abs(p[0] - ring[i - 1][0]) > 180;
    return (i === 0 || jump ? "M" : "L") + project(p).map((v) => v.toFixed(1)).join(",");
  }).join("") + "Z";
  for (const country of state.world) {
    const d = country.polygons.map((polygon) => polygon.map(ringPath).join("")).join("");
    map.append(svg("path", { d }, svg("title", {}, country.name || "")));
  }
  const maxLogins = Math.max(1, ...usual.map((u) => u.logins));
  for (const place of usual) {
    if (place.latitude == null) continue;
    const [x, y] = project([place.longitude, place.latitude]);
    map.append(svg("circle", { class: "usual", cx: x, cy: y, r: 4 + 8 * Math.sqrt(place.logins / maxLogins) },
      svg("title", {}, `${place.city || place.country}: ${place.logins} logins (${place.failed} failed)`)));
  }
  for (const point of alertPoints) {
    if (point.latitude == null) continue;
    const [x, y] = project([point.longitude, point.latitude]);
    map.append(svg("circle", { class: "alert", cx: x, cy: y, r: 6 },
      svg("title", {}, `${point.source_ip} ${point.city || point.country || ""} ${fmtTime(point.event_time)}`)));
  }
  return map;
}

// ---------------------------------------------------------------- pages

async function loginPage() {
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  const message = el("p", { class: "error", role: "alert" });
  const username = el("input", { name: "username", autocomplete: "username", id: "username" });
  const password = el("input", { name: "password", type: "password", autocomplete: "current-password", id: "password" });
  const token = el("input", { name: "token", type: "password", autocomplete: "off", id: "token", placeholder: "or an API token" });
  const form = el("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      const body = token.value ? { token: token.value } : { username: username.value, password: password.value };
      try {
        const session = await api("/api/v1/session", { method: "POST", body });
        startSession(session);
        location.hash = "#/overview";
      } catch (error) {
        message.textContent = error.message;
      }
    },
  },
  el("label", {}, "User name", username),
  el("label", {}, "Password", password),
  el("label", {}, "API token", token),
  el("button", { type: "submit", id: "sign-in" }, "Sign in"),
  message);
  render(el("div", { class: "login panel" }, el("h1", {}, "Sign in to Skywarden"), form));
}

function startSession(session) {
  state.csrf = session.csrf_token;
  state.user = session.user;
  state.role = session.role;
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  document.getElementById("who").textContent = `${session.user} (${session.role})`;
  for (const link of document.querySelectorAll("nav a[data-role]")) link.hidden = !can(link.dataset.role);
}

async function overviewPage() {
  const [overview, changes, incidents] = await Promise.all([
    api("/api/v1/stats/overview"),
    api("/api/v1/changes?limit=10"),
    api("/api/v1/incidents"),
  ]);
  const open = overview.open_alerts;
  render(
    el("h1", {}, "Overview"),
    el("p", { class: "muted" }, `${fmtTime(overview.since)} to ${fmtTime(overview.until)}`),
    el("div", { class: "cards" },
      ["critical", "high", "medium", "low", "info"].map((s) => {
        const found = open.find((o) => o.severity === s);
        return el("a", { class: "card", href: "#/alerts" + query({ status: "open" }) },
          el("div", { class: "n" }, found ? found.count : 0), sev(s));
      })),
    el("h2", {}, "Events per hour (failed in red)"),
    el("div", { class: "panel" }, barChart(overview.events_per_hour, {
      label: (p) => fmtTime(p.hour).slice(0, 13) + "h", value: (p) => p.events, failed: (p) => p.failed,
    })),
    el("div", { class: "grid" },
      el("div", {}, el("h2", {}, "Console logins by country"),
        table([
          { title: "Country", value: (r) => r.country || "unknown" },
          { title: "Logins", value: (r) => r.logins },
          { title: "Failed", value: (r) => r.failed },
        ], overview.logins_by_country)),
      el("div", {}, el("h2", {}, "Incidents"),
        table([
          { title: "Severity", value: (r) => sev(r.severity) },
          { title: "Principal", value: (r) => r.principal || "—" },
          { title: "From", value: (r) => r.source_ip || "—" },
          { title: "Alerts", value: (r) => r.timeline.length },
          { title: "Started", value: (r) => fmtTime(r.first_seen) },
        ], incidents)),
      el("div", {}, el("h2", {}, "Recent configuration changes"),
        changes.length ? table([
          { title: "When", value: (r) => fmtTime(r.detected_at) },
          { title: "Resource", value: (r) => el("a", { href: `#/resource/${r.account_id}/${r.resource_type}/${encodeURIComponent(r.resource_id)}` }, r.resource_id) },
          { title: "Change", value: (r) => r.kind },
          { title: "By", value: (r) => r.principal_arn || "unknown yet" },
        ], changes) : el("p", { class: "muted" }, "No changes recorded (config snapshots come from onboarded accounts)."))),
  );
}

async function alertsPage(params) {
  const status = params.get("status") || "";
  const policy = params.get("policy") || "";
  const alerts = await api("/api/v1/alerts" + query({ status, policy }));
  const statusSelect = el("select", { name: "status" },
    ["", "open", "acknowledged", "resolved", "dismissed", "snoozed"].map((s) => el("option", { value: s, selected: s === status }, s || "any status")));
  const policyInput = el("input", { name: "policy", value: policy, placeholder: "policy id" });
  render(
    el("h1", {}, "Alerts"),
    el("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); location.hash = "#/alerts" + query({ status: statusSelect.value, policy: policyInput.value }); } },
      el("label", {}, "Status", statusSelect), el("label", {}, "Policy", policyInput), el("button", { type: "submit" }, "Filter")),
    table([
      { title: "Severity", value: (a) => sev(a.severity) },
      { title: "Alert", value: (a) => el("a", { href: `#/alert/${a.id}`, "data-policy": a.policy_id }, a.title) },
      { title: "Status", value: (a) => a.status },
      { title: "Principal", value: (a) => a.principal || "—" },
      { title: "Source", value: (a) => [a.source_ip || "—", a.country ? ` (${a.country})` : ""].join("") },
      { title: "Last seen", value: (a) => fmtTime(a.last_seen) },
      { title: "Events", value: (a) => a.event_count },
    ], alerts, (a) => { location.hash = `#/alert/${a.id}`; }),
  );
}

async function alertPage(id) {
  const { alert, evidence_events: evidence } = await api(`/api/v1/alerts/${encodeURIComponent(id)}`);
  const principal = alert.principal;
  const usual = principal ? await api("/api/v1/stats/login-locations" + query({ principal, account: alert.account_id })) : [];
  const alertIps = new Set(evidence.map((e) => e.source_ip));
  const start = new Date(new Date(alert.first_seen).getTime() - 2 * 3600e3).toISOString();
  const end = new Date(new Date(alert.last_seen).getTime() + 2 * 3600e3).toISOString();
  const around = principal ? await api("/api/v1/events" + query({ principal, since: start, until: end, limit: 200 })) : { events: [] };
  const map = await worldMap(usual.filter((u) => !evidence.some((e) => e.country === u.country && e.city === u.city)), evidence);

  const reason = el("input", { name: "reason", placeholder: "why (kept in the history)", size: 40, id: "triage-reason" });
  const triage = (status) => async () => {
    if (!reason.value.trim()) { reason.focus(); reason.placeholder = "a reason is required"; return; }
    await api(`/api/v1/alerts/${encodeURIComponent(id)}/status`, { method: "POST", body: { status, reason: reason.value } });
    route();
  };
  render(
    el("h1", {}, sev(alert.severity), " ", alert.title),
    el("p", { class: "muted" }, `${alert.policy_id} · ${alert.status} · account ${alert.account_id} · MITRE ${alert.mitre.join(", ") || "—"}`),
    el("div", { class: "grid" },
      el("div", { class: "panel" },
        el("p", {}, "Principal: ", principal || "—"),
        el("p", {}, "From: ", alert.source_ip || "—", alert.country ? ` (${alert.country})` : ""),
        el("p", {}, "First seen: ", fmtTime(alert.first_seen), " · last seen: ", fmtTime(alert.last_seen)),
        el("p", {}, "Resources: ", alert.resources.length ? alert.resources.map((r) => [resourceLink(r), " "]) : "—"),
        can("analyst") ? el("div", { class: "actions" }, reason,
          el("button", { onclick: triage("acknowledged"), id: "ack" }, "Acknowledge"),
          el("button", { onclick: triage("resolved") }, "Resolve"),
          el("button", { class: "secondary", onclick: triage("dismissed") }, "Dismiss")) : null),
      el("div", {},
        el("div", { class: "legend" }, el("span", {}, el("i", { class: "dot alert" }), "this alert"),
          el("span", {}, el("i", { class: "dot usual" }), `${principal || "the principal"}'s usual login locations`)),
        map)),
    el("h2", {}, "Evidence"),
    table([
      { title: "Time", value: (e) => fmtTime(e.event_time) },
      { title: "Event", value: (e) => e.event_name },
      { title: "Who", value: (e) => e.user_name || e.principal_arn || "—" },
      { title: "From", value: (e) => `${e.source_ip || "—"} ${e.city || ""} ${e.country || ""}` },
      { title: "Error", value: (e) => e.error_code || "" },
      { title: "Resources", value: (e) => e.resource_ids.map((r) => [resourceLink(r), " "]) },
    ], evidence),
    el("h2", {}, `${principal || "Principal"}'s activity two hours either side`),
    table([
      { title: "Time", value: (e) => fmtTime(e.event_time) },
      { title: "Event", value: (e) => e.event_name },
      { title: "From", value: (e) => `${e.source_ip || "—"} ${e.country || ""}` },
      { title: "Error", value: (e) => e.error_code || "" },
      { title: "In alert", value: (e) => (alertIps.has(e.source_ip) ? "●" : "") },
    ], around.events),
  );
}

const AUDIT_FILTERS = ["principal", "event_name", "event_source", "resource", "source_ip", "country", "since", "until", "failed", "read_only", "q"];

async function auditPage(params) {
  const filters = {};
  for (const name of AUDIT_FILTERS) if (params.get(name)) filters[name] = params.get(name);
  const cursor = params.get("cursor") || "";
  const page = await api("/api/v1/events" + query({ ...filters, cursor, limit: 100 }));
  const inputs = AUDIT_FILTERS.map((name) => el("input", { name, value: filters[name] || "", size: name === "q" ? 24 : 14, id: `filter-${name}` }));
  const search = (e) => {
    e.preventDefault();
    const next = {};
    inputs.forEach((input) => { if (input.value) next[input.name] = input.value; });
    location.hash = "#/audit" + query(next);
  };
  const rows = [];
  for (const event of page.events) {
    const detail = el("tr", { hidden: true }, el("td", { colspan: 8 }, el("pre", { class: "raw" }, "…")));
    const row = el("tr", {
      class: "clickable event-row",
      onclick: async () => {
        detail.hidden = !detail.hidden;
        if (!detail.hidden) {
          const full = await api(`/api/v1/events/${encodeURIComponent(event.account_id)}/${encodeURIComponent(event.event_id)}`);
          detail.querySelector("pre").textContent = JSON.stringify(full.raw, null, 2);
        }
      },
    },
    el("td", {}, fmtTime(event.event_time)),
    el("td", {}, event.event_name),
    el("td", {}, event.user_name || event.principal_arn || "—"),
    el("td", {}, event.source_ip || "—"),
    el("td", {}, [event.city, event.country].filter(Boolean).join(", ") || "—"),
    el("td", {}, event.error_code || ""),
    el("td", {}, event.resource_ids.map((r) => [resourceLink(r), " "])),
    el("td", { class: "mono" }, event.account_id));
    for (const link of row.querySelectorAll("a")) link.addEventListener("click", (e) => e.stopPropagation());
    rows.push(row, detail);
  }
  const heading = filters.resource ? `Who changed ${filters.resource}` : "Audit trail";
  render(
    el("h1", {}, heading),
    el("form", { class: "filters", onsubmit: search },
      inputs.map((input) => el("label", {}, input.name, input)), el("button", { type: "submit" }, "Search")),
    el("p", {},
      el("a", { href: "/api/v1/events/export" + query({ ...filters, format: "csv" }) }, "Export CSV"), " · ",
      el("a", { href: "/api/v1/events/export" + query({ ...filters, format: "jsonl" }) }, "Export JSON lines")),
    el("table", {},
      el("thead", {}, el("tr", {}, ["Time", "Event", "Who", "Source IP", "Location", "Error", "Resources", "Account"].map((t) => el("th", {}, t)))),
      el("tbody", { id: "events" }, rows)),
    page.events.length ? null : el("p", { class: "muted" }, "No events match."),
    page.next_cursor ? el("p", {}, el("a", { href: "#/audit" + query({ ...filters, cursor: page.next_cursor }) }, "Older events →")) : null,
  );
}

async function inventoryPage(params) {
  const type = params.get("type") || "";
  const q = params.get("q") || "";
  const resources = await api("/api/v1/resources" + query({ type, q, limit: 500 }));
  const typeInput = el("input", { name: "type", value: type, placeholder: "e.g. ec2:security-group" });
  const qInput = el("input", { name: "q", value: q, placeholder: "id or name" });
  render(
    el("h1", {}, "Inventory"),
    el("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); location.hash = "#/inventory" + query({ type: typeInput.value, q: qInput.value }); } },
      el("label", {}, "Type", typeInput), el("label", {}, "Search", qInput), el("button", { type: "submit" }, "Filter")),
    resources.length ? table([
      { title: "Type", value: (r) => r.resource_type },
      { title: "Id", value: (r) => el("a", { href: `#/resource/${r.account_id}/${r.resource_type}/${encodeURIComponent(r.resource_id)}` }, r.resource_id) },
      { title: "Name", value: (r) => r.name || "" },
      { title: "Region", value: (r) => r.region },
      { title: "Version", value: (r) => r.version },
      { title: "Last changed", value: (r) => fmtTime(r.last_changed) },
      { title: "State", value: (r) => (r.deleted_at ? `deleted ${fmtTime(r.deleted_at)}` : "present") },
    ], resources) : el("p", { class: "muted" }, "No resources yet: onboard an account and its config snapshots fill the inventory."),
  );
}

function diffList(diff) {
  return el("ul", { class: "diff mono" }, diff.map((d) => el("li", { class: d.op },
    `${d.op} ${d.path}: `, d.old !== undefined ? JSON.stringify(d.old) : "", d.old !== undefined && d.new !== undefined ? " → " : "",
    d.new !== undefined ? JSON.stringify(d.new) : "")));
}

async function resourcePage(account, type, id) {
  const r = await api(`/api/v1/resources/${encodeURIComponent(account)}/${encodeURIComponent(type)}/${id}`);
  render(
    el("h1", {}, `${r.resource_type} ${r.resource_id}`),
    el("p", { class: "muted" }, `${r.name || ""} · ${r.region} · account ${r.account_id} · version ${r.version}`, r.deleted_at ? ` · deleted ${fmtTime(r.deleted_at)}` : ""),
    el("p", {}, resourceLink(r.resource_id), " (every event that named it)"),
    el("h2", {}, "Changes"),
    r.changes.length ? table([
      { title: "Detected", value: (c) => fmtTime(c.detected_at) },
      { title: "Kind", value: (c) => c.kind },
      { title: "Diff", value: (c) => diffList(c.diff) },
      { title: "Caused by", value: (c) => (c.event ? `${c.event.event_name} by ${c.event.principal_arn || "?"} from ${c.event.source_ip || "?"} at ${fmtTime(c.event.event_time)}` : "not linked yet") },
    ], r.changes) : el("p", { class: "muted" }, "No change since it was first seen."),
    el("h2", {}, "Current configuration"),
    el("pre", {}, JSON.stringify(r.config, null, 2)),
    el("h2", {}, "Events that named it"),
    table([
      { title: "Time", value: (e) => fmtTime(e.event_time) },
      { title: "Event", value: (e) => e.event_name },
      { title: "Who", value: (e) => e.user_name || e.principal_arn || "—" },
      { title: "From", value: (e) => `${e.source_ip || "—"} ${e.country || ""}` },
    ], r.events),
  );
}

async function networkPage(params) {
  const address = params.get("address") || "";
  const [top, timeline] = await Promise.all([
    api("/api/v1/flows/top" + query({ address, limit: 50 })),
    api("/api/v1/flows/timeline" + query({ address })),
  ]);
  const input = el("input", { name: "address", value: address, placeholder: "an IP address" });
  render(
    el("h1", {}, "Network"),
    el("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); location.hash = "#/network" + query({ address: input.value }); } },
      el("label", {}, "Address", input), el("button", { type: "submit" }, "Filter")),
    el("h2", {}, "Bytes per hour"),
    el("div", { class: "panel" }, barChart(timeline.hours, { label: (p) => fmtTime(p.hour).slice(0, 13) + "h", value: (p) => p.bytes })),
    el("div", { class: "grid" },
      el("div", {}, el("h2", {}, "Top talkers"), table([
        { title: "Source", value: (t) => el("a", { href: "#/network" + query({ address: t.source }) }, t.source) },
        { title: "Destination", value: (t) => el("a", { href: "#/network" + query({ address: t.destination }) }, t.destination) },
        { title: "Country", value: (t) => t.destination_country || "—" },
        { title: "Bytes", value: (t) => fmtBytes(t.bytes) },
        { title: "Records", value: (t) => t.records },
      ], top)),
      el("div", {}, el("h2", {}, "Bytes by destination country"), table([
        { title: "Country", value: (d) => d.country || "private / unknown" },
        { title: "Bytes", value: (d) => fmtBytes(d.bytes) },
      ], timeline.destinations))),
  );
}

async function accountsPage() {
  const accounts = await api("/api/v1/accounts");
  const sections = [];
  for (const account of accounts) {
    const jobs = await api(`/api/v1/accounts/${account.account_id}/status`);
    sections.push(el("div", { class: "panel" },
      el("h2", {}, `${account.account_id} ${account.name || ""}`),
      el("p", { class: "muted" }, `${account.role_arn} · regions ${account.regions.join(", ")} · `,
        account.verify_error ? el("span", { class: "error" }, account.verify_error) : account.verified_at ? `role verified ${fmtTime(account.verified_at)}` : "role not verified yet"),
      table([
        { title: "Source", value: (j) => j.source },
        { title: "Region", value: (j) => j.region },
        { title: "Last success", value: (j) => fmtTime(j.last_success_at) },
        { title: "Lag", value: (j) => (j.lag_seconds == null ? "—" : `${Math.round(j.lag_seconds)} s`) },
        { title: "Items", value: (j) => j.items_total },
        { title: "Last error", value: (j) => (j.last_error ? el("span", { class: "error" }, j.last_error) : "") },
      ], jobs)));
  }
  const onboarding = can("admin") ? await onboardingForm() : null;
  render(el("h1", {}, "Accounts"), accounts.length ? sections : el("p", { class: "muted" }, "No account onboarded yet."), onboarding);
}

async function onboardingForm() {
  const roleArn = el("input", { name: "role_arn", size: 50, placeholder: "arn:aws:iam::123456789012:role/SkywardenReadOnly" });
  const name = el("input", { name: "name" });
  const regions = el("input", { name: "regions", value: "us-east-1" });
  const result = el("div", {});
  const form = el("form", {
    class: "filters",
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        const created = await api("/api/v1/accounts", { method: "POST", body: { role_arn: roleArn.value, name: name.value || null, regions: regions.value.split(",").map((r) => r.trim()).filter(Boolean) } });
        const template = await fetch("/api/v1/accounts/template", { credentials: "same-origin" }).then((r) => r.text());
        result.replaceChildren(
          el("p", {}, "External ID (shown only now): ", el("strong", { class: "mono", id: "external-id" }, created.external_id)),
          el("p", { class: "muted" }, "Deploy this CloudFormation template with ExternalId set to it, then the pollers start on their own."),
          el("pre", {}, template));
      } catch (error) {
        result.replaceChildren(el("p", { class: "error" }, error.field ? `${error.field}: ${error.message}` : error.message));
      }
    },
  }, el("label", {}, "Role ARN", roleArn), el("label", {}, "Name", name), el("label", {}, "Regions", regions), el("button", { type: "submit" }, "Onboard"));
  return el("div", {}, el("h2", {}, "Onboard an account"), form, result);
}

async function auditLogPage() {
  const entries = await api("/api/v1/audit-log?limit=200");
  render(el("h1", {}, "Skywarden audit log"), table([
    { title: "When", value: (e) => fmtTime(e.at) },
    { title: "Who", value: (e) => e.actor },
    { title: "Action", value: (e) => e.action },
    { title: "Target", value: (e) => e.target || "" },
    { title: "Client", value: (e) => e.client || "" },
    { title: "Details", value: (e) => el("span", { class: "mono" }, JSON.stringify(e.details)) },
  ], entries));
}

// ---------------------------------------------------------------- notifications

// What each channel kind takes, as the server checks it: `secret` fields go in `secrets` (sealed
// by the server; only their names ever come back), the others in `settings`. Empty fields are
// left out, so the server's defaults apply.
const CHANNEL_FIELDS = {
  slack: [{ name: "webhook_url", secret: true, placeholder: "https://hooks.slack.com/services/…" }],
  teams: [{ name: "webhook_url", secret: true, placeholder: "https://….webhook.office.com/…" }],
  pagerduty: [
    { name: "events_url", optional: true, placeholder: "https://events.pagerduty.com/v2/enqueue" },
    { name: "routing_key", secret: true },
  ],
  webhook: [
    { name: "url", placeholder: "https://siem.example.com/skywarden" },
    { name: "format", options: ["skywarden", "ocsf"] },
    { name: "signing_secret", secret: true },
  ],
  jira: [
    { name: "base_url", placeholder: "https://yourcompany.atlassian.net" },
    { name: "project_key", placeholder: "SEC", size: 8 },
    { name: "issue_type", value: "Task", size: 10 },
    { name: "email", placeholder: "the API token's account" },
    { name: "api_version", options: ["3", "2"], number: true },
    { name: "labels", list: true, optional: true, placeholder: "skywarden, aws" },
    { name: "api_token", secret: true },
  ],
  servicenow: [
    { name: "instance_url", placeholder: "https://yourinstance.service-now.com" },
    { name: "username" },
    { name: "assignment_group", optional: true },
    { name: "close_on_resolve", checkbox: true },
    { name: "password", secret: true },
  ],
  email: [
    { name: "host", placeholder: "smtp.example.com" },
    { name: "port", number: true, value: "587", size: 6 },
    { name: "security", options: ["starttls", "tls", "none"] },
    { name: "username", optional: true },
    { name: "from", placeholder: "skywarden@example.com" },
    { name: "to", list: true, placeholder: "soc@example.com, oncall@example.com" },
    { name: "ca_file", optional: true, placeholder: "/etc/skywarden/relay-ca.pem" },
    { name: "password", secret: true, optional: true },
  ],
};
const SEVERITIES = ["info", "low", "medium", "high", "critical"];
const DELIVERY_STATES = ["pending", "sending", "delivered", "dead"];

// A 400 names the field in its text already ("secrets.webhook_url: …"); other fields are added.
function errorText(error) {
  const message = error.message || String(error);
  return error.field && error.field !== "body" && !message.startsWith(error.field) ? `${error.field}: ${message}` : message;
}

// "HTTP 503: down", without saying the status twice when the text starts with it (sender errors do).
function withStatus(status, text) {
  const http = status ? `HTTP ${status}` : null;
  if (!text) return http || "";
  return http && !text.startsWith(http) ? `${http}: ${text}` : text;
}

function commaList(text) {
  return text.split(",").map((item) => item.trim()).filter(Boolean);
}

function fieldInput(field) {
  const id = `channel-${field.name}`;
  if (field.checkbox) return el("input", { id, name: field.name, type: "checkbox" });
  if (field.options) return el("select", { id, name: field.name }, field.options.map((o) => el("option", { value: o }, o)));
  return el("input", {
    id,
    name: field.name,
    type: field.secret ? "password" : field.number ? "number" : "text",
    autocomplete: field.secret ? "off" : null,
    required: !field.optional,
    value: field.value,
    placeholder: field.placeholder,
    size: field.size || (field.placeholder && field.placeholder.length > 20 ? 30 : 16),
  });
}

// The value to send, or undefined to leave the field out.
function fieldValue(field, input) {
  if (field.checkbox) return input.checked;
  const text = input.value.trim();
  if (!text) return undefined;
  if (field.list) return commaList(text);
  // A number the browser cannot read goes as typed, so the server's error names the field.
  if (field.number) return Number.isFinite(Number(text)) ? Number(text) : text;
  return text;
}

function settingsSummary(settings) {
  const entries = Object.entries(settings || {}).filter(([, v]) => v !== null && v !== "" && !(Array.isArray(v) && !v.length));
  if (!entries.length) return el("span", { class: "muted" }, "—");
  return el("div", { class: "mono settings" },
    entries.map(([key, value]) => el("div", {}, `${key}: ${Array.isArray(value) ? value.join(", ") : value}`)));
}

function channelsTable(channels, routes) {
  const rows = channels.map((channel) => {
    const result = el("span", { class: "result" });
    const show = (kind, text) => { result.className = `result ${kind}`; result.textContent = text; };
    const buttons = [];
    if (can("admin")) {
      const test = el("button", {
        type: "button",
        class: "secondary test",
        title: "send a sample alert now",
        onclick: async () => {
          test.disabled = true;
          show("muted", "sending…");
          try {
            const answer = await api(`/api/v1/channels/${channel.id}/test`, { method: "POST" });
            const detail = withStatus(answer.http_status, answer.delivered ? answer.note : answer.error);
            show(answer.delivered ? "ok" : "error", [answer.delivered ? "delivered" : "failed", detail].filter(Boolean).join(" · "));
          } catch (error) {
            show("error", errorText(error));
          } finally {
            test.disabled = false;
          }
        },
      }, "Test");
      buttons.push(test);
      if (channel.managed_by !== "file") {
        const used = routes.filter((r) => r.channel_id === channel.id).length;
        buttons.push(el("button", {
          type: "button",
          class: "danger delete",
          onclick: async () => {
            const also = used ? ` Its ${used} route(s) and its deliveries go with it.` : " Its deliveries go with it.";
            if (!confirm(`Delete the channel "${channel.name}"?${also}`)) return;
            try {
              await api(`/api/v1/channels/${channel.id}`, { method: "DELETE" });
              route();
            } catch (error) {
              show("error", errorText(error));
            }
          },
        }, "Delete"));
      }
    }
    return el("tr", { "data-channel": channel.name, class: channel.enabled ? null : "disabled" },
      el("td", {}, channel.name),
      el("td", {}, channel.kind),
      el("td", {}, settingsSummary(channel.settings)),
      el("td", { class: "mono" }, channel.secrets.length ? channel.secrets.join(", ") : "—"),
      el("td", {}, channel.managed_by === "file" ? el("span", { title: "from the notifications config file; change it there" }, "file (read-only)") : channel.managed_by),
      el("td", {}, channel.enabled ? "yes" : "no"),
      el("td", { class: "row-actions" }, buttons, result));
  });
  return el("table", { id: "channels" },
    el("thead", {}, el("tr", {}, ["Name", "Kind", "Settings", "Secrets set", "Managed by", "Enabled", ""].map((t) => el("th", {}, t)))),
    el("tbody", {}, rows));
}

function channelForm() {
  const name = el("input", { id: "channel-name", name: "name", required: true, placeholder: "e.g. soc-slack" });
  const kind = el("select", { id: "channel-kind", name: "kind" }, Object.keys(CHANNEL_FIELDS).map((k) => el("option", { value: k }, k)));
  const fields = el("div", { class: "fields" });
  let inputs = [];
  const showFields = () => {
    inputs = CHANNEL_FIELDS[kind.value].map((field) => ({ field, input: fieldInput(field) }));
    fields.replaceChildren(...inputs.map(({ field, input }) => el("label", { class: field.checkbox ? "check" : null },
      field.secret ? `${field.name} (secret${field.optional ? ", optional" : ""})` : field.optional ? `${field.name} (optional)` : field.name,
      input)));
  };
  kind.addEventListener("change", showFields);
  showFields();
  const message = el("p", { class: "error", role: "alert", id: "channel-error" });
  const form = el("form", {
    class: "filters",
    id: "new-channel",
    onsubmit: async (event) => {
      event.preventDefault();
      message.textContent = "";
      const settings = {};
      const secrets = {};
      for (const { field, input } of inputs) {
        const value = fieldValue(field, input);
        if (value !== undefined) (field.secret ? secrets : settings)[field.name] = value;
      }
      try {
        await api("/api/v1/channels", { method: "POST", body: { name: name.value.trim(), kind: kind.value, settings, secrets } });
        route();
      } catch (error) {
        message.textContent = errorText(error);
      }
    },
  },
  el("label", {}, "Name", name),
  el("label", {}, "Kind", kind),
  fields,
  el("button", { type: "submit", id: "create-channel" }, "Create channel"));
  return el("div", { class: "panel new" }, el("h2", {}, "New channel"), form, message,
    el("p", { class: "muted" }, "Secrets are sealed by the server and never shown again; only their names are listed."));
}

function routesTable(routes) {
  const list = (items) => (items.length ? items.join(", ") : el("span", { class: "muted" }, "any"));
  return el("table", { id: "routes" },
    el("thead", {}, el("tr", {}, ["Name", "Channel", "Policies", "Accounts", "Tags", "Min severity", "Delivery", "Status updates", "Managed by", "Enabled", ""].map((t) => el("th", {}, t)))),
    el("tbody", {}, routes.map((r) => {
      const result = el("span", { class: "result error" });
      const remove = can("admin") && r.managed_by !== "file" ? el("button", {
        type: "button",
        class: "danger delete",
        onclick: async () => {
          if (!confirm(`Delete the route "${r.name}"?`)) return;
          try {
            await api(`/api/v1/routes/${r.id}`, { method: "DELETE" });
            route();
          } catch (error) {
            result.textContent = errorText(error);
          }
        },
      }, "Delete") : null;
      return el("tr", { "data-route": r.name, class: r.enabled ? null : "disabled" },
        el("td", {}, r.name),
        el("td", {}, r.channel),
        el("td", { class: "mono" }, list(r.policies)),
        el("td", { class: "mono" }, list(r.accounts)),
        el("td", { class: "mono" }, list(r.tags)),
        el("td", {}, sev(r.min_severity), " and above"),
        el("td", {}, r.digest_minutes == null ? "one message per alert" : `digest every ${r.digest_minutes} min`),
        el("td", {}, r.status_updates ? "yes" : "no"),
        el("td", {}, r.managed_by === "file" ? "file (read-only)" : r.managed_by),
        el("td", {}, r.enabled ? "yes" : "no"),
        el("td", { class: "row-actions" }, remove, result));
    })));
}

function routeForm(channels) {
  const name = el("input", { id: "route-name", name: "name", required: true, placeholder: "e.g. high-to-slack" });
  const channel = el("select", { id: "route-channel", name: "channel", required: true },
    channels.map((c) => el("option", { value: c.name }, `${c.name} (${c.kind})`)));
  const policies = el("input", { id: "route-policies", name: "policies", size: 24, placeholder: "aws-iam-*, aws-root-login" });
  const accounts = el("input", { id: "route-accounts", name: "accounts", size: 24, placeholder: "123456789012, …" });
  const tags = el("input", { id: "route-tags", name: "tags", size: 16, placeholder: "TA0001, T1078" });
  const minSeverity = el("select", { id: "route-min-severity", name: "min_severity" }, SEVERITIES.map((s) => el("option", { value: s }, s)));
  const digest = el("input", { id: "route-digest", name: "digest_minutes", type: "number", min: 1, max: 10080, size: 6, placeholder: "off" });
  const statusUpdates = el("input", { id: "route-status-updates", name: "status_updates", type: "checkbox", checked: true });
  const message = el("p", { class: "error", role: "alert", id: "route-error" });
  const form = el("form", {
    class: "filters",
    id: "new-route",
    onsubmit: async (event) => {
      event.preventDefault();
      message.textContent = "";
      const body = {
        name: name.value.trim(),
        channel: channel.value,
        policies: commaList(policies.value),
        accounts: commaList(accounts.value),
        tags: commaList(tags.value),
        min_severity: minSeverity.value,
        digest_minutes: digest.value.trim() ? Number(digest.value) : null,
        status_updates: statusUpdates.checked,
      };
      try {
        await api("/api/v1/routes", { method: "POST", body });
        route();
      } catch (error) {
        message.textContent = errorText(error);
      }
    },
  },
  el("label", {}, "Name", name),
  el("label", {}, "Channel", channel),
  el("label", {}, "Policies (* wildcard; empty: all)", policies),
  el("label", {}, "Accounts (empty: all)", accounts),
  el("label", {}, "ATT&CK tags (empty: any)", tags),
  el("label", {}, "Min severity", minSeverity),
  el("label", {}, "Digest minutes (empty: one per alert)", digest),
  el("label", { class: "check" }, "Status updates", statusUpdates),
  el("button", { type: "submit", id: "create-route", disabled: !channels.length }, "Create route"));
  return el("div", { class: "panel new" }, el("h2", {}, "New route"), form, message,
    channels.length ? null : el("p", { class: "muted" }, "Create a channel first."));
}

function deliveryAlert(d) {
  if (d.alert_id) return el("a", { href: `#/alert/${encodeURIComponent(d.alert_id)}` }, d.alert_title || d.alert_id);
  if (d.digest_alerts.length) {
    return el("span", {}, `digest of ${d.digest_alerts.length}: `,
      d.digest_alerts.map((id, i) => [i ? " " : "", el("a", { href: `#/alert/${encodeURIComponent(id)}`, class: "mono" }, id.slice(0, 8))]));
  }
  return el("span", { class: "muted" }, "—");
}

function deliveriesTable(deliveries) {
  return el("table", { id: "deliveries" },
    el("thead", {}, el("tr", {}, ["Created", "State", "Channel", "Route", "Event", "Alert", "Attempts", "Last error", "Next attempt / delivered", "Remote ref", ""].map((t) => el("th", {}, t)))),
    el("tbody", {}, deliveries.map((d) => {
      const result = el("span", { class: "result error" });
      const retry = d.state === "dead" ? el("button", {
        type: "button",
        class: "retry",
        onclick: async () => {
          try {
            await api(`/api/v1/deliveries/${d.id}/retry`, { method: "POST" });
            route();
          } catch (error) {
            result.textContent = errorText(error);
          }
        },
      }, "Retry") : null;
      return el("tr", { "data-delivery": d.id, class: `delivery ${d.state}` },
        el("td", {}, fmtTime(d.created_at)),
        el("td", {}, el("span", { class: `state ${d.state}` }, d.state)),
        el("td", {}, d.channel),
        el("td", {}, d.route || "—"),
        el("td", {}, d.event, d.alert_status ? ` (${d.alert_status})` : ""),
        el("td", {}, deliveryAlert(d)),
        el("td", {}, d.attempts),
        el("td", { class: "last-error" }, withStatus(d.last_http_status, d.last_error)),
        el("td", {}, d.state === "delivered" ? fmtTime(d.delivered_at) : d.state === "dead" ? "gave up" : fmtTime(d.next_attempt_at)),
        el("td", { class: "mono" }, d.remote_ref || ""),
        el("td", { class: "row-actions" }, retry, result));
    })));
}

async function notificationsPage(params) {
  const filter = DELIVERY_STATES.includes(params.get("state")) ? params.get("state") : "";
  // Counted apart from the list so the summary holds whatever the filter shows.
  const [channels, routes, deliveries, counts] = await Promise.all([
    api("/api/v1/channels"),
    api("/api/v1/routes"),
    api("/api/v1/deliveries" + query({ state: filter, limit: 100 })),
    api("/api/v1/deliveries/counts"),
  ]);
  const stateSelect = el("select", { id: "delivery-state", name: "state" },
    ["", "pending", "dead", "delivered", "sending"].map((s) => el("option", { value: s, selected: s === filter }, s || "all")));
  stateSelect.addEventListener("change", () => { location.hash = "#/notifications" + query({ state: stateSelect.value }); });
  render(
    el("h1", {}, "Notifications"),
    el("div", { class: "cards", id: "delivery-summary" },
      el("a", { class: `card${counts.dead ? " alarm" : ""}`, href: "#/notifications?state=dead", id: "dead-count" },
        el("div", { class: "n" }, counts.dead), el("div", { class: "muted" }, "dead letters (gave up)")),
      el("a", { class: "card", href: "#/notifications?state=pending", id: "pending-count" },
        el("div", { class: "n" }, counts.pending), el("div", { class: "muted" }, "pending")),
      el("div", { class: "card" }, el("div", { class: "n" }, channels.length), el("div", { class: "muted" }, "channels")),
      el("div", { class: "card" }, el("div", { class: "n" }, routes.length), el("div", { class: "muted" }, "routes"))),
    el("h2", {}, "Channels"),
    channels.length ? channelsTable(channels, routes) : el("p", { class: "muted" }, "No channel yet."),
    can("admin") ? channelForm() : el("p", { class: "muted" }, "Adding, testing and deleting channels and routes needs the admin role."),
    el("h2", {}, "Routes"),
    routes.length ? routesTable(routes) : el("p", { class: "muted" }, "No route yet: no alert is sent anywhere."),
    can("admin") ? routeForm(channels) : null,
    el("h2", {}, "Deliveries"),
    el("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); location.hash = "#/notifications" + query({ state: stateSelect.value }); } },
      el("label", {}, "State", stateSelect), el("button", { type: "submit" }, "Filter")),
    deliveries.length ? deliveriesTable(deliveries) : el("p", { class: "muted" }, filter ? `No ${filter} deliveries.` : "Nothing sent yet."),
  );
}

// ---------------------------------------------------------------- compliance

// CIS sections in the benchmark's order; a section the checks add later goes after them.
const SECTIONS = ["iam", "logging", "networking"];
const FINDING_STATUSES = ["open", "resolved", "all"];

function bySection(a, b) {
  const rank = (s) => (SECTIONS.includes(s) ? SECTIONS.indexOf(s) : SECTIONS.length);
  return rank(a) - rank(b) || a.localeCompare(b);
}

// Rounded down, so a section with any failure never shows 100%.
function percent(score) {
  return `${Math.floor(score * 10) / 10}%`;
}

function scoreClass(score) {
  return score >= 90 ? "good" : score >= 70 ? "fair" : "poor";
}

// Passed (suppressed counted as passing) over evaluated, as the API computes a section's score.
function totals(rows) {
  const t = { passed: 0, failed: 0, suppressed: 0 };
  for (const r of rows) { t.passed += r.passed; t.failed += r.failed; t.suppressed += r.suppressed; }
  const all = t.passed + t.failed + t.suppressed;
  t.score = all ? ((t.passed + t.suppressed) * 100) / all : 100;
  return t;
}

function resourceRef(f) {
  if (f.resource_type === "aws:account") return el("span", {}, el("span", { class: "muted" }, "account "), f.resource_id);
  return el("span", {}, el("span", { class: "muted" }, `${f.resource_type} `),
    el("a", { href: `#/resource/${f.account_id}/${f.resource_type}/${encodeURIComponent(f.resource_id)}`, class: "resource-link" }, f.resource_id));
}

function cisControls(frameworks) {
  // The newest benchmark version first.
  const cis = Object.entries(frameworks || {}).filter(([name, controls]) => name.startsWith("cis-") && controls.length)
    .sort(([a], [b]) => b.localeCompare(a, undefined, { numeric: true }));
  if (!cis.length) return el("span", { class: "muted" }, "—");
  return el("div", { class: "controls" }, cis.map(([name, controls]) =>
    el("div", { title: name }, el("span", { class: "muted" }, `${name.replace(/^cis-aws-/, "v")} `), controls.join(", "))));
}

function suppressedBadge(f) {
  if (!f.suppressed) return null;
  return el("span", { class: "suppressed-note" }, el("span", { class: "badge suppressed", title: f.suppression }, "suppressed"),
    el("span", { class: "reason" }, f.suppression));
}

// The score of every evaluation, oldest first: the account's overall line (thick) over one thin
// line per section, on a fixed 0–100% scale so accounts compare at a glance.
function trendChart(rows) {
  const W = 340, H = 96, left = 34, right = 8, top = 6, bottom = 16;
  const times = [...new Set(rows.map((r) => r.evaluated_at))].sort();
  const chart = svg("svg", { class: "trend", viewBox: `0 0 ${W} ${H}`, "data-points": times.length, role: "img" },
    svg("title", {}, "score per evaluation"));
  const x = (i) => (times.length > 1 ? left + (i * (W - left - right)) / (times.length - 1) : (left + W - right) / 2);
  const y = (score) => top + ((100 - score) * (H - top - bottom)) / 100;
  for (const level of [0, 50, 100]) {
    chart.append(svg("line", { class: "gridline", x1: left, x2: W - right, y1: y(level), y2: y(level) }),
      svg("text", { x: left - 4, y: y(level) + 3, "text-anchor": "end" }, `${level}%`));
  }
  const line = (points, cls) => {
    if (points.length > 1) chart.append(svg("polyline", { class: cls, points: points.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" ") }));
  };
  const sections = [...new Set(rows.map((r) => r.section))].sort(bySection);
  for (const section of sections) {
    const points = [];
    times.forEach((t, i) => {
      const row = rows.find((r) => r.evaluated_at === t && r.section === section);
      if (row) points.push([x(i), y(row.score)]);
    });
    line(points, `section s-${section}`);
  }
  const overall = times.map((t) => totals(rows.filter((r) => r.evaluated_at === t)));
  line(overall.map((o, i) => [x(i), y(o.score)]), "overall");
  overall.forEach((o, i) => chart.append(svg("circle", { class: "overall", cx: x(i), cy: y(o.score), r: 3 },
    svg("title", {}, `${fmtTime(times[i])}: ${percent(o.score)} (${o.failed} failed, ${o.passed} passed, ${o.suppressed} suppressed)`))));
  if (times.length) {
    chart.append(svg("text", { x: left, y: H - 3 }, fmtTime(times[0])));
    if (times.length > 1) chart.append(svg("text", { x: W - right, y: H - 3, "text-anchor": "end" }, fmtTime(times[times.length - 1])));
  }
  const legend = el("div", { class: "legend trend-legend" },
    el("span", {}, el("i", { class: "swatch overall" }), "overall"),
    sections.map((s) => el("span", {}, el("i", { class: `swatch s-${s}` }), s)));
  return el("div", { class: "trend-box" }, chart, legend);
}

function scoreCards(account, latest, trend) {
  const overall = totals(latest);
  const sections = latest.slice().sort((a, b) => bySection(a.section, b.section));
  const evaluated = latest.map((r) => r.evaluated_at).sort().pop();
  return el("div", { class: "panel posture-account", "data-account": account },
    el("div", {},
      el("div", { class: "posture-head" },
        el("h2", {}, `Account ${account}`),
        el("span", { class: "muted" }, `evaluated ${fmtTime(evaluated)} · ${trend.length ? new Set(trend.map((r) => r.evaluated_at)).size : 0} evaluations`)),
      el("div", { class: "cards" },
        el("a", { class: "card score overall", href: "#/compliance" + query({ account }), "data-section": "overall" },
          el("div", { class: "muted" }, "overall"),
          el("div", { class: `n ${scoreClass(overall.score)}` }, percent(overall.score)),
          el("div", { class: "counts" }, `${overall.failed} failed · ${overall.passed + overall.suppressed} of ${overall.passed + overall.failed + overall.suppressed} pass`)),
        sections.map((s) => el("a", { class: "card score", href: "#/compliance" + query({ account, section: s.section }), "data-section": s.section, "data-score": s.score },
          el("div", { class: "muted" }, s.section),
          el("div", { class: `n ${scoreClass(s.score)}` }, percent(s.score)),
          el("div", { class: "counts" }, `${s.failed} failed`, s.suppressed ? ` · ${s.suppressed} suppressed` : "", ` · ${s.passed} passed`))))),
    trendChart(trend));
}

function findingsTable(findings) {
  const rows = findings.map((f) => {
    const row = el("tr", {
      class: `clickable finding ${f.status}${f.suppressed ? " is-suppressed" : ""}`,
      "data-finding": f.id,
      "data-check": f.check_id,
      "data-resource": f.resource_id,
      onclick: () => { location.hash = `#/finding/${f.id}`; },
    },
    el("td", {}, sev(f.severity)),
    el("td", {}, el("a", { href: `#/finding/${f.id}` }, f.title), el("div", { class: "mono muted" }, f.check_id)),
    el("td", { class: "resource" }, resourceRef(f), f.resource_type === "aws:account" ? null : el("div", { class: "muted" }, `${f.account_id} · ${f.region}`)),
    el("td", { class: "messages" }, f.messages.map((m) => el("div", {}, m))),
    el("td", {}, cisControls(f.frameworks)),
    el("td", { class: "when" }, fmtTime(f.first_failed_at), el("div", { class: "muted" }, f.resolved_at ? `resolved ${fmtTime(f.resolved_at)}` : `seen ${fmtTime(f.last_seen_at)}`)),
    el("td", {}, el("span", { class: `status ${f.status}` }, f.status), suppressedBadge(f)));
    for (const link of row.querySelectorAll("a")) link.addEventListener("click", (e) => e.stopPropagation());
    return row;
  });
  return el("table", { id: "findings" },
    el("thead", {}, el("tr", {}, ["Severity", "Check", "Resource", "What fails", "CIS controls", "First failed / last seen", "Status"].map((t) => el("th", {}, t)))),
    el("tbody", {}, rows));
}

function runNowButton() {
  const result = el("span", { class: "result", id: "run-result" });
  const button = el("button", {
    type: "button",
    id: "run-now",
    title: "evaluate every check over the latest snapshots now",
    onclick: async () => {
      button.disabled = true;
      result.className = "result muted";
      result.textContent = "evaluating…";
      try {
        const report = await api("/api/v1/posture/run", { method: "POST" });
        const sum = (key) => report.accounts.reduce((n, [, outcome]) => n + outcome[key], 0);
        state.flash = `Evaluated ${report.checks} checks over ${report.accounts.length} account(s) at ${fmtTime(report.evaluated_at)}: `
          + `${sum("opened")} opened, ${sum("reopened")} reopened, ${sum("resolved")} resolved`
          + (report.problems.length ? `; ${report.problems.length} problem(s) in checks` : "");
        route();
      } catch (error) {
        result.className = "result error";
        result.textContent = errorText(error);
        button.disabled = false;
      }
    },
  }, "Run now");
  return el("span", { class: "run-now" }, button, result);
}

async function compliancePage(params) {
  const status = FINDING_STATUSES.includes(params.get("status")) ? params.get("status") : "open";
  const filters = { account: params.get("account") || "", section: params.get("section") || "", check: params.get("check") || "" };
  const severity = SEVERITIES.includes(params.get("severity")) ? params.get("severity") : "";
  const q = params.get("q") || "";
  const [scores, checks, findings] = await Promise.all([
    api("/api/v1/posture/scores"),
    api("/api/v1/posture/checks"),
    api("/api/v1/posture/findings" + query({ status, ...filters })),
  ]);
  const accounts = [...new Set(scores.map((s) => s.account_id))].sort();
  const trends = await Promise.all(accounts.map((account) => api("/api/v1/posture/scores" + query({ account, trend: "true" }))));
  // Severity and the resource search are applied here: the API filters by exact values only.
  const needle = q.trim().toLowerCase();
  const shown = findings.filter((f) => (!severity || f.severity === severity) && (!needle || f.resource_id.toLowerCase().includes(needle)));

  const select = (name, value, options, any) => el("select", { name, id: `filter-${name}` },
    any !== undefined ? el("option", { value: "" }, any) : null,
    options.map(([v, text]) => el("option", { value: v, selected: v === value }, text)));
  const sections = [...new Set([...SECTIONS, ...checks.map((c) => c.section)])].sort(bySection);
  const statusSelect = select("status", status, FINDING_STATUSES.map((s) => [s, s]));
  const sectionSelect = select("section", filters.section, sections.map((s) => [s, s]), "any section");
  const severitySelect = select("severity", severity, SEVERITIES.slice().reverse().map((s) => [s, s]), "any severity");
  const accountSelect = select("account", filters.account,
    [...new Set([...accounts, filters.account].filter(Boolean))].map((a) => [a, a]), "any account");
  const checkSelect = select("check", filters.check, checks.map((c) => [c.id, c.id]), "any check");
  const search = el("input", { name: "q", id: "filter-q", value: q, placeholder: "resource id contains", size: 22 });
  const apply = (e) => {
    e.preventDefault();
    location.hash = "#/compliance" + query({
      status: statusSelect.value === "open" ? "" : statusSelect.value, section: sectionSelect.value, severity: severitySelect.value,
      account: accountSelect.value, check: checkSelect.value, q: search.value.trim(),
    });
  };
  const flash = state.flash;
  state.flash = null;
  const latest = scores.map((s) => s.evaluated_at).sort().pop();
  const heading = status === "open" ? "Failing resources" : status === "resolved" ? "Resolved findings" : "All findings";
  render(
    el("h1", {}, "Compliance"),
    el("p", { class: "muted page-meta" },
      latest ? `CIS AWS Foundations checks over the config snapshots; last evaluated ${fmtTime(latest)}. Suppressed findings count as passing from the next evaluation.`
        : "No evaluation yet.",
      can("admin") ? runNowButton() : null),
    flash ? el("p", { class: "flash", id: "run-report" }, flash) : null,
    accounts.length
      ? el("div", { id: "scores" }, accounts.map((account, i) => scoreCards(account, scores.filter((s) => s.account_id === account), trends[i])))
      : el("p", { class: "muted" }, "No posture evaluation yet: checks run over onboarded accounts' config snapshots (or `skywarden posture import` a snapshot dump)."),
    el("h2", {}, heading),
    el("form", { class: "filters", id: "finding-filters", onsubmit: apply },
      el("label", {}, "Status", statusSelect), el("label", {}, "Section", sectionSelect), el("label", {}, "Severity", severitySelect),
      el("label", {}, "Account", accountSelect), el("label", {}, "Check", checkSelect), el("label", {}, "Resource", search),
      el("button", { type: "submit" }, "Filter")),
    el("p", { class: "muted", id: "finding-count" }, shown.length === findings.length ? `${shown.length} findings` : `${shown.length} of ${findings.length} findings`),
    shown.length ? findingsTable(shown) : el("p", { class: "muted" }, status === "open" ? "Nothing fails with these filters." : "No finding matches."),
  );
}

// The audit trail around the event that made the change, narrowed to that event by its id.
function eventLink(cause) {
  const at = new Date(cause.event_time).getTime();
  const filters = {
    event_name: cause.event_name,
    since: new Date(at).toISOString(),
    until: new Date(at + 1000).toISOString(),
    q: cause.event_id,
  };
  return el("a", { href: "#/audit" + query(filters), class: "event-link", title: `event ${cause.event_id}` }, cause.event_name);
}

function causePanel(cause) {
  if (!cause) {
    return el("p", { class: "muted" }, "No cause recorded: the check already failed at the first evaluation (the baseline), or nothing changed since the previous one.");
  }
  const who = cause.principal_arn
    ? el("p", { class: "cause-line" }, "Changed by ", el("strong", { class: "mono" }, cause.principal_arn),
      " from ", el("strong", {}, cause.source_ip || "an unknown address"), " at ", fmtTime(cause.event_time),
      " via ", cause.event_id && cause.event_time ? eventLink(cause) : cause.event_name || "an unknown call")
    : el("p", { class: "cause-line" }, "The event that made this change is not linked yet.");
  return el("div", {}, who,
    el("p", { class: "muted" }, `Configuration change #${cause.change_id} (${cause.kind}) detected ${fmtTime(cause.detected_at)}`),
    Array.isArray(cause.diff) && cause.diff.length ? diffList(cause.diff) : null);
}

async function alertLinks(ids) {
  const alerts = await Promise.all(ids.map((id) => api(`/api/v1/alerts/${encodeURIComponent(id)}`).then((a) => a.alert, () => null)));
  return ids.map((id, i) => el("li", {}, alerts[i] ? sev(alerts[i].severity) : null, " ",
    el("a", { href: `#/alert/${encodeURIComponent(id)}`, "data-alert": id }, alerts[i] ? alerts[i].title : id),
    alerts[i] ? el("span", { class: "muted" }, ` · ${alerts[i].status} · first seen ${fmtTime(alerts[i].first_seen)}`) : null));
}

function suppressForm(f) {
  const reason = el("input", { id: "suppress-reason", name: "reason", size: 48, placeholder: "why this failure is accepted (kept with the suppression)" });
  const until = el("input", { id: "suppress-until", name: "until", type: "date" });
  // An account-level check has one resource, the account: both scopes would mean the same.
  const scope = el("select", { id: "suppress-scope", name: "scope" },
    f.resource_type === "aws:account"
      ? el("option", { value: "resource" }, `account ${f.account_id} (an account-level check)`)
      : [el("option", { value: "resource" }, `this resource (${f.resource_id})`),
        el("option", { value: "account" }, `every resource in account ${f.account_id}`)]);
  const message = el("p", { class: "error", role: "alert", id: "suppress-error" });
  const form = el("form", {
    class: "filters",
    id: "suppress",
    onsubmit: async (event) => {
      event.preventDefault();
      message.textContent = "";
      // The reason goes as typed: the server says what it needs.
      const body = { check: f.check_id, account: f.account_id, reason: reason.value };
      if (scope.value === "resource") body.resource = f.resource_id;
      if (until.value) body.until = `${until.value}T00:00:00Z`;
      try {
        await api("/api/v1/posture/suppressions", { method: "POST", body });
        route();
      } catch (error) {
        message.textContent = errorText(error);
      }
    },
  },
  el("label", {}, "Reason", reason),
  el("label", {}, "Until (00:00 UTC; empty: no end)", until),
  el("label", {}, "Scope", scope),
  el("button", { type: "submit", id: "suppress-submit" }, "Suppress"));
  return el("div", { class: "panel new" }, el("h2", {}, "Suppress"), form, message,
    el("p", { class: "muted" }, "A suppressed finding stays listed with its reason; it no longer raises alerts and counts as passing from the next evaluation."));
}

function suppressionsTable(list) {
  return el("table", { id: "suppressions" },
    el("thead", {}, el("tr", {}, ["Scope", "Reason", "Until", "By", ""].map((t) => el("th", {}, t)))),
    el("tbody", {}, list.map((s) => {
      const result = el("span", { class: "result error" });
      const remove = can("analyst") ? el("button", {
        type: "button",
        class: "danger delete",
        onclick: async () => {
          if (!confirm(`Remove the suppression "${s.reason}"?`)) return;
          try {
            await api(`/api/v1/posture/suppressions/${s.id}`, { method: "DELETE" });
            route();
          } catch (error) {
            result.textContent = errorText(error);
          }
        },
      }, "Remove") : null;
      return el("tr", { "data-suppression": s.id },
        el("td", {}, s.resource_id ? `resource ${s.resource_id}` : s.account_id ? `every resource in ${s.account_id}` : "every account"),
        el("td", {}, s.reason),
        el("td", {}, s.expires_at ? fmtTime(s.expires_at) : "no end"),
        el("td", {}, s.created_by, el("div", { class: "muted" }, fmtTime(s.created_at))),
        el("td", { class: "row-actions" }, remove, result));
    })));
}

async function findingPage(id) {
  const [{ finding: f, history }, suppressions] = await Promise.all([
    api(`/api/v1/posture/findings/${encodeURIComponent(id)}`),
    api("/api/v1/posture/suppressions"),
  ]);
  const now = Date.now();
  const covering = suppressions.filter((s) => s.check_id === f.check_id && (!s.account_id || s.account_id === f.account_id)
    && (!s.resource_id || s.resource_id === f.resource_id) && (!s.expires_at || new Date(s.expires_at).getTime() > now));
  const alertIds = f.alert_id ? [f.alert_id] : [];
  const [own, related] = await Promise.all([alertLinks(alertIds), alertLinks(f.related_alerts)]);
  render(
    el("p", { class: "crumbs" }, el("a", { href: "#/compliance" }, "← Compliance")),
    el("h1", {}, sev(f.severity), " ", f.title),
    el("p", { class: "muted" }, `${f.check_id} · ${f.section} · account ${f.account_id} · ${f.region} · MITRE ${f.mitre.join(", ") || "—"}`),
    el("div", { class: "grid finding-detail" },
      el("div", { class: "panel", id: "finding-summary" },
        el("p", {}, "Resource: ", resourceRef(f)),
        el("p", {}, "Status: ", el("span", { class: `status ${f.status}` }, f.status),
          f.resolved_at ? ` ${fmtTime(f.resolved_at)}` : "", " ", suppressedBadge(f)),
        el("p", {}, "First failed: ", fmtTime(f.first_failed_at), " · last seen: ", fmtTime(f.last_seen_at)),
        el("div", {}, "What fails:", el("ul", { class: "messages" }, f.messages.length ? f.messages.map((m) => el("li", {}, m)) : el("li", { class: "muted" }, "nothing now"))),
        el("div", {}, "CIS controls: ", cisControls(f.frameworks))),
      el("div", { class: "panel", id: "finding-cause" }, el("h2", {}, "What made it fail"), causePanel(f.cause)),
      el("div", { class: "panel", id: "finding-alerts" },
        el("h2", {}, "Alerts"),
        own.length ? el("div", {}, el("p", { class: "muted" }, "Raised by this finding:"), el("ul", { id: "finding-alert" }, own))
          : el("p", { class: "muted" }, "This finding raised no alert (below the alert threshold, suppressed, or from the baseline)."),
        related.length ? el("div", {}, el("p", { class: "muted" }, "Event alerts on the same resource around the change:"), el("ul", { id: "related-alerts" }, related))
          : el("p", { class: "muted" }, "No related event alert."))),
    el("h2", {}, "Remediation"),
    el("div", { class: "panel remediation", id: "remediation" }, f.remediation || "—"),
    el("h2", {}, "History"),
    el("ol", { class: "timeline", id: "history" }, history.map((h) => el("li", { class: h.event },
      el("span", { class: "when" }, fmtTime(h.at)), el("span", { class: `event ${h.event}` }, h.event),
      h.messages.length ? el("div", { class: "messages" }, h.messages.map((m) => el("div", {}, m))) : null))),
    el("h2", {}, "Suppressions"),
    covering.length ? suppressionsTable(covering) : el("p", { class: "muted" }, "None covers this finding."),
    can("analyst") ? suppressForm(f) : el("p", { class: "muted" }, "Suppressing a finding needs the analyst role."),
  );
}

// ---------------------------------------------------------------- routing

async function route() {
  const hash = location.hash || "#/overview";
  const [path, search] = hash.slice(1).split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean);
  if (parts[0] !== "login" && !state.user) {
    try {
      startSession(await api("/api/v1/session"));
    } catch {
      location.hash = "#/login";
      return loginPage();
    }
  }
  // A finding belongs to the compliance page.
  const page = parts[0] === "finding" ? "compliance" : parts[0];
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.getAttribute("href") === `#/${page}`);
  try {
    switch (parts[0]) {
      case "login": return await loginPage();
      case "alerts": return await alertsPage(params);
      case "alert": return await alertPage(parts[1]);
      case "audit": return await auditPage(params);
      case "inventory": return await inventoryPage(params);
      case "resource": return await resourcePage(parts[1], parts[2], parts.slice(3).join("/"));
      case "network": return await networkPage(params);
      case "accounts": return await accountsPage();
      case "audit-log": return await auditLogPage();
      case "notifications": return await notificationsPage(params);
      case "compliance": return await compliancePage(params);
      case "finding": return await findingPage(parts[1]);
      default: return await overviewPage();
    }
  } catch (error) {
    if (error.status !== 401) showError(error);
  }
}

document.getElementById("logout").addEventListener("click", async () => {
  try { await api("/api/v1/session", { method: "DELETE" }); } catch { /* already gone */ }
  state.user = null;
  state.csrf = null;
  location.hash = "#/login";
});
window.addEventListener("hashchange", route);
route();
