// Notification routes: which alerts go to which channel; the table and the form for a new one.
import { api, errorText } from "../api.js";
import { commaList, el, SEVERITIES, sev } from "../dom.js";

export function routesTable(ctx, routes) {
  const list = (items) => (items.length ? items.join(", ") : el("span", { class: "muted" }, "any"));
  return el("table", { id: "routes" },
    el("thead", {}, el("tr", {}, ["Name", "Channel", "Policies", "Accounts", "Tags", "Min severity", "Delivery", "Status updates", "Managed by", "Enabled", ""].map((t) => el("th", {}, t)))),
    el("tbody", {}, routes.map((r) => {
      const result = el("span", { class: "result error" });
      const remove = ctx.can("admin") && r.managed_by !== "file" ? el("button", {
        type: "button",
        class: "danger delete",
        onclick: async () => {
          if (!confirm(`Delete the route "${r.name}"?`)) return;
          try {
            await api(`/api/v1/routes/${r.id}`, { method: "DELETE" });
            ctx.refresh();
          } catch (error) {
            result.textContent = errorText(error);
          }
        },
      }, "Delete") : null;
      return el("tr", { "data-route": r.name, class: r.enabled ? null : "disabled" },
        el("td", {}, r.name),
        el("td", {}, r.channel),
        el("td", { class: "mono" }, list(r.policies)),
        el("td", { class: "mono" }, list(r.accounts)),
        el("td", { class: "mono" }, list(r.tags)),
        el("td", {}, sev(r.min_severity), " and above"),
        el("td", {}, r.digest_minutes == null ? "one message per alert" : `digest every ${r.digest_minutes} min`),
        el("td", {}, r.status_updates ? "yes" : "no"),
        el("td", {}, r.managed_by === "file" ? "file (read-only)" : r.managed_by),
        el("td", {}, r.enabled ? "yes" : "no"),
        el("td", { class: "row-actions" }, remove, result));
    })));
}

export function routeForm(ctx, channels) {
  const name = el("input", { id: "route-name", name: "name", required: true, placeholder: "e.g. high-to-slack" });
  const channel = el("select", { id: "route-channel", name: "channel", required: true },
    channels.map((c) => el("option", { value: c.name }, `${c.name} (${c.kind})`)));
  const policies = el("input", { id: "route-policies", name: "policies", size: 24, placeholder: "aws-iam-*, aws-root-login" });
  const accounts = el("input", { id: "route-accounts", name: "accounts", size: 24, placeholder: "123456789012, …" });
  const tags = el("input", { id: "route-tags", name: "tags", size: 16, placeholder: "TA0001, T1078" });
  const minSeverity = el("select", { id: "route-min-severity", name: "min_severity" }, SEVERITIES.map((s) => el("option", { value: s }, s)));
  const digest = el("input", { id: "route-digest", name: "digest_minutes", type: "number", min: 1, max: 10080, size: 6, placeholder: "off" });
  const statusUpdates = el("input", { id: "route-status-updates", name: "status_updates", type: "checkbox", checked: true });
  const message = el("p", { class: "error", role: "alert", id: "route-error" });
  const form = el("form", {
    class: "filters",
    id: "new-route",
    onsubmit: async (event) => {
      event.preventDefault();
      message.textContent = "";
      const body = {
        name: name.value.trim(),
        channel: channel.value,
        policies: commaList(policies.value),
        accounts: commaList(accounts.value),
        tags: commaList(tags.value),
        min_severity: minSeverity.value,
        digest_minutes: digest.value.trim() ? Number(digest.value) : null,
        status_updates: statusUpdates.checked,
      };
      try {
        await api("/api/v1/routes", { method: "POST", body });
        ctx.refresh();
      } catch (error) {
        message.textContent = errorText(error);
      }
    },
  },
  el("label", {}, "Name", name),
  el("label", {}, "Channel", channel),
  el("label", {}, "Policies (* wildcard; empty: all)", policies),
  el("label", {}, "Accounts (empty: all)", accounts),
  el("label", {}, "ATT&CK tags (empty: any)", tags),
  el("label", {}, "Min severity", minSeverity),
  el("label", {}, "Digest minutes (empty: one per alert)", digest),
  el("label", { class: "check" }, "Status updates", statusUpdates),
  el("button", { type: "submit", id: "create-route", disabled: !channels.length }, "Create route"));
  return el("div", { class: "panel new" }, el("h2", {}, "New route"), form, message,
    channels.length ? null : el("p", { class: "muted" }, "Create a channel first."));
}
