// A principal (an ARN or a user name): when it was first and last seen, its console logins with
// their outcome and country, where it worked from, the alerts about it and its latest events.
import { api } from "../api.js";
import { captioned, countryName, el, facts, fmtTime, query, render, sev } from "../dom.js";
import { addressLink, alertLink, eventLink } from "../links.js";

export async function principalPage(ctx, principal) {
  const [p, recent] = await Promise.all([
    api("/api/v1/principals/activity" + query({ principal })),
    api("/api/v1/events" + query({ principal, limit: 50 })),
  ]);
  const trail = "#/audit" + query({ principal });
  render(
    el("p", { class: "crumbs" }, el("a", { href: "#/audit" }, "Audit trail"), " › principal"),
    el("h1", {}, `Principal ${principal}`),
    facts([
      ["First seen", fmtTime(p.first_seen)],
      ["Covers", p.window_start ? `the 90 days up to the last event: from ${fmtTime(p.window_start)}` : null],
      ["Last seen", fmtTime(p.last_seen)],
      ["Events", el("a", { href: trail }, `${p.events} events`)],
      ["Failed calls", el("a", { href: "#/audit" + query({ principal, failed: "true" }) }, String(p.failed))],
      ["Also known as", p.identities.filter((i) => i !== principal).join(", ") || null],
    ]),
    el("h2", {}, "Console logins"),
    el("div", { id: "logins" }, captioned("Console logins", [
      { title: "Time", value: (l) => eventLink(l.event_id, fmtTime(l.event_time)) },
      { title: "Outcome", value: (l) => el("span", { class: l.outcome === "Success" ? "ok-text" : "fail-text" }, l.outcome || "—") },
      { title: "MFA", value: (l) => l.mfa_used || "—" },
      { title: "From", value: (l) => addressLink(l.source_ip) },
      { title: "Country", value: (l) => countryName(l.country) },
      { title: "City", value: (l) => l.city || "—" },
    ], p.logins, "No console login.")),
    el("h2", {}, "Alerts"),
    el("div", { id: "principal-alerts" }, captioned("Alerts about this principal", [
      { title: "Alert", value: (a) => alertLink(a.alert_id, a.title) },
      { title: "Severity", value: (a) => sev(a.severity) },
      { title: "Status", value: (a) => a.status },
      { title: "First seen", value: (a) => fmtTime(a.first_seen) },
      { title: "Last seen", value: (a) => fmtTime(a.last_seen) },
    ], p.alerts, "No alert about this principal.")),
    el("div", { class: "grid" },
      el("div", {}, el("h2", {}, "Countries"), captioned("Events by country", [
        { title: "Country", value: (c) => (c.value ? countryName(c.value) : "unknown / not an address") },
        { title: "Events", value: (c) => c.events },
      ], p.countries, "None.")),
      el("div", {}, el("h2", {}, "Source addresses"), captioned("Events by source address", [
        { title: "Address", value: (c) => (/^[0-9a-f.:]+$/i.test(c.value || "") ? addressLink(c.value) : c.value || "—") },
        { title: "Events", value: (c) => c.events },
      ], p.addresses, "None."))),
    el("h2", {}, "Latest events"),
    captioned("Latest events of this principal", [
      { title: "Time", value: (e) => eventLink(e.event_id, fmtTime(e.event_time)) },
      { title: "Event", value: (e) => e.event_name || "—" },
      { title: "From", value: (e) => addressLink(e.source_ip) },
      { title: "Country", value: (e) => countryName(e.country) },
      { title: "Error", value: (e) => e.error_code || "" },
    ], recent.events, "No event."),
    el("p", {}, el("a", { href: trail }, "All its events in the audit trail")),
  );
}
