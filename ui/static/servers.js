// Servers: every upstream's calls, errors and byte percentiles; one upstream's detail with its largest results,
// per-tool figures, tool-list context cost, result bytes over time, a histogram of result sizes (both bucketed by
// the server over the whole range) and budget use.

import { getJson } from "./api.js";
import { LIMIT_LABELS, budgetsOrNothing, resetText, usageMeters } from "./budgetview.js";
import { bytesOverTime, histogram } from "./charts.js";
import { bytes, cell, date, el, ms, num, numCell, plural, table, time, tokens } from "./format.js";

export async function render(name) {
  return name ? renderOne(name) : renderAll();
}

async function renderAll() {
  const [body, budgets] = await Promise.all([getJson("/api/servers"), budgetsOrNothing(getJson)]);
  const servers = body.servers ?? [];
  const budgetOf = new Map((budgets.upstreams ?? []).map((u) => [u.upstream, u]));
  return el("section", { "aria-labelledby": "servers-title" },
    el("h1", { id: "servers-title" }, "Servers"),
    el("p", { class: "muted" }, "Tool calls in the last 30 days. Bytes in are requests from clients; bytes out are results from servers."),
    servers.length ? table("Per server", ["Server", { label: "Calls", num: true }, { label: "Errors", num: true },
      { label: "In p50", num: true }, { label: "In p95", num: true }, { label: "In max", num: true },
      { label: "Out p50", num: true }, { label: "Out p95", num: true }, { label: "Out max", num: true },
      { label: "Out total", num: true }, { label: "Tool list", num: true }, "Budget use"],
    servers.map((s) => serverRow(s, budgetOf.get(s.upstream))), { class: "data", id: "servers" })
      : el("p", { class: "empty" }, "No server has been called yet."));
}

function busiestShare(budget) {
  const usage = budget?.usage ?? [];
  if (!usage.length) return "—";
  const top = usage.reduce((a, u) => (u.used / (u.allowed || 1) > a.used / (a.allowed || 1) ? u : a));
  return `${(100 * top.used / (top.allowed || 1)).toFixed(0)}% of ${(LIMIT_LABELS[top.limit] ?? top.limit).toLowerCase()}`;
}

function serverRow(s, budget) {
  return el("tr", { dataset: { server: s.upstream } },
    el("th", { scope: "row" }, el("a", { href: `/ui/servers/${encodeURIComponent(s.upstream)}` }, s.upstream)),
    numCell(num(s.calls), { dataset: { k: "calls" } }), numCell(num(s.errors), { dataset: { k: "errors" } }),
    ["req_bytes_p50", "req_bytes_p95", "req_bytes_max", "resp_bytes_p50", "resp_bytes_p95", "resp_bytes_max",
      "resp_bytes"].map((k) => byteCell(s, k)),
    numCell(s.tool_list_tools ? `${num(s.tool_list_tools)} tools, ${tokens(s.tool_list_est_tokens)} tok` : "—",
      { dataset: { k: "tool_list" }, title: s.tool_list_tools ? `${num(s.tool_list_bytes)} bytes` : null }),
    cell(busiestShare(budget), { dataset: { k: "budget_use" } }));
}

// Shown in KiB/MiB; the exact count is the cell's title.
function byteCell(row, key) {
  return numCell(bytes(row[key]), { dataset: { k: key }, title: `${num(row[key])} bytes` });
}

async function renderOne(name) {
  const path = encodeURIComponent(name);
  const [detail, budgets] = await Promise.all([getJson(`/api/servers/${path}`), budgetsOrNothing(getJson)]);
  const s = detail.server ?? {};
  const budget = (budgets.upstreams ?? []).find((u) => u.upstream === name);
  return el("article", { "aria-labelledby": "server-title" },
    el("p", { class: "crumbs" }, el("a", { href: "/ui/servers" }, "Servers"), " / ", name),
    el("h1", { id: "server-title" }, "Server ", el("code", {}, name)),
    totals(s),
    charts(detail, name),
    el("section", { "aria-labelledby": "largest-title" },
      el("h2", { id: "largest-title" }, "Largest results"), largest(detail.largest_results ?? [])),
    el("section", { "aria-labelledby": "tools-title" }, el("h2", { id: "tools-title" }, "Per tool"), tools(detail.tools ?? [])),
    contextCost(detail.tool_list_context),
    el("section", { "aria-labelledby": "budget-title" }, el("h2", { id: "budget-title" }, "Budget use"), budgetUse(budget)));
}

function stat(key, label, value) {
  return el("div", { class: "stat" }, el("dt", {}, label), el("dd", { dataset: { k: key } }, value));
}

function totals(s) {
  return el("dl", { class: "stats", id: "server-totals" },
    stat("calls", "Calls", num(s.calls)), stat("errors", "Errors", num(s.errors)),
    stat("sessions", "Sessions", num(s.sessions)),
    stat("req_bytes", "Bytes in", bytes(s.req_bytes)), stat("resp_bytes", "Bytes out", bytes(s.resp_bytes)),
    stat("resp_bytes_p50", "Result p50", bytes(s.resp_bytes_p50)),
    stat("resp_bytes_p95", "Result p95", bytes(s.resp_bytes_p95)),
    stat("resp_bytes_max", "Result max", bytes(s.resp_bytes_max)),
    stat("req_bytes_p95", "Request p95", bytes(s.req_bytes_p95)),
    stat("est_tokens", "Est. tokens", tokens(s.est_tokens)),
    stat("duration_ms_p95", "Latency p95", ms(s.duration_ms_p95)));
}

