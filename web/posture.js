// What the compliance pages and the trend chart share: section order, scores, and how a
// finding's resource, CIS controls and suppression are shown.
import { el } from "./dom.js";

// CIS sections in the benchmark's order; a section the checks add later goes after them.
export const SECTIONS = ["iam", "logging", "networking"];

export function bySection(a, b) {
  const rank = (s) => (SECTIONS.includes(s) ? SECTIONS.indexOf(s) : SECTIONS.length);
  return rank(a) - rank(b) || a.localeCompare(b);
}

// Rounded down, so a section with any failure never shows 100%.
export function percent(score) {
  return `${Math.floor(score * 10) / 10}%`;
}

export function scoreClass(score) {
  return score >= 90 ? "good" : score >= 70 ? "fair" : "poor";
}

// Passed (suppressed counted as passing) over evaluated, as the API computes a section's score.
export function totals(rows) {
  const t = { passed: 0, failed: 0, suppressed: 0 };
  for (const r of rows) { t.passed += r.passed; t.failed += r.failed; t.suppressed += r.suppressed; }
  const all = t.passed + t.failed + t.suppressed;
  t.score = all ? ((t.passed + t.suppressed) * 100) / all : 100;
  return t;
}

export function resourceRef(f) {
  if (f.resource_type === "aws:account") return el("span", {}, el("span", { class: "muted" }, "account "), f.resource_id);
  return el("span", {}, el("span", { class: "muted" }, `${f.resource_type} `),
    el("a", { href: `#/resource/${f.account_id}/${f.resource_type}/${encodeURIComponent(f.resource_id)}`, class: "resource-link" }, f.resource_id));
}

export function cisControls(frameworks) {
  // The newest benchmark version first.
  const cis = Object.entries(frameworks || {}).filter(([name, controls]) => name.startsWith("cis-") && controls.length)
    .sort(([a], [b]) => b.localeCompare(a, undefined, { numeric: true }));
  if (!cis.length) return el("span", { class: "muted" }, "—");
  return el("div", { class: "controls" }, cis.map(([name, controls]) =>
    el("div", { title: name }, el("span", { class: "muted" }, `${name.replace(/^cis-aws-/, "v")} `), controls.join(", "))));
}

export function suppressedBadge(f) {
  if (!f.suppressed) return null;
  return el("span", { class: "suppressed-note" }, el("span", { class: "badge suppressed", title: f.suppression }, "suppressed"),
    el("span", { class: "reason" }, f.suppression));
}
