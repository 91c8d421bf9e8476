"""Late telemetry re-ties calls by itself: calls recorded through the real gateway before the telemetry naming
their tool_use_ids arrives are untied, then tied to the right turn once it lands (ties are computed at query
time). The telemetry is the real s4 capture (two turns) as OTLP/JSON, moved to the present."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientSession as Http

from tests.gateway.conftest import echo_upstream, gateway_config, mcp_session
from tests.gateway.service import Running, running_service
from tests.ui.seed import logs_now

CAPTURE = Path(__file__).resolve().parents[1] / "data" / "claude_code" / "s4_two_turns_stream" / "otlp"
TURN_1, LATER = ("0002_logs",), ("0004_logs", "0005_logs")  # turn 1's batch; turn 2's, exported seconds later


def mcp_results(names: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """tool_use_id -> (session.id, prompt.id) of the capture's MCP tool results in these batches."""
    found = {}
    for name in names:
        doc = orjson.loads((CAPTURE / f"{name}.json").read_bytes())
        for record in (r for rl in doc["resourceLogs"] for sl in rl["scopeLogs"] for r in sl["logRecords"]):
            attrs = {kv["key"]: next(iter(kv["value"].values())) for kv in record["attributes"]}
            if attrs.get("event.name") == "tool_result" and attrs.get("tool_name") == "mcp_tool":
                found[attrs["tool_use_id"]] = (attrs["session.id"], attrs["prompt.id"])
    return found


async def get(svc: Running, path: str) -> tuple[int, Any]:
    await svc.flushed()
    async with Http() as http, http.get(svc.base_url + path) as response:
        return response.status, orjson.loads(await response.read())


async def post_logs(svc: Running, bodies: list[bytes]) -> None:
    async with Http() as http:
        for body in bodies:
            async with http.post(svc.base_url + "/v1/logs", data=body,
                                 headers={"Content-Type": "application/json"}) as response:
                assert response.status == 200, await response.text()


def placed(detail: dict[str, Any]) -> dict[str, tuple[str, str | None, str]]:
    """tool_use_id -> (tie, prompt id of the turn holding the call or None outside turns, its session)."""
    out = {c["tool_use_id"]: (c["tie"], t["prompt_id"], c["turn_session_id"]) for t in detail["turns"]
           for c in t["calls"]}
    out |= {c["tool_use_id"]: (c["tie"], None, c["turn_session_id"]) for c in detail["calls_outside_turns"]}
    return out


async def test_calls_recorded_before_their_telemetry_tie_to_the_right_turn_once_it_arrives(tmp_path: Path) -> None:
    first, later = mcp_results(TURN_1), mcp_results(LATER)
    every = first | later
    [session_id] = {s for s, _ in every.values()}
    bodies = logs_now([CAPTURE / f"{name}.json" for name in TURN_1 + LATER])
    async with running_service(gateway_config(echo_upstream("alpha")), tmp_path / "db") as svc:
        async with mcp_session(svc.mcp_url) as client:
            for tool_use_id in every:
                await client.call_tool("alpha__echo", {"text": tool_use_id}, meta={"claudecode/toolUseId": tool_use_id})
        _, calls = await get(svc, "/api/calls?server=alpha")
        [mcp_id] = {c["mcp_session_id"] for c in calls["calls"]}

        status, _ = await get(svc, f"/api/sessions/{session_id}")
        assert status == 404  # no telemetry yet: the calls are only their MCP session's
        _, alone = await get(svc, f"/api/sessions/{mcp_id}")
        assert placed(alone) == {use: ("unmatched", None, "") for use in every}

        await post_logs(svc, bodies[:len(TURN_1)])
        _, early = await get(svc, f"/api/sessions/{session_id}")
        assert placed(early) == {**{use: ("tool_use_id", prompt, session_id) for use, (_, prompt) in first.items()},
                                 **{use: ("unmatched", None, "") for use in later}}  # bound, not yet tied

        await post_logs(svc, bodies[len(TURN_1):])
        _, late = await get(svc, f"/api/sessions/{session_id}")
        assert placed(late) == {use: ("tool_use_id", prompt, session_id) for use, (_, prompt) in every.items()}
        assert len({prompt for _, prompt in later.values()} - {prompt for _, prompt in first.values()}) == 1
        _, listed = await get(svc, "/api/sessions")
    assert [(s["session_id"], s["tool_calls"]) for s in listed["sessions"]] == [(session_id, len(every))]
