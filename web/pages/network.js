// Flow logs: bytes per hour, top talkers and destination countries, for one address or all.
import { api } from "../api.js";
import { barChart } from "../charts.js";
import { el, fmtBytes, fmtTime, query, render, table } from "../dom.js";

export async function networkPage(params) {
  const address = params.get("address") || "";
  const [top, timeline] = await Promise.all([
    api("/api/v1/flows/top" + query({ address, limit: 50 })),
    api("/api/v1/flows/timeline" + query({ address })),
  ]);
  const input = el("input", { name: "address", value: address, placeholder: "an IP address" });
  render(
    el("h1", {}, "Network"),
    el("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); location.hash = "#/network" + query({ address: input.value }); } },
      el("label", {}, "Address", input), el("button", { type: "submit" }, "Filter")),
    el("h2", {}, "Bytes per hour"),
    el("div", { class: "panel" }, barChart(timeline.hours, { label: (p) => fmtTime(p.hour).slice(0, 13) + "h", value: (p) => p.bytes })),
    el("div", { class: "grid" },
      el("div", {}, el("h2", {}, "Top talkers"), table([
        { title: "Source", value: (t) => el("a", { href: "#/network" + query({ address: t.source }) }, t.source) },
        { title: "Destination", value: (t) => el("a", { href: "#/network" + query({ address: t.destination }) }, t.destination) },
        { title: "Country", value: (t) => t.destination_country || "—" },
        { title: "Bytes", value: (t) => fmtBytes(t.bytes) },
        { title: "Records", value: (t) => t.records },
      ], top)),
      el("div", {}, el("h2", {}, "Bytes by destination country"), table([
        { title: "Country", value: (d) => d.country || "private / unknown" },
        { title: "Bytes", value: (d) => fmtBytes(d.bytes) },
      ], timeline.destinations))),
  );
}
