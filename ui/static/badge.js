// Badges: a <button> showing one figure that discloses the details behind it in a labelled region below.
// Native buttons make them focusable and operable with Enter and Space; Escape closes an open one.

import { el } from "./format.js";

let counter = 0;

// rows: [{key, label, value}] -> a <dl>; each <dd> carries data-k=key so a test can read one figure.
export function badge(text, title, rows, attrs = {}) {
  counter += 1;
  const id = `details-${counter}`;
  const region = el("div", { id, class: "pop", role: "region", "aria-label": title, hidden: true },
    el("p", { class: "pop-title" }, title),
    el("dl", {}, rows.map((row) => [el("dt", {}, row.label), el("dd", { dataset: { k: row.key } }, row.value)])));
  const button = el("button", {
    type: "button", class: `badge ${attrs.class ?? ""}`.trim(), "aria-expanded": "false", "aria-controls": id,
    title, dataset: attrs.dataset ?? {},
  }, text);
  button.addEventListener("click", () => toggle(button, region));
  region.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      toggle(button, region, false);
      button.focus();
    }
  });
  button.addEventListener("keydown", (event) => {
    if (event.key === "Escape") toggle(button, region, false);
  });
  return el("span", { class: "badge-wrap" }, button, region);
}

function toggle(button, region, open = button.getAttribute("aria-expanded") !== "true") {
  button.setAttribute("aria-expanded", String(open));
  region.hidden = !open;
}
