"""The per-turn join (DESIGN §6): turns, gateway calls tied to them, per-tool cost and session roll-ups.

Reads FINAL tables only, every query bounded by a session, a time range and a LIMIT. Turns are the `turns` view
(0003_turns.sql) computed here over one session's rows (a test keeps the two equal): in ClickHouse most of a small
lookup's time is planning, and the view's window-function SQL cost more to plan than all the rows it reads. Ties
come from `store.ties`; costs from `store.costs`. docs/store.md ("Query speed") has the measurements.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from store import costs, queries_servers, statuses, sums, ties
from store.client import Store

MAX_ROWS = 50_000  # per query: a session page never reads more than this from one table
PAD = dt.timedelta(minutes=2)  # calls and tool results around a session's telemetry span

TOKEN_KINDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
               "cache_creation_5m_tokens", "cache_creation_1h_tokens")
REQUEST_COLUMNS = f"""session_id, prompt_id, event_time, ifNull(event_sequence, 0) AS seq, toString(model) AS model,
    toString(query_source) AS query_source, request_id, mcp_server_name, mcp_tool_name,
    ifNull(input_tokens, 0) AS input_tokens, ifNull(output_tokens, 0) AS output_tokens,
    ifNull(cache_read_tokens, 0) AS cache_read_tokens, ifNull(cache_creation_tokens, 0) AS cache_creation_tokens,
    ifNull(cache_creation_5m_tokens, 0) AS cache_creation_5m_tokens,
    ifNull(cache_creation_1h_tokens, 0) AS cache_creation_1h_tokens,
    {sums.ROW_USD} AS cost_usd,
    {sums.ROW_MICROS} AS cost_usd_micros"""
TOOL_EVENT_COLUMNS = """session_id, prompt_id, event_time, ifNull(event_sequence, 0) AS seq, tool_use_id, tool_name,
    mcp_server_name, mcp_tool_name"""
CALL_COLUMNS = """call_id, method, upstream, tool, exposed_name, mcp_session_id, client_name, auth_identity,
    cc_session_id, cc_prompt_id, tool_use_id, started_at, ended_at, duration_ms, toString(status) AS status, error,
    req_bytes_client, req_bytes_upstream, resp_bytes_upstream, resp_bytes_client, text_bytes, est_tokens,
    toString(budget_action) AS budget_action"""


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
    rows = await session_rows(store, session_id)
    return turns_of(session_id, rows["prompts"], rows["requests"])


async def session_rows(store: Store, session_id: str) -> dict[str, list[dict[str, Any]]]:
    """The session's user prompts, API requests, tool results and tool decisions, each oldest first, read in one
    query by primary key. Columns come raw (NULL-filling and cost fallbacks happen here, as the view does them in
    SQL): a query's planning cost in ClickHouse grows with its expressions and is most of what a lookup this small
    costs. The decisions only serve `_own_calls` (a decision lends its ids to an exact tie)."""
    raw = await store.query(_sql(store, SESSION_ROWS_SQL), {"session_id": session_id})
    out: dict[str, list[dict[str, Any]]] = {"prompts": [], "requests": [], "results": [], "decisions": []}
    for row in sorted(raw, key=_event_order):
        kind = row.pop("kind")
        row["seq"] = row.pop("event_sequence") or 0
        row["session_id"] = session_id
        if kind == "request":
            out["requests"].append(_request(row))
        elif kind == "result":
            out["results"].append(_result(row))
        elif kind == "decision":
            out["decisions"].append(_decision(row))
        else:
            out["prompts"].append(row)
    return out


def _event_order(row: dict[str, Any]) -> tuple[Any, int, int]:
    return row["event_time"], row["event_sequence"] or 0, KIND_ORDER[row["kind"]]


KIND_ORDER = {"prompt": 0, "request": 1, "result": 2, "decision": 3}
_NO_ROWS = "CAST(NULL AS Nullable(Int64))"
SESSION_ROWS_SQL = f"""
SELECT 'prompt' AS kind, prompt_id, event_time, event_sequence, user_id, prompt_length, prompt,
    '' AS model, '' AS query_source, '' AS request_id, '' AS mcp_server_name, '' AS mcp_tool_name,
    {_NO_ROWS} AS input_tokens, {_NO_ROWS} AS output_tokens, {_NO_ROWS} AS cache_read_tokens,
    {_NO_ROWS} AS cache_creation_tokens, {_NO_ROWS} AS cache_creation_5m_tokens,
    {_NO_ROWS} AS cache_creation_1h_tokens, CAST(NULL AS Nullable(Float64)) AS cost_usd,
    {_NO_ROWS} AS cost_usd_micros, '' AS tool_use_id, '' AS tool_name, {_NO_ROWS} AS duration_ms,
    {_NO_ROWS} AS tool_result_size_bytes, CAST(NULL AS Nullable(Bool)) AS success
FROM {{db}}.cc_user_prompts FINAL WHERE session_id = {{session_id:String}}
UNION ALL
SELECT 'request', prompt_id, event_time, event_sequence, user_id, NULL, '', model, query_source, request_id,
    mcp_server_name, mcp_tool_name, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,
    cache_creation_5m_tokens, cache_creation_1h_tokens, cost_usd, cost_usd_micros, '', '', NULL, NULL, NULL
