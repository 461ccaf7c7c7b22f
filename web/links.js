// Where each entity lives in the dashboard: one address per entity, so every page links the same
// principal, address, resource, alert, finding, incident or event to the same page. Pages build
// links only through these functions.
import { el } from "./dom.js";

const part = (value) => encodeURIComponent(String(value));

export const href = {
  alert: (id) => `#/alert/${part(id)}`,
  incident: (id) => `#/incident/${part(id)}`,
  finding: (id) => `#/finding/${part(id)}`,
  event: (id) => `#/event/${part(id)}`,
  // A principal is its ARN (or user name when CloudTrail gives no ARN).
  principal: (principal) => `#/principal/${part(principal)}`,
  address: (ip) => `#/address/${part(ip)}`,
  resource: (account, type, id) => `#/resource/${part(account)}/${part(type)}/${part(id)}`,
};

// A link to an entity's page, its text the entity's name (or `text`).
function link(address, text, attrs) {
  return el("a", { href: address, ...attrs }, text);
}

export const alertLink = (id, text) => link(href.alert(id), text ?? String(id).slice(0, 8), { class: "entity alert-link" });
export const incidentLink = (id, text) => link(href.incident(id), text ?? String(id), { class: "entity incident-link" });
export const findingLink = (id, text) => link(href.finding(id), text ?? String(id), { class: "entity finding-link" });
export const eventLink = (id, text) => link(href.event(id), text ?? String(id), { class: "entity event-link mono" });
export const principalLink = (principal, text) =>
  principal ? link(href.principal(principal), text ?? principal, { class: "entity principal-link mono" }) : "—";
export const addressLink = (ip, text) => (ip ? link(href.address(ip), text ?? ip, { class: "entity address-link mono" }) : "—");
export const resourceEntityLink = (account, type, id, text) =>
  link(href.resource(account, type, id), text ?? id, { class: "entity resource-link mono" });
