"""The per-turn join (DESIGN §6): turns, gateway calls tied to them, per-tool cost and session roll-ups.

Reads FINAL tables only, every query bounded by a session, a time range and a LIMIT. Turns use the SQL of the
`turns` view (0003_turns.sql) with filters pushed inside; ties come from `store.ties`; costs from `store.costs`.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from store import costs, ties
from store.client import Store

MAX_ROWS = 50_000  # per query: a session page never reads more than this from one table
PAD = dt.timedelta(minutes=2)  # calls and tool results around a session's telemetry span
BYTES_PER_TOKEN = 4  # as gateway/metering.py estimates

TOKEN_KINDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
               "cache_creation_5m_tokens", "cache_creation_1h_tokens")
REQUEST_COLUMNS = """session_id, prompt_id, event_time, ifNull(event_sequence, 0) AS seq, toString(model) AS model,
    toString(query_source) AS query_source, request_id, mcp_server_name, mcp_tool_name,
    ifNull(input_tokens, 0) AS input_tokens, ifNull(output_tokens, 0) AS output_tokens,
    ifNull(cache_read_tokens, 0) AS cache_read_tokens, ifNull(cache_creation_tokens, 0) AS cache_creation_tokens,
    ifNull(cache_creation_5m_tokens, 0) AS cache_creation_5m_tokens,
    ifNull(cache_creation_1h_tokens, 0) AS cache_creation_1h_tokens,
    ifNull(coalesce(cost_usd, cost_usd_micros / 1000000), 0) AS cost_usd,
    ifNull(coalesce(cost_usd_micros, toInt64(round(cost_usd * 1000000))), 0) AS cost_usd_micros"""
TOOL_EVENT_COLUMNS = """session_id, prompt_id, event_time, ifNull(event_sequence, 0) AS seq, tool_use_id, tool_name,
    mcp_server_name, mcp_tool_name"""
CALL_COLUMNS = """call_id, method, upstream, tool, exposed_name, mcp_session_id, client_name, auth_identity,
    cc_session_id, cc_prompt_id, tool_use_id, started_at, ended_at, duration_ms, toString(status) AS status, error,
    req_bytes_client, req_bytes_upstream, resp_bytes_upstream, resp_bytes_client, text_bytes, est_tokens,
    toString(budget_action) AS budget_action"""


def _view_sql() -> str:
    """The `turns` view's SELECT from the shipped migration, so the view and these queries cannot drift."""
    from importlib import resources

    text = resources.files("store").joinpath("migrations/0003_turns.sql").read_text(encoding="utf-8")
    select = text.split("CREATE VIEW IF NOT EXISTS {db}.turns{on_cluster} AS", 1)[1]
    return select.strip().rstrip(";")


TURNS_SQL = re.sub(r"FROM \{db\}\.(cc_user_prompts|cc_api_requests) FINAL",
                   r"FROM {db}.\1 FINAL WHERE {where}", _view_sql())


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _sql(store: Store, template: str, **parts: str) -> str:
    sql = template.replace("{db}", store.database)
    for name, value in parts.items():
        sql = sql.replace("{" + name + "}", value)
    return sql


# ----- turns ---------------------------------------------------------------------------------------------


async def turns(store: Store, session_id: str) -> list[dict[str, Any]]:
    """One row per turn of a Claude Code session, in order; turn 0 (if any) is what came before the first prompt."""
    sql = _sql(store, TURNS_SQL, where="session_id = {session_id:String}")
    rows = await store.query(sql + " ORDER BY turn_index, started_at LIMIT 10000", {"session_id": session_id})
    for row in rows:
        row["turn_id"] = row["prompt_id"] or f"turn-{row['turn_index']}"
    return rows


async def session_requests(store: Store, session_id: str) -> list[dict[str, Any]]:
    sql = _sql(store, f"SELECT {REQUEST_COLUMNS} FROM {{db}}.cc_api_requests FINAL "
               "WHERE session_id = {session_id:String} ORDER BY event_time, seq LIMIT " + str(MAX_ROWS))
    return await store.query(sql, {"session_id": session_id})


