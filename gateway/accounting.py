"""Turns relay events into store rows and hands them to the batching writer.

An observer: it never blocks the relay (the writer's `submit` only appends to the spill) and it
never changes what clients receive. Timestamps become integers in each column's precision.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from typing import Any, Protocol

from gateway.records import CallRecord, ToolListSnapshot

log = logging.getLogger("tollgate.accounting")
MICROS = 1_000_000


class RowSink(Protocol):
    def submit(self, table: str, rows: list[dict[str, Any]]) -> None: ...


def micros(seconds: float) -> int:
    return int(seconds * MICROS)


class StoreRecorder:
    """Observer writing calls, tool-list snapshots, upstream events and sessions to the store."""

    def __init__(self, sink: RowSink, gateway_id: str | None = None) -> None:
        self.sink = sink
        self.gateway_id = gateway_id or socket.gethostname()
        self.failures = 0

    def call_finished(self, record: CallRecord) -> None:
        row = record.row()
        row["started_at"] = micros(record.started_at)
        row["ended_at"] = micros(record.ended_at or record.started_at)
        row["gateway_id"] = self.gateway_id
        self._submit("calls", [row])

    def tool_list_changed(self, snapshot: ToolListSnapshot) -> None:
        total, count = snapshot.server_bytes, len(snapshot.tools)
        rows = [{"snapshot_id": snapshot.snapshot_id, "upstream": snapshot.upstream,
                 "taken_at": micros(snapshot.taken_at), "tool": tool, "exposed_name": exposed,
                 "def_bytes": size, "server_bytes": total, "tool_count": count, "gateway_id": self.gateway_id}
                for tool, exposed, size in snapshot.tools]
        self._submit("tool_lists", rows)

    def upstream_event(self, upstream: str, kind: str, detail: str) -> None:
        self._submit("upstream_events", [{"event_id": uuid.uuid4().hex, "upstream": upstream,
                                          "at": micros(time.time()), "kind": kind, "detail": detail[:2000],
                                          "gateway_id": self.gateway_id}])

    def session_event(self, row: dict[str, Any]) -> None:
        ended = row.get("ended_at")
        self._submit("sessions", [{**row, "started_at": micros(row["started_at"]),
                                   "ended_at": micros(ended) if ended else None,
                                   "gateway_id": self.gateway_id, "version": time.time_ns()}])

    def _submit(self, table: str, rows: list[dict[str, Any]]) -> None:
        try:
            self.sink.submit(table, rows)
        except Exception as exc:  # the proxy keeps serving; the loss is counted and logged
            self.failures += 1
            log.error("could not record %d %s row(s): %s", len(rows), table, exc)
