"""Test helper: an observer that keeps every relay event and lets a test wait for one, never sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gateway.records import CallRecord, ToolListSnapshot


class Recorder:
    """Every call, tool list snapshot and upstream event the hub reported, in order."""

    def __init__(self) -> None:
        self.calls: list[CallRecord] = []
        self.snapshots: list[ToolListSnapshot] = []
        self.events: list[tuple[str, str, str]] = []  # (upstream, kind, detail)
        self._changed = asyncio.Event()

    def call_finished(self, record: CallRecord) -> None:
        self.calls.append(record)
        self._changed.set()

    def tool_list_changed(self, snapshot: ToolListSnapshot) -> None:
        self.snapshots.append(snapshot)
        self._changed.set()

    def upstream_event(self, upstream: str, kind: str, detail: str) -> None:
        self.events.append((upstream, kind, detail))
        self._changed.set()

    def session_event(self, row: dict[str, Any]) -> None:
        return None

    def kinds(self, upstream: str) -> list[str]:
        return [kind for name, kind, _ in self.events if name == upstream]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        """Return once `predicate()` holds, re-checked after every event; fail after `timeout`."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()
