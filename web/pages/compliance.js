// Compliance: posture scores per account and section with their trend, the failing resources
// (filtered), and Run now for admins.
import { api, errorText } from "../api.js";
import { trendChart } from "../charts.js";
import { el, fmtTime, query, render, SEVERITIES, sev } from "../dom.js";
import { bySection, cisControls, percent, resourceRef, scoreClass, SECTIONS, suppressedBadge, totals } from "../posture.js";
import { allPages, loadMore } from "./paging.js";

const FINDING_STATUSES = ["open", "resolved", "all"];
const FINDINGS_PAGE = 500;

function scoreCards(account, latest, trend, trendCut) {
  const overall = totals(latest);
  const sections = latest.slice().sort((a, b) => bySection(a.section, b.section));
  const evaluated = latest.map((r) => r.evaluated_at).sort().pop();
  return el("div", { class: "panel posture-account", "data-account": account },
    el("div", {},
      el("div", { class: "posture-head" },
        el("h2", {}, `Account ${account}`),
        el("span", { class: "muted", "data-evaluated": evaluated }, `as of the snapshot of ${fmtTime(evaluated)} · ${trend.length ? new Set(trend.map((r) => r.evaluated_at)).size : 0} evaluations`)),
      el("div", { class: "cards" },
        el("a", { class: "card score overall", href: "#/compliance" + query({ account }), "data-section": "overall" },
          el("div", { class: "muted" }, "overall"),
          el("div", { class: `n ${scoreClass(overall.score)}` }, percent(overall.score)),
          el("div", { class: "counts" }, `${overall.failed} failed · ${overall.passed + overall.suppressed} of ${overall.passed + overall.failed + overall.suppressed} pass`)),
        sections.map((s) => el("a", { class: "card score", href: "#/compliance" + query({ account, section: s.section }), "data-section": s.section, "data-score": s.score },
          el("div", { class: "muted" }, s.section),
          el("div", { class: `n ${scoreClass(s.score)}` }, percent(s.score)),
          el("div", { class: "counts" }, `${s.failed} failed`, s.suppressed ? ` · ${s.suppressed} suppressed` : "", ` · ${s.passed} passed`))))),
    trendChart(trend),
    trendCut ? el("p", { class: "muted" }, "The trend is cut short: this account has more evaluations than a chart holds.") : null);
}

function findingsTable(findings) {
  return el("table", { id: "findings" },
    el("thead", {}, el("tr", {}, ["Severity", "Check", "Resource", "What fails", "CIS controls", "First failed / last seen", "Status"].map((t) => el("th", {}, t)))),
    el("tbody", {}, findings.map(findingRow)));
}

function findingRow(f) {
  const row = el("tr", {
    class: `clickable finding ${f.status}${f.suppressed ? " is-suppressed" : ""}`,
    "data-finding": f.id,
    "data-check": f.check_id,
    "data-resource": f.resource_id,
    onclick: () => { location.hash = `#/finding/${f.id}`; },
  },
  el("td", {}, sev(f.severity)),
  el("td", {}, el("a", { href: `#/finding/${f.id}` }, f.title), el("div", { class: "mono muted" }, f.check_id)),
  el("td", { class: "resource" }, resourceRef(f), f.resource_type === "aws:account" ? null : el("div", { class: "muted" }, `${f.account_id} · ${f.region}`)),
  el("td", { class: "messages" }, f.messages.map((m) => el("div", {}, m))),
  el("td", {}, cisControls(f.frameworks)),
  el("td", { class: "when" }, fmtTime(f.first_failed_at), el("div", { class: "muted" }, f.resolved_at ? `resolved ${fmtTime(f.resolved_at)}` : `seen ${fmtTime(f.last_seen_at)}`)),
  el("td", {}, el("span", { class: `status ${f.status}` }, f.status), suppressedBadge(f)));
  for (const link of row.querySelectorAll("a")) link.addEventListener("click", (e) => e.stopPropagation());
  return row;
}

function runNowButton(ctx) {
  const result = el("span", { class: "result", id: "run-result" });
  const button = el("button", {
    type: "button",
    id: "run-now",
    title: "evaluate every check over the latest snapshots now",
    onclick: async () => {
      button.disabled = true;
      result.className = "result muted";
      result.textContent = "evaluating…";
      try {
        const report = await api("/api/v1/posture/run", { method: "POST" });
        const sum = (key) => report.accounts.reduce((n, [, outcome]) => n + outcome[key], 0);
        ctx.flash = `Evaluated ${report.checks} checks over ${report.accounts.length} account(s) at ${fmtTime(report.evaluated_at)}: `
          + `${sum("opened")} opened, ${sum("reopened")} reopened, ${sum("resolved")} resolved`
          + (report.problems.length ? `; ${report.problems.length} problem(s) in checks` : "");
        ctx.refresh();
      } catch (error) {
        result.className = "result error";
        result.textContent = errorText(error);
        button.disabled = false;
      }
    },
  }, "Run now");
  return el("span", { class: "run-now" }, button, result);
}

