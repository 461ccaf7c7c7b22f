// The inventory of resources and one resource: its configuration as of its last snapshot (and
// what CloudTrail recorded since), its changes with the event that caused each, its findings,
// alerts and events.
import { api } from "../api.js";
import { captioned, diffList, el, facts, field, fmtTime, query, render, resourceLink, sev, table } from "../dom.js";
import { alertLink, eventLink, findingLink, principalLink, resourceEntityLink } from "../links.js";
import { appendRows, loadMore } from "./paging.js";

const RESOURCE_COLUMNS = [
  { title: "Type", value: (r) => r.resource_type },
  { title: "Id", value: (r) => resourceEntityLink(r.account_id, r.resource_type, r.resource_id) },
  { title: "Name", value: (r) => r.name || "" },
  { title: "Region", value: (r) => r.region },
  { title: "Version", value: (r) => r.version },
  { title: "Snapshot", value: (r) => fmtTime(r.last_seen) },
  { title: "Last changed", value: (r) => fmtTime(r.last_changed) },
  { title: "State", value: (r) => (r.deleted_at ? `deleted ${fmtTime(r.deleted_at)}` : "present") },
];

export async function inventoryPage(params) {
  const type = params.get("type") || "";
  const q = params.get("q") || "";
  const first = await api("/api/v1/resources" + query({ type, q, limit: 500 }));
  const typeInput = el("input", { id: "inventory-type", name: "type", value: type, placeholder: "e.g. ec2:security-group" });
  const qInput = el("input", { id: "inventory-q", name: "q", value: q, placeholder: "id or name" });
  const drawn = table(RESOURCE_COLUMNS, first.resources);
  drawn.id = "resources";
  drawn.prepend(el("caption", { class: "visually-hidden" }, "Resources"));
  render(
    el("h1", {}, "Inventory"),
    el("form", { class: "filters", "aria-label": "Inventory filters", onsubmit: (e) => { e.preventDefault(); location.hash = "#/inventory" + query({ type: typeInput.value, q: qInput.value }); } },
      field("Type", typeInput), field("Id, name or ARN", qInput), el("button", { type: "submit" }, "Filter")),
    first.resources.length ? drawn : el("p", { class: "muted" }, "No resources yet: onboard an account and its config snapshots fill the inventory."),
    loadMore({
      path: "/api/v1/resources", params: { type, q, limit: 500 }, key: "resources", nextCursor: first.next_cursor, id: "more-resources",
      append: (rows) => appendRows(drawn, RESOURCE_COLUMNS, rows),
    }),
  );
}

// Who did it, from where, when: a change's or an event's cause, linked.
function cause(event) {
  if (!event) return "not linked yet";
  return [eventLink(event.event_id, event.event_name || "event"), " by ", principalLink(event.principal_arn || event.user_name),
    ` from ${event.source_ip || "?"} at ${fmtTime(event.event_time)}`];
}

export async function resourcePage(account, type, id) {
  const r = await api(`/api/v1/resources/${encodeURIComponent(account)}/${encodeURIComponent(type)}/${id}`);
  render(
    el("p", { class: "crumbs" }, el("a", { href: "#/inventory" }, "Inventory"), " › resource"),
    el("h1", {}, `${r.resource_type} ${r.resource_id}`),
    facts([
      ["Name", r.name], ["Region", r.region], ["Account", r.account_id], ["Version", String(r.version)],
      ["As of snapshot", el("span", { id: "as-of" }, fmtTime(r.as_of))],
      ["First seen", fmtTime(r.first_seen)], ["Last changed", fmtTime(r.last_changed)],
      ["Deleted", r.deleted_at ? fmtTime(r.deleted_at) : null],
    ]),
    changedSince(r),
    el("p", {}, resourceLink(r.resource_id), " (every event that named it)"),
    el("h2", {}, "Findings"),
    el("div", { id: "resource-findings" }, captioned("Posture findings on this resource", [
      { title: "Check", value: (f) => findingLink(f.id, f.check_id) },
      { title: "Severity", value: (f) => sev(f.severity) },
      { title: "Status", value: (f) => f.status },
      { title: "What is wrong", value: (f) => f.messages.join("; ") },
      { title: "Failing since", value: (f) => fmtTime(f.first_failed_at) },
    ], r.findings, "No posture finding on this resource.")),
    el("h2", {}, "Alerts"),
    el("div", { id: "resource-alerts" }, captioned("Alerts that name this resource", [
      { title: "Alert", value: (a) => alertLink(a.alert_id, a.title) },
      { title: "Severity", value: (a) => sev(a.severity) },
      { title: "Status", value: (a) => a.status },
      { title: "Last seen", value: (a) => fmtTime(a.last_seen) },
    ], r.alerts, "No alert names this resource.")),
    el("h2", {}, "Changes"),
    r.changes.length >= 100 ? el("p", { class: "muted" }, "The 100 newest changes.") : null,
    el("div", { id: "resource-changes" }, captioned("Configuration changes", [
      { title: "Snapshot", value: (c) => fmtTime(c.detected_at) },
      { title: "Kind", value: (c) => c.kind },
      { title: "Diff", value: (c) => diffList(c.diff) },
      { title: "Caused by", value: (c) => cause(c.event) },
    ], r.changes, "No change since it was first seen.")),
    el("h2", { id: "config-heading" }, `Configuration as of the snapshot of ${fmtTime(r.as_of)}`),
    el("pre", { tabindex: "0", "aria-labelledby": "config-heading" }, JSON.stringify(r.config, null, 2)),
    el("h2", {}, "Events that named it"),
    captioned("Events that named this resource", [
      { title: "Time", value: (e) => eventLink(e.event_id, fmtTime(e.event_time)) },
      { title: "Event", value: (e) => e.event_name },
      { title: "Who", value: (e) => principalLink(e.principal_arn || e.user_name, e.user_name || e.principal_arn) },
      { title: "From", value: (e) => `${e.source_ip || "—"} ${e.country || ""}` },
    ], r.events, "No event named it."),
  );
}

// The notice that the shown configuration is older than changes CloudTrail recorded.
function changedSince(r) {
  if (!r.changed_since.length) return null;
  return el("section", { class: "notice", id: "changed-since", "aria-labelledby": "changed-since-title" },
    el("h2", { id: "changed-since-title" }, "Changed since this snapshot"),
    el("p", {}, `The configuration below is as of the snapshot of ${fmtTime(r.as_of)}. CloudTrail recorded ${r.changed_since.length} change${r.changed_since.length === 1 ? "" : "s"} to it after that, which the next snapshot will show:`),
    el("ul", {}, r.changed_since.map((e) => el("li", {}, cause(e)))));
}
