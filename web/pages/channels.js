// Notification channels: the table (with Test and Delete for admins) and the form for a new one.
// The form's fields come from the server's schema of each kind's settings and secrets
// (GET /api/v1/channels/schema): `secret` fields go in `secrets` (sealed by the server; only
// their names ever come back), the others in `settings`. Empty fields are left out, so the
// server's defaults apply.
import { api, errorText, withStatus } from "../api.js";
import { commaList, el } from "../dom.js";

// A choice between numbers (Jira's API version) goes as a number.
function numericChoice(field) {
  return field.input === "select" && field.options.every((option) => /^\d+$/.test(option));
}

function fieldLabel(field) {
  if (field.secret) return `${field.name} (secret${field.optional ? ", optional" : ""})`;
  return field.optional ? `${field.name} (optional)` : field.name;
}

// Wide enough for the hint it shows: a URL or an address gets a wide box, a short code or word
// (a project key) a narrow one.
function fieldSize(field) {
  if (field.input === "number") return 6;
  const hint = field.placeholder || field.default || "";
  if (hint.length > 20) return 30;
  return hint && hint.length <= 4 ? hint.length * 2 + 2 : 16;
}

function fieldInput(field) {
  const id = `channel-${field.name}`;
  if (field.input === "checkbox") return el("input", { id, name: field.name, type: "checkbox", checked: field.default === "true" });
  if (field.input === "select") {
    return el("select", { id, name: field.name }, field.options.map((o) => el("option", { value: o, selected: o === field.default }, o)));
  }
  return el("input", {
    id,
    name: field.name,
    type: field.secret ? "password" : field.input === "number" ? "number" : "text",
    autocomplete: field.secret ? "off" : null,
    required: !field.optional,
    value: field.default,
    placeholder: field.placeholder,
    size: fieldSize(field),
  });
}

// The value to send, or undefined to leave the field out.
function fieldValue(field, input) {
  if (field.input === "checkbox") return input.checked;
  const text = input.value.trim();
  if (!text) return undefined;
  if (field.input === "list") return commaList(text);
  // A number the browser cannot read goes as typed, so the server's error names the field.
  if (field.input === "number" || numericChoice(field)) return Number.isFinite(Number(text)) ? Number(text) : text;
  return text;
}

function settingsSummary(settings) {
  const entries = Object.entries(settings || {}).filter(([, v]) => v !== null && v !== "" && !(Array.isArray(v) && !v.length));
  if (!entries.length) return el("span", { class: "muted" }, "—");
  return el("div", { class: "mono settings" },
    entries.map(([key, value]) => el("div", {}, `${key}: ${Array.isArray(value) ? value.join(", ") : value}`)));
}

export function channelsTable(ctx, channels, routes) {
  const rows = channels.map((channel) => {
    const result = el("span", { class: "result" });
    const show = (kind, text) => { result.className = `result ${kind}`; result.textContent = text; };
    const buttons = [];
    if (ctx.can("admin")) {
      const test = el("button", {
        type: "button",
        class: "secondary test",
        title: "send a sample alert now",
        onclick: async () => {
          test.disabled = true;
          show("muted", "sending…");
          try {
            const answer = await api(`/api/v1/channels/${channel.id}/test`, { method: "POST" });
            const detail = withStatus(answer.http_status, answer.delivered ? answer.note : answer.error);
            show(answer.delivered ? "ok" : "error", [answer.delivered ? "delivered" : "failed", detail].filter(Boolean).join(" · "));
          } catch (error) {
            show("error", errorText(error));
          } finally {
            test.disabled = false;
          }
        },
      }, "Test");
      buttons.push(test);
      if (channel.managed_by !== "file") {
        const used = routes.filter((r) => r.channel_id === channel.id).length;
        buttons.push(el("button", {
          type: "button",
          class: "danger delete",
          onclick: async () => {
            const also = used ? ` Its ${used} route(s) and its deliveries go with it.` : " Its deliveries go with it.";
            if (!confirm(`Delete the channel "${channel.name}"?${also}`)) return;
            try {
              await api(`/api/v1/channels/${channel.id}`, { method: "DELETE" });
              ctx.refresh();
            } catch (error) {
              show("error", errorText(error));
            }
          },
        }, "Delete"));
      }
    }
    return el("tr", { "data-channel": channel.name, class: channel.enabled ? null : "disabled" },
      el("td", {}, channel.name),
      el("td", {}, channel.kind),
      el("td", {}, settingsSummary(channel.settings)),
      el("td", { class: "mono" }, channel.secrets.length ? channel.secrets.join(", ") : "—"),
      el("td", {}, channel.managed_by === "file" ? el("span", { title: "from the notifications config file; change it there" }, "file (read-only)") : channel.managed_by),
      el("td", {}, channel.enabled ? "yes" : "no"),
      el("td", { class: "row-actions" }, buttons, result));
  });
  return el("table", { id: "channels" },
    el("thead", {}, el("tr", {}, ["Name", "Kind", "Settings", "Secrets set", "Managed by", "Enabled", ""].map((t) => el("th", {}, t)))),
    el("tbody", {}, rows));
}

// `schema` is the server's answer, or { error } when it could not be read.
export function channelForm(ctx, schema) {
  const heading = el("h2", {}, "New channel");
  if (schema.error) {
    return el("div", { class: "panel new" }, heading,
      el("p", { class: "error", id: "channel-schema-error" }, `The channel kinds could not be read: ${errorText(schema.error)}`));
  }
  const name = el("input", { id: "channel-name", name: "name", required: true, placeholder: "e.g. soc-slack" });
  const kind = el("select", { id: "channel-kind", name: "kind" }, schema.kinds.map((k) => el("option", { value: k.kind }, k.kind)));
  const fields = el("div", { class: "fields" });
  let inputs = [];
  const showFields = () => {
    const chosen = schema.kinds.find((k) => k.kind === kind.value);
    inputs = (chosen ? chosen.fields : []).map((field) => ({ field, input: fieldInput(field) }));
    fields.replaceChildren(...inputs.map(({ field, input }) =>
      el("label", { class: field.input === "checkbox" ? "check" : null }, fieldLabel(field), input)));
  };
  kind.addEventListener("change", showFields);
  showFields();
  const message = el("p", { class: "error", role: "alert", id: "channel-error" });
  const form = el("form", {
    class: "filters",
    id: "new-channel",
    onsubmit: async (event) => {
      event.preventDefault();
      message.textContent = "";
      const settings = {};
      const secrets = {};
      for (const { field, input } of inputs) {
        const value = fieldValue(field, input);
        if (value !== undefined) (field.secret ? secrets : settings)[field.name] = value;
      }
      try {
        await api("/api/v1/channels", { method: "POST", body: { name: name.value.trim(), kind: kind.value, settings, secrets } });
        ctx.refresh();
      } catch (error) {
        message.textContent = errorText(error);
      }
    },
  },
  el("label", {}, "Name", name),
  el("label", {}, "Kind", kind),
  fields,
  el("button", { type: "submit", id: "create-channel" }, "Create channel"));
  return el("div", { class: "panel new" }, heading, form, message,
    el("p", { class: "muted" }, "Secrets are sealed by the server and never shown again; only their names are listed."));
}