FROM {{db}}.cc_api_requests FINAL WHERE session_id = {{session_id:String}}
UNION ALL
SELECT 'result', prompt_id, event_time, event_sequence, user_id, NULL, '', '', '', '', mcp_server_name,
    mcp_tool_name, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, tool_use_id, tool_name, duration_ms,
    tool_result_size_bytes, success
FROM {{db}}.cc_tool_results FINAL WHERE session_id = {{session_id:String}}
UNION ALL
SELECT 'decision', prompt_id, event_time, event_sequence, user_id, NULL, '', '', '', '', mcp_server_name,
    mcp_tool_name, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, tool_use_id, tool_name, NULL, NULL, NULL
FROM {{db}}.cc_tool_decisions FINAL WHERE session_id = {{session_id:String}}
LIMIT {4 * MAX_ROWS}"""


def _request(row: dict[str, Any]) -> dict[str, Any]:
    """An api_request row as REQUEST_COLUMNS shapes it (ifNull to 0, cost from micros and back)."""
    usd, micros = sums.usd(row["cost_usd"]), row["cost_usd_micros"]
    out = {k: row[k] for k in ("session_id", "prompt_id", "event_time", "seq", "model", "query_source", "request_id",
                               "mcp_server_name", "mcp_tool_name")}
    for kind in TOKEN_KINDS:
        out[kind] = row[kind] or 0
    out["cost_usd"] = usd if usd is not None else (micros / 1000000 if micros is not None else 0)
    out["cost_usd_micros"] = micros if micros is not None else (sums.micros(usd) if usd is not None else 0)
    out["user_id"] = row["user_id"]
    return out


def _result(row: dict[str, Any]) -> dict[str, Any]:
    """A tool_result row with NULL sizes as 0."""
    return {"session_id": row["session_id"], "prompt_id": row["prompt_id"], "event_time": row["event_time"],
            "seq": row["seq"], "tool_use_id": row["tool_use_id"], "tool_name": row["tool_name"],
            "mcp_server_name": row["mcp_server_name"], "mcp_tool_name": row["mcp_tool_name"],
            "duration_ms": row["duration_ms"] or 0, "tool_result_size_bytes": row["tool_result_size_bytes"] or 0,
            "success": row["success"]}


def _decision(row: dict[str, Any]) -> dict[str, Any]:
    """A tool_decision row as tool_events_between shapes it."""
    return {"session_id": row["session_id"], "prompt_id": row["prompt_id"], "event_time": row["event_time"],
            "seq": row["seq"], "tool_use_id": row["tool_use_id"], "tool_name": row["tool_name"],
            "mcp_server_name": row["mcp_server_name"], "mcp_tool_name": row["mcp_tool_name"], "duration_ms": 0,
            "kind": "decision"}


def turns_of(session_id: str, prompts: list[dict[str, Any]], requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `turns` view (0003_turns.sql) over one session's rows: a running count of prompts in (event_time,
    event.sequence) order numbers the turns; rows group by prompt id when any row has one, else by that count."""
    merged = sorted([(0, p) for p in prompts] + [(1, r) for r in requests],
                    key=lambda item: (item[1]["event_time"], item[1]["seq"], item[0]))
    has_ids = any(row["prompt_id"] != "" for _, row in merged)
    by_key: dict[str, dict[str, Any]] = {}
    index = 0
    for is_request, row in merged:
        index += 1 - is_request
        key = row["prompt_id"] if has_ids else str(index)
        turn = by_key.get(key)
        if turn is None:
            turn = by_key[key] = {
                "session_id": session_id, "prompt_id": key if has_ids else "",
                "match_method": "prompt_id" if has_ids else "turn_order", "turn_index": index,
                "prompt_length": None, "prompt": None, "started_at": row["event_time"],
                "ended_at": row["event_time"], "requests": 0, **dict.fromkeys(TOKEN_KINDS, 0), "total_tokens": 0,
                "cost_usd": 0.0, "cost_usd_micros": 0, "models": [], "query_sources": [],
                "user_id": row["user_id"]}
        turn["ended_at"] = max(turn["ended_at"], row["event_time"])
        if not is_request:
            if turn["prompt"] is None:
                turn["prompt"] = row["prompt"]
            if turn["prompt_length"] is None:
                turn["prompt_length"] = row["prompt_length"]
            continue
        turn["requests"] += 1
        for kind in TOKEN_KINDS:
            turn[kind] += row[kind]
        turn["total_tokens"] += (row["input_tokens"] + row["output_tokens"] + row["cache_read_tokens"]
                                 + row["cache_creation_tokens"])
        turn["cost_usd"] += row["cost_usd"]
        turn["cost_usd_micros"] += row["cost_usd_micros"]
        for name, value in (("models", row["model"]), ("query_sources", row["query_source"])):
            if value and value not in turn[name]:
                turn[name].append(value)
    out = sorted(by_key.values(), key=lambda t: (t["turn_index"], t["started_at"]))
    for turn in out:
        turn["prompt"] = turn["prompt"] or ""
        turn["turn_id"] = turn["prompt_id"] or f"turn-{turn['turn_index']}"
    return out


