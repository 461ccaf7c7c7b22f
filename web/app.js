// Skywarden dashboard: the entry module (session, navigation and the router). Plain JavaScript
// modules, no build step, nothing loaded from elsewhere. Every value shown comes from the API
// and is written as text, never as HTML.
import { api, beginNavigation, setCsrfToken, whenUnauthorized } from "./api.js";
import { showError } from "./dom.js";
import { accountsPage } from "./pages/accounts.js";
import { alertPage, alertsPage } from "./pages/alerts.js";
import { auditLogPage } from "./pages/audit-log.js";
import { auditPage } from "./pages/audit.js";
import { compliancePage } from "./pages/compliance.js";
import { findingPage } from "./pages/finding.js";
import { inventoryPage, resourcePage } from "./pages/inventory.js";
import { loginPage } from "./pages/login.js";
import { networkPage } from "./pages/network.js";
import { notificationsPage } from "./pages/notifications.js";
import { overviewPage } from "./pages/overview.js";

const ROLE_RANK = { viewer: 1, analyst: 2, admin: 3 };

// Who is signed in (null: nobody yet, or the session ended).
const session = { user: null, role: null };

// What pages get: the signed-in user's rights, a way to draw the current page again after a
// change, and a message for the next drawing of a page (`flash`, taken by the page that shows it).
const ctx = {
  can: (role) => ROLE_RANK[session.role] >= ROLE_RANK[role],
  refresh: () => route({ refresh: true }),
  signedIn: startSession,
  flash: null,
};

const nav = document.getElementById("nav");
const main = document.getElementById("main");
const loading = document.getElementById("loading");
const who = document.getElementById("who");
const logout = document.getElementById("logout");

function startSession(answer) {
  setCsrfToken(answer.csrf_token);
  session.user = answer.user;
  session.role = answer.role;
  nav.hidden = false;
  logout.hidden = false;
  who.textContent = `${answer.user} (${answer.role})`;
  for (const link of nav.querySelectorAll("a[data-role]")) link.hidden = !ctx.can(link.dataset.role);
}

function showLogin() {
  nav.hidden = true;
  logout.hidden = true;
  who.textContent = "";
  return loginPage(ctx);
}

// Draws the page the address names. Every load shows the loading indicator, cancels the load
// before it, and when it is still the current one, names the page in the title and moves the
// focus to its heading (or, after a refresh, back to the control that had it).
async function route({ refresh = false } = {}) {
  const signal = beginNavigation();
  const focused = refresh && document.activeElement && document.activeElement.id;
  main.setAttribute("aria-busy", "true");
  loading.hidden = false;
  try {
    await drawPage(signal);
  } catch (error) {
    if (signal.aborted || error.name === "AbortError") return;
    if (error.status !== 401) showError(error);
  }
  if (signal.aborted) return;
  main.removeAttribute("aria-busy");
  loading.hidden = true;
  const heading = main.querySelector("h1");
  document.title = heading && heading.textContent.trim() ? `${heading.textContent.trim()} · Skywarden` : "Skywarden";
  const again = focused && document.getElementById(focused);
  if (again) again.focus();
  else if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: false });
  }
  if (!refresh) window.scrollTo(0, 0);
}

async function drawPage(signal) {
  const hash = location.hash || "#/overview";
  const [path, search] = hash.slice(1).split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean);
  if (parts[0] !== "login" && !session.user) {
    try {
      startSession(await api("/api/v1/session"));
    } catch (error) {
      if (signal.aborted) throw error;
      location.hash = "#/login";
      return showLogin();
    }
  }
  // A finding belongs to the compliance page.
  const page = { finding: "compliance", incident: "incidents", alert: "alerts", resource: "inventory" }[parts[0]] || parts[0];
  for (const link of nav.querySelectorAll("a")) {
    const active = link.getAttribute("href") === `#/${page}`;
    link.classList.toggle("active", active);
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  // A page module loaded on first use; a load the user left meanwhile stops here.
  const lazy = async (module) => {
    const loaded = await import(module);
    if (signal.aborted) throw new DOMException("cancelled", "AbortError");
    return loaded;
  };
  switch (parts[0]) {
    case "login": return showLogin();
    case "alerts": return alertsPage(ctx, params);
    case "alert": return alertPage(ctx, parts[1]);
    case "audit": return auditPage(params);
    case "inventory": return inventoryPage(params);
    // The id stays encoded: it goes into the API's path as it is (ARNs hold slashes).
    case "resource": return resourcePage(decodeURIComponent(parts[1] || ""), decodeURIComponent(parts[2] || ""), parts.slice(3).join("/"));
    case "network": return networkPage(params);
    case "accounts": return accountsPage(ctx);
    case "audit-log": return auditLogPage();
    case "notifications": return notificationsPage(ctx, params);
    case "compliance": return compliancePage(ctx, params);
    case "finding": return findingPage(ctx, parts[1]);
    // Investigation pages, loaded when first opened.
    case "incidents": return (await lazy("./pages/incident.js")).incidentsPage(ctx, params);
    case "incident": return (await lazy("./pages/incident.js")).incidentPage(ctx, decodeURIComponent(parts[1] || ""));
    case "principal": return (await lazy("./pages/principal.js")).principalPage(ctx, decodeURIComponent(parts.slice(1).join("/")), params);
    case "address": return (await lazy("./pages/address.js")).addressPage(ctx, decodeURIComponent(parts[1] || ""), params);
    case "event": return (await lazy("./pages/event.js")).eventPage(ctx, decodeURIComponent(parts[1] || ""));
    default: return overviewPage();
  }
}

// The skip link moves the focus to the page's heading (its href would change the route).
document.getElementById("skip").addEventListener("click", (event) => {
  event.preventDefault();
  const target = main.querySelector("h1") || main;
  target.setAttribute("tabindex", "-1");
  target.focus();
});

// The server ended the session (expired, or signed out elsewhere): sign in again.
whenUnauthorized(() => {
  session.user = null;
  location.hash = "#/login";
});

logout.addEventListener("click", async () => {
  try { await api("/api/v1/session", { method: "DELETE" }); } catch { /* already gone */ }
  session.user = null;
  setCsrfToken(null);
  location.hash = "#/login";
});
window.addEventListener("hashchange", route);
route();
