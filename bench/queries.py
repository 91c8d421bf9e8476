"""Query timings on synthetic data in embedded chDB: the per-turn view of one session, the per-server view.

Times the real entry points (`store.queries_turns.session_detail`, `store.queries_servers.servers` and
`server_detail`) over the whole generated range, and refuses to report a view that read nothing. Run alone:
`python3 -m bench.queries [--events N] [--calls N] [--data-dir DIR]` (a DIR that already holds data is reused,
so a 10M-call store is generated once across iterations).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.synth import TURNS_PER_SESSION, generate, span_start
from store import rollup
from store.client import Store
from store.queries_servers import server_detail, servers
from store.queries_turns import session_detail
from store.schema import migrate

TURNS_VIEW = "per-turn view of one session"
SERVERS_VIEW = "per-server view over all calls"
SERVER_PAGE = "one server's page over all its calls"


@dataclass
class QueryResult:
    name: str
    source: str  # where the query comes from
    timings_ms: list[float]
    rows: int
    note: str = ""


class EmptyView(AssertionError):
    """A timed view read nothing (or not all the data): its timing would measure nothing."""


async def _time(run: Callable[[], Awaitable[Any]], repeats: int) -> tuple[list[float], Any]:
    result = await run()  # warm: first read of the parts, query plan caches
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = await run()
        timings.append((time.perf_counter() - start) * 1000)
    return timings, result


async def _data_range(store: Store) -> tuple[int, dt.datetime, dt.datetime]:
    """How many calls the store holds and the range that covers them all."""
    [row] = await store.query("SELECT count() AS n, min(started_at) AS first, max(started_at) AS last FROM calls")
    return row["n"], row["first"], row["last"] + dt.timedelta(seconds=1)


async def settle(store: Store) -> str:
    """Roll up every finished day now, as a store whose days ended long ago has them; what that took."""
    start, days = time.perf_counter(), 0
    while done := await rollup.refresh(store, quiet_seconds=0):
        days += len(done)
    return f"rollup of {days} days {time.perf_counter() - start:.1f} s, once" if days else ""


async def time_views(store: Store, events: int, repeats: int, note: str = "") -> list[QueryResult]:
    """Time each view `repeats` times; raises EmptyView when one reads nothing or misses calls."""
    total, since, until = await _data_range(store)
    session = f"sess-{max(1, events // 8 // TURNS_PER_SESSION) // 2}"
    timings, detail = await _time(lambda: session_detail(store, session), repeats)
    turns = len((detail or {}).get("turns", []))
    if not turns:
        raise EmptyView(f"{TURNS_VIEW}: session {session} has no turns")
    results = [QueryResult(TURNS_VIEW, "store.queries_turns.session_detail", timings, turns)]
    timings, rows = await _time(lambda: servers(store, since, until), repeats)
    counted = sum(r["calls"] for r in rows)
    if counted != total:
        raise EmptyView(f"{SERVERS_VIEW}: counted {counted:,} calls of {total:,} in {since} .. {until}")
    results.append(QueryResult(SERVERS_VIEW, "store.queries_servers.servers", timings, len(rows), note))
    busiest = max(rows, key=lambda r: r["calls"])
    timings, page = await _time(lambda: server_detail(store, busiest["upstream"], since, until), repeats)
    if page is None or page["server"]["calls"] != busiest["calls"]:
        raise EmptyView(f"{SERVER_PAGE}: {busiest['upstream']} counted differently from the servers view")
    results.append(QueryResult(SERVER_PAGE, f"store.queries_servers.server_detail({busiest['upstream']!r})",
                               timings, busiest["calls"]))
    return results


async def run_queries(events: int, calls: int, repeats: int,
                      data_dir: Path | None = None) -> tuple[list[QueryResult], dict[str, float]]:
    """Generate the data (in `data_dir` when given and still empty, else a temp directory), then time the views."""
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-q-") as tmp:
        store = await Store.open(f"chdb://{data_dir or Path(tmp) / 'chdb'}")
        try:
            await migrate(store)
            generated: dict[str, float] = {}
            if (await _data_range(store))[0] == 0:
                generated = await generate(store, events, calls, span_start(dt.datetime.now(dt.UTC)))
            return await time_views(store, events, repeats, await settle(store)), generated
        finally:
            await store.close()


def summary(result: QueryResult) -> str:
    t = sorted(result.timings_ms)
    return f"min {t[0]:.0f} / median {statistics.median(t):.0f} / max {t[-1]:.0f} ms"


async def main(args: argparse.Namespace) -> None:
    results, generated = await run_queries(args.events, args.calls, args.repeats, args.data_dir)
    if generated:
        print(f"generated in {sum(generated.values()):.1f} s: "
              + ", ".join(f"{k} {v:.1f} s" for k, v in generated.items()))
    for r in results:
        print(f"{r.name:<48} {summary(r)} ({r.rows:,} rows; {r.source}{'; ' + r.note if r.note else ''})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="telemetry events (default 1M)")
    parser.add_argument("--calls", type=int, default=10_000_000, help="gateway calls (default 10M)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--data-dir", type=Path, help="chDB directory to fill once and reuse")
    asyncio.run(main(parser.parse_args()))
