// Open alerts by severity (each a link to those alerts), events per hour (failed in red, hours
// without events as gaps), console logins, the newest open incidents and recent changes.
import { api } from "../api.js";
import { barChart } from "../charts.js";
import { el, fmtTime, query, render, sev, table } from "../dom.js";
import { addressLink, incidentLink, principalLink, resourceEntityLink } from "../links.js";

export async function overviewPage() {
  const [overview, { changes }, { incidents, next_cursor: moreIncidents }] = await Promise.all([
    api("/api/v1/stats/overview"),
    api("/api/v1/changes?limit=10"),
    api("/api/v1/incidents?open=true&limit=10"),
  ]);
  const open = overview.open_alerts;
  render(
    el("h1", {}, "Overview"),
    el("p", { class: "muted" }, `${fmtTime(overview.since)} to ${fmtTime(overview.until)}`),
    el("div", { class: "cards" },
      ["critical", "high", "medium", "low", "info"].map((s) => {
        const found = open.find((o) => o.severity === s);
        return el("a", { class: "card", href: "#/alerts" + query({ status: "open", severity: s }), "data-severity": s },
          el("div", { class: "n" }, found ? found.count : 0), sev(s));
      })),
    el("h2", {}, "Events per hour (failed in red)"),
    el("div", { class: "panel", id: "events-per-hour" }, barChart(overview.events_per_hour, {
      label: (p) => fmtTime(p.hour).slice(0, 13) + "h", value: (p) => p.events, failed: (p) => p.failed,
    })),
    el("div", { class: "grid" },
      el("div", {}, el("h2", {}, "Console logins by country"),
        table([
          { title: "Country", value: (r) => r.country || "unknown" },
          { title: "Logins", value: (r) => r.logins },
          { title: "Failed", value: (r) => (r.failed ? el("span", { class: "fail-text" }, r.failed) : "0") },
        ], overview.logins_by_country)),
      el("div", {}, el("h2", {}, "Newest open incidents"),
        incidents.length ? table([
          { title: "Severity", value: (r) => sev(r.severity) },
          { title: "Incident", value: (r) => incidentLink(r.id, r.timeline[0] ? r.timeline[0].title : r.id) },
          { title: "Principal", value: (r) => principalLink(r.principal) },
          { title: "From", value: (r) => addressLink(r.source_ip) },
          { title: "Alerts", value: (r) => `${r.alert_count} (${r.open_count} open)` },
          { title: "Started", value: (r) => fmtTime(r.first_seen) },
        ], incidents) : el("p", { class: "muted" }, "No incident with open alerts."),
        el("p", {}, el("a", { href: "#/incidents?open=true", id: "open-incidents" }, moreIncidents ? "More open incidents" : "All open incidents"),
          " · ", el("a", { href: "#/incidents" }, "every incident"))),
      el("div", {}, el("h2", {}, "Recent configuration changes"),
        changes.length ? table([
          { title: "When", value: (r) => fmtTime(r.detected_at) },
          { title: "Resource", value: (r) => resourceEntityLink(r.account_id, r.resource_type, r.resource_id) },
          { title: "Change", value: (r) => r.kind },
          { title: "By", value: (r) => (r.principal_arn ? principalLink(r.principal_arn) : "unknown yet") },
        ], changes) : el("p", { class: "muted" }, "No changes recorded (config snapshots come from onboarded accounts)."))),
  );
}
