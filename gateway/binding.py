"""Inline binding of MCP sessions to Claude Code sessions by `tool_use_id` (DESIGN §6, tie 1).

Learns tool_use_id -> MCP session from finished calls and tool_use_id -> Claude Code session from telemetry
rows, in either order; the first match tags the live MCP session so its later calls carry the Claude Code
session id at once. Not the prompt id: telemetry trails by an export interval, so the "current" prompt known
inline is often the previous turn's; the query-time join in `store.queries_turns` ties prompts exactly.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from gateway.records import CallRecord, ToolListSnapshot
from gateway.sessions import Session

log = logging.getLogger("tollgate.binding")

ID_TABLES = ("cc_tool_results", "cc_tool_decisions")
DEFAULT_CAPACITY = 20_000


class SessionLookup(Protocol):
    def get(self, session_id: str) -> Session | None: ...


class _Bounded(OrderedDict[str, Any]):
    """An insertion-ordered map that forgets its oldest entries past `capacity`."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def put(self, key: str, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


class Binder:
    """An observer of calls and a consumer of telemetry rows; binds on the first shared tool_use_id."""

    def __init__(self, sessions: SessionLookup, on_bound: Callable[[Session], None] | None = None,
                 capacity: int = DEFAULT_CAPACITY) -> None:
        self._sessions = sessions
        self._on_bound = on_bound
        self._calls: _Bounded = _Bounded(capacity)  # tool_use_id -> mcp_session_id
        self._telemetry: _Bounded = _Bounded(capacity)  # tool_use_id -> cc_session_id
        self.bound: _Bounded = _Bounded(capacity)  # mcp_session_id -> cc_session_id

    # ----- Observer ------------------------------------------------------------------------------------

    def call_finished(self, record: CallRecord) -> None:
        if not record.tool_use_id:
            return
        self._calls.put(record.tool_use_id, record.mcp_session_id)
        known = self._telemetry.get(record.tool_use_id)
        if known is not None:
            self._bind(record.mcp_session_id, known)

    def tool_list_changed(self, snapshot: ToolListSnapshot) -> None:
        return None

    def upstream_event(self, upstream: str, kind: str, detail: str) -> None:
        return None

    def session_event(self, row: dict[str, Any]) -> None:
        return None

    # ----- telemetry (the OTLP receiver's on_rows hook) --------------------------------------------------

    def telemetry_rows(self, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        for table in ID_TABLES:
            for row in rows.get(table, ()):
                tool_use_id, cc_session = str(row.get("tool_use_id", "")), str(row.get("session_id", ""))
                if not tool_use_id or not cc_session:
                    continue
                self._telemetry.put(tool_use_id, cc_session)
                mcp_session = self._calls.get(tool_use_id)
                if mcp_session is not None:
                    self._bind(mcp_session, cc_session)

    def _bind(self, mcp_session: str, cc_session: str) -> None:
        if self.bound.get(mcp_session) == cc_session:
            return
        self.bound.put(mcp_session, cc_session)
        live = self._sessions.get(mcp_session)
        if live is None:
            return
        live.cc_session_id = cc_session
        log.info("MCP session %s bound to Claude Code session %s", mcp_session[:8], cc_session)
        if self._on_bound is not None:
            self._on_bound(live)
