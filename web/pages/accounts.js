// Onboarded accounts with their pollers' status, and onboarding for admins.
import { api } from "../api.js";
import { el, fmtTime, render, table } from "../dom.js";

export async function accountsPage(ctx) {
  const accounts = await api("/api/v1/accounts");
  const sections = [];
  for (const account of accounts) {
    const jobs = await api(`/api/v1/accounts/${account.account_id}/status`);
    sections.push(el("div", { class: "panel" },
      el("h2", {}, `${account.account_id} ${account.name || ""}`),
      el("p", { class: "muted" }, `${account.role_arn} · regions ${account.regions.join(", ")} · `,
        account.verify_error ? el("span", { class: "error" }, account.verify_error) : account.verified_at ? `role verified ${fmtTime(account.verified_at)}` : "role not verified yet"),
      table([
        { title: "Source", value: (j) => j.source },
        { title: "Region", value: (j) => j.region },
        { title: "Last success", value: (j) => fmtTime(j.last_success_at) },
        { title: "Lag", value: (j) => (j.lag_seconds == null ? "—" : `${Math.round(j.lag_seconds)} s`) },
        { title: "Items", value: (j) => j.items_total },
        { title: "Last error", value: (j) => (j.last_error ? el("span", { class: "error" }, j.last_error) : "") },
      ], jobs)));
  }
  const onboarding = ctx.can("admin") ? await onboardingForm() : null;
  render(el("h1", {}, "Accounts"), accounts.length ? sections : el("p", { class: "muted" }, "No account onboarded yet."), onboarding);
}

async function onboardingForm() {
  const roleArn = el("input", { name: "role_arn", size: 50, placeholder: "arn:aws:iam::123456789012:role/SkywardenReadOnly" });
  const name = el("input", { name: "name" });
  const regions = el("input", { name: "regions", value: "us-east-1" });
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
        result.replaceChildren(el("p", { class: "error" }, error.field ? `${error.field}: ${error.message}` : error.message));
      }
    },
  }, el("label", {}, "Role ARN", roleArn), el("label", {}, "Name", name), el("label", {}, "Regions", regions), el("button", { type: "submit" }, "Onboard"));
  return el("div", {}, el("h2", {}, "Onboard an account"), form, result);
}
