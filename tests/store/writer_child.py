"""Child process for the kill -9 test: writes calls through a Writer, printing "ACK k flushed" after each."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from pathlib import Path

from store.client import Store
from store.schema import migrate
from store.writer import Writer


async def main(dsn: str, spill_dir: str) -> None:
    store = await Store.open(dsn)
    await migrate(store)
    writer = Writer(store, Path(spill_dir), flush_rows=50, flush_seconds=0.005)
    await writer.start()
    k = 0
    while True:
        row = {"call_id": f"call-{k}", "mcp_session_id": "s", "started_at": dt.datetime.now(dt.UTC)}
        await writer.write("calls", [row])
        print(f"ACK {k} {writer.stats()['flushed_rows']}", flush=True)
        k += 1
        await asyncio.sleep(0)  # let the flusher interleave with writes


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
