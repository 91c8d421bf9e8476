// The router: picks the view from the path, renders it into <main>, and marks the document ready
// (data-state="ready" and a performance mark) so tests and the benchmark know when a page is drawn.

// Views are imported statically (index.html preloads them all) so the page's API call starts as soon as this runs.

import { AuthRequired, adoptToken, setToken } from "./api.js";
import * as budgets from "./budgets.js";
import { el } from "./format.js";
import * as servers from "./servers.js";
import * as session from "./session.js";
import * as sessions from "./sessions.js";

const ROUTES = [
  [/^\/(?:ui\/?)?$/, "sessions", sessions],
  [/^\/ui\/sessions\/?$/, "sessions", sessions],
  [/^\/ui\/sessions\/(.+)$/, "sessions", session],
  [/^\/ui\/servers\/?$/, "servers", servers],
  [/^\/ui\/servers\/(.+)$/, "servers", servers],
  [/^\/ui\/budgets\/?$/, "budgets", budgets],
];

async function main() {
  adoptToken();
  const root = document.getElementById("main");
  const path = window.location.pathname;
  const route = ROUTES.find(([pattern]) => pattern.test(path));
  document.documentElement.dataset.state = "loading";
  try {
    if (!route) throw new Error(`no page at ${path}`);
    const [pattern, nav, view] = route;
    document.querySelector(`[data-nav="${nav}"]`)?.setAttribute("aria-current", "page");
    const match = path.match(pattern);
    const arg = match[1] ? decodeURIComponent(match[1]) : null;
    const content = await view.render(arg, new URLSearchParams(window.location.search));
    root.replaceChildren(content);
  } catch (error) {
    root.replaceChildren(error instanceof AuthRequired ? tokenForm() : failure(error));
  }
  performance.mark("tollgate:rendered");
  document.documentElement.dataset.state = "ready";
}

function failure(error) {
  return el("div", { class: "error", role: "alert" }, el("h1", {}, "Could not load this page"), el("p", {}, String(error.message ?? error)));
}

function tokenForm() {
  const input = el("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true });
  const form = el("form", { class: "token-form" },
    el("h1", {}, "Bearer token required"),
    el("p", {}, "This server's API needs a token. It is kept in this tab only (sessionStorage)."),
    el("label", { for: "token" }, "Token"), input,
    el("button", { type: "submit" }, "Continue"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setToken(input.value);
    window.location.reload();
  });
  return form;
}

main();
