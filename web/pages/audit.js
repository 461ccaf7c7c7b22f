// The audit trail: the events, filtered, with each event's raw record and the exports.
import { api } from "../api.js";
import { el, fmtTime, query, render, resourceLink } from "../dom.js";

const AUDIT_FILTERS = ["principal", "event_name", "event_source", "resource", "source_ip", "country", "since", "until", "failed", "read_only", "q"];

export async function auditPage(params) {
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
