// Skywarden dashboard. Plain JavaScript, no build step, nothing loaded from elsewhere.
// Every value shown comes from the API and is written with textContent, never as HTML.
"use strict";

const state = { csrf: null, user: null, role: null, world: null };
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
  main.replaceChildren(...nodes);
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
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.getAttribute("href") === `#/${parts[0]}`);
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
