"""CPU time of the Tollgate process per call under one workload: less noisy than wall-clock on a shared machine.

Run: `python3 -m bench.cpu [--workload echo16|seq|blob10] [--upstream http|stdio] [--no-store] [--calls 4000]
[--repeat 3]`. Reads utime+stime of the `tollgate serve` process from /proc/<pid>/stat before and after the
calls (after a warm-up) and prints CPU µs per call (median of the repeats) and, for blob10, MB/s of CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.client import Client
from bench.targets import UPSTREAM_STDIO, Processes, Target, start_tollgate, start_upstream_http

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15)


async def run_calls(clients: list[Client], tool: str, args: dict[str, object], calls: int) -> None:
    per_client = max(1, calls // len(clients))

    async def worker(client: Client) -> None:
        for _ in range(per_client):
            await client.call(tool, args)

    await asyncio.gather(*(worker(c) for c in clients))


async def main(args: argparse.Namespace) -> None:
    blob = args.workload == "blob10"
    tool, call_args = ("blob", {"n": 10_000_000}) if blob else ("echo", {"text": "hello"})
    count = 1 if args.workload in ("seq", "blob10") else 16
    calls = args.calls if not blob else min(args.calls, 200)
    with tempfile.TemporaryDirectory(prefix="tollgate-cpu-") as tmp:
        procs = Processes(Path(tmp))
        try:
            upstream = start_upstream_http(procs) if args.upstream == "http" else Target("stdio", argv=UPSTREAM_STDIO)
            tollgate = await start_tollgate(procs, "tollgate", upstream, store=not args.no_store)
            assert tollgate.pid is not None
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
                clients = [await tollgate.open_client(http) for _ in range(count)]
                await run_calls(clients, tool, call_args, max(count, calls // 5))
                results = []
                for _ in range(args.repeat):
                    before, start = cpu_seconds(tollgate.pid), time.perf_counter()
                    await run_calls(clients, tool, call_args, calls)
                    cpu, wall = cpu_seconds(tollgate.pid) - before, time.perf_counter() - start
                    done = (calls // count) * count
                    results.append((cpu / done * 1e6, done / wall))
            per_call = statistics.median(r[0] for r in results)
            line = (f"{args.workload} {args.upstream} store={'off' if args.no_store else 'on'}: "
                    f"{per_call:,.0f} µs CPU/call (runs: {', '.join(f'{r[0]:,.0f}' for r in results)}); "
                    f"wall {statistics.median(r[1] for r in results):,.0f} calls/s")
            if blob:
                line += f"; {10.0 / (per_call / 1e6):,.0f} MB per CPU-second"
            print(line)
        finally:
            procs.stop_all()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workload", choices=["echo16", "seq", "blob10"], default="echo16")
    parser.add_argument("--upstream", choices=["http", "stdio"], default="http")
    parser.add_argument("--no-store", action="store_true")
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
