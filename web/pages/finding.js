// One posture finding: what fails, what made it fail (the change and the event behind it), its
// alerts, remediation, history and suppressions, and the form to suppress it.
import { api, errorText } from "../api.js";
import { diffList, el, fmtTime, query, render, sev } from "../dom.js";
import { cisControls, resourceRef, suppressedBadge } from "../posture.js";
import { allPages } from "./paging.js";

// The audit trail around the event that made the change, narrowed to that event by its id.
function eventLink(cause) {
  const at = new Date(cause.event_time).getTime();
  const filters = {
    event_name: cause.event_name,
    since: new Date(at).toISOString(),
    until: new Date(at + 1000).toISOString(),
    q: cause.event_id,
  };
  return el("a", { href: "#/audit" + query(filters), class: "event-link", title: `event ${cause.event_id}` }, cause.event_name);
}

function causePanel(cause) {
  if (!cause) {
    return el("p", { class: "muted" }, "No cause recorded: the check already failed at the first evaluation (the baseline), or nothing changed since the previous one.");
  }
  const who = cause.principal_arn
    ? el("p", { class: "cause-line" }, "Changed by ", el("strong", { class: "mono" }, cause.principal_arn),
      " from ", el("strong", {}, cause.source_ip || "an unknown address"), " at ", fmtTime(cause.event_time),
      " via ", cause.event_id && cause.event_time ? eventLink(cause) : cause.event_name || "an unknown call")
    : el("p", { class: "cause-line" }, "The event that made this change is not linked yet.");
  return el("div", {}, who,
    el("p", { class: "muted" }, `Configuration change #${cause.change_id} (${cause.kind}) detected ${fmtTime(cause.detected_at)}`),
    Array.isArray(cause.diff) && cause.diff.length ? diffList(cause.diff) : null);
}

async function alertLinks(ids) {
  const alerts = await Promise.all(ids.map((id) => api(`/api/v1/alerts/${encodeURIComponent(id)}`).then((a) => a.alert, () => null)));
  return ids.map((id, i) => el("li", {}, alerts[i] ? sev(alerts[i].severity) : null, " ",
    el("a", { href: `#/alert/${encodeURIComponent(id)}`, "data-alert": id }, alerts[i] ? alerts[i].title : id),
    alerts[i] ? el("span", { class: "muted" }, ` · ${alerts[i].status} · first seen ${fmtTime(alerts[i].first_seen)}`) : null));
}

function suppressForm(ctx, f) {
  const reason = el("input", { id: "suppress-reason", name: "reason", size: 48, placeholder: "why this failure is accepted (kept with the suppression)" });
  const until = el("input", { id: "suppress-until", name: "until", type: "date" });
  // An account-level check has one resource, the account: both scopes would mean the same.
  const scope = el("select", { id: "suppress-scope", name: "scope" },
    f.resource_type === "aws:account"
      ? el("option", { value: "resource" }, `account ${f.account_id} (an account-level check)`)
      : [el("option", { value: "resource" }, `this resource (${f.resource_id})`),
        el("option", { value: "account" }, `every resource in account ${f.account_id}`)]);
  const message = el("p", { class: "error", role: "alert", id: "suppress-error" });
  const form = el("form", {
    class: "filters",
    id: "suppress",
    onsubmit: async (event) => {
      event.preventDefault();
      message.textContent = "";
      // The reason goes as typed: the server says what it needs.
      const body = { check: f.check_id, account: f.account_id, reason: reason.value };
      if (scope.value === "resource") body.resource = f.resource_id;
      if (until.value) body.until = `${until.value}T00:00:00Z`;
      try {
        await api("/api/v1/posture/suppressions", { method: "POST", body });
        ctx.refresh();
      } catch (error) {
        message.textContent = errorText(error);
      }
    },
  },
  el("label", {}, "Reason", reason),
  el("label", {}, "Until (00:00 UTC; empty: no end)", until),
  el("label", {}, "Scope", scope),
  el("button", { type: "submit", id: "suppress-submit" }, "Suppress"));
  return el("div", { class: "panel new" }, el("h2", {}, "Suppress"), form, message,
    el("p", { class: "muted" }, "A suppressed finding stays listed with its reason; it no longer raises alerts and counts as passing from the next evaluation."));
}

