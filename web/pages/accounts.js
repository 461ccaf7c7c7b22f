// Onboarded accounts with their pollers' status and the S3 objects they could not read, "Poll
// now" and "Retry" for analysts, "Test" and "Remove" and onboarding (role, regions, the trail's
// and flow logs' S3 buckets, flow log groups) for admins. The one-time external ID stays on the
// page, with a copy button, until the admin leaves it; pressing Onboard again never hides it.
import { api, errorText } from "../api.js";
import { el, field, fmtTime, render, showFieldError, table } from "../dom.js";

// The external ID of the account just onboarded, kept while the page is redrawn to list it.
let justOnboarded = null;

export async function accountsPage(ctx) {
  const [accounts, detection] = await Promise.all([api("/api/v1/accounts"), api("/api/v1/detection/health")]);
  const sections = [];
  for (const account of accounts) sections.push(await accountPanel(ctx, account));
  const shown = justOnboarded;
  justOnboarded = null;
  const onboarding = ctx.can("admin") ? await onboardingForm(ctx, shown) : null;
  render(el("h1", {}, "Accounts"), detectionHealth(detection),
    accounts.length ? sections : el("p", { class: "muted", id: "no-accounts" }, "No account onboarded yet."), onboarding);
}

// Whether detection after imports and polls keeps up: while it fails, events are stored but
// raise no alert, so it is said first and loudly.
function detectionHealth(health) {
  if (health.consecutive_failures > 0) {
    return el("div", { class: "panel error", id: "detection-health", role: "alert", "data-failing": "true" },
      el("strong", {}, `Detection is failing since ${fmtTime(health.failing_since)}`),
      ` (${health.consecutive_failures} runs in a row; last success ${fmtTime(health.last_success_at)}): `,
      el("span", { class: "mono" }, health.last_error || "unknown error"),
      el("p", {}, "Events are stored but raise no alert until a run succeeds; the next import or poll retries them."));
  }
  return el("p", { class: "muted", id: "detection-health", "data-failing": "false" }, `Detection: ok, last run ${fmtTime(health.last_success_at)}.`);
}

// Which regions are polled: every enabled one, or those the restriction names.
function regionsText(account) {
  const polled = account.polled_regions.length ? account.polled_regions.join(", ") : "none yet";
  const scope = account.regions.length ? `restricted to ${account.regions.join(", ")}` : "every enabled region";
  const found = account.regions_discovered_at ? `enabled regions found ${fmtTime(account.regions_discovered_at)}` : "enabled regions not discovered yet";
  return `regions polled: ${polled} (${scope}; ${found})`;
}

async function accountPanel(ctx, account) {
  const id = account.account_id;
  const jobs = el("div", { class: "jobs" });
  const failed = el("div", { class: "failed-objects", "data-account": id });
  // The jobs and the objects they failed, as they are now.
  const refresh = async () => {
    const [statuses, objects] = await Promise.all([api(`/api/v1/accounts/${id}/status`), api(`/api/v1/accounts/${id}/failed-objects`)]);
    jobs.replaceChildren(jobsTable(statuses));
    failed.replaceChildren(...failedObjects(ctx, id, statuses, objects, refresh));
  };
  await refresh();
  return el("div", { class: "panel", "data-account": id },
    el("h2", {}, `${id} ${account.name || ""}`),
    el("p", { class: "muted" }, `${account.role_arn} · `,
      account.verify_error ? el("span", { class: "error" }, account.verify_error) : account.verified_at ? `role verified ${fmtTime(account.verified_at)}` : "role not verified yet"),
    el("p", { class: "muted regions" }, regionsText(account)),
    ctx.can("analyst") ? pollNowButton(id, refresh) : null,
    ctx.can("admin") ? adminButtons(ctx, id) : null,
    jobs,
    failed);
}

// "Test" assumes the role now and says what happened; "Remove" stops polling (after a confirm).
function adminButtons(ctx, id) {
  const result = el("span", { class: "result", id: `admin-result-${id}`, role: "status" });
  const test = el("button", { type: "button", class: "secondary test-role", "data-account": id, "aria-describedby": result.id, onclick: async () => {
    test.disabled = true;
    result.className = "result muted";
    result.textContent = "assuming the role…";
    try {
      const answer = await api(`/api/v1/accounts/${id}/test`, { method: "POST" });
      result.className = answer.ok ? "result ok" : "result error";
      result.textContent = answer.ok ? `role works: ${answer.assumed_arn}${answer.regions_error ? ` (regions: ${answer.regions_error})` : ""}` : `role refused: ${answer.error}`;
    } catch (error) {
      result.className = "result error";
      result.textContent = errorText(error);
    } finally {
      test.disabled = false;
    }
  } }, "Test role");
  const remove = el("button", { type: "button", class: "danger remove-account", "data-account": id, onclick: async () => {
    if (!confirm(`Stop polling account ${id}? Its stored events, alerts and findings stay.`)) return;
    try {
      await api(`/api/v1/accounts/${id}`, { method: "DELETE" });
      ctx.refresh();
    } catch (error) {
      result.className = "result error";
      result.textContent = errorText(error);
    }
  } }, "Remove");
  return el("p", { class: "actions" }, test, remove, result);
}

