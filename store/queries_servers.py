"""Per-upstream reports over `calls` and `tool_lists` FINAL: volumes, errors, result sizes, context cost.

Every kind of call counts (tools/call, resources/read, prompts/get: store/kinds.py), a resource or prompt named
by its label ("resource notes://all") wherever a tool name is shown.

Volumes come from the per-day rollup where it is fresh (store/rollup.py) and from `calls FINAL` for the rest of
the range. Every query is bounded by a time range and a LIMIT. Used by `/api/servers*`, `/api/calls` and
`tollgate report servers|calls`; callers format, this module only queries.
"""

from __future__ import annotations

import datetime as dt
import weakref
from typing import Any

from store import rollup
from store.client import Store
from store.kinds import KIND_SQL, LABEL_SQL

BYTES_PER_TOKEN = 4  # as gateway/metering.py estimates
DEFAULT_DAYS = 30

# Over store/rollup.py's row source ({source}): the rollup's fresh days plus the calls of the rest of the range.
SERVERS_SQL = """
SELECT
    upstream,
    sum(calls) AS calls,
    sum(errors) AS errors,
    uniqExactMerge(tools) AS tools_used,
    uniqExactMerge(sessions) AS sessions,
    sum(req_bytes) AS req_bytes,
    sum(resp_bytes) AS resp_bytes,
    toUInt64(quantilesTDigestMerge(0.5, 0.95)(resp_q)[1]) AS resp_bytes_p50,
    toUInt64(quantilesTDigestMerge(0.5, 0.95)(resp_q)[2]) AS resp_bytes_p95,
    max(resp_bytes_max) AS resp_bytes_max,
    toUInt64(quantilesTDigestMerge(0.5, 0.95)(req_q)[1]) AS req_bytes_p50,
    toUInt64(quantilesTDigestMerge(0.5, 0.95)(req_q)[2]) AS req_bytes_p95,
    max(req_bytes_max) AS req_bytes_max,
    sum(est_tokens) AS est_tokens,
    quantileTDigestMerge(0.95)(duration_q) AS duration_ms_p95,
    min(first_at) AS first_at,
    max(last_at) AS last_at
FROM ({source})
WHERE upstream != ''  -- a call refused before routing (unknown tool) is no server's; /api/calls lists it
GROUP BY upstream
ORDER BY upstream
LIMIT 1000
"""

# The tool of each upstream's largest result (per-tool rows: the per-upstream ones have no tool).
MAX_TOOL_SQL = """
SELECT upstream, argMax(tool, (resp_bytes_max, last_at)) AS resp_bytes_max_tool FROM ({source})
GROUP BY upstream LIMIT 1000
"""

TOOLS_SQL = """
SELECT tool, sum(calls) AS calls, sum(errors) AS errors, sum(resp_bytes) AS resp_bytes,
       toUInt64(quantilesTDigestMerge(0.5, 0.95)(resp_q)[2]) AS resp_bytes_p95, max(resp_bytes_max) AS resp_bytes_max,
       sum(est_tokens) AS est_tokens
FROM ({source}) GROUP BY tool ORDER BY resp_bytes DESC LIMIT 1000
"""

# Result bytes over time: per day over the rollup's row source when the upstream's calls span more than
# FINE_UP_TO, else over `calls FINAL` in the finest of FINE_BUCKETS that draws at most MAX_POINTS points.
DAILY_SQL = """
SELECT toDateTime(day, 'UTC') AS at, sum(calls) AS calls, sum(resp_bytes) AS resp_bytes,
       max(resp_bytes_max) AS resp_bytes_max
FROM ({source}) GROUP BY day ORDER BY day LIMIT 1000
"""

FINE_SQL = """
SELECT toDateTime(toStartOfInterval(started_at, toIntervalSecond({bucket:UInt32})), 'UTC') AS at, count() AS calls,
       sum(resp_bytes_upstream) AS resp_bytes, max(resp_bytes_upstream) AS resp_bytes_max
FROM {db}.calls FINAL WHERE {where} GROUP BY at ORDER BY at LIMIT 1000
"""
DAY = 86400
FINE_BUCKETS = (1, 5, 15, 60, 300, 900, 3600)  # seconds
FINE_UP_TO = dt.timedelta(days=2)  # as many calls as `calls FINAL` over two days costs, whatever the page's range
MAX_POINTS = 120