// A bucket's length as the charts name it: "second", "5 seconds", "minute", ..., "day".
function per(seconds) {
  const units = [[86400, "day"], [3600, "hour"], [60, "minute"], [1, "second"]];
  const [size, unit] = units.find(([u]) => seconds % u === 0 && seconds >= u) ?? [1, "second"];
  const n = seconds / size;
  return n === 1 ? unit : `${n} ${unit}s`;
}

// Both charts cover the page's whole range, bucketed by the server: result bytes per bucket (its size fits the
// calls' time span, from a second to a day), sizes in power-of-two buckets.
function charts(detail, name) {
  const timeline = detail.timeline ?? { bucket_seconds: 86400, points: [] };
  const points = (timeline.points ?? []).map((p) => ({ at: date(p.at), value: Number(p.resp_bytes ?? 0), calls: p.calls }))
    .filter((p) => p.at && !Number.isNaN(p.at.getTime()));
  const bucket = per(timeline.bucket_seconds);
  const calls = (detail.sizes ?? []).reduce((n, b) => n + b.count, 0);
  return el("section", { "aria-labelledby": "charts-title", class: "charts" },
    el("h2", { id: "charts-title" }, "Result sizes"),
    el("p", { class: "muted small" }, `All ${plural(calls, "call")} in the range; result bytes summed per ${bucket}.`),
    el("figure", {}, bytesOverTime(points, `Result bytes per ${bucket}, ${name}`), el("figcaption", {}, `Result bytes per ${bucket}`)),
    el("figure", {}, histogram(detail.sizes ?? [], `Histogram of result sizes, ${name}`),
      el("figcaption", {}, "Result sizes (power-of-two buckets)")));
}

function largest(rows) {
  if (!rows.length) return el("p", { class: "empty" }, "No results yet.");
  return table("The largest results and their tools", ["Time", "Tool", { label: "Result", num: true },
    { label: "Est. tokens", num: true }, "Status", "Session"],
  rows.map((r) => el("tr", { dataset: { call: r.call_id } },
    cell(time(r.started_at), { class: "nowrap" }), el("th", { scope: "row" }, r.tool), numCell(bytes(r.resp_bytes_upstream), { title: `${num(r.resp_bytes_upstream)} bytes` }),
    numCell(tokens(r.est_tokens)), cell(el("span", { class: `status status-${r.status}` }, r.status)),
    cell(r.mcp_session_id ? el("a", { href: `/ui/sessions/${encodeURIComponent(r.mcp_session_id)}` }, r.mcp_session_id.slice(0, 8)) : "—"))),
  { class: "data", id: "largest" });
}

function tools(rows) {
  if (!rows.length) return el("p", { class: "empty" }, "No tool calls yet.");
  return table("Calls and result bytes per tool", ["Tool", { label: "Calls", num: true }, { label: "Errors", num: true },
    { label: "Result total", num: true }, { label: "Result p95", num: true }, { label: "Result max", num: true },
    { label: "Est. tokens", num: true }],
  rows.map((t) => el("tr", { dataset: { tool: t.tool } }, el("th", { scope: "row" }, t.tool), numCell(num(t.calls)), numCell(num(t.errors)),
    numCell(bytes(t.resp_bytes)), numCell(bytes(t.resp_bytes_p95)), numCell(bytes(t.resp_bytes_max)), numCell(tokens(t.est_tokens)))),
  { class: "data", id: "tools" });
}

function contextCost(ctx) {
  const section = el("section", { "aria-labelledby": "context-title" }, el("h2", { id: "context-title" }, "Tool-list context cost"));
  if (!ctx) {
    section.append(el("p", { class: "empty" }, "No tool list seen yet."));
    return section;
  }
  section.append(el("p", {}, `${num(ctx.tool_count)} tool definitions, ${bytes(ctx.server_bytes)}, about `,
    el("strong", {}, `${tokens(ctx.est_tokens)} tokens`), " carried in every request of a session that lists them."));
  const perTool = ctx.tools ?? [];
  if (perTool.length) {
    section.append(table("Per tool definition", ["Tool", { label: "Definition bytes", num: true }, { label: "Est. tokens", num: true }],
      perTool.map((t) => el("tr", { dataset: { tool: t.tool } }, el("th", { scope: "row" }, t.tool),
        byteCell(t, "def_bytes"), numCell(tokens(t.est_tokens), { dataset: { k: "est_tokens" } }))),
    { class: "data", id: "context-tools" }));
  }
  return section;
}

function budgetUse(budget) {
  if (!budget) return el("p", { class: "empty" }, "No budget configured for this server.");
  return el("div", {}, usageMeters(budget.usage, "server-budget"),
    el("p", { class: "small" }, `Today: ${num(budget.day.denied)} denied, ${num(budget.day.truncated)} truncated. Day resets ${resetText(budget.day)}.`),
    el("p", {}, el("a", { href: "/ui/budgets" }, "All budgets →")));
}
