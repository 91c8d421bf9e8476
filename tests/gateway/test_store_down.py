"""A ClickHouse server that is down at startup: Tollgate serves anyway (OTLP exports included), spills what it
records, and rebuilds budget spend only once what an earlier run spilled is in the store."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession as Http

from gateway.budget_store import SpendLoader
from gateway.cli import open_service
from gateway.config import BudgetConfig, Config, ServerConfig, StoreConfig
from store.deferred import DeferredStore
from tests.fixtures.clickhouse_http import ClickHouseShim, start_clickhouse
from tests.fixtures.procs import free_port
from tests.gateway.conftest import echo_upstream, gateway_config, mcp_session
from tests.gateway.service import serve_app
from tests.gateway.test_downstream import open_session
from tests.ingest.conftest import capture, capture_doc, events_named, expected_logs, expected_points

WAIT = 30.0



def config_for_a_server_not_up_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, Config]:
    """A gateway config whose store is a ClickHouse server on a free port nobody listens on yet, with reconnects
    faster than production's (5 s, backing off to 30 s) so a test's bounded wait stays short."""
    monkeypatch.setitem(DeferredStore.__init__.__kwdefaults__, "retry_seconds", 0.2)
    port = free_port()
    base = gateway_config(echo_upstream("a"))
    return port, Config(server=base.server, upstreams=base.upstreams,
                        store=StoreConfig(dsn=f"http://default:pw@127.0.0.1:{port}/tollgate",
                                          spill_dir=str(tmp_path / "spill"), flush_seconds=0.05))


async def test_gateway_starts_and_proxies_while_the_store_server_is_unreachable(tmp_path: Path) -> None:
    base = gateway_config(echo_upstream("a"))
    config = Config(server=base.server, upstreams=base.upstreams,
                    store=StoreConfig(dsn="http://default:pw@127.0.0.1:1/tollgate", spill_dir=str(tmp_path / "spill")))
    service = await open_service(config)
    try:
        assert isinstance(service.store, DeferredStore) and not service.store.connected
        assert service.store.database == "tollgate"  # known before connecting: SQL names it before the query
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
    port, config = config_for_a_server_not_up_yet(tmp_path, monkeypatch)
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


async def test_spend_is_rebuilt_only_once_the_previous_runs_spill_is_in_the_store_that_came_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(DeferredStore.__init__.__kwdefaults__, "retry_seconds", 0.2)
    monkeypatch.setattr(SpendLoader.__init__, "__defaults__", (0.2,))  # the spend load's retry, 5 s in production
    port = free_port()  # nothing listens here until the second run
    # flush_seconds far off: the writer stores nothing of its own accord during the test (in production its
    # backoff can reach 30 s), so only the spend load can bring the first run's rows in before it reads.
    store = StoreConfig(dsn=f"http://default:pw@127.0.0.1:{port}/tollgate", spill_dir=str(tmp_path / "spill"),
                        flush_seconds=3600)

    def config(fail_open: bool) -> Config:
        upstream = echo_upstream("a", budget=BudgetConfig(day_calls=3, fail_open=fail_open))
        return Config(server=gateway_config().server, upstreams=(upstream,), store=store)

    first = await open_service(config(fail_open=True))  # served from zero; its calls wait in the spill
    try:
        async with serve_app(first.app) as base_url, mcp_session(base_url + "/mcp") as client:
            for _ in range(2):
                assert not (await client.call_tool("a__echo", {"text": "first run"})).is_error
    finally:
        await first.close()

    second = await open_service(config(fail_open=False))
    shim: ClickHouseShim | None = None
    try:
        async with serve_app(second.app) as base_url, mcp_session(base_url + "/mcp") as client:
            unknown = await client.call_tool("a__echo", {"text": "store still down"})
            shim = await start_clickhouse(tmp_path / "clickhouse", port)
            await asyncio.wait_for(second.spend.loaded.wait(), WAIT)
            third = await client.call_tool("a__echo", {"text": "third of the day"})
            fourth = await client.call_tool("a__echo", {"text": "one too many"})
        await second.writer.flush()
        events = await second.store.query("SELECT limit_name, action, used, `limit` FROM budget_events FINAL "
                                          "ORDER BY at")
    finally:
        await second.close()
        if shim is not None:
            await shim.stop()
    assert unknown.is_error and "fail_open = false" in repr(unknown.content)
    assert not third.is_error
    assert fourth.is_error and "used 3 of 3 calls" in repr(fourth.content)  # the first run's 2 counted
    # every decision is recorded, the refusal while past spend was unknown too
    assert events == [{"limit_name": "spend_unknown", "action": "deny", "used": 0.0, "limit": 0.0},
                      {"limit_name": "day_calls", "action": "deny", "used": 3.0, "limit": 3.0}]


async def test_healthz_is_degraded_while_the_store_is_unreachable_and_the_log_says_it_once_down_and_once_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setitem(DeferredStore.__init__.__kwdefaults__, "retry_seconds", 0.2)
    monkeypatch.setattr(SpendLoader.__init__, "__defaults__", (0.2,))
    port = free_port()  # nothing listens here until the store "comes back"
    dsn = f"http://default:pw-s3cret@127.0.0.1:{port}/tollgate"
    token = {"Authorization": "Bearer health-token"}
    config = Config(server=ServerConfig(auth_tokens=("health-token",)),
                    upstreams=(echo_upstream("a", budget=BudgetConfig(day_calls=10, fail_open=False)),),
                    store=StoreConfig(dsn=dsn, spill_dir=str(tmp_path / "spill"), flush_seconds=0.05))
    service = await open_service(config)
    shim: ClickHouseShim | None = None
    try:
        assert isinstance(service.store, DeferredStore)
        service.writer.max_backoff_seconds = 0.2
        async with serve_app(service.app) as base_url, Http() as http:

            async def health(headers: dict[str, str]) -> tuple[int, Any]:
                async with http.get(base_url + "/healthz", headers=headers) as response:
                    return response.status, await response.json()

            async with Http(headers=token) as client:
                await open_session(client, base_url + "/mcp")  # its session row waits in the spill
            async with asyncio.timeout(WAIT):
                while service.store.health.failures < 3:  # several connection attempts, each failing
                    await service.writer.wait_progress(WAIT)
            anonymous = await health({})
            status, down = await health(token)
            shim = await start_clickhouse(tmp_path / "clickhouse", port)
            await asyncio.wait_for(service.spend.loaded.wait(), WAIT)
            await service.writer.wait_drained(WAIT)
            _, up = await health(token)
    finally:
        await service.close()
        if shim is not None:
            await shim.stop()
    assert anonymous == (200, {"status": "degraded"})  # without the token, the overall status only
    assert (status, down["status"], down["upstreams"]["a"]["state"]) == (200, "degraded", "ready")
    assert down["budgets"] == {"spend_unknown": ["a"], "refusing_calls": ["a"]}
    store = down["store"]
    assert (store["state"], store["dsn"], store["accepting_writes"]) == (
        "unreachable", f"http://default:***@127.0.0.1:{port}/tollgate", True)
    assert store["pending_rows"] >= 1 and store["spill_bytes"] > 0 and store["failed_attempts"] >= 3
    assert "Connection refused" in store["last_error"] and "pw-s3cret" not in repr(down)
    assert up["status"] == "ok" and up["store"] == {
        "state": "connected", "dsn": f"http://default:***@127.0.0.1:{port}/tollgate", "accepting_writes": True,
        "pending_rows": 0, "spill_bytes": 0, "max_spill_bytes": config.store.max_spill_bytes, "dropped_rows": 0}
    assert up["budgets"] == {"spend_unknown": [], "refusing_calls": []}
    loud = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert not [r.getMessage() for r in loud if r.name.startswith(("urllib3", "clickhouse_connect"))]
    said = [(r.levelname, r.getMessage().split(" (")[0].split(" after ")[0]) for r in loud if r.name == "store.health"]
    assert said == [("WARNING", f"store http://default:***@127.0.0.1:{port}/tollgate unreachable"),
                    ("INFO", f"store http://default:***@127.0.0.1:{port}/tollgate reachable again")]
    assert [r.getMessage() for r in loud if r.name == "store.writer"] == []  # the store's health said it
    assert len([r for r in loud if "could not read past spend" in r.getMessage()]) == 1


async def test_otlp_is_answered_200_while_the_server_is_down_and_its_rows_arrive_once_when_it_comes_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, config = config_for_a_server_not_up_yet(tmp_path, monkeypatch)
    logs, metrics = capture_doc("s1_protobuf", "0001_logs"), capture_doc("s1_protobuf", "0002_metrics")
    expected = {"cc_events_raw": len(expected_logs(logs)), "cc_api_requests": len(events_named(logs, "api_request")),
                "cc_tool_results": len(events_named(logs, "tool_result")),
                "cc_metric_points": len(expected_points(metrics))}
    service = await open_service(config)
    shim: ClickHouseShim | None = None
    try:
        assert isinstance(service.store, DeferredStore) and not service.store.connected
        service.writer.max_backoff_seconds = 0.2
        async with serve_app(service.app) as base_url, Http() as http:
            for path, name in (("/v1/logs", "0001_logs"), ("/v1/metrics", "0002_metrics")):
                async with http.post(base_url + path, data=capture("s1_protobuf", name),
                                     headers={"Content-Type": "application/x-protobuf"}) as response:
                    assert response.status == 200, await response.text()
        assert not service.store.connected
        assert service.writer.stats()["queued_rows"] >= sum(expected.values())  # all of it waits in the spill

        shim = await start_clickhouse(tmp_path / "clickhouse", port)  # the server comes up on that port
        await service.writer.wait_drained(WAIT)
        assert service.store.connected
        for table, n in expected.items():  # once each, without FINAL
            assert await service.store.query(f"SELECT count() AS n FROM {table}") == [{"n": n}], table
        tokens = await service.store.query("SELECT sum(input_tokens) AS n FROM cc_api_requests")
        assert tokens == [{"n": sum(e["attrs"]["input_tokens"] for e in events_named(logs, "api_request"))}]
    finally:
        await service.close()
        if shim is not None:
            await shim.stop()
