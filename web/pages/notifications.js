// Notifications: dead letters and pending deliveries at a glance, channels, routes and the
// deliveries themselves (a dead one can be retried).
import { api, errorText, withStatus } from "../api.js";
import { el, fmtTime, query, render } from "../dom.js";
import { channelForm, channelsTable } from "./channels.js";
import { loadMore } from "./paging.js";
import { routeForm, routesTable } from "./routes.js";

const DELIVERY_STATES = ["pending", "sending", "delivered", "dead"];

function deliveryAlert(d) {
  if (d.alert_id) return el("a", { href: `#/alert/${encodeURIComponent(d.alert_id)}` }, d.alert_title || d.alert_id);
  if (d.digest_alerts.length) {
    return el("span", {}, `digest of ${d.digest_alerts.length}: `,
      d.digest_alerts.map((id, i) => [i ? " " : "", el("a", { href: `#/alert/${encodeURIComponent(id)}`, class: "mono" }, id.slice(0, 8))]));
  }
  return el("span", { class: "muted" }, "—");
}

function deliveriesTable(ctx, deliveries) {
  return el("table", { id: "deliveries" },
    el("thead", {}, el("tr", {}, ["Created", "State", "Channel", "Route", "Event", "Alert", "Attempts", "Last error", "Next attempt / delivered", "Remote ref", ""].map((t) => el("th", {}, t)))),
    el("tbody", {}, deliveries.map((d) => deliveryRow(ctx, d))));
}

function deliveryRow(ctx, d) {
  const result = el("span", { class: "result error" });
  const retry = d.state === "dead" ? el("button", {
    type: "button",
    class: "retry",
    onclick: async () => {
      try {
        await api(`/api/v1/deliveries/${d.id}/retry`, { method: "POST" });
        ctx.refresh();
      } catch (error) {
        result.textContent = errorText(error);
      }
    },
  }, "Retry") : null;
  return el("tr", { "data-delivery": d.id, class: `delivery ${d.state}` },
    el("td", {}, fmtTime(d.created_at)),
    el("td", {}, el("span", { class: `state ${d.state}` }, d.state)),
    el("td", {}, d.channel),
    el("td", {}, d.route || "—"),
    el("td", {}, d.event, d.alert_status ? ` (${d.alert_status})` : ""),
    el("td", {}, deliveryAlert(d)),
    el("td", {}, d.attempts),
    el("td", { class: "last-error" }, withStatus(d.last_http_status, d.last_error)),
    el("td", {}, d.state === "delivered" ? fmtTime(d.delivered_at) : d.state === "dead" ? "gave up" : fmtTime(d.next_attempt_at)),
    el("td", { class: "mono" }, d.remote_ref || ""),
    el("td", { class: "row-actions" }, retry, result));
}

export async function notificationsPage(ctx, params) {
  const filter = DELIVERY_STATES.includes(params.get("state")) ? params.get("state") : "";
  const admin = ctx.can("admin");
  // Counted apart from the list so the summary holds whatever the filter shows. The channel
  // schema is for the admins' form; without it the rest of the page still shows.
  let nextDeliveries = null;
  const [channels, routes, deliveries, counts, schema] = await Promise.all([
    api("/api/v1/channels"),
    api("/api/v1/routes"),
    api("/api/v1/deliveries" + query({ state: filter, limit: 100 })).then((page) => { nextDeliveries = page.next_cursor; return page.deliveries; }),
    api("/api/v1/deliveries/counts"),
    admin ? api("/api/v1/channels/schema").catch((error) => ({ error })) : null,
  ]);
  const stateSelect = el("select", { id: "delivery-state", name: "state" },
    ["", "pending", "dead", "delivered", "sending"].map((s) => el("option", { value: s, selected: s === filter }, s || "all")));
  const drawn = deliveriesTable(ctx, deliveries);
  stateSelect.addEventListener("change", () => { location.hash = "#/notifications" + query({ state: stateSelect.value }); });
  render(
    el("h1", {}, "Notifications"),
    el("div", { class: "cards", id: "delivery-summary" },
      el("a", { class: `card${counts.dead ? " alarm" : ""}`, href: "#/notifications?state=dead", id: "dead-count" },
        el("div", { class: "n" }, counts.dead), el("div", { class: "muted" }, "dead letters (gave up)")),
      el("a", { class: "card", href: "#/notifications?state=pending", id: "pending-count" },
        el("div", { class: "n" }, counts.pending), el("div", { class: "muted" }, "pending")),
      el("div", { class: "card" }, el("div", { class: "n" }, channels.length), el("div", { class: "muted" }, "channels")),
      el("div", { class: "card" }, el("div", { class: "n" }, routes.length), el("div", { class: "muted" }, "routes"))),
    el("h2", {}, "Channels"),
    channels.length ? channelsTable(ctx, channels, routes) : el("p", { class: "muted" }, "No channel yet."),
    admin ? channelForm(ctx, schema) : el("p", { class: "muted" }, "Adding, testing and deleting channels and routes needs the admin role."),
    el("h2", {}, "Routes"),
    routes.length ? routesTable(ctx, routes) : el("p", { class: "muted" }, "No route yet: no alert is sent anywhere."),
    admin ? routeForm(ctx, channels) : null,
    el("h2", {}, "Deliveries"),
    el("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); location.hash = "#/notifications" + query({ state: stateSelect.value }); } },
      el("label", {}, "State", stateSelect), el("button", { type: "submit" }, "Filter")),
    deliveries.length ? drawn : el("p", { class: "muted" }, filter ? `No ${filter} deliveries.` : "Nothing sent yet."),
    loadMore({
      path: "/api/v1/deliveries", params: { state: filter, limit: 100 }, key: "deliveries", nextCursor: nextDeliveries, id: "more-deliveries",
      append: (rows) => drawn.tBodies[0].append(...rows.map((d) => deliveryRow(ctx, d))),
    }),
  );
}
