// Incidents: the list (newest first) and one incident's story: its status and owner, who, from
// where, what they did in order, the ATT&CK chain in the order reached, the resources touched as the latest snapshot has them, the flows, and
// triage of all its alerts at once. Also the widgets the alert pages share (outcome badges,
// ATT&CK labels, event, flow and resource tables, the triage form).
import { api, errorText } from "../api.js";
import { worldMap } from "../charts.js";
import { el, fmtBytes, fmtTime, query, render, sev, table } from "../dom.js";
import { addressLink, alertLink, eventLink, incidentLink, principalLink, resourceEntityLink } from "../links.js";
import { appendRows, loadMore } from "./paging.js";
import { incidentResponse } from "./alert-response.js";

// ATT&CK Enterprise tactics in kill-chain order.
const TACTICS = [
  ["TA0043", "Reconnaissance"], ["TA0042", "Resource Development"], ["TA0001", "Initial Access"],
  ["TA0002", "Execution"], ["TA0003", "Persistence"], ["TA0004", "Privilege Escalation"],
  ["TA0005", "Defense Evasion"], ["TA0006", "Credential Access"], ["TA0007", "Discovery"],
  ["TA0008", "Lateral Movement"], ["TA0009", "Collection"], ["TA0011", "Command and Control"],
  ["TA0010", "Exfiltration"], ["TA0040", "Impact"],
];
const TACTIC_NAME = Object.fromEntries(TACTICS);
const TACTIC_ORDER = Object.fromEntries(TACTICS.map(([id], i) => [id, i]));

// "TA0001/T1078.004" (or "TA0001", or "TA0001/") as "TA0001 Initial Access · T1078.004".
export function mitreText(label) {
  const [tactic, technique] = String(label).split("/");
  const name = TACTIC_NAME[tactic];
  return [name ? `${tactic} ${name}` : tactic, technique].filter(Boolean).join(" · ");
}

export function mitreList(labels) {
  return labels.length ? labels.map(mitreText).join(", ") : "—";
}

// A success or failure badge (a failed console login has no error code, only its outcome).
export function outcomeBadge(outcome) {
  const failed = outcome === "failure";
  return el("span", { class: `badge outcome ${failed ? "failure" : "success"}`, "data-outcome": outcome }, failed ? "failed" : "ok");
}

function place(e) {
  return [addressLink(e.source_ip), e.country || e.city ? ` ${[e.city, e.country].filter(Boolean).join(", ")}` : ""];
}

// CloudTrail events as a table: when, what, who, from where, what was asked, the outcome and
// (with `alertColumn`) the alerts each one is evidence of.
export function eventsTable(events, { alertColumn, marked } = {}) {
  const columns = [
    { title: "Time", value: (e) => fmtTime(e.event_time), class: "when" },
    { title: "Event", value: (e) => eventLink(e.event_id, e.event_name || e.event_id) },
    { title: "Who", value: (e) => principalLink(e.principal_arn || e.user_name) },
    { title: "From", value: place },
    { title: "Request", value: (e) => e.request || "", class: "request mono" },
    { title: "Outcome", value: (e) => [outcomeBadge(e.outcome), e.error_code ? ` ${e.error_code}` : ""] },
  ];
  if (alertColumn) columns.push({ title: "Alerts", value: (e) => e.alert_ids.map((id) => [alertLink(id), " "]) });
  if (marked) columns.push({ title: "In alert", value: (e) => (e.alert_ids.includes(marked) ? "●" : ""), class: "in-alert" });
  const drawn = table(columns, events);
  drawn.classList.add("events");
  for (const [i, row] of [...drawn.tBodies[0].rows].entries()) {
    row.dataset.eventId = events[i].event_id;
    row.dataset.outcome = events[i].outcome;
    if (events[i].alert_ids.length) row.classList.add("evidence");
  }
  return drawn;
}

const PROTOCOLS = { 6: "tcp", 17: "udp", 1: "icmp" };

