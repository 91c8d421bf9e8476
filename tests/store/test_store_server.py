"""Server mode (http DSN), run only where a modern ClickHouse is reachable: TOLLGATE_TEST_CLICKHOUSE_URL
names it, e.g. http://default:@127.0.0.1:8123 (the test creates and drops its own database)."""

from __future__ import annotations

import os
import uuid

import pytest

from store.client import Store
from store.schema import migrate

SERVER = os.environ.get("TOLLGATE_TEST_CLICKHOUSE_URL", "")
pytestmark = pytest.mark.skipif(not SERVER, reason="TOLLGATE_TEST_CLICKHOUSE_URL not set")


async def test_migrate_twice_and_round_trip_against_a_server() -> None:
    database = f"tollgate_test_{uuid.uuid4().hex[:12]}"
    store = await Store.open(f"{SERVER.rstrip('/')}/{database}")
    try:
        assert next(m.version for m in await migrate(store)) == 1
        assert await migrate(store) == []
        await store.insert("calls", [{"call_id": "c", "mcp_session_id": "s", "status": "ok"}])
        rows = await store.query("SELECT status FROM calls FINAL WHERE call_id = {id:String}", {"id": "c"})
        assert rows == [{"status": "ok"}]
    finally:
        await store.command(f"DROP DATABASE IF EXISTS {database}")
        await store.close()
