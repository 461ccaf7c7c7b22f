// The alerts list (filters, sort, bulk triage) and one alert: its evidence, what it has (a login
// map, flows, a posture finding), the principal's activity around it, triage and its history.
import { api } from "../api.js";
import { worldMap } from "../charts.js";
import { SEVERITIES, el, fmtTime, query, render, resourceLink, sev, table } from "../dom.js";
import { addressLink, eventLink, findingLink, incidentLink, principalLink, resourceEntityLink } from "../links.js";
import { eventsTable, flowsTable, mitreList, outcomeBadge, resourcesTable, triageForm } from "./incident.js";
import { appendRows, loadMore } from "./paging.js";
import { networkNote, networkText } from "./event.js";
import { alertResponse } from "./alert-response.js";

const FILTERS = ["status", "severity", "policy", "account", "principal", "sort"];
const SORTS = [["newest", "newest first"], ["oldest", "oldest first"], ["severity", "most severe first"], ["last_seen", "last seen first"]];

// Draws the current page again (the router listens to hash changes).

function filterForm(values) {
  const select = (name, options) => el("select", { name, id: `filter-${name}` },
    options.map(([value, text]) => el("option", { value, selected: value === values[name] }, text)));
  const input = (name, placeholder) => el("input", { name, id: `filter-${name}`, value: values[name], placeholder });
  const fields = {
    status: select("status", [["", "any status"], ...["open", "acknowledged", "resolved", "dismissed", "snoozed"].map((s) => [s, s])]),
    severity: select("severity", [["", "any severity"], ...[...SEVERITIES].reverse().map((s) => [s, s])]),
    policy: input("policy", "policy id"),
    account: input("account", "12 digits"),
    principal: input("principal", "ARN or user name"),
    sort: select("sort", SORTS),
  };
  const submit = (e) => {
    e.preventDefault();
    location.hash = "#/alerts" + query(Object.fromEntries(FILTERS.map((f) => [f, f === "sort" && fields.sort.value === "newest" ? "" : fields[f].value])));
  };
  return el("form", { class: "filters", id: "alert-filters", onsubmit: submit },
    ["Status", "Severity", "Policy", "Account", "Principal", "Sort"].map((label, i) => el("label", {}, label, fields[FILTERS[i]])),
    el("button", { type: "submit", id: "apply-filters" }, "Filter"));
}

export async function alertsPage(ctx, params) {
  const values = Object.fromEntries(FILTERS.map((f) => [f, params.get(f) || ""]));
  if (!values.sort) values.sort = "newest";
  const filters = { ...values, sort: values.sort === "newest" ? "" : values.sort };
  const first = await api("/api/v1/alerts" + query(filters));
  const analyst = ctx.can("analyst");
  const selected = new Set();
  const count = el("span", { id: "selected-count" }, "0 selected");
  const pick = (a) => el("input", {
    type: "checkbox", class: "pick", "aria-label": `select ${a.title}`, "data-id": a.id,
    onclick: (e) => e.stopPropagation(),
    onchange: (e) => { if (e.target.checked) selected.add(a.id); else selected.delete(a.id); count.textContent = `${selected.size} selected`; },
  });
  const columns = [
    ...(analyst ? [{ title: "", value: pick, class: "pick" }] : []),
    { title: "Severity", value: (a) => sev(a.severity) },
    { title: "Alert", value: (a) => el("a", { href: `#/alert/${a.id}`, "data-policy": a.policy_id, class: "entity alert-link" }, a.title) },
    { title: "Status", value: (a) => [el("span", { class: `status ${a.status}` }, a.status), a.status === "snoozed" ? ` until ${fmtTime(a.snoozed_until)}` : ""] },
    { title: "Principal", value: (a) => principalLink(a.principal) },
    { title: "Source", value: (a) => [addressLink(a.source_ip), a.country ? ` (${a.country})` : "", networkNote((a.details || {}).network)] },
    { title: "Account", value: (a) => a.account_id, class: "mono" },
    { title: "First seen", value: (a) => fmtTime(a.first_seen), class: "when" },
    { title: "Last seen", value: (a) => fmtTime(a.last_seen), class: "when" },
    { title: "Events", value: (a) => a.event_count },
  ];
  const alerts = table(columns, first.alerts);
  alerts.id = "alerts";
  const markRows = (rows, from) => rows.forEach((a, i) => { alerts.tBodies[0].rows[from + i].dataset.id = a.id; });
  markRows(first.alerts, 0);
  const all = el("input", { type: "checkbox", id: "select-all", "aria-label": "select every alert shown", onchange: (e) => {
    for (const box of alerts.querySelectorAll("input.pick")) { box.checked = e.target.checked; box.dispatchEvent(new Event("change")); }
  } });
  if (analyst) alerts.tHead.rows[0].cells[0].append(all);
  render(
    el("h1", {}, "Alerts"),
    filterForm(values),
    analyst ? el("div", { class: "panel bulk", id: "bulk" }, el("strong", {}, "Selected alerts: "), count, triageForm(() => [...selected], ctx.refresh, "bulk")) : null,
    alerts,
    first.alerts.length ? null : el("p", { class: "muted" }, "No alert matches."),
    loadMore({
      path: "/api/v1/alerts", params: filters, key: "alerts", nextCursor: first.next_cursor, id: "more-alerts",
      append: (rows) => { const from = alerts.tBodies[0].rows.length; appendRows(alerts, columns, rows); markRows(rows, from); },
    }),
  );
}

