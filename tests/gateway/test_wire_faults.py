"""Wire faults seen through the whole gateway: noisy stdout, split UTF-8, a restarted HTTP upstream (C05, C10, C11)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession as Http
from aiohttp import web
from mcp import MCPError

from gateway import jsonrpc
from gateway.config import Timeouts, UpstreamConfig
from gateway.upstreams.client import TRANSPORT_EVENTS_PER_MINUTE
from tests.fixtures.procs import ECHO_SERVER, _read_until, stop_process
from tests.gateway.conftest import gateway_config, mcp_session, raw_upstream, running_gateway
from tests.gateway.recorder import Recorder
from tests.gateway.service import running_service
from tests.gateway.test_catalog import get_health
from tests.gateway.test_downstream import JSON_HEADERS, open_session
from tests.gateway.upstreams.fake_http import Handler, fake_upstream

MiB = 1024 * 1024


async def test_noise_on_stdout_is_survived_and_not_charged_to_calls(tmp_path: Path) -> None:
    upstream = raw_upstream("noisy", "--banner", "Server v1.2 starting", "--noise-between", "[db] connected")
    async with running_service(gateway_config(upstream), tmp_path / "db") as svc:
        async with mcp_session(svc.mcp_url) as client:
            first = await client.call_tool("noisy__echo", {"text": "one"})
            second = await client.call_tool("noisy__echo", {"text": "two"})
        rows = await svc.query("SELECT resp_bytes_upstream FROM calls FINAL ORDER BY started_at")
        events = await svc.query("SELECT kind FROM upstream_events FINAL WHERE upstream = 'noisy'")
    assert "one" in repr(first.content) and "two" in repr(second.content)
    # Exactly the answer's JSON line as the server wrote it (the gateway's ids for these calls are 3 and 4, after
    # initialize and tools/list): never the noise line that followed it.
    answers = [{"jsonrpc": "2.0", "id": n, "result": {"content": [{"type": "text", "text": text}], "isError": False}}
               for n, text in ((3, "one"), (4, "two"))]
    assert [row["resp_bytes_upstream"] for row in rows] == [
        len(json.dumps(answer, separators=(",", ":"))) for answer in answers]
    assert not {"restart", "unhealthy"} & {event["kind"] for event in events}  # the upstream stayed up


async def test_non_json_stdout_lines_are_recorded_counted_in_health_and_metrics_and_rate_limited(
        tmp_path: Path) -> None:
    upstream = raw_upstream("noisy", "--banner", "Server v1.2 starting", "--banner-repeat", "30",
                            "--noise-between", "[db] connected")
    async with running_service(gateway_config(upstream), tmp_path / "db") as svc:
        async with mcp_session(svc.mcp_url) as client:
            await client.call_tool("noisy__echo", {"text": "one"})
        async with Http() as http:
            async with http.get(svc.base_url + "/healthz") as response:
                health = await response.json()
            async with http.get(svc.base_url + "/metrics") as response:
                metrics = await response.text()
        events = await svc.query("SELECT detail FROM upstream_events FINAL "
                                 "WHERE upstream = 'noisy' AND kind = 'non_json_line'")
    # 30 banner lines before the first answer, then one after each of initialize, tools/list and the call.
    counted = health["upstreams"]["noisy"]["non_json_lines"]
    assert counted == 33
    assert f'tollgate_upstream_non_json_lines_total{{upstream="noisy"}} {counted}' in metrics
    details = [event["detail"] for event in events]
    assert len(details) == TRANSPORT_EVENTS_PER_MINUTE  # a noisy server cannot flood the store
    assert "Server v1.2 starting" in details


async def test_an_oversized_line_fails_the_call_clearly_and_the_restarted_upstream_serves_the_next() -> None:
    recorder = Recorder()
    upstream = raw_upstream("big", "--huge-line", str(10 * MiB), max_message_bytes=MiB,
                            timeouts=Timeouts(init_seconds=20))
    async with running_gateway(gateway_config(upstream), observers=[recorder]) as url, mcp_session(url) as client:
        readied = len(recorder.snapshots)  # one tool list snapshot each time the upstream becomes ready
        with pytest.raises(MCPError) as failed:
            await client.call_tool("big__huge", {})
        await recorder.wait_until(lambda: len(recorder.snapshots) > readied)
        answer = await client.call_tool("big__echo", {"text": "back"})
        health = await get_health(url)
    assert failed.value.error.code == jsonrpc.UPSTREAM_UNAVAILABLE
    assert re.fullmatch(rf"upstream big is unavailable: message of \d+\+ bytes passes the cap of {MiB}",
                        failed.value.error.message), failed.value.error.message
    assert answer.content[0].text == "back"  # type: ignore[union-attr]
    assert (health["upstreams"]["big"]["state"], health["upstreams"]["big"]["restarts"]) == ("ready", 1)


async def test_utf8_split_inside_an_emoji_arrives_intact_and_counts_12_bytes(tmp_path: Path) -> None:
    async with running_service(gateway_config(raw_upstream("split", "--split-utf8")), tmp_path / "db") as svc:
        async with mcp_session(svc.mcp_url) as client:
            result = await client.call_tool("split__utf8", {})
        (row,) = await svc.query("SELECT text_bytes FROM calls FINAL")
    assert result.content[0].text == "é—🙂漢"  # type: ignore[union-attr]
    assert row["text_bytes"] == 12


async def _echo_http_on(port: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ECHO_SERVER), "--transport", "http", "--port", str(port), "--name", "h",
        stdout=asyncio.subprocess.PIPE, start_new_session=True)
    await _read_until(process.stdout, b"LISTENING ")
    return process


@pytest.mark.parametrize("calls", [1, 5], ids=["one-call", "five-concurrent-calls"])
async def test_a_restarted_http_upstream_is_reinitialized_once_and_the_call_succeeds(
        tmp_path: Path, calls: int) -> None:
    # Five calls that lose the session together must still make one new session between them.
    from tests.fixtures.procs import free_port

    port = free_port()
    upstream = UpstreamConfig(name="h", type="http", url=f"http://127.0.0.1:{port}/mcp",
                              timeouts=Timeouts(init_seconds=20))
    process = await _echo_http_on(port)
    try:
        async with running_service(gateway_config(upstream), tmp_path / "db") as svc, \
                mcp_session(svc.mcp_url) as client:
            before = await client.call_tool("h__echo", {"text": "before"})
            await stop_process(process)
            process = await _echo_http_on(port)  # same address, all its sessions gone
            after = await asyncio.gather(*(client.call_tool("h__echo", {"text": f"after {n}"}) for n in range(calls)))
            events = await svc.query("SELECT detail FROM upstream_events FINAL WHERE kind = 'restart'")
    finally:
        await stop_process(process)
    assert "before" in repr(before.content)
    assert [f"after {n}" in repr(r.content) and not r.is_error for n, r in enumerate(after)] == [True] * calls
    assert [e["detail"] for e in events] == ["session lost; re-initialized"]


def forgetful_upstream(mode: str) -> Handler:
    """Serves initialize and tools/list; every tools/call gets HTTP 404 (our session is gone). The
    re-initialize then: succeeds, so the retried call gets a second 404 ("404_twice"); or is answered with
    a JSON-RPC error ("init_error"), with HTTP 500 ("init_http_500"), or never ("init_silent")."""
    inits = 0

    async def post(request: web.Request) -> web.StreamResponse:
        nonlocal inits
        body = orjson.loads(await request.read())
        if "id" not in body:
            return web.Response(status=202)
        if body["method"] == "initialize":
            inits += 1
            if inits > 1 and mode == "init_error":
                return web.json_response(jsonrpc.error_body(body["id"], jsonrpc.INVALID_PARAMS, "no more sessions"))
            if inits > 1 and mode == "init_http_500":
                return web.Response(status=500, text="the upstream broke")
            if inits > 1 and mode == "init_silent":
                await asyncio.Event().wait()
            result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "f"}}
            return web.json_response(jsonrpc.result_body(body["id"], result), headers={"Mcp-Session-Id": f"s{inits}"})
        if body["method"] == "tools/list":
            tool = {"name": "echo", "inputSchema": {"type": "object"}}
            return web.json_response(jsonrpc.result_body(body["id"], {"tools": [tool]}))
        return web.Response(status=404)

    return post


@pytest.mark.parametrize(("mode", "code", "status"), [
    ("404_twice", jsonrpc.UPSTREAM_UNAVAILABLE, "upstream_error"),
    ("init_error", jsonrpc.UPSTREAM_UNAVAILABLE, "upstream_error"),
    ("init_http_500", jsonrpc.UPSTREAM_UNAVAILABLE, "upstream_error"),
    ("init_silent", jsonrpc.REQUEST_TIMEOUT, "timeout"),
])
async def test_a_failed_reinitialize_answers_a_clear_error_and_the_call_is_recorded(
        mode: str, code: int, status: str) -> None:
    recorder = Recorder()
    async with fake_upstream(forgetful_upstream(mode)) as fake:
        upstream = UpstreamConfig(name="f", type="http", url=fake.url, timeouts=Timeouts(init_seconds=1.5))
        async with running_gateway(gateway_config(upstream), observers=[recorder]) as url, Http() as http:
            session_id = await open_session(http, url)
            body = orjson.dumps(jsonrpc.request_body(7, "tools/call", {"name": "f__echo", "arguments": {}}))
            async with http.post(url, data=body, headers={**JSON_HEADERS, "Mcp-Session-Id": session_id}) as response:
                answer: dict[str, Any] = orjson.loads(await response.read())
    assert answer["error"]["code"] == code
    assert [call.status for call in recorder.calls] == [status]
    assert recorder.kinds("f").count("restart") == 1  # re-initialized once, not in a loop


async def test_an_http_upstream_that_never_answers_a_post_times_out_the_call() -> None:
    async def post(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if body.get("method") == "tools/call":
            await asyncio.Event().wait()  # accepts the POST, never answers it
        return await forgetful_upstream("404_twice")(request)

    recorder = Recorder()
    timeouts = Timeouts(init_seconds=5.0, call_seconds=0.5, call_max_seconds=5.0)
    async with fake_upstream(post) as fake:
        upstream = UpstreamConfig(name="f", type="http", url=fake.url, timeouts=timeouts)
        async with running_gateway(gateway_config(upstream), observers=[recorder]) as url, Http() as http:
            session_id = await open_session(http, url)
            body = orjson.dumps(jsonrpc.request_body(7, "tools/call", {"name": "f__echo", "arguments": {}}))
            async with asyncio.timeout(10), \
                    http.post(url, data=body, headers={**JSON_HEADERS, "Mcp-Session-Id": session_id}) as response:
                answer: dict[str, Any] = orjson.loads(await response.read())
    assert answer["error"]["code"] == jsonrpc.REQUEST_TIMEOUT
    assert [call.status for call in recorder.calls] == ["timeout"]


async def test_the_sse_priming_events_of_server_everything_over_streamable_http_are_no_invalid_messages(
        caplog: pytest.LogCaptureFixture) -> None:
    # server-everything (2025-11-25) opens every SSE stream with the spec's priming event: an id and empty data.
    from gateway.prometheus import Metrics
    from tests.fixtures.procs import require_everything, start_everything_http

    require_everything()
    caplog.set_level(logging.INFO, "tollgate")
    recorder, metrics = Recorder(), Metrics()
    url, process = await start_everything_http("streamableHttp")
    upstream = UpstreamConfig(name="ehttp", type="http", url=url, timeouts=Timeouts(init_seconds=30))
    try:
        async with running_gateway(gateway_config(upstream), observers=[recorder, metrics]) as gateway, \
                mcp_session(gateway) as client:
            answers = [await client.call_tool("ehttp__echo", {"message": f"call {n}"}) for n in range(3)]
    finally:
        await stop_process(process)
    assert [f"call {n}" in repr(answer.content) for n, answer in enumerate(answers)] == [True] * 3
    assert "invalid_message" not in recorder.kinds("ehttp")
    assert not [key for key in metrics.counters["tollgate_upstream_events_total"] if ("kind", "invalid_message") in key]
    assert not [r.getMessage() for r in caplog.records if "invalid message" in r.getMessage()]
