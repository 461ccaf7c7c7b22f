// Flow logs: bytes per hour, top talkers (with ports, protocols, accepted and rejected records,
// both ends' countries) and destination countries, and the newest records, for one address or all.
import { api } from "../api.js";
import { barChart } from "../charts.js";
import { captioned, countryName, el, field, fmtBytes, fmtTime, protocolName, query, render, showFieldError } from "../dom.js";
import { addressLink } from "../links.js";
import { flowTable } from "./address.js";

export async function networkPage(params) {
  const address = params.get("address") || "";
  const [top, timeline, records] = await Promise.all([
    api("/api/v1/flows/top" + query({ address, limit: 50 })),
    api("/api/v1/flows/timeline" + query({ address })),
    api("/api/v1/flows/records" + query({ address, limit: 50 })),
  ]);
  const input = el("input", { id: "network-address", name: "address", value: address, inputmode: "text", autocomplete: "off" });
  const submit = (e) => {
    e.preventDefault();
    const value = input.value.trim();
    if (value && !/^[0-9a-f.:]+$/i.test(value)) return showFieldError(input, "address must be an IP address, such as 176.36.10.20");
    showFieldError(input, null);
    location.hash = "#/network" + query({ address: value });
  };
  render(
    el("h1", {}, address ? `Network: ${address}` : "Network"),
    el("form", { class: "filters", onsubmit: submit, "aria-label": "Flow filters" },
      field("IP address (either end)", input), el("button", { type: "submit" }, "Filter")),
    address ? el("p", {}, addressLink(address, `Everything about ${address}`)) : null,
    el("h2", {}, "Bytes per hour"),
    el("div", { class: "panel" }, barChart(timeline.hours, { label: (p) => fmtTime(p.hour).slice(0, 13) + "h", value: (p) => p.bytes })),
    el("h2", {}, "Top talkers"),
    el("div", { id: "talkers" }, captioned("Top talkers by bytes", [
      { title: "Source", value: (t) => addressLink(t.source) },
      { title: "Source country", value: (t) => countryName(t.source_country) },
      { title: "Destination", value: (t) => addressLink(t.destination) },
      { title: "Destination country", value: (t) => countryName(t.destination_country) },
      { title: "Ports", value: (t) => t.ports.join(", ") || "—" },
      { title: "Protocol", value: (t) => t.protocols.map(protocolName).join(", ") || "—" },
      { title: "Accepted", value: (t) => t.accepted },
      { title: "Rejected", value: (t) => (t.rejected ? el("span", { class: "fail-text" }, t.rejected) : 0) },
      { title: "Bytes", value: (t) => fmtBytes(t.bytes) },
      { title: "Records", value: (t) => t.records },
    ], top, "No flow records match.")),
    el("div", { class: "grid" },
      el("div", {}, el("h2", {}, "Bytes by destination country"), captioned("Bytes by destination country", [
        { title: "Country", value: (d) => (d.country ? countryName(d.country) : "private / unknown") },
        { title: "Bytes", value: (d) => fmtBytes(d.bytes) },
      ], timeline.destinations, "None."))),
    el("h2", {}, "Newest flow records"),
    el("div", { id: "flow-records" }, flowTable(records)),
  );
}
