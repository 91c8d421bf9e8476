"""Store against real embedded chDB: round trips, defaults, error mapping, the one-owner directory lock."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
from pathlib import Path

import pytest
from clickhouse_connect.driver import exceptions as ch

from store.client import Store, chdb_path, redact_dsn
from store.errors import StoreLocked, StoreQueryError, StoreUnavailable, map_error

UNKNOWN_IDENTIFIER = 47
UNKNOWN_TABLE = 60


async def test_insert_then_query_round_trips_typed_values_with_server_side_params(store: Store) -> None:
    started = dt.datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)
    row = {
        "call_id": "c-1",
        "method": "tools/call",
        "upstream": "everything",
        "tool": "echo",
        "mcp_session_id": "s-1",
        "started_at": started,
        "ended_at": "2025-01-02T03:04:06.000001+00:00",
        "duration_ms": 1000.5,
        "status": "ok",
        "resp_bytes_client": 2**40,
        "content_blocks": 3,
    }
    await store.insert("calls", [row, {**row, "call_id": "c-2", "upstream": "docs"}])

    rows = await store.query(
        "SELECT call_id, started_at, ended_at, duration_ms, resp_bytes_client, content_blocks FROM calls "
        "WHERE upstream = {upstream:String} AND started_at >= {since:DateTime64(6, 'UTC')}",
        {"upstream": "everything", "since": started},
    )

    assert rows == [
        {
            "call_id": "c-1",
            "started_at": started,
            "ended_at": dt.datetime(2025, 1, 2, 3, 4, 6, 1, tzinfo=dt.UTC),
            "duration_ms": 1000.5,
            "resp_bytes_client": 2**40,
            "content_blocks": 3,
        }
    ]


async def test_absent_keys_get_zero_values_and_server_defaults(store: Store) -> None:
    await store.insert("budget_events", [{"event_id": "e-1", "limit": 10.0, "window": "day"}])

    [row] = await store.query("SELECT * FROM budget_events")

    assert row["upstream"] == "" and row["used"] == 0.0 and row["reset_at"] is None
    assert row["limit"] == 10.0 and row["window"] == "day"
    assert row["at"] == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert row["inserted_at"].year >= 2025  # DEFAULT now64(3), not the zero value


async def test_explicit_none_in_a_non_nullable_column_becomes_its_zero_value(store: Store) -> None:
    await store.insert("calls", [{"call_id": "c", "error": None, "est_tokens": None}])

    [row] = await store.query("SELECT error, est_tokens FROM calls")

    assert row == {"error": "", "est_tokens": 0}


async def test_insert_restricted_to_given_columns_leaves_others_to_the_server(store: Store) -> None:
    await store.insert("calls", [{"call_id": "c", "tool": "ignored"}], columns=["call_id"])

    assert await store.query("SELECT call_id, tool FROM calls") == [{"call_id": "c", "tool": ""}]


async def test_unknown_column_is_a_permanent_query_error(store: Store) -> None:
    with pytest.raises(StoreQueryError, match="no column"):
        await store.insert("calls", [{"call_id": "c", "nope": 1}])


async def test_bad_sql_maps_to_query_error_with_clickhouse_code(store: Store) -> None:
    with pytest.raises(StoreQueryError) as bad_identifier:
        await store.query("SELECT nope")
    with pytest.raises(StoreQueryError) as bad_table:
        await store.insert("missing_table", [{"a": 1}])

    assert bad_identifier.value.code == UNKNOWN_IDENTIFIER
    assert bad_table.value.code == UNKNOWN_TABLE


async def test_ping_and_command(store: Store) -> None:
    await store.command("CREATE TABLE IF NOT EXISTS scratch (n UInt8) ENGINE = Memory")
    await store.insert("scratch", [{"n": 7}])

    assert await store.ping()
    assert await store.query("SELECT n FROM scratch") == [{"n": 7}]


async def test_second_open_of_an_owned_directory_fails_with_store_locked(store: Store, store_dsn: str) -> None:
    with pytest.raises(StoreLocked, match=r"in use by another Tollgate process \(pid \d+\)"):
        await Store.open(store_dsn)


async def test_open_from_another_process_fails_fast_with_store_locked(store: Store, store_dsn: str) -> None:
    probe = (
        "import asyncio, sys\n"
        "from store.client import Store\n"
        "from store.errors import StoreLocked\n"
        "try:\n"
        f"    asyncio.run(Store.open({store_dsn!r}))\n"
        "except StoreLocked as exc:\n"
        "    print(type(exc).__name__, exc); sys.exit(3)\n"
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", probe, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        out, err = await child.communicate()

    assert child.returncode == 3, err.decode()
    assert out.decode().startswith("StoreLocked data directory ")
    assert f"(pid {os.getpid()})" in out.decode()


async def test_close_releases_the_engine_so_another_directory_can_open(tmp_path: Path) -> None:
    first = await Store.open(f"chdb://{tmp_path / 'a'}")
    await first.command("CREATE TABLE t (n UInt8) ENGINE = MergeTree ORDER BY n")
    await first.insert("t", [{"n": 1}])
    await first.close()

    second = await Store.open(f"chdb://{tmp_path / 'b'}")
    await second.close()
    reopened = await Store.open(f"chdb://{tmp_path / 'a'}")
    try:
        assert await reopened.query("SELECT n FROM t") == [{"n": 1}]
    finally:
        await reopened.close()


async def test_unreachable_http_store_is_unavailable_and_hides_the_password() -> None:
    with pytest.raises(StoreUnavailable) as caught:
        await Store.open("http://tollgate:s3cret-pw@127.0.0.1:1/tollgate")

    assert "s3cret-pw" not in str(caught.value)


def test_redact_dsn_hides_only_the_password() -> None:
    assert redact_dsn("https://u:pw@ch:8443/db") == "https://u:***@ch:8443/db"
    assert redact_dsn("chdb:///var/lib/tollgate") == "chdb:///var/lib/tollgate"


def test_chdb_dsn_paths_absolute_and_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    assert chdb_path("chdb:///abs/dir") == "/abs/dir"
    assert chdb_path("chdb:///./data/tollgate") == str(tmp_path.resolve() / "data/tollgate")


@pytest.mark.parametrize("code", [192, 194, 497, 516])
def test_credential_errors_are_retryable_so_the_writer_keeps_the_rows(code: int) -> None:
    error = ch.DatabaseError(f"Code: {code}. DB::Exception: default: Authentication failed", code=code)
    mapped = map_error(error, secret="s3cret")
    assert isinstance(mapped, StoreUnavailable) and mapped.code == code
