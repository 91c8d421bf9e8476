"""Query timings on synthetic data in embedded chDB: the per-turn view of one session, the per-server view.

Uses `store.queries_turns.session_detail` (the real per-turn view) when present, and `store.queries_servers`
when it offers a known entry point; otherwise representative SQL written here, and the row says so.
"""

from __future__ import annotations

import importlib
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench.synth import TURNS_PER_SESSION, generate
from store.client import Store
from store.schema import migrate

SERVERS_SQL = """
SELECT upstream, count() AS calls, countIf(status != 'ok') AS errors,
    sum(req_bytes_client) AS bytes_in, sum(resp_bytes_client) AS bytes_out,
    quantiles(0.5, 0.95)(resp_bytes_client) AS resp_p50_p95, max(resp_bytes_client) AS resp_max,
    argMax(tool, resp_bytes_client) AS largest_tool, sum(est_tokens) AS est_tokens,
    uniq(mcp_session_id) AS sessions
FROM {db}.calls FINAL
GROUP BY upstream ORDER BY bytes_out DESC
"""
TURNS_SQL = """
SELECT prompt_id, min(event_time) AS started_at, count() AS requests, sum(ifNull(input_tokens, 0)) AS input_tokens,
    sum(ifNull(output_tokens, 0)) AS output_tokens, sum(ifNull(cache_read_tokens, 0)) AS cache_read_tokens,
    sum(ifNull(cost_usd, 0)) AS cost_usd,
    (SELECT groupArray((cc_prompt_id, upstream, tool, resp_bytes_client)) FROM {db}.calls FINAL
     WHERE cc_session_id = {session:String} AND mcp_session_id IN
        (SELECT mcp_session_id FROM {db}.sessions FINAL WHERE cc_session_id = {session:String})) AS calls
FROM {db}.cc_api_requests FINAL WHERE session_id = {session:String}
GROUP BY prompt_id ORDER BY started_at
"""
SERVER_ENTRY_POINTS = ("servers_report", "server_report", "servers", "list_servers", "server_summary")


@dataclass
class QueryResult:
    name: str
    source: str  # where the query comes from
    timings_ms: list[float]
    rows: int


def _turns_query(store: Store, session: str) -> tuple[str, Callable[[], Awaitable[Any]]]:
    try:
        module = importlib.import_module("store.queries_turns")
        detail = module.session_detail
        return "store.queries_turns.session_detail", lambda: detail(store, session)
    except (ImportError, AttributeError):
        sql = TURNS_SQL.replace("{db}", store.database)
        return "representative SQL (bench/queries.py)", lambda: store.query(sql, {"session": session})


def _servers_query(store: Store) -> tuple[str, Callable[[], Awaitable[Any]]]:
    try:
        module = importlib.import_module("store.queries_servers")
    except ImportError:
        module = None
    for name in SERVER_ENTRY_POINTS:
        entry = getattr(module, name, None)
        if callable(entry):
            return f"store.queries_servers.{name}", lambda entry=entry: entry(store)  # type: ignore[misc]
    sql = SERVERS_SQL.replace("{db}", store.database)
    return "representative SQL (bench/queries.py)", lambda: store.query(sql)


async def _time(run: Callable[[], Awaitable[Any]], repeats: int) -> tuple[list[float], int]:
    result = await run()  # warm: first read of the parts, query plan caches
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = await run()
        timings.append((time.perf_counter() - start) * 1000)
    rows = len(result) if isinstance(result, list) else len((result or {}).get("turns", []))
    return timings, rows


async def run_queries(events: int, calls: int, repeats: int) -> tuple[list[QueryResult], dict[str, float]]:
    """Generate the data in a temp chDB directory, then time each view `repeats` times."""
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-q-") as tmp:
        store = await Store.open(f"chdb://{tmp}/chdb")
        try:
            await migrate(store)
            generated = await generate(store, events, calls)
            sessions = max(1, events // 8 // TURNS_PER_SESSION)
            session = f"sess-{sessions // 2}"
            results = []
            for name, (source, run) in (("per-turn view of one session", _turns_query(store, session)),
                                        ("per-server view over all calls", _servers_query(store))):
                timings, rows = await _time(run, repeats)
                results.append(QueryResult(name, source, timings, rows))
            return results, generated
        finally:
            await store.close()


def summary(result: QueryResult) -> str:
    t = sorted(result.timings_ms)
    return f"min {t[0]:.0f} / median {statistics.median(t):.0f} / max {t[-1]:.0f} ms"
