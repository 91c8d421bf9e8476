"""Session page render time in headless Chromium for one session among ~1M telemetry events (goal: < 200 ms).

Seeds an embedded store with ClickHouse `INSERT ... SELECT FROM numbers()`, serves it with the real service, then
loads `/ui/sessions/<id>` repeatedly and reads two figures from the browser: the API call's duration and the time
from navigation start to the page's `tollgate:rendered` mark (HTML, modules, API call and DOM). Run:
`python3 -m bench.ui_render [--events 1000000] [--runs 15]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.cli import open_service
from gateway.config import Config, StoreConfig

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TURNS = 25  # per session
EVENTS_PER_TURN = 8  # 1 prompt, 4 API requests, 3 tool results
BASE = "now64(6) - INTERVAL 20 DAY"
COMMON = "'bench-user' AS user_id, 'org' AS organization_id, '2.1.332' AS app_version, now64(6) AS ingested_at"
UPSTREAMS = "['github','filesystem','postgres','slack','jira','browser','search','notes']"


def _turn(turns: int) -> str:
    gap = 20 * 86400 / max(1, turns // TURNS)
    return (f"intDiv(t, {TURNS}) AS s, t % {TURNS} AS k, concat('sess-', toString(s)) AS session_id, "
            f"concat('prompt-', toString(t)) AS prompt_id, addSeconds({BASE}, toInt64(s * {gap:.3f}) + k * 120) AS at")


def seed_sql(db: str, events: int) -> list[str]:
    """Statements that write `events` telemetry events (and two gateway calls per turn, tied by tool_use_id)."""
    turns = events // EVENTS_PER_TURN
    turn = _turn(turns)
    telemetry = "event_key, event_name, session_id, prompt_id, event_sequence, user_id, organization_id, " \
                "app_version, event_time, observed_time, ingested_at"
    return [f"""
INSERT INTO {db}.cc_user_prompts ({telemetry}, prompt_length)
SELECT concat(session_id, '/p'), 'user_prompt', session_id, prompt_id, k * 8, user_id, organization_id, app_version,
    at, at, ingested_at, 20 + t % 900 FROM (SELECT number AS t, {turn}, {COMMON} FROM numbers({turns}))""", f"""
INSERT INTO {db}.cc_api_requests ({telemetry}, model, input_tokens, output_tokens, cache_read_tokens,
    cache_creation_tokens, cost_usd, cost_usd_micros, duration_ms, request_id, query_source)
SELECT concat('req-', toString(n)), 'api_request', session_id, prompt_id, k * 8 + 1 + j, user_id, organization_id,
    app_version, addSeconds(at, 5 + j * 25), addSeconds(at, 5 + j * 25), ingested_at, 'claude-opus-4-5',
    100 + n % 500, 20 + n % 1500, 20000 + n % 80000, n % 8000, 0.001 * (1 + n % 50), 1000 * (1 + n % 50),
    800 + n % 20000, concat('req-', toString(n)), 'repl_main_thread'
FROM (SELECT number AS n, intDiv(number, 4) AS t, number % 4 AS j, {turn}, {COMMON} FROM numbers({turns * 4}))""",
            f"""
INSERT INTO {db}.cc_tool_results ({telemetry}, tool_name, tool_use_id, success, duration_ms, tool_result_size_bytes,
    mcp_server_scope, mcp_server_name, mcp_tool_name)
SELECT concat(session_id, '/r', toString(n)), 'tool_result', session_id, prompt_id, k * 8 + 5 + j, user_id,
    organization_id, app_version, addSeconds(at, 20 + j * 25), addSeconds(at, 20 + j * 25), ingested_at,
    if(j < 2, concat('mcp__tollgate__', up, '__read'), 'Bash'), concat('toolu-', toString(n)), true, 50 + n % 3000,
    100 + n % 40000, if(j < 2, 'user', ''), if(j < 2, 'tollgate', ''), if(j < 2, concat(up, '__read'), '')
FROM (SELECT number AS n, intDiv(number, 3) AS t, number % 3 AS j, {turn}, {COMMON},
      {UPSTREAMS}[1 + (t + j) % 8] AS up FROM numbers({turns * 3}))""", f"""
INSERT INTO {db}.sessions (mcp_session_id, started_at, client_name, client_version, protocol_version,
    cc_session_id, version)
