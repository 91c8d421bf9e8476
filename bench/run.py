"""`make bench`: every benchmark in one run, compared targets interleaved; prints and writes bench/results.md.

`python3 -m bench.run --quick` takes about two minutes; the default is the fuller run (about six minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench import ingest, proxy, queries, report, ui_render
from bench.targets import (
    ROOT,
    UPSTREAM_STDIO,
    Processes,
    Target,
    start_floor,
    start_mcp_proxy,
    start_tollgate,
    start_upstream_http,
)

RESULTS = ROOT / "bench" / "results.md"
README = ROOT / "README.md"
README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"
ALL_SECTIONS = {"proxy", "ingest", "queries", "ui"}


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def proxy_section(procs: Processes, plan: proxy.Plan, notes: list[str]) -> tuple[list[report.Row], str]:
    """Start every target, run the interleaved rounds; returns the rows and Tollgate's base URL for ingest."""
    upstream = start_upstream_http(procs)
    direct_stdio = Target("direct stdio", argv=UPSTREAM_STDIO)
    log("starting Tollgate (http upstream, store on and off; stdio upstream) and mcp-proxy")
    tg_http = await start_tollgate(procs, "tollgate http", upstream)
    tg_bare = await start_tollgate(procs, "tollgate http no-store", upstream, store=False)
    tg_stdio = await start_tollgate(procs, "tollgate stdio", direct_stdio)
    floor = start_floor(procs, upstream)
    peer = await start_mcp_proxy(procs)
    if isinstance(peer, str) or peer is None:
        notes.append(f"mcp-proxy row skipped: {peer}")
        peer = None
    targets = [upstream, Target("direct http A/A", url=upstream.url), tg_http, tg_bare, floor, direct_stdio, tg_stdio]
    targets += [peer] if peer is not None else []
    bench = proxy.Bench(targets, plan)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        await bench.open(http)
        log(f"proxy rounds: {plan.rounds} x {len(targets)} targets")
        try:
            await bench.run()
        finally:
            await bench.close()
    s = bench.samples
    rows = report.control_rows(s[upstream.name], s["direct http A/A"])
    rows += report.proxy_rows("Tollgate, http upstream", s[tg_http.name], s[upstream.name])
    rows += report.proxy_rows("aiohttp pass-through floor (bench/floor.py), http upstream", s[floor.name],
                              s[upstream.name], goals=False)
    rows += report.proxy_rows("Tollgate / aiohttp floor, http upstream", s[tg_http.name], s[floor.name],
                              goals=False)
    rows += report.proxy_rows("Tollgate, stdio upstream", s[tg_stdio.name], s[direct_stdio.name])
    if peer is not None:
        rows += report.peer_rows("Tollgate / mcp-proxy, stdio upstream", s[tg_stdio.name], s[peer.name], peer.note)
        rows += report.proxy_rows(f"{peer.note} (reference), stdio upstream", s[peer.name],
                                  s[direct_stdio.name], goals=False)
    notes.append("The goal \"ahead of the reference peer on every row\" is judged on the stdio rows only: mcp-proxy "
                 "has no HTTP-to-HTTP mode, so the HTTP-upstream rows have no peer.")
    rows += report.metering_rows(s[tg_http.name], s[tg_bare.name])
    assert tg_http.url is not None
    return rows, tg_http.url.removesuffix("/mcp")


async def ingest_section(base: str, quick: bool) -> list[report.Row]:
    seconds = 4.0 if quick else 10.0
    results = []
    for number, records in enumerate((100, 1000)):
        log(f"ingest: {records}-record batches for {seconds:g}s")
        results.append(await ingest.throughput(base, records, seconds, first=number * 1_000_000))
    log("ingest: paced 1,000 events/s")
    latencies = await ingest.paced_latency(base, 1000, 100, 6.0 if quick else 15.0, first=5_000_000)
    return report.ingest_rows(results, latencies)


