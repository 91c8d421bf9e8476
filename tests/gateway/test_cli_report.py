"""`tollgate report sessions|session|servers|calls|usage`: straight from the store when no server owns it, through
the running server's API when one does (the embedded directory is locked), as tables or JSON."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from gateway.cli import main, open_service
from gateway.config import load_config
from tests.store.test_queries_turns import BATCHES, DATA

SINCE = "2026-01-01T00:00:00Z"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "tollgate.toml"
    path.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\n\n[store]\ndsn = "chdb://{tmp_path / "chdb"}"\n'
                    "flush_seconds = 0.05\n")
    return path


async def serve_and_seed(config_path: Path) -> tuple[web.AppRunner, Any]:
    """The real service on the configured port, with the s4 capture posted to its own /v1/logs."""
    config = load_config(config_path)
    service = await open_service(config)
    runner = web.AppRunner(service.app, auto_decompress=False)
    await runner.setup()
    host, port = config.server.listen.split(":")
    await web.TCPSite(runner, host, int(port)).start()
    import aiohttp

    async with aiohttp.ClientSession() as http:
        for name in BATCHES:
            async with http.post(f"http://{config.server.listen}/v1/logs", data=(DATA / f"{name}.bin").read_bytes(),
                                 headers={"Content-Type": "application/x-protobuf"}) as response:
                assert response.status == 200
    await service.writer.flush()
    return runner, service


async def report(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = await asyncio.to_thread(main, ["--log-level", "warning", "report", *argv])
    return code, capsys.readouterr().out


async def test_reports_read_through_the_running_server_then_straight_from_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, free_port())
    runner, service = await serve_and_seed(config)
    try:
        code, out = await report(capsys, "sessions", "--config", str(config), "--since", SINCE, "--json")
        assert code == 0
        sessions = orjson.loads(out)["sessions"]
        session_id = sessions[0]["session_id"]
        code, table = await report(capsys, "session", session_id, "--config", str(config))
        assert code == 0 and f"session {session_id}" in table and "turns matched by prompt_id" in table
        assert table.count("prompt_id ") >= 2  # one row per turn in the turn table
    finally:
        await runner.cleanup()
        await service.close()

    code, direct = await report(capsys, "session", session_id, "--config", str(config))
    assert code == 0 and direct == table
    for command in ("sessions", "servers", "calls", "usage"):
        code, out = await report(capsys, command, "--config", str(config), "--since", SINCE)
        assert code == 0, command
        assert out.splitlines()[0].split()[0] in ("SESSION", "SERVER", "STARTED"), out
    code, _ = await report(capsys, "session", "no-such-session", "--config", str(config))
    assert code == 1
