"""The per-day rollup of calls (migration 0004; every kind since 0006, per tool under its store/kinds.py label):
refreshing it, and the row source the servers views read.

A day's rollup rows are used only while the day's insert mark still equals the one seen when they were computed;
every other day in a range is read from `calls FINAL`, so late or re-delivered rows are never missed nor doubled.
Quantiles are t-digest estimates (mergeable across days); counts, sums, maxima and distinct sessions are exact.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from store import statuses
from store.client import Store
from store.errors import StoreQueryError
from store.kinds import LABEL_SQL

log = logging.getLogger(__name__)

QUIET_SECONDS = 60  # a day is rolled up once it is over and no insert marked it for this long (inserts committed)
MAX_DAYS = 7  # rolled up per view at most, newest first: the first views over a long history each add a little


def _fill(template: str, **values: str) -> str:
    """Fill `{name}` placeholders by replacement (SQL braces and query parameters stay untouched)."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


# The rollup's columns from calls; `{tool}` is `tool` (per tool), '' (per upstream) or the grouping sets' `tool`
# with `{per_tool}` telling the two apart.
STATES = f"""toDate(started_at) AS day, upstream, {{per_tool}} AS per_tool, {{tool}},
    count() AS calls, countIf({statuses.errors_sql()}) AS errors,
    sum(req_bytes_client) AS req_bytes, sum(resp_bytes_upstream) AS resp_bytes, sum(est_tokens) AS est_tokens,
    max(req_bytes_client) AS req_bytes_max, max(resp_bytes_upstream) AS resp_bytes_max,
    min(started_at) AS first_at, max(started_at) AS last_at, uniqExactState(tool) AS tools,
    uniqExactState(mcp_session_id) AS sessions,
    quantilesTDigestState(0.5, 0.95)(req_bytes_client) AS req_q,
    quantilesTDigestState(0.5, 0.95)(resp_bytes_upstream) AS resp_q,
    quantileTDigestState(0.95)(duration_ms) AS duration_q,
    sumMap([if(resp_bytes_upstream < 2, toUInt8(0), toUInt8(log2(resp_bytes_upstream)))], [toUInt64(1)]) AS sizes"""
COLUMNS = ("day, upstream, per_tool, tool, calls, errors, req_bytes, resp_bytes, est_tokens, req_bytes_max, "
           "resp_bytes_max, first_at, last_at, tools, sessions, req_q, resp_q, duration_q, sizes")
GRAINS = {  # per_tool -> (the STATES fill-ins, GROUP BY) for reading the calls at that grain
    0: ({"per_tool": "toUInt8(0)", "tool": "'' AS no_tool"}, "day, upstream"),  # an alias `tool` would hide the column
    1: ({"per_tool": "toUInt8(1)", "tool": "tool"}, "day, upstream, tool"),
}

MARKS = "SELECT day, max(marked_at) AS marked FROM {db}.calls_days GROUP BY day"
SEEN = "SELECT day, max(marks_seen) AS seen FROM {db}.calls_rollup GROUP BY day"

STALE_SQL = f"""
SELECT m.day AS day, m.marked AS marked FROM ({MARKS}) AS m LEFT JOIN ({SEEN}) AS r ON r.day = m.day
WHERE r.seen < m.marked AND m.marked < now64(6) - INTERVAL {{quiet:UInt32}} SECOND
    AND toDateTime(m.day + 1, 'UTC') <= now64(6) - INTERVAL {{quiet:UInt32}} SECOND
ORDER BY day DESC LIMIT {{limit:UInt32}}
"""

REFRESH_SQL = f"""
INSERT INTO {{db}}.calls_rollup (marks_seen, {COLUMNS})
SELECT m.marked, s.* FROM (
    SELECT {_fill(STATES, per_tool="toUInt8(1 - grouping(tool))", tool="tool")} FROM (
        SELECT * REPLACE ({LABEL_SQL} AS tool) FROM {{db}}.calls FINAL
        WHERE started_at >= {{first:DateTime64(6, 'UTC')}} AND started_at < {{end:DateTime64(6, 'UTC')}}
            AND toDate(started_at) IN {{days:Array(Date)}})
    GROUP BY GROUPING SETS ((day, upstream, tool), (day, upstream))) AS s
INNER JOIN (SELECT arrayJoin(arrayZip({{days:Array(Date)}}, {{marks:Array(DateTime64(6, 'UTC'))}})) AS p,
                   p.1 AS day, p.2 AS marked) AS m ON m.day = s.day
"""

