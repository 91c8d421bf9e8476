"""A store that connects later: lets the gateway start and keep serving while a ClickHouse server is down.

Every call first (re)tries to open the real `Store`, at most once per `retry_seconds`, and raises
`StoreUnavailable` until it succeeds; the writer's spill keeps everything meanwhile. Embedded chDB
never needs this: a local directory either opens or is a configuration error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlparse

from store.client import Column, Store, dsn_database, redact_dsn
from store.errors import StoreUnavailable
from store.health import StoreHealth, quiet_driver_logs

OnConnect = Callable[[Store], Awaitable[Any]]


class DeferredStore:
    """Looks like a `Store`; connects on first use and runs `on_connect` (migrations) once connected."""

    embedded = False

    def __init__(self, dsn: str, *, cluster: str | None, on_connect: OnConnect, retry_seconds: float = 5.0,
                 first_error: str = "", health: StoreHealth | None = None) -> None:
        self._dsn, self._cluster, self._on_connect = dsn, cluster, on_connect
        self._retry_seconds = retry_seconds
        self._store: Store | None = None
        self._next_try = time.monotonic() + retry_seconds
        self._lock = asyncio.Lock()
        self.last_error = first_error
        self.display_dsn = redact_dsn(dsn)
        self.cluster = cluster
        if health is None:
            health = StoreHealth(self.display_dsn, urlparse(dsn).password)
            if first_error:
                health.failed(first_error)
        self.health = health  # shared with each Store opened, so one state is logged and shown across attempts

    @property
    def connected(self) -> bool:
        return self._store is not None

    @property
    def database(self) -> str:
        # Known before connecting: queries are built (`{db}.calls`) before the call that connects.
        return self._store.database if self._store else dsn_database(self._dsn)

    async def _real(self) -> Store:
        if self._store is not None:
            return self._store
        async with self._lock:
            if self._store is None:
                if time.monotonic() < self._next_try:
                    raise StoreUnavailable(f"store {self.display_dsn} unavailable: {self.last_error}")
                self._next_try = time.monotonic() + self._retry_seconds
                try:
                    store = await Store.open(self._dsn, cluster=self._cluster, health=self.health)
                except StoreUnavailable as exc:
                    self.last_error = str(exc)
                    raise
                try:
                    await self._on_connect(store)
                except BaseException as exc:
                    # e.g. the server went away during migrations: release this attempt's thread and
                    # connections (each retry opens a new Store), and stay unconnected.
                    await store.close()
                    if isinstance(exc, StoreUnavailable):
                        self.last_error = str(exc)
                    raise
                self._store = store  # `health` has said it is reachable again
        return self._store

    async def insert(self, table: str, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> int:
        return await (await self._real()).insert(table, rows, columns)

    async def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return await (await self._real()).query(sql, params)

    async def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        await (await self._real()).command(sql, params)

    def written(self, table: str) -> int | None:
        """Never a count: a server store can be written by other processes (see `Store.written`)."""
        return None

    async def columns(self, table: str) -> list[Column]:
        return await (await self._real()).columns(table)

    async def ping(self) -> bool:
        try:
            return await (await self._real()).ping()
        except StoreUnavailable:
            return False

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()


async def open_store(dsn: str, *, cluster: str | None, on_connect: OnConnect) -> Store | DeferredStore:
    """The store for `tollgate serve`: connected now, or (a server DSN that is down) deferred; its health logs
    when it is down (once, then a reminder now and then) and back, instead of the driver at every retry."""
    quiet_driver_logs()
    embedded = dsn.startswith("chdb:")
    health = None if embedded else StoreHealth(redact_dsn(dsn), urlparse(dsn).password)
    try:
        store = await Store.open(dsn, cluster=cluster, health=health)
        try:
            await on_connect(store)
        except BaseException:
            await store.close()  # e.g. the server went away during migrations
            raise
    except StoreUnavailable as exc:
        if embedded:
            raise
        return DeferredStore(dsn, cluster=cluster, on_connect=on_connect, first_error=str(exc), health=health)
    return store
