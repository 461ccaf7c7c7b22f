// The audit trail: CloudTrail events, filtered by labelled controls whose values live in the
// address (a permalink), counted, paged both ways, each row a link to its event, with its raw
// record inline and exports (CSV, JSON lines with the raw event).
import { ApiError, api } from "../api.js";
import { countries, countryCode, countryName, el, field, fmtTime, query, render, resourceLink, showFieldError } from "../dom.js";
import { href } from "../links.js";
import { networkNote } from "./event.js";

// Filters the API takes as they are; `range` is the page's own (a preset turned into `since`).
const TEXT_FILTERS = ["principal", "event_name", "event_source", "resource", "source_ip", "q"];
const SELECT_FILTERS = ["account", "failed", "read_only"];
const PAGE_PARAMS = ["cursor", "before"];
const RANGES = { "": "Any time", "1h": "Last hour", "24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days" };
const RANGE_MS = { "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 };
const LABELS = {
  principal: "Principal (ARN or user name, any case)", event_name: "Event name (any case)", event_source: "Event source",
  resource: "Resource id", source_ip: "Source IP or CIDR", q: "Text in the raw event", account: "Account",
  failed: "Outcome", read_only: "Reads or changes", country: "Country (name or code)", range: "Time range",
  since: "From (UTC)", until: "To (UTC)",
};

// The API's filters for the page's parameters; `range` becomes `since` (now minus the range).
function apiFilters(params) {
  const filters = {};
  for (const name of [...TEXT_FILTERS, ...SELECT_FILTERS, "country", "since", "until"]) if (params.get(name)) filters[name] = params.get(name);
  const range = params.get("range");
  if (RANGE_MS[range] && !filters.since) filters.since = new Date(Date.now() - RANGE_MS[range]).toISOString();
  return filters;
}

export async function auditPage(params) {
  const filters = apiFilters(params);
  const paging = {};
  for (const name of PAGE_PARAMS) if (params.get(name)) paging[name] = params.get(name);
  let page = null;
  let failure = null;
  // A range reaching archived months is read from the lake first: say so while it loads.
  const loading = setTimeout(() => location.hash.startsWith("#/audit") && render(el("h1", {}, "Audit trail"),
    el("p", { id: "lake-loading", class: "muted", role: "status" }, "Searching… reading archived months from the lake where the range reaches them.")), 300);
  try {
    page = await api("/api/v1/events" + query({ ...filters, ...paging, limit: 100 }));
  } catch (error) {
    // A refused filter is shown next to its control; the page stays.
    if (!(error instanceof ApiError) || error.status !== 400) throw error;
    failure = error;
  } finally {
    clearTimeout(loading);
  }
  const accounts = await api("/api/v1/accounts").catch(() => []);
  const form = filterForm(params, accounts, page);
  render(
    el("h1", {}, params.get("resource") ? `Who changed ${params.get("resource")}` : "Audit trail"),
    form.node,
    page ? results(params, filters, page) : el("p", { class: "muted", id: "result-count" }, "No search ran: correct the field marked above."),
  );
  if (failure) form.showError(failure.field, failure.message);
}

// The filter form: one labelled control per filter, the preset ranges and the pickers.
function filterForm(params, accounts, page) {
  const controls = {};
  for (const name of TEXT_FILTERS) {
    controls[name] = el("input", { id: `filter-${name}`, name, value: params.get(name) || "", size: name === "q" ? 24 : 16, autocomplete: "off" });
  }
  const code = params.get("country") || "";
  controls.country = el("input", { id: "filter-country", name: "country", value: code ? countryName(code) : "", list: "country-names", size: 18, autocomplete: "off" });
  const countryList = el("datalist", { id: "country-names" }, countries().map((c) => el("option", { value: `${c.name} (${c.code})` })));
  controls.range = select("range", Object.entries(RANGES), params.get("range") || "");
  controls.since = el("input", { id: "filter-since", name: "since", type: "datetime-local", step: 1, value: toLocalInput(params.get("since")) });
  controls.until = el("input", { id: "filter-until", name: "until", type: "datetime-local", step: 1, value: toLocalInput(params.get("until")) });
  controls.failed = select("failed", [["", "Any outcome"], ["false", "Succeeded"], ["true", "Failed"]], params.get("failed") || "");
  controls.read_only = select("read_only", [["", "Reads and changes"], ["false", "Changes only"], ["true", "Reads only"]], params.get("read_only") || "");
  const known = new Set([...accounts.map((a) => a.account_id || a.id), ...(page ? page.events.map((e) => e.account_id) : []), params.get("account")].filter(Boolean));
  controls.account = select("account", [["", "All accounts"], ...[...known].sort().map((a) => [a, a])], params.get("account") || "");
  const showError = (name, message) => {
    const control = controls[name] || controls.q;
    showFieldError(control, message);
    control.focus();
  };
  const submit = (e) => {
    e.preventDefault();
    for (const control of Object.values(controls)) showFieldError(control, null);
    const next = {};
    for (const name of [...TEXT_FILTERS, ...SELECT_FILTERS, "range"]) if (controls[name].value.trim()) next[name] = controls[name].value.trim();
    const country = countryCode(controls.country.value);
    if (country === null) return showError("country", `country: no country is called "${controls.country.value}"; pick one from the list or give its two-letter code`);
    if (country) next.country = country;
    for (const name of ["since", "until"]) if (controls[name].value) next[name] = new Date(controls[name].value + "Z").toISOString();
    if (next.since && next.until && next.since >= next.until) return showError("until", "until: the end of the range must be after its start");
    location.hash = "#/audit" + query(next);
  };
  // A preset clears the pickers (and the reverse), so the two never disagree.
  controls.range.addEventListener("change", () => { controls.since.value = ""; controls.until.value = ""; });
  for (const name of ["since", "until"]) controls[name].addEventListener("change", () => { controls.range.value = ""; });
  const node = el("form", { class: "filters", id: "audit-filters", onsubmit: submit, "aria-label": "Audit trail filters", novalidate: true },
    ["range", "since", "until", "principal", "event_name", "failed", "read_only", "account", "country", "source_ip", "event_source", "resource", "q"]
      .map((name) => field(LABELS[name], controls[name])),
    countryList,
    el("button", { type: "submit", id: "audit-search" }, "Search"),
    el("a", { href: "#/audit", class: "reset" }, "Clear filters"));
  return { node, showError };
}

function select(name, options, value) {
  return el("select", { id: `filter-${name}`, name },
    options.map(([v, text]) => el("option", { value: v, selected: v === value ? true : null }, text)));
}

// "2026-11-12T03:17:42.000Z" as a datetime-local value (UTC, as the page shows every time).
function toLocalInput(iso) {
  if (!iso) return "";
  const time = new Date(iso);
  return Number.isNaN(time.getTime()) ? "" : time.toISOString().slice(0, 19);
}

// The count, the pager, the exports and the rows.
function results(params, filters, page) {
  const keep = {};
  for (const [name, value] of params.entries()) if (!PAGE_PARAMS.includes(name)) keep[name] = value;
  const pager = () => el("nav", { class: "pager", "aria-label": "Result pages" },
    page.previous_cursor ? el("a", { href: "#/audit" + query({ ...keep, before: page.previous_cursor }), class: "newer" }, "← Newer events") : null,
    page.next_cursor ? el("a", { href: "#/audit" + query({ ...keep, cursor: page.next_cursor }), class: "older" }, "Older events →") : null);
  const total = `${page.total_is_lower_bound ? "More than " : ""}${page.total.toLocaleString("en")} event${page.total === 1 ? "" : "s"} match`;
  const shown = page.events.length ? ` · showing ${fmtTime(page.events[0].event_time)} to ${fmtTime(page.events[page.events.length - 1].event_time)}` : "";
  const rows = [];
  for (const event of page.events) rows.push(...eventRows(event));
  return [
    el("p", { id: "result-count", class: "count", role: "status" }, total, shown),
    page.archive ? archiveNote(page.archive) : null,
    el("p", { class: "exports" },
      el("a", { href: "/api/v1/events/export" + query({ ...filters, format: "csv" }), id: "export-csv" }, "Export CSV"), " · ",
      el("a", { href: "/api/v1/events/export" + query({ ...filters, format: "jsonl" }), id: "export-jsonl" }, "Export JSON lines (with the raw events)"),
      el("span", { class: "muted" }, " — up to 100,000 events; a longer export ends with a line saying it was cut.")),
    pager(),
    el("table", { id: "events-table" },
      el("caption", { class: "visually-hidden" }, "Matching CloudTrail events, newest first"),
      el("thead", {}, el("tr", {}, ["Time", "Event", "Who", "Source IP", "Location", "Error", "Resources", "Account", "Raw"].map((t) => el("th", { scope: "col" }, t)))),
      el("tbody", { id: "events" }, rows)),
    page.events.length ? null : el("p", { class: "muted" }, "No events match."),
    pager(),
  ];
}

// What reading the lake did: archived events are marked in the rows; an incomplete answer says
// which bound stopped it or which object could not be read.
function archiveNote(archive) {
  const read = `${archive.archived_days} archived day${archive.archived_days === 1 ? "" : "s"} in range; read from the lake: ${archive.days_loaded} day(s), ${archive.row_groups_read} row group(s) (${archive.row_groups_skipped} skipped on time)`;
  if (archive.complete) return el("p", { id: "archive-status", class: "muted" }, `Includes archived months. ${read}.`);
  const why = [archive.limit, ...(archive.errors || [])].filter(Boolean).join("; ");
  return el("p", { id: "archive-status", class: "fail-text", role: "alert" }, `Incomplete: archived events may be missing (${why}). ${read}.`);
}

// The event's page, with its account and time: an archived event's day is read from the lake
// (the link works after the cache evicted it), and an id repeated across accounts is this one.
function eventLink(event) {
  const address = href.event(event.event_id) + query({ account: event.account_id, time: event.event_time });
  return el("a", { href: address, class: "entity event-link mono" }, fmtTime(event.event_time));
}

// A row (its time links to the event's page) and the hidden row of its raw record.
function eventRows(event) {
  const detail = el("tr", { hidden: true, class: "raw-row" }, el("td", { colspan: 9 }, el("pre", { class: "raw" }, "…")));
  const toggle = el("button", { type: "button", class: "secondary raw-toggle", "aria-expanded": "false", "aria-label": `Raw record of ${event.event_name || "event"} at ${fmtTime(event.event_time)}` }, "Show");
  const flip = async () => {
    detail.hidden = !detail.hidden;
    toggle.setAttribute("aria-expanded", String(!detail.hidden));
    toggle.textContent = detail.hidden ? "Show" : "Hide";
    if (!detail.hidden) {
      const full = await api(`/api/v1/events/${encodeURIComponent(event.account_id)}/${encodeURIComponent(event.event_id)}`, { signal: new AbortController().signal });
      detail.querySelector("pre").textContent = JSON.stringify(full.raw, null, 2);
    }
  };
  toggle.addEventListener("click", (e) => { e.stopPropagation(); flip(); });
  const row = el("tr", { class: "clickable event-row", "data-event": event.event_id, onclick: flip },
    el("td", {}, eventLink(event),
      event.archived ? [" ", el("span", { class: "badge archived", title: "Read from the open lake (an archived month)" }, "archived")] : null),
    el("td", {}, event.event_name),
    el("td", {}, event.user_name || event.principal_arn || "—"),
    el("td", {}, event.source_ip || "—", networkNote(event)),
    el("td", {}, [event.city, event.country ? countryName(event.country) : null].filter(Boolean).join(", ") || "—"),
    el("td", {}, event.error_code || ""),
    el("td", {}, event.resource_ids.map((r) => [resourceLink(r), " "])),
    el("td", { class: "mono" }, event.account_id),
    el("td", {}, toggle));
  for (const link of row.querySelectorAll("a")) link.addEventListener("click", (e) => e.stopPropagation());
  return [row, detail];
}