// Where the alert came from, with the principal's usual login places: only for alerts whose
// evidence has places (console logins).
async function loginMap(alert, evidence) {
  if (!evidence.some((e) => e.latitude != null)) return null;
  const usual = alert.principal ? await api("/api/v1/stats/login-locations" + query({ principal: alert.principal, account: alert.account_id })) : [];
  const map = await worldMap(usual.filter((u) => !evidence.some((e) => e.country === u.country && e.city === u.city)), evidence);
  return el("div", {},
    el("div", { class: "legend" }, el("span", {}, el("i", { class: "dot alert" }), "this alert"),
      el("span", {}, el("i", { class: "dot usual" }), `${alert.principal || "the principal"}'s usual login locations`)),
    map);
}

// A posture alert: the finding behind it, its messages and what to do.
function postureFinding(alert, resources) {
  const d = alert.details || {};
  if (d.posture_finding === undefined) return null;
  return el("div", { class: "panel", id: "posture-finding" },
    el("h2", {}, "Posture finding"),
    el("dl", { class: "facts" },
      el("dt", {}, "Finding"), el("dd", {}, findingLink(d.posture_finding, `${d.check} #${d.posture_finding}`)),
      el("dt", {}, "Resource"), el("dd", {}, alert.resources.map((id) => {
        const known = resources.find((r) => r.resource_id === id);
        return [known ? resourceEntityLink(known.account_id, known.resource_type, id) : d.resource_type ? resourceEntityLink(alert.account_id, d.resource_type, id) : id, " "];
      })),
      el("dt", {}, "Says"), el("dd", {}, (d.messages || []).join("; ") || "—"),
      d.remediation ? [el("dt", {}, "Remediation"), el("dd", { class: "remediation" }, d.remediation)] : null));
}

function historyTable(history) {
  if (!history.length) return el("p", { class: "muted", id: "history" }, "Not triaged yet.");
  const drawn = table([
    { title: "When", value: (h) => fmtTime(h.changed_at), class: "when" },
    { title: "Who", value: (h) => h.actor },
    { title: "Change", value: (h) => `${h.old_status} → ${h.new_status}${h.snoozed_until ? ` until ${fmtTime(h.snoozed_until)}` : ""}` },
    { title: "Reason", value: (h) => h.reason, class: "reason" },
  ], history);
  drawn.id = "history";
  return drawn;
}

function summaryPanel(ctx, alert, resources) {
  const inInventory = (id) => resources.find((r) => r.resource_id === id || r.arn === id);
  return el("div", { class: "panel" },
    el("dl", { class: "facts" },
      el("dt", {}, "Principal"), el("dd", {}, principalLink(alert.principal)),
      el("dt", {}, "From"), el("dd", {}, addressLink(alert.source_ip), alert.country ? ` (${alert.country})` : ""),
      (alert.details || {}).network ? [el("dt", {}, "Network"), el("dd", { id: "alert-network" }, networkText(alert.details.network))] : null,
      el("dt", {}, "Seen"), el("dd", {}, fmtTime(alert.first_seen), " to ", fmtTime(alert.last_seen)),
      el("dt", {}, "Resources"), el("dd", {}, alert.resources.length ? alert.resources.map((id) => {
        const known = inInventory(id);
        return [known ? resourceEntityLink(known.account_id, known.resource_type, known.resource_id, id) : resourceLink(id), " "];
      }) : "—"),
      alert.incident_id ? [el("dt", {}, "Incident"), el("dd", {}, incidentLink(alert.incident_id))] : null),
    ctx.can("analyst") ? triageForm(() => [alert.id], () => ctx.refresh(), "triage", { acknowledged: "ack" }) : null);
}

export async function alertPage(ctx, id) {
  const detail = await api(`/api/v1/alerts/${encodeURIComponent(id)}`);
  const { alert, evidence_events: evidence, history, flows, resources, activity } = detail;
  const [map, respond] = await Promise.all([loginMap(alert, evidence), alertResponse(ctx, id)]);
  const status = alert.status === "snoozed" ? `snoozed until ${fmtTime(alert.snoozed_until)}` : alert.status;
  render(
    el("h1", {}, sev(alert.severity), " ", alert.title),
    el("p", { class: "muted", id: "alert-meta" }, `${alert.policy_id} · `, el("span", { id: "alert-status", class: `status ${alert.status}` }, status),
      ` · account ${alert.account_id} · MITRE ${mitreList(alert.mitre)}`),
    el("div", { class: "grid" }, summaryPanel(ctx, alert, resources), map),
    postureFinding(alert, resources),
    respond,
    el("h2", {}, "Triage history"),
    historyTable(history),
    evidence.length ? [el("h2", {}, "Evidence"), evidenceEvents(id, alert, evidence, detail.evidence_next_cursor)] : null,
    flows.length ? [el("h2", {}, "Flows"), flowsTable(flows)] : null,
    resources.length ? [el("h2", {}, "Resources as the latest snapshot has them"), resourcesTable(resources)] : null,
    activity.length ? [
      el("h2", {}, `${alert.principal || alert.source_ip || "The principal"}'s activity two hours either side`),
      (() => { const t = eventsTable(activity, { marked: alert.id }); t.id = "activity"; return t; })(),
    ] : null,
  );
}

// The events behind the alert, the first page drawn and the rest a "Load more" away.
function evidenceEvents(id, alert, evidence, nextCursor) {
  const columns = [
    { title: "Time", value: (e) => fmtTime(e.event_time), class: "when" },
    { title: "Event", value: (e) => eventLink(e.event_id, e.event_name || e.event_id) },
    { title: "Who", value: (e) => principalLink(e.principal_arn || e.user_name) },
    { title: "From", value: (e) => [addressLink(e.source_ip), ` ${e.city || ""} ${e.country || ""}`] },
    { title: "Outcome", value: (e) => [outcomeBadge(e.outcome), e.error_code ? ` ${e.error_code}` : ""] },
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

