"""A ClickHouse server that is down at startup: Tollgate serves anyway and spills what it records."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import open_service
from gateway.config import Config, StoreConfig
from store.deferred import DeferredStore
from tests.fixtures.clickhouse_http import ClickHouseShim, start_clickhouse
from tests.fixtures.procs import free_port
from tests.gateway.conftest import echo_upstream, gateway_config, mcp_session
from tests.gateway.service import serve_app

WAIT = 30.0


async def test_gateway_starts_and_proxies_while_the_store_server_is_unreachable(tmp_path: Path) -> None:
    base = gateway_config(echo_upstream("a"))
    config = Config(server=base.server, upstreams=base.upstreams,
                    store=StoreConfig(dsn="http://default:pw@127.0.0.1:1/tollgate", spill_dir=str(tmp_path / "spill")))
    service = await open_service(config)
    try:
        assert isinstance(service.store, DeferredStore) and not service.store.connected
        async with serve_app(service.app) as base_url, mcp_session(base_url + "/mcp") as client:
            result = await client.call_tool("a__echo", {"text": "kept"})
        assert "kept" in repr(result.content)
        assert service.writer.stats()["queued_rows"] >= 1  # the call row waits in the spill
        assert "pw" not in service.store.last_error
    finally:
        await service.close()
    spilled = b"".join(p.read_bytes() for p in (tmp_path / "spill").rglob("*") if p.is_file())
    assert b"calls" in spilled


async def test_a_call_spilled_while_the_server_was_down_arrives_once_when_it_comes_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reconnect and retry faster than production (5 s / up to 30 s) so the bounded wait stays short.
    monkeypatch.setitem(DeferredStore.__init__.__kwdefaults__, "retry_seconds", 0.2)
    port = free_port()  # nothing listens here yet
    base = gateway_config(echo_upstream("a"))
    config = Config(server=base.server, upstreams=base.upstreams,
                    store=StoreConfig(dsn=f"http://default:pw@127.0.0.1:{port}/tollgate",
                                      spill_dir=str(tmp_path / "spill"), flush_seconds=0.05))
    service = await open_service(config)
    shim: ClickHouseShim | None = None
    try:
        assert isinstance(service.store, DeferredStore) and not service.store.connected
        service.writer.max_backoff_seconds = 0.2
        async with serve_app(service.app) as base_url, mcp_session(base_url + "/mcp") as client:
            result = await client.call_tool("a__echo", {"text": "late"})
        assert "late" in repr(result.content)
        assert service.writer.stats()["queued_rows"] >= 1

        shim = await start_clickhouse(tmp_path / "clickhouse", port)  # the server comes up on that port
        await service.writer.wait_drained(WAIT)
        assert service.store.connected
        rows = await service.store.query("SELECT tool, status, count() AS n FROM calls GROUP BY tool, status")
        assert rows == [{"tool": "echo", "status": "ok", "n": 1}]  # once, without FINAL
    finally:
        await service.close()
        if shim is not None:
            await shim.stop()
    assert not [p for p in (tmp_path / "spill").rglob("*") if p.is_file() and b"calls" in p.read_bytes()]
