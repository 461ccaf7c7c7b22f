// An IP address: where it is (country, city, network), when it was seen, who called AWS from it,
// its flows (ports, protocol, accepted or rejected) and the alerts about it.
import { api } from "../api.js";
import { captioned, countryName, el, facts, fmtBytes, fmtTime, protocolName, query, render, sev } from "../dom.js";
import { addressLink, alertLink, eventLink, principalLink } from "../links.js";
import { networkText } from "./event.js";

export async function addressPage(ctx, ip) {
  const [a, flows, recent] = await Promise.all([
    api(`/api/v1/addresses/${encodeURIComponent(ip)}`),
    api("/api/v1/flows/records" + query({ address: ip, limit: 100 })),
    api("/api/v1/events" + query({ source_ip: ip, limit: 50 })),
  ]);
  render(
    el("p", { class: "crumbs" }, el("a", { href: "#/network" }, "Network"), " › address"),
    el("h1", {}, `Address ${ip}`),
    facts([
      ["Country", countryName(a.country)],
      ["City", a.city],
      ["Network", networkText(a) || "unknown"],
      ["First seen", fmtTime(a.first_seen)],
      ["Covers", a.window_start ? `the 90 days up to the last event: from ${fmtTime(a.window_start)}` : null],
      ["Last seen", fmtTime(a.last_seen)],
      ["CloudTrail events", el("a", { href: "#/audit" + query({ source_ip: ip }) }, `${a.events} events (${a.failed} failed)`)],
      ["Flows", el("a", { href: "#/network" + query({ address: ip }) }, `${a.flows} records: ${fmtBytes(a.bytes_sent)} sent, ${fmtBytes(a.bytes_received)} received`)],
    ]),
    el("h2", {}, "Alerts"),
    el("div", { id: "address-alerts" }, captioned("Alerts about this address", [
      { title: "Alert", value: (r) => alertLink(r.alert_id, r.title) },
      { title: "Severity", value: (r) => sev(r.severity) },
      { title: "Status", value: (r) => r.status },
      { title: "Last seen", value: (r) => fmtTime(r.last_seen) },
    ], a.alerts, "No alert about this address.")),
    el("h2", {}, "Who called AWS from it"),
    captioned("Principals that used this address", [
      { title: "Principal", value: (p) => principalLink(p.value) },
      { title: "Events", value: (p) => p.events },
    ], a.principals, "No CloudTrail event came from it."),
    el("h2", {}, "Flows (newest 100)"),
    el("div", { id: "address-flows" }, flowTable(flows)),
    el("h2", {}, "Latest events from it"),
    captioned("Latest events from this address", [
      { title: "Time", value: (e) => eventLink(e.event_id, fmtTime(e.event_time)) },
      { title: "Event", value: (e) => e.event_name || "—" },
      { title: "Who", value: (e) => principalLink(e.principal_arn || e.user_name, e.user_name || e.principal_arn) },
      { title: "Error", value: (e) => e.error_code || "" },
    ], recent.events, "No event."),
  );
}

// Flow records with both ends, ports, protocol and outcome.
export function flowTable(records) {
  return captioned("Flow records", [
    { title: "Start", value: (f) => fmtTime(f.start_time) },
    { title: "Source", value: (f) => [addressLink(f.source), f.source_port !== null ? `:${f.source_port}` : ""] },
    { title: "Source country", value: (f) => countryName(f.source_country) },
    { title: "Destination", value: (f) => [addressLink(f.destination), f.destination_port !== null ? `:${f.destination_port}` : ""] },
    { title: "Destination country", value: (f) => countryName(f.destination_country) },
    { title: "Protocol", value: (f) => protocolName(f.protocol) },
    { title: "Action", value: (f) => el("span", { class: f.action === "REJECT" ? "fail-text" : "ok-text" }, f.action || "—") },
    { title: "Bytes", value: (f) => (f.bytes === null ? "—" : fmtBytes(f.bytes)) },
  ], records, "No flow record.");
}