export function flowsTable(flows) {
  const drawn = table([
    { title: "From", value: (f) => addressLink(f.srcaddr) },
    { title: "To", value: (f) => addressLink(f.dstaddr) },
    { title: "Port", value: (f) => [PROTOCOLS[f.protocol] || f.protocol || "", f.dstport != null ? ` ${f.dstport}` : ""] },
    { title: "Action", value: (f) => f.action || "—" },
    { title: "Bytes", value: (f) => fmtBytes(f.bytes) },
    { title: "Records", value: (f) => f.records },
    { title: "First", value: (f) => fmtTime(f.first_seen) },
    { title: "Last", value: (f) => fmtTime(f.last_seen) },
    { title: "Interface", value: (f) => f.interface_id || "—", class: "mono" },
  ], flows);
  drawn.id = "flows";
  return drawn;
}

// A security-group rule as a request line reads: "tcp 22 from 176.36.10.20/32".
function ruleText(rule) {
  const ports = rule.from_port == null ? "" : rule.from_port === rule.to_port ? ` ${rule.from_port}` : ` ${rule.from_port}-${rule.to_port}`;
  const from = rule.cidr_ipv4 || rule.cidr_ipv6 || rule.source_group || rule.prefix_list || "—";
  return `${rule.protocol === "-1" ? "all" : rule.protocol}${ports} from ${from}`;
}

// What the latest snapshot says of a resource, in a line.
function resourceState(r) {
  if (r.deleted_at) return `deleted (seen gone ${fmtTime(r.deleted_at)})`;
  const c = r.config || {};
  if (Array.isArray(c.ingress)) return `ingress: ${c.ingress.map(ruleText).join("; ") || "none"}`;
  if (c.instance_id) return `instance profile: ${c.iam_instance_profile_arn || "none"}`;
  if (c.is_logging !== undefined) return `logging ${c.is_logging ? "on" : "off"}`;
  if (Array.isArray(c.attached_policies)) return `policies: ${c.attached_policies.join(", ") || "none"}`;
  return r.name || "";
}

export function resourcesTable(resources) {
  const drawn = table([
    { title: "Resource", value: (r) => resourceEntityLink(r.account_id, r.resource_type, r.resource_id) },
    { title: "Type", value: (r) => r.resource_type },
    { title: "Latest snapshot", value: (r) => resourceState(r), class: "state-line" },
    { title: "Snapshot time", value: (r) => fmtTime(r.snapshot_at), class: "when" },
    { title: "Last changed", value: (r) => fmtTime(r.last_changed), class: "when" },
  ], resources);
  drawn.id = "resources";
  for (const [i, row] of [...drawn.tBodies[0].rows].entries()) row.dataset.resource = resources[i].resource_id;
  return drawn;
}

// The status form: one reason for every alert in `ids()`; snoozing asks until when.
// `buttonIds` names buttons otherwise than `<prefix>-<status>`.
export function triageForm(ids, done, prefix = "triage", buttonIds = {}) {
  const reason = el("input", { name: "reason", placeholder: "why (kept in the history)", size: 36, id: `${prefix}-reason` });
  const until = el("input", { type: "datetime-local", id: `${prefix}-until`, "aria-label": "snooze until (UTC)" });
  const message = el("span", { class: "result", id: `${prefix}-result`, role: "status" });
  const apply = (status) => async () => {
    const chosen = ids();
    message.className = "result";
    if (!chosen.length) { message.textContent = "select alerts first"; return; }
    if (!reason.value.trim()) { reason.focus(); message.textContent = "a reason is required"; return; }
    const body = { ids: chosen, status, reason: reason.value };
    if (status === "snoozed") {
      if (!until.value) { until.focus(); message.textContent = "snoozing needs a time"; return; }
      body.until = new Date(until.value + "Z").toISOString();
    }
    try {
      await api("/api/v1/alerts/status", { method: "POST", body });
      done();
    } catch (error) {
      message.className = "result error";
      message.textContent = errorText(error);
    }
  };
  const button = (status, text, cls) => el("button", { type: "button", class: cls, id: buttonIds[status] || `${prefix}-${status}`, onclick: apply(status) }, text);
  return el("div", { class: "actions triage" }, reason,
    button("acknowledged", "Acknowledge"), button("resolved", "Resolve", "secondary"),
    button("dismissed", "Dismiss", "secondary"), button("open", "Reopen", "secondary"),
    el("span", { class: "snooze" }, until, button("snoozed", "Snooze", "secondary")), message);
}

