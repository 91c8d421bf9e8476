"""Per-server reports: what counts as an error, on real chDB; per-tool definitions of the latest tool list."""

from __future__ import annotations

import ast
import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.accounting import StoreRecorder
from gateway.records import ToolListSnapshot
from store import queries_servers
from store.client import Store
from store.statuses import ERRORS, STATUSES
from store.writer import Writer

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"


def _outcomes(node: ast.expr) -> set[str]:
    """The string values an expression can take: a literal, or either branch of `a if cond else b`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    return _outcomes(node.body) | _outcomes(node.orelse) if isinstance(node, ast.IfExp) else set()


def recorded_statuses() -> set[str]:
    """Every status the gateway passes to `CallRecord.finish(...)`."""
    found: set[str] = set()
    for path in GATEWAY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "finish" \
                    and node.args:
                found |= _outcomes(node.args[0])
    return found


def test_the_gateway_records_exactly_the_statuses_of_the_stores_list() -> None:
    # Both ways: a status the gateway writes that reports do not know, or one they list that nothing writes.
    assert recorded_statuses() == set(STATUSES)
    assert set(STATUSES) > ERRORS and not ERRORS & {"ok", "truncated", "denied", "cancelled"}


async def test_errors_are_the_servers_own_not_budget_decisions_or_cancels(store: Store) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    await store.insert("calls", [
        {"call_id": f"c{i}", "mcp_session_id": "s", "upstream": "u", "tool": "t", "method": "tools/call",
         "status": status, "started_at": now, "ended_at": now}
        for i, status in enumerate(STATUSES)
    ])
    [row] = await queries_servers.servers(store)
    detail = await queries_servers.server_detail(store, "u")
    assert detail is not None
    assert (row["calls"], row["errors"]) == (len(STATUSES), len(ERRORS))
    assert (detail["server"]["errors"], detail["tools"][0]["errors"]) == (len(ERRORS), len(ERRORS))


async def test_a_call_refused_before_routing_is_listed_under_no_server(store: Store) -> None:
    # An unknown tool's protocol_error row has no upstream: the calls list keeps it, the servers list has no '' row.
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    await store.insert("calls", [
        {"call_id": f"c{i}", "mcp_session_id": "s", "upstream": upstream, "tool": tool, "method": "tools/call",
         "status": status, "started_at": now, "ended_at": now}
        for i, (upstream, tool, status) in enumerate([("u", "t", "ok"), ("", "u__nope", "protocol_error")])
    ])
    assert [row["upstream"] for row in await queries_servers.servers(store)] == ["u"]
    calls = await queries_servers.calls(store, limit=10)
    assert sorted((c["upstream"], c["status"]) for c in calls) == [("", "protocol_error"), ("u", "ok")]


async def test_the_tool_list_context_lists_each_tool_of_the_latest_snapshot(store: Store) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    snapshots = {  # snapshot id -> (taken seconds ago, {tool: definition bytes})
        "old": (60, {"echo": 120, "gone": 999}), "new": (1, {"echo": 130, "blob": 4001, "tiny": 3})}
    await store.insert("tool_lists", [
        {"snapshot_id": sid, "upstream": "u", "taken_at": now - dt.timedelta(seconds=ago), "tool": tool,
         "exposed_name": f"u__{tool}", "def_bytes": size, "server_bytes": sum(tools.values()),
         "tool_count": len(tools)}
        for sid, (ago, tools) in snapshots.items() for tool, size in tools.items()])
    detail = await queries_servers.server_detail(store, "u")
    assert detail is not None
    context = detail["tool_list_context"]
    latest = snapshots["new"][1]
    assert (context["snapshot_id"], context["server_bytes"], context["tool_count"]) == (
        "new", sum(latest.values()), len(latest))
    per = queries_servers.BYTES_PER_TOKEN
    assert [(t["tool"], t["exposed_name"], t["def_bytes"], t["est_tokens"]) for t in context["tools"]] == [
        (tool, f"u__{tool}", size, -(-size // per)) for tool, size in sorted(latest.items(), key=lambda i: -i[1])]


async def test_the_kept_tool_list_context_gives_way_to_a_snapshot_recorded_through_the_writer(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every upstream's context is kept per embedded store (each session page reads it) until this process writes
    tool_lists or runs a command: a new snapshot, recorded as the gateway records one, shows at once."""
    writer = Writer(store, tmp_path / "spill", flush_seconds=3600.0)
    await writer.start()
    recorder = StoreRecorder(writer)
    queries: list[str] = []
    real_query = store.query

    async def counted(sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        queries.append(sql)
        return await real_query(sql, params)

    monkeypatch.setattr(store, "query", counted)

    async def latest() -> list[tuple[str, str, int]]:
        return [(r["upstream"], r["snapshot_id"], r["server_bytes"])
                for r in await queries_servers.tool_list_context(store)]

    try:
        first = ToolListSnapshot("u", time.time() - 60, [("echo", "u__echo", 100)], "first")
        recorder.tool_list_changed(first)
        await writer.flush()
        assert await latest() == [("u", "first", 100)]
        read = len(queries)
        assert await latest() == [("u", "first", 100)] and len(queries) == read  # kept: no query
        recorder.tool_list_changed(ToolListSnapshot("u", time.time(), [("echo", "u__echo", 150)], "second"))
        await writer.flush()
        assert await latest() == [("u", "second", 150)]
        await store.command("ALTER TABLE tool_lists DELETE WHERE snapshot_id = 'second' SETTINGS mutations_sync = 2")
        assert await latest() == [("u", "first", 100)]
    finally:
        await writer.stop()


async def test_a_servers_result_sizes_and_bytes_over_time_cover_its_whole_range(store: Store) -> None:
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=3)
    sizes = {0: 1, 1: 1, 2: 3, 3: 5, 4: 1000, 5: 1000}  # minutes after `hour` -> result bytes
    await store.insert("calls", [
        {"call_id": f"c{m}", "mcp_session_id": "s", "upstream": "u", "tool": "t", "method": "tools/call",
         "status": "ok", "started_at": hour + dt.timedelta(hours=m // 4, minutes=m), "ended_at": hour,
         "resp_bytes_upstream": size} for m, size in sizes.items()])
    detail = await queries_servers.server_detail(store, "u", hour - dt.timedelta(hours=1), hour + dt.timedelta(hours=3))
    assert detail is not None
    assert [(b["lo"], b["hi"], b["count"]) for b in detail["sizes"]] == [
        (0, 2, 2), (2, 4, 1), (4, 8, 1), *((2 ** e, 2 ** (e + 1), 0) for e in range(3, 9)), (512, 1024, 2)]
    minute = dt.timedelta(minutes=1)  # the calls span 65 minutes: per minute is the finest under 120 points
    assert detail["timeline"]["bucket_seconds"] == 60
    points = [(p["at"], p["calls"], p["resp_bytes"], p["resp_bytes_max"]) for p in detail["timeline"]["points"]]
    calls_at = {hour + dt.timedelta(hours=m // 4, minutes=m): size for m, size in sizes.items()}
    assert points == [(hour + k * minute, int(hour + k * minute in calls_at), calls_at.get(hour + k * minute, 0),
                       calls_at.get(hour + k * minute, 0)) for k in range(66)]  # every minute, empty ones as 0
    month = await queries_servers.server_detail(store, "u")  # a 30-day range: the calls' span picks the bucket
    assert month is not None and month["timeline"]["points"] == detail["timeline"]["points"]


async def test_the_timeline_buckets_fit_the_span_of_the_calls(store: Store) -> None:
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=5)
    spans = {"seconds": dt.timedelta(seconds=3), "hours": dt.timedelta(hours=24), "days": dt.timedelta(days=4)}
    await store.insert("calls", [
        {"call_id": f"{name}{k}", "mcp_session_id": "s", "upstream": name, "tool": "t", "method": "tools/call",
         "status": "ok", "started_at": start + k * span, "ended_at": start + k * span, "resp_bytes_upstream": 10}
        for name, span in spans.items() for k in (0, 1)])
    timelines = {name: (await queries_servers.server_detail(store, name))["timeline"]  # type: ignore[index]
                 for name in spans}
    assert {name: t["bucket_seconds"] for name, t in timelines.items()} == {
        "seconds": 1, "hours": 900, "days": 86400}
    assert [len(t["points"]) for t in timelines.values()] == [4, 97, 5]
    assert all(sum(p["calls"] for p in t["points"]) == 2 for t in timelines.values())


async def test_the_largest_results_list_each_call_once_when_its_row_was_stored_many_times(store: Store) -> None:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    rows = [{"call_id": f"c{k}", "mcp_session_id": "s", "upstream": "u", "tool": "t", "method": "tools/call",
             "status": "ok", "started_at": now, "ended_at": now, "resp_bytes_upstream": 1000 + k} for k in range(30)]
    await store.insert("calls", rows)
    for _ in range(5):  # the largest call re-delivered: its copies alone would fill the fetched candidates
        await store.insert("calls", rows[-1:])
    detail = await queries_servers.server_detail(store, "u", largest=4)
    assert detail is not None
    assert [r["call_id"] for r in detail["largest_results"]] == ["c29", "c28", "c27", "c26"]
    few = await queries_servers.server_detail(store, "u", largest=100)
    assert few is not None and len(few["largest_results"]) == 30


async def test_one_servers_detail_fills_every_column_of_its_row_in_the_servers_list(store: Store) -> None:
    """`report servers NAME` prints the detail's totals row with the list's columns: its tool-list size too (0 for
    an upstream that never listed its tools), and each largest result its request bytes and bound Claude Code
    session, as the calls list has them."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=1)
    await store.insert("calls", [
        {"call_id": f"c{k}", "mcp_session_id": "m", "cc_session_id": "cc" if k else "", "upstream": upstream,
         "tool": "t", "method": "tools/call", "status": "ok", "started_at": now, "ended_at": now,
         "req_bytes_client": 50 + k, "resp_bytes_upstream": 1000 + k}
        for k, upstream in enumerate(["u", "u", "bare"])])
    await store.insert("tool_lists", [
        {"snapshot_id": "s1", "upstream": "u", "taken_at": now, "tool": "t", "exposed_name": "u__t",
         "def_bytes": 401, "server_bytes": 401, "tool_count": 1}])
    listed = {row["upstream"]: row for row in await queries_servers.servers(store)}
    for name in ("u", "bare"):
        detail = await queries_servers.server_detail(store, name)
        assert detail is not None
        assert detail["server"] == listed[name]
    assert (listed["u"]["tool_list_bytes"], listed["u"]["tool_list_tools"], listed["u"]["tool_list_est_tokens"],
            listed["bare"]["tool_list_bytes"]) == (401, 1, 101, 0)
    detail = await queries_servers.server_detail(store, "u")
    assert detail is not None
    calls = {c["call_id"]: c for c in await queries_servers.calls(store, server="u")}
    assert [(r["call_id"], r["req_bytes_client"], r["cc_session_id"]) for r in detail["largest_results"]] == [
        (k, calls[k]["req_bytes_client"], calls[k]["cc_session_id"]) for k in ("c1", "c0")] == [
        ("c1", 51, "cc"), ("c0", 50, "")]
