"""Per-request state is keyed by (session, id); cancels reach the owning upstream with its own id (C07, C08)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientSession as Http

from gateway import jsonrpc
from tests.gateway.conftest import echo_upstream, gateway_config, running_gateway
from tests.gateway.service import running_service
from tests.gateway.taps import tap, tapped_echo_upstream
from tests.gateway.test_downstream import JSON_HEADERS, open_session


def slow_call(request_id: int, ms: int, text: str, tool: str = "a__slow") -> dict[str, Any]:
    return jsonrpc.request_body(request_id, "tools/call", {"name": tool, "arguments": {"ms": ms, "text": text}})


async def post(http: Http, url: str, session_id: str, body: dict[str, Any]) -> tuple[int, bytes]:
    async with http.post(url, data=orjson.dumps(body), headers={**JSON_HEADERS, "Mcp-Session-Id": session_id}) as r:
        return r.status, await r.read()


def text_of(raw: bytes) -> str:
    body = raw.split(b"data: ", 1)[1] if raw.startswith(b"event:") else raw
    return str(orjson.loads(body)["result"]["content"][0]["text"])


async def test_same_id_from_two_sessions_gets_each_its_own_answer() -> None:
    async with running_gateway(gateway_config(echo_upstream("a"))) as url, Http() as http:
        one, two = await open_session(http, url), await open_session(http, url)
        (s1, r1), (s2, r2) = await asyncio.gather(post(http, url, one, slow_call(1, 200, "from-one")),
                                                  post(http, url, two, slow_call(1, 200, "from-two")))
    assert (s1, s2) == (200, 200)
    assert (text_of(r1), text_of(r2)) == ("from-one", "from-two")


async def test_duplicate_in_flight_id_is_rejected_and_the_first_call_is_undisturbed(tmp_path: Path) -> None:
    upstream = tapped_echo_upstream("a", tmp_path / "a.fifo")
    async with tap(tmp_path / "a.fifo") as upstream_in, running_gateway(gateway_config(upstream)) as url, \
            Http() as http:
        session_id = await open_session(http, url)
        first = asyncio.create_task(post(http, url, session_id, slow_call(1, 300, "first")))
        await upstream_in.wait_for("tools/call")  # the first request is in flight at the upstream
        status, raw = await post(http, url, session_id, slow_call(1, 10, "second"))
        assert status == 400 and orjson.loads(raw)["error"]["code"] == jsonrpc.INVALID_REQUEST
        status, raw = await first
    assert status == 200 and text_of(raw) == "first"


async def test_cancel_reaches_only_the_owning_upstream_with_its_own_id(tmp_path: Path) -> None:
    upstream_a = tapped_echo_upstream("a", tmp_path / "a.fifo")
    upstream_b = tapped_echo_upstream("b", tmp_path / "b.fifo")
    async with tap(tmp_path / "a.fifo") as tap_a, tap(tmp_path / "b.fifo") as tap_b, \
            running_service(gateway_config(upstream_a, upstream_b), tmp_path / "db") as svc, Http() as http:
        session_id = await open_session(http, svc.mcp_url)
        busy_b = asyncio.create_task(post(http, svc.mcp_url, session_id, slow_call(7, 1500, "b", "b__slow")))
        long_call = asyncio.create_task(post(http, svc.mcp_url, session_id, slow_call(101, 600_000, "x")))
        forwarded = await tap_a.wait_for("tools/call")
        await tap_b.wait_for("tools/call")
        cancel = jsonrpc.notification_body("notifications/cancelled", {"requestId": 101, "reason": "user"})
        unknown = jsonrpc.notification_body("notifications/cancelled", {"requestId": 999})
        assert (await post(http, svc.mcp_url, session_id, unknown))[0] == 202
        assert (await post(http, svc.mcp_url, session_id, cancel))[0] == 202
        received = await tap_a.wait_for("notifications/cancelled")
        status, raw = await asyncio.wait_for(long_call, 10)
        assert (await busy_b)[0] == 200
        rows = await svc.query("SELECT status, req_bytes_upstream FROM calls FINAL WHERE tool = 'slow' "
                               "AND upstream = 'a'")
    assert received["params"]["requestId"] == forwarded["id"] != 101
    assert not any(m.get("method") == "notifications/cancelled" for m in tap_b.drain_nowait())
    assert b'"result"' not in raw and b'"error"' not in raw  # no answer for a cancelled request
    assert status in (200, 202)
    assert rows == [{"status": "cancelled", "req_bytes_upstream": rows[0]["req_bytes_upstream"]}]
    assert rows[0]["req_bytes_upstream"] > 0
