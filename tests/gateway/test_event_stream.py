"""Numbered SSE events on GET and POST streams, and Last-Event-ID replaying what a dropped client missed
from that stream only, out of a bounded buffer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiohttp import ClientSession as Http
from aiohttp import web

from gateway import jsonrpc
from gateway.app import HUB_KEY, create_app
from gateway.hub import Hub
from gateway.sessions import REPLAY_BUFFER_BYTES, REPLAY_BUFFER_EVENTS, EventStream
from gateway.upstreams.sse_parser import SseParser
from tests.gateway.conftest import echo_upstream, gateway_config
from tests.gateway.test_downstream import JSON_HEADERS, open_session


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


async def read_to_end(response: Any) -> list[tuple[str, str]]:
    parser, events = SseParser(), []
    async for chunk in response.content.iter_any():
        events += [(str(event.id), bytes(event.data).decode()) for event in parser.feed(chunk) if event.data]
    return events


@asynccontextmanager
async def gateway_with_hub() -> AsyncIterator[tuple[str, Hub]]:
    app = create_app(gateway_config(echo_upstream("a")))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/mcp", app[HUB_KEY]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


def announce(hub: Hub, n: int) -> None:
    """What an upstream's notifications/message does: reach every session's GET stream."""
    hub.upstream_notification(hub.upstreams["a"], jsonrpc.notification_body(
        "notifications/message", {"level": "info", "data": f"event-{n}"}))


PROGRESS_CALL = orjson.dumps(jsonrpc.request_body(5, "tools/call", {
    "name": "a__progress", "arguments": {"steps": 3, "ms": 20}, "_meta": {"progressToken": "t"}}))


async def test_every_event_of_a_post_stream_has_an_id_of_that_one_stream() -> None:
    async with gateway_with_hub() as (url, hub), Http() as http:
        session_id = await open_session(http, url)
        headers = {**JSON_HEADERS, "Mcp-Session-Id": session_id}
        async with http.post(url, data=PROGRESS_CALL, headers=headers) as response:
            assert response.content_type == "text/event-stream"
            events = await read_to_end(response)
        async with http.post(url, data=PROGRESS_CALL, headers=headers) as response:
            second = await read_to_end(response)
        general = hub.sessions.get(session_id).general.stream_id  # type: ignore[union-attr]
    streams = {event_id.rpartition("-")[0] for event_id, _ in events}
    assert len(events) == 4 and len(streams) == 1  # three progress notifications and the answer, one stream
    assert [event_id.rpartition("-")[2] for event_id, _ in events] == ["1", "2", "3", "4"]
    assert orjson.loads(events[-1][1])["id"] == 5
    assert streams.isdisjoint({general, *(event_id.rpartition("-")[0] for event_id, _ in second)})


async def test_a_progress_event_reaches_the_client_while_the_upstream_still_holds_the_call() -> None:
    hold = orjson.dumps(jsonrpc.request_body(1, "tools/call", {"name": "a__hold", "arguments": {},
                                                               "_meta": {"progressToken": "h"}}))
    release = orjson.dumps(jsonrpc.request_body(2, "tools/call", {"name": "a__release", "arguments": {}}))
    async with gateway_with_hub() as (url, _), Http() as http:
        headers = {**JSON_HEADERS, "Mcp-Session-Id": await open_session(http, url)}
        async with http.post(url, data=hold, headers=headers) as response:
            # The upstream answers only once released, after this read: a relay that held events back until the
            # answer would time out here.
            async with asyncio.timeout(10):
                (first,) = await read_events(response, 1)
            async with http.post(url, data=release, headers=headers) as released:
                assert (await released.json())["result"]["content"][0]["text"] == "ok"
            rest = await read_to_end(response)
    assert response.content_type == "text/event-stream"
    assert orjson.loads(first[1]) == jsonrpc.notification_body("notifications/progress", {
        "progressToken": "h", "progress": 1.0, "total": 2.0, "message": "holding"})
    assert [orjson.loads(data)["result"]["content"][0]["text"] for _, data in rest] == ["released"]


async def test_a_get_with_the_last_event_id_of_a_post_stream_replays_the_rest_of_it() -> None:
    async with gateway_with_hub() as (url, _), Http() as http:
        session_id = await open_session(http, url)
        headers = {**JSON_HEADERS, "Mcp-Session-Id": session_id}
        async with http.post(url, data=PROGRESS_CALL, headers=headers) as response:
            first = await read_events(response, 1)  # then the client drops the connection
        resume = {"Accept": "text/event-stream", "Mcp-Session-Id": session_id, "Last-Event-ID": first[0][0]}
        async with http.get(url, headers=resume) as response:
            rest = await read_to_end(response)  # the stream ends once the answer is written
    stream_id = first[0][0].rpartition("-")[0]
    assert [event_id for event_id, _ in rest] == [f"{stream_id}-{n}" for n in (2, 3, 4)]
    assert orjson.loads(rest[-1][1])["result"]["content"][0]["text"] == "done"


async def test_an_unknown_or_foreign_last_event_id_replays_nothing() -> None:
    async with gateway_with_hub() as (url, hub), Http() as http:
        # One session per attempt: a GET just dropped holds its session's stream until a write fails.
        mine = [await open_session(http, url) for _ in range(3)]
        other = await open_session(http, url)
        announce(hub, 1)  # buffered in every session, no GET attached
        never_issued = hub.sessions.get(mine[1]).general.event_id(999)  # type: ignore[union-attr]
        foreign = hub.sessions.get(other).general.event_id(1)  # type: ignore[union-attr]
        firsts = []
        for n, (session_id, last_event_id) in enumerate(zip(mine, ("nonsense", never_issued, foreign), strict=True),
                                                        start=2):
            headers = {"Accept": "text/event-stream", "Mcp-Session-Id": session_id, "Last-Event-ID": last_event_id}
            async with http.get(url, headers=headers) as stream:
                announce(hub, n)  # after the headers: the stream's starting point is fixed by then
                firsts.append((await read_events(stream, 1))[0][1])
    assert [orjson.loads(data)["params"]["data"] for data in firsts] == ["event-2", "event-3", "event-4"]


async def test_the_general_stream_keeps_only_the_newest_events_for_a_client_that_is_away() -> None:
    async with gateway_with_hub() as (url, hub), Http() as http:
        session_id = await open_session(http, url)
        for n in range(1, REPLAY_BUFFER_EVENTS + 45):
            announce(hub, n)
        general = hub.sessions.get(session_id).general  # type: ignore[union-attr]
        async with http.get(url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": session_id}) as stream:
            first = await read_events(stream, 1)
    assert len(general.buffer) == REPLAY_BUFFER_EVENTS
    assert orjson.loads(first[0][1])["params"]["data"] == "event-45"  # the oldest still kept


def test_a_stream_buffer_is_bounded_in_bytes_but_keeps_the_newest_event() -> None:
    stream = EventStream("s")
    for _ in range(3):
        stream.push(b"x" * (REPLAY_BUFFER_BYTES // 2))
    assert stream.buffered_bytes <= REPLAY_BUFFER_BYTES and len(stream.buffer) == 2
    stream.push(b"y" * (REPLAY_BUFFER_BYTES + 1))
    assert [seq for seq, _ in stream.buffer] == [4] and stream.after(3)[0][0] == 4


async def test_a_new_get_stream_takes_over_from_one_the_client_dropped() -> None:
    # A client that reconnects before the server noticed its old connection drop (that takes a failed keepalive
    # write) must not be refused: the newest GET gets the stream, the old one ends with nothing more written.
    async with gateway_with_hub() as (url, hub), Http() as http, asyncio.timeout(20):
        session_id = await open_session(http, url)
        headers = {"Accept": "text/event-stream", "Mcp-Session-Id": session_id}
        async with http.get(url, headers=headers) as first:
            announce(hub, 1)
            assert "event-1" in (await read_events(first, 1))[0][1]
            async with http.get(url, headers=headers) as second:
                assert second.status == 200
                assert await read_to_end(first) == []
                announce(hub, 2)
                (event,) = await read_events(second, 1)
    assert "event-2" in event[1]