export async function compliancePage(ctx, params) {
  const status = FINDING_STATUSES.includes(params.get("status")) ? params.get("status") : "open";
  const filters = { account: params.get("account") || "", section: params.get("section") || "", check: params.get("check") || "" };
  const severity = SEVERITIES.includes(params.get("severity")) ? params.get("severity") : "";
  const q = params.get("q") || "";
  const [{ rows: scores }, checks, first] = await Promise.all([
    allPages("/api/v1/posture/scores", { limit: 1000 }, "scores"),
    api("/api/v1/posture/checks"),
    api("/api/v1/posture/findings" + query({ status, ...filters, limit: FINDINGS_PAGE })),
  ]);
  const accounts = [...new Set(scores.map((s) => s.account_id))].sort();
  // The trend chart of each account: its evaluations, as many pages as a chart can show.
  const trends = await Promise.all(accounts.map((account) => allPages("/api/v1/posture/scores", { account, trend: "true", limit: 5000 }, "scores", 4)));
  // Severity and the resource search are applied here: the API filters by exact values only.
  const needle = q.trim().toLowerCase();
  const keep = (f) => (!severity || f.severity === severity) && (!needle || f.resource_id.toLowerCase().includes(needle));
  const findings = first.findings;
  const shown = findings.filter(keep);

  const select = (name, value, options, any) => el("select", { name, id: `filter-${name}` },
    any !== undefined ? el("option", { value: "" }, any) : null,
    options.map(([v, text]) => el("option", { value: v, selected: v === value }, text)));
  const sections = [...new Set([...SECTIONS, ...checks.map((c) => c.section)])].sort(bySection);
  const statusSelect = select("status", status, FINDING_STATUSES.map((s) => [s, s]));
  const sectionSelect = select("section", filters.section, sections.map((s) => [s, s]), "any section");
  const severitySelect = select("severity", severity, SEVERITIES.slice().reverse().map((s) => [s, s]), "any severity");
  const accountSelect = select("account", filters.account,
    [...new Set([...accounts, filters.account].filter(Boolean))].map((a) => [a, a]), "any account");
  const checkSelect = select("check", filters.check, checks.map((c) => [c.id, c.id]), "any check");
  const search = el("input", { name: "q", id: "filter-q", value: q, placeholder: "resource id contains", size: 22 });
  const apply = (e) => {
    e.preventDefault();
    location.hash = "#/compliance" + query({
      status: statusSelect.value === "open" ? "" : statusSelect.value, section: sectionSelect.value, severity: severitySelect.value,
      account: accountSelect.value, check: checkSelect.value, q: search.value.trim(),
    });
  };
  const flash = ctx.flash;
  ctx.flash = null;
  const latest = scores.map((s) => s.evaluated_at).sort().pop();
  const heading = status === "open" ? "Failing resources" : status === "resolved" ? "Resolved findings" : "All findings";
  const table = findingsTable(shown);
  const count = el("p", { class: "muted", id: "finding-count" });
  const countText = () => {
    count.textContent = shown.length === findings.length ? `${shown.length} findings` : `${shown.length} of ${findings.length} findings`;
  };
  countText();
  render(
    el("h1", {}, "Compliance"),
    el("p", { class: "muted page-meta" },
      latest ? `CIS AWS Foundations checks over the config snapshots; last evaluated ${fmtTime(latest)}. Suppressed findings count as passing from the next evaluation.`
        : "No evaluation yet.",
      ctx.can("admin") ? runNowButton(ctx) : null),
    flash ? el("p", { class: "flash", id: "run-report" }, flash) : null,
    accounts.length
      ? el("div", { id: "scores" }, accounts.map((account, i) => scoreCards(account, scores.filter((s) => s.account_id === account), trends[i].rows, trends[i].more)))
      : el("p", { class: "muted" }, "No posture evaluation yet: checks run over onboarded accounts' config snapshots (or `skywarden posture import` a snapshot dump)."),
    el("h2", {}, heading),
    el("form", { class: "filters", id: "finding-filters", onsubmit: apply },
      el("label", {}, "Status", statusSelect), el("label", {}, "Section", sectionSelect), el("label", {}, "Severity", severitySelect),
      el("label", {}, "Account", accountSelect), el("label", {}, "Check", checkSelect), el("label", {}, "Resource", search),
      el("button", { type: "submit" }, "Filter")),
    count,
    shown.length || first.next_cursor ? table : null,
    shown.length ? null : el("p", { class: "muted" }, status === "open" ? "Nothing fails with these filters." : "No finding matches."),
    loadMore({
      path: "/api/v1/posture/findings", params: { status, ...filters, limit: FINDINGS_PAGE }, key: "findings", nextCursor: first.next_cursor, id: "more-findings",
      append: (rows) => {
        findings.push(...rows);
        const more = rows.filter(keep);
        shown.push(...more);
        table.tBodies[0].append(...more.map(findingRow));
        countText();
      },
    }),
  );
}