async def session_tool_events(store: Store, session_id: str) -> list[dict[str, Any]]:
    """The session's tool_result events (with durations and sizes), oldest first."""
    sql = _sql(store, f"SELECT {TOOL_EVENT_COLUMNS}, ifNull(duration_ms, 0) AS duration_ms, "
               "ifNull(tool_result_size_bytes, 0) AS tool_result_size_bytes, success "
               "FROM {db}.cc_tool_results FINAL WHERE session_id = {session_id:String} "
               "ORDER BY event_time, seq LIMIT " + str(MAX_ROWS))
    return await store.query(sql, {"session_id": session_id})


# ----- calls and ties ------------------------------------------------------------------------------------


async def calls_between(store: Store, since: dt.datetime, until: dt.datetime,
                        mcp_session_ids: list[str] | None = None) -> list[dict[str, Any]]:
    where = "started_at >= {since:DateTime64(6, 'UTC')} AND started_at < {until:DateTime64(6, 'UTC')}"
    params: dict[str, Any] = {"since": _utc(since), "until": _utc(until)}
    if mcp_session_ids is not None:
        where = "mcp_session_id IN {ids:Array(String)}"
        params = {"ids": mcp_session_ids}
    sql = _sql(store, f"SELECT {CALL_COLUMNS} FROM {{db}}.calls FINAL WHERE {where} AND method = 'tools/call' "
               f"ORDER BY started_at LIMIT {MAX_ROWS}")
    return await store.query(sql, params)


async def tool_events_between(store: Store, since: dt.datetime, until: dt.datetime) -> list[dict[str, Any]]:
    """Tool results and decisions carrying a tool_use_id or an MCP tool name, in a time range."""
    params = {"since": _utc(since), "until": _utc(until)}
    window = ("event_time >= {since:DateTime64(6, 'UTC')} AND event_time < {until:DateTime64(6, 'UTC')} "
              "AND (tool_use_id != '' OR mcp_tool_name != '')")
    sql = _sql(store, f"""
        SELECT {TOOL_EVENT_COLUMNS}, ifNull(duration_ms, 0) AS duration_ms, 'result' AS kind
        FROM {{db}}.cc_tool_results FINAL WHERE {window}
        UNION ALL
        SELECT {TOOL_EVENT_COLUMNS}, toInt64(0) AS duration_ms, 'decision' AS kind
        FROM {{db}}.cc_tool_decisions FINAL WHERE {window}
        LIMIT {MAX_ROWS}""")
    return await store.query(sql, params)


async def tied_calls(store: Store, since: dt.datetime, until: dt.datetime,
                     extra_mcp_sessions: list[str] | None = None) -> list[dict[str, Any]]:
    """Every tools/call in the range (plus all calls of `extra_mcp_sessions`), each with its tie."""
    calls = await calls_between(store, since, until)
    if extra_mcp_sessions:
        known = {c["call_id"] for c in calls}
        calls += [c for c in await calls_between(store, since, until, extra_mcp_sessions) if c["call_id"] not in known]
    events = await tool_events_between(store, since - PAD, until + PAD)
    found = ties.tie_calls(calls, events)
    for call in calls:
        tie = found[call["call_id"]]
        call.update(tie=tie.tie, tie_candidates=tie.candidates, turn_session_id=tie.cc_session_id,
                    prompt_id=tie.cc_prompt_id, telemetry_tool_use_id=tie.tool_use_id)
    return calls


async def mcp_sessions_of(store: Store, cc_session_id: str) -> list[str]:
    """MCP sessions the gateway bound to this Claude Code session inline (sessions.cc_session_id)."""
    sql = _sql(store, "SELECT mcp_session_id FROM {db}.sessions FINAL WHERE cc_session_id = {s:String} LIMIT 1000")
    return [r["mcp_session_id"] for r in await store.query(sql, {"s": cc_session_id})]


async def tool_lists(store: Store) -> list[dict[str, Any]]:
    """Per upstream, its latest tool-list snapshot: bytes, tool count, estimated tokens."""
    sql = _sql(store, f"""
        SELECT upstream, bytes AS server_bytes, tools AS tool_count, latest_at AS taken_at,
               intDiv(bytes + {BYTES_PER_TOKEN - 1}, {BYTES_PER_TOKEN}) AS est_tokens
        FROM (SELECT upstream, argMax(server_bytes, taken_at) AS bytes, argMax(tool_count, taken_at) AS tools,
                     max(taken_at) AS latest_at
              FROM {{db}}.tool_lists FINAL GROUP BY upstream)
        ORDER BY upstream LIMIT 1000""")
    return await store.query(sql)