# Result sizes in power-of-two buckets: bucket b counts sizes in [2^b, 2^(b+1)), bucket 0 sizes 0 and 1.
SIZES_SQL = "SELECT sumMap(sizes) AS sizes FROM ({source})"

# Not FINAL (it would merge every partition of the range, whatever the upstream): the largest `fetch` copies, then
# one per call. A re-delivered call's copies are the same row, so the largest copies are the largest calls.
LARGEST_SQL = """
SELECT call_id, upstream, tool, kind, mcp_session_id, cc_session_id, tool_use_id, started_at, status,
       req_bytes_client, resp_bytes_upstream, text_bytes, est_tokens
FROM (SELECT call_id, upstream, {label} AS tool, {kind} AS kind, mcp_session_id, cc_session_id, tool_use_id,
             started_at, toString(status) AS status, req_bytes_client, resp_bytes_upstream, text_bytes, est_tokens,
             inserted_at
      FROM {db}.calls WHERE {where} ORDER BY resp_bytes_upstream DESC LIMIT {fetch:UInt32})
ORDER BY resp_bytes_upstream DESC, inserted_at DESC LIMIT 1 BY call_id LIMIT {limit:UInt32}
"""

CALLS_SQL = """
SELECT call_id, method, {kind} AS kind, upstream, tool, exposed_name, mcp_session_id, cc_session_id, tool_use_id,
       started_at, ended_at, duration_ms, toString(status) AS status, error, req_bytes_client, req_bytes_upstream,
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

SNAPSHOTS_SQL = """
SELECT upstream, snapshot_id, taken_at, bytes AS server_bytes, tools AS tool_count,
       intDiv(bytes + {per_token_minus_1}, {per_token}) AS est_tokens
FROM (SELECT upstream, snapshot_id, taken_at, any(server_bytes) AS bytes, any(tool_count) AS tools
      FROM {db}.tool_lists FINAL GROUP BY upstream, snapshot_id, taken_at)
ORDER BY upstream, taken_at, snapshot_id LIMIT 100000
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
    return (template.replace("{db}", store.database).replace("{where}", where).replace("{label}", LABEL_SQL)
            .replace("{kind}", KIND_SQL)
            .replace("{per_token_minus_1}", str(BYTES_PER_TOKEN - 1)).replace("{per_token}", str(BYTES_PER_TOKEN)))


async def tool_list_context(store: Store, upstream: str | None = None) -> list[dict[str, Any]]:
    """Latest tool-list snapshot per upstream: definition bytes, tool count, estimated tokens per request.

    Every upstream's comes from the kept `tool_list_snapshots`; one upstream's (its server page) is read."""
    if upstream is None:
        latest: dict[str, dict[str, Any]] = {}
        for row in await tool_list_snapshots(store):  # oldest first per upstream
            latest[row["upstream"]] = row
        return [latest[name] for name in sorted(latest)]
    return await store.query(_sql(store, CONTEXT_SQL, "upstream = {upstream:String}"), {"upstream": upstream})


async def tool_list_snapshots(store: Store) -> list[dict[str, Any]]:
    """Every tool-list snapshot, one row each (upstream, snapshot_id, taken_at, server_bytes, tool_count,
    est_tokens), by upstream and time: what `costs.tool_lists_in_effect` picks a session's snapshot from.

    Kept per embedded store (each session page reads them) until this process next writes `tool_lists` or runs a
    command (`Store.written`): it scans every snapshot with FINAL, about 3 ms of each page, for rows that change
    when an upstream's tool list does. A server store is read every time."""
    version = store.written("tool_lists")  # read before the query: a write during it shows
    kept = _SNAPSHOTS_KEPT.get(store)
    if version is not None and kept is not None and kept[0] == version:
        return [dict(row) for row in kept[1]]
    rows = await store.query(_sql(store, SNAPSHOTS_SQL))
    if version is not None:
        _SNAPSHOTS_KEPT[store] = (version, [dict(row) for row in rows])
    return rows


