// One session: its roll-up (tokens by kind, cost, models, requests, MCP bytes by server, startup overhead),
// then turn by turn: the prompt, a usage badge, and each tool call with byte badges, status and tie.

import { getJson } from "./api.js";
import { badge } from "./badge.js";
import { bytes, cell, el, exactBytes, ms, num, numCell, span, table, time, tokens, usd } from "./format.js";

const TIES = {
  tool_use_id: "exact (tool_use_id)",
  telemetry_window: "telemetry window",
  unmatched: "unmatched",
};
const MATCH = { prompt_id: "by prompt id", turn_order: "by turn order" };

export async function render(sessionId) {
  const detail = await getJson(`/api/sessions/${encodeURIComponent(sessionId)}`);
  const s = detail.session ?? {};
  const turns = detail.turns ?? [];
  const outside = detail.calls_outside_turns ?? [];
  return el("article", { class: "session", "aria-labelledby": "session-title" },
    el("p", { class: "crumbs" }, el("a", { href: "/ui/sessions" }, "Sessions"), " / ", s.session_id ?? sessionId),
    el("h1", { id: "session-title" }, s.kind === "mcp" ? "MCP session " : "Session ", el("code", {}, s.session_id ?? sessionId)),
    el("p", { class: "muted" }, summaryLine(s)),
    rollup(s),
    byServer(s.by_server ?? []),
    startup(detail.startup, detail.tool_list_context ?? [], detail.tool_list_attribution),
    el("h2", { id: "turns-title" }, `Turns (${num(turns.filter((t) => t.turn_index > 0).length)})`),
    el("div", { id: "turns", "aria-labelledby": "turns-title" }, turns.map(turnBlock)),
    outside.length ? el("section", { id: "outside", "aria-labelledby": "outside-title" },
      el("h2", { id: "outside-title" }, "Calls not tied to a turn"), callTable(outside, "Calls of this session's MCP sessions that no telemetry places in a turn")) : null,
    toolCosts(detail.tool_costs ?? []));
}

function summaryLine(s) {
  const parts = [
    s.user_id ? `user ${s.user_id}` : null,
    s.started_at ? `started ${time(s.started_at)}` : null,
    s.started_at ? `lasted ${ms(span(s.started_at, s.ended_at))}` : null,
    (s.models ?? []).length ? `models ${s.models.join(", ")}` : null,
    (s.match_methods ?? []).length ? `turns matched ${s.match_methods.map((m) => MATCH[m] ?? m).join(", ")}` : null,
  ];
  return parts.filter(Boolean).join(" · ");
}

function stat(key, label, value, title = null, wide = false) {
  return el("div", { class: wide ? "stat wide" : "stat" }, el("dt", {}, label), el("dd", { dataset: { k: key }, title }, value));
}

function rollup(s) {
  return el("section", { "aria-labelledby": "rollup-title" },
    el("h2", { id: "rollup-title", class: "visually-hidden" }, "Session totals"),
    el("dl", { class: "stats", id: "rollup" },
      stat("input_tokens", "Input", tokens(s.input_tokens)),
      stat("output_tokens", "Output", tokens(s.output_tokens)),
      stat("cache_read_tokens", "Cache read", tokens(s.cache_read_tokens)),
      stat("cache_creation_tokens", "Cache creation", tokens(s.cache_creation_tokens)),
      stat("total_tokens", "Total tokens", tokens(s.total_tokens)),
      stat("cost_usd", "Cost", usd(s.cost_usd)),
      stat("requests", "Requests", num(s.requests)),
      stat("models", "Models", (s.models ?? []).join(", ") || "—", null, true),
      stat("tool_calls", "Tool calls", num(s.tool_calls)),
      stat("req_bytes_client", "MCP request bytes", bytes(s.req_bytes_client), `${num(s.req_bytes_client)} bytes`),
      stat("resp_bytes_upstream", "MCP result bytes", bytes(s.resp_bytes_upstream), `${num(s.resp_bytes_upstream)} bytes`)));
}

// The API's per-upstream totals of the session's calls (errors as the servers page counts them).
function byServer(servers) {
  const rows = servers.map((r) => el("tr", { dataset: { server: r.upstream } },
    el("th", { scope: "row" }, el("a", { href: `/ui/servers/${encodeURIComponent(r.upstream)}` }, r.upstream)),
    numCell(num(r.calls), { dataset: { k: "calls" } }), numCell(num(r.errors), { dataset: { k: "errors" } }),
    exactCell(r, "req_bytes_client"), exactCell(r, "resp_bytes_upstream"),
    numCell(tokens(r.est_tokens), { dataset: { k: "est_tokens" } })));
  return el("section", { "aria-labelledby": "servers-title" },
    el("h2", { id: "servers-title" }, "MCP bytes by server"),
    rows.length ? table("Per server, this session", ["Server", { label: "Calls", num: true }, { label: "Errors", num: true },
      { label: "Request bytes", num: true }, { label: "Result bytes", num: true }, { label: "Est. tokens", num: true }],
    rows, { class: "data", id: "by-server" }) : el("p", { class: "empty" }, "No MCP tool calls."));
}

