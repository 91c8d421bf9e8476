"""Per-upstream reports over `calls` and `tool_lists` FINAL: volumes, errors, result sizes, context cost.

Every query is bounded by a time range and a LIMIT. Used by `/api/servers*`, `/api/calls` and `tollgate report
servers|calls`; callers format, this module only queries.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from store import statuses
from store.client import Store

BYTES_PER_TOKEN = 4  # as gateway/metering.py estimates
ERRORS = f"countIf({statuses.errors_sql()})"  # what counts as an error: store/statuses.py
DEFAULT_DAYS = 30

SERVERS_SQL = """
SELECT
    upstream,
    count() AS calls,
    {errors} AS errors,
    uniqExact(tool) AS tools_used,
    uniqExact(mcp_session_id) AS sessions,
    sum(req_bytes_client) AS req_bytes,
    sum(resp_bytes_upstream) AS resp_bytes,
    toUInt64(quantileExact(0.5)(resp_bytes_upstream)) AS resp_bytes_p50,
    toUInt64(quantileExact(0.95)(resp_bytes_upstream)) AS resp_bytes_p95,
    max(resp_bytes_upstream) AS resp_bytes_max,
    argMax(tool, (resp_bytes_upstream, started_at)) AS resp_bytes_max_tool,
    toUInt64(quantileExact(0.5)(req_bytes_client)) AS req_bytes_p50,
    toUInt64(quantileExact(0.95)(req_bytes_client)) AS req_bytes_p95,
    max(req_bytes_client) AS req_bytes_max,
    sum(est_tokens) AS est_tokens,
    quantileExact(0.95)(duration_ms) AS duration_ms_p95,
    min(started_at) AS first_at,
    max(started_at) AS last_at
FROM {db}.calls FINAL
WHERE {where}
GROUP BY upstream
ORDER BY upstream
LIMIT 1000
"""

TOOLS_SQL = """
SELECT tool, count() AS calls, {errors} AS errors, sum(resp_bytes_upstream) AS resp_bytes,
       toUInt64(quantileExact(0.95)(resp_bytes_upstream)) AS resp_bytes_p95, max(resp_bytes_upstream) AS resp_bytes_max,
       sum(est_tokens) AS est_tokens
FROM {db}.calls FINAL WHERE {where} GROUP BY tool ORDER BY resp_bytes DESC LIMIT 1000
"""

LARGEST_SQL = """
SELECT call_id, upstream, tool, mcp_session_id, tool_use_id, started_at, toString(status) AS status,
       resp_bytes_upstream, text_bytes, est_tokens
FROM {db}.calls FINAL WHERE {where} ORDER BY resp_bytes_upstream DESC LIMIT {limit:UInt32}
"""

CALLS_SQL = """
SELECT call_id, method, upstream, tool, exposed_name, mcp_session_id, cc_session_id, tool_use_id, started_at,
       ended_at, duration_ms, toString(status) AS status, error, req_bytes_client, req_bytes_upstream,
       resp_bytes_upstream, resp_bytes_client, text_bytes, est_tokens, toString(budget_action) AS budget_action
FROM {db}.calls FINAL WHERE {where} ORDER BY started_at DESC LIMIT {limit:UInt32}
"""

CONTEXT_SQL = """
SELECT upstream, snapshot_id, bytes AS server_bytes, tools AS tool_count, latest_at AS taken_at,
       intDiv(bytes + {per_token_minus_1}, {per_token}) AS est_tokens
FROM (SELECT upstream, argMax(snapshot_id, taken_at) AS snapshot_id, argMax(server_bytes, taken_at) AS bytes,
             argMax(tool_count, taken_at) AS tools, max(taken_at) AS latest_at
      FROM {db}.tool_lists FINAL WHERE {where} GROUP BY upstream)