# ----- calls and ties ------------------------------------------------------------------------------------


async def calls_between(store: Store, since: dt.datetime, until: dt.datetime,
                        mcp_session_ids: list[str] | None = None, *, in_range: bool = False) -> list[dict[str, Any]]:
    """tools/call rows started in [since, until); or all calls of `mcp_session_ids` (in the range with `in_range`)."""
    where = "started_at >= {since:DateTime64(6, 'UTC')} AND started_at < {until:DateTime64(6, 'UTC')}"
    params: dict[str, Any] = {"since": _utc(since), "until": _utc(until)}
    if mcp_session_ids is not None:
        where = "mcp_session_id IN {ids:Array(String)}" + (" AND " + where if in_range else "")
        params = {"ids": mcp_session_ids, **(params if in_range else {})}
    sql = _sql(store, f"SELECT {CALL_COLUMNS} FROM {{db}}.calls FINAL WHERE {where} AND method = 'tools/call' "
               f"ORDER BY started_at LIMIT {MAX_ROWS}")
    return await store.query(sql, params)


async def tool_events_between(store: Store, since: dt.datetime, until: dt.datetime) -> list[dict[str, Any]]:
    """Tool results and decisions carrying a tool_use_id or an MCP tool name, in a time range."""
    params = {"since": _utc(since), "until": _utc(until)}
    # PREWHERE on event_time (a sort-key column, so every copy of a row passes or fails it together) filters
    # before FINAL merges: measured 13 -> 8 ms for a 1-hour window among 375k tool results.
    window = ("PREWHERE event_time >= {since:DateTime64(6, 'UTC')} AND event_time < {until:DateTime64(6, 'UTC')} "
              "WHERE tool_use_id != '' OR mcp_tool_name != ''")
    sql = _sql(store, f"""
        SELECT {TOOL_EVENT_COLUMNS}, ifNull(duration_ms, 0) AS duration_ms, 'result' AS kind
        FROM {{db}}.cc_tool_results FINAL {window}
        UNION ALL
        SELECT {TOOL_EVENT_COLUMNS}, toInt64(0) AS duration_ms, 'decision' AS kind
        FROM {{db}}.cc_tool_decisions FINAL {window}
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
        _set_tie(call, found[call["call_id"]])
    return calls


# ----- one session ---------------------------------------------------------------------------------------


async def session_detail(store: Store, session_id: str,
                         gateway_names: Collection[str] = ()) -> dict[str, Any] | None:
    """A Claude Code session (or, failing that, an MCP session id): roll-up, turns with their calls, costs.
    `gateway_names`: the names Claude Code knows this gateway's MCP server by (telemetry naming one of them shows
    the session was connected, so its tool lists are charged to it; see `costs.connected_by`).

    Usually two queries: the session's telemetry by primary key, and the calls of the MCP sessions bound to it or
    carrying its tool_use_ids (`_own_calls`); the tool lists come from a cache. When those calls show that some
    tie by the telemetry window may concern the session, two more: the tool events in its time window and the
    calls that can tie to them (`_session_calls`)."""
    rows = await session_rows(store, session_id)
    requests, results = rows["requests"], rows["results"]
    turn_rows = turns_of(session_id, rows["prompts"], requests)
    if not requests and not turn_rows and not results:
        return await mcp_session_detail(store, session_id)
    times = [r["event_time"] for r in requests] + [t["started_at"] for t in turn_rows] + \
        [r["event_time"] for r in results]
    since, until = min(times) - PAD, max(times) + PAD
    own = await _own_calls(store, session_id, rows, since, until)
    all_calls = _only_exact(own, rows["results"])
    if all_calls is None:
        all_calls = await _session_calls(store, session_id, since, until, own)
    bound = own.bound
    mine = _calls_of(all_calls, session_id, bound)
    _place_calls(turn_rows, mine, results)
    tool_costs = costs.tool_costs(requests, results, mine)
    rollup = _rollup(session_id, turn_rows, mine)
    connected = costs.connected_by(mine, bound, requests + results + rows["decisions"], gateway_names)
    last = max((r["event_time"] for r in requests), default=max(times))
    lists = costs.tool_lists_in_effect(await queries_servers.tool_list_snapshots(store), min(times), last)
    return {
        "session": rollup,
        "turns": turn_rows,
        "calls_outside_turns": [c for c in mine if c.get("turn_index") is None],
        "tool_costs": tool_costs,
        "startup": costs.startup_overhead(requests, results, mine),
        "tool_list_context": costs.tool_list_context(lists, requests, {c["upstream"] for c in mine},
                                                     connected is not None),
        "tool_list_attribution": costs.tool_list_attribution(connected, results),
    }


@dataclass
class OwnCalls:
    """What `_own_calls` read: every call of the MCP sessions bound to the session (`bound`: those with calls) and
    the calls in [since, until) of the MCP sessions with a call there carrying one of the session's tool_use_ids;
    the session's own tool events (its results, and its decisions in the window) and their tool_use_ids."""

    calls: list[dict[str, Any]]
    bound: list[str]
    events: list[dict[str, Any]]
    known: set[str]
    since: dt.datetime
    until: dt.datetime


