"""UpstreamClient: restart backoff of a real upstream that keeps dying; transport events rate-limited; a
list_changed during a catalog refresh is never lost."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

import orjson
import pytest
from aiohttp import web

from gateway.config import Timeouts, UpstreamConfig
from gateway.upstreams import client as client_mod
from gateway.upstreams.client import (
    RESTART_BACKOFF,
    TRANSPORT_EVENTS_PER_MINUTE,
    State,
    UpstreamClient,
    _prefixed,
    _unnamed,
)
from gateway.upstreams.factory import make_transport
from tests.fixtures.procs import raw_stdio_command
from tests.gateway.upstreams.fake_http import fake_upstream, sse_response


class Quiet:
    """An UpstreamObserver that keeps the event kinds and nothing else."""

    def __init__(self) -> None:
        self.kinds: list[str] = []
        self.details: list[str] = []

    def upstream_changed(self, upstream: UpstreamClient) -> None:
        return None

    def upstream_notification(self, upstream: UpstreamClient, body: dict[str, Any]) -> None:
        return None

    def upstream_request(self, upstream: UpstreamClient, body: dict[str, Any]) -> None:
        return None

    def upstream_event(self, upstream: UpstreamClient, kind: str, detail: str) -> None:
        self.kinds.append(kind)
        self.details.append(detail)


async def restart_delays(count: int, *flags: str) -> tuple[list[float], UpstreamClient]:
    """Run an upstream that dies right after each successful start (or as `flags` tell the raw fixture server);
    the first `count` pauses it asked for."""
    delays: list[float] = []
    enough = asyncio.Event()

    async def pause(seconds: float) -> None:  # records the delay instead of waiting it
        delays.append(seconds)
        if len(delays) >= count:
            enough.set()
            await asyncio.Event().wait()  # hold the loop here until close() cancels it

    command, args = raw_stdio_command(*(flags or ("--exit-after-list",)))
    config = UpstreamConfig(name="dies", type="stdio", command=command, args=tuple(args),
                            timeouts=Timeouts(init_seconds=20.0))
    client = UpstreamClient(config, lambda: make_transport(config), Quiet(), sleep=pause)
    client.start()
    try:
        await asyncio.wait_for(enough.wait(), 60)
    finally:
        await client.close()
    return delays, client


async def test_an_upstream_that_dies_right_after_each_start_backs_off_longer_each_time() -> None:
    delays, client = await restart_delays(4)
    assert delays == list(RESTART_BACKOFF[:4])
    assert client.restarts == 4  # every start got as far as ready: these are restarts, not failed starts
    assert client.failed_starts == 0


async def test_an_upstream_that_exits_at_each_start_counts_failed_starts_and_logs_each_once_with_its_exit(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tollgate")
    delays, client = await restart_delays(3, "--exit-code", "3")
    unhealthy = [r.getMessage() for r in caplog.records if "unhealthy" in r.getMessage()]
    assert len(delays) == 3
    assert (client.health()["restarts"], client.health()["failed_starts"]) == (0, 3)
    assert len(unhealthy) == 3  # one line per failed start, not one per way of noticing it
    assert all(line.startswith("upstream dies unhealthy: upstream dies exited with code 3; last stderr: ")
               for line in unhealthy), unhealthy
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 3, [r.getMessage() for r in warnings]  # and nothing else about it at WARNING


async def test_an_initialize_waiting_for_its_answer_is_not_a_call_in_flight() -> None:
    asked, release = asyncio.Event(), asyncio.Event()

    async def never_answers(request: web.Request) -> web.StreamResponse:
        asked.set()
        await release.wait()
        return web.Response(status=503)

    async with fake_upstream(never_answers) as fake:
        config = UpstreamConfig(name="slow", type="http", url=fake.url, timeouts=Timeouts(init_seconds=30.0))
        client = UpstreamClient(config, lambda: make_transport(config), Quiet())
        client.start()
        try:
            await asyncio.wait_for(asked.wait(), 10)
            health = client.health()
        finally:
            release.set()
            await client.close()
    assert (health["state"], health["in_flight"]) == ("starting", 0)


async def test_an_upstream_that_stayed_ready_long_enough_restarts_after_the_shortest_delay(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_mod, "READY_STABLE_SECONDS", 0.0)  # every start counts as recovered
    delays, _ = await restart_delays(3)
    assert delays == [RESTART_BACKOFF[0]] * 3


class Readiness(Quiet):
    """Sets `again` once the upstream is ready after a restart."""

    def __init__(self) -> None:
        super().__init__()
        self.again = asyncio.Event()

    def upstream_changed(self, upstream: UpstreamClient) -> None:
        if upstream.state is State.READY and upstream.restarts:
            self.again.set()


async def test_a_killed_upstream_is_logged_as_killed_by_its_signal_and_then_as_ready_again(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tollgate")
    command, args = raw_stdio_command("--name", "victim", "--tools-named", "echo")
    config = UpstreamConfig(name="victim", type="stdio", command=command, args=tuple(args),
                            timeouts=Timeouts(init_seconds=20.0))
    observer = Readiness()

    async def no_pause(_: float) -> None:
        return None

    client = UpstreamClient(config, lambda: make_transport(config), observer, sleep=no_pause)
    client.start()
    try:
        assert await client.wait_ready(20)
        pid = client._transport.pid  # type: ignore[union-attr]
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)
        await asyncio.wait_for(observer.again.wait(), 20)
    finally:
        await client.close()
    logged = [r.getMessage() for r in caplog.records if r.name == "tollgate.upstream"]
    crash = "upstream victim was killed by SIGKILL; last stderr: raw server victim starting"
    assert f"upstream victim unhealthy: {crash}" in logged
    assert f"upstream victim ready again: 1 tools (2025-11-25); it was down: {crash}" in logged
    assert logged.index(f"upstream victim unhealthy: {crash}") < logged.index(
        f"upstream victim ready again: 1 tools (2025-11-25); it was down: {crash}")


def test_non_json_lines_are_all_counted_but_recorded_at_most_so_many_a_minute(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(client_mod.time, "monotonic", lambda: now[0])
    observer = Quiet()
    config = UpstreamConfig(name="noisy", type="stdio", command="true")
    client = UpstreamClient(config, lambda: make_transport(config), observer)
    for n in range(TRANSPORT_EVENTS_PER_MINUTE + 5):
        client._transport_event("non_json_line", f"line {n}")
    now[0] += 60.0
    client._transport_event("non_json_line", "a minute later")
    assert client.non_json_lines == TRANSPORT_EVENTS_PER_MINUTE + 6
    assert observer.details == [f"line {n}" for n in range(TRANSPORT_EVENTS_PER_MINUTE)] + [
        "a minute later (5 more not recorded)"]


def test_non_json_lines_are_logged_as_often_as_they_are_recorded(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tollgate")
    now = [1000.0]
    monkeypatch.setattr(client_mod.time, "monotonic", lambda: now[0])
    config = UpstreamConfig(name="noisy", type="stdio", command="true")
    client = UpstreamClient(config, lambda: make_transport(config), Quiet())
    for n in range(TRANSPORT_EVENTS_PER_MINUTE + 5):
        client._transport_event("non_json_line", f"line {n}")
    now[0] += 60.0
    client._transport_event("non_json_line", "a minute later")
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert logged == [f"upstream noisy stdout (not JSON-RPC, ignored): line {n}"
                      for n in range(TRANSPORT_EVENTS_PER_MINUTE)] + [
        "upstream noisy stdout (not JSON-RPC, ignored): a minute later (5 more such lines not logged)"]


@pytest.mark.parametrize(("text", "said"), [
    ("upstream h at http://127.0.0.1:1/mcp: cannot connect", "upstream h at http://127.0.0.1:1/mcp: cannot connect"),
    ("cannot connect", "upstream h: cannot connect"),
    ("upstream hh: other", "upstream h: upstream hh: other"),
])
def test_an_error_names_its_upstream_once(text: str, said: str) -> None:
    assert _prefixed("h", text) == said


def test_an_unavailable_upstreams_reason_does_not_repeat_its_name() -> None:
    assert _unnamed("x", "upstream x exited with status 1") == "exited with status 1"
    assert _unnamed("x", "upstream x: process is gone") == "process is gone"
    assert _unnamed("x", "process is gone") == "process is gone"


class ToolVersions:
    """A scripted HTTP upstream whose single tool is renamed v1, v2, v3: each time, it sends tools/list_changed
    inside the answer to another request (the `tools/call` it is sent, then its next `prompts/list`)."""

    def __init__(self) -> None:
        self.version = 1
        self.prompt_lists = 0

    async def post(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        method = body.get("method")
        if "id" not in body:
            return web.Response(status=202)
        if method == "initialize":
            return self.answer(body, {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}, "prompts": {}},
                                      "serverInfo": {"name": "versions", "version": "1"}})
        if method == "tools/list":
            return self.answer(body, {"tools": [{"name": f"v{self.version}", "inputSchema": {"type": "object"}}]})
        if method == "prompts/list":
            self.prompt_lists += 1
            return await self.change_then_answer(request, body, {"prompts": []}, self.prompt_lists == 2)
        return await self.change_then_answer(request, body, {"content": []}, True)

    async def change_then_answer(self, request: web.Request, body: dict[str, Any], result: dict[str, Any],
                                 change: bool) -> web.StreamResponse:
        if not change:
            return self.answer(body, result)
        self.version += 1
        changed = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
        answer = {"jsonrpc": "2.0", "id": body["id"], "result": result}
        return await sse_response(request, [b"data: " + orjson.dumps(m) + b"\n\n" for m in (changed, answer)])

    def answer(self, body: dict[str, Any], result: dict[str, Any]) -> web.Response:
        return web.Response(body=orjson.dumps({"jsonrpc": "2.0", "id": body["id"], "result": result}),
                            content_type="application/json", headers={"Mcp-Session-Id": "s-1"})


class CatalogWatch(Quiet):
    """Wakes a waiter whenever the upstream's catalog or state changed."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def upstream_changed(self, upstream: UpstreamClient) -> None:
        self.changed.set()

    async def until_tools(self, client: UpstreamClient, names: list[str], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while [tool["name"] for tool in client.catalog.items.get("tools", [])] != names:
                self.changed.clear()
                await self.changed.wait()


async def test_a_list_changed_arriving_while_a_refresh_reads_the_catalog_is_read_once_more() -> None:
    upstream, watch = ToolVersions(), CatalogWatch()
    async with fake_upstream(upstream.post) as fake:
        config = UpstreamConfig(name="versions", type="http", url=fake.url)
        client = UpstreamClient(config, lambda: make_transport(config), watch)
        client.start()
        try:
            assert await client.wait_ready(10)
            await watch.until_tools(client, ["v1"])
            await client.request("tools/call", {"name": "v1"})  # v2, announced; its refresh reads tools first,
            await watch.until_tools(client, ["v3"])  # then prompts, whose answer announces v3 (after v2 was read)
        finally:
            await client.close()
    assert upstream.prompt_lists == 3  # the first start, the refresh v2 started, and the one more read v3 needed