function suppressionsTable(ctx, list) {
  return el("table", { id: "suppressions" },
    el("thead", {}, el("tr", {}, ["Scope", "Reason", "Until", "By", ""].map((t) => el("th", {}, t)))),
    el("tbody", {}, list.map((s) => {
      const result = el("span", { class: "result error" });
      const remove = ctx.can("analyst") ? el("button", {
        type: "button",
        class: "danger delete",
        onclick: async () => {
          if (!confirm(`Remove the suppression "${s.reason}"?`)) return;
          try {
            await api(`/api/v1/posture/suppressions/${s.id}`, { method: "DELETE" });
            ctx.refresh();
          } catch (error) {
            result.textContent = errorText(error);
          }
        },
      }, "Remove") : null;
      return el("tr", { "data-suppression": s.id },
        el("td", {}, s.resource_id ? `resource ${s.resource_id}` : s.account_id ? `every resource in ${s.account_id}` : "every account"),
        el("td", {}, s.reason),
        el("td", {}, s.expires_at ? fmtTime(s.expires_at) : "no end"),
        el("td", {}, s.created_by, el("div", { class: "muted" }, fmtTime(s.created_at))),
        el("td", { class: "row-actions" }, remove, result));
    })));
}

export async function findingPage(ctx, id) {
  const { finding: f, history } = await api(`/api/v1/posture/findings/${encodeURIComponent(id)}`);
  const { rows: suppressions } = await allPages("/api/v1/posture/suppressions", { check: f.check_id, limit: 1000 }, "suppressions");
  const now = Date.now();
  const covering = suppressions.filter((s) => s.check_id === f.check_id && (!s.account_id || s.account_id === f.account_id)
    && (!s.resource_id || s.resource_id === f.resource_id) && (!s.expires_at || new Date(s.expires_at).getTime() > now));
  const alertIds = f.alert_id ? [f.alert_id] : [];
  const [own, related] = await Promise.all([alertLinks(alertIds), alertLinks(f.related_alerts)]);
  render(
    el("p", { class: "crumbs" }, el("a", { href: "#/compliance" }, "← Compliance")),
    el("h1", {}, sev(f.severity), " ", f.title),
    el("p", { class: "muted" }, `${f.check_id} · ${f.section} · account ${f.account_id} · ${f.region} · MITRE ${f.mitre.join(", ") || "—"}`),
    el("div", { class: "grid finding-detail" },
      el("div", { class: "panel", id: "finding-summary" },
        el("p", {}, "Resource: ", resourceRef(f)),
        el("p", {}, "Status: ", el("span", { class: `status ${f.status}` }, f.status),
          f.resolved_at ? ` ${fmtTime(f.resolved_at)}` : "", " ", suppressedBadge(f)),
        el("p", {}, "First failed: ", fmtTime(f.first_failed_at), " · last seen: ", fmtTime(f.last_seen_at)),
        el("div", {}, "What fails:", el("ul", { class: "messages" }, f.messages.length ? f.messages.map((m) => el("li", {}, m)) : el("li", { class: "muted" }, "nothing now"))),
        el("div", {}, "CIS controls: ", cisControls(f.frameworks))),
      el("div", { class: "panel", id: "finding-cause" }, el("h2", {}, "What made it fail"), causePanel(f.cause)),
      el("div", { class: "panel", id: "finding-alerts" },
        el("h2", {}, "Alerts"),
        own.length ? el("div", {}, el("p", { class: "muted" }, "Raised by this finding:"), el("ul", { id: "finding-alert" }, own))
          : el("p", { class: "muted" }, "This finding raised no alert (below the alert threshold, suppressed, or from the baseline)."),
        related.length ? el("div", {}, el("p", { class: "muted" }, "Event alerts on the same resource around the change:"), el("ul", { id: "related-alerts" }, related))
          : el("p", { class: "muted" }, "No related event alert."))),
    el("h2", {}, "Remediation"),
    el("div", { class: "panel remediation", id: "remediation" }, f.remediation || "—"),
    el("h2", {}, "History"),
    el("ol", { class: "timeline", id: "history" }, history.map((h) => el("li", { class: h.event },
      el("span", { class: "when" }, fmtTime(h.at)), el("span", { class: `event ${h.event}` }, h.event),
      h.messages.length ? el("div", { class: "messages" }, h.messages.map((m) => el("div", {}, m))) : null))),
    el("h2", {}, "Suppressions"),
    covering.length ? suppressionsTable(ctx, covering) : el("p", { class: "muted" }, "None covers this finding."),
    ctx.can("analyst") ? suppressForm(ctx, f) : el("p", { class: "muted" }, "Suppressing a finding needs the analyst role."),
  );
}
