// Skywarden's own audit log (admins).
import { api } from "../api.js";
import { el, fmtTime, render, table } from "../dom.js";

export async function auditLogPage() {
  const entries = await api("/api/v1/audit-log?limit=200");
  render(el("h1", {}, "Skywarden audit log"), table([
    { title: "When", value: (e) => fmtTime(e.at) },
    { title: "Who", value: (e) => e.actor },
    { title: "Action", value: (e) => e.action },
    { title: "Target", value: (e) => e.target || "" },
    { title: "Client", value: (e) => e.client || "" },
    { title: "Details", value: (e) => el("span", { class: "mono" }, JSON.stringify(e.details)) },
  ], entries));
}
