"""Per-server reports: what counts as an error, on real chDB."""

from __future__ import annotations

import datetime as dt

from store import queries_servers
from store.client import Store

STATUSES = ("ok", "tool_error", "protocol_error", "timeout", "cancelled", "denied", "truncated")


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
    assert (row["calls"], row["errors"]) == (7, 3)  # tool_error, protocol_error, timeout
    assert (detail["server"]["errors"], detail["tools"][0]["errors"]) == (3, 3)


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
