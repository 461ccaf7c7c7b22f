// One CloudTrail event: its fields, labelled; who, from where, what it touched; the alerts it is
// evidence of; and the record as CloudTrail wrote it.
import { api } from "../api.js";
import { captioned, countryName, el, facts, fmtTime, query, render, resourceLink, sev } from "../dom.js";
import { addressLink, alertLink, principalLink } from "../links.js";

export async function eventPage(ctx, id) {
  // The audit trail's links give the account and time (an archived event's day is then loaded).
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const e = await api(`/api/v1/events/${encodeURIComponent(id)}` + query({ account: params.get("account"), time: params.get("time") }));
  const who = e.user_name || e.principal_arn || "unknown principal";
  const outcome = e.error_code || e.error_message
    ? el("span", { class: "fail-text" }, `failed: ${[e.error_code, e.error_message].filter(Boolean).join(" — ")}`)
    : el("span", { class: "ok-text" }, consoleOutcome(e) || "succeeded");
  render(
    el("p", { class: "crumbs" }, el("a", { href: "#/audit" }, "Audit trail"), " › event"),
    el("h1", {}, `${e.event_name || "Event"} by ${who}`),
    facts([
      ["Time", fmtTime(e.event_time)],
      ["Event", `${e.event_name || "—"} (${e.event_source || "unknown source"})`],
      ["Outcome", outcome],
      ["Principal", principalLink(e.principal_arn || e.user_name, who)],
      ["Principal ARN", e.principal_arn],
      ["Principal type", e.principal_type],
      ["Access key", e.access_key_id],
      ["Source address", e.source_ip ? addressLink(e.source_ip) : "—"],
      ["Location", [e.city, e.country ? countryName(e.country) : null].filter(Boolean).join(", ") || "—"],
      ["Network", networkText(e) || "unknown"],
      ["User agent", e.user_agent],
      ["Read only", e.read_only === null ? "unknown" : e.read_only ? "yes (a read)" : "no (a change)"],
      ["Region", e.region],
      ["Account", e.account_id],
      ["Event id", e.event_id],
      ["Imported", fmtTime(e.ingested_at)],
      ["Stored", e.archived ? "archived: read from the open lake" : "in PostgreSQL"],
    ]),
    e.asn ? el("p", { class: "muted", id: "network-attribution" }, "AS data: RouteViews and ",
      el("a", { href: "https://db-ip.com" }, "IP Geolocation by DB-IP"), " (CC BY 4.0) when the default ASN table is loaded.") : null,
    el("h2", {}, "Resources it named"),
    e.resource_ids.length
      ? el("ul", { id: "event-resources" }, e.resource_ids.map((r) => el("li", {}, resourceLink(r), " · ",
        el("a", { href: "#/inventory" + query({ q: r }) }, "in the inventory"))))
      : el("p", { class: "muted" }, "None."),
    el("h2", {}, "Alerts it is evidence of"),
    el("div", { id: "event-alerts" }, captioned("Alerts this event is evidence of", [
      { title: "Alert", value: (a) => alertLink(a.alert_id, a.title) },
      { title: "Severity", value: (a) => sev(a.severity) },
      { title: "Status", value: (a) => a.status },
      { title: "Last seen", value: (a) => fmtTime(a.last_seen) },
    ], e.alerts, "No alert names this event.")),
    el("h2", { id: "raw-heading" }, "Raw event"),
    el("pre", { class: "raw", id: "raw", tabindex: "0", "aria-labelledby": "raw-heading" }, JSON.stringify(e.raw, null, 2)),
  );
}

// A console login says whether it worked in its response, not in an error code.
function consoleOutcome(e) {
  const login = e.raw && e.raw.responseElements && e.raw.responseElements.ConsoleLogin;
  return login ? `ConsoleLogin: ${login}` : null;
}

// The source's network as stored with an event or alert: "AS60729 Example Org · Tor exit · VPN".
// Flags are facts of the time it was stored; an unknown flag (null) is not shown.
export function networkText(n) {
  if (!n) return null;
  const parts = [];
  if (n.asn) parts.push(`AS${n.asn}${n.as_org ? " " + n.as_org : ""}`);
  if (n.is_tor) parts.push("Tor exit");
  if (n.is_vpn) parts.push("VPN");
  if (n.is_hosting) parts.push("hosting provider");
  return parts.length ? parts.join(" · ") : null;
}

// The same, as a small line under an address in a table.
export function networkNote(n) {
  const text = networkText(n);
  return text ? el("div", { class: "muted network" }, text) : null;
}
