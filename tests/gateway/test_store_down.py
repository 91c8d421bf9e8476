"""A ClickHouse server that is down at startup: Tollgate serves anyway and spills what it records."""

from __future__ import annotations

from pathlib import Path

from gateway.cli import open_service
from gateway.config import Config, StoreConfig
from store.deferred import DeferredStore
from tests.gateway.conftest import echo_upstream, gateway_config, mcp_session
from tests.gateway.service import serve_app


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
