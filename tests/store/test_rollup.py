"""The per-day calls rollup (store/rollup.py) on real chDB: the servers views report the same from it as from the
calls, and re-delivered or late rows are neither doubled nor missed."""

from __future__ import annotations

import datetime as dt
from typing import Any

from store import queries_servers, rollup
from store.client import Store
from store.schema import load_migrations, migrate

TODAY = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
DAYS = [TODAY - dt.timedelta(days=d) for d in (3, 2, 1)]
SINCE, UNTIL = TODAY - dt.timedelta(days=5), TODAY + dt.timedelta(days=1)
EXACT = ("calls", "errors", "tools_used", "sessions", "req_bytes", "resp_bytes", "resp_bytes_max", "req_bytes_max",
         "est_tokens", "first_at", "last_at")


def calls(day: dt.datetime, n: int, prefix: str = "c") -> list[dict[str, Any]]:
    """`n` calls on `day`: two tools, three sessions, every fifth a tool_error, result sizes 100 * (k + 1)."""
    return [{"call_id": f"{prefix}{day:%d}-{k}", "method": "tools/call", "upstream": "u", "tool": f"t{k % 2}",
             "mcp_session_id": f"s{k % 3}", "status": "tool_error" if k % 5 == 0 else "ok",
             "started_at": day + dt.timedelta(hours=1, minutes=k), "ended_at": day + dt.timedelta(hours=1, minutes=k),
             "req_bytes_client": 10 + k, "resp_bytes_upstream": 100 * (k + 1), "est_tokens": 25 * (k + 1)}
            for k in range(n)]


def expected(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"calls": len(rows), "errors": sum(r["status"] == "tool_error" for r in rows),
            "tools_used": len({r["tool"] for r in rows}), "sessions": len({r["mcp_session_id"] for r in rows}),
            "req_bytes": sum(r["req_bytes_client"] for r in rows),
            "resp_bytes": sum(r["resp_bytes_upstream"] for r in rows),
            "resp_bytes_max": max(r["resp_bytes_upstream"] for r in rows),
            "req_bytes_max": max(r["req_bytes_client"] for r in rows), "est_tokens": sum(r["est_tokens"] for r in rows),
            "first_at": min(r["started_at"] for r in rows), "last_at": max(r["started_at"] for r in rows)}


async def report(store: Store) -> dict[str, Any]:
    [row] = await queries_servers.servers(store, SINCE, UNTIL)
    return {k: row[k] for k in EXACT}


async def per_tool(store: Store) -> list[tuple[str, int, int, int]]:
    detail = await queries_servers.server_detail(store, "u", SINCE, UNTIL)
    assert detail is not None
    return sorted((t["tool"], t["calls"], t["errors"], t["resp_bytes"]) for t in detail["tools"])


async def test_the_servers_views_report_the_same_from_the_rollup_as_from_the_calls(store: Store) -> None:
    rows = [c for day in DAYS for c in calls(day, 12)] + calls(TODAY, 4)
    await store.insert("calls", rows)
    from_calls, tools_from_calls = await report(store), await per_tool(store)
    assert from_calls == expected(rows)
    assert await rollup.refresh(store, quiet_seconds=0) == [d.date() for d in reversed(DAYS)]  # not today
    assert await rollup.fresh_days(store, SINCE, UNTIL) == [d.date() for d in DAYS]
    assert (await report(store), await per_tool(store)) == (from_calls, tools_from_calls)
    assert tools_from_calls == [(tool, 20, expected(mine)["errors"], expected(mine)["resp_bytes"])
                                for tool in ("t0", "t1") for mine in [[r for r in rows if r["tool"] == tool]]]


async def test_re_delivered_rows_double_nothing_before_or_after_the_rollup(store: Store) -> None:
    rows = [c for day in DAYS for c in calls(day, 10)]
    await store.insert("calls", rows)
    await rollup.refresh(store, quiet_seconds=0)
    await store.insert("calls", rows[:7])  # a spill segment stored again
    await store.insert("calls", rows[:7])
    assert await rollup.fresh_days(store, SINCE, UNTIL) == [DAYS[1].date(), DAYS[2].date()]  # the first is marked
    assert await report(store) == expected(rows)
    assert await rollup.refresh(store, quiet_seconds=0) == [DAYS[0].date()]
    assert await report(store) == expected(rows)


async def test_a_late_row_for_a_rolled_up_day_is_counted(store: Store) -> None:
    rows = calls(DAYS[0], 6)
    await store.insert("calls", rows)
    await rollup.refresh(store, quiet_seconds=0)
    late = calls(DAYS[0], 1, prefix="late")
    await store.insert("calls", late)
    assert await report(store) == expected(rows + late)


async def test_a_day_is_rolled_up_only_when_over_and_quiet(store: Store) -> None:
    await store.insert("calls", calls(DAYS[2], 3) + calls(TODAY, 3))
    assert await rollup.refresh(store) == []  # just inserted: not quiet yet
    assert await rollup.refresh(store, quiet_seconds=0) == [DAYS[2].date()]  # today is never over
    assert await rollup.refresh(store, quiet_seconds=0) == []  # nothing changed since


async def test_a_refresh_rolls_up_at_most_max_days_newest_first_and_the_next_one_goes_on(store: Store) -> None:
    rows = [c for day in DAYS for c in calls(day, 2)]
    await store.insert("calls", rows)
    assert await rollup.refresh(store, quiet_seconds=0, max_days=2) == [DAYS[2].date(), DAYS[1].date()]
    assert await rollup.fresh_days(store, SINCE, UNTIL) == [DAYS[1].date(), DAYS[2].date()]
    assert await report(store) == expected(rows)
    assert await rollup.refresh(store, quiet_seconds=0, max_days=2) == [DAYS[0].date()]


async def test_the_migration_marks_the_days_already_stored(store_dsn: str) -> None:
    migrations = load_migrations()
    rollup_at = next(i for i, m in enumerate(migrations) if m.name == "calls_rollup")
    opened = await Store.open(store_dsn)
    try:
        await migrate(opened, migrations[:rollup_at])
        rows = [c for day in DAYS for c in calls(day, 5)]
        await opened.insert("calls", rows)
        await migrate(opened, migrations)
        assert await rollup.refresh(opened, quiet_seconds=0) == [d.date() for d in reversed(DAYS)]
        assert await report(opened) == expected(rows)
    finally:
        await opened.close()


async def test_a_range_is_read_from_the_calls_outside_the_fresh_days() -> None:
    start = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    days = [dt.date(2026, 3, 2), dt.date(2026, 3, 3), dt.date(2026, 3, 5)]
    end = dt.datetime(2026, 3, 6, 6, tzinfo=dt.UTC)
    sql, params = rollup.gaps(start, end, days)
    assert sql.count(" OR ") == 2
    midnight = [dt.datetime(2026, 3, d, tzinfo=dt.UTC) for d in (2, 4, 5, 6)]
    assert list(params.values()) == [start, midnight[0], midnight[1], midnight[2], midnight[3], end]
    assert rollup.gaps(midnight[0], midnight[1], days[:2]) == ("0", {})