_SNAPSHOTS_KEPT: weakref.WeakKeyDictionary[Store, tuple[int, list[dict[str, Any]]]] = weakref.WeakKeyDictionary()


async def tool_definitions(store: Store, upstream: str, snapshot_id: str) -> list[dict[str, Any]]:
    """The tools of one tool-list snapshot, largest first: definition bytes and estimated tokens each."""
    return await store.query(_sql(store, DEFINITIONS_SQL), {"upstream": upstream, "snapshot_id": snapshot_id})


async def _source(store: Store, template: str, where: str, params: dict[str, Any], rollup_where: str = "1", *,
                  per_tool: int = 0) -> list[dict[str, Any]]:
    """Run a report over the range's row source, per upstream or per tool (the rollup refreshed first, its fresh
    days found)."""
    await rollup.refresh(store)
    fresh = await rollup.fresh_days(store, params["since"], params["until"])
    gaps_sql, gaps = rollup.gaps(params["since"], params["until"], fresh)
    rows = rollup.source(store.database, per_tool, where, gaps_sql, rollup_where)
    sql = _sql(store, template.replace("{source}", rows))
    return await store.query(sql, {**params, **gaps, "fresh": fresh})


async def servers(store: Store, since: dt.datetime | None = None,
                  until: dt.datetime | None = None) -> list[dict[str, Any]]:
    """One row per upstream with calls in the range (plus upstreams only seen in tool lists)."""
    where, params = _range(since, until)
    rows = await _source(store, SERVERS_SQL, where, params)
    await _add_max_tools(store, rows, where, params)
    context = {c["upstream"]: c for c in await tool_list_context(store)}
    seen = {r["upstream"] for r in rows}
    rows += [{"upstream": name, "calls": 0, "errors": 0} for name in sorted(context) if name not in seen]
    for row in rows:
        _add_tool_list(row, context.get(row["upstream"]))
    return sorted(rows, key=lambda r: r["upstream"])


def _add_tool_list(row: dict[str, Any], context: dict[str, Any] | None) -> dict[str, Any]:
    """The size of the upstream's latest tool list on its totals row (0 when it never listed its tools)."""
    row["tool_list_bytes"] = context["server_bytes"] if context else 0
    row["tool_list_tools"] = context["tool_count"] if context else 0
    row["tool_list_est_tokens"] = context["est_tokens"] if context else 0
    return row


async def server_detail(store: Store, upstream: str, since: dt.datetime | None = None,
                        until: dt.datetime | None = None, largest: int = 10) -> dict[str, Any] | None:
    """One upstream: totals, per tool, largest results, result bytes over time, result sizes, tool-list context
    (with its latest snapshot's tools); None when never seen."""
    where, params = _range(since, until)
    where += " AND upstream = {upstream:String}"
    params |= {"upstream": upstream, "limit": largest}
    mine = "upstream = {upstream:String}"
    totals = await _source(store, SERVERS_SQL, where, params, mine)
    await _add_max_tools(store, totals, where, params, mine)
    context = await tool_list_context(store, upstream)
    if not totals and not context:
        return None
    if context:
        context[0]["tools"] = await tool_definitions(store, upstream, context[0]["snapshot_id"])
    return {
        "server": _add_tool_list(totals[0] if totals else {"upstream": upstream, "calls": 0, "errors": 0},
                                 context[0] if context else None),
        "tools": await _source(store, TOOLS_SQL, where, params, mine, per_tool=1),
        "largest_results": await _largest(store, where, params, totals[0]["calls"] if totals else 0),
        "timeline": await _timeline(store, where, params, mine, totals[0] if totals else None),
        "sizes": _buckets((await _source(store, SIZES_SQL, where, params, mine))[0]["sizes"]),
        "tool_list_context": context[0] if context else None,
    }


