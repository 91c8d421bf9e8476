"""Test helper: the whole `tollgate serve` service (store, writer, ingest, API) on a real port 0."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.cli import Service, open_service
from gateway.config import Config, StoreConfig


@dataclass
class Running:
    base_url: str
    service: Service

    @property
    def mcp_url(self) -> str:
        return self.base_url + "/mcp"

    async def flushed(self) -> None:
        """Every row submitted so far is in the store."""
        await self.service.writer.flush()

    async def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        await self.flushed()
        rows: list[dict[str, Any]] = await self.service.store.query(sql, params)
        return rows


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on a real loopback port as `tollgate serve` does; yields the base URL."""
    runner = web.AppRunner(app, auto_decompress=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


@asynccontextmanager
async def running_service(config: Config, data_dir: Path, *, now: Callable[[], float] = time.time,
                          **store: Any) -> AsyncIterator[Running]:
    """Open the service with an embedded store in `data_dir` (`store`: other StoreConfig keys, `now`: the
    budgets' clock); close everything afterwards."""
    config = replace(config, store=StoreConfig(**{"dsn": f"chdb://{data_dir}", "flush_seconds": 0.05, **store}))
    service = await open_service(config, now=now)
    try:
        async with serve_app(service.app) as base_url:
            yield Running(base_url, service)
    finally:
        await service.close()