ORDER BY upstream LIMIT 1000
"""

# One snapshot's tool definitions (PREWHERE on sort-key columns: every copy of a row shares them).
DEFINITIONS_SQL = """
SELECT tool, exposed_name, def_bytes, intDiv(def_bytes + {per_token_minus_1}, {per_token}) AS est_tokens
FROM {db}.tool_lists FINAL
PREWHERE upstream = {upstream:String} AND snapshot_id = {snapshot_id:String}
ORDER BY def_bytes DESC, tool LIMIT 10000
"""


def _range(since: dt.datetime | None, until: dt.datetime | None) -> tuple[str, dict[str, Any]]:
    end = _utc(until) if until else dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    start = _utc(since) if since else end - dt.timedelta(days=DEFAULT_DAYS)
    where = "started_at >= {since:DateTime64(6, 'UTC')} AND started_at < {until:DateTime64(6, 'UTC')}"
    return where, {"since": start, "until": end}


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _sql(store: Store, template: str, where: str = "1") -> str:
    return (template.replace("{db}", store.database).replace("{where}", where).replace("{errors}", ERRORS)
            .replace("{per_token_minus_1}", str(BYTES_PER_TOKEN - 1)).replace("{per_token}", str(BYTES_PER_TOKEN)))


async def tool_list_context(store: Store, upstream: str | None = None) -> list[dict[str, Any]]:
    """Latest tool-list snapshot per upstream: definition bytes, tool count, estimated tokens per request."""
    where, params = ("upstream = {upstream:String}", {"upstream": upstream}) if upstream else ("1", {})
    return await store.query(_sql(store, CONTEXT_SQL, where), params)


async def tool_definitions(store: Store, upstream: str, snapshot_id: str) -> list[dict[str, Any]]:
    """The tools of one tool-list snapshot, largest first: definition bytes and estimated tokens each."""
    return await store.query(_sql(store, DEFINITIONS_SQL), {"upstream": upstream, "snapshot_id": snapshot_id})


async def servers(store: Store, since: dt.datetime | None = None,
                  until: dt.datetime | None = None) -> list[dict[str, Any]]:
    """One row per upstream with calls in the range (plus upstreams only seen in tool lists)."""
    where, params = _range(since, until)
    rows = await store.query(_sql(store, SERVERS_SQL, where + " AND method = 'tools/call'"), params)
    context = {c["upstream"]: c for c in await tool_list_context(store)}
    seen = {r["upstream"] for r in rows}
    rows += [{"upstream": name, "calls": 0, "errors": 0} for name in sorted(context) if name not in seen]
    for row in rows:
        ctx = context.get(row["upstream"], {})
        row["tool_list_bytes"] = ctx.get("server_bytes", 0)
        row["tool_list_tools"] = ctx.get("tool_count", 0)
        row["tool_list_est_tokens"] = ctx.get("est_tokens", 0)
    return sorted(rows, key=lambda r: r["upstream"])


async def server_detail(store: Store, upstream: str, since: dt.datetime | None = None,
                        until: dt.datetime | None = None, largest: int = 10) -> dict[str, Any] | None:
    """One upstream: totals, per tool, largest results, tool-list context (with its latest snapshot's tools);
    None when never seen."""
    where, params = _range(since, until)
    where += " AND upstream = {upstream:String} AND method = 'tools/call'"
    params |= {"upstream": upstream, "limit": largest}
    totals = await store.query(_sql(store, SERVERS_SQL, where), params)
    context = await tool_list_context(store, upstream)
    if not totals and not context:
        return None
    if context:
        context[0]["tools"] = await tool_definitions(store, upstream, context[0]["snapshot_id"])
    return {
        "server": totals[0] if totals else {"upstream": upstream, "calls": 0, "errors": 0},
        "tools": await store.query(_sql(store, TOOLS_SQL, where), params),
        "largest_results": await store.query(_sql(store, LARGEST_SQL, where), params),
        "tool_list_context": context[0] if context else None,
    }


async def calls(store: Store, *, server: str | None = None, session: str | None = None,
                since: dt.datetime | None = None, until: dt.datetime | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
    """Recent calls, newest first; `session` matches the MCP or the bound Claude Code session id."""
    where, params = _range(since, until)
    if server:
        where += " AND upstream = {server:String}"
        params["server"] = server
    if session:
        where += " AND (mcp_session_id = {session:String} OR cc_session_id = {session:String})"
        params["session"] = session
    params["limit"] = limit
    return await store.query(_sql(store, CALLS_SQL, where), params)
