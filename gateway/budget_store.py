"""Spend that lasts: rebuilds budget day spend from the store's `calls` rows, and applies fail_open when it cannot.

Reads only; rows are written by the accounting observer, and a previous run's rows still in the writer's
spill are stored first (a `replay` callable), or they would be missing from the spend. Spend counts calls
not denied: one call each, request plus delivered response bytes, estimated tokens of the delivered result.
A row with no upstream (refused before routing) is charged nothing, as live accounting charges it nothing.
Only day windows are rebuilt: a session window is the client session's, and a restart forgets every session
(their clients initialize new ones), so the sessions of past calls would only be counted as live ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from gateway.budgets import KEEP_SECONDS, Budgets, Spend
from store.kinds import label

log = logging.getLogger("tollgate.budgets")
RETRY_SECONDS = 5.0

SPEND_SQL = """
SELECT upstream, method, tool,
       toUnixTimestamp(toStartOfFifteenMinutes(started_at)) AS bucket,
       countIf(status != 'denied') AS calls,
       sumIf(req_bytes_client + resp_bytes_client, status != 'denied') AS bytes,
       sumIf(est_tokens, status != 'denied') AS tokens,
       countIf(status = 'denied') AS denied,
       countIf(status = 'truncated') AS truncated,
       countIf(budget_action = 'warn') AS warned
FROM {db}.calls FINAL
WHERE started_at >= {since:DateTime64(6, 'UTC')} AND started_at < {until:DateTime64(6, 'UTC')}
    AND upstream != ''  -- refused before routing: no upstream to charge (as enforcement.call_finished)
GROUP BY upstream, method, tool, bucket
"""


class Queryable(Protocol):
    database: str

    async def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]: ...


async def load_spend(store: Queryable, budgets: Budgets, *, until: float | None = None) -> int:
    """Charge the day windows of `budgets` with the spend of calls that started in the last days, up to `until`
    (default now), and no session window: those sessions ended with the process that served them.

    Covers every local day a budget can still see. Returns the number of calls charged."""
    now = budgets.now()
    since = dt.datetime.fromtimestamp(now - KEEP_SECONDS, dt.UTC)
    end = dt.datetime.fromtimestamp(until if until is not None else now, dt.UTC)
    rows = await store.query(SPEND_SQL.replace("{db}", store.database), {"since": since, "until": end})
    calls = 0
    for row in rows:
        spend = Spend(*(int(row[k]) for k in ("calls", "bytes", "tokens", "denied", "truncated", "warned")))
        tool = label(str(row["method"]), str(row["tool"]))  # as enforcement charges it live
        budgets.record(str(row["upstream"]), tool, "", float(row["bucket"]), spend)
        calls += spend.calls
    return calls


class SpendLoader:
    """Loads past spend at startup; when the store cannot answer, applies each budget's fail_open and retries."""

    def __init__(self, store: Queryable, budgets: Budgets, retry_seconds: float = RETRY_SECONDS, *,
                 replay: Callable[[], Awaitable[None]] | None = None) -> None:
        self.store = store
        self.budgets = budgets
        self.replay = replay  # stores what a previous run spilled (`Writer.replay_leftovers`)
        self.retry_seconds = retry_seconds
        self.started_at = budgets.now()
        self.loaded = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0  # the first is a WARNING; the store's health says when it is down and back

    async def start(self) -> None:
        if await self._load_once():
            return
        self.budgets.unknown_spend = set(self.budgets.rules)
        closed = sorted(n for n, b in self.budgets.rules.items() if not b.fail_open)
        opened = sorted(n for n, b in self.budgets.rules.items() if b.fail_open)
        if opened:
            log.warning("budgets fail open for %s: spend starts from zero until the store answers", ", ".join(opened))
        if closed:
            log.warning("budgets fail closed for %s: calls are refused until the store answers", ", ".join(closed))
        self._task = asyncio.create_task(self._retry())

    async def _load_once(self) -> bool:
        try:
            if self.replay is not None:
                await self.replay()
            calls = await load_spend(self.store, self.budgets, until=self.started_at)
        except Exception as exc:  # any store failure: the fail_open choice decides
            self._failures += 1
            log.log(logging.WARNING if self._failures == 1 else logging.DEBUG,
                    "could not read past spend from the store: %s", exc)
            return False
        self.budgets.unknown_spend = set()
        self.loaded.set()
        log.info("budgets: rebuilt spend of %d past call(s) from the store", calls)
        return True

    async def _retry(self) -> None:
        while not await self._load_once():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.retry_seconds)
            if self._closing.is_set():
                return

    async def close(self) -> None:
        self._closing.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
