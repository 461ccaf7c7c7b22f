// Open alerts by severity, events per hour, console logins, incidents and recent changes.
import { api } from "../api.js";
import { barChart } from "../charts.js";
import { el, fmtTime, query, render, sev, table } from "../dom.js";

export async function overviewPage() {
  const [overview, { changes }, { incidents, next_cursor: moreIncidents }] = await Promise.all([
    api("/api/v1/stats/overview"),
    api("/api/v1/changes?limit=10"),
    api("/api/v1/incidents?limit=20"),
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
          { title: "Alerts", value: (r) => r.alert_count },
          { title: "Started", value: (r) => fmtTime(r.first_seen) },
        ], incidents),
        moreIncidents ? el("p", { class: "muted" }, "The 20 newest incidents.") : null),
      el("div", {}, el("h2", {}, "Recent configuration changes"),
        changes.length ? table([
          { title: "When", value: (r) => fmtTime(r.detected_at) },
          { title: "Resource", value: (r) => el("a", { href: `#/resource/${r.account_id}/${r.resource_type}/${encodeURIComponent(r.resource_id)}` }, r.resource_id) },
          { title: "Change", value: (r) => r.kind },
          { title: "By", value: (r) => r.principal_arn || "unknown yet" },
        ], changes) : el("p", { class: "muted" }, "No changes recorded (config snapshots come from onboarded accounts)."))),
  );
}
