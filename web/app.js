// Skywarden dashboard: the entry module (session, navigation and the router). Plain JavaScript
// modules, no build step, nothing loaded from elsewhere. Every value shown comes from the API
// and is written as text, never as HTML.
import { api, setCsrfToken, whenUnauthorized } from "./api.js";
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
  refresh: () => route(),
  signedIn: startSession,
  flash: null,
};

const nav = document.getElementById("nav");
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

async function route() {
  const hash = location.hash || "#/overview";
  const [path, search] = hash.slice(1).split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean);
  if (parts[0] !== "login" && !session.user) {
    try {
      startSession(await api("/api/v1/session"));
    } catch {
      location.hash = "#/login";
      return showLogin();
    }
  }
  // A finding belongs to the compliance page.
  const page = parts[0] === "finding" ? "compliance" : parts[0];
  for (const link of nav.querySelectorAll("a")) link.classList.toggle("active", link.getAttribute("href") === `#/${page}`);
  try {
    switch (parts[0]) {
      case "login": return await showLogin();
      case "alerts": return await alertsPage(params);
      case "alert": return await alertPage(ctx, parts[1]);
      case "audit": return await auditPage(params);
      case "inventory": return await inventoryPage(params);
      case "resource": return await resourcePage(parts[1], parts[2], parts.slice(3).join("/"));
      case "network": return await networkPage(params);
      case "accounts": return await accountsPage(ctx);
      case "audit-log": return await auditLogPage();
      case "notifications": return await notificationsPage(ctx, params);
      case "compliance": return await compliancePage(ctx, params);
      case "finding": return await findingPage(ctx, parts[1]);
      default: return await overviewPage();
    }
  } catch (error) {
    if (error.status !== 401) showError(error);
  }
}

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
