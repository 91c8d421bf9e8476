"""The merged catalog: paginated and broken upstream lists, old protocol versions, bad upstreams (C04, C06, C13e)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession as Http
from aiohttp import web
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client

from gateway import jsonrpc, mcp
from gateway.config import Timeouts, UpstreamConfig
from gateway.downstream import SERVER_INFO, VERSION_HEADER
from gateway.upstreams import paging
from tests.fixtures.procs import free_port, http_fixture
from tests.gateway.conftest import (
    echo_upstream,
    gateway_config,
    mcp_session,
    raw_upstream,
    running_gateway,
)
from tests.gateway.recorder import Recorder
from tests.gateway.test_downstream import initialize, post
from tests.gateway.upstreams.fake_http import fake_upstream

FAST = Timeouts(init_seconds=3.0)


async def test_paginated_lists_are_read_to_the_end_and_a_repeating_cursor_stops_paging(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "tollgate.upstream")
    recorder = Recorder()
    config = gateway_config(raw_upstream("paginated", "--tool-count", "14", "--page-size", "8"),
                            raw_upstream("badcursor", "--tool-count", "5", "--page-size", "2", "--bad-cursor"))
    async with running_gateway(config, observers=[recorder]) as url, mcp_session(url) as client:
        result = await client.list_tools()
        health = await get_health(url)
    names = [tool.name for tool in result.tools]
    assert [n for n in names if n.startswith("paginated__")] == [f"paginated__tool_{i:02d}" for i in range(1, 15)]
    assert [n for n in names if n.startswith("badcursor__")] == ["badcursor__tool_01", "badcursor__tool_02"]
    assert len(names) == len(set(names))
    assert health["upstreams"]["badcursor"]["tools"] == 2  # the repeated page added nothing to its catalog
    assert result.next_cursor is None  # the gateway never hands out an upstream's cursor
    assert [kind for name, kind, _ in recorder.events if kind.startswith("pagination")] == ["pagination_cycle"]
    assert [name for name, kind, _ in recorder.events if kind == "pagination_cycle"] == ["badcursor"]
    assert "badcursor: tools/list repeated cursor 'again'" in caplog.text


async def test_paging_stops_at_the_page_cap_and_says_so(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(paging, "MAX_PAGES", 3)
    caplog.set_level(logging.WARNING, "tollgate.upstream")
    recorder = Recorder()
    config = gateway_config(raw_upstream("long", "--tool-count", "14", "--page-size", "2"))
    async with running_gateway(config, observers=[recorder]) as url, mcp_session(url) as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
    assert names == [f"long__tool_{i:02d}" for i in range(1, 7)]  # 3 pages of 2, the rest left unread
    assert ("long", "pagination_cap", "tools/list still had more after 3 pages") in recorder.events
    assert "long: tools/list still had more after 3 pages; stopped paging, keeping 6 items" in caplog.text


async def get_health(url: str) -> dict[str, Any]:
    async with Http() as http, http.get(url.replace("/mcp", "/healthz")) as response:
        health: dict[str, Any] = await response.json()
    return health


async def test_an_upstream_on_2024_11_05_is_negotiated_down_and_clients_see_one_version(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tollgate.downstream")
    config = gateway_config(raw_upstream("old", "--protocol", "2024-11-05"), echo_upstream("new"))
    version = {VERSION_HEADER: mcp.LATEST_VERSION}
    async with running_gateway(config) as url, Http() as http:
        async with http.get(url.replace("/mcp", "/healthz")) as response:
            health = await response.json()
        status, headers, init = await post(http, url, initialize(mcp.LATEST_VERSION))
        session_id = headers["Mcp-Session-Id"]
        await post(http, url, jsonrpc.notification_body("notifications/initialized"), session_id, **version)
        call = jsonrpc.request_body(1, "tools/call", {"name": "old__echo", "arguments": {"text": "hi"}})
        call_status, _, answer = await post(http, url, call, session_id, **version)
        _, _, listed = await post(http, url, jsonrpc.request_body(2, "tools/list"), session_id, **version)
        _, _, later = await post(http, url, initialize("2099-01-01"))  # a new client, after the old upstream served
    assert health["upstreams"]["old"]["protocol_version"] == "2024-11-05"
    assert health["upstreams"]["new"]["protocol_version"] == "2025-11-25"
    # The client sees the gateway's version and server, never the old upstream's, before and after its call.
    assert status == 200 and init["result"]["protocolVersion"] == mcp.LATEST_VERSION
    assert init["result"]["serverInfo"] == SERVER_INFO
    assert later["result"]["protocolVersion"] == mcp.LATEST_VERSION
    assert call_status == 200 and answer["result"]["content"][0]["text"] == "hi"
    assert {"old__echo", "new__echo"} <= {tool["name"] for tool in listed["result"]["tools"]}
    assert not [r for r in caplog.records if "but sent MCP-Protocol-Version" in r.getMessage()]


async def test_one_bad_upstream_never_empties_the_catalog(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "tollgate.upstream")
    bad = [
        UpstreamConfig(name="refused", type="http", url="http://127.0.0.1:1/mcp", timeouts=FAST),
        raw_upstream("exits", "--exit-code", "1", timeouts=FAST),
        raw_upstream("mute", "--never-init", timeouts=FAST),
    ]
    config = gateway_config(echo_upstream("good", timeouts=FAST), *bad)
    started = time.monotonic()
    async with running_gateway(config) as url:
        async with mcp_session(url) as client:
            tools = [tool.name for tool in (await client.list_tools()).tools]
            listed_after = time.monotonic() - started
            answer = await client.call_tool("good__echo", {"text": "still here"})
        health = await get_health(url)
    assert tools and all(name.startswith("good__") for name in tools)
    # The bad ones are waited for in parallel, each at most its init timeout (slack for a loaded machine).
    assert listed_after < FAST.init_seconds + 2.0
    assert answer.content[0].text == "still here"  # type: ignore[union-attr]
    assert health["status"] == "degraded"
    upstreams = health["upstreams"]
    assert {name: upstreams[name]["state"] for name in ("refused", "exits", "mute")} == dict.fromkeys(
        ("refused", "exits", "mute"), "unhealthy")  # retrying between attempts still counts as unhealthy
    assert "cannot connect" in upstreams["refused"]["last_error"]
    assert "exited with code 1" in upstreams["exits"]["last_error"]
    assert upstreams["mute"]["last_error"] == f"initialize timed out after {FAST.init_seconds:g}s"
    for name in ("refused", "exits", "mute"):
        assert f"upstream {name} unhealthy: {upstreams[name]['last_error']}" in caplog.text


class ListChanged:
    """A client's message handler that notes `notifications/tools/list_changed` (sent on the GET stream)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def on_message(self, message: Any) -> None:
        if "tools/list_changed" in repr(message):
            self.event.set()


