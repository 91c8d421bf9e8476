"""Profile a Tollgate process under one bench workload with py-spy; print the top functions.

Run: `python3 -m bench.profile [--workload echo16|seq|blob10|ingest] [--upstream http|stdio] [--no-store]
[--seconds 8]`; `ingest` POSTs 1,000-record OTLP bodies from 4 workers instead of calling tools.
Needs `py-spy` (the `bench` extra). Self time is where CPU burns; inclusive time is what a call tree costs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench import ingest
from bench.client import Client
from bench.targets import UPSTREAM_STDIO, Processes, Target, start_tollgate, start_upstream_http


async def drive(clients: list[Client], workload: str, seconds: float) -> int:
    done = 0
    deadline = time.perf_counter() + seconds
    args = {"n": 10_000_000} if workload == "blob10" else {"text": "hello"}
    tool = "blob" if workload == "blob10" else "echo"

    async def worker(client: Client) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await client.call(tool, args)
            done += 1

    await asyncio.gather(*(worker(c) for c in clients))
    return done


def start_spy(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize(raw: Path, top: int) -> str:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = [f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].split(":")[0].rstrip(")") for f in stack.split(";")]
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    lines = [f"{samples} samples", "self%  function"]
    lines += [f"{100 * n / samples:5.1f}  {f}" for f, n in own.most_common(top)]
    lines += ["", "incl%  function"]
    lines += [f"{100 * n / samples:5.1f}  {f}" for f, n in total.most_common(top * 2)]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="tollgate-profile-") as tmp:
        procs = Processes(Path(tmp))
        try:
            upstream = start_upstream_http(procs) if args.upstream == "http" else Target("stdio", argv=UPSTREAM_STDIO)
            tollgate = await start_tollgate(procs, "tollgate", upstream, store=not args.no_store)
            raw = Path(tmp) / "profile.txt"
            spy_argv = ["py-spy", "record", "--pid", str(tollgate.pid), "--format", "raw", "--rate", "500", "--gil",
                        "--duration", str(int(args.seconds)), "--output", str(raw)]
            if args.workload == "ingest":
                assert tollgate.url is not None
                spy = start_spy(spy_argv)
                result = await ingest.throughput(tollgate.url.removesuffix("/mcp"), 1000, args.seconds, first=0)
                done = int(result.acked_per_s * args.seconds)
                spy.wait(30)
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
                count = 1 if args.workload in ("seq", "blob10") else 16
                clients = [] if args.workload == "ingest" else [await tollgate.open_client(http) for _ in range(count)]
                if clients:
                    await drive(clients, args.workload, 1.0)
                    spy = start_spy(spy_argv)
                    done = await drive(clients, args.workload, args.seconds)
                    spy.wait(30)
            print(f"{done / args.seconds:,.0f} calls (or events)/s under profile ({args.workload}, "
                  f"{args.upstream} upstream, store {'off' if args.no_store else 'on'})")
            print(summarize(raw, args.top))
        finally:
            procs.stop_all()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workload", choices=["echo16", "seq", "blob10", "ingest"], default="echo16")
    parser.add_argument("--upstream", choices=["http", "stdio"], default="http")
    parser.add_argument("--no-store", action="store_true")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--top", type=int, default=25)
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
