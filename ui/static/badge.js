// Badges: a <button> showing one figure that discloses the details behind it in a labelled region below.
// Native buttons make them focusable and operable with Enter and Space; Escape closes an open one.
// A region's content is built when it first opens, and one listener on the document serves every badge: a session
// page has a hundred or more badges, most never opened (measured: about half the page's DOM time).

import { el } from "./format.js";

let counter = 0;
const unbuilt = new WeakMap(); // region -> [title, rows] until its first opening

// rows: [{key, label, value}] -> a <dl>; each <dd> carries data-k=key so a test can read one figure.
export function badge(text, title, rows, attrs = {}) {
  counter += 1;
  const id = `details-${counter}`;
  const region = el("div", { id, class: "pop", role: "region", "aria-label": title, hidden: true });
  unbuilt.set(region, [title, rows]);
  const button = el("button", {
    type: "button", class: `badge ${attrs.class ?? ""}`.trim(), "aria-expanded": "false", "aria-controls": id,
    title, dataset: attrs.dataset ?? {},
  }, text);
  return el("span", { class: "badge-wrap" }, button, region);
}

function build(region) {
  const content = unbuilt.get(region);
  if (!content) return;
  unbuilt.delete(region);
  const [title, rows] = content;
  region.append(el("p", { class: "pop-title" }, title),
    el("dl", {}, rows.map((row) => [el("dt", {}, row.label), el("dd", { dataset: { k: row.key } }, row.value)])));
}

function toggle(button, region, open = button.getAttribute("aria-expanded") !== "true") {
  if (open) build(region);
  button.setAttribute("aria-expanded", String(open));
  region.hidden = !open;
}

function parts(target) {
  const wrap = target instanceof Element ? target.closest(".badge-wrap") : null;
  const button = wrap?.querySelector(":scope > button.badge");
  return button ? [button, document.getElementById(button.getAttribute("aria-controls"))] : [null, null];
}

document.addEventListener("click", (event) => {
  const [button, region] = parts(event.target);
  if (button && region && button.contains(event.target)) toggle(button, region);
});

document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  const [button, region] = parts(event.target);
  if (!button || !region) return;
  const inRegion = region.contains(event.target);
  toggle(button, region, false);
  if (inRegion) button.focus();
});
