"""Measure the per-turn join's queries on a synthetic store: turns of one session (computed in Python vs the `turns`
view), a session page, the sessions list (all calls with tool_use_ids, then a tenth of the sessions without) and
the servers report. Run: python3 -m bench.turn_queries [sessions]."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import sys
import tempfile
import time
import uuid
from typing import Any

from store.client import Store
from store.queries_servers import servers
from store.queries_turns import list_sessions, session_detail, turns
from store.schema import migrate

TURNS, REQUESTS, CALLS = 5, 8, 4  # per session, per turn, per turn


def session_rows(start: dt.datetime, rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    sid, mcp = str(uuid.uuid4()), uuid.uuid4().hex
    rows: dict[str, list[dict[str, Any]]] = {"cc_user_prompts": [], "cc_api_requests": [], "cc_tool_results": [],
                                             "calls": []}
    at, seq = start, 0
    for _ in range(TURNS):
        prompt = str(uuid.uuid4())
        rows["cc_user_prompts"].append({"event_key": f"seq:{sid}:{seq}", "session_id": sid, "prompt_id": prompt,
                                        "event_sequence": seq, "event_time": at, "prompt_length": 40})
        for r in range(REQUESTS):
            seq += 1
            at += dt.timedelta(milliseconds=rng.randint(200, 3000))
            rows["cc_api_requests"].append({
                "event_key": f"req:{sid}:{seq}", "session_id": sid, "prompt_id": prompt, "event_sequence": seq,
                "event_time": at, "model": "claude-opus-5-5", "input_tokens": 100, "output_tokens": 50,
                "cache_read_tokens": 5000 + 300 * r, "cache_creation_tokens": 300, "cost_usd": 0.01,
                "cost_usd_micros": 10000, "query_source": "main", "request_id": f"req_{sid}_{seq}",
                "mcp_server_name": "tollgate" if r else "", "mcp_tool_name": "alpha__echo" if r else ""})
            if r < CALLS:
                tool_use_id = "toolu_" + uuid.uuid4().hex
                ended = at + dt.timedelta(milliseconds=50)
                rows["calls"].append({"call_id": uuid.uuid4().hex, "method": "tools/call", "upstream": "alpha",
                                      "tool": "echo", "exposed_name": "alpha__echo", "mcp_session_id": mcp,
                                      "tool_use_id": tool_use_id, "started_at": ended - dt.timedelta(milliseconds=20),
                                      "ended_at": ended, "status": "ok", "resp_bytes_upstream": rng.randint(100, 90000),
                                      "req_bytes_client": 200, "est_tokens": 100})
                seq += 1
                rows["cc_tool_results"].append({
                    "event_key": f"seq:{sid}:{seq}", "session_id": sid, "prompt_id": prompt, "event_sequence": seq,
                    "event_time": ended + dt.timedelta(milliseconds=10), "tool_name": "mcp_tool",
                    "tool_use_id": tool_use_id, "duration_ms": 40, "tool_result_size_bytes": 500,
                    "mcp_server_name": "tollgate", "mcp_tool_name": "alpha__echo"})
        at += dt.timedelta(seconds=rng.randint(10, 120))
        seq += 1
    return rows


async def timed(label: str, coro: Any, runs: int = 5) -> None:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        await coro()
        best = min(best, time.perf_counter() - started)
    print(f"{label:<48} {best * 1000:8.1f} ms (best of {runs})")


async def main(sessions: int) -> None:
    rng = random.Random(7)
    store = await Store.open(f"chdb://{tempfile.mkdtemp()}")
    try:
        await migrate(store)
        now = dt.datetime.now(dt.UTC)
        batch: dict[str, list[dict[str, Any]]] = {}
        ids, mcp_ids = [], []
        for i in range(sessions):
            rows = session_rows(now - dt.timedelta(days=20) + dt.timedelta(minutes=10 * i), rng)
            ids.append(rows["cc_user_prompts"][0]["session_id"])
            mcp_ids.append(rows["calls"][0]["mcp_session_id"])
            for table, table_rows in rows.items():
                batch.setdefault(table, []).extend(table_rows)
        for table, table_rows in batch.items():
            for k in range(0, len(table_rows), 50_000):
                await store.insert(table, table_rows[k:k + 50_000])
        print({t: len(r) for t, r in batch.items()})
        sid = ids[len(ids) // 2]
        await timed("turns(session): rows by key, view in Python", lambda: turns(store, sid))
        await timed("turns view WHERE session_id", lambda: store.query(
            "SELECT * FROM turns WHERE session_id = {s:String}", {"s": sid}))
        await timed("session_detail (turns, ties, costs)", lambda: session_detail(store, sid))
        await timed("list_sessions (30 days, first page)", lambda: list_sessions(store, limit=50))
        await timed("servers report (30 days)", lambda: servers(store))
        # A client that sends no tool_use_id, in every 10th session: the list ties those by the telemetry window.
        await store.command("ALTER TABLE calls UPDATE tool_use_id = '' WHERE mcp_session_id IN {m:Array(String)} "
                            "SETTINGS mutations_sync = 2", {"m": sorted(mcp_ids[::10])})
        await timed("list_sessions, 10% of sessions without ids", lambda: list_sessions(store, limit=50))
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