SELECT concat('mcp-', toString(number)), {BASE}, 'claude-code', '2.1.332', '2025-06-18',
    concat('sess-', toString(number)), 1 FROM numbers({turns // TURNS})""", f"""
INSERT INTO {db}.calls (call_id, method, upstream, tool, exposed_name, mcp_session_id, client_name, cc_session_id,
    cc_prompt_id, tool_use_id, started_at, ended_at, duration_ms, status, req_bytes_client, req_bytes_upstream,
    resp_bytes_upstream, resp_bytes_client, text_bytes, content_blocks, est_tokens, gateway_id)
SELECT concat('call-', toString(n)), 'tools/call', up, 'read', concat(up, '__read'), concat('mcp-', toString(s)),
    'claude-code', session_id, prompt_id, concat('toolu-', toString(t * 3 + j)), addSeconds(at, 18 + j * 25),
    addSeconds(at, 19 + j * 25), 40 + n % 900, 'ok', 100 + n % 400, 110 + n % 400, 200 + (n * 7919) % 60000,
    200 + (n * 7919) % 60000, 200 + (n * 7919) % 60000, 1, intDiv(200 + (n * 7919) % 60000, 4), 'bench'
FROM (SELECT number AS n, intDiv(number, 2) AS t, number % 2 AS j, {turn},
      {UPSTREAMS}[1 + (t + j) % 8] AS up FROM numbers({turns * 2}))"""]


async def serve(data_dir: Path) -> tuple[Any, web.AppRunner, str]:
    config = Config(store=StoreConfig(dsn=f"chdb://{data_dir}", flush_seconds=0.05))
    service = await open_service(config)
    runner = web.AppRunner(service.app, access_log=None, auto_decompress=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return service, runner, f"http://127.0.0.1:{port}"


async def settle(store: Any) -> None:
    """Merge the fresh parts now, as background merges would soon, so they do not compete with the measurement."""
    start = time.perf_counter()
    for table in ("cc_user_prompts", "cc_api_requests", "cc_tool_results", "calls", "sessions"):
        await store.command(f"OPTIMIZE TABLE {store.database}.{table} FINAL")
    print(f"merged in {time.perf_counter() - start:.1f} s")


MEASURE = """() => ({
    rendered: performance.getEntriesByName('tollgate:rendered')[0].startTime,
    api: performance.getEntriesByType('resource').find(r => r.name.includes('/api/sessions/')).duration,
    api_start: performance.getEntriesByType('resource').find(r => r.name.includes('/api/sessions/')).startTime,
    api_end: performance.getEntriesByType('resource').find(r => r.name.includes('/api/sessions/')).responseEnd,
    turns: document.querySelectorAll('section.turn').length,
    calls: document.querySelectorAll('tr[data-call]').length})"""


async def measure(base_url: str, session_id: str, runs: int, profile: str) -> list[dict[str, float]]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=ARGS,
                                                              headless=True)
        page = await context.new_page()
        samples = []
        for _ in range(runs + 1):  # the first load warms the store's caches and the browser's module cache
            await page.goto(f"{base_url}/ui/sessions/{session_id}")
            await page.wait_for_selector("html[data-state=ready]", timeout=30_000)
            samples.append(await page.evaluate(MEASURE))
        await context.close()
        return samples[1:]


def summary(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{name}: median {statistics.median(values):.1f} ms, p95 {p95:.1f} ms, min {ordered[0]:.1f} ms"


async def run(events: int, runs: int) -> dict[str, Any]:
    """Seed, serve and load the session page `runs` times; the samples and what was seeded."""
    with tempfile.TemporaryDirectory() as tmp:
        service, runner, base_url = await serve(Path(tmp) / "store")
        try:
            start = time.perf_counter()
            for sql in seed_sql(service.store.database, events):
                await service.store.command(sql)
            counted = await service.store.query(
                "SELECT (SELECT count() FROM cc_user_prompts) + (SELECT count() FROM cc_api_requests) "
                "+ (SELECT count() FROM cc_tool_results) AS events, (SELECT count() FROM calls) AS calls")
            print(f"seeded {counted[0]['events']:,} events and {counted[0]['calls']:,} calls "
                  f"in {time.perf_counter() - start:.1f} s")
            await settle(service.store)
            session_id = f"sess-{events // EVENTS_PER_TURN // TURNS // 2}"
            samples = await measure(base_url, session_id, runs, str(Path(tmp) / "profile"))
            return {"events": counted[0]["events"], "calls": counted[0]["calls"], "session": session_id,
                    "samples": samples}
        finally:
            await runner.cleanup()
            await service.close()


async def main(events: int, runs: int) -> None:
    seeded = await run(events, runs)
    samples = seeded["samples"]
    print(f"session {seeded['session']}: {samples[0]['turns']} turns, {samples[0]['calls']} tool calls, {runs} loads")
    print(summary("API call (/api/sessions/{id})", [s["api"] for s in samples]))
    print(summary("API call started", [s["api_start"] for s in samples]))
    print(summary("DOM after API", [s["rendered"] - s["api_end"] for s in samples]))
    print(summary("page's own time (rendered minus API call)", [s["rendered"] - s["api"] for s in samples]))
    print(summary("page rendered (navigation start to tollgate:rendered)", [s["rendered"] for s in samples]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.runs))
