"""Numbered schema migrations (`store/migrations/NNNN_name.sql`) and the runner that applies them once.

Applied migrations are recorded in `schema_migrations` with a checksum of the file; a changed file is refused.
Migration SQL must be idempotent (`IF NOT EXISTS`): a migration that fails half-way is re-run from the top.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from store.client import Store
from store.errors import MigrationError

log = logging.getLogger(__name__)

MIGRATION_FILE = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$")
MIGRATIONS_TABLE = "schema_migrations"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str  # sha256 of the file as shipped, before placeholders are filled


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Every `NNNN_name.sql` in `directory` (default: the package's migrations), ordered by number."""
    root: Any = directory if directory is not None else resources.files("store").joinpath("migrations")
    found: dict[int, Migration] = {}
    for entry in root.iterdir():
        match = MIGRATION_FILE.match(entry.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            names = f"{found[version].name}, {match.group(2)}"
            raise MigrationError(f"two migrations numbered {version:04d}: {names}")
        text = entry.read_text(encoding="utf-8")
        found[version] = Migration(version, match.group(2), text, hashlib.sha256(text.encode()).hexdigest())
    return [found[v] for v in sorted(found)]


def render(sql: str, *, database: str, cluster: str | None) -> str:
    """Fill `{db}`, `{on_cluster}` and `{replicated}` (plain str.replace: SQL braces stay untouched)."""
    return (
        sql.replace("{on_cluster}", f" ON CLUSTER {cluster}" if cluster else "")
        .replace("{replicated}", "Replicated" if cluster else "")
        .replace("{db}", database)
    )


def split_statements(sql: str) -> list[str]:
    """Statements end on a line whose last character is `;`; comment-only statements are dropped."""
    statements: list[str] = []
    current: list[str] = []
    for line in sql.splitlines():
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).rstrip().removesuffix(";"))
            current = []
    statements.append("\n".join(current))
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in statement.splitlines())


async def applied_migrations(store: Store) -> dict[int, dict[str, Any]]:
    rows = await store.query(
        f"SELECT version, name, checksum, applied_at FROM {store.database}.{MIGRATIONS_TABLE} FINAL"
    )
    return {int(row["version"]): row for row in rows}


async def migrate(store: Store, migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply the missing migrations in order; return those applied now (empty when up to date)."""
    migrations = load_migrations() if migrations is None else migrations
    await _ensure_migrations_table(store)
    applied = await applied_migrations(store)
    _check_applied(applied, migrations)
    done: list[Migration] = []
    for migration in migrations:
        if migration.version in applied:
            continue
        await _apply(store, migration)
        done.append(migration)
    return done


def _check_applied(applied: dict[int, dict[str, Any]], migrations: list[Migration]) -> None:
    shipped = {m.version: m for m in migrations}
    for version, row in sorted(applied.items()):
        migration = shipped.get(version)
        if migration is None:
            log.warning("store has migration %04d_%s that this Tollgate does not know", version, row["name"])
        elif migration.checksum != row["checksum"]:
            raise MigrationError(
                f"migration {version:04d}_{migration.name} changed after it was applied "
                f"(checksum {migration.checksum[:12]} != applied {row['checksum'][:12]}); "
                "never edit an applied migration, add a new numbered one"
            )


async def _ensure_migrations_table(store: Store) -> None:
    ddl = (
        "CREATE TABLE IF NOT EXISTS {db}.schema_migrations{on_cluster} (\n"
        "    version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC')\n"
        ") ENGINE = {replicated}ReplacingMergeTree ORDER BY version"
    )
    await store.command(render(ddl, database=store.database, cluster=store.cluster))


async def _apply(store: Store, migration: Migration) -> None:
    log.info("applying migration %04d_%s", migration.version, migration.name)
    sql = render(migration.sql, database=store.database, cluster=store.cluster)
    for statement in split_statements(sql):
        try:
            await store.command(statement)
        except Exception as exc:
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name} failed: {exc}\n-- statement:\n{statement}"
            ) from exc
    row = {
        "version": migration.version,
        "name": migration.name,
        "checksum": migration.checksum,
        "applied_at": dt.datetime.now(dt.UTC),
    }
    await store.insert(f"{store.database}.{MIGRATIONS_TABLE}", [row])
