// Response: the actions that contain an alert's (or an incident's) intrusion, each with its dry
// run (the exact calls and the live state they change) shown before it can be applied, a
// required reason, one Idempotency-Key per intent (a double click never applies twice), the
// actions recorded with their results and errors, undo where AWS allows it, and the second
// person's approval where a kind needs one. Viewers see all of it read-only, and why.
import { ApiError, api, errorText } from "../api.js";
import { el, fmtTime } from "../dom.js";
import { alertLink } from "../links.js";

const STATUS_TEXT = {
  awaiting_approval: "awaiting a second person's approval", planned: "running", applied: "applied",
  failed: "failed", undone: "undone", undo_awaiting_approval: "undo awaiting a second person's approval",
  dry_run: "dry run only (automatic containment in dry-run mode)",
};

// A fresh key per intent: what one "Apply" (and its double click or retry) sends.
function freshKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// Focusable: a long answer scrolls, and keyboard users must be able to scroll it.
const json = (value) => el("pre", { class: "mono response-json", tabindex: "0" }, JSON.stringify(value, null, 2));
const slug = (text) => String(text).replace(/[^A-Za-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 80);

// What the last apply, undo or approval did, shown once when the page is drawn again after it.
let outcome = null;

// Kinds whose undo AWS cannot do (docs/response.md): no Undo button for them.
const NO_UNDO = new Set(["delete-login-profile", "start-logging"]);

// Who is signed in: an approval must come from someone else than who asked.
async function session() {
  return api("/api/v1/session").catch(() => ({}));
}

// POST /api/v1/responses with its Idempotency-Key: one per intent, so a retry never applies twice.
async function postApply(body, key) {
  return api("/api/v1/responses", { method: "POST", body, headers: { "Idempotency-Key": key } });
}

function isMine(actor, user) {
  if (!user || !actor) return false;
  // `user:NAME`, or `cli:LOGIN as user:NAME` from the CLI; names in any case are one person.
  const name = actor.includes(" as user:") ? actor.split(" as user:").pop() : actor.replace(/^user:/, "");
  return name.toLowerCase() === user.toLowerCase();
}

// A status line: `ok` (green), an error (red, announced), or plain.
function statusLine(id) {
  const line = el("p", { class: "result", id, role: "status" });
  line.show = (text, kind) => {
    line.className = `result ${kind || ""}`;
    line.setAttribute("role", kind === "error" ? "alert" : "status");
    line.textContent = text;
  };
  return line;
}

// The dry run of one action, then its reason field and Apply.
function planView(action, plan, apply) {
  const ident = slug(`${action.kind}-${action.target}`);
  return el("div", { class: "dry-run", "data-kind": action.kind },
    el("h3", {}, "Dry run: nothing has been changed"),
    el("dl", { class: "facts" },
      el("dt", {}, "Current state"), el("dd", { class: "plan-current" }, json(plan.current)),
      el("dt", {}, "Calls it will make"),
      el("dd", { class: "plan-calls" }, plan.calls.length
        ? el("ol", {}, plan.calls.map((c) => el("li", {}, el("code", { class: "plan-operation" }, c.operation), json(c.params))))
        : "none: already contained (applying records it with no call)"),
      el("dt", {}, "Undo"), el("dd", {}, `${plan.undo.undo === "possible" ? "possible" : "not possible"}: ${plan.undo.how}`)),
    plan.will_fail
      ? el("p", { class: "error", id: `will-fail-${ident}` }, `Apply would fail before any call: ${plan.will_fail}`)
      : null,
    // revoke-principal-ingress: what it would leave (cut off, unresolved, mismatched, refused…).
    plan.current && Array.isArray(plan.current.incomplete) && plan.current.incomplete.length
      ? el("div", { class: "error", id: `incomplete-${ident}` }, "It would leave (recorded failed, partial): ",
        el("ul", {}, plan.current.incomplete.map((why) => el("li", {}, why))))
      : null,
    plan.protected
      ? el("p", { class: "error", id: `protected-${ident}` }, "Tagged skywarden:protected: Skywarden refuses to act on it.")
      : plan.will_fail ? null : apply);
}

// Reason + Apply for one action: one key per intent, kept through double clicks and retries
// of the same request, renewed after an answer.
function applyForm(ctx, action, done) {
  const ident = slug(`${action.kind}-${action.target}`);
  const reason = el("input", { id: `reason-${ident}`, class: "apply-reason", size: 40, maxlength: 2000, placeholder: "why (required, kept on the record)", "aria-label": `reason to ${action.kind} ${action.target}` });
  const result = statusLine(`applied-${ident}`);
  let key = freshKey();
  let sending = false;
  const button = el("button", { type: "button", class: "apply", id: `apply-${ident}`, "data-kind": action.kind }, "Apply");
  button.addEventListener("click", async () => {
    if (sending) return;
    if (!reason.value.trim()) { reason.focus(); result.show("a reason is required", "error"); return; }
    sending = true;
    button.disabled = true;
    try {
      const body = { account_id: action.account_id, kind: action.kind, target: action.target, region: action.region || undefined, reason: reason.value, alert_id: action.alert_id };
      const record = await postApply(body, key);
      done(record.status === "awaiting_approval"
        ? `${action.kind} ${action.target}: recorded, awaiting a second person's approval`
        : `${action.kind} ${action.target}: ${record.status}`);
    } catch (error) {
      result.show(errorText(error), "error");
      // The server answered: that intent is over. A lost answer keeps the key, so a retry
      // of the same request cannot apply twice.
      if (error instanceof ApiError) key = freshKey();
      button.disabled = false;
    } finally {
      sending = false;
    }
  });
  return el("div", { class: "actions apply-form" }, reason, button, result);
}

function actionRow(ctx, action, state) {
  const ident = slug(`${action.kind}-${action.target}`);
  const slot = el("div", { class: "plan-slot", id: `plan-${ident}` });
  const result = statusLine(`plan-result-${ident}`);
  const dryRun = async () => {
    result.show("reading the current state…");
    try {
      const plan = await api("/api/v1/responses/plan", { method: "POST", body: { account_id: action.account_id, kind: action.kind, target: action.target, region: action.region || undefined } });
      result.show("");
      slot.replaceChildren(planView(action, plan, applyForm(ctx, action, state.done)));
    } catch (error) {
      result.show(errorText(error), "error");
    }
  };
  const can = action.enabled && state.analyst;
  return el("li", { class: "response-action", "data-kind": action.kind, "data-target": action.target },
    el("strong", {}, action.kind), " ", el("code", {}, action.target), action.region ? ` (${action.region})` : "",
    el("div", { class: "muted" }, action.why, " · undo: ", action.undo.undo === "possible" ? action.undo.how : `none (${action.undo.how})`,
      action.alert_id && state.showAlert ? [" · ", alertLink(action.alert_id)] : null,
      action.note ? el("div", { class: "error suggestion-note" }, action.note) : null),
    can ? el("button", { type: "button", class: "secondary dry-run-button", id: `dry-run-${ident}`, onclick: dryRun }, "Dry run") : null,
    result, slot);
}

// Undo or Approve one recorded action, with its reason.
function recordAction(record, verb, done) {
  const ident = `${verb}-${record.id}`;
  const reason = el("input", { id: `reason-${ident}`, size: 24, maxlength: 2000, placeholder: "why (required)", "aria-label": `reason to ${verb} ${record.kind} ${record.target}` });
  const result = statusLine(`result-${ident}`);
  const label = verb === "undo" ? "Undo" : record.status === "undo_awaiting_approval" ? "Approve undo" : "Approve";
  const button = el("button", { type: "button", class: verb === "undo" ? "secondary" : "", id: ident }, label);
  button.addEventListener("click", async () => {
    if (button.disabled) return;
    if (!reason.value.trim()) { reason.focus(); result.show("a reason is required", "error"); return; }
    button.disabled = true;
    try {
      const answer = await api(`/api/v1/responses/${encodeURIComponent(record.id)}/${verb}`, { method: "POST", body: { reason: reason.value } });
      done(`${record.kind} ${record.target}: ${answer.status}`);
    } catch (error) {
      result.show(errorText(error), "error");
      button.disabled = false;
    }
  });
  return el("div", { class: "actions record-action" }, reason, button, result);
}

// One planned rule: protocol, ports and source as its event set them (no ports, or all
// protocols, is every port).
function ruleText(rule) {
  const item = rule.item || {};
  const all = item.ipProtocol === "-1" || item.ipProtocol === -1 || String(item.ipProtocol).toLowerCase() === "all";
  const missing = (p) => p === undefined || p === null || p === -1 || p === "-1";
  const ports = all || (missing(item.fromPort) && missing(item.toPort)) ? " all ports"
    : item.fromPort === item.toPort ? ` ${item.fromPort}` : ` ${item.fromPort}-${item.toPort}`;
  const protocol = all ? "all protocols" : item.ipProtocol || "?";
  const source = item.cidrIpv4 || item.cidrIpv6 || item.prefixListId || (item.referencedGroupInfo || {}).groupId || "?";
  const widened = item.modified ? ", pre-existing rule widened by ModifySecurityGroupRules: undo restores it widened" : "";
  return `${rule.group_id || "?"} ${protocol}${all ? "" : ports} from ${source} (event ${rule.event_id}${widened})`;
}

// A planned rule's status when it was asked for: only "exists" is revoked on approval.
function ruleStatus(rule) {
  if (rule.status === undefined) return "";
  if (rule.status === "exists") return " — will be revoked";
  return ` — not revoked: ${rule.status}${rule.why ? ` (${rule.why})` : ""}`;
}

// revoke-principal-ingress: the rules fixed when it was asked for, exactly what approval revokes.
function plannedRules(record) {
  const plan = record.plan;
  if (plan && plan.unreadable) {
    return el("p", { class: "error planned-rules" },
      `The rules could not be read when this was asked for (${plan.unreadable}): it cannot be approved; ask for it again.`);
  }
  const rules = plan && Array.isArray(plan.rules) ? plan.rules : null;
  if (!rules) return null;
  // Old plans have no status: every rule counted, as before.
  const revoked = rules.filter((r) => r.status === undefined || r.status === "exists").length;
  const left = rules.length - revoked;
  const preExisting = Array.isArray(plan.pre_existing) ? plan.pre_existing : [];
  return el("details", { class: "planned-rules", open: record.status === "awaiting_approval" ? "" : undefined },
    el("summary", {}, `${revoked} rule${revoked === 1 ? "" : "s"} to revoke, fixed when asked for (exactly these run)`
      + (left ? `; ${left} listed but left (gone, changed or unreadable then)` : "")),
    el("ul", {}, rules.map((rule) => el("li", {}, el("code", {}, rule.rule_id), " ", ruleText(rule), ruleStatus(rule)))),
    preExisting.length
      ? el("div", {}, el("p", {}, "Pre-existing rules the principal modified without opening them (left alone):"),
        el("ul", {}, preExisting.map((p) => el("li", {}, el("code", {}, p.rule_id), ` ${p.group_id || "?"}: ${p.why}`))))
      : null);
}

function recordedTable(records, state) {
  if (!records.length) return el("p", { class: "muted", id: "responses-recorded" }, "No action taken yet.");
  const rows = records.map((r) => {
    let control = null;
    const partial = r.kind === "revoke-principal-ingress" && r.status === "failed"
      && (r.state_after?.rules || []).some((rule) => rule.action_id && rule.status === "applied");
    if (state.analyst && (r.status === "applied" || partial) && !NO_UNDO.has(r.kind)) control = recordAction(r, "undo", state.done);
    if (r.status === "awaiting_approval" || r.status === "undo_awaiting_approval") {
      const asker = r.status === "awaiting_approval" ? r.actor : r.undo_requested_by;
      control = !state.analyst ? el("span", { class: "muted" }, "an analyst or admin approves")
        : isMine(asker, state.user) ? el("span", { class: "muted" }, "you asked for it: someone else approves")
        : recordAction(r, "approve", state.done);
    }
    return el("tr", { "data-id": r.id, "data-status": r.status, "data-kind": r.kind },
      el("td", { class: "when" }, fmtTime(r.created_at)),
      el("td", {}, el("strong", {}, r.kind), " ", el("code", {}, r.target)),
      el("td", {}, el("span", { class: `response-status ${r.status}` }, STATUS_TEXT[r.status] || r.status),
        r.error ? el("div", { class: "error" }, r.error) : null, r.undo_error ? el("div", { class: "error" }, `undo failed: ${r.undo_error}`) : null),
      el("td", {}, r.actor, ": ", r.reason, r.automatic_rule ? ` (rule ${r.automatic_rule})` : "", r.approved_by ? el("div", {}, `approved by ${r.approved_by}: ${r.approval_reason || ""}`) : null,
        r.undo_requested_by ? el("div", {}, `undo asked by ${r.undo_requested_by}: ${r.undo_request_reason || ""}`) : null,
        r.undone_by ? el("div", {}, `undone by ${r.undone_by}: ${r.undo_reason || ""}`) : null,
        r.abandoned_at ? el("div", { class: "error" }, `abandoned ${fmtTime(r.abandoned_at)}: no outcome was recorded`) : null),
      el("td", {}, (r.calls || []).length
        ? el("details", {}, el("summary", {}, `${r.calls.length} call${r.calls.length > 1 ? "s" : ""}`), json(r.calls),
          r.state_before ? [el("div", {}, "state before"), json(r.state_before)] : null)
        : "—", plannedRules(r)),
      el("td", {}, control));
  });
  return el("table", { id: "responses-recorded" },
    el("caption", { class: "visually-hidden" }, "Response actions recorded"),
    el("thead", {}, el("tr", {}, ["When", "Action", "Status", "Who and why", "Calls", ""].map((t) => el("th", {}, t)))),
    el("tbody", {}, rows));
}

// The section: `answers` are GET /api/v1/alerts/{id}/responses of one alert or of an incident's.
function responseSection(ctx, answers, { showAlert }) {
  const actions = [];
  for (const answer of answers) {
    for (const action of answer.actions) {
      if (actions.some((a) => a.kind === action.kind && a.target === action.target && a.account_id === answer.account_id)) continue;
      actions.push({ ...action, account_id: answer.account_id, alert_id: answer.alert_id, enabled: answer.enabled });
    }
  }
  const recorded = [...new Map(answers.flatMap((a) => a.recorded).map((r) => [r.id, r])).values()]
    .sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at));
  const flash = outcome;
  outcome = null;
  const state = { analyst: ctx.can("analyst"), user: answers.user, showAlert, done: (message) => { outcome = message; ctx.refresh(); } };
  const disabled = answers.filter((a) => !a.enabled);
  const flashLine = flash ? el("p", { class: "result ok", id: "respond-flash", role: "status", tabindex: "-1" }, flash) : null;
  // After the redraw has put the focus on the heading: the outcome, where the user acted.
  if (flashLine) setTimeout(() => { if (flashLine.isConnected) flashLine.focus(); }, 0);
  return el("section", { id: "respond", "aria-labelledby": "respond-heading" },
    el("h2", { id: "respond-heading" }, "Respond"),
    flashLine,
    disabled.length ? el("div", { class: "notice", id: "respond-not-enabled" },
      el("p", {}, `Response is not enabled for account ${[...new Set(disabled.map((a) => a.account_id))].join(", ")}: it has no responder role, so no action can run. To enable it:`),
      [...new Set(disabled.map((a) => a.enable_command).filter(Boolean))].map((c) => el("pre", { class: "mono enable-command" }, c))) : null,
    !state.analyst ? el("p", { class: "muted", id: "respond-read-only" },
      "Read-only: running, undoing or approving an action needs the analyst or admin role.") : null,
    actions.length
      ? el("ol", { class: "response-actions", id: "response-actions" }, actions.map((a) => actionRow(ctx, a, state)))
      : el("p", { class: "muted", id: "response-actions" }, "No action fits: its events name no rule, key, user, role, instance or trail to contain."),
    el("h3", {}, "Actions taken"),
    recordedTable(recorded, state));
}

