"""Inline binding of MCP sessions to Claude Code sessions by `tool_use_id` (DESIGN §6, tie 1).

Learns tool_use_id -> MCP session from finished calls and tool_use_id -> (Claude Code session, prompt) from
telemetry rows, in either order; the first match tags the live MCP session so its later calls carry the
Claude Code ids at once. Bounded memory, no I/O; the query-time join in `store.queries_turns` stays the authority.
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
PROMPT_TABLE = "cc_user_prompts"
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
        self._telemetry: _Bounded = _Bounded(capacity)  # tool_use_id -> (cc_session_id, prompt_id)
        self.bound: _Bounded = _Bounded(capacity)  # mcp_session_id -> cc_session_id
        self._latest_prompt: _Bounded = _Bounded(capacity)  # cc_session_id -> (event_time, prompt_id)

    # ----- Observer ------------------------------------------------------------------------------------

    def call_finished(self, record: CallRecord) -> None:
        if not record.tool_use_id:
            return
        self._calls.put(record.tool_use_id, record.mcp_session_id)
        known = self._telemetry.get(record.tool_use_id)
        if known is not None:
            self._bind(record.mcp_session_id, *known)

    def tool_list_changed(self, snapshot: ToolListSnapshot) -> None:
        return None

    def upstream_event(self, upstream: str, kind: str, detail: str) -> None:
        return None

    def session_event(self, row: dict[str, Any]) -> None:
        return None

    # ----- telemetry (the OTLP receiver's on_rows hook) --------------------------------------------------

    def telemetry_rows(self, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        for row in rows.get(PROMPT_TABLE, ()):
            self._prompt_seen(str(row.get("session_id", "")), str(row.get("prompt_id", "")), row.get("event_time"))
        for table in ID_TABLES:
            for row in rows.get(table, ()):
                tool_use_id, cc_session = str(row.get("tool_use_id", "")), str(row.get("session_id", ""))
                if not tool_use_id or not cc_session:
                    continue
                prompt = str(row.get("prompt_id", ""))
                self._telemetry.put(tool_use_id, (cc_session, prompt))
                mcp_session = self._calls.get(tool_use_id)
                if mcp_session is not None:
                    self._bind(mcp_session, cc_session, prompt)

    def _prompt_seen(self, cc_session: str, prompt: str, at: Any) -> None:
        if not cc_session or not prompt:
            return
        previous = self._latest_prompt.get(cc_session)
        if previous is not None and at is not None and previous[0] is not None and previous[0] > at:
            return
        self._latest_prompt.put(cc_session, (at, prompt))
        for mcp_session, bound_to in list(self.bound.items()):
            live = self._sessions.get(mcp_session) if bound_to == cc_session else None
            if live is not None:
                live.cc_prompt_id = prompt

    def _bind(self, mcp_session: str, cc_session: str, prompt: str) -> None:
        first = self.bound.get(mcp_session) != cc_session
        self.bound.put(mcp_session, cc_session)
        live = self._sessions.get(mcp_session)
        if live is None:
            return
        latest = self._latest_prompt.get(cc_session)
        live.cc_session_id = cc_session
        live.cc_prompt_id = latest[1] if latest is not None else prompt
        if first:
            log.info("MCP session %s bound to Claude Code session %s", mcp_session[:8], cc_session)
            if self._on_bound is not None:
                self._on_bound(live)