function seconds(value) {
  if (value == null) return "—";
  const s = Math.max(0, Math.round(value));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

// When a job runs next, in words a person reads at a glance.
function nextRun(job) {
  if (!job.enabled) return "retired";
  if (job.running_on) return `running on ${job.running_on}`;
  // Parked after panicking in a row: it does not run until someone presses "Poll now".
  if (job.parked_at) return el("span", { class: "error parked", title: `parked ${fmtTime(job.parked_at)}` }, `parked after ${job.consecutive_panics} panics in a row; "Poll now" runs it again`);
  const wait = (new Date(job.next_run_at) - Date.now()) / 1000;
  return wait <= 0 ? "due now" : `in ${seconds(wait)} (${fmtTime(job.next_run_at)})`;
}

function jobsTable(jobs) {
  return table([
    { title: "Source", value: (j) => j.source },
    { title: "Region", value: (j) => j.region },
    { title: "Target", value: (j) => j.target, class: "mono" },
    { title: "Every", value: (j) => seconds(j.interval_seconds) },
    { title: "Last success", value: (j) => fmtTime(j.last_success_at) },
    { title: "Next run", value: (j) => nextRun(j) },
    { title: "Lag", value: (j) => seconds(j.lag_seconds) },
    { title: "Items", value: (j) => j.items_total },
    { title: "Last error", value: (j) => (j.last_error ? el("span", { class: "error" }, `${j.last_error} (${j.consecutive_failures} in a row)`) : "") },
    { title: "Objects not read", value: objectsNotRead },
  ], jobs);
}

function objects(n) {
  return n === 1 ? "1 object" : `${n} objects`;
}

// The S3 objects a job could not read: given up (never read until retried) and retrying.
function objectsNotRead(job) {
  if (!job.objects_failed && !job.objects_retrying) return "";
  const parts = [];
  if (job.objects_failed) parts.push(`${objects(job.objects_failed)} failed${job.objects_failed_tries ? ` after ${job.objects_failed_tries} tries` : ""}`);
  if (job.objects_retrying) parts.push(`${job.objects_failed ? job.objects_retrying : objects(job.objects_retrying)} retrying`);
  return el("span", { class: "error objects-not-read" }, parts.join(", "),
    job.newest_failure_object ? [el("br"), "newest: ", el("span", { class: "mono" }, job.newest_failure_object), `: ${withoutObject(job.newest_failure_error, job.newest_failure_object)}`] : null);
}

// An object's error, without its name when it begins with it (the name is shown beside it).
function withoutObject(error, object) {
  return error.startsWith(`${object}: `) ? error.slice(object.length + 2) : error;
}

// The account's failed objects (as many as the API gives), with "Retry" on those given up.
function failedObjects(ctx, id, statuses, list, refresh) {
  if (!list.length) return [];
  const total = statuses.reduce((sum, j) => sum + j.objects_failed + j.objects_retrying, 0);
  const columns = [
    { title: "Object", value: (o) => `s3://${o.bucket}/${o.key}`, class: "mono" },
    { title: "Source", value: (o) => o.source },
    { title: "Tries", value: (o) => o.attempts },
    { title: "Last error", value: (o) => el("span", { class: "error" }, withoutObject(o.last_error, `s3://${o.bucket}/${o.key}`)) },
    { title: "Last failed", value: (o) => fmtTime(o.last_failed_at) },
    { title: "Next try", value: (o) => (o.next_attempt_at ? fmtTime(o.next_attempt_at) : el("span", { class: "error" }, "given up")) },
  ];
  if (ctx.can("analyst")) columns.push({ title: "", value: (o) => (o.next_attempt_at ? "" : retryButton(id, o, refresh)) });
  const shown = el("h3", {}, "S3 objects not read");
  if (total <= list.length) return [shown, table(columns, list)];
  return [shown, el("p", { class: "muted" }, `the first ${list.length} of ${total}`), table(columns, list)];
}

// One more try of a given-up object, at its job's next run (made due now).
function retryButton(id, object, refresh) {
  const result = el("span", { class: "result", role: "status" });
  const button = el("button", {
    type: "button",
    class: "retry-object",
    "data-key": object.key,
    title: "try this object again now",
    onclick: async () => {
      button.disabled = true;
      try {
        await api(`/api/v1/accounts/${id}/failed-objects/retry`, { method: "POST", body: { bucket: object.bucket, key: object.key } });
        await refresh();
      } catch (error) {
        result.className = "result error";
        result.textContent = errorText(error);
        button.disabled = false;
      }
    },
  }, "Retry");
  return el("span", {}, button, result);
}

// Makes every job of the account due now; the pollers run them within seconds.
function pollNowButton(id, refresh) {
  const result = el("span", { class: "result", id: `poll-result-${id}`, role: "status" });
  const button = el("button", {
    type: "button",
    class: "poll-now",
    "data-account": id,
    "aria-describedby": `poll-result-${id}`,
    title: "run every poll job of this account now",
    onclick: async () => {
      button.disabled = true;
      result.className = "result muted";
      result.textContent = "asking…";
      try {
        const answer = await api(`/api/v1/accounts/${id}/poll-now`, { method: "POST" });
        result.className = "result ok";
        result.textContent = answer.jobs === 1 ? "1 job due now" : `${answer.jobs} jobs due now`;
        await refresh();
      } catch (error) {
        result.className = "result error";
        result.textContent = errorText(error);
      } finally {
        button.disabled = false;
      }
    },
  }, "Poll now");
  return el("p", { class: "run-now" }, button, result);
}

// The external ID to give the role's trust policy, with a copy button, and the template.
function externalIdPanel(shown) {
  const copied = el("span", { class: "result", role: "status" });
  const copy = el("button", { type: "button", class: "secondary", id: "copy-external-id", onclick: async () => {
    try {
      await navigator.clipboard.writeText(shown.external_id);
      copied.textContent = "copied";
    } catch {
      copied.textContent = "select the ID and copy it by hand";
    }
  } }, "Copy");
  return el("section", { class: "notice", id: "onboarded", "aria-labelledby": "onboarded-title" },
    el("h2", { id: "onboarded-title" }, `Account ${shown.account_id} onboarded`),
    el("p", {}, "External ID (shown only on this page, until you leave it): ",
      el("strong", { class: "mono", id: "external-id" }, shown.external_id), " ", copy, " ", copied),
    el("p", { class: "muted" }, "Deploy this CloudFormation template with ExternalId set to it, then press Test role: the pollers start on their own."),
    el("pre", { tabindex: "0", "aria-label": "CloudFormation template" }, shown.template));
}

async function onboardingForm(ctx, shown) {
  const input = (id, attrs) => el("input", { id, name: id.replace("onboard-", ""), autocomplete: "off", ...attrs });
  const roleArn = input("onboard-role_arn", { size: 50, placeholder: "arn:aws:iam::123456789012:role/SkywardenReadOnly", required: true });
  const name = input("onboard-name", {});
  const regions = input("onboard-regions", { placeholder: "every enabled region" });
  const trailBucket = input("onboard-trail_bucket", { placeholder: "optional" });
  const trailPrefix = input("onboard-trail_prefix", { placeholder: "optional" });
  const flowBucket = input("onboard-flow_bucket", { placeholder: "optional" });
  const logGroups = input("onboard-flow_log_groups", { placeholder: "optional, comma separated" });
  const controls = { role_arn: roleArn, name, regions, trail_bucket: trailBucket, trail_prefix: trailPrefix, flow_bucket: flowBucket, flow_log_groups: logGroups };
  const button = el("button", { type: "submit", id: "onboard-submit" }, "Onboard");
  const list = (text) => text.split(",").map((r) => r.trim()).filter(Boolean);
  const form = el("form", {
    class: "filters",
    id: "onboard-form",
    "aria-label": "Onboard an account",
    onsubmit: async (e) => {
      e.preventDefault();
      for (const control of Object.values(controls)) showFieldError(control, null);
      button.disabled = true;
      const sources = {};
      if (trailBucket.value.trim()) sources.trail_bucket = trailBucket.value.trim();
      if (trailPrefix.value.trim()) sources.trail_prefix = trailPrefix.value.trim();
      if (flowBucket.value.trim()) sources.flow_bucket = flowBucket.value.trim();
      if (list(logGroups.value).length) sources.flow_log_groups = list(logGroups.value);
      try {
        const created = await api("/api/v1/accounts", { method: "POST", body: { role_arn: roleArn.value.trim(), name: name.value || null, regions: list(regions.value), sources } });
        const template = await fetch("/api/v1/accounts/template", { credentials: "same-origin" }).then((r) => r.text());
        justOnboarded = { account_id: created.account_id, external_id: created.external_id, template };
        ctx.refresh();
      } catch (error) {
        // Next to the field it names (the role, a bucket), the external ID shown above stays.
        const key = error.field && Object.keys(controls).find((k) => error.field === k || error.field.endsWith(`.${k}`) || error.field.startsWith(k));
        showFieldError(controls[key] || roleArn, errorText(error));
        button.disabled = false;
      }
    },
  },
  field("Role ARN", roleArn), field("Name", name), field("Only these regions (optional)", regions),
  field("CloudTrail S3 bucket", trailBucket), field("CloudTrail key prefix", trailPrefix),
  field("Flow logs S3 bucket", flowBucket), field("Flow log groups (CloudWatch Logs)", logGroups), button);
  return el("div", {}, shown ? externalIdPanel(shown) : null, el("h2", {}, "Onboard an account"), form);
}
