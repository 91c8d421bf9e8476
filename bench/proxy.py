"""Proxy overhead and metering cost: every target driven in small interleaved blocks within one run.

Per round and target: sequential small calls (p50, p99), 16 concurrent clients (calls/s), 1 MB and 10 MB
results (MB/s, peak RSS of the target process). Ratios are taken against the direct target of the same
round; the round order rotates so no target always runs first.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass, field

import aiohttp

from bench.client import Client
from bench.targets import Target, proc_status, reset_peak_rss

MB = 1_000_000
CONCURRENCY = 16


@dataclass
class Plan:
    rounds: int
    seq_calls: int  # per round and target
    conc_seconds: float
    blob_1mb_calls: int
    blob_10mb_calls: int


QUICK = Plan(rounds=4, seq_calls=100, conc_seconds=0.6, blob_1mb_calls=4, blob_10mb_calls=2)
FULL = Plan(rounds=10, seq_calls=200, conc_seconds=1.5, blob_1mb_calls=8, blob_10mb_calls=3)


@dataclass
class Samples:
    """Everything measured for one target, one entry per round."""

    latencies_ms: list[float] = field(default_factory=list)  # pooled over rounds
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    calls_per_s: list[float] = field(default_factory=list)
    mb_per_s_1: list[float] = field(default_factory=list)
    mb_per_s_10: list[float] = field(default_factory=list)
    peak_rss: int = 0  # VmHWM after the 10 MB blocks, bytes
    rss_growth: int = 0  # VmHWM minus the RSS just before a 10 MB block, bytes (max over rounds)


@dataclass
class Bench:
    """Targets with their open clients (one for sequential and blob calls, 16 for the concurrent block)."""

    targets: list[Target]
    plan: Plan
    single: dict[str, Client] = field(default_factory=dict)
    many: dict[str, list[Client]] = field(default_factory=dict)
    samples: dict[str, Samples] = field(default_factory=dict)

    async def open(self, http: aiohttp.ClientSession) -> None:
        for target in self.targets:
            self.single[target.name] = await target.open_client(http)
            if target.url is None:  # one stdio pipe, 16 callers multiplexed by id (as Tollgate's shared upstream)
                self.many[target.name] = [self.single[target.name]] * CONCURRENCY
            else:
                self.many[target.name] = [await target.open_client(http) for _ in range(CONCURRENCY)]
            self.samples[target.name] = Samples()

    async def close(self) -> None:
        for target in self.targets:
            for client in target.clients:
                with contextlib.suppress(Exception):  # closing after the measurement; nothing to report
                    await asyncio.wait_for(client.close(), 5)

    async def run(self) -> None:
        await self._round(record=False, scale=0.25)  # warm-up: connections, caches, JIT-free but lazy imports
        for number in range(self.plan.rounds):
            await self._round(record=True, rotate=number)

    async def _round(self, *, record: bool, rotate: int = 0, scale: float = 1.0) -> None:
        order = self.targets[rotate % len(self.targets):] + self.targets[:rotate % len(self.targets)]
        plan = self.plan
        for target in order:
            await self._sequential(target, max(10, int(plan.seq_calls * scale)), record)
        for target in order:
            await self._concurrent(target, plan.conc_seconds * scale, record)
        for target in order:
            await self._blobs(target, MB, max(1, int(plan.blob_1mb_calls * scale)), record)
        for target in order:
            await self._blobs(target, 10 * MB, max(1, int(plan.blob_10mb_calls * scale)), record)

    async def _sequential(self, target: Target, calls: int, record: bool) -> None:
        client = self.single[target.name]
        timings: list[float] = []
        for i in range(calls):
            t0 = time.perf_counter()
            await client.call("echo", {"text": f"hello {i}"})
            timings.append((time.perf_counter() - t0) * 1000)
        if record:
            samples = self.samples[target.name]
            samples.latencies_ms += timings
            samples.p50_ms.append(statistics.median(timings))
            samples.p99_ms.append(percentile(timings, 99))

    async def _concurrent(self, target: Target, seconds: float, record: bool) -> None:
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker(client: Client, k: int) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await client.call("echo", {"text": f"client {k}"})
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(c, k) for k, c in enumerate(self.many[target.name])))
        if record:
            self.samples[target.name].calls_per_s.append(done / (time.perf_counter() - start))

    async def _blobs(self, target: Target, size: int, calls: int, record: bool) -> None:
        client = self.single[target.name]
        pid = target.pid if size >= 10 * MB and target.name.startswith(("tollgate", "mcp-proxy")) else None
        rss_before = proc_status(pid, "VmRSS") if pid is not None and reset_peak_rss(pid) else 0
        received = 0
        start = time.perf_counter()
        for _ in range(calls):
            received += len(await client.call("blob", {"n": size}))
        elapsed = time.perf_counter() - start
        if not record:
            return
        samples = self.samples[target.name]
        (samples.mb_per_s_10 if size >= 10 * MB else samples.mb_per_s_1).append(received / MB / elapsed)
        if pid is not None:
            peak = proc_status(pid, "VmHWM")
            samples.peak_rss = max(samples.peak_rss, peak)
            if rss_before:
                samples.rss_growth = max(samples.rss_growth, peak - rss_before)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    """Per-round ratios (round i of one target over round i of its reference)."""
    return [n / d for n, d in zip(numerators, denominators, strict=False) if d]
