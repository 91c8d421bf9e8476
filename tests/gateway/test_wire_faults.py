"""Wire faults seen through the whole gateway: noisy stdout, split UTF-8, a restarted HTTP upstream (C05, C10, C11)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from gateway.config import Timeouts, UpstreamConfig
from tests.fixtures.procs import ECHO_SERVER, _read_until, stop_process
from tests.gateway.conftest import gateway_config, mcp_session, raw_upstream
from tests.gateway.service import running_service


async def test_noise_on_stdout_is_survived_and_not_charged_to_calls(tmp_path: Path) -> None:
    upstream = raw_upstream("noisy", "--banner", "Server v1.2 starting", "--noise-between", "[db] connected")
    async with running_service(gateway_config(upstream), tmp_path / "db") as svc:
        async with mcp_session(svc.mcp_url) as client:
            first = await client.call_tool("noisy__echo", {"text": "one"})
            second = await client.call_tool("noisy__echo", {"text": "two"})
        rows = await svc.query("SELECT resp_bytes_upstream FROM calls FINAL ORDER BY started_at")
        events = await svc.query("SELECT kind FROM upstream_events FINAL WHERE upstream = 'noisy'")
    assert "one" in repr(first.content) and "two" in repr(second.content)
    noise = len(b"[db] connected\n")
    assert all(0 < row["resp_bytes_upstream"] < 200 for row in rows)  # a JSON line, never the noise
    assert all(row["resp_bytes_upstream"] != noise for row in rows)
    assert not {"restart", "unhealthy"} & {event["kind"] for event in events}  # the upstream stayed up


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


async def test_a_restarted_http_upstream_is_reinitialized_once_and_the_call_succeeds(tmp_path: Path) -> None:
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
            after = await client.call_tool("h__echo", {"text": "after"})
            events = await svc.query("SELECT detail FROM upstream_events FINAL WHERE kind = 'restart'")
    finally:
        await stop_process(process)
    assert "before" in repr(before.content) and "after" in repr(after.content)
    assert not after.is_error
    assert [e["detail"] for e in events] == ["session lost; re-initialized"]
