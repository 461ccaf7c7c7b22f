// The alerts list and one alert: its evidence, the map of where it came from, and triage.
import { api } from "../api.js";
import { worldMap } from "../charts.js";
import { el, fmtTime, query, render, resourceLink, sev, table } from "../dom.js";
import { appendRows, loadMore } from "./paging.js";

export async function alertsPage(params) {
  const status = params.get("status") || "";
  const policy = params.get("policy") || "";
  const first = await api("/api/v1/alerts" + query({ status, policy }));
  const statusSelect = el("select", { name: "status" },
    ["", "open", "acknowledged", "resolved", "dismissed", "snoozed"].map((s) => el("option", { value: s, selected: s === status }, s || "any status")));
  const policyInput = el("input", { name: "policy", value: policy, placeholder: "policy id" });
  const columns = [
    { title: "Severity", value: (a) => sev(a.severity) },
    { title: "Alert", value: (a) => el("a", { href: `#/alert/${a.id}`, "data-policy": a.policy_id }, a.title) },
    { title: "Status", value: (a) => a.status },
    { title: "Principal", value: (a) => a.principal || "—" },
    { title: "Source", value: (a) => [a.source_ip || "—", a.country ? ` (${a.country})` : ""].join("") },
    { title: "First seen", value: (a) => fmtTime(a.first_seen) },
    { title: "Last seen", value: (a) => fmtTime(a.last_seen) },
    { title: "Events", value: (a) => a.event_count },
  ];
  const open = (a) => { location.hash = `#/alert/${a.id}`; };
  const alerts = table(columns, first.alerts, open);
  alerts.id = "alerts";
  render(
    el("h1", {}, "Alerts"),
    el("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); location.hash = "#/alerts" + query({ status: statusSelect.value, policy: policyInput.value }); } },
      el("label", {}, "Status", statusSelect), el("label", {}, "Policy", policyInput), el("button", { type: "submit" }, "Filter")),
    alerts,
    first.alerts.length ? null : el("p", { class: "muted" }, "No alert matches."),
    loadMore({
      path: "/api/v1/alerts", params: { status, policy }, key: "alerts", nextCursor: first.next_cursor, id: "more-alerts",
      append: (rows) => appendRows(alerts, columns, rows, open),
    }),
  );
}

export async function alertPage(ctx, id) {
  const { alert, evidence_events: evidence, evidence_next_cursor: evidenceCursor } = await api(`/api/v1/alerts/${encodeURIComponent(id)}`);
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
    ctx.refresh();
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
        ctx.can("analyst") ? el("div", { class: "actions" }, reason,
          el("button", { onclick: triage("acknowledged"), id: "ack" }, "Acknowledge"),
          el("button", { onclick: triage("resolved") }, "Resolve"),
          el("button", { class: "secondary", onclick: triage("dismissed") }, "Dismiss")) : null),
      el("div", {},
        el("div", { class: "legend" }, el("span", {}, el("i", { class: "dot alert" }), "this alert"),
          el("span", {}, el("i", { class: "dot usual" }), `${principal || "the principal"}'s usual login locations`)),
        map)),
    el("h2", {}, "Evidence"),
    evidenceEvents(id, alert, evidence, evidenceCursor),
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

// The events behind the alert, the first page drawn and the rest a "Load more" away.
function evidenceEvents(id, alert, evidence, nextCursor) {
  const columns = [
    { title: "Time", value: (e) => fmtTime(e.event_time) },
    { title: "Event", value: (e) => e.event_name },
    { title: "Who", value: (e) => e.user_name || e.principal_arn || "—" },
    { title: "From", value: (e) => `${e.source_ip || "—"} ${e.city || ""} ${e.country || ""}` },
    { title: "Error", value: (e) => e.error_code || "" },
    { title: "Resources", value: (e) => e.resource_ids.map((r) => [resourceLink(r), " "]) },
  ];
  const drawn = table(columns, evidence);
  drawn.id = "evidence";
  // A burst keeps a sample of its events: say how many there were.
  const sampled = alert.event_count > evidence.length && !nextCursor;
  return el("div", {},
    drawn,
    sampled ? el("p", { class: "muted" }, `${alert.event_count} events; a sample of them is kept as evidence.`) : null,
    loadMore({
      path: `/api/v1/alerts/${encodeURIComponent(id)}/evidence`, params: {}, key: "events", nextCursor, id: "more-evidence",
      append: (rows) => appendRows(drawn, columns, rows),
    }));
}