export async function incidentsPage(ctx, params) {
  const open = params.get("open") === "true";
  const first = await api("/api/v1/incidents" + query({ open: open ? "true" : "", limit: 50 }));
  const columns = [
    { title: "Severity", value: (i) => sev(i.severity) },
    { title: "Incident", value: (i) => incidentLink(i.id, `${i.timeline[0] ? i.timeline[0].title : i.id}`) },
    { title: "Principal", value: (i) => principalLink(i.principal) },
    { title: "From", value: (i) => addressLink(i.source_ip) },
    { title: "Status", value: (i) => el("span", { class: `status ${i.status}` }, i.status) },
    { title: "Owner", value: (i) => i.owner || "—" },
    { title: "Tactics", value: (i) => i.tactics.map((t) => t.name).join(" → ") || "—", class: "tactics" },
    { title: "Alerts", value: (i) => `${i.alert_count} (${i.open_count} open)` },
    { title: "Started", value: (i) => fmtTime(i.first_seen), class: "when" },
    { title: "Last seen", value: (i) => fmtTime(i.last_seen), class: "when" },
  ];
  const drawn = table(columns, first.incidents);
  drawn.id = "incidents";
  render(
    el("h1", {}, open ? "Open incidents" : "Incidents"),
    el("p", { class: "muted" }, "Alerts of one intrusion, linked by session, address, the keys and users it created and the ",
      "instances it took over (their flows included), newest first. ",
      open ? el("a", { href: "#/incidents" }, "Show all") : el("a", { href: "#/incidents?open=true" }, "Only those not resolved or dismissed")),
    first.incidents.length ? drawn : el("p", { class: "muted" }, "No incident."),
    loadMore({
      path: "/api/v1/incidents", params: { open: open ? "true" : "", limit: 50 }, key: "incidents",
      nextCursor: first.next_cursor, id: "more-incidents", append: (rows) => appendRows(drawn, columns, rows),
    }),
  );
}

// The ATT&CK chain: the incident's tactics in the order the intrusion reached them (the API's
// `tactics`), each with its techniques and alerts.
function attackChain(alerts, reached) {
  const tactics = new Map();
  for (const a of alerts) {
    for (const label of a.mitre) {
      const [tactic, technique] = label.split("/");
      if (!tactics.has(tactic)) tactics.set(tactic, { techniques: new Set(), alerts: new Map() });
      if (technique) tactics.get(tactic).techniques.add(technique);
      tactics.get(tactic).alerts.set(a.id, a);
    }
  }
  const when = Object.fromEntries(reached.map((t, i) => [t.id, i]));
  const rank = (id) => when[id] ?? 100 + (TACTIC_ORDER[id] ?? 99);
  const ordered = [...tactics.entries()].sort(([a], [b]) => rank(a) - rank(b));
  return el("ol", { class: "attack-chain", id: "attack-chain" }, ordered.map(([tactic, t]) =>
    el("li", { "data-tactic": tactic },
      el("strong", {}, mitreText(tactic)), " ", el("span", { class: "mono" }, [...t.techniques].join(", ")),
      el("div", { class: "chain-alerts" }, [...t.alerts.values()].map((a) => [alertLink(a.id, a.title), " "])))));
}

