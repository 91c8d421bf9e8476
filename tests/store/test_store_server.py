"""Server mode (http DSN) through clickhouse-connect's HTTP client, against a real engine: the chDB-backed
ClickHouse HTTP shim (tests/fixtures/clickhouse_http.py) by default, or the server TOLLGATE_TEST_CLICKHOUSE_URL
names, e.g. http://default:@127.0.0.1:8123 (each test creates and drops its own database). The cluster test runs
only when TOLLGATE_TEST_CLICKHOUSE_CLUSTER also names a cluster of that server (see docs/store.md "A cluster")."""

from __future__ import annotations

import datetime as dt
import os
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from store.client import Store
from store.deferred import DeferredStore, open_store
from store.errors import StoreQueryError, StoreUnavailable
from store.schema import load_migrations, migrate
from store.writer import Writer
from tests.fixtures.clickhouse_http import clickhouse_server, start_clickhouse

SERVER = os.environ.get("TOLLGATE_TEST_CLICKHOUSE_URL", "").rstrip("/")
CLUSTER = os.environ.get("TOLLGATE_TEST_CLICKHOUSE_CLUSTER", "")
WAIT = 20.0


@pytest.fixture
async def server_url(tmp_path: Path) -> AsyncIterator[str]:
    """The server base URL with credentials: the env's server, else a shim on chDB for this test."""
    if SERVER:
        yield SERVER
        return
    async with clickhouse_server(tmp_path / "clickhouse") as shim:
        yield f"http://default:@127.0.0.1:{shim.port}"


@pytest.fixture
async def server_store(server_url: str) -> AsyncIterator[Store]:
    """An open store on a fresh database of the server, dropped afterwards."""
    database = f"tollgate_test_{uuid.uuid4().hex[:12]}"
    store = await Store.open(f"{server_url}/{database}")
    try:
        yield store
    finally:
        await store.command(f"DROP DATABASE IF EXISTS {database}")
        await store.close()


def call(k: int, **extra: Any) -> dict[str, Any]:
    return {
        "call_id": f"call-{k}",
        "mcp_session_id": "s",
        "status": "ok",
        "started_at": dt.datetime(2025, 1, 1, 12, 0, 0, 123456, tzinfo=dt.UTC) + dt.timedelta(seconds=k),
        "duration_ms": 1.5 * k,
        "resp_bytes_client": k,
        **extra,
    }


async def test_migrate_twice_and_round_trip_against_a_server(server_store: Store) -> None:
    store = server_store
    assert next(m.version for m in await migrate(store)) == 1
    assert await migrate(store) == []
    await store.insert("calls", [{"call_id": "c", "mcp_session_id": "s", "status": "ok"}])
    rows = await store.query("SELECT status FROM calls FINAL WHERE call_id = {id:String}", {"id": "c"})
    assert rows == [{"status": "ok"}]
    # Typed values survive the Native encoding both ways: DateTime64(6) from datetimes and ISO text,
    # Nullable DateTime64, Float64, UInt64, a server DEFAULT filled in.
    await store.insert("calls", [call(1), call(2, started_at="2025-01-01T12:00:02.654321+00:00")])
    budget = {"event_id": "b", "at": dt.datetime(2025, 1, 1, tzinfo=dt.UTC), "reset_at": None, "limit": 2.5}
    await store.insert("budget_events", [{**budget, "window": "day"}])
    got = await store.query(
        "SELECT call_id, started_at, duration_ms, resp_bytes_client, inserted_at > '2020-01-01' AS stamped "
        "FROM calls FINAL WHERE call_id != 'c' ORDER BY call_id"
    )
    assert got == [
        {"call_id": "call-1", "started_at": dt.datetime(2025, 1, 1, 12, 0, 1, 123456, tzinfo=dt.UTC),
         "duration_ms": 1.5, "resp_bytes_client": 1, "stamped": True},
        {"call_id": "call-2", "started_at": dt.datetime(2025, 1, 1, 12, 0, 2, 654321, tzinfo=dt.UTC),
         "duration_ms": 3.0, "resp_bytes_client": 2, "stamped": True},
    ]  # fmt: skip
    [stored] = await store.query("SELECT reset_at, `limit`, `window` FROM budget_events FINAL")
    assert stored == {"reset_at": None, "limit": 2.5, "window": "day"}


async def test_the_writer_flushes_batches_through_the_server(server_store: Store, tmp_path: Path) -> None:
    store = server_store
    await migrate(store)
    writer = Writer(store, tmp_path / "spill", flush_rows=2, flush_seconds=0.01)
    await writer.start()
    try:
        for k in range(5):
            writer.submit("calls", [call(k)])  # sealed every 2 rows: several segments, several batches
        writer.submit("sessions", [{"mcp_session_id": "s", "started_at": dt.datetime.now(dt.UTC), "version": 1}])
        await writer.wait_drained(WAIT)
        await writer.flush()
    finally:
        await writer.stop()
    stats = writer.stats()
    assert stats["queued_rows"] == 0 and stats["rejected_rows"] == 0 and stats["flushed_rows"] == 6
    [row] = await store.query("SELECT count() AS n, uniqExact(call_id) AS ids, sum(resp_bytes_client) AS b FROM calls")
    assert row == {"n": 5, "ids": 5, "b": 10}  # exactly once, no FINAL needed
    assert await store.query("SELECT mcp_session_id, version FROM sessions FINAL") == [
        {"mcp_session_id": "s", "version": 1}
    ]


