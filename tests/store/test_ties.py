"""`store.ties.tie_calls` over hand-made rows: what a window tie says when more than one result fits, and that
window-bound MCP sessions keep to their own Claude Code session's results."""

from __future__ import annotations

import datetime as dt
from typing import Any

from store import ties

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def call(call_id: str, mcp_session: str, start: float, end: float, tool_use_id: str = "") -> dict[str, Any]:
    return {"call_id": call_id, "mcp_session_id": mcp_session, "tool_use_id": tool_use_id, "tool": "echo",
            "exposed_name": "alpha__echo", "started_at": at(start), "ended_at": at(end)}


def result(tool_use_id: str, session: str, end: float, duration_ms: int) -> dict[str, Any]:
    return {"tool_use_id": tool_use_id, "session_id": session, "prompt_id": f"{session}-p1",
            "mcp_tool_name": "alpha__echo", "event_time": at(end), "duration_ms": duration_ms}


def test_a_call_two_results_fit_ties_by_window_to_the_earlier_with_two_candidates_never_exact() -> None:
    # Both results end within [call end - 0.5 s, call end + 5 s] and started no later than the call + 0.5 s.
    results = [result("toolu_late", "cc-1", 2.0, 1900), result("toolu_early", "cc-1", 0.3, 250)]
    found = ties.tie_calls([call("c1", "mcp-1", 0.1, 0.2)], results)
    assert found["c1"] == ties.Tie("c1", ties.WINDOW, "cc-1", "cc-1-p1", "toolu_early", 2)
    assert found["c1"].tie != ties.EXACT


def test_a_call_whose_tool_use_id_names_no_result_is_tied_by_window_not_labelled_exact() -> None:
    results = [result("toolu_a", "cc-1", 0.3, 250), result("toolu_b", "cc-1", 0.4, 300)]
    found = ties.tie_calls([call("c1", "mcp-1", 0.1, 0.2, tool_use_id="toolu_elsewhere")], results)
    assert (found["c1"].tie, found["c1"].candidates, found["c1"].tool_use_id) == (ties.WINDOW, 2, "toolu_a")


def test_window_bound_mcp_sessions_take_only_their_own_claude_code_sessions_results() -> None:
    """Two MCP sessions call the same tool at nearly the same times; each session's sequence fits one Claude Code
    session's results best, so each call ties within its own pair, though b1 starts first and ua1 fits it too (a
    session with no fitting result, cc-3, and a call that fits nothing stay out of it)."""
    calls = [call("a1", "mcp-a", 0.05, 0.15), call("b1", "mcp-b", 0.0, 0.1),
             call("a2", "mcp-a", 10.0, 10.1), call("b2", "mcp-b", 20.0, 20.1), call("x", "mcp-x", 100.0, 100.1)]
    results = [result("ua1", "cc-a", 0.2, 200), result("ub1", "cc-b", 0.25, 200),
               result("ua2", "cc-a", 10.2, 200), result("ub2", "cc-b", 20.2, 200), result("u3", "cc-3", 50.0, 10)]
    found = ties.tie_calls(calls, results)
    assert {c: (t.tie, t.cc_session_id, t.tool_use_id) for c, t in found.items()} == {
        "a1": (ties.WINDOW, "cc-a", "ua1"), "a2": (ties.WINDOW, "cc-a", "ua2"),
        "b1": (ties.WINDOW, "cc-b", "ub1"), "b2": (ties.WINDOW, "cc-b", "ub2"),
        "x": (ties.UNMATCHED, "", "")}
