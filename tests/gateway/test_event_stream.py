"""The GET event stream: numbered events, and Last-Event-ID replays what a dropped client missed."""

from __future__ import annotations

from typing import Any

from aiohttp import ClientSession as Http
from aiohttp import web

from gateway import jsonrpc
from gateway.app import HUB_KEY, create_app
from gateway.upstreams.sse_parser import SseParser
from tests.gateway.conftest import echo_upstream, gateway_config
from tests.gateway.test_downstream import open_session


async def read_events(response: Any, count: int) -> list[tuple[str, str]]:
    parser, events = SseParser(), []
    async for chunk in response.content.iter_any():
        events += [(str(event.id), bytes(event.data).decode()) for event in parser.feed(chunk) if event.data]
        if len(events) >= count:
            return events[:count]
    raise AssertionError(f"stream ended after {len(events)} events")


async def test_last_event_id_replays_missed_events_of_that_stream() -> None:
    app = create_app(gateway_config(echo_upstream("a")))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/mcp"  # type: ignore[union-attr]
    hub = app[HUB_KEY]
    upstream = hub.upstreams["a"]

    def announce(n: int) -> None:  # what an upstream's notifications/message does: reach every session
        hub.upstream_notification(upstream, jsonrpc.notification_body("notifications/message",
                                                                      {"level": "info", "data": f"event-{n}"}))
    try:
        async with Http() as http:
            session_id = await open_session(http, url)
            headers = {"Accept": "text/event-stream", "Mcp-Session-Id": session_id}
            async with http.get(url, headers=headers) as stream:
                announce(1)
                announce(2)
                first = await read_events(stream, 2)
            announce(3)  # sent while the client is away
            async with http.get(url, headers={**headers, "Last-Event-ID": first[0][0]}) as stream:
                replayed = await read_events(stream, 2)
    finally:
        await runner.cleanup()
    assert [data for _, data in first] == [jsonrpc.encode(jsonrpc.notification_body(
        "notifications/message", {"level": "info", "data": f"event-{n}"})).decode() for n in (1, 2)]
    assert len({event_id for event_id, _ in first}) == 2
    assert replayed[0][0] == first[1][0]  # replay resumes right after the given id
    assert "event-3" in replayed[1][1]
