// The inventory of resources and one resource: its changes, configuration and events.
import { api } from "../api.js";
import { diffList, el, fmtTime, query, render, resourceLink, table } from "../dom.js";
import { appendRows, loadMore } from "./paging.js";

const RESOURCE_COLUMNS = [
  { title: "Type", value: (r) => r.resource_type },
  { title: "Id", value: (r) => el("a", { href: `#/resource/${r.account_id}/${r.resource_type}/${encodeURIComponent(r.resource_id)}` }, r.resource_id) },
  { title: "Name", value: (r) => r.name || "" },
  { title: "Region", value: (r) => r.region },
  { title: "Version", value: (r) => r.version },
  { title: "Last changed", value: (r) => fmtTime(r.last_changed) },
  { title: "State", value: (r) => (r.deleted_at ? `deleted ${fmtTime(r.deleted_at)}` : "present") },
];

export async function inventoryPage(params) {
  const type = params.get("type") || "";
  const q = params.get("q") || "";
  const first = await api("/api/v1/resources" + query({ type, q, limit: 500 }));
  const typeInput = el("input", { name: "type", value: type, placeholder: "e.g. ec2:security-group" });
  const qInput = el("input", { name: "q", value: q, placeholder: "id or name" });
  const drawn = table(RESOURCE_COLUMNS, first.resources);
  drawn.id = "resources";
  render(
    el("h1", {}, "Inventory"),
    el("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); location.hash = "#/inventory" + query({ type: typeInput.value, q: qInput.value }); } },
      el("label", {}, "Type", typeInput), el("label", {}, "Search", qInput), el("button", { type: "submit" }, "Filter")),
    first.resources.length ? drawn : el("p", { class: "muted" }, "No resources yet: onboard an account and its config snapshots fill the inventory."),
    loadMore({
      path: "/api/v1/resources", params: { type, q, limit: 500 }, key: "resources", nextCursor: first.next_cursor, id: "more-resources",
      append: (rows) => appendRows(drawn, RESOURCE_COLUMNS, rows),
    }),
  );
}

export async function resourcePage(account, type, id) {
  const r = await api(`/api/v1/resources/${encodeURIComponent(account)}/${encodeURIComponent(type)}/${id}`);
  render(
    el("h1", {}, `${r.resource_type} ${r.resource_id}`),
    el("p", { class: "muted" }, `${r.name || ""} · ${r.region} · account ${r.account_id} · version ${r.version}`, r.deleted_at ? ` · deleted ${fmtTime(r.deleted_at)}` : ""),
    el("p", {}, resourceLink(r.resource_id), " (every event that named it)"),
    el("h2", {}, "Changes"),
    r.changes.length >= 100 ? el("p", { class: "muted" }, "The 100 newest changes.") : null,
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