// Bytes in KiB/MiB; the exact count is the cell's title.
function exactCell(row, key) {
  return numCell(bytes(row[key]), { dataset: { k: key }, title: `${num(row[key])} bytes` });
}

function startup(overhead, lists, attribution) {
  const body = [];
  if (overhead) {
    body.push(el("dl", { class: "stats", id: "startup" },
      stat("total_tokens", "Tokens before the first tool call", tokens(overhead.total_tokens)),
      stat("requests", "Requests", num(overhead.requests)),
      stat("cost_usd", "Cost", usd(overhead.cost_usd))));
  }
  if (lists.length) {
    body.push(table("Tool-list context: definitions a request may carry (the snapshot in effect during the session)",
      ["Server", { label: "Tools", num: true }, { label: "Definition bytes", num: true },
        { label: "Est. tokens per request", num: true }, { label: "Est. tokens this session", num: true },
        { label: "Est. cost this session", num: true }, "Used"],
    lists.map((t) => el("tr", { dataset: { server: t.upstream } },
      el("th", { scope: "row" }, t.upstream), numCell(num(t.tool_count), { dataset: { k: "tool_count" } }),
      exactCell(t, "server_bytes"), numCell(tokens(t.est_tokens), { dataset: { k: "est_tokens" } }),
      atMostCell(t, "est_session_tokens", tokens), atMostCell(t, "est_session_cost_usd", usd),
      cell(t.used_in_session ? "yes" : "no", { dataset: { k: "used_in_session" } }))), { class: "data", id: "tool-lists" }));
    if (attribution) body.push(el("p", { class: "muted", id: "tool-lists-note" }, sentence(attribution.note)));
  }
  return body.length ? el("section", { "aria-labelledby": "startup-title" },
    el("h2", { id: "startup-title" }, "Startup overhead"), body) : null;
}

// A session's tool-list figure is an upper bound ("up to": Claude Code may defer MCP tools), or unknown (null)
// when the session is not known to be connected through this Tollgate: never an invented 0.
function atMostCell(row, key, format) {
  const value = row[key];
  return numCell(value == null ? "unknown" : `up to ${format(value)}`, { dataset: { k: key } });
}

function sentence(note) {
  return note ? note.charAt(0).toUpperCase() + note.slice(1) + "." : "";
}

function usageBadge(turn) {
  const duration = turn.duration_ms ?? span(turn.started_at, turn.ended_at);
  const cacheWrite = `${tokens(turn.cache_creation_tokens)}` + (turn.cache_creation_1h_tokens
    ? ` (5m ${tokens(turn.cache_creation_5m_tokens)}, 1h ${tokens(turn.cache_creation_1h_tokens)})` : "");
  return badge(`${tokens(turn.total_tokens)} tokens · ${usd(turn.cost_usd)}`, `Usage of turn ${turn.turn_index}`, [
    { key: "input_tokens", label: "Input tokens", value: tokens(turn.input_tokens) },
    { key: "output_tokens", label: "Output tokens", value: tokens(turn.output_tokens) },
    { key: "cache_read_tokens", label: "Cache read tokens", value: tokens(turn.cache_read_tokens) },
    { key: "cache_creation_tokens", label: "Cache creation tokens", value: cacheWrite },
    { key: "total_tokens", label: "Total tokens", value: tokens(turn.total_tokens) },
    { key: "cost_usd", label: "Cost", value: usd(turn.cost_usd) },
    { key: "models", label: "Model(s)", value: (turn.models ?? []).join(", ") || "—" },
    { key: "requests", label: "Requests", value: num(turn.requests) },
    { key: "duration", label: "Duration", value: ms(duration) },
    { key: "match_method", label: "Matched", value: MATCH[turn.match_method] ?? turn.match_method ?? "—" },
  ], { class: "usage", dataset: { kind: "usage" } });
}

function prompt(turn) {
  if (turn.turn_index === 0) return el("p", { class: "prompt muted" }, "Before the first prompt");
  if (turn.prompt && turn.prompt !== "<REDACTED>") return el("p", { class: "prompt", dataset: { k: "prompt" } }, turn.prompt);
  const length = turn.prompt_length === null || turn.prompt_length === undefined ? "unknown length" : `${num(turn.prompt_length)} characters`;
  return el("p", { class: "prompt muted", dataset: { k: "prompt_length" } }, `Prompt not stored (${length})`);
}

