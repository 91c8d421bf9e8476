"""`session_detail` skips the window's tool events and candidate calls when only exact ties can concern the session
(`queries_turns._only_exact`); it must give the page the full path gives. Mixed Claude Code sessions
overlapping in time on the same tool, in one real chDB store: exact ties (bound inline, or tied but unbound), a
client that sends no tool_use_id, telemetry without ids, late telemetry (a result not yet there, with and
without its tool_decision), and another client's calls fitting the same results."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from store import queries_turns as qt
from store.client import Store

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
TOOL = "alpha__echo"
Rows = dict[str, list[dict[str, Any]]]


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def call_row(call_id: str, mcp: str, start: float, tool_use_id: str = "") -> dict[str, Any]:
    return {"call_id": call_id, "method": "tools/call", "upstream": "alpha", "tool": "echo", "exposed_name": TOOL,
            "mcp_session_id": mcp, "tool_use_id": tool_use_id, "started_at": at(start),
            "ended_at": at(start + 0.05), "status": "ok", "resp_bytes_upstream": 1000, "est_tokens": 250}


def cc_session(name: str, offset: float, *, call_ids: bool = True, result_ids: bool = True, bound: bool = True,
               not_arrived: tuple[int, ...] = (), decided: tuple[int, ...] = ()) -> Rows:
    """Two turns of a session, each an API request, two MCP calls through the gateway (MCP session `mcp-<name>`)
    and a Bash result. `not_arrived`: calls (0-3) whose tool_result is not stored yet; `decided`: calls with a
    stored tool_decision."""
    rows: Rows = {"cc_user_prompts": [], "cc_api_requests": [], "cc_tool_results": [], "cc_tool_decisions": [],
                  "calls": [], "sessions": []}
    mcp, seq = f"mcp-{name}", 0
    for turn in range(2):
        start, prompt = offset + turn * 60, f"{name}-p{turn}"
        rows["cc_user_prompts"].append({"event_key": f"{name}/{seq}", "session_id": name, "prompt_id": prompt,
                                        "event_sequence": seq, "event_time": at(start), "prompt_length": 10})
        rows["cc_api_requests"].append({
            "event_key": f"{name}/r{turn}", "session_id": name, "prompt_id": prompt, "event_sequence": seq + 1,
            "event_time": at(start + 1), "model": "claude-opus-4-5", "input_tokens": 100, "output_tokens": 20,
            "cache_read_tokens": 1000, "cost_usd_micros": 5000, "request_id": f"{name}-req{turn}"})
        seq += 2
        for k in range(2):
            n, begin = turn * 2 + k, start + 2 + 10 * k
            tool_use_id = f"toolu_{name}_{n}"
            rows["calls"].append(call_row(f"{name}-c{n}", mcp, begin, tool_use_id if call_ids else ""))
            event = {"event_key": f"{name}/{seq}", "session_id": name, "prompt_id": prompt, "event_sequence": seq,
                     "event_time": at(begin + 0.06), "tool_name": "mcp_tool", "mcp_server_name": "tollgate",
                     "mcp_tool_name": TOOL, "tool_use_id": tool_use_id if result_ids else ""}
            if n in decided:
                rows["cc_tool_decisions"].append({**event, "event_key": f"{name}/d{seq}", "decision": "accept"})
            if n not in not_arrived:
                rows["cc_tool_results"].append({**event, "duration_ms": 40, "tool_result_size_bytes": 900})
            seq += 1
        rows["cc_tool_results"].append({
            "event_key": f"{name}/{seq}", "session_id": name, "prompt_id": prompt, "event_sequence": seq,
            "event_time": at(start + 30), "tool_name": "Bash", "tool_use_id": f"toolu_{name}_bash{turn}",
            "duration_ms": 5, "tool_result_size_bytes": 30})
        seq += 1
    if bound:
        rows["sessions"].append({"mcp_session_id": mcp, "started_at": at(offset), "cc_session_id": name,
                                 "version": 1})
    return rows


SESSIONS = {  # name -> whether the exact path may serve its page
    "exact": True, "unbound": True, "decided": True, "window": False, "idless": False, "late": False}


async def fill(store: Store) -> None:
    parts = [
        cc_session("exact", 0),
        cc_session("unbound", 3, bound=False),  # tied by id only: its MCP session is in no sessions row
        cc_session("decided", 5, not_arrived=(3,), decided=(3,)),  # the decision lends its id to the exact tie
        cc_session("window", 6, call_ids=False, bound=False),  # a client that sends no tool_use_id
        cc_session("idless", 8, call_ids=False, result_ids=False, bound=False),
        cc_session("late", 9, not_arrived=(3,)),  # a call whose telemetry has not arrived yet
    ]
    extra = [
        call_row("exact-untied", "mcp-exact", 40),  # no id, in a bound session: shown unmatched
        call_row("exact-old", "mcp-exact", -2 * 86400),  # a bound session's call long before the window
        call_row("unbound-untied", "mcp-unbound", 45),  # no id, in a session tied by id: shown unmatched
        call_row("unbound-later", "mcp-unbound", 3 * 86400),  # outside the window, not bound: not this session's
        *[call_row(f"agent-{i}", "agent", 7.99 + 10 * i) for i in range(12)],  # another client: fits results
    ]
    tables: Rows = {}
    for part in parts:
        for table, rows in part.items():
            tables.setdefault(table, []).extend(rows)
    tables["calls"] += extra
    for table, rows in tables.items():
        if rows:
            await store.insert(table, rows)


async def both_paths(store: Store, monkeypatch: pytest.MonkeyPatch,
                     session_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None, bool]:
    """(the page as served, the page with the exact path turned off, whether the exact path served it)."""
    served: list[bool] = []
    exact = qt._only_exact

    def spy(*args: Any) -> Any:
        found = exact(*args)
        served.append(found is not None)
        return found

    with monkeypatch.context() as patch:
        patch.setattr(qt, "_only_exact", spy)
        page = await qt.session_detail(store, session_id)
    with monkeypatch.context() as patch:
        patch.setattr(qt, "_only_exact", lambda *args: None)
        full = await qt.session_detail(store, session_id)
    return page, full, served == [True]


async def over_the_window(store: Store, session_id: str) -> list[tuple[str, str, str, str]]:
    """The session's calls as `tied_calls` ties every call of its window plus its bound MCP sessions' calls (what
    the page computed before it read only candidates): (call_id, tie, Claude Code session, prompt id)."""
    rows = await qt.session_rows(store, session_id)
    times = [r["event_time"] for r in rows["requests"] + rows["prompts"] + rows["results"]]
    bound = [r["mcp_session_id"] for r in await store.query(
        "SELECT mcp_session_id FROM sessions FINAL WHERE cc_session_id = {s:String}", {"s": session_id})]
    with_calls = {c["mcp_session_id"] for c in await qt.calls_between(store, T0, T0, bound)}
    bound = sorted(set(bound) & with_calls)
    calls = await qt.tied_calls(store, min(times) - qt.PAD, max(times) + qt.PAD, bound)
    return sorted((c["call_id"], c["tie"], c["turn_session_id"], c["prompt_id"])
                  for c in qt._calls_of(calls, session_id, bound))


def on_page(page: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    calls = [c for t in page["turns"] for c in t["calls"]] + page["calls_outside_turns"]
    return sorted((c["call_id"], c["tie"], c["turn_session_id"], c["prompt_id"]) for c in calls)


def ties_of(page: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    calls = [c for t in page["turns"] for c in t["calls"]] + page["calls_outside_turns"]
    return {c["call_id"]: (c["tie"], c["turn_id"]) for c in calls}


async def test_the_exact_path_gives_the_page_the_window_path_gives_and_serves_only_sessions_it_can(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fill(store)
    for session_id, exact in SESSIONS.items():
        page, full, served = await both_paths(store, monkeypatch, session_id)
        assert page is not None and full is not None
        assert page == full, session_id
        assert served is exact, session_id
        assert on_page(page) == await over_the_window(store, session_id), session_id
    pages = {s: (await qt.session_detail(store, s)) or {} for s in SESSIONS}
    assert ties_of(pages["exact"]) == {
        "exact-c0": ("tool_use_id", "exact-p0"), "exact-c1": ("tool_use_id", "exact-p0"),
        "exact-c2": ("tool_use_id", "exact-p1"), "exact-c3": ("tool_use_id", "exact-p1"),
        "exact-untied": ("unmatched", None), "exact-old": ("unmatched", None)}
    assert set(ties_of(pages["unbound"])) == {"unbound-c0", "unbound-c1", "unbound-c2", "unbound-c3",
                                              "unbound-untied"}
    assert ties_of(pages["decided"])["decided-c3"] == ("tool_use_id", "decided-p1")
    window = [tie for tie, _ in ties_of(pages["window"]).values()]
    assert "telemetry_window" in window and "tool_use_id" not in window
    assert ties_of(pages["late"])["late-c3"] == ("unmatched", None)


async def test_once_late_telemetry_arrives_the_exact_path_serves_the_session_and_ties_the_call(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fill(store)
    arrived = [r for r in cc_session("late", 9)["cc_tool_results"] if r["tool_use_id"] == "toolu_late_3"]
    await store.insert("cc_tool_results", arrived)
    page, full, served = await both_paths(store, monkeypatch, "late")
    assert page == full and served
    assert page is not None and ties_of(page)["late-c3"] == ("tool_use_id", "late-p1")


async def test_a_call_of_a_bound_session_carrying_another_sessions_id_sends_the_page_down_the_window_path(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The id names a result of another session: the call ties there exactly, which only the window's tool events
    show."""
    await fill(store)
    await store.insert("calls", [call_row("stray", "mcp-exact", 12, "toolu_window_1")])
    page, full, served = await both_paths(store, monkeypatch, "exact")
    assert page == full and not served
    assert page is not None and "stray" not in ties_of(page)
    assert on_page(page) == await over_the_window(store, "exact")


async def test_a_bound_mcp_session_without_an_exact_tie_sends_the_page_down_the_window_path(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second MCP session bound to the session whose only call carries no id and fits another session's result
    best: over the window it ties there, so the page must not show it as this session's untied call."""
    await fill(store)
    await store.insert("sessions", [{"mcp_session_id": "mcp-exact-2", "started_at": at(0),
                                     "cc_session_id": "exact", "version": 1}])
    await store.insert("calls", [call_row("second", "mcp-exact-2", 7.98)])
    page, full, served = await both_paths(store, monkeypatch, "exact")
    assert page == full and not served
    assert page is not None and "second" not in ties_of(page)
    assert on_page(page) == await over_the_window(store, "exact")
    window = await qt.session_detail(store, "window")
    assert window is not None and ties_of(window)["second"][0] == "telemetry_window"