async def _own_calls(store: Store, session_id: str, rows: dict[str, list[dict[str, Any]]],
                     since: dt.datetime, until: dt.datetime) -> OwnCalls:
    """The calls `_session_calls` needs of the session's own MCP sessions, in one query by primary key."""
    low, high = since - PAD, until + PAD  # the range of tool_events_between in _session_calls
    events = [{**r, "kind": "result"} for r in rows["results"]]
    events += [d for d in rows["decisions"] if low <= d["event_time"] < high]
    known = {e["tool_use_id"] for e in events if e["tool_use_id"]}
    read = await store.query(_sql(store, OWN_CALLS_SQL),
                             {"s": session_id, "ids": sorted(known), "since": _utc(since), "until": _utc(until)})
    inside = [r for r in read if since <= r["started_at"] < until]
    tied = {r["mcp_session_id"] for r in inside if r["tool_use_id"] in known}
    calls = [r for r in read if r["bound"]] + [r for r in inside if not r["bound"] and r["mcp_session_id"] in tied]
    bound = sorted({r["mcp_session_id"] for r in read if r["bound"]})
    for row in calls:
        del row["bound"]
    return OwnCalls(calls, bound, events, known, since, until)


def _only_exact(own: OwnCalls, results: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """`own.calls` tied, when no tie by the telemetry window can concern the session; else None.

    `ties.tie_calls` settles exact ties first, and window ties only compete for results no exact tie claimed. So
    when (1) every MCP tool result of the session is claimed by one of these calls with its tool_use_id, (2) none
    of them carries a tool_use_id the session's events lack (it would tie exactly elsewhere, or by the window),
    and (3) every bound MCP session has an exact tie to the session, then the session has no open result, every
    MCP session of these calls is bound to it by an exact tie, and their calls without an id tie to nothing, as
    `_session_calls` would tie them over the whole window. The window's other calls belong to other MCP sessions
    and tie to other sessions or to nothing: they are not this session's either way. (This assumes tool_use_ids
    are unique across sessions, as Claude Code's are; with a clash, tying over the window picks whichever event
    it saw last.)"""
    claimed = {c["tool_use_id"] for c in own.calls if c["tool_use_id"]}
    if (claimed - own.known  # (2)
            or any(r["mcp_tool_name"] and r["tool_use_id"] not in claimed for r in results)  # (1)
            or set(own.bound) - {c["mcp_session_id"] for c in own.calls if c["tool_use_id"]}):  # (3)
        return None
    calls = _range_first([dict(c) for c in own.calls], own.since, own.until)
    found = ties.tie_calls(calls, own.events)
    for call in calls:
        _set_tie(call, found[call["call_id"]])
    return calls


async def _session_calls(store: Store, session_id: str, since: dt.datetime, until: dt.datetime,
                         own: OwnCalls) -> list[dict[str, Any]]:
    """The calls of `tied_calls(since, until, own.bound)` that can concern this session, tied. Of the calls in
    [since, until) only those that can tie to a tool event of the window are read: one with a tool_use_id, or whose
    tool and end time fit a tool result (the SQL filter is wider than ties._fits). Any other call ties to nothing
    and changes no other tie (every tie pass skips a call that fits no result), so it matters only as an untied
    call of an MCP session tied to this one: `own` holds those of the bound sessions and of the sessions tied by
    id, and those of sessions tied by the window are read afterwards."""
    events = await tool_events_between(store, since - PAD, until + PAD)
    rows = await store.query(_candidates_sql(store, CANDIDATE_CALLS_SQL), _candidate_params(events, since, until))
    full = {r["call_id"]: r for r in rows}
    full.update((c["call_id"], dict(c)) for c in own.calls)
    calls = _range_first(list(full.values()), since, until)
    found = ties.tie_calls(calls, events)
    tied_mcp = {c["mcp_session_id"] for c in calls if found[c["call_id"]].cc_session_id == session_id}
    missing = sorted(tied_mcp - set(own.bound))
    if missing:
        known = {c["call_id"] for c in calls}
        more = [c for c in await calls_between(store, since, until, missing, in_range=True)
                if c["call_id"] not in known]
        for call in more:
            found[call["call_id"]] = ties.Tie(call["call_id"], ties.UNMATCHED)
        calls = _range_first(calls + more, since, until)
    for call in calls:
        call.pop("bound", None)
        _set_tie(call, found[call["call_id"]])
    return calls


def _candidates_sql(store: Store, template: str) -> str:
    return _sql(store, template, lag=str(ties.MAX_LAG_S + 1), skew=str(ties.MAX_SKEW_S + 1))


def _candidate_params(events: list[dict[str, Any]], since: dt.datetime, until: dt.datetime) -> dict[str, Any]:
    """The window and, per tool result of MCP tools, its tool name and end time (what ties._fits compares)."""
    windowable = [e for e in events if e["kind"] == "result" and e["mcp_tool_name"]]
    return {"since": _utc(since), "until": _utc(until), "names": [e["mcp_tool_name"] for e in windowable],
            "ends": [ties.seconds(e["event_time"]) for e in windowable]}


def _range_first(calls: list[dict[str, Any]], since: dt.datetime, until: dt.datetime) -> list[dict[str, Any]]:
    """Calls in [since, until) by start, then the others (of bound sessions) by start: tied_calls' order (call_id
    breaks ties, so the exact and the window path order equal starts alike)."""
    ordered = sorted(calls, key=lambda c: (c["started_at"], c["call_id"]))
    inside = [c for c in ordered if since <= c["started_at"] < until]
    return inside + [c for c in ordered if not since <= c["started_at"] < until]


def _set_tie(call: dict[str, Any], tie: ties.Tie) -> None:
    call.update(tie=tie.tie, tie_candidates=tie.candidates, turn_session_id=tie.cc_session_id,
                prompt_id=tie.cc_prompt_id, telemetry_tool_use_id=tie.tool_use_id)


_BOUND = "SELECT mcp_session_id FROM {db}.sessions FINAL WHERE cc_session_id = {s:String}"
# Calls in [since, until) that can tie to a tool event of the window (see _session_calls).
CANDIDATE_CALLS_SQL = f"""
SELECT {CALL_COLUMNS}, toUInt8(0) AS bound FROM {{db}}.calls FINAL
PREWHERE started_at >= {{since:DateTime64(6, 'UTC')}} AND started_at < {{until:DateTime64(6, 'UTC')}}
WHERE method = 'tools/call'
  AND (tool_use_id != ''
       OR ((has({{names:Array(String)}}, exposed_name) OR has({{names:Array(String)}}, tool))
           AND arrayExists((n, e) -> (n = exposed_name OR n = tool)
                                     AND e >= toFloat64(ended_at) - {{skew}} AND e <= toFloat64(ended_at) + {{lag}},
                           {{names:Array(String)}}, {{ends:Array(Float64)}})))
LIMIT {MAX_ROWS}"""

# _own_calls: the calls of the MCP sessions bound to the session or with a call in the range carrying one of its
# tool_use_ids, by primary key (the subquery by idx_started_at and idx_tool_use_id; without FINAL, as a copy of a
# call never moves to another MCP session). Measured 14.8 -> 12.0 ms of CPU against a UNION ALL of the bound
# sessions' calls and the calls carrying the ids (an OR of those two conditions lets no index skip anything).
_TIED = ("SELECT mcp_session_id FROM {db}.calls "
         "PREWHERE started_at >= {since:DateTime64(6, 'UTC')} AND started_at < {until:DateTime64(6, 'UTC')} "
         "WHERE tool_use_id IN {ids:Array(String)} AND method = 'tools/call'")
OWN_CALLS_SQL = f"""
SELECT {CALL_COLUMNS}, mcp_session_id IN ({_BOUND}) AS bound FROM {{db}}.calls FINAL
WHERE (mcp_session_id IN ({_TIED}) OR mcp_session_id IN ({_BOUND})) AND method = 'tools/call'
LIMIT {MAX_ROWS}"""


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
        "tool_errors": sum(1 for c in calls if c["status"] in statuses.ERRORS),
        "req_bytes_client": sum(c["req_bytes_client"] for c in calls),
        "resp_bytes_upstream": sum(c["resp_bytes_upstream"] for c in calls),
        "est_tool_tokens": sum(c["est_tokens"] for c in calls),
        "servers": sorted({c["upstream"] for c in calls} - {""}),  # '': refused before routing (unknown tool)
        "by_server": _by_server(calls),
        "ties": {tie: sum(1 for c in calls if c["tie"] == tie) for tie in (ties.EXACT, ties.WINDOW, ties.UNMATCHED)},
    }


