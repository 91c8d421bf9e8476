"""The recent-calls list (`/api/calls`, `tollgate report calls`) with each call's Claude Code session as the session
page ties it (store/ties.py): a call is selected by `session` and shows that session whether the gateway knew it
when it stored the call (its `cc_session_id`) or it is tied later, by tool_use_id or by the telemetry window.

Over `queries_servers.calls` (the rows) and `queries_turns` (the ties); callers format.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from store import queries_servers, queries_turns
from store.client import Store

# The Claude Code session of each tool_use_id among the listed calls' (exact ties; decisions lend their ids too).
EXACT_SQL = """
SELECT tool_use_id, any(session_id) AS session_id FROM (
    SELECT tool_use_id, session_id FROM {db}.cc_tool_results FINAL WHERE tool_use_id IN {ids:Array(String)}
    UNION ALL
    SELECT tool_use_id, session_id FROM {db}.cc_tool_decisions FINAL WHERE tool_use_id IN {ids:Array(String)})
GROUP BY tool_use_id LIMIT 100000
"""
# The Claude Code session an MCP session is bound to by an exact tie of any of its calls (as the sessions list).
_SIBLINGS = ("SELECT mcp_session_id, tool_use_id FROM {db}.calls FINAL WHERE mcp_session_id IN {mcp:Array(String)} "
             "AND tool_use_id != '' AND method = 'tools/call'")
BOUND_SQL = f"""
SELECT c.mcp_session_id AS mcp_session_id, any(r.session_id) AS session_id
FROM ({_SIBLINGS}) AS c
INNER JOIN (SELECT tool_use_id, session_id FROM {{db}}.cc_tool_results FINAL  -- only the ids the calls carry
            WHERE tool_use_id IN (SELECT tool_use_id FROM ({_SIBLINGS}))) AS r ON c.tool_use_id = r.tool_use_id
GROUP BY c.mcp_session_id LIMIT 100000
"""


async def calls(store: Store, *, server: str | None = None, session: str | None = None,
                since: dt.datetime | None = None, until: dt.datetime | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
    """Recent calls, newest first, each with its Claude Code session (`cc_session_id`) as the session page ties
    it. `session`: a Claude Code session selects the calls its session page lists; else an MCP session id (or a
    stored Claude Code session id with no telemetry) selects by the stored ids."""
    if session:
        detail = await queries_turns.session_detail(store, session)
        if detail is not None and detail["session"]["kind"] == "claude_code":
            return await _of_session(store, session, detail, server, since, until, limit)
    rows = await queries_servers.calls(store, server=server, session=session, since=since, until=until, limit=limit)
    await _name_sessions(store, rows)
    return rows


async def _of_session(store: Store, session: str, detail: dict[str, Any], server: str | None,
                      since: dt.datetime | None, until: dt.datetime | None, limit: int) -> list[dict[str, Any]]:
    """The calls of a Claude Code session's page, in the range, as list rows (read by id: the same columns)."""
    ids = [c["call_id"] for t in detail["turns"] for c in t["calls"]]
    ids += [c["call_id"] for c in detail["calls_outside_turns"]]
    rows = await queries_servers.calls(store, server=server, call_ids=ids, since=since, until=until, limit=limit)
    for row in rows:
        row["cc_session_id"] = session
    return rows


async def _name_sessions(store: Store, rows: list[dict[str, Any]]) -> None:
    """Set each row's `cc_session_id` as the session page ties it: the session of its own tool_use_id (an exact
    tie), else the one its MCP session is bound to (by another call's exact tie, else by the telemetry window),
    else what the gateway stored."""
    if not rows:
        return
    db = store.database
    ids = sorted({r["tool_use_id"] for r in rows if r["tool_use_id"]})
    exact = {r["tool_use_id"]: r["session_id"] for r in
             (await store.query(EXACT_SQL.replace("{db}", db), {"ids": ids}) if ids else [])}
    mcp = sorted({r["mcp_session_id"] for r in rows})
    bound = {r["mcp_session_id"]: r["session_id"] for r in
             await store.query(BOUND_SQL.replace("{db}", db), {"mcp": mcp})}
    unbound = [r for r in rows if r["mcp_session_id"] not in bound]
    if unbound:
        first, last = min(r["started_at"] for r in unbound), max(r["started_at"] for r in unbound)
        windowed = await queries_turns.window_bindings(store, first, last + dt.timedelta(microseconds=1))
        bound.update({k: v for k, v in windowed.items() if v})
    for row in rows:
        row["cc_session_id"] = (exact.get(row["tool_use_id"]) or bound.get(row["mcp_session_id"])
                                or row["cc_session_id"])