// The section when the actions could not be read: said, never left out.
function unavailable(error) {
  if (error.name === "AbortError") throw error;
  return el("section", { id: "respond", "aria-labelledby": "respond-heading" },
    el("h2", { id: "respond-heading" }, "Respond"),
    el("p", { class: "error", role: "alert", id: "respond-error" }, `The response actions could not be read: ${errorText(error)}`));
}

// The alert page's section.
export function alertResponse(ctx, alertId) {
  return alertActions(ctx, alertId).catch(unavailable);
}

async function alertActions(ctx, alertId) {
  const [answer, me] = await Promise.all([api(`/api/v1/alerts/${encodeURIComponent(alertId)}/responses`), session()]);
  const answers = [answer];
  answers.user = me.user;
  return responseSection(ctx, answers, { showAlert: false });
}

// The incident page's section: the actions of its alerts (the first `limit`), each once.
export function incidentResponse(ctx, alertIds, limit = 25) {
  return incidentActions(ctx, alertIds, limit).catch(unavailable);
}

async function incidentActions(ctx, alertIds, limit) {
  const picked = alertIds.slice(0, limit);
  const [answers, me] = await Promise.all([
    Promise.all(picked.map((id) => api(`/api/v1/alerts/${encodeURIComponent(id)}/responses`))), session()]);
  answers.user = me.user;
  const section = responseSection(ctx, answers, { showAlert: true });
  if (alertIds.length > limit) section.append(el("p", { class: "muted" }, `Actions of the first ${limit} of ${alertIds.length} alerts; open an alert for its own.`));
  return section;
}
