// Onboarded accounts with their pollers' status and the S3 objects they could not read, "Poll
// now" and "Retry" for analysts, and onboarding for admins.
import { api, errorText } from "../api.js";
import { el, fmtTime, render, table } from "../dom.js";

export async function accountsPage(ctx) {
  const accounts = await api("/api/v1/accounts");
  const sections = [];
  for (const account of accounts) sections.push(await accountPanel(ctx, account));
  const onboarding = ctx.can("admin") ? await onboardingForm() : null;
  render(el("h1", {}, "Accounts"), accounts.length ? sections : el("p", { class: "muted" }, "No account onboarded yet."), onboarding);
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
    jobs,
    failed);
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

async function onboardingForm() {
  const roleArn = el("input", { name: "role_arn", size: 50, placeholder: "arn:aws:iam::123456789012:role/SkywardenReadOnly" });
  const name = el("input", { name: "name" });
  const regions = el("input", { name: "regions", placeholder: "every enabled region" });
  const result = el("div", {});
  const form = el("form", {
    class: "filters",
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        const created = await api("/api/v1/accounts", { method: "POST", body: { role_arn: roleArn.value, name: name.value || null, regions: regions.value.split(",").map((r) => r.trim()).filter(Boolean) } });
        const template = await fetch("/api/v1/accounts/template", { credentials: "same-origin" }).then((r) => r.text());
        result.replaceChildren(
          el("p", {}, "External ID (shown only now): ", el("strong", { class: "mono", id: "external-id" }, created.external_id)),
          el("p", { class: "muted" }, "Deploy this CloudFormation template with ExternalId set to it, then the pollers start on their own."),
          el("pre", {}, template));
      } catch (error) {
        result.replaceChildren(el("p", { class: "error" }, errorText(error)));
      }
    },
  }, el("label", {}, "Role ARN", roleArn), el("label", {}, "Name", name), el("label", {}, "Only these regions (optional)", regions), el("button", { type: "submit" }, "Onboard"));
  return el("div", {}, el("h2", {}, "Onboard an account"), form, result);
}