FRESH_SQL = f"""
SELECT r.day AS day FROM ({SEEN}) AS r INNER JOIN ({MARKS}) AS m ON m.day = r.day
WHERE r.seen = m.marked AND r.day >= {{first_day:Date}} AND r.day <= {{last_day:Date}}
"""

# Rollup rows of the fresh days in range, plus the rest of the range from the calls themselves: one shape.
SOURCE = f"""
SELECT {COLUMNS} FROM {{db}}.calls_rollup FINAL
WHERE day IN {{fresh:Array(Date)}} AND per_tool = {{per_tool_value}} AND {{rollup_where}}
UNION ALL
SELECT {STATES} FROM (
    SELECT * REPLACE ({LABEL_SQL} AS tool) FROM {{db}}.calls FINAL
    WHERE {{where}} AND ({{gaps}}) AND toDate(started_at) NOT IN {{fresh:Array(Date)}})
GROUP BY {{group_by}}
"""
MAX_GAPS = 16  # time intervals spelled out for the calls read; past that the index is not worth a long condition


async def refresh(store: Store, quiet_seconds: int = QUIET_SECONDS, max_days: int = MAX_DAYS) -> list[dt.date]:
    """Roll up (at most `max_days` of) the days that are over, quiet, and changed since last rolled up; returns
    them, newest first. A store that refuses the write (read-only user) is logged and left alone: readers then
    read the calls."""
    db = store.database
    stale = await store.query(STALE_SQL.replace("{db}", db), {"quiet": quiet_seconds, "limit": max_days})
    if not stale:
        return []
    days = [row["day"] for row in stale]
    params: dict[str, Any] = {"days": days, "marks": [row["marked"] for row in stale],
                              "first": _midnight(min(days)), "end": _midnight(max(days) + dt.timedelta(days=1))}
    try:
        await store.command(REFRESH_SQL.replace("{db}", db), params)
    except StoreQueryError as exc:
        log.warning("calls rollup not refreshed (%s); the servers views read the calls instead", exc)
        return []
    return days


async def fresh_days(store: Store, since: dt.datetime, until: dt.datetime) -> list[dt.date]:
    """The days wholly inside [since, until) whose rollup rows still match their insert mark."""
    first = since.date() if since == _midnight(since.date()) else since.date() + dt.timedelta(days=1)
    last = until.date() - dt.timedelta(days=1)
    if last < first:
        return []
    rows = await store.query(FRESH_SQL.replace("{db}", store.database), {"first_day": first, "last_day": last})
    return sorted(row["day"] for row in rows)


def gaps(since: dt.datetime, until: dt.datetime, fresh: list[dt.date]) -> tuple[str, dict[str, Any]]:
    """A condition on started_at for [since, until) less the fresh days, as time intervals (so the partition
    and started_at indexes skip the rolled-up days) and its parameters."""
    intervals: list[tuple[dt.datetime, dt.datetime]] = []
    start = since
    for day in fresh:
        if _midnight(day) > start:
            intervals.append((start, _midnight(day)))
        start = max(start, _midnight(day + dt.timedelta(days=1)))
    if start < until:
        intervals.append((start, until))
    if not intervals:
        return "0", {}
    if len(intervals) > MAX_GAPS:
        return "1", {}
    params = {f"gap{i}_{end}": at for i, pair in enumerate(intervals) for end, at in zip("ab", pair, strict=True)}
    at = "DateTime64(6, 'UTC')"
    return " OR ".join(f"(started_at >= {{gap{i}_a:{at}}} AND started_at < {{gap{i}_b:{at}}})"
                       for i in range(len(intervals))), params


def source(db: str, per_tool: int, where: str, gaps_sql: str, rollup_where: str = "1") -> str:
    """The row source over a range, one row per day and upstream (per_tool 0) or tool (1): `where` bounds the calls
    (on their columns), `gaps_sql` (see gaps) leaves out the fresh days, `rollup_where` bounds the rollup rows (on
    upstream or tool only); the query needs the `fresh` parameter (see fresh_days) and the gaps' parameters."""
    fill, group_by = GRAINS[per_tool]
    sql = _fill(SOURCE, per_tool_value=str(per_tool), group_by=group_by, **fill)
    return (sql.replace("{db}", db).replace("{rollup_where}", rollup_where).replace("{gaps}", gaps_sql)
            .replace("{where}", where))


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
