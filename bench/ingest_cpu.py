"""CPU cost per event of each OTLP ingest stage, in process (no HTTP client competing for the cores).

Run: `python3 -m bench.ingest_cpu [--bodies 20] [--records 1000] [--flush-rows 20000]`. Bodies are built like
bench/ingest.py (the captured s1 api_request record, distinct ids per body); the real Writer spills and flushes. Each
stage is timed with time.process_time (all threads of this process, so chDB's own insert and merge threads count),
which other work on the machine does not inflate the way it inflates wall-clock time.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.ingest import body, template
from ingest.claude_code import MappingOptions, to_rows
from ingest.otlp import decode_protobuf
from store.client import Store
from store.schema import migrate
from store.writer import Writer


class Clock:
    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}

    def run(self, stage: str, fn: Callable[[], Any]) -> Any:
        t0 = time.process_time()
        out = fn()
        self.cpu[stage] = self.cpu.get(stage, 0.0) + time.process_time() - t0
        return out

    async def arun(self, stage: str, fn: Callable[[], Any]) -> Any:
        t0 = time.process_time()
        out = await fn()
        self.cpu[stage] = self.cpu.get(stage, 0.0) + time.process_time() - t0
        return out


async def main(bodies: int, records: int, flush_rows: int) -> None:
    tmpl = template(records)
    payloads = [body(tmpl, n) for n in range(bodies)]
    clock = Clock()
    options = MappingOptions()
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(f"chdb://{tmp}/chdb")
        await migrate(store)
        # flushes only when asked, so the request path and the flush are timed apart
        writer = Writer(store, Path(tmp) / "spill", flush_rows=flush_rows, flush_seconds=3600.0,
                        max_pending_rows=10_000_000)
        await writer.start()
        for payload in payloads:
            decoded = clock.run("decode (protobuf parse + records)", lambda p=payload: decode_protobuf("logs", p))
            rows = clock.run("map (to_rows)", lambda d=decoded: to_rows(d, options))
            await clock.arun("spill append (writer.write_all)", lambda r=rows: writer.write_all(r))
        await clock.arun(f"flush into chDB ({flush_rows:,}-row batches)", writer.flush)
        counted = await store.query("SELECT count() AS n FROM cc_api_requests")
        assert counted[0]["n"] == bodies * records, counted
        await writer.stop()
        await store.close()
    events = bodies * records
    total = sum(clock.cpu.values())
    print(f"{events:,} events ({bodies} bodies of {records}), CPU µs per event by stage:")
    for stage, seconds in clock.cpu.items():
        print(f"  {stage:<42} {seconds / events * 1e6:8.2f} µs  {100 * seconds / total:5.1f}%")
    print(f"  {'total':<42} {total / events * 1e6:8.2f} µs  -> {events / total:,.0f} events/s per core")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bodies", type=int, default=20)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--flush-rows", type=int, default=20_000)
    args = parser.parse_args()
    asyncio.run(main(args.bodies, args.records, args.flush_rows))