async def test_a_recovered_upstream_rejoins_the_catalog_and_clients_are_told(tmp_path: Path) -> None:
    flag = tmp_path / "allow"
    # Exits until the flag file exists, then runs the echo server: an upstream that "comes back".
    script = f'test -e "{flag}" || exit 1; exec "$0" "$@"'
    echo = echo_upstream("late")
    late = UpstreamConfig(name="late", type="stdio", command="sh", args=("-c", script, echo.command or "", *echo.args),
                          timeouts=Timeouts(init_seconds=20.0))
    changed = ListChanged()

    async with running_gateway(gateway_config(echo_upstream("good"), late)) as url, \
            streamable_http_client(url) as streams, \
            ClientSession(streams[0], streams[1], message_handler=changed.on_message) as client:
        await client.initialize()
        before = [tool.name for tool in (await client.list_tools()).tools]
        flag.touch()
        await asyncio.wait_for(changed.event.wait(), 30)  # sent on the GET stream when the catalog changes
        after = [tool.name for tool in (await client.list_tools()).tools]
        answer = await client.call_tool("late__whoami", {})
    assert not any(name.startswith("late__") for name in before)
    assert "late__whoami" in after
    assert answer.content[0].text == "late"  # type: ignore[union-attr]


async def test_an_http_upstream_refusing_connections_rejoins_once_it_listens_and_clients_are_told() -> None:
    port = free_port()  # nothing listens here until the upstream "comes back"
    late = UpstreamConfig(name="late", type="http", url=f"http://127.0.0.1:{port}/mcp", timeouts=FAST)
    recorder = Recorder()
    changed = ListChanged()

    async with running_gateway(gateway_config(echo_upstream("good"), late), observers=[recorder]) as url, \
            streamable_http_client(url) as streams, \
            ClientSession(streams[0], streams[1], message_handler=changed.on_message) as client:
        await client.initialize()
        before = [tool.name for tool in (await client.list_tools()).tools]
        served = await client.call_tool("good__echo", {"text": "meanwhile"})
        down = (await get_health(url))["upstreams"]["late"]
        async with http_fixture("http", "late", port):
            await asyncio.wait_for(changed.event.wait(), 60)  # retried in the background, with backoff
            up = (await get_health(url))["upstreams"]["late"]
            after = [tool.name for tool in (await client.list_tools()).tools]
            answer = await client.call_tool("late__whoami", {})
    assert before and all(name.startswith("good__") for name in before)
    assert served.content[0].text == "meanwhile"  # type: ignore[union-attr]
    assert down["state"] == "unhealthy" and "cannot connect" in down["last_error"]
    assert (up["state"], up["last_error"]) == ("ready", "")
    assert up["failed_starts"] >= 1 and up["tools"] > 0
    assert "late__whoami" in after and set(before) < set(after)
    assert answer.content[0].text == "late"  # type: ignore[union-attr]
    assert any(snapshot.upstream == "late" for snapshot in recorder.snapshots)


