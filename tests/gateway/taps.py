"""Test helper: see, as it happens, every byte a stdio upstream receives (stdin tee'd into a FIFO)."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from gateway.config import UpstreamConfig
from tests.gateway.conftest import ECHO_SERVER


def tapped_echo_upstream(name: str, fifo: Path, **kwargs: Any) -> UpstreamConfig:
    """The SDK echo server, with everything written to its stdin also written to `fifo`."""
    os.mkfifo(fifo)
    server = shlex.join([sys.executable, str(ECHO_SERVER), "--name", name])
    return UpstreamConfig(name=name, type="stdio", command="sh",
                          args=("-c", f"tee {shlex.quote(str(fifo))} | {server}"), **kwargs)


class Tap:
    """The messages an upstream received, in order; `wait_for` blocks on new ones arriving."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.seen: list[dict[str, Any]] = []

    async def wait_for(self, method: str, timeout: float = 10.0) -> dict[str, Any]:
        for message in self.seen:
            if message.get("method") == method:
                return message
        async with asyncio.timeout(timeout):
            while True:
                line = await self.reader.readline()
                message = orjson.loads(line)
                self.seen.append(message)
                if message.get("method") == method:
                    return message

    def drain_nowait(self) -> list[dict[str, Any]]:
        """Messages already buffered, without waiting for more."""
        buffered = getattr(self.reader, "_buffer", b"")
        for line in bytes(buffered).splitlines():
            self.seen.append(orjson.loads(line))
        buffered.clear()
        return self.seen


@asynccontextmanager
async def tap(fifo: Path) -> AsyncIterator[Tap]:
    # O_RDWR keeps a writer on the FIFO so reads never see EOF before `tee` opens it.
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb"))
    try:
        yield Tap(reader)
    finally:
        transport.close()
