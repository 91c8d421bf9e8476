"""Upstreams marked `stateful` run one process per client session, stopped with the session."""

from __future__ import annotations

import asyncio
import os

import orjson
from aiohttp import ClientSession as Http

from gateway import jsonrpc
from gateway.config import Timeouts
from tests.gateway.conftest import echo_upstream, gateway_config, mcp_session, raw_upstream, running_gateway
from tests.gateway.test_downstream import open_session
from tests.gateway.test_requests import post, text_of


async def wait_gone(pids: list[int], timeout: float = 15.0) -> None:
    """Wait for each process to exit, on its pidfd (readable once the process has terminated)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            exited = asyncio.Event()
            loop.add_reader(fd, exited.set)
            try:
                await exited.wait()
            finally:
                loop.remove_reader(fd)
                os.close(fd)


async def test_each_session_gets_its_own_process_and_ending_the_session_stops_it() -> None:
    upstream = raw_upstream("s", "--spawn-stubborn", stateful=True, timeouts=Timeouts(init_seconds=15))
    async with running_gateway(gateway_config(upstream)) as url:
        async with mcp_session(url) as one, mcp_session(url) as two:
            first = (await one.call_tool("s__pids", {})).content[0].text  # type: ignore[union-attr]
            again = (await one.call_tool("s__pids", {})).content[0].text  # type: ignore[union-attr]
            second = (await two.call_tool("s__pids", {})).content[0].text  # type: ignore[union-attr]
        assert first == again and first != second
        pids = [int(pid) for pid in (first + " " + second).split()]
        await wait_gone(pids)  # the SDK client sent DELETE: both sessions' process groups are gone


async def test_a_sessions_own_instance_takes_the_log_level_set_before_it_started_and_after() -> None:
    upstream = echo_upstream("s", stateful=True, timeouts=Timeouts(init_seconds=15))
    async with running_gateway(gateway_config(upstream)) as url, Http() as http:
        one, two = await open_session(http, url), await open_session(http, url)

        async def level_after(session_id: str, level: str | None) -> str:
            if level is not None:
                status, raw = await post(http, url, session_id, jsonrpc.request_body(1, "logging/setLevel",
                                                                                     {"level": level}))
                assert (status, orjson.loads(raw)) == (200, jsonrpc.result_body(1, {}))
            _, answer = await post(http, url, session_id, jsonrpc.request_body(2, "tools/call", {
                "name": "s__log_level", "arguments": {}}))
            return text_of(answer)

        before_start = await level_after(one, "debug")  # the instance of session one starts after this
        running = await level_after(one, "error")  # now it runs: passed on at once
        other = await level_after(two, None)
    assert (before_start, running, other) == ("debug", "error", "unset")