# Passed through by `mute_front` each way; hop-by-hop headers (lengths, encodings) are the proxy's own.
FORWARDED_HEADERS = ("accept", "content-type", "mcp-session-id", "mcp-protocol-version", "last-event-id")


@asynccontextmanager
async def mute_front(target: str, answering: asyncio.Event) -> AsyncIterator[str]:
    """An HTTP upstream that accepts every request and answers none (a hung server) until `answering` is set;
    from then on a byte-for-byte relay to the real MCP server at `target`. Yields its URL."""
    async with Http() as http:
        async def relay(request: web.Request) -> web.StreamResponse:
            await answering.wait()  # held, connection open, for as long as the server is mute
            headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED_HEADERS}
            async with http.request(request.method, target, headers=headers, data=await request.read()) as answer:
                response = web.StreamResponse(status=answer.status, headers={
                    k: v for k, v in answer.headers.items() if k.lower() in FORWARDED_HEADERS})
                await response.prepare(request)
                async for chunk in answer.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response

        async with fake_upstream(relay, get=relay) as front:
            yield front.url


async def test_an_http_upstream_that_never_answers_initialize_rejoins_once_it_does() -> None:
    answering = asyncio.Event()
    changed = ListChanged()
    recorder = Recorder()

    async with http_fixture("http", "late") as target, mute_front(target, answering) as front:
        late = UpstreamConfig(name="late", type="http", url=front, timeouts=FAST)
        async with running_gateway(gateway_config(echo_upstream("good"), late), observers=[recorder]) as url, \
                streamable_http_client(url) as streams, \
                ClientSession(streams[0], streams[1], message_handler=changed.on_message) as client:
            await client.initialize()
            before = [tool.name for tool in (await client.list_tools()).tools]
            served = await client.call_tool("good__echo", {"text": "meanwhile"})
            # The gateway stops waiting at the init timeout just as the attempt itself times out: wait for its verdict.
            await recorder.wait_until(lambda: "unhealthy" in recorder.kinds("late"))
            down = (await get_health(url))["upstreams"]["late"]
            answering.set()
            await asyncio.wait_for(changed.event.wait(), 60)  # the next background attempt is answered
            up = (await get_health(url))["upstreams"]["late"]
            after = [tool.name for tool in (await client.list_tools()).tools]
            answer = await client.call_tool("late__whoami", {})
    assert before and all(name.startswith("good__") for name in before)
    assert served.content[0].text == "meanwhile"  # type: ignore[union-attr]
    assert (down["state"], down["last_error"]) == ("unhealthy", f"initialize timed out after {FAST.init_seconds:g}s")
    assert (up["state"], up["last_error"]) == ("ready", "")
    assert "late__whoami" in after and set(before) < set(after)
    assert answer.content[0].text == "late"  # type: ignore[union-attr]


async def test_resources_of_two_upstreams_are_merged_and_each_read_reaches_its_owner() -> None:
    async with running_gateway(gateway_config(echo_upstream("b"), echo_upstream("a"))) as url, \
            mcp_session(url) as client:
        resources = [str(r.uri) for r in (await client.list_resources()).resources]
        templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
        reads = {uri: (await client.read_resource(uri)).contents[0].text  # type: ignore[union-attr]
                 for uri in ("echo://a/static", "echo://b/static", "echo://a/items/1", "echo://b/items/2")}
        with pytest.raises(MCPError) as unknown:  # owned by no one: never guessed between two candidates
            await client.read_resource("echo://c/static")
    assert resources == ["echo://a/static", "echo://b/static"]
    assert templates == ["echo://a/items/{item}", "echo://b/items/{item}"]
    assert reads == {"echo://a/static": "static of a", "echo://b/static": "static of b",
                     "echo://a/items/1": "item 1 of a", "echo://b/items/2": "item 2 of b"}
    assert unknown.value.error.code == jsonrpc.INVALID_PARAMS


async def test_a_disabled_upstream_is_neither_started_nor_listed_nor_in_health(tmp_path: Path) -> None:
    started = tmp_path / "started"
    echo = echo_upstream("off")
    off = UpstreamConfig(name="off", type="stdio", command="sh", enabled=False,
                         args=("-c", f'touch "{started}"; exec "$0" "$@"', echo.command or "", *echo.args))
    async with running_gateway(gateway_config(echo_upstream("on"), off)) as url, mcp_session(url) as client:
        tools = [tool.name for tool in (await client.list_tools()).tools]
        health = await get_health(url)
    assert not started.exists()
    assert tools and all(name.startswith("on__") for name in tools)
    assert list(health["upstreams"]) == ["on"]
    assert health["status"] == "ok"