def _by_server(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per upstream of the session's calls: calls, errors (as the server reports count them), bytes, est. tokens;
    the largest result bytes first. The session page's "MCP bytes by server" table shows these rows."""
    rows: dict[str, dict[str, Any]] = {}
    for call in calls:
        if not call["upstream"]:  # refused before routing (an unknown tool): no server's call
            continue
        row = rows.setdefault(call["upstream"], {"upstream": call["upstream"], "calls": 0, "errors": 0,
                                                 "req_bytes_client": 0, "resp_bytes_upstream": 0, "est_tokens": 0})
        row["calls"] += 1
        row["errors"] += call["status"] in statuses.ERRORS
        for key in ("req_bytes_client", "resp_bytes_upstream", "est_tokens"):
            row[key] += call[key]
    return sorted(rows.values(), key=lambda r: (-r["resp_bytes_upstream"], r["upstream"]))


async def mcp_session_detail(store: Store, mcp_session_id: str) -> dict[str, Any] | None:
    """An MCP session no Claude Code session claims: its calls, each with its tie (possibly to another session)."""
    own = await calls_between(store, _EPOCH, _EPOCH, [mcp_session_id])
    if not own:
        return None
    since = min(c["started_at"] for c in own) - PAD
    until = max(c["ended_at"] for c in own) + PAD
    # tied_calls(since, until, [mcp_session_id]) restricted, as in _session_calls, to the calls that can tie.
    events = await tool_events_between(store, since - PAD, until + PAD)
    rows = await store.query(_candidates_sql(store, CANDIDATE_CALLS_SQL), _candidate_params(events, since, until))
    full = {r["call_id"]: r for r in rows}
    full.update((c["call_id"], c) for c in own)
    for row in full.values():
        row.pop("bound", None)
    tied = _range_first(list(full.values()), since, until)
    found = ties.tie_calls(tied, events)
    calls = [c for c in tied if c["mcp_session_id"] == mcp_session_id]
    for call in calls:
        _set_tie(call, found[call["call_id"]])
    for call in calls:  # no telemetry here: what the model saw of a result is unknown
        call.update(turn_index=None, turn_id=None, match_method=None, observed_tokens=None, carried_tokens=None)
    rollup: dict[str, Any] = {"session_id": mcp_session_id, "kind": "mcp", "turns": 0, "match_methods": [],
                              "started_at": since + PAD, "ended_at": until - PAD,
                              "user_id": next((c["auth_identity"] for c in calls if c["auth_identity"]), "")}
    rollup.update(_call_totals(calls))
    return {"session": rollup, "turns": [], "calls_outside_turns": calls, "tool_costs": [],
            "startup": None, "tool_list_context": [], "tool_list_attribution": None}


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# ----- many sessions -------------------------------------------------------------------------------------


async def list_sessions(store: Store, *, user: str | None = None, server: str | None = None,
                        since: dt.datetime | None = None, until: dt.datetime | None = None,
                        limit: int = 50, offset: int = 0) -> dict[str, Any]:
    """Claude Code sessions and unclaimed MCP sessions active in [since, until), the latest active first, one page.
    Each names its client: a Claude Code session by its telemetry's app.version and terminal.type (every listed
    one has telemetry; not every one has MCP calls), an MCP session by the clientInfo of its `initialize`.

    An MCP session belongs to the Claude Code session its calls tie to, as on the session's page: by tool_use_id
    in the SQL, else by the telemetry window. The page, its total and the count of MCP sessions no exact tie claims
    come from one query (window counts before the filters and LIMIT/OFFSET); only when some are left unclaimed are
    `window_bindings` looked for, and only when it finds any is the page read again with them."""
    until = _utc(until) if until else dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    since = _utc(since) if since else until - dt.timedelta(days=30)
    params: dict[str, Any] = {"since": since, "until": until, "user": user or "", "server": server or "",
                              "limit": limit, "offset": offset, "bound_mcp": [], "bound_cc": []}
    rows, total, unclaimed = await _page(store, params)
    if unclaimed:
        bindings = await window_bindings(store, since, until)
        if bindings:
            params.update(bound_mcp=list(bindings), bound_cc=list(bindings.values()))
            rows, total, _ = await _page(store, params)
    return {"sessions": rows, "total": total, "limit": limit, "offset": offset,
            "next_offset": offset + limit if offset + limit < total else None,
            "since": since, "until": until}


async def _page(store: Store, params: dict[str, Any]) -> tuple[list[dict[str, Any]], int, int]:
    """(the page's rows, how many rows pass the filters, how many MCP sessions are unclaimed before them); a page
    with no row to carry the counts costs a second query."""
    rows = await store.query(_sql(store, SESSIONS_SQL, select=SESSIONS_PAGE), params)
    counts = rows[0] if rows else (await store.query(_sql(store, SESSIONS_SQL, select=SESSIONS_COUNT), params))[0]
    total, unclaimed = int(counts["total"]), int(counts["unclaimed"])
    for row in rows:
        del row["total"], row["unclaimed"]
        row["client"] = {"name": row.pop("client_name"), "version": row.pop("client_version"),
                         "terminal_type": row.pop("terminal_type")}
    return rows, total, unclaimed


async def window_bindings(store: Store, since: dt.datetime, until: dt.datetime) -> dict[str, str]:
    """MCP session -> Claude Code session, for the MCP sessions with calls in [since, until) and no exact tie
    whose calls tie by the telemetry window (`ties.tie_calls`, as a session's page ties them). Reads only MCP tool
    results of tools the gateway served that no call's tool_use_id claims (usually none: a client that sends ids
    leaves none), and then the calls of unclaimed MCP sessions that can fit one of them."""
    params = {"since": since, "until": until}
    results = await store.query(_sql(store, OPEN_RESULTS_SQL), params)
    if not results:
        return {}
    keys = sorted({(r["mcp_tool_name"], int(ties.seconds(r["event_time"]) // FIT_BUCKET_S)) for r in results})
    calls = await store.query(_candidates_sql(store, OPEN_CALLS_SQL),
                              {**params, "names": [k[0] for k in keys], "buckets": [k[1] for k in keys]})
    found = ties.tie_calls(calls, results)
    return {c["mcp_session_id"]: found[c["call_id"]].cc_session_id for c in calls
            if found[c["call_id"]].tie == ties.WINDOW}


# A result fits a call only if it ended in [call end - MAX_SKEW_S, call end + MAX_LAG_S] (ties._fits). The calls query
# widens that span by a second each side (as CANDIDATE_CALLS_SQL does); buckets wider than it mean the span touches
# only the buckets of its two ends, so a call whose tool and end bucket match no open result's is dropped in SQL:
# it would tie to nothing and change no other tie.
FIT_BUCKET_S = math.ceil(ties.MAX_SKEW_S + ties.MAX_LAG_S) + 2
_PADDED = ("event_time >= {since:DateTime64(6, 'UTC')} - INTERVAL 2 MINUTE "
           "AND event_time < {until:DateTime64(6, 'UTC')} + INTERVAL 2 MINUTE")
_CALLS_IN = "started_at >= {since:DateTime64(6, 'UTC')} AND started_at < {until:DateTime64(6, 'UTC')}"
OPEN_RESULTS_SQL = f"""
WITH called AS (SELECT tool, exposed_name, tool_use_id FROM {{db}}.calls FINAL PREWHERE {_CALLS_IN}
                WHERE method = 'tools/call')
SELECT session_id, prompt_id, tool_use_id, mcp_tool_name, event_time, ifNull(duration_ms, 0) AS duration_ms
FROM {{db}}.cc_tool_results FINAL PREWHERE {_PADDED}
WHERE mcp_tool_name != ''
  AND (mcp_tool_name IN (SELECT exposed_name FROM called) OR mcp_tool_name IN (SELECT tool FROM called))
  AND tool_use_id NOT IN (SELECT tool_use_id FROM called WHERE tool_use_id != '')
LIMIT {MAX_ROWS}"""
OPEN_CALLS_SQL = f"""
WITH arrayZip({{names:Array(String)}}, {{buckets:Array(Int64)}}) AS fits,
    intDiv(toFloat64(ended_at) - {{skew}}, {FIT_BUCKET_S}) AS low,
    intDiv(toFloat64(ended_at) + {{lag}}, {FIT_BUCKET_S}) AS high
SELECT call_id, mcp_session_id, tool, exposed_name, tool_use_id, started_at, ended_at
FROM {{db}}.calls FINAL PREWHERE {_CALLS_IN}
WHERE method = 'tools/call'
  AND ((tool, low) IN fits OR (tool, high) IN fits OR (exposed_name, low) IN fits OR (exposed_name, high) IN fits)
  AND mcp_session_id NOT IN (
    SELECT mcp_session_id FROM {{db}}.calls FINAL PREWHERE {_CALLS_IN}
    WHERE method = 'tools/call' AND tool_use_id IN (
        SELECT tool_use_id FROM {{db}}.cc_tool_results FINAL PREWHERE {_PADDED} WHERE tool_use_id != ''))
LIMIT {MAX_ROWS}"""
SESSIONS_PAGE = """SELECT * EXCEPT (keep, kept) FROM (
    SELECT *, countIf(kept) OVER () AS total, countIf(kind = 'mcp') OVER () AS unclaimed FROM listed)
WHERE kept ORDER BY last_at DESC, session_id
LIMIT {limit:UInt32} OFFSET {offset:UInt32}"""
SESSIONS_COUNT = "SELECT countIf(kept) AS total, countIf(kind = 'mcp') AS unclaimed FROM listed"
_KIND_SUMS = ", ".join(f"{sums.int_sum(f'ifNull(row_{k}, 0)')} AS {k}" for k in TOKEN_KINDS[:4])
SESSIONS_SQL = f"""
WITH
    requests AS (
        SELECT session_id, min(event_time) AS first_at, max(event_time) AS last_at, count() AS requests,
               uniqExactIf(prompt_id, prompt_id != '') AS prompt_turns, {sums.int_sum('row_tokens')} AS total_tokens,
               {_KIND_SUMS},
               sum(row_usd) AS cost_usd, {sums.int_sum('row_micros')} AS cost_usd_micros,
               groupUniqArray(row_model) AS models,
               any(user_id) AS user_id, any(user_email) AS user_email, any(user_account_uuid) AS account,
               argMaxIf(app_version, event_time, app_version != '') AS app_version,
               argMaxIf(terminal_type, event_time, terminal_type != '') AS terminal_type
        FROM (
            SELECT session_id, event_time, prompt_id, user_id, user_email, user_account_uuid, app_version,
                   terminal_type,
                   toString(model) AS row_model, input_tokens AS row_input_tokens,
                   output_tokens AS row_output_tokens, cache_read_tokens AS row_cache_read_tokens,
                   cache_creation_tokens AS row_cache_creation_tokens,
                   {sums.int_add(*(f"ifNull({k}, 0)" for k in TOKEN_KINDS[:4]))} AS row_tokens,
                   {sums.ROW_USD} AS row_usd, {sums.ROW_MICROS} AS row_micros
            FROM {{db}}.cc_api_requests FINAL
            WHERE event_time >= {{since:DateTime64(6, 'UTC')}} AND event_time < {{until:DateTime64(6, 'UTC')}}
              AND session_id != ''  -- no session to open: `report usage` shows such requests
        )
        GROUP BY session_id
    ),
    prompts AS (
        SELECT session_id, count() AS prompts, countIf(prompt_id = '') AS prompts_without_id,
               min(event_time) AS first_at, max(event_time) AS last_at
        FROM {{db}}.cc_user_prompts FINAL
        WHERE event_time >= {{since:DateTime64(6, 'UTC')}} AND event_time < {{until:DateTime64(6, 'UTC')}}
          AND session_id != ''
        GROUP BY session_id
    ),
    exact AS (
        SELECT DISTINCT tool_use_id, session_id FROM {{db}}.cc_tool_results FINAL
        WHERE tool_use_id != '' AND event_time >= {{since:DateTime64(6, 'UTC')}} - INTERVAL 2 MINUTE
          AND event_time < {{until:DateTime64(6, 'UTC')}} + INTERVAL 2 MINUTE
    ),
    calls_in AS (
        SELECT c.mcp_session_id AS mcp_session_id, c.upstream AS upstream, c.resp_bytes_upstream AS resp_bytes,
               c.started_at AS started_at, c.ended_at AS ended_at, c.auth_identity AS auth_identity,
               c.client_name AS client_name, c.client_version AS client_version, e.session_id AS cc_session_id
        FROM {{db}}.calls AS c FINAL LEFT JOIN exact AS e ON c.tool_use_id = e.tool_use_id
        WHERE c.method = 'tools/call' AND c.started_at >= {{since:DateTime64(6, 'UTC')}}
          AND c.started_at < {{until:DateTime64(6, 'UTC')}}
        SETTINGS join_use_nulls = 0
    ),
    bound AS (
        SELECT mcp_session_id,
               if(exact != '', exact, transform(mcp_session_id, {{bound_mcp:Array(String)}},
                                                {{bound_cc:Array(String)}}, '')) AS cc_session_id
        FROM (SELECT mcp_session_id, anyIf(cc_session_id, cc_session_id != '') AS exact
              FROM calls_in GROUP BY mcp_session_id)
    ),
    per_cc AS (
        SELECT b.cc_session_id AS session_id, count() AS tool_calls, sum(resp_bytes) AS resp_bytes_upstream,
               groupUniqArrayIf(upstream, upstream != '') AS servers
        FROM calls_in AS ci INNER JOIN bound AS b ON ci.mcp_session_id = b.mcp_session_id
        WHERE b.cc_session_id != '' GROUP BY b.cc_session_id
    ),
    unclaimed AS (
        SELECT ci.mcp_session_id AS session_id, min(started_at) AS first_at, max(ended_at) AS last_at,
               count() AS tool_calls, sum(resp_bytes) AS resp_bytes_upstream,
               groupUniqArrayIf(upstream, upstream != '') AS servers,
               any(auth_identity) AS user_id, any(client_name) AS client_name, any(client_version) AS client_version
        FROM calls_in AS ci INNER JOIN bound AS b ON ci.mcp_session_id = b.mcp_session_id
        WHERE b.cc_session_id = '' GROUP BY ci.mcp_session_id
    ),
    listed AS (SELECT *, keep AND ({{server:String}} = '' OR has(servers, {{server:String}})) AS kept FROM (
    SELECT r.session_id AS session_id, 'claude_code' AS kind,
           if(p.prompts > 0, least(r.first_at, p.first_at), r.first_at) AS started_at,
           if(p.prompts > 0, greatest(r.last_at, p.last_at), r.last_at) AS last_at,
           if(p.prompts_without_id > 0 AND r.prompt_turns = 0, p.prompts, r.prompt_turns) AS turns,
           if(p.prompts_without_id > 0 AND r.prompt_turns = 0, 'turn_order', 'prompt_id') AS match_method,
           r.requests AS requests, r.input_tokens AS input_tokens, r.output_tokens AS output_tokens,
           r.cache_read_tokens AS cache_read_tokens, r.cache_creation_tokens AS cache_creation_tokens,
           r.total_tokens AS total_tokens, r.cost_usd AS cost_usd, r.cost_usd_micros AS cost_usd_micros,
           arrayFilter(m -> m != '', r.models) AS models,
           if(r.user_email != '', r.user_email, r.user_id) AS user, 'claude-code' AS client_name,
           toString(r.app_version) AS client_version, toString(r.terminal_type) AS terminal_type,
           toUInt64(ifNull(pc.tool_calls, 0)) AS tool_calls,
           toUInt64(ifNull(pc.resp_bytes_upstream, 0)) AS resp_bytes_upstream, ifNull(pc.servers, []) AS servers,
           ({{user:String}} = '' OR {{user:String}} IN (r.user_id, r.user_email, r.account)) AS keep
    FROM requests AS r
    LEFT JOIN prompts AS p ON r.session_id = p.session_id
    LEFT JOIN per_cc AS pc ON r.session_id = pc.session_id
    UNION ALL
    SELECT session_id, 'mcp' AS kind, first_at AS started_at, last_at, toUInt64(0) AS turns, '' AS match_method,
           toUInt64(0) AS requests, toInt64(0) AS input_tokens, toInt64(0) AS output_tokens,
           toInt64(0) AS cache_read_tokens, toInt64(0) AS cache_creation_tokens, toInt64(0) AS total_tokens,
           toFloat64(0) AS cost_usd, toInt64(0) AS cost_usd_micros, CAST([] AS Array(String)) AS models,
           user_id AS user, toString(client_name) AS client_name, client_version, '' AS terminal_type,
           toUInt64(tool_calls) AS tool_calls,
           toUInt64(resp_bytes_upstream) AS resp_bytes_upstream, servers,
           ({{user:String}} = '' OR {{user:String}} = user_id) AS keep
    FROM unclaimed))
{{select}}
"""
