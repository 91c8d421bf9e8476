"""Upstreams marked `stateful` run one process per client session, stopped with the session."""

from __future__ import annotations

import asyncio
import os

from gateway.config import Timeouts
from tests.gateway.conftest import gateway_config, mcp_session, raw_upstream, running_gateway


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