function turnBlock(turn) {
  const calls = turn.calls ?? [];
  const title = turn.turn_index === 0 ? "Before the first prompt" : `Turn ${turn.turn_index}`;
  return el("section", { class: "turn", dataset: { turn: turn.turn_id ?? turn.turn_index }, "aria-label": title },
    el("header", { class: "turn-head" },
      el("h3", {}, title),
      el("span", { class: "muted" }, time(turn.started_at)),
      usageBadge(turn),
      el("span", { class: `tag method-${turn.match_method}` }, MATCH[turn.match_method] ?? turn.match_method)),
    prompt(turn),
    calls.length ? callTable(calls, `Tool calls in ${title.toLowerCase()}`) : el("p", { class: "muted small" }, "No MCP tool calls."));
}

function requestBadge(call) {
  return badge(bytes(call.req_bytes_client), `Request of ${call.tool}`, [
    { key: "req_bytes_client", label: "From the client", value: exactBytes(call.req_bytes_client) },
    { key: "req_bytes_upstream", label: "To the server", value: exactBytes(call.req_bytes_upstream) },
  ], { class: "bytes", dataset: { kind: "request", call: call.call_id } });
}

function resultBadge(call) {
  const rows = [
    { key: "resp_bytes_upstream", label: "From the server", value: exactBytes(call.resp_bytes_upstream) },
    { key: "resp_bytes_client", label: "To the client", value: exactBytes(call.resp_bytes_client) },
    { key: "text_bytes", label: "Text", value: exactBytes(call.text_bytes) },
    { key: "est_tokens", label: "Estimated tokens", value: tokens(call.est_tokens) },
  ];
  if (call.observed_tokens !== undefined && call.observed_tokens !== null) {
    rows.push({ key: "observed_tokens", label: "Tokens the model saw", value: tokens(call.observed_tokens) });
  }
  if (call.carried_tokens) rows.push({ key: "carried_tokens", label: "Carried in later requests", value: tokens(call.carried_tokens) });
  rows.push({ key: "duration_ms", label: "Duration", value: ms(call.duration_ms) });
  return badge(bytes(call.resp_bytes_upstream), `Result of ${call.tool}`, rows,
    { class: "bytes", dataset: { kind: "result", call: call.call_id } });
}

function status(call) {
  const s = call.status ?? "ok";
  const acted = call.budget_action && call.budget_action !== "none" && s === "ok";
  const action = acted ? ` (budget: ${call.budget_action})` : "";
  return el("span", { class: `status status-${s}`, title: call.error || null }, s + action);
}

function tie(call) {
  let text = TIES[call.tie] ?? call.tie ?? "—";
  if (call.tie === "telemetry_window" && call.tie_candidates) text += `, ${call.tie_candidates} candidate${call.tie_candidates === 1 ? "" : "s"}`;
  return el("span", { class: `tie tie-${call.tie}`, title: call.tool_use_id || null }, text);
}

function callTable(calls, caption) {
  return table(caption, ["Time", "Server", "Tool", { label: "Request", num: true }, { label: "Result", num: true }, "Status", "Tie"],
    calls.map((c) => el("tr", { dataset: { call: c.call_id } },
      cell(time(c.started_at), { class: "nowrap" }), cell(c.upstream), el("th", { scope: "row" }, c.tool),
      numCell(requestBadge(c)), numCell(resultBadge(c)), cell(status(c)), cell(tie(c)))), { class: "data calls" });
}

function toolCosts(rows) {
  if (!rows.length) return null;
  return el("section", { "aria-labelledby": "costs-title" },
    el("h2", { id: "costs-title" }, "What tool results cost in context"),
    table("Per tool result: tokens as the model saw them and carried into later requests", ["Server", "Tool",
      { label: "Gateway bytes", num: true }, { label: "Reported size", num: true }, { label: "Tokens seen", num: true },
      { label: "Later requests", num: true }, { label: "Carried tokens", num: true }, { label: "Est. carried cost", num: true }],
    rows.map((r) => el("tr", {},
      cell(r.upstream ?? r.mcp_server_name), el("th", { scope: "row" }, r.tool ?? r.mcp_tool_name),
      numCell(r.resp_bytes_upstream === null || r.resp_bytes_upstream === undefined ? "—" : bytes(r.resp_bytes_upstream)),
      numCell(bytes(r.tool_result_size_bytes)), numCell(tokens(r.observed_tokens)), numCell(num(r.later_requests)),
      numCell(tokens(r.carried_tokens)), numCell(usd(r.est_carried_cost_usd)))), { class: "data", id: "tool-costs" }));
}