// The four questions of an on-call analyst, answered from the incident.
function keyFacts(detail) {
  const login = detail.events.find((e) => e.event_name === "ConsoleLogin" && e.outcome === "success");
  const failed = detail.events.filter((e) => e.event_name === "ConsoleLogin" && e.outcome === "failure").length;
  const groups = detail.resources.filter((r) => r.resource_type === "ec2:security-group");
  const opened = groups.map((group) => {
    const changes = detail.events.filter((e) => e.event_name === "AuthorizeSecurityGroupIngress" && e.resource_ids.includes(group.resource_id));
    const asked = changes.flatMap((e) => (e.request || "").split(", ").filter(Boolean));
    const rules = (group.config && group.config.ingress || []).map(ruleText);
    const still = asked.filter((rule) => rules.includes(rule));
    return { group, changes, asked, still };
  }).filter((o) => o.changes.length);
  return el("dl", { class: "facts", id: "incident-facts" },
    el("dt", {}, "Console login"),
    el("dd", { id: "fact-login" }, login
      ? [principalLink(login.principal_arn || login.user_name), " at ", el("time", { datetime: login.event_time }, fmtTime(login.event_time)),
        " from ", place(login), failed ? ` after ${failed} failed attempts` : ""]
      : "none in this incident"),
    el("dt", {}, "Then"),
    el("dd", {}, `${detail.events.filter((e) => e.read_only === false && e.event_name !== "ConsoleLogin").length} changes, listed in order below`),
    opened.length ? opened.map((o) => [
      el("dt", {}, "Security group opened"),
      el("dd", { class: "fact-opened", "data-group": o.group.resource_id },
        resourceEntityLink(o.group.account_id, o.group.resource_type, o.group.resource_id), ": ", o.asked.join(", "),
        " at ", fmtTime(o.changes[0].event_time)),
      el("dt", {}, "Still open?"),
      el("dd", { class: "fact-still-open", "data-group": o.group.resource_id, "data-open": o.still.length ? "yes" : "no" },
        o.still.length ? `yes: ${o.still.join(", ")}` : "no: the rule is gone",
        ` in the latest snapshot, ${fmtTime(o.group.snapshot_at)}`),
    ]) : [el("dt", {}, "Security groups"), el("dd", {}, "none opened")],
  );
}

function incidentAlerts(alerts, timeline) {
  const why = Object.fromEntries(timeline.map((s) => [s.alert_id, s.link_reason]));
  const drawn = table([
    { title: "Started", value: (a) => fmtTime(a.first_seen), class: "when" },
    { title: "Severity", value: (a) => sev(a.severity) },
    { title: "Alert", value: (a) => alertLink(a.id, a.title) },
    { title: "Status", value: (a) => el("span", { class: `status ${a.status}` }, a.status) },
    { title: "ATT&CK", value: (a) => mitreList(a.mitre) },
    { title: "Joined because", value: (a) => why[a.id] || "—", class: "link-reason" },
  ], alerts);
  drawn.id = "incident-alerts";
  return drawn;
}

// Status and owner of the incident (analysts), with the reason kept in its history.
function incidentForm(detail, done) {
  const status = el("select", { id: "case-status", "aria-label": "incident status" },
    ["open", "investigating", "contained", "resolved", "dismissed"].map((s) =>
      el("option", { value: s, selected: s === detail.status ? "selected" : null }, s)));
  const owner = el("input", { id: "case-owner", value: detail.owner || "", placeholder: "owner (user name)", size: 16, "aria-label": "owner" });
  const reason = el("input", { id: "case-reason", placeholder: "why (kept in the history)", size: 30, "aria-label": "reason" });
  const message = el("span", { class: "result", id: "case-result", role: "status" });
  const save = async () => {
    message.className = "result";
    if (!reason.value.trim()) { reason.focus(); message.textContent = "a reason is required"; return; }
    const body = { reason: reason.value };
    if (status.value !== detail.status) body.status = status.value;
    if (owner.value.trim() !== (detail.owner || "")) body.owner = owner.value.trim();
    if (!body.status && body.owner === undefined) { message.textContent = "nothing changed"; return; }
    try {
      await api(`/api/v1/incidents/${encodeURIComponent(detail.id)}`, { method: "PATCH", body });
      done();
    } catch (error) {
      message.className = "result error";
      message.textContent = errorText(error);
    }
  };
  return el("div", { class: "actions incident-form" }, status, owner, reason,
    el("button", { type: "button", id: "case-save", onclick: save }, "Save"), message);
}