# ----- one session ---------------------------------------------------------------------------------------


async def session_detail(store: Store, session_id: str) -> dict[str, Any] | None:
    """A Claude Code session (or, failing that, an MCP session id): roll-up, turns with their calls, costs."""
    requests = await session_requests(store, session_id)
    turn_rows = await turns(store, session_id)
    results = await session_tool_events(store, session_id)
    if not requests and not turn_rows and not results:
        return await mcp_session_detail(store, session_id)
    times = [r["event_time"] for r in requests] + [t["started_at"] for t in turn_rows] + \
        [r["event_time"] for r in results]
    since, until = min(times) - PAD, max(times) + PAD
    bound = await mcp_sessions_of(store, session_id)
    all_calls = await tied_calls(store, since, until, bound)
    mine = _calls_of(all_calls, session_id, bound)
    _place_calls(turn_rows, mine, results)
    lists = await tool_lists(store)
    tool_costs = costs.tool_costs(requests, results, mine)
    rollup = _rollup(session_id, turn_rows, mine)
    return {
        "session": rollup,
        "turns": turn_rows,
        "calls_outside_turns": [c for c in mine if c.get("turn_index") is None],
        "tool_costs": tool_costs,
        "startup": costs.startup_overhead(requests, results, mine),
        "tool_list_context": costs.tool_list_context(lists, requests, {c["upstream"] for c in mine}),
    }


def _calls_of(calls: list[dict[str, Any]], session_id: str, bound: list[str]) -> list[dict[str, Any]]:
    """Calls tied to the session, plus untied calls of MCP sessions bound to it (by an exact tie or inline)."""
    tied_mcp = {c["mcp_session_id"] for c in calls if c["turn_session_id"] == session_id}
    owners = tied_mcp | set(bound)
    return [c for c in calls if c["turn_session_id"] == session_id
            or (c["tie"] == ties.UNMATCHED and c["mcp_session_id"] in owners)]


def _place_calls(turn_rows: list[dict[str, Any]], calls: list[dict[str, Any]], results: list[dict[str, Any]]) -> None:
    """Attach each call to its turn: by prompt id, else (turn-order sessions) by when its tool result landed."""
    by_prompt = {t["prompt_id"]: t for t in turn_rows if t["prompt_id"]}
    result_time = {r["tool_use_id"]: r["event_time"] for r in results}
    ordered = sorted(turn_rows, key=lambda t: (t["started_at"]))
    for row in turn_rows:
        row["calls"] = []
    for call in calls:
        turn: dict[str, Any] | None = by_prompt.get(call["prompt_id"]) if call["prompt_id"] else None
        if turn is None and call["tie"] != ties.UNMATCHED and not by_prompt:
            at = result_time.get(call["telemetry_tool_use_id"], call["ended_at"])
            turn = next((t for t in reversed(ordered) if t["started_at"] <= at), None)
        call.update(turn_index=None, turn_id=None, match_method=None)
        if turn is not None:
            call.update(turn_index=turn["turn_index"], turn_id=turn["turn_id"], match_method=turn["match_method"])
            turn["calls"].append(call)
    for turn in turn_rows:
        turn["tool_calls"] = len(turn["calls"])
        turn["resp_bytes_upstream"] = sum(c["resp_bytes_upstream"] for c in turn["calls"])
        turn["est_tool_tokens"] = sum(c["est_tokens"] for c in turn["calls"])


def _rollup(session_id: str, turn_rows: list[dict[str, Any]], calls: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"session_id": session_id, "kind": "claude_code",
                           "turns": sum(1 for t in turn_rows if t["turn_index"] > 0),
                           "match_methods": sorted({t["match_method"] for t in turn_rows})}
    for key in (*TOKEN_KINDS, "total_tokens", "requests", "cost_usd_micros"):
        out[key] = sum(t[key] for t in turn_rows)
    out["cost_usd"] = sum(t["cost_usd"] for t in turn_rows)
    out["started_at"] = min((t["started_at"] for t in turn_rows), default=None)
    out["ended_at"] = max((t["ended_at"] for t in turn_rows), default=None)
    out["models"] = sorted({m for t in turn_rows for m in t["models"]})
    out["user_id"] = next((t["user_id"] for t in turn_rows if t["user_id"]), "")
    out.update(_call_totals(calls))
    out["mcp_sessions"] = sorted({c["mcp_session_id"] for c in calls})
    return out


