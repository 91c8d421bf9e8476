// Budgets: per upstream its limits and actions, spend per window, denials and truncations, and time to reset.

import { getJson } from "./api.js";
import { LIMIT_LABELS, amount, resetText, usageMeters } from "./budgetview.js";
import { bytes, cell, el, num, numCell, table, tokens } from "./format.js";

export async function render() {
  const body = await getJson("/api/budgets");
  const upstreams = body.upstreams ?? [];
  return el("section", { "aria-labelledby": "budgets-title" },
    el("h1", { id: "budgets-title" }, "Budgets"),
    el("p", { class: "muted" }, `As of ${body.generated_at ?? "now"}.`),
    upstreams.length ? upstreams.map(upstreamBlock) : el("p", { class: "empty" }, "No upstream has a budget or any spend yet."));
}

function spendRow(label, spend, key) {
  return el("tr", { dataset: { window: key } }, el("th", { scope: "row" }, label),
    numCell(num(spend.calls), { dataset: { k: "calls" } }),
    numCell(bytes(spend.bytes), { dataset: { k: "bytes" }, title: `${num(spend.bytes)} bytes` }),
    numCell(tokens(spend.tokens), { dataset: { k: "tokens" } }), numCell(num(spend.denied), { dataset: { k: "denied" } }),
    numCell(num(spend.truncated), { dataset: { k: "truncated" } }), numCell(num(spend.warned), { dataset: { k: "warned" } }));
}

function upstreamBlock(u) {
  const id = `budget-${u.upstream.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  const limits = Object.entries(u.limits ?? {});
  return el("section", { class: "budget", id, dataset: { upstream: u.upstream }, "aria-labelledby": `${id}-title` },
    el("h2", { id: `${id}-title` }, el("a", { href: `/ui/servers/${encodeURIComponent(u.upstream)}` }, u.upstream)),
    el("p", { class: "muted" }, "Day resets ", el("span", { dataset: { k: "resets_in" } }, resetText(u.day)),
      ` · time zone ${u.timezone}` + (u.spend_unknown ? ` · past spend unknown, failing ${u.fail_open ? "open" : "closed"}` : "")),
    limits.length ? table("Limits", ["Limit", { label: "Allowed", num: true }, "Action"],
      limits.map(([limit, rule]) => el("tr", { dataset: { limit } }, el("th", { scope: "row" }, LIMIT_LABELS[limit] ?? limit),
        numCell(amount(limit, rule.allowed), { title: num(rule.allowed), dataset: { k: "allowed" } }),
        cell(el("span", { class: `tag action-${rule.action}`, dataset: { k: "action" } }, rule.action)))),
    { class: "data limits" }) : el("p", { class: "muted" }, "No limits: spend is tracked only."),
    usageMeters(u.usage, `${id}-usage`),
    table("Spend per window", ["Window", { label: "Calls", num: true }, { label: "Bytes", num: true },
      { label: "Est. tokens", num: true }, { label: "Denied", num: true }, { label: "Truncated", num: true }, { label: "Warned", num: true }],
    [spendRow("Today", u.day, "day"), spendRow(`Busiest of ${num(u.sessions?.count ?? 0)} live sessions`, u.sessions?.busiest ?? {}, "session")],
    { class: "data spend" }),
    (u.tools ?? []).length ? table("Per tool today", ["Tool", { label: "Calls", num: true }, { label: "Bytes", num: true }, "Override"],
      u.tools.map((t) => el("tr", {}, el("th", { scope: "row" }, t.tool), numCell(num(t.day.calls)), numCell(bytes(t.day.bytes)),
        cell(Object.entries(t.limits ?? {}).map(([k, v]) => `${LIMIT_LABELS[k] ?? k} ${amount(k, v.allowed)} (${v.action})`).join("; ") || "—"))),
    { class: "data" }) : null);
}
