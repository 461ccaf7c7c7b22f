// Skywarden's own audit log (admins), newest first, a page at a time.
import { api } from "../api.js";
import { el, fmtTime, render, table } from "../dom.js";
import { appendRows, loadMore } from "./paging.js";

const COLUMNS = [
  { title: "When", value: (e) => fmtTime(e.at) },
  { title: "Who", value: (e) => e.actor },
  { title: "Action", value: (e) => e.action },
  { title: "Target", value: (e) => e.target || "" },
  { title: "Client", value: (e) => e.client || "" },
  { title: "Details", value: (e) => el("span", { class: "mono" }, JSON.stringify(e.details)) },
];

export async function auditLogPage() {
  const first = await api("/api/v1/audit-log?limit=200");
  const drawn = table(COLUMNS, first.entries);
  drawn.id = "audit-log";
  render(el("h1", {}, "Skywarden audit log"), drawn, loadMore({
    path: "/api/v1/audit-log", params: { limit: 200 }, key: "entries", nextCursor: first.next_cursor, id: "more-audit-log",
    append: (rows) => appendRows(drawn, COLUMNS, rows),
  }));
}