async def _add_max_tools(store: Store, rows: list[dict[str, Any]], where: str, params: dict[str, Any],
                         rollup_where: str = "1") -> None:
    """Name on each upstream's row the tool whose result was its largest (`resp_bytes_max_tool`)."""
    if not rows:
        return
    tools = await _source(store, MAX_TOOL_SQL, where, params, rollup_where, per_tool=1)
    by_upstream = {row["upstream"]: row["resp_bytes_max_tool"] for row in tools}
    for row in rows:
        row["resp_bytes_max_tool"] = by_upstream.get(row["upstream"], "")


async def _largest(store: Store, where: str, params: dict[str, Any], calls: int) -> list[dict[str, Any]]:
    """The `limit` largest results, fetching more copies while re-delivered ones crowd out distinct calls."""
    sql = _sql(store, LARGEST_SQL, where)
    fetch = 2 * params["limit"]
    rows = await store.query(sql, {**params, "fetch": fetch})
    while len(rows) < min(params["limit"], calls):  # ends: once fetch covers every copy, all calls are there
        fetch *= 4
        rows = await store.query(sql, {**params, "fetch": fetch})
    return rows


async def _timeline(store: Store, where: str, params: dict[str, Any], mine: str,
                    totals: dict[str, Any] | None) -> dict[str, Any]:
    """Calls and result bytes per bucket, in a bucket that fits the span of the calls (not of the range: a day's
    calls in a 30-day range are a series of minutes, not one dot), every bucket from the first to the last
    call listed (empty ones with zeros) so the chart's line does not bridge a gap."""
    if not totals or not totals.get("calls"):
        return {"bucket_seconds": DAY, "points": []}
    first, last = totals["first_at"], totals["last_at"]
    if last - first > FINE_UP_TO:
        return {"bucket_seconds": DAY, "points": _filled(await _source(store, DAILY_SQL, where, params, mine), DAY)}
    span = (last - first).total_seconds()
    bucket = next((b for b in FINE_BUCKETS if span / b < MAX_POINTS), FINE_BUCKETS[-1])
    narrowed = where + (" AND started_at >= {first:DateTime64(6, 'UTC')}"
                        " AND started_at <= {last:DateTime64(6, 'UTC')}")
    points = await store.query(_sql(store, FINE_SQL, narrowed), {**params, "first": first, "last": last,
                                                                  "bucket": bucket})
    return {"bucket_seconds": bucket, "points": _filled(points, bucket)}


def _filled(points: list[dict[str, Any]], bucket: int) -> list[dict[str, Any]]:
    """`points` (sorted by `at`, on bucket boundaries) with a zero point for each empty bucket between them."""
    if not points:
        return []
    step, at, out = dt.timedelta(seconds=bucket), points[0]["at"], []
    for point in points:
        while at < point["at"]:
            out.append({"at": at, "calls": 0, "resp_bytes": 0, "resp_bytes_max": 0})
            at += step
        out.append(point)
        at = point["at"] + step
    return out


def _buckets(sizes: tuple[list[int], list[int]] | list[Any]) -> list[dict[str, int]]:
    """Power-of-two buckets from the lowest to the highest one used, empty ones included."""
    counts = dict(zip(sizes[0], sizes[1], strict=True)) if sizes and sizes[0] else {}
    if not counts:
        return []
    return [{"lo": 0 if b == 0 else 2 ** b, "hi": 2 ** (b + 1), "count": counts.get(b, 0)}
            for b in range(min(counts), max(counts) + 1)]


async def calls(store: Store, *, server: str | None = None, session: str | None = None,
                call_ids: list[str] | None = None, since: dt.datetime | None = None,
                until: dt.datetime | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Recent calls as stored, newest first; `session` matches the MCP or the stored Claude Code session id,
    `call_ids` these calls only. store/queries_calls.py adds the ties of the session page."""
    where, params = _range(since, until)
    if call_ids is not None:
        where += " AND call_id IN {call_ids:Array(String)}"
        params["call_ids"] = call_ids
    if server:
        where += " AND upstream = {server:String}"
        params["server"] = server
    if session:
        where += " AND (mcp_session_id = {session:String} OR cc_session_id = {session:String})"
        params["session"] = session
    params["limit"] = limit
    return await store.query(_sql(store, CALLS_SQL, where), params)
