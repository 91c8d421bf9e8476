"""StreamableHttpTransport against the SDK echo server, server-everything and a scripted fake (C11)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiohttp import web

from gateway.upstreams.base import MessageTooLarge, SessionLost, TransportClosed, TransportError
from gateway.upstreams.http import StreamableHttpTransport
from tests.fixtures.procs import ECHO_SERVER, PYTHON, free_port, http_fixture, start_everything_http, stop_process
from tests.gateway.upstreams.fake_http import fake_upstream, sse_response
from tests.gateway.upstreams.wire import Wire, text_of


def http(url: str, **kwargs: object) -> StreamableHttpTransport:
    return StreamableHttpTransport("fixture", url, connect_timeout=5.0, **kwargs)  # type: ignore[arg-type]


async def test_round_trip_against_the_sdk_echo_server() -> None:
    async with http_fixture("http", "alpha") as url:
        wire = await Wire(http(url)).open()
        try:
            init = await wire.initialize()
            assert init["result"]["serverInfo"]["name"] == "alpha"
            assert wire.transport.session_id
            tools = await wire.request(1, "tools/list")
            assert {"echo", "utf8", "progress"} <= {t["name"] for t in tools["result"]["tools"]}
            assert text_of(await wire.call(2, "echo", text="hello")) == "hello"
            utf8 = await wire.call(3, "utf8")
            assert text_of(utf8) == "é—🙂漢" and len(text_of(utf8).encode()) == 12
        finally:
            await wire.transport.close()
    assert await wire.wait_closed() is None
    assert wire.related == [0, 1, 2, 3]  # each answer tagged with the request whose POST carried it
    assert wire.transport.stats.bytes_in == sum(map(len, wire.raw))


async def test_progress_streams_on_the_post_answer_tagged_with_the_request() -> None:
    async with http_fixture("http") as url:
        wire = await Wire(http(url)).open()
        try:
            await wire.initialize()
            params = {"name": "progress", "arguments": {"steps": 3, "ms": 1}, "_meta": {"progressToken": "tok"}}
            await wire.request(5, "tools/call", params)
        finally:
            await wire.transport.close()
    progress = [i for i, m in enumerate(wire.messages) if m.get("method") == "notifications/progress"]
    assert len(progress) == 3
    assert all(wire.related[i] == 5 for i in progress)


async def test_server_initiated_messages_arrive_on_the_get_stream_untagged() -> None:
    async with http_fixture("http") as url:
        transport = http(url)
        wire = await Wire(transport).open()
        try:
            await wire.initialize()
            assert await transport.open_event_stream() is True
            await wire.call(1, "notify_tools_changed")
            changed = await wire.wait_for(lambda m: m.get("method") == "notifications/tools/list_changed")
        finally:
            await transport.close()
    assert wire.related[wire.messages.index(changed)] is None


async def test_c11_restarted_upstream_raises_session_lost_then_reinitializes() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    server = await start_echo_on(port)
    wire = await Wire(http(url)).open()
    try:
        await wire.initialize()
        old_session = wire.transport.session_id
        await stop_process(server)
        server = await start_echo_on(port)
        with pytest.raises(SessionLost):
            await wire.call(1, "echo", text="again")
        assert wire.transport.session_id is None
        wire.messages.clear()
        await wire.initialize()
        assert wire.transport.session_id not in (None, old_session)
        assert text_of(await wire.call(2, "echo", text="again")) == "again"
    finally:
        await wire.transport.close()
        await stop_process(server)


async def start_echo_on(port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        PYTHON, str(ECHO_SERVER), "--transport", "http", "--port", str(port),
        stdout=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line.startswith(b"LISTENING")
    return proc


async def test_round_trip_against_server_everything() -> None:
    url, proc = await start_everything_http("streamableHttp")
    wire = await Wire(http(url)).open()
    try:
        await wire.initialize()
        tools = await wire.request(1, "tools/list")
        assert "echo" in {t["name"] for t in tools["result"]["tools"]}
        assert "héllo" in text_of(await wire.call(2, "echo", message="héllo"))
    finally:
        await wire.transport.close()
        await stop_process(proc)


async def test_connection_refused_is_a_clear_transport_closed() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    wire = await Wire(http(url)).open()
    with pytest.raises(TransportClosed, match=r"cannot connect") as caught:
        await wire.transport.send(b'{"jsonrpc":"2.0","id":1,"method":"ping"}', request_id=1)
    assert url in str(caught.value)
    await wire.transport.close()


async def test_headers_session_and_protocol_version_are_sent_and_delete_ends_the_session() -> None:
    async def post(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if "id" not in body:
            return web.Response(status=202)
        answer = orjson.dumps({"jsonrpc": "2.0", "id": body["id"], "result": {}})
        return web.Response(body=answer, content_type="application/json", headers={"Mcp-Session-Id": "s-1"})

    async with fake_upstream(post) as fake:
        transport = http(fake.url, headers={"Authorization": "Bearer secret"})
        wire = await Wire(transport).open()
        await wire.request(1, "initialize", {})
        transport.set_protocol_version("2025-06-18")
        await wire.notify("notifications/initialized")
        assert await transport.open_event_stream() is False  # the fake answers GET with 405
        await transport.close()
    first, second = fake.seen[0].headers, fake.seen[1].headers
    assert "Mcp-Session-Id" not in first and "MCP-Protocol-Version" not in first
    assert first["Accept"] == "application/json, text/event-stream"
    assert first["Content-Type"] == "application/json" and first["Authorization"] == "Bearer secret"
    assert second["Mcp-Session-Id"] == "s-1" and second["MCP-Protocol-Version"] == "2025-06-18"
    assert [s.method for s in fake.seen] == ["POST", "POST", "GET", "DELETE"]
    assert fake.seen[-1].headers["Mcp-Session-Id"] == "s-1"
    assert wire.close_calls == 1


async def test_http_errors_deliver_json_rpc_errors_for_our_id_and_raise_otherwise() -> None:
    async def post(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if body["id"] == 1:
            error = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "bad params"}}
            return web.Response(status=400, body=orjson.dumps(error), content_type="application/json")
        return web.Response(status=500, text="database on fire " + "x" * 1000)

    async with fake_upstream(post) as fake:
        wire = await Wire(http(fake.url)).open()
        answer = await wire.request(1, "tools/call", {})
        assert answer["error"]["code"] == -32602
        with pytest.raises(TransportError, match=r"HTTP 500: database on fire") as caught:
            await wire.transport.send(b'{"jsonrpc":"2.0","id":2,"method":"x"}', request_id=2)
        assert len(str(caught.value)) < 300
        await wire.transport.close()


async def test_a_json_array_answer_delivers_each_message() -> None:
    async def post(request: web.Request) -> web.StreamResponse:
        batch = [{"jsonrpc": "2.0", "method": "notifications/message"}, {"jsonrpc": "2.0", "id": 3, "result": {}}]
        return web.Response(body=orjson.dumps(batch), content_type="application/json")

    async with fake_upstream(post) as fake:
        wire = await Wire(http(fake.url)).open()
        await wire.request(3, "ping")
        await wire.transport.close()
    assert [m.get("id") for m in wire.messages] == [None, 3]
    assert wire.related == [3, 3]


async def test_a_dropped_get_stream_reconnects_with_last_event_id() -> None:
    gets: list[str | None] = []

    async def post(request: web.Request) -> web.StreamResponse:
        return web.Response(status=202, headers={"Mcp-Session-Id": "s-9"})

    async def get(request: web.Request) -> web.StreamResponse:
        gets.append(request.headers.get("Last-Event-ID"))
        if len(gets) == 1:
            first = b'retry: 10\nid: e1\ndata: {"jsonrpc":"2.0","method":"a"}\n\n'
            return await sse_response(request, [first], drop=True)
        return await sse_response(request, [b'id: e2\ndata: {"jsonrpc":"2.0","method":"b"}\n\n'])

    async with fake_upstream(post, get) as fake:
        wire = await Wire(http(fake.url)).open()
        await wire.notify("notifications/initialized")
        assert await wire.transport.open_event_stream() is True
        await wire.wait_for(lambda m: m.get("method") == "b")
        await wire.transport.close()
    assert gets[:2] == [None, "e1"]
    assert [m["method"] for m in wire.messages] == ["a", "b"]
    assert wire.related == [None, None]


async def test_a_priming_event_is_no_message_and_its_id_resumes_a_dropped_answer_stream() -> None:
    gets: list[str | None] = []

    async def post(request: web.Request) -> web.StreamResponse:  # primes the stream, then drops before answering
        return await sse_response(request, [b"id: p1\ndata:\n\n", b"id: p2\ndata: \n\n"], drop=True)

    async def get(request: web.Request) -> web.StreamResponse:
        gets.append(request.headers.get("Last-Event-ID"))
        return await sse_response(request, [b'id: p3\ndata: {"jsonrpc":"2.0","id":4,"result":{}}\n\n'])

    async with fake_upstream(post, get) as fake:
        wire = await Wire(http(fake.url)).open()
        answer = await wire.request(4, "ping")
        await wire.transport.close()
    assert answer == {"jsonrpc": "2.0", "id": 4, "result": {}}
    assert gets == ["p2"]  # the priming events' id is kept for the resumption
    assert wire.raw == [b'{"jsonrpc":"2.0","id":4,"result":{}}'] and wire.transport.stats.messages_in == 1


async def test_an_oversized_sse_event_closes_with_message_too_large() -> None:
    async with http_fixture("http") as url:
        wire = await Wire(http(url, max_message_bytes=50_000)).open()
        await wire.initialize()
        await wire.transport.send(
            b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"blob","arguments":{"n":200000}}}',
            request_id=9,
        )
        assert isinstance(await wire.wait_closed(), MessageTooLarge)
        assert wire.transport.stats.oversized_messages == 1
        with pytest.raises(TransportClosed):
            await wire.transport.send(b"{}")
        await wire.transport.close()
    assert wire.close_calls == 1


async def test_an_oversized_json_answer_raises_message_too_large() -> None:
    async def post(request: web.Request) -> web.StreamResponse:
        answer = {"jsonrpc": "2.0", "id": 1, "result": {"text": "x" * 100_000}}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async with fake_upstream(post) as fake:
        wire = await Wire(http(fake.url, max_message_bytes=10_000)).open()
        with pytest.raises(MessageTooLarge):
            await wire.transport.send(b'{"jsonrpc":"2.0","id":1,"method":"x"}', request_id=1)
        await wire.transport.close()
    assert wire.messages == []
