"""Nothing acknowledged is lost: a killed gateway and a store outage keep every call row, once."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession as Http

from gateway import jsonrpc
from gateway.mcp import META_TOOL_USE_ID
from store import queries_servers
from store.client import Store
from store.errors import StoreUnavailable
from tests.gateway.conftest import ECHO_SERVER, echo_upstream, gateway_config
from tests.gateway.service import running_service
from tests.gateway.test_downstream import JSON_HEADERS, open_session

READY_LINE = b"Tollgate listening"
CAPTURED_LOGS = Path(__file__).resolve().parents[1] / "data" / "claude_code" / "s1_protobuf" / "otlp" / "0001_logs.bin"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_config(path: Path, port: int, data_dir: Path) -> Path:
    path.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
[store]
dsn = "chdb://{data_dir}"
flush_seconds = 30
[upstreams.a]
type = "stdio"
command = {orjson.dumps(sys.executable).decode()}
args = [{orjson.dumps(str(ECHO_SERVER)).decode()}, "--name", "a"]
""")
    return path


@asynccontextmanager
async def tollgate_process(config: Path, *options: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """`tollgate serve` (with more serve `options`) as a real subprocess, yielded once it announced it is listening."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), *options,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    assert process.stderr is not None
    drain: asyncio.Task[None] | None = None
    seen: list[bytes] = []
    try:
        async with asyncio.timeout(60):
            while READY_LINE not in (line := await process.stderr.readline()):
                seen.append(line)
                assert line, "tollgate serve exited before listening: " + b"".join(seen[-20:]).decode()
        drain = asyncio.create_task(_drain(process.stderr))
        yield process
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        if drain is not None:
            await asyncio.wait_for(drain, 30)  # the pipe ends with the process group


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


async def echo_calls(url: str, texts: list[str]) -> list[str]:
    """Call a__echo once per text, each with the text as its Claude Code tool_use_id (so a stored row names
    its call); returns the texts whose answers arrived (acknowledged)."""
    acknowledged = []
    async with Http() as http:
        session_id = await open_session(http, url)
        for index, text in enumerate(texts):
            body = jsonrpc.request_body(index + 1, "tools/call", {
                "name": "a__echo", "arguments": {"text": text}, "_meta": {META_TOOL_USE_ID: text}})
            async with http.post(url, data=orjson.dumps(body),
                                 headers={**JSON_HEADERS, "Mcp-Session-Id": session_id}) as response:
                answer = orjson.loads(await response.read())
            assert answer["result"]["content"][0]["text"] == text
            acknowledged.append(text)
    return acknowledged


def spill_segments(data_dir: Path) -> list[str]:
    return sorted(path.name for path in (data_dir / "spill").glob("segment-*.jsonl"))


async def stored_echo_calls(data_dir: Path) -> tuple[dict[str, dt.datetime], int]:
    """Each stored echo call's tool_use_id (its text) with the insert time of the copy FINAL keeps (the latest), and
    the calls `report servers` counts for upstream a."""
    store = await Store.open(f"chdb://{data_dir}")
    try:
        final = await store.query("SELECT tool_use_id, inserted_at FROM calls FINAL WHERE tool = 'echo'")
        reported = {row["upstream"]: row["calls"] for row in await queries_servers.servers(store)}
    finally:
        await store.close()
    return {row["tool_use_id"]: row["inserted_at"] for row in final}, reported.get("a", 0)


async def exit_status(config: Path, module: str) -> int:
    """Run `python -m MODULE serve --config CONFIG` until it exits by itself (bounded); its exit status."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, "serve", "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # anything it started
    assert process.returncode is not None, stderr.decode()
    return process.returncode


async def test_kill_9_loses_no_acknowledged_call_and_a_crash_mid_replay_still_counts_each_once(
        tmp_path: Path) -> None:
    data_dir, port = tmp_path / "db", free_port()
    config = write_config(tmp_path / "tollgate.toml", port, data_dir)
    url = f"http://127.0.0.1:{port}/mcp"
    async with tollgate_process(config) as first:
        acknowledged = await echo_calls(url, [f"call-{i}" for i in range(40)])
        os.killpg(first.pid, signal.SIGKILL)  # flush_seconds=30: the rows exist only in the spill
        await first.wait()
    spilled = spill_segments(data_dir)
    assert spilled

    # The next start replays the spill into the store and is killed before it deletes the segments...
    assert await exit_status(config, "tests.gateway.serve_killed_before_retire") == -signal.SIGKILL
    assert spill_segments(data_dir) == spilled
    replayed, counted = await stored_echo_calls(data_dir)
    assert sorted(replayed) == sorted(acknowledged) and counted == len(acknowledged)

    # ...so the start after it stores every one of those rows a second time, and still counts each once.
    async with tollgate_process(config) as again:
        again.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(again.wait(), 60) == 0
    assert spill_segments(data_dir) == []
    twice, counted = await stored_echo_calls(data_dir)
    assert sorted(twice) == sorted(acknowledged) and counted == len(acknowledged)
    assert all(twice[text] > replayed[text] for text in acknowledged)  # FINAL keeps the second copy: it was stored


async def test_proxying_continues_through_a_store_outage_and_rows_arrive_after(tmp_path: Path) -> None:
    async with running_service(gateway_config(echo_upstream("a")), tmp_path / "db") as svc:
        store = svc.service.store
        real_insert = store.insert
        outage = asyncio.Event()
        outage.set()
        refused = asyncio.Event()

        async def failing_insert(*args: Any, **kwargs: Any) -> int:
            if outage.is_set():  # what an unreachable ClickHouse server looks like to the writer
                refused.set()
                raise StoreUnavailable("simulated outage")
            result: int = await real_insert(*args, **kwargs)
            return result

        store.insert = failing_insert  # type: ignore[method-assign]
        acknowledged = await echo_calls(svc.mcp_url, [f"during-outage-{i}" for i in range(10)])
        await asyncio.wait_for(refused.wait(), 10)
        assert len(acknowledged) == 10
        outage.clear()
        rows = await svc.query("SELECT count() AS n FROM calls FINAL WHERE tool = 'echo'")
    assert rows[0]["n"] == 10


async def test_a_full_spill_during_an_outage_refuses_otlp_with_503_and_drops_call_rows_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = CAPTURED_LOGS.read_bytes()
    async with running_service(gateway_config(echo_upstream("a")), tmp_path / "db", max_spill_bytes=1) as svc:
        store = svc.service.store

        async def down(*args: Any, **kwargs: Any) -> Any:
            raise StoreUnavailable("simulated outage")

        store.insert = down  # type: ignore[method-assign]
        store.insert_json_arrays = down  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="store.writer"):
            acknowledged = await echo_calls(svc.mcp_url, [f"past-the-bound-{i}" for i in range(5)])
        assert len(acknowledged) == 5  # proxying never fails for accounting
        async with Http() as http:
            async with http.post(svc.base_url + "/v1/logs", data=body,
                                 headers={"Content-Type": "application/x-protobuf"}) as refused:
                assert refused.status == 503
                assert int(refused.headers["Retry-After"]) >= 1
            async with http.get(svc.base_url + "/metrics") as metrics:
                text = await metrics.text()
        dropped = svc.service.writer.stats()["dropped_rows"]
        assert dropped >= 4  # at most one row got in before the spill held something
        assert f"tollgate_writer_dropped_rows_total {dropped}" in text
        assert "tollgate_writer_max_spill_bytes 1" in text
        assert len([r for r in caplog.records if "spill full" in r.message]) == 1  # rate-limited
