"""Migrations: applied once in order, re-runs change nothing, edited files are refused, new files picked up."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from store.client import Store
from store.errors import MigrationError
from store.schema import load_migrations, migrate, render, split_statements

PACKAGED = Path(__file__).resolve().parents[2] / "store" / "migrations"
MIGRATIONS_ROWS = "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
GATEWAY_TABLES = {"calls", "tool_lists", "upstream_events", "budget_events", "sessions"}


async def _schema(store: Store) -> list[dict[str, object]]:
    return await store.query(
        "SELECT name, create_table_query FROM system.tables WHERE database = {db:String} ORDER BY name",
        {"db": store.database},
    )


@pytest.fixture
async def bare_store(store_dsn: str) -> AsyncIterator[Store]:
    """An open store with no migrations applied."""
    opened = await Store.open(store_dsn)
    try:
        yield opened
    finally:
        await opened.close()


def _copy_gateway_migration(tmp_path: Path) -> Path:
    directory = tmp_path / "migrations"
    directory.mkdir()
    shutil.copy(PACKAGED / "0001_gateway.sql", directory / "0001_gateway.sql")
    return directory


async def test_migrate_creates_gateway_tables_and_a_second_run_changes_nothing(bare_store: Store) -> None:
    first = await migrate(bare_store)
    schema_after_first = await _schema(bare_store)
    recorded = await bare_store.query(MIGRATIONS_ROWS)

    second = await migrate(bare_store)

    assert [m.version for m in first] == [m.version for m in load_migrations()]
    assert second == []
    assert {row["name"] for row in schema_after_first} >= GATEWAY_TABLES
    assert await _schema(bare_store) == schema_after_first
    assert await bare_store.query(MIGRATIONS_ROWS) == recorded


async def test_a_changed_applied_migration_is_refused(bare_store: Store, tmp_path: Path) -> None:
    directory = _copy_gateway_migration(tmp_path)
    await migrate(bare_store, load_migrations(directory))
    edited = directory / "0001_gateway.sql"
    edited.write_text(edited.read_text() + "\n-- an innocent edit\n")

    with pytest.raises(MigrationError, match="0001_gateway changed after it was applied"):
        await migrate(bare_store, load_migrations(directory))


async def test_a_new_numbered_file_is_applied_after_the_existing_ones(bare_store: Store, tmp_path: Path) -> None:
    directory = _copy_gateway_migration(tmp_path)
    await migrate(bare_store, load_migrations(directory))
    (directory / "0002_extra.sql").write_text(
        "CREATE TABLE IF NOT EXISTS {db}.extra{on_cluster} (id String, body String DEFAULT '{}')\n"
        "ENGINE = {replicated}ReplacingMergeTree ORDER BY id;\n"
        "ALTER TABLE {db}.extra{on_cluster} ADD COLUMN IF NOT EXISTS n UInt8;\n"
    )

    applied = await migrate(bare_store, load_migrations(directory))

    assert [(m.version, m.name) for m in applied] == [(2, "extra")]
    assert [row["name"] for row in await bare_store.query("DESCRIBE TABLE extra")] == ["id", "body", "n"]


async def test_a_failing_statement_names_the_migration(bare_store: Store, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "0001_broken.sql").write_text("CREATE TABLE {db}.broken (x NoSuchType) ENGINE = Memory;\n")

    with pytest.raises(MigrationError, match="0001_broken failed"):
        await migrate(bare_store, load_migrations(directory))
    assert await bare_store.query("SELECT count() AS n FROM schema_migrations") == [{"n": 0}]


def test_duplicate_numbers_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;\n")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;\n")

    with pytest.raises(MigrationError, match="two migrations numbered 0001"):
        load_migrations(tmp_path)


def test_packaged_migrations_are_found_and_ordered() -> None:
    versions = [m.version for m in load_migrations()]

    assert versions[0] == 1 and versions == sorted(versions)


def test_placeholders_for_a_single_server_and_a_cluster() -> None:
    sql = "CREATE TABLE {db}.t{on_cluster} (m Map(String, String) DEFAULT '{}') ENGINE = {replicated}MergeTree"

    assert render(sql, database="tg", cluster=None) == (
        "CREATE TABLE tg.t (m Map(String, String) DEFAULT '{}') ENGINE = MergeTree"
    )
    assert render(sql, database="tg", cluster="main") == (
        "CREATE TABLE tg.t ON CLUSTER main (m Map(String, String) DEFAULT '{}') ENGINE = ReplicatedMergeTree"
    )


def test_statements_split_on_lines_ending_in_semicolon() -> None:
    sql = "-- header\nCREATE TABLE a\n(x UInt8; -- not an end\n y UInt8)\nENGINE = Memory;\n\n-- trailing\nSELECT 2;\n"

    assert split_statements(sql) == [
        "-- header\nCREATE TABLE a\n(x UInt8; -- not an end\n y UInt8)\nENGINE = Memory",
        "-- trailing\nSELECT 2",
    ]


async def test_every_packaged_statement_rendered_for_a_cluster_parses_and_runs_on_the_cluster(
        bare_store: Store) -> None:
    """The cluster DDL cannot run here (no cluster): the engine's own parser checks it, and every CREATE and ALTER
    names the cluster and every table engine is a Replicated one (test_store_server runs it on a real cluster).
    An INSERT takes no ON CLUSTER: it writes a Replicated table, which carries the rows to every replica."""
    statements = [s for m in load_migrations() for s in split_statements(render(m.sql, database="tg", cluster="c1"))]
    for statement in statements:
        [row] = await bare_store.query("SELECT formatQuery({q:String}) AS q", {"q": statement})
        formatted = row["q"]
        assert formatted.startswith("INSERT INTO") or " ON CLUSTER c1" in formatted, formatted
        if "ENGINE" in formatted:
            assert "ENGINE = ReplicatedReplacingMergeTree(" in formatted, formatted
    assert sum("ENGINE" in s for s in statements) == 15  # every table of 0001, 0002 and 0004