function historyList(history) {
  if (!history.length) return el("p", { class: "muted", id: "incident-history" }, "No change yet.");
  return el("ol", { id: "incident-history", class: "history" }, history.map((c) =>
    el("li", {}, el("time", { datetime: c.changed_at }, fmtTime(c.changed_at)), " ", c.actor, ": ", c.field, " ",
      c.old_value || "—", " → ", c.new_value || "—", c.reason ? ` (${c.reason})` : "")));
}

function configChangesTable(changes) {
  const drawn = table([
    { title: "When", value: (c) => fmtTime(c.event_time || c.detected_at), class: "when" },
    { title: "Resource", value: (c) => c.resource_id, class: "mono" },
    { title: "Change", value: (c) => c.kind },
    { title: "Call", value: (c) => c.event_id ? eventLink(c.event_id, c.event_name || c.event_id) : "—" },
    { title: "By", value: (c) => principalLink(c.principal_arn) },
    { title: "Diff", value: (c) => el("code", {}, JSON.stringify(c.diff).slice(0, 300)), class: "diff" },
  ], changes);
  drawn.id = "incident-config-changes";
  return drawn;
}

const TIMELINE_KIND = { alert: "alert", event: "event", config_change: "configuration change", flow: "flow", response: "response" };

// Alerts, changes, flows and response actions in one list, oldest first (the API's
// `merged_timeline`, cut at its limit: said when it was).
function mergedTimeline(merged) {
  if (!merged.entries.length) return el("p", { class: "muted", id: "incident-timeline" }, "Nothing to show.");
  const list = el("ol", { class: "timeline merged", id: "incident-timeline" }, merged.entries.map((e) => {
    const ref = e.kind === "alert" ? alertLink(e.ref_id, e.title) : e.kind === "event" ? eventLink(e.ref_id, e.title) : e.title;
    return el("li", { class: `tl-${e.kind} tl-${e.status || "none"}`, "data-kind": e.kind, "data-status": e.status || "", "data-ref": e.ref_id || "" },
      el("time", { class: "when", datetime: e.time }, fmtTime(e.time)),
      el("span", { class: "timeline-kind" }, TIMELINE_KIND[e.kind] || e.kind),
      el("div", { class: "timeline-body" },
        e.kind === "alert" ? [sev(e.status), " "] : e.status ? el("span", { class: `timeline-status ${e.status}` }, e.status.replace(/_/g, " "), " ") : null,
        el("span", { class: e.kind === "response" ? "mono" : null }, ref),
        e.actor ? el("span", { class: "timeline-actor" }, " · ", e.kind === "response" ? e.actor : principalLink(e.actor)) : null,
        e.detail ? el("div", { class: "timeline-detail" }, e.detail) : null));
  }));
  return el("div", {}, list, merged.truncated
    ? el("p", { class: "muted", id: "incident-timeline-cut" }, `The first ${merged.entries.length} of ${merged.total} entries: events, then flows, were left out first.`)
    : null);
}

// An address's network as its alerts carry it: AS, organisation, Tor/VPN/hosting flags.
function placeNetwork(p) {
  const flags = [[p.is_tor, "Tor exit"], [p.is_vpn, "VPN"], [p.is_hosting, "hosting"]].filter(([on]) => on).map(([, name]) => name);
  const as = p.asn != null ? `AS${p.asn}${p.as_org ? ` ${p.as_org}` : ""}` : p.as_org || "";
  if (!as && !flags.length) return null;
  return el("span", { class: "place-network", "data-asn": p.asn ?? "", "data-flags": flags.join(",") },
    " · ", as, flags.map((f) => [" ", el("span", { class: "flag" }, f)]));
}