async def query_section(quick: bool) -> list[report.Row]:
    events, calls = (100_000, 1_000_000) if quick else (1_000_000, 10_000_000)
    log(f"queries: generating {events:,} telemetry events and {calls:,} calls")
    results, generated = await queries.run_queries(events, calls, repeats=5 if quick else 10)
    log(f"queries: generated in {sum(generated.values()):.1f}s")
    return report.query_rows(results, events, calls)


async def ui_section(quick: bool) -> list[report.Row]:
    events, runs = (100_000, 5) if quick else (1_000_000, 15)
    log(f"ui: session page among {events:,} telemetry events, {runs} loads in Chromium")
    seeded = await ui_render.run(events, runs)
    return report.ui_rows(seeded["samples"], seeded["events"], seeded["calls"])


def update_readme(table: str) -> None:
    """Carry the results table into the README between its bench markers (left alone when they are absent)."""
    text = README.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        log("README has no bench markers: table not copied")
        return
    README.write_text(text[:start + len(README_START)] + "\n" + table + text[end:], encoding="utf-8")
    log("README benchmark table updated")


async def main(quick: bool, sections: set[str]) -> int:
    if "ui" in sections and not shutil.which(ui_render.CHROMIUM):
        # Stop before minutes of work rather than write a README table that silently lacks the row.
        log(f"{ui_render.CHROMIUM} not found: the session page row needs it (apt-get install chromium), "
            "or leave the row out with --only proxy --only ingest --only queries")
        return 2
    plan = proxy.QUICK if quick else proxy.FULL
    started = time.perf_counter()
    load_before = os.getloadavg()
    rows: list[report.Row] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-") as tmp:
        procs = Processes(Path(tmp))
        try:
            base = None
            if "proxy" in sections:
                proxy_rows, base = await proxy_section(procs, plan, notes)
                rows += proxy_rows
            if "ingest" in sections:
                if base is None:
                    base = (await start_tollgate(procs, "tollgate ingest", None)).url or ""
                    base = base.removesuffix("/mcp")
                rows += await ingest_section(base, quick)
        finally:
            procs.stop_all()
    if "queries" in sections:
        rows += await query_section(quick)
    if "ui" in sections:
        rows += await ui_section(quick)
    cores = os.cpu_count() or 1
    if load_before[0] > cores:
        notes.append(f"Load average {load_before[0]:.1f} at start on {cores} cores: other work shared the machine, so "
                     "times and ratios are noisier than usual (the A/A rows show how much).")
    text = _document(rows, notes, quick, load_before, time.perf_counter() - started)
    print(text)
    RESULTS.write_text(text, encoding="utf-8")
    log(f"written to {RESULTS.relative_to(ROOT)}")
    if sections == ALL_SECTIONS:
        update_readme(_readme_table(rows, quick, load_before))
    return 0


def _readme_table(rows: list[report.Row], quick: bool, load: tuple[float, float, float]) -> str:
    return (f"Measured by `python3 -m bench.run{' --quick' if quick else ''}` on "
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d}, {os.cpu_count()} cores, load average {load[0]:.1f} at start "
            "(full output with notes: [`bench/results.md`](bench/results.md)).\n\n" + report.markdown(rows))


def _document(rows: list[report.Row], notes: list[str], quick: bool, load: tuple[float, float, float],
              seconds: float) -> str:
    header = (f"# Benchmark results\n\n`python3 -m bench.run{' --quick' if quick else ''}` on "
              f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average "
              f"{load[0]:.1f} at start, {seconds:.0f} s in all. Ratios are to a direct connection in the same "
              "round: median (min-max) over rounds.\n\n")
    footer = "".join(f"\n- {note}" for note in notes)
    return header + report.markdown(rows) + (f"\nNotes:{footer}\n" if footer else "")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="about two minutes, 10 times less query data")
    parser.add_argument("--only", choices=sorted(ALL_SECTIONS), action="append",
                        help="run only these sections (repeatable); the README table is updated by a full run only")
    args = parser.parse_args()
    sections = set(args.only or ALL_SECTIONS)
    try:
        import uvloop

        sys.exit(uvloop.run(main(args.quick, sections)))
    except ImportError:
        sys.exit(asyncio.run(main(args.quick, sections)))
