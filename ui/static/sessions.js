// Sessions: the latest active first (sessions still running stay on top), one page at a time, filtered by user,
// server and time range (a GET form, so a filtered view is a link). Columns: who, which client, last activity and
// start, how long, turns, tokens by kind, cost, MCP result bytes.

import { getJson } from "./api.js";
import { bytes, cell, el, ms, num, numCell, span, table, time, tokens, usd } from "./format.js";

const SORTED_BY = "latest activity first";

const PAGE = 50; // rows a page, unless the address asks for another size (`limit`, 1-500 as the API allows)

export async function render(_arg, query) {
  const offset = Number(query.get("offset") ?? 0);
  const size = pageSize(query);
  const params = {
    user: query.get("user"), server: query.get("server"),
    since: isoOf(query.get("since")), until: isoOf(query.get("until")), limit: size, offset,
  };
  const [page, servers] = await Promise.all([getJson("/api/sessions", params), serverNames()]);
  const rows = page.sessions ?? [];
  return el("section", { "aria-labelledby": "sessions-title" },
    el("h1", { id: "sessions-title" }, "Sessions"),
    filters(query, servers),
    el("p", { class: "muted", id: "sessions-count" },
      `${num(page.total ?? rows.length)} sessions` + (rows.length ? `, showing ${num(offset + 1)}–${num(offset + rows.length)}` : "")),
    rows.length ? sessionTable(rows) : el("p", { class: "empty" }, "No sessions in this range."),
    pager(query, offset, size, page));
}

function pageSize(query) {
  const asked = Math.trunc(Number(query.get("limit")));
  return asked >= 1 && asked <= 500 ? asked : PAGE;
}

function isoOf(local) {
  if (!local) return null;
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? null : d.toISOString();
}

async function serverNames() {
  try {
    const body = await getJson("/api/servers");
    return (body.servers ?? body.upstreams ?? []).map((s) => s.upstream ?? s.name).filter(Boolean);
  } catch {
    return [];
  }
}

function field(id, label, input) {
  return el("div", { class: "field" }, el("label", { for: id }, label), input);
}

function filters(query, servers) {
  const server = query.get("server") ?? "";
  const select = el("select", { id: "f-server", name: "server" },
    el("option", { value: "" }, "All servers"),
    servers.map((name) => el("option", { value: name, selected: name === server }, name)));
  if (server && !servers.includes(server)) select.append(el("option", { value: server, selected: true }, server));
  return el("form", { class: "filters", method: "get", action: "/ui/sessions", role: "search", "aria-label": "Filter sessions" },
    field("f-user", "User", el("input", { id: "f-user", name: "user", type: "search", value: query.get("user") ?? "", placeholder: "id or email" })),
    field("f-server", "Server", select),
    field("f-since", "From", el("input", { id: "f-since", name: "since", type: "datetime-local", value: query.get("since") ?? "" })),
    field("f-until", "To", el("input", { id: "f-until", name: "until", type: "datetime-local", value: query.get("until") ?? "" })),
    el("div", { class: "field actions" }, el("button", { type: "submit" }, "Apply"), el("a", { href: "/ui/sessions" }, "Reset")));
}

const HEADERS = [
  "Session", "User", "Client", { label: ["Last activity ", el("span", { "aria-hidden": "true" }, "↓")], sort: "descending" },
  { label: "Duration", num: true }, { label: "Turns", num: true },
  { label: "Input", num: true }, { label: "Output", num: true }, { label: "Cache read", num: true },
  { label: "Cache write", num: true }, { label: "Total tokens", num: true }, { label: "Cost", num: true },
  { label: "MCP calls", num: true }, { label: "MCP result bytes", num: true }, "Servers",
];

const KIND_KEYS = ["input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens"];

function sessionTable(rows) {
  return table(`Sessions, ${SORTED_BY}`, HEADERS, rows.map(sessionRow), { class: "data", id: "sessions" });
}

function sessionRow(row) {
  const link = el("a", { href: `/ui/sessions/${encodeURIComponent(row.session_id)}`, title: row.session_id }, shortId(row.session_id));
  const mcpBytes = Number(row.resp_bytes_upstream ?? 0);  // what the upstreams answered: the context that grows
  return el("tr", { dataset: { session: row.session_id } },
    el("th", { scope: "row" }, link, row.kind === "mcp" ? el("span", { class: "tag" }, "MCP only") : null),
    cell(row.user || row.user_id || "—", { class: "clip", title: row.user || row.user_id || null }),
    clientCell(row.client ?? {}),
    activityCell(row),
    numCell(ms(span(row.started_at, row.last_at)), { dataset: { k: "duration" } }),
    numCell([num(row.turns), row.match_method === "turn_order" ? [" ", turnOrderTag()] : null], { dataset: { k: "turns" } }),
    KIND_KEYS.map((k) => numCell(tokens(row[k]), { dataset: { k } })),
    numCell(tokens(row.total_tokens), { dataset: { k: "total_tokens" } }),
    numCell(usd(row.cost_usd), { dataset: { k: "cost_usd" } }),
    numCell(num(row.tool_calls)),
    numCell(bytes(mcpBytes), { title: `${num(mcpBytes)} bytes`, dataset: { k: "resp_bytes_upstream" } }),
    cell((row.servers ?? []).join(", ") || "—"));
}

function clientCell(client) {  // Claude Code: its telemetry's app.version and terminal.type; MCP: its clientInfo
  if (!client.name) return cell("—", { dataset: { k: "client" } });
  return cell([el("span", {}, `${client.name} ${client.version ?? ""}`.trim()),
    client.terminal_type ? el("span", { class: "sub muted" }, `terminal: ${client.terminal_type}`) : null],
  { class: "nowrap", dataset: { k: "client" } });
}

function activityCell(row) {  // what the list is sorted by, then when the session started (its time only, same day)
  const last = time(row.last_at);
  const start = time(row.started_at);
  return cell([el("time", { datetime: row.last_at, dataset: { k: "last_at" } }, last),
    el("span", { class: "sub muted" }, "started ", el("time", { datetime: row.started_at, dataset: { k: "started_at" } },
      start.slice(0, 10) === last.slice(0, 10) ? start.slice(11) : start))], { class: "nowrap" });
}

function turnOrderTag() {  // the client sends no prompt.id: the count follows the order of its prompts
  return el("span", { class: "tag method-turn_order", title: "Turns matched by the order of the prompts (the client sends no prompt id)" }, "by turn order");
}

export function shortId(id) {
  return id && id.length > 13 ? `${id.slice(0, 8)}…` : id;
}

function pager(query, offset, size, page) {
  const at = (value) => {
    const next = new URLSearchParams(query);
    next.set("offset", String(value));
    return `/ui/sessions?${next}`;
  };
  const links = [];
  if (offset > 0) links.push(el("a", { href: at(Math.max(0, offset - size)), rel: "prev" }, "← Newer"));
  if (page.next_offset !== null && page.next_offset !== undefined) {
    links.push(el("a", { href: at(page.next_offset), rel: "next" }, "Older →"));
  }
  return el("nav", { class: "pager", "aria-label": "Pages" }, links);
}
