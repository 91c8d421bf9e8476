"""`gateway.binding.Binder`: the first shared tool_use_id binds the live MCP session to its Claude Code session,
whichever side (finished call or telemetry) arrives first; unrelated ids and ended sessions bind nothing. Through
the whole service, the binding tags the session's later call rows at once."""

from __future__ import annotations

from pathlib import Path

import orjson
from aiohttp import ClientSession as Http

from gateway.binding import Binder
from gateway.records import CallRecord
from gateway.sessions import Session
from tests.gateway.conftest import echo_upstream, gateway_config, mcp_session
from tests.gateway.service import running_service
from tests.ui.seed import CAPTURE, CC_SESSION, ECHO_USE_ID


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


async def test_the_first_exact_tie_tags_the_mcp_sessions_later_calls_with_the_claude_code_session(
    tmp_path: Path,
) -> None:
    """A call carrying `claudecode/toolUseId`, then the real captured OTLP/JSON body whose tool_result names that id
    (s2), then a call with no id: the second call's row carries the Claude Code session id as it is stored, and
    `/api/calls?session=<Claude Code id>` lists both calls under it, as the session page does (the first by its
    tool_use_id tie)."""
    async with running_service(gateway_config(echo_upstream("alpha")), tmp_path / "db") as svc:
        async with mcp_session(svc.mcp_url) as client:
            await client.call_tool("alpha__echo", {"text": "first"}, meta={"claudecode/toolUseId": ECHO_USE_ID})
            async with Http() as http, http.post(svc.base_url + "/v1/logs", data=CAPTURE.read_bytes(),
                                                 headers={"Content-Type": "application/json"}) as response:
                assert response.status == 200
            await client.call_tool("alpha__echo", {"text": "second"})
        rows = await svc.query("SELECT call_id, tool_use_id, cc_session_id FROM calls FINAL "
                               "WHERE method = 'tools/call' ORDER BY started_at")
        assert [(r["tool_use_id"], r["cc_session_id"]) for r in rows] == [(ECHO_USE_ID, ""), ("", CC_SESSION)]
        async with Http() as http, http.get(f"{svc.base_url}/api/calls?session={CC_SESSION}") as response:
            assert response.status == 200
            found = orjson.loads(await response.read())["calls"]
        assert sorted((c["call_id"], c["cc_session_id"]) for c in found) == sorted(
            (row["call_id"], CC_SESSION) for row in rows)
        bound = await svc.query("SELECT cc_session_id FROM sessions FINAL WHERE cc_session_id != ''")
        assert bound == [{"cc_session_id": CC_SESSION}]
