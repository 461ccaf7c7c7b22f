// Sign in with a user name and password, or an API token.
import { api } from "../api.js";
import { el, render } from "../dom.js";

export async function loginPage(ctx) {
  const message = el("p", { class: "error", role: "alert" });
  const username = el("input", { name: "username", autocomplete: "username", id: "username" });
  const password = el("input", { name: "password", type: "password", autocomplete: "current-password", id: "password" });
  const token = el("input", { name: "token", type: "password", autocomplete: "off", id: "token", placeholder: "or an API token" });
  const form = el("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      const body = token.value ? { token: token.value } : { username: username.value, password: password.value };
      try {
        const session = await api("/api/v1/session", { method: "POST", body });
        ctx.signedIn(session);
        location.hash = "#/overview";
      } catch (error) {
        message.textContent = error.message;
      }
    },
  },
  el("label", {}, "User name", username),
  el("label", {}, "Password", password),
  el("label", {}, "API token", token),
  el("button", { type: "submit", id: "sign-in" }, "Sign in"),
  message);
  render(el("div", { class: "login panel" }, el("h1", {}, "Sign in to Skywarden"), form));
}