def _call_totals(calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "tool_calls": len(calls),
        "tool_errors": sum(1 for c in calls if c["status"] != "ok"),
        "req_bytes_client": sum(c["req_bytes_client"] for c in calls),
        "resp_bytes_upstream": sum(c["resp_bytes_upstream"] for c in calls),
        "est_tool_tokens": sum(c["est_tokens"] for c in calls),
        "servers": sorted({c["upstream"] for c in calls}),
        "ties": {tie: sum(1 for c in calls if c["tie"] == tie) for tie in (ties.EXACT, ties.WINDOW, ties.UNMATCHED)},
    }


async def mcp_session_detail(store: Store, mcp_session_id: str) -> dict[str, Any] | None:
    """An MCP session no Claude Code session claims: its calls, each with its tie (possibly to another session)."""
    own = await calls_between(store, _EPOCH, _EPOCH, [mcp_session_id])
    if not own:
        return None
    since = min(c["started_at"] for c in own) - PAD
    until = max(c["ended_at"] for c in own) + PAD
    tied = await tied_calls(store, since, until, [mcp_session_id])
    calls = [c for c in tied if c["mcp_session_id"] == mcp_session_id]
    for call in calls:
        call.update(turn_index=None, turn_id=None, match_method=None)
    rollup: dict[str, Any] = {"session_id": mcp_session_id, "kind": "mcp", "turns": 0, "match_methods": [],
                              "started_at": since + PAD, "ended_at": until - PAD,
                              "user_id": next((c["auth_identity"] for c in calls if c["auth_identity"]), "")}
    rollup.update(_call_totals(calls))
    return {"session": rollup, "turns": [], "calls_outside_turns": calls, "tool_costs": [],
            "startup": None, "tool_list_context": []}


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# ----- many sessions -------------------------------------------------------------------------------------


async def list_sessions(store: Store, *, user: str | None = None, server: str | None = None,
                        since: dt.datetime | None = None, until: dt.datetime | None = None,
                        limit: int = 50, offset: int = 0) -> dict[str, Any]:
    """Claude Code sessions and unclaimed MCP sessions active in [since, until), newest first, one page."""
    until = _utc(until) if until else dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    since = _utc(since) if since else until - dt.timedelta(days=30)
    params: dict[str, Any] = {"since": since, "until": until, "user": user or "", "server": server or ""}
    rows = await store.query(_sql(store, SESSIONS_SQL), params)
    total = len(rows)
    return {"sessions": rows[offset:offset + limit], "total": total, "limit": limit, "offset": offset,
            "next_offset": offset + limit if offset + limit < total else None,
            "since": since, "until": until}