@pytest.mark.skipif(bool(SERVER), reason="stops and restarts the server: shim only")
async def test_server_errors_and_an_outage_map_to_store_errors(tmp_path: Path) -> None:
    shim = await start_clickhouse(tmp_path / "clickhouse")
    store = await Store.open(shim.dsn("tollgate", password="s3cret"))
    try:
        await migrate(store)
        with pytest.raises(StoreQueryError) as bad:
            await store.query("SELECT * FROM no_such_table")
        assert bad.value.code == 60
        with pytest.raises(StoreQueryError):
            await store.insert("calls", [{"call_id": "x", "no_such_column": 1}])
        await store.insert("calls", [call(1)])
        await shim.stop()
        with pytest.raises(StoreUnavailable) as down:
            await store.query("SELECT count() FROM calls")
        assert "s3cret" not in str(down.value)
        assert not await store.ping()
        shim = await start_clickhouse(shim.data_dir, shim.port)  # the same server back on the same port
        assert await store.ping()
        assert await store.query("SELECT call_id FROM calls FINAL") == [{"call_id": "call-1"}]
    finally:
        await store.close()
        await shim.stop()


def store_threads() -> int:
    """Live store worker threads, after giving shut-down ones (bounded) time to exit; a leaked Store's stays."""
    threads = [t for t in threading.enumerate() if t.name.startswith("tollgate-store")]
    for thread in threads:
        thread.join(timeout=2.0)
    return sum(1 for t in threads if t.is_alive())


@pytest.mark.skipif(bool(SERVER), reason="stops and restarts the server: shim only")
async def test_a_server_lost_during_migrations_defers_and_leaves_no_store_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(DeferredStore.__init__.__kwdefaults__, "retry_seconds", 0.0)
    shim = await start_clickhouse(tmp_path / "clickhouse")
    lost = []

    async def migrate_while_the_server_dies(store: Store) -> None:
        if not lost:
            lost.append(True)
            await shim.stop()
        await migrate(store)

    before = store_threads()
    try:
        deferred = await open_store(shim.dsn("tollgate"), cluster=None, on_connect=migrate_while_the_server_dies)
        assert isinstance(deferred, DeferredStore) and not deferred.connected  # serving, not crashed
        assert store_threads() == before  # the half-connected Store was closed
        assert not await deferred.ping()  # each failed retry closes its Store too
        assert store_threads() == before
        shim = await start_clickhouse(shim.data_dir, shim.port)
        assert await deferred.ping() and deferred.connected
        assert await deferred.query("SELECT count() AS n FROM schema_migrations FINAL") != [{"n": 0}]
    finally:
        await deferred.close()
        await shim.stop()
    assert store_threads() == before


@pytest.mark.skipif(not (SERVER and CLUSTER),
                    reason="needs TOLLGATE_TEST_CLICKHOUSE_URL and TOLLGATE_TEST_CLICKHOUSE_CLUSTER (a real cluster)")
async def test_migrations_run_on_a_cluster_as_replicated_tables_on_every_replica_twice_without_change() -> None:
    database = f"tollgate_test_{uuid.uuid4().hex[:12]}"
    store = await Store.open(f"{SERVER}/{database}", cluster=CLUSTER)
    everywhere = f"clusterAllReplicas('{CLUSTER}', system.tables)"
    try:
        assert [m.version for m in await migrate(store)] == [m.version for m in load_migrations()]
        assert await migrate(store) == []
        tables = await store.query(
            f"SELECT hostName() AS host, name, engine FROM {everywhere} WHERE database = {{db:String}} "
            "AND engine LIKE '%MergeTree' ORDER BY host, name", {"db": database})
        hosts = {t["host"] for t in tables}
        local = [t["name"] for t in tables if t["host"] == next(iter(sorted(hosts)))]
        assert "calls" in local and "schema_migrations" in local
        assert {t["engine"] for t in tables} == {"ReplicatedReplacingMergeTree"}
        assert sorted(t["name"] for t in tables) == sorted(local * len(hosts))  # every replica has every table
        await store.insert("calls", [call(1)])
        await store.command(f"SYSTEM SYNC REPLICA {database}.calls ON CLUSTER {CLUSTER}")
        [row] = await store.query(
            f"SELECT count() AS n FROM clusterAllReplicas('{CLUSTER}', {database}.calls) WHERE call_id = 'call-1'")
        assert row["n"] == len(hosts)  # replicated to each (one shard; see docs/store.md)
    finally:
        await store.command(f"DROP DATABASE IF EXISTS {database} ON CLUSTER {CLUSTER} SYNC")
        await store.close()
