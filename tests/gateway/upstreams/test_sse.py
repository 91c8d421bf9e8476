"""LegacySseTransport (2024-11-05 HTTP+SSE) against the SDK echo server, server-everything and fakes."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from gateway.upstreams.base import TransportClosed, TransportError
from gateway.upstreams.sse import LegacySseTransport
from tests.fixtures.procs import free_port, http_fixture, start_everything_http, stop_process
from tests.gateway.upstreams.fake_http import fake_upstream, sse_response
from tests.gateway.upstreams.wire import Wire, text_of


def sse(url: str, **kwargs: object) -> LegacySseTransport:
    return LegacySseTransport("fixture", url, connect_timeout=5.0, **kwargs)  # type: ignore[arg-type]


async def test_round_trip_against_the_sdk_echo_server() -> None:
    async with http_fixture("sse", "beta") as url:
        transport = sse(url)
        wire = await Wire(transport).open()
        try:
            assert transport.endpoint is not None and transport.endpoint.startswith(url.removesuffix("/sse"))
            init = await wire.initialize()
            assert init["result"]["serverInfo"]["name"] == "beta"
            tools = await wire.request(1, "tools/list")
            assert "echo" in {t["name"] for t in tools["result"]["tools"]}
            assert text_of(await wire.call(2, "echo", text="hello")) == "hello"
            assert text_of(await wire.call(3, "utf8")) == "é—🙂漢"
        finally:
            await transport.close()
    assert await wire.wait_closed() is None
    assert wire.related == [None] * len(wire.raw)
    assert transport.stats.bytes_in == sum(map(len, wire.raw))


async def test_round_trip_against_server_everything() -> None:
    url, proc = await start_everything_http("sse")
    wire = await Wire(sse(url)).open()
    try:
        await wire.initialize()
        assert "héllo" in text_of(await wire.call(1, "echo", message="héllo"))
    finally:
        await wire.transport.close()
        await stop_process(proc)


async def test_the_endpoint_event_is_resolved_against_the_stream_url() -> None:
    async def get(request: web.Request) -> web.StreamResponse:
        return await sse_response(request, [b": hi\n\nevent: endpoint\ndata: ../post?session=1\n\n"])

    async def post(request: web.Request) -> web.StreamResponse:
        return web.Response(status=202)

    async with fake_upstream(post, get, path="/a/events") as fake:
        transport = sse(fake.url)
        await Wire(transport).open()
        assert transport.endpoint == fake.url.replace("/a/events", "/post?session=1")
        await transport.close()


async def test_events_with_empty_data_are_no_messages() -> None:
    answer = b'{"jsonrpc":"2.0","id":1,"result":{}}'
    stream = asyncio.Event()

    async def get(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"event: endpoint\ndata: /mcp?s=1\n\nid: 1\ndata:\n\n")
        await stream.wait()
        await response.write(b"event: message\ndata: \n\nevent: message\ndata: " + answer + b"\n\n")
        await asyncio.Event().wait()
        return response

    async def post(request: web.Request) -> web.StreamResponse:
        stream.set()
        return web.Response(status=202)

    async with fake_upstream(post, get) as fake:
        wire = await Wire(sse(fake.url)).open()
        assert (await wire.request(1, "ping"))["result"] == {}
        await wire.transport.close()
    assert wire.raw == [answer] and wire.transport.stats.messages_in == 1


async def test_an_endpoint_on_another_origin_is_refused() -> None:
    async def get(request: web.Request) -> web.StreamResponse:
        return await sse_response(request, [b"event: endpoint\ndata: http://evil.example/steal\n\n"])

    async def post(request: web.Request) -> web.StreamResponse:
        return web.Response(status=202)

    async with fake_upstream(post, get) as fake:
        with pytest.raises(TransportError, match="another origin"):
            await Wire(sse(fake.url)).open()


async def test_no_endpoint_event_within_the_connect_timeout_is_an_error() -> None:
    async def get(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await asyncio.Event().wait()  # hold the stream open, silent, until the client goes away
        return response

    async def post(request: web.Request) -> web.StreamResponse:
        return web.Response(status=202)

    async with fake_upstream(post, get) as fake:
        with pytest.raises(TransportError, match="no endpoint event"):
            await Wire(LegacySseTransport("fixture", fake.url, connect_timeout=0.3)).open()


async def test_a_stream_that_ends_closes_the_transport() -> None:
    release = asyncio.Event()

    async def get(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"event: endpoint\ndata: /mcp?s=1\n\n")
        await release.wait()
        return response

    async def post(request: web.Request) -> web.StreamResponse:
        return web.Response(status=202)

    async with fake_upstream(post, get) as fake:
        wire = await Wire(sse(fake.url)).open()
        release.set()
        cause = await wire.wait_closed()
        assert isinstance(cause, TransportClosed)
        with pytest.raises(TransportClosed):
            await wire.transport.send(b"{}")
        await wire.transport.close()
    assert wire.close_calls == 1


async def test_connection_refused_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/sse"
    with pytest.raises(TransportClosed, match="cannot connect"):
        await Wire(sse(url)).open()


async def test_a_non_stream_answer_to_get_is_a_clear_error() -> None:
    async def post(request: web.Request) -> web.StreamResponse:
        return web.Response(status=202)

    async def get(request: web.Request) -> web.StreamResponse:
        return web.Response(status=401, text="no")

    async with fake_upstream(post, get) as fake:
        with pytest.raises(TransportError, match="HTTP 401"):
            await Wire(sse(fake.url)).open()


async def test_a_forgotten_session_closes_the_transport_for_a_fresh_connect() -> None:
    async def get(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"event: endpoint\ndata: /mcp?s=gone\n\n")
        await asyncio.Event().wait()
        return response

    async def post(request: web.Request) -> web.StreamResponse:
        return web.Response(status=404, text="Could not find session")

    async with fake_upstream(post, get) as fake:
        wire = await Wire(sse(fake.url)).open()
        with pytest.raises(TransportClosed, match="no longer knows our session"):
            await wire.transport.send(b'{"jsonrpc":"2.0","id":1,"method":"ping"}', request_id=1)
        assert isinstance(await wire.wait_closed(), TransportClosed)
        await wire.transport.close()
    assert wire.close_calls == 1
