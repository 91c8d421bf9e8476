"""`gateway.binding.Binder`: the first shared tool_use_id binds the live MCP session to its Claude Code session,
whichever side (finished call or telemetry) arrives first; unrelated ids and ended sessions bind nothing."""

from __future__ import annotations

from gateway.binding import Binder
from gateway.records import CallRecord
from gateway.sessions import Session


class Sessions:
    def __init__(self, *sessions: Session) -> None:
        self.by_id = {s.session_id: s for s in sessions}

    def get(self, session_id: str) -> Session | None:
        return self.by_id.get(session_id)


def session(session_id: str) -> Session:
    return Session(session_id=session_id, protocol_version="2025-11-25", client_info={}, client_capabilities={})


def call(mcp_session: str, tool_use_id: str) -> CallRecord:
    return CallRecord(method="tools/call", upstream="a", tool="echo", exposed_name="a__echo",
                      mcp_session_id=mcp_session, tool_use_id=tool_use_id)


def result(cc_session: str, tool_use_id: str, table: str = "cc_tool_results") -> dict[str, list[dict[str, str]]]:
    return {table: [{"session_id": cc_session, "prompt_id": "p1", "tool_use_id": tool_use_id}]}


def test_a_call_then_its_telemetry_binds_the_session_once() -> None:
    live = session("m1")
    bound: list[str] = []
    binder = Binder(Sessions(live), on_bound=lambda s: bound.append(s.cc_session_id))
    binder.call_finished(call("m1", "toolu_1"))
    assert live.cc_session_id == ""
    binder.telemetry_rows(result("cc-1", "toolu_1"))
    binder.telemetry_rows(result("cc-1", "toolu_1", "cc_tool_decisions"))
    assert live.cc_session_id == "cc-1" and bound == ["cc-1"]


def test_telemetry_first_then_the_call_binds_too() -> None:
    live = session("m1")
    binder = Binder(Sessions(live))
    binder.telemetry_rows(result("cc-9", "toolu_2", "cc_tool_decisions"))
    binder.call_finished(call("m1", "toolu_2"))
    assert live.cc_session_id == "cc-9"


def test_other_ids_calls_without_ids_and_ended_sessions_bind_nothing() -> None:
    live = session("m1")
    binder = Binder(Sessions(live), capacity=2)
    binder.call_finished(call("m1", ""))
    binder.telemetry_rows(result("cc-1", "toolu_other"))
    binder.call_finished(call("gone", "toolu_3"))
    binder.telemetry_rows(result("cc-1", "toolu_3"))
    assert live.cc_session_id == "" and binder.bound == {"gone": "cc-1"}
    for i in range(5):  # memory stays bounded
        binder.call_finished(call("m1", f"toolu_x{i}"))
    assert len(binder._calls) == 2
