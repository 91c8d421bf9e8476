"""The Markdown results table: each figure next to its goal, ratios as min / median / max over rounds."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bench.ingest import IngestResult
from bench.proxy import Samples, percentile, ratios
from bench.queries import SERVER_PAGE, SERVERS_VIEW, TURNS_VIEW, QueryResult

MiB = 1024 * 1024
X = "\u00d7"  # the multiplication sign, spelled out for ruff


@dataclass
class Row:
    what: str
    goal: str
    measured: str
    detail: str
    met: bool | None  # None: no goal (reference or control)


def spread(values: list[float], digits: int = 2) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    return f"{X}{statistics.median(ordered):.{digits}f} ({ordered[0]:.{digits}f}-{ordered[-1]:.{digits}f})"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def proxy_rows(label: str, target: Samples, direct: Samples, *, goals: bool = True) -> list[Row]:
    """The four proxy rows of one target against its direct reference."""
    def check(ok: bool) -> bool | None:
        return ok if goals else None

    p50 = ratios(target.p50_ms, direct.p50_ms)
    tput = ratios(target.calls_per_s, direct.calls_per_s)
    mb1 = ratios(target.mb_per_s_1, direct.mb_per_s_1)
    mb10 = ratios(target.mb_per_s_10, direct.mb_per_s_10)
    rss = f"; peak RSS {target.peak_rss / MiB:.0f} MiB, +{target.rss_growth / MiB:.0f} MiB during 10 MB calls" \
        if target.peak_rss else ""
    return [
        Row(f"{label}: p50 latency, sequential small calls", f"≤ {X}1.10" if goals else "", spread(p50),
            f"p50 {percentile(target.latencies_ms, 50):.2f} ms, p99 {percentile(target.latencies_ms, 99):.2f} ms "
            f"(direct {percentile(direct.latencies_ms, 50):.2f} / {percentile(direct.latencies_ms, 99):.2f} ms)",
            check(_median(p50) <= 1.10)),
        Row(f"{label}: throughput, 16 concurrent clients", f"≥ {X}0.90" if goals else "", spread(tput),
            f"{_median(target.calls_per_s):,.0f} calls/s (direct {_median(direct.calls_per_s):,.0f})",
            check(_median(tput) >= 0.90)),
        Row(f"{label}: 1 MB result", "", spread(mb1),
            f"{_median(target.mb_per_s_1):,.0f} MB/s (direct {_median(direct.mb_per_s_1):,.0f})", None),
        Row(f"{label}: 10 MB result", f"≥ {X}0.90, RSS growth ≤ 3{X} payload" if goals else "", spread(mb10),
            f"{_median(target.mb_per_s_10):,.0f} MB/s (direct {_median(direct.mb_per_s_10):,.0f}){rss}",
            check(_median(mb10) >= 0.90 and (not target.peak_rss or target.rss_growth <= 3 * 10_000_000))),
    ]


def peer_rows(label: str, target: Samples, peer: Samples, peer_name: str) -> list[Row]:
    """The goal "ahead of the reference peer on every row": the target over the peer, round by round, judged on
    the median (p50 latency below x1.00, throughput and MB/s above)."""
    def row(what: str, mine: list[float], theirs: list[float], lower_better: bool, unit: str) -> Row:
        r = ratios(mine, theirs)
        ahead = _median(r) < 1.0 if lower_better else _median(r) > 1.0
        return Row(f"{label}: {what}", f"< {X}1.00 (ahead)" if lower_better else f"> {X}1.00 (ahead)", spread(r),
                   f"{_median(mine):,.{2 if unit == 'ms' else 0}f} vs {_median(theirs):,.{2 if unit == 'ms' else 0}f} "
                   f"{unit} ({peer_name})", ahead)

    return [
        row("p50 latency, sequential small calls", target.p50_ms, peer.p50_ms, True, "ms"),
        row("throughput, 16 concurrent clients", target.calls_per_s, peer.calls_per_s, False, "calls/s"),
        row("1 MB result", target.mb_per_s_1, peer.mb_per_s_1, False, "MB/s"),
        row("10 MB result", target.mb_per_s_10, peer.mb_per_s_10, False, "MB/s"),
    ]


def control_rows(a: Samples, b: Samples) -> list[Row]:
    return [
        Row("A/A control (direct vs direct): p50 latency", "noise floor", spread(ratios(b.p50_ms, a.p50_ms)), "",
            None),
        Row("A/A control: throughput, 16 clients", "noise floor", spread(ratios(b.calls_per_s, a.calls_per_s)), "",
            None),
        Row("A/A control: 10 MB result", "noise floor", spread(ratios(b.mb_per_s_10, a.mb_per_s_10)), "", None),
    ]


def metering_rows(on: Samples, off: Samples) -> list[Row]:
    tput = ratios(on.calls_per_s, off.calls_per_s)
    p50 = ratios(on.p50_ms, off.p50_ms)
    return [
        Row("metering + store on / off: throughput, 16 clients", f"≥ {X}0.95", spread(tput),
            f"{_median(on.calls_per_s):,.0f} vs {_median(off.calls_per_s):,.0f} calls/s", _median(tput) >= 0.95),
        Row("metering + store on / off: p50 latency", "", spread(p50),
            f"{percentile(on.latencies_ms, 50):.2f} vs {percentile(off.latencies_ms, 50):.2f} ms", None),
    ]


def ingest_rows(results: list[IngestResult], latencies: list[float]) -> list[Row]:
    rows = []
    for r in results:
        goal = "≥ 50,000 events/s" if r.records == 1000 else ""
        rows.append(Row(f"OTLP ingest, {r.records:,}-record batches", goal, f"{r.stored_per_s:,.0f} events/s",
                        f"stored in chDB (drain {r.drain_s:.1f} s included); {r.acked_per_s:,.0f}/s acknowledged"
                        + (f"; {r.throttled} bodies throttled (429/503, resent after Retry-After)"
                           if r.throttled else ""),
                        r.stored_per_s >= 50_000 if goal else None))
    if latencies:
        p99 = percentile(latencies, 99)
        rows.append(Row("OTLP p99 request latency at 1,000 events/s", "< 50 ms", f"{p99:.1f} ms",
                        f"p50 {percentile(latencies, 50):.1f} ms over {len(latencies)} requests of 100 records",
                        p99 < 50))
    for r in results:
        if r.latencies_ms:
            rows.append(Row(f"OTLP p99 request latency, {r.records:,}-record batches at full speed", "",
                            f"{percentile(r.latencies_ms, 99):.1f} ms",
                            f"p50 {percentile(r.latencies_ms, 50):.1f} ms over {len(r.latencies_ms):,} requests "
                            "from 4 workers (the throughput run above)", None))
    return rows


def query_rows(results: list[QueryResult], events: int, calls: int) -> list[Row]:
    goals = {TURNS_VIEW: 50.0, SERVERS_VIEW: 500.0}  # the two; one server's page is shown without a goal
    rows = []
    for r in results:
        goal = goals.get(r.name)
        median = statistics.median(r.timings_ms)
        scale = f"{events / 1e6:g}M events, {calls / 1e6:g}M calls"
        page = f"{r.name} ({r.rows:,} of the {calls / 1e6:g}M calls; {events / 1e6:g}M events)"
        rows.append(Row(page if r.name == SERVER_PAGE else f"{r.name} ({scale})",
                        f"< {goal:.0f} ms" if goal else "", f"{median:.0f} ms",
                        f"min {min(r.timings_ms):.0f} / max {max(r.timings_ms):.0f} ms; {r.source}"
                        + (f"; {r.note}" if r.note else ""), median < goal if goal else None))
    return rows


def markdown(rows: list[Row]) -> str:
    lines = ["| what | goal | measured | detail | |", "|---|---|---|---|---|"]
    for row in rows:
        verdict = "" if row.met is None else ("met" if row.met else "**missed**")
        lines.append(f"| {row.what} | {row.goal} | {row.measured} | {row.detail} | {verdict} |")
    return "\n".join(lines) + "\n"


def ui_rows(samples: list[dict[str, float]], events: int, calls: int) -> list[Row]:
    """The session page's render time in headless Chromium, navigation start to the page's rendered mark."""
    if not samples:
        return [Row("session page render", "< 200 ms", "n/a", "no samples", False)]
    rendered = sorted(s["rendered"] for s in samples)
    api = statistics.median(s["api"] for s in samples)
    median = statistics.median(rendered)
    return [Row(f"session page render in Chromium ({events / 1e6:g}M events, {calls / 1e6:g}M calls)",
                "< 200 ms", f"{median:.0f} ms",
                f"min {rendered[0]:.0f} / max {rendered[-1]:.0f} ms over {len(rendered)} loads; API call "
                f"{api:.0f} ms of it; {samples[0]['turns']:.0f} turns, {samples[0]['calls']:.0f} calls",
                median < 200)]
