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
