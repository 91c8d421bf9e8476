"""Test helpers: the bytes on a stdio upstream's wire. `tap` sees what it receives as it happens (stdin tee'd into
a FIFO); `teed` and `Wire` record both directions to files, read once the upstream has stopped."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
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


def teed(upstream: UpstreamConfig, directory: Path) -> UpstreamConfig:
    """`upstream` under `sh` with its stdin and stdout copied byte for byte to DIR/NAME.in and DIR/NAME.out: an
    independent record of exactly what the gateway wrote to it and read from it."""
    assert upstream.command is not None, "only a stdio upstream can be teed"
    command = shlex.join([upstream.command, *upstream.args])
    sent, received = (shlex.quote(str(directory / f"{upstream.name}.{end}")) for end in ("in", "out"))
    return replace(upstream, command="sh", args=("-c", f"tee {sent} | {command} | tee {received}"))


@dataclass
class Wire:
    """The lines a teed upstream was sent and wrote, read once the service (and so the upstream) has stopped."""

    sent: list[bytes]
    written: list[bytes]

    @classmethod
    def of(cls, directory: Path, name: str) -> Wire:
        return cls(*((directory / f"{name}.{end}").read_bytes().split(b"\n")[:-1] for end in ("in", "out")))

    def hop(self, method: str, key: str, value: str) -> tuple[bytes, bytes]:
        """The request line of `method` whose params[key] is `value`, and the upstream's answer to it, raw."""
        return self.exchange(lambda message: _matches(message, method, key, value))

    def exchange(self, is_request: Callable[[dict[str, Any]], bool]) -> tuple[bytes, bytes]:
        """The one request line the upstream was sent for which `is_request(message)` holds, and its answer, raw."""
        (request,) = [line for line in self.sent if is_request(orjson.loads(line))]
        upstream_id = orjson.loads(request)["id"]
        (answer,) = [line for line in self.written if _is_answer(orjson.loads(line), upstream_id)]
        return request, answer


def _matches(message: dict[str, Any], method: str, key: str, value: str) -> bool:
    return message.get("method") == method and message.get("params", {}).get(key) == value


def _is_answer(message: dict[str, Any], upstream_id: Any) -> bool:
    return "method" not in message and message.get("id") == upstream_id
