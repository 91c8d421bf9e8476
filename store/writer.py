"""The one batching writer: every producer's rows go to the durable spill first, then to the store in batches.

A write is acknowledged once its line is in the spill; a background task stores sealed segments by size or
interval, retries with backoff while the store is down, and deletes segments only after they are stored.
Replays are idempotent because every table is a ReplacingMergeTree keyed by a deterministic id: read with FINAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from store.client import Store
from store.errors import SpillFull, StoreError, StoreQueryError, StoreUnavailable, WriterBusy
from store.spill import Batch, Segment, Spill, encode, read_segment, read_segment_raw

log = logging.getLogger(__name__)
DEFAULT_MAX_SPILL_BYTES = 1024**3
DROP_LOG_SECONDS = 60.0  # at most one log line per this long about rows dropped on a full spill


class Writer:
    """Spill-then-store writer. `submit` (sync, hot path) and `write` (async, bounded) must be called from
    the event loop thread; both return only after the rows are in the spill."""

    def __init__(
        self,
        store: Store,
        spill_dir: Path,
        *,
        flush_rows: int = 5000,
        flush_seconds: float = 1.0,
        max_pending_rows: int = 200_000,
        max_spill_bytes: int = DEFAULT_MAX_SPILL_BYTES,
        fsync: bool = False,
        max_backoff_seconds: float = 30.0,
    ) -> None:
        self.store = store
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.max_pending_rows = max_pending_rows
        self.max_spill_bytes = max_spill_bytes
        self.max_backoff_seconds = max_backoff_seconds
        self._spill = Spill(Path(spill_dir), fsync=fsync)
        self._flush_lock = asyncio.Lock()
        self._progress = asyncio.Condition()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._backoff = 0.0
        self._batch: list[Segment] | None = None  # the sealed segments being stored, kept until all stored
        self._batch_done: set[str] = set()  # tables of the current batch already stored
        self._leftovers: set[Path] = set()  # segments a previous run left, until they are stored
        self._flushed_rows = 0
        self._flush_errors = 0
        self._rejected_rows = 0
        self._dropped_rows = 0
        self._dropped_unlogged = 0
        self._dropped_logged_at = -math.inf
        self._refusing = False  # the last write was refused or dropped (backlog or spill full): /healthz says so
        self._last_error: str | None = None

    async def start(self) -> None:
        """Adopt and replay leftover spill segments (best effort if the store is down), then start flushing."""
        await asyncio.get_running_loop().run_in_executor(None, self._spill.open)
        self._leftovers = {segment.path for segment in self._spill.sealed}
        self._started = True
        if self._spill.sealed:
            log.info("replaying %d spilled rows into the store", self._spill.pending_rows)
            try:
                await self.flush()
            except StoreError as exc:
                log.warning("replay deferred, store unavailable: %s", exc)
        self._task = asyncio.create_task(self._run(), name="tollgate-writer")

    async def stop(self) -> None:
        """Stop the background task and store everything; rows the store cannot take stay in the spill."""
        if not self._started:
            return
        self._stop.set()
        self._wake.set()
        if self._task:
            await self._task
        try:
            await self.flush()
        except StoreError as exc:
            log.warning("%d rows stay in the spill for the next start: %s", self._spill.pending_rows, exc)
        self._spill.close()
        self._started = False

    def submit(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Hot path: append to the spill (one write syscall, no fsync, no back-pressure) and return. On a
        full spill the rows are dropped and counted: accounting must not fail the call it describes."""
        data = encode({table: rows})
        if self._spill_full(len(data)):
            self._drop(table, len(rows))
            return
        self._append(data, len(rows))

    async def replay_leftovers(self) -> None:
        """Store what a previous run left in the spill, unless that is done; raises the store's error if it
        cannot. For readers that rebuild state from the store (budget spend), which must not read before."""
        self._leftovers.intersection_update(segment.path for segment in self._spill.sealed)
        if self._leftovers:
            await self.flush()
            self._leftovers.clear()

    async def write(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Acknowledge one table's rows durably; see `write_all`."""
        await self.write_all({table: rows})

    async def write_all(self, tables: Mapping[str, Sequence[dict[str, Any]]]) -> None:
        """Acknowledge several tables' rows (one OTLP body) durably as one unit: all are spilled, or none
        and WriterBusy is raised when the backlog would pass `max_pending_rows`, SpillFull when the spill
        would pass `max_spill_bytes`."""
        rows = sum(len(table_rows) for table_rows in tables.values())
        pending = self._spill.pending_rows
        # A write larger than the whole bound is still taken into an empty backlog, or it never could be.
        if pending and pending + rows > self.max_pending_rows:
            self._refusing = True
            raise WriterBusy(self.retry_after_seconds(), pending)
        data = encode(tables)
        if self._spill_full(len(data)):
            self._refusing = True
            raise SpillFull(self.retry_after_seconds(), self._spill.size_bytes, self.max_spill_bytes)
        self._append(data, rows)

    def retry_after_seconds(self) -> float:
        return max(1.0, self._backoff, self.flush_seconds)

    def _spill_full(self, size: int) -> bool:
        used = self._spill.size_bytes
        return bool(used) and used + size > self.max_spill_bytes

    def _drop(self, table: str, rows: int) -> None:
        self._refusing = True
        self._dropped_rows += rows
        self._dropped_unlogged += rows
        now = time.monotonic()
        if now - self._dropped_logged_at >= DROP_LOG_SECONDS:
            log.error("spill full (%d of %d bytes; store %s down?): dropped %d rows (last: %s), %d since start",
                      self._spill.size_bytes, self.max_spill_bytes, self.store.display_dsn,
                      self._dropped_unlogged, table, self._dropped_rows)
            self._dropped_logged_at, self._dropped_unlogged = now, 0

    def _append(self, data: bytes, rows: int) -> None:
        if not self._started:
            raise StoreError("writer is not started")
        if not rows:
            return
        try:
            self._spill.append_lines(data, rows)
        except OSError as exc:
            self._refusing = True
            raise StoreUnavailable(f"cannot append to spill {self._spill.directory}: {exc}") from exc
        self._refusing = False
        if self._spill.active_rows >= self.flush_rows:
            self._spill.seal()
            self._wake.set()

    async def flush(self) -> None:
        """Store everything written before this call; raises the store's error if it cannot."""
        async with self._flush_lock:
            self._spill.seal()
            try:
                while self._spill.sealed:
                    await self._store_batch()
            except StoreError as exc:
                self._flush_errors += 1
                self._last_error = str(exc)
                raise
            finally:
                async with self._progress:
                    self._progress.notify_all()

    async def wait_drained(self, timeout: float) -> None:
        """Wait (bounded) until the background task has stored every row; for tests and shutdown checks."""
        async with asyncio.timeout(timeout), self._progress:
            await self._progress.wait_for(lambda: self._spill.pending_rows == 0)

    async def wait_progress(self, timeout: float) -> None:
        """Wait (bounded) for the next flush attempt to finish, successful or not."""
        async with asyncio.timeout(timeout), self._progress:
            await self._progress.wait()

    def stats(self) -> dict[str, Any]:
        return {
            "queued_rows": self._spill.pending_rows,
            "spilled_bytes": self._spill.size_bytes,
            "spill_segments": len(self._spill.sealed) + (1 if self._spill.active_rows else 0),
            "flushed_rows": self._flushed_rows,
            "flush_errors": self._flush_errors,
            "rejected_rows": self._rejected_rows,
            "dropped_rows": self._dropped_rows,
            "backoff_seconds": self._backoff,
            "last_error": self._last_error,
        }

    def health(self) -> tuple[dict[str, Any], bool]:
        """For /healthz: the store's state and the backlog waiting for it; healthy while the store is reachable
        and writes are taken (the last one was not refused or dropped for a full backlog or spill)."""
        accepting = not self._refusing
        doc = {**self.store.health.document(), "accepting_writes": accepting,
               "pending_rows": self._spill.pending_rows, "spill_bytes": self._spill.size_bytes,
               "max_spill_bytes": self.max_spill_bytes, "dropped_rows": self._dropped_rows}
        return doc, accepting and self.store.health.reachable

    async def _store_batch(self) -> None:
        if self._batch is None:
            self._batch, self._batch_done = _take(self._spill.sealed, self.flush_rows), set()
        paths = [s.path for s in self._batch]
        loop = asyncio.get_running_loop()
        insert_json = getattr(self.store, "insert_json_arrays", None)
        if insert_json is not None:  # the store parses the spill's JSON itself (chDB): no rows built in Python
            raw = await loop.run_in_executor(None, _read_all_raw, paths)
            for table, arrays in (raw or {}).items():
                if table not in self._batch_done and await insert_json(table, arrays):
                    self._batch_done.add(table)
            if raw is not None and self._batch_done.issuperset(raw):
                self._retire_batch()
                return
        loaded = await loop.run_in_executor(None, _read_all, paths)
        for table, batches in _by_table(loaded).items():
            if table not in self._batch_done:
                await self._insert(table, batches)
                self._batch_done.add(table)
        self._retire_batch()

    def _retire_batch(self) -> None:
        assert self._batch is not None
        self._flushed_rows += sum(s.rows for s in self._batch)
        self._spill.retire(self._batch)
        self._batch = None

    async def _insert(self, table: str, batches: list[list[dict[str, Any]]]) -> None:
        """Insert a table's rows; if the store refuses them for good, find and set aside the bad writes."""
        try:
            await self.store.insert(table, [row for rows in batches for row in rows])
        except StoreQueryError as exc:
            if len(batches) == 1:
                self._reject(table, batches[0], exc)
                return
            for rows in batches:
                try:
                    await self.store.insert(table, rows)
                except StoreQueryError as one:
                    self._reject(table, rows, one)

    def _reject(self, table: str, rows: list[dict[str, Any]], exc: StoreError) -> None:
        path = self._spill.reject(table, rows, str(exc))
        self._rejected_rows += len(rows)
        self._last_error = str(exc)
        log.error("store refused %d %s rows (kept in %s): %s", len(rows), table, path, exc)

    async def _run(self) -> None:
        while not self._stop.is_set():
            waiter = self._stop if self._backoff else self._wake
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), timeout=self._backoff or self.flush_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                await self.flush()
                self._backoff = 0.0
            except Exception as exc:
                if not isinstance(exc, StoreError):
                    self._flush_errors += 1
                    self._last_error = repr(exc)
                self._backoff = min(self.max_backoff_seconds, max(0.1, self._backoff * 2))
                # An unreachable store is the store health's to log, once; the rest is news each time.
                log.log(
                    logging.DEBUG if isinstance(exc, StoreUnavailable) else logging.WARNING,
                    "store %s flush failed, %d rows kept in spill, retry in %.2fs: %s",
                    self.store.display_dsn,
                    self._spill.pending_rows,
                    self._backoff,
                    exc,
                    exc_info=not isinstance(exc, StoreError),
                )


def _take(sealed: list[Segment], flush_rows: int) -> list[Segment]:
    taken: list[Segment] = []
    rows = 0
    for segment in sealed:
        if taken and rows + segment.rows > flush_rows:
            break
        taken.append(segment)
        rows += segment.rows
    return taken


def _read_all(paths: list[Path]) -> list[Batch]:
    return [batch for path in paths for batch in read_segment(path)]


def _read_all_raw(paths: list[Path]) -> dict[str, list[bytes]] | None:
    out: dict[str, list[bytes]] = {}
    for path in paths:
        tables = read_segment_raw(path)
        if tables is None:
            return None
        for table, arrays in tables.items():
            out.setdefault(table, []).extend(arrays)
    return out


def _by_table(batches: list[Batch]) -> dict[str, list[list[dict[str, Any]]]]:
    grouped: dict[str, list[list[dict[str, Any]]]] = {}
    for table, rows in batches:
        grouped.setdefault(table, []).append(rows)
    return grouped