// The incident's outside addresses on the map; those with no known place listed under it.
async function placesMap(places) {
  const located = places.filter((p) => p.latitude != null);
  const unplaced = places.filter((p) => p.latitude == null);
  if (!places.length) return null;
  const points = located.map((p) => ({ source_ip: p.address, latitude: p.latitude, longitude: p.longitude, city: p.city, country: p.country }));
  const map = located.length ? await worldMap([], points) : null;
  if (map) map.setAttribute("data-testid", "incident-map");
  return el("div", { id: "incident-places" },
    el("div", { class: "legend" }, el("span", {}, el("i", { class: "dot alert" }), `the incident's outside addresses (${located.length} placed)`)),
    map,
    el("ul", { class: "places" }, places.map((p) => el("li", { "data-address": p.address },
      addressLink(p.address), ` ${[p.city, p.country].filter(Boolean).join(", ") || "place unknown"}`,
      placeNetwork(p), ` · in ${p.seen_in.join(", ")}`))),
    unplaced.length ? el("p", { class: "muted" }, `${unplaced.length} not placed: no country known for them.`) : null);
}

export async function incidentPage(ctx, id) {
  const detail = await api(`/api/v1/incidents/${encodeURIComponent(id)}`);
  const ids = detail.alerts.map((a) => a.id);
  const [map, respond] = await Promise.all([placesMap(detail.places || []), incidentResponse(ctx, ids)]);
  render(
    el("h1", {}, sev(detail.severity), " Incident ", el("span", { class: "mono" }, detail.id), " ",
      el("span", { class: `status ${detail.status}`, id: "incident-state" }, detail.status)),
    detail.merged_from ? el("p", { class: "notice", id: "merged-from" }, `${detail.merged_from} was merged into this incident: they were one intrusion.`) : null,
    el("p", { class: "muted" }, `account ${detail.account_id} · ${fmtTime(detail.first_seen)} to ${fmtTime(detail.last_seen)} · `,
      `${detail.alert_count} alerts, ${detail.open_count} open · owner `, el("span", { id: "incident-owner-name" }, detail.owner || "none")),
    el("p", { class: "downloads" }, "Hand it over: ",
      el("a", { id: "report-html", href: `/api/v1/incidents/${encodeURIComponent(detail.id)}/report?format=html`, download: "" }, "report (HTML, prints to PDF)"),
      " · ", el("a", { id: "report-ocsf", href: `/api/v1/incidents/${encodeURIComponent(detail.id)}/report?format=ocsf`, download: "" }, "OCSF JSON")),
    ctx.can("analyst") ? incidentForm(detail, () => ctx.refresh()) : null,
    el("div", { class: "grid" },
      el("div", { class: "panel" }, keyFacts(detail),
        ctx.can("analyst") ? [el("h2", {}, "Triage every alert of the incident"), triageForm(() => ids, () => ctx.refresh(), "incident")] : null),
      map),
    el("h2", {}, "ATT&CK chain"),
    attackChain(detail.alerts, detail.tactics),
    el("h2", {}, "Alerts"),
    incidentAlerts(detail.alerts, detail.timeline),
    respond,
    el("h2", {}, "Timeline"),
    el("p", { class: "muted" }, "Alerts, changes, failures and evidence, configuration changes, flows and response actions, in time order."),
    mergedTimeline(detail.merged_timeline),
    detail.responses_truncated ? el("p", { class: "muted" }, "The newest 200 response actions.") : null,
    el("h2", {}, "What happened, in order"),
    el("p", { class: "muted" }, "Events from the incident's address while it lasted, and its alerts' evidence."),
    (() => { const t = eventsTable(detail.events, { alertColumn: true }); t.id = "incident-events"; return t; })(),
    detail.events_truncated ? el("p", { class: "muted" }, "The first 500 events.") : null,
    detail.config_changes.length ? [el("h2", {}, "Configuration changes"), configChangesTable(detail.config_changes)] : null,
    detail.resources.length ? [el("h2", {}, "Resources touched"), resourcesTable(detail.resources)] : null,
    detail.flows.length ? [el("h2", {}, "Flows of its addresses"), flowsTable(detail.flows)] : null,
    el("h2", {}, "History"),
    historyList(detail.history),
  );
}
