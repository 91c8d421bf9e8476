"""Child process for the disk-full test: a started Writer whose spill cannot grow more than 100 bytes past its
first write (RLIMIT_FSIZE: what a full disk looks like to write(2)); prints what the second write did."""

from __future__ import annotations

import asyncio
import resource
import signal
import sys
from pathlib import Path

import orjson

from store.errors import StoreUnavailable
from store.writer import Writer


class NoStore:
    """The flusher never runs here (flush_seconds is an hour): nothing is ever inserted."""

    display_dsn = "none"


async def main(spill_dir: str) -> None:
    writer = Writer(NoStore(), Path(spill_dir), flush_seconds=3600)  # type: ignore[arg-type]
    await writer.start()
    await writer.write_all({"calls": [{"call_id": "kept"}]})
    size = writer.stats()["spilled_bytes"]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write(2) then fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    try:
        await writer.write_all({"calls": [{"call_id": "x" * 300}], "upstream_events": [{"event_id": "e"}]})
        outcome = "accepted"
    except StoreUnavailable as exc:
        outcome = f"refused: {exc}"
    print(orjson.dumps({"outcome": outcome, "size": size, "stats": writer.stats()}).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