SESSIONS_SQL = f"""
WITH
    requests AS (
        SELECT session_id, min(event_time) AS first_at, max(event_time) AS last_at, count() AS requests,
               uniqExactIf(prompt_id, prompt_id != '') AS prompt_turns, sum(row_tokens) AS total_tokens,
               sum(row_usd) AS cost_usd, sum(row_micros) AS cost_usd_micros, groupUniqArray(row_model) AS models,
               any(user_id) AS user_id, any(user_email) AS user_email, any(user_account_uuid) AS account
        FROM (
            SELECT session_id, event_time, prompt_id, user_id, user_email, user_account_uuid,
                   toString(model) AS row_model,
                   ifNull(input_tokens, 0) + ifNull(output_tokens, 0) + ifNull(cache_read_tokens, 0)
                       + ifNull(cache_creation_tokens, 0) AS row_tokens,
                   ifNull(coalesce(cost_usd, cost_usd_micros / 1000000), 0) AS row_usd,
                   ifNull(coalesce(cost_usd_micros, toInt64(round(cost_usd * 1000000))), 0) AS row_micros
            FROM {{db}}.cc_api_requests FINAL
            WHERE event_time >= {{since:DateTime64(6, 'UTC')}} AND event_time < {{until:DateTime64(6, 'UTC')}}
        )
        GROUP BY session_id
    ),
    prompts AS (
        SELECT session_id, count() AS prompts, countIf(prompt_id = '') AS prompts_without_id
        FROM {{db}}.cc_user_prompts FINAL
        WHERE event_time >= {{since:DateTime64(6, 'UTC')}} AND event_time < {{until:DateTime64(6, 'UTC')}}
        GROUP BY session_id
    ),
    exact AS (
        SELECT DISTINCT tool_use_id, session_id FROM {{db}}.cc_tool_results FINAL
        WHERE tool_use_id != '' AND event_time >= {{since:DateTime64(6, 'UTC')}} - INTERVAL 2 MINUTE
          AND event_time < {{until:DateTime64(6, 'UTC')}} + INTERVAL 2 MINUTE
    ),
    calls_in AS (
        SELECT c.mcp_session_id AS mcp_session_id, c.upstream AS upstream, c.resp_bytes_upstream AS resp_bytes,
               c.started_at AS started_at, c.auth_identity AS auth_identity, e.session_id AS cc_session_id
        FROM {{db}}.calls AS c FINAL LEFT JOIN exact AS e ON c.tool_use_id = e.tool_use_id
        WHERE c.method = 'tools/call' AND c.started_at >= {{since:DateTime64(6, 'UTC')}}
          AND c.started_at < {{until:DateTime64(6, 'UTC')}}
        SETTINGS join_use_nulls = 0
    ),
    bound AS (
        SELECT mcp_session_id, anyIf(cc_session_id, cc_session_id != '') AS cc_session_id
        FROM calls_in GROUP BY mcp_session_id
    ),
    per_cc AS (
        SELECT b.cc_session_id AS session_id, count() AS tool_calls, sum(resp_bytes) AS resp_bytes_upstream,
               groupUniqArray(upstream) AS servers
        FROM calls_in AS ci INNER JOIN bound AS b ON ci.mcp_session_id = b.mcp_session_id
        WHERE b.cc_session_id != '' GROUP BY b.cc_session_id
    ),
    unclaimed AS (
        SELECT ci.mcp_session_id AS session_id, min(started_at) AS first_at, max(started_at) AS last_at,
               count() AS tool_calls, sum(resp_bytes) AS resp_bytes_upstream, groupUniqArray(upstream) AS servers,
               any(auth_identity) AS user_id
        FROM calls_in AS ci INNER JOIN bound AS b ON ci.mcp_session_id = b.mcp_session_id
        WHERE b.cc_session_id = '' GROUP BY ci.mcp_session_id
    )
SELECT * FROM (
    SELECT r.session_id AS session_id, 'claude_code' AS kind, r.first_at AS started_at, r.last_at AS last_at,
           if(p.prompts_without_id > 0 AND r.prompt_turns = 0, p.prompts, r.prompt_turns) AS turns,
           if(p.prompts_without_id > 0 AND r.prompt_turns = 0, 'turn_order', 'prompt_id') AS match_method,
           r.requests AS requests, r.total_tokens AS total_tokens, r.cost_usd AS cost_usd,
           r.cost_usd_micros AS cost_usd_micros, arrayFilter(m -> m != '', r.models) AS models,
           if(r.user_email != '', r.user_email, r.user_id) AS user, toUInt64(ifNull(pc.tool_calls, 0)) AS tool_calls,
           toUInt64(ifNull(pc.resp_bytes_upstream, 0)) AS resp_bytes_upstream, ifNull(pc.servers, []) AS servers
    FROM requests AS r
    LEFT JOIN prompts AS p ON r.session_id = p.session_id
    LEFT JOIN per_cc AS pc ON r.session_id = pc.session_id
    WHERE ({{user:String}} = '' OR {{user:String}} IN (r.user_id, r.user_email, r.account))
    UNION ALL
    SELECT session_id, 'mcp' AS kind, first_at AS started_at, last_at, toUInt64(0) AS turns, '' AS match_method,
           toUInt64(0) AS requests, toInt64(0) AS total_tokens, toFloat64(0) AS cost_usd,
           toInt64(0) AS cost_usd_micros, CAST([] AS Array(String)) AS models, user_id AS user,
           toUInt64(tool_calls) AS tool_calls, toUInt64(resp_bytes_upstream) AS resp_bytes_upstream, servers
    FROM unclaimed
    WHERE ({{user:String}} = '' OR {{user:String}} = user_id)
)
WHERE ({{server:String}} = '' OR has(servers, {{server:String}}))
ORDER BY last_at DESC, session_id
LIMIT {MAX_ROWS}
"""
