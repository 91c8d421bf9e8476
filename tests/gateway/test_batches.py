"""JSON-RPC batches on `/mcp`: served in 2024-11-05 and 2025-03-26 sessions (each element as if sent alone, the
answers together), refused whole with 400 -32600 in 2025-06-18 and later (C12 is in test_budgets_e2e)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession as Http

from gateway import jsonrpc
from gateway.config import BudgetConfig
from tests.gateway.conftest import echo_upstream, gateway_config, running_gateway
from tests.gateway.recorder import Recorder
from tests.gateway.service import running_service
from tests.gateway.test_budgets_e2e import budget_upstream, call_rows
from tests.gateway.test_downstream import JSON_HEADERS, open_session, post
from tests.gateway.test_event_stream import read_to_end


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[str, Recorder]]:
    recorder = Recorder()
    async with running_gateway(gateway_config(echo_upstream("a")), observers=[recorder]) as url:
        yield url, recorder


def call(request_id: int, tool: str, **arguments: Any) -> dict[str, Any]:
    return jsonrpc.request_body(request_id, "tools/call", {"name": f"a__{tool}", "arguments": arguments})


def by_id(answers: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {answer["id"]: answer for answer in answers}


@pytest.mark.parametrize("version", ["2025-03-26", "2024-11-05"])
async def test_a_batch_of_a_ping_two_calls_and_a_notification_gets_three_answers_matched_by_id(
        gateway: tuple[str, Recorder], version: str) -> None:
    url, recorder = gateway
    batch = [jsonrpc.request_body("p", "ping"), call(1, "echo", text="one"),
             jsonrpc.notification_body("notifications/roots/list_changed"), call(2, "echo", text="two")]
    async with Http() as http:
        session_id = await open_session(http, url, version)
        status, headers, answers = await post(http, url, batch, session_id)
    assert (status, headers["Content-Type"].split(";")[0]) == (200, "application/json")
    assert isinstance(answers, list) and len(answers) == 3
    answered = by_id(answers)
    assert answered["p"]["result"] == {}
    assert [answered[n]["result"]["content"][0]["text"] for n in (1, 2)] == ["one", "two"]
    # Metered per element: one row per call, each with its own element's bytes.
    rows = sorted(recorder.calls, key=lambda r: r.tool)
    assert [(r.tool, r.status) for r in rows] == [("echo", "ok"), ("echo", "ok")]
    assert sorted(r.req_bytes_client for r in rows) == sorted(len(orjson.dumps(batch[i])) for i in (1, 3))
    assert sorted(r.resp_bytes_client for r in rows) == sorted(len(orjson.dumps(answered[n])) for n in (1, 2))


async def test_the_requests_of_a_batch_run_concurrently(gateway: tuple[str, Recorder]) -> None:
    url, _ = gateway
    batch = [call(1, "hold"), call(2, "release")]  # `hold` answers only once `release` ran: one at a time deadlocks
    async with Http() as http:
        session_id = await open_session(http, url, "2025-03-26")
        async with asyncio.timeout(10):
            status, _, answers = await post(http, url, batch, session_id)
    assert status == 200
    assert {n: a["result"]["content"][0]["text"] for n, a in by_id(answers).items()} == {1: "released", 2: "ok"}


async def test_a_batch_whose_call_streams_is_answered_on_one_sse_stream(gateway: tuple[str, Recorder]) -> None:
    url, _ = gateway
    progress = jsonrpc.request_body(1, "tools/call", {"name": "a__progress", "arguments": {"steps": 2, "ms": 1},
                                                      "_meta": {"progressToken": "t"}})
    batch = [progress, call(2, "echo", text="two")]
    async with Http() as http:
        session_id = await open_session(http, url, "2025-03-26")
        headers = {**JSON_HEADERS, "Mcp-Session-Id": session_id}
        async with http.post(url, data=orjson.dumps(batch), headers=headers) as response:
            assert response.content_type == "text/event-stream"
            messages = [orjson.loads(data) for _, data in await read_to_end(response)]
    assert [m["params"]["progressToken"] for m in messages if m.get("method") == "notifications/progress"] == [
        "t", "t"]
    answers = by_id([m for m in messages if "id" in m])
    assert (answers[1]["result"]["content"][0]["text"], answers[2]["result"]["content"][0]["text"]) == ("done", "two")


async def test_a_batch_of_only_notifications_and_responses_is_accepted_with_202(
        gateway: tuple[str, Recorder]) -> None:
    url, _ = gateway
    batch = [jsonrpc.notification_body("notifications/roots/list_changed"),
             jsonrpc.result_body("no-such-server-request", {})]
    async with Http() as http:
        session_id = await open_session(http, url, "2025-03-26")
        status, _, body = await post(http, url, batch, session_id)
    assert (status, body) == (202, b"")


async def test_a_bad_element_gets_its_own_error_and_the_others_are_served(gateway: tuple[str, Recorder]) -> None:
    url, _ = gateway
    async with Http() as http:
        session_id = await open_session(http, url, "2025-03-26")
        status, _, answers = await post(http, url, [1, {"jsonrpc": "2.0", "id": 7}, call(3, "echo", text="ok")],
                                        session_id)
    assert status == 200 and len(answers) == 3
    assert [a["error"]["code"] for a in answers if "error" in a] == [jsonrpc.INVALID_REQUEST] * 2
    assert by_id(answers)[3]["result"]["content"][0]["text"] == "ok"


@pytest.mark.parametrize("batch", [[], [jsonrpc.request_body(1, "initialize", {}), jsonrpc.request_body(2, "ping")]],
                         ids=["empty", "with-initialize"])
async def test_an_empty_batch_or_one_holding_initialize_is_invalid(
        gateway: tuple[str, Recorder], batch: list[Any]) -> None:
    url, recorder = gateway
    async with Http() as http:
        session_id = await open_session(http, url, "2025-03-26")
        status, _, body = await post(http, url, batch, session_id)
    assert (status, body["error"]["code"], body["id"]) == (400, jsonrpc.INVALID_REQUEST, None)
    assert recorder.calls == []


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25"])
async def test_a_batch_in_a_session_of_2025_06_18_or_later_is_refused_and_nothing_is_served(
        gateway: tuple[str, Recorder], version: str) -> None:
    url, recorder = gateway
    async with Http() as http:
        session_id = await open_session(http, url, version)
        status, _, body = await post(http, url, [call(1, "echo", text="x")], session_id)
    assert (status, body["error"]["code"], body["id"]) == (400, jsonrpc.INVALID_REQUEST, None)
    assert recorder.calls == []


async def test_a_budget_applies_to_each_call_of_a_batch(tmp_path: Path) -> None:
    """session_calls=3 and a batch of five calls: three reach the upstream (its counter says 1, 2, 3), two are
    refused by the budget, and the store has a row for each of the five."""
    config = gateway_config(budget_upstream("b", BudgetConfig(session_calls=3)))
    batch = [jsonrpc.request_body(i, "tools/call", {"name": "b__served_calls", "arguments": {}}) for i in range(5)]
    async with running_service(config, tmp_path / "db") as svc, Http() as http:
        session_id = await open_session(http, svc.mcp_url, "2025-03-26")
        status, _, answers = await post(http, svc.mcp_url, batch, session_id)
        assert status == 200 and sorted(a["id"] for a in answers) == [0, 1, 2, 3, 4]
        served = sorted(t for a in answers if not a["result"].get("isError")
                        for t in [a["result"]["content"][0]["text"]])
        refused = [a["result"]["content"][0]["text"] for a in answers if a["result"].get("isError")]
        assert served == ["1", "2", "3"]
        assert len(refused) == 2 and all("session_calls" in text for text in refused)
        rows = await call_rows(svc, "b")  # flushed first
    assert sorted(row["status"] for row in rows) == ["denied", "denied", "ok", "ok", "ok"]
