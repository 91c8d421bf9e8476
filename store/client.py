"""The Store: one clickhouse-connect client (embedded chDB or HTTP) driven from one worker thread.

Owns DSN parsing, the data-directory lock, columnar inserts shaped by the table schema, and error mapping.
It never runs a blocking call on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse, urlunparse

import clickhouse_connect
import orjson
from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.client import Client

from store.errors import StoreError, StoreLocked, StoreQueryError, StoreUnavailable, map_error
from store.health import StoreHealth

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_DATABASE = "tollgate"
LOCK_FILE = ".tollgate.lock"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    server_default: bool  # has a DEFAULT expression: omitted from inserts when no row gives it


def redact_dsn(dsn: str) -> str:
    """The DSN with its password replaced, for logs and messages."""
    parsed = urlparse(dsn)
    if not parsed.password:
        return dsn
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
    return urlunparse(parsed._replace(netloc=netloc))


def chdb_path(dsn: str) -> str:
    """`chdb:///abs/dir` is absolute; `chdb:///./dir` and `chdb://./dir` are relative to the cwd."""
    rest = dsn[len("chdb://") :].split("?", 1)[0]
    if rest.startswith(("/./", "/../")):
        rest = rest[1:]
    if not rest or rest in ("/", "memory", ":memory:"):
        raise StoreError(f"chdb DSN needs a data directory: {dsn!r} (for example chdb:///var/lib/tollgate)")
    return os.path.realpath(unquote(rest))


def require_existing_data(dsn: str) -> None:
    """For readers (reports): an embedded DSN must name a directory a server has written, never a new one."""
    if dsn.startswith("chdb://") and not os.path.isdir(path := chdb_path(dsn)):
        raise StoreError(f"no Tollgate data at {path}: start `tollgate serve` there first, or point "
                         "--config / --data-dir at the data of a running or past server")


def zero_value(type_name: str) -> Any:
    """The value ClickHouse itself would use for a column the row does not mention."""
    if type_name.startswith("Nullable("):
        return None
    if type_name.startswith("LowCardinality("):
        return zero_value(type_name[len("LowCardinality(") : -1])
    if type_name.startswith(("String", "FixedString", "Enum")):
        return ""
    if type_name.startswith(("Int", "UInt", "Float", "Decimal")):
        return 0
    if type_name.startswith("DateTime"):
        return _EPOCH
    if type_name.startswith("Date"):
        return dt.date(1970, 1, 1)
    if type_name == "Bool":
        return False
    if type_name.startswith("Array("):
        return []
    if type_name.startswith("Map("):
        return {}
    return None


class DirLock:
    """An exclusive flock on `<dir>/.tollgate.lock` holding the owner's pid; released on close or death.

    `what` names the directory in errors ("data directory", "spill directory")."""

    def __init__(self, directory: str, what: str = "data directory") -> None:
        try:
            os.makedirs(directory, exist_ok=True)
            self._fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise unusable_dir(directory, what, exc) from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        except BlockingIOError:
            owner = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise StoreLocked(f"{what} {directory} is in use by another Tollgate process (pid {owner})") from None
        except OSError as exc:
            os.close(self._fd)
            raise unusable_dir(directory, what, exc) from None

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


def unusable_dir(directory: str, what: str, exc: OSError) -> StoreError:
    """The one-line error for a directory the store cannot create, lock or read."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        reason = "it exists and is not a directory"
    else:
        reason = exc.strerror or str(exc)
    return StoreError(f"cannot use {what} {directory}: {reason}")


class Store:
    """Async facade over a blocking clickhouse-connect client; every call runs on the store's own thread."""

    def __init__(
        self,
        client: Client,
        executor: ThreadPoolExecutor,
        *,
        database: str,
        cluster: str | None,
        embedded: bool,
        secret: str | None = None,
        lock: DirLock | None = None,
        display_dsn: str = "",
        health: StoreHealth | None = None,
    ) -> None:
        self.database = database
        self.cluster = cluster
        self.embedded = embedded
        self.display_dsn = display_dsn
        self.health = health or StoreHealth(display_dsn, secret)
        self._client = client
        self._executor = executor
        self._secret = secret
        self._lock = lock
        self._columns: dict[str, list[Column]] = {}
        self._writes: dict[str, int] = {}  # inserts per table through this Store
        self._commands = 0  # any command may write any table
        self._closed = False

    @classmethod
    async def open(cls, dsn: str, *, cluster: str | None = None, health: StoreHealth | None = None) -> Store:
        """Open `chdb:///<dir>` (embedded, locked to this process) or `http(s)://user:pass@host:port/db`; `health`
        is told whether it could (a DeferredStore keeps one across attempts)."""
        embedded = dsn.startswith("chdb:")
        if not embedded and not dsn.startswith(("http://", "https://")):
            raise StoreError(f"unsupported store DSN {redact_dsn(dsn)!r}: use chdb:///<dir> or http(s)://...")
        secret = urlparse(dsn).password if not embedded else None
        health = health or StoreHealth(redact_dsn(dsn), secret)
        lock = DirLock(chdb_path(dsn)) if embedded else None
        # chDB handles must stay on one thread; HTTP gets the same single thread so calls keep their order.
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tollgate-store")
        loop = asyncio.get_running_loop()
        try:
            client, database = await loop.run_in_executor(executor, _connect, dsn, cluster)
        except BaseException as exc:
            executor.shutdown(wait=False)
            if lock:
                lock.release()
            raise _reported(map_error(exc, secret=secret), health) from exc
        health.succeeded()
        return cls(
            client,
            executor,
            database=database,
            cluster=cluster,
            embedded=embedded,
            secret=secret,
            lock=lock,
            display_dsn=redact_dsn(dsn),
            health=health,
        )

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StoreError("store is closed")
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._executor, fn, *args)
        except Exception as exc:
            raise _reported(map_error(exc, secret=self._secret), self.health) from exc
        self.health.succeeded()
        return result

    async def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts; bind values with server-side `{name:Type}` placeholders."""
        result = await self._call(lambda: self._client.query(sql, parameters=params or None))
        names = result.column_names
        return [dict(zip(names, row, strict=True)) for row in result.result_rows]

    async def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        """DDL and other statements without a result; forgets cached table schemas."""
        try:
            await self._call(lambda: self._client.command(sql, parameters=params or None))
        finally:
            self._commands += 1
            self._columns.clear()

    def written(self, table: str) -> int | None:
        """A count that grows whenever this process may have changed `table` (an insert into it, any command);
        None when other processes can write the store too (a ClickHouse server), so that nothing read from it can
        be kept by such a count. An embedded store is locked to this process: every write goes through here
        (`query` is for reads)."""
        return self._writes.get(table, 0) + self._commands if self.embedded else None

    def _wrote(self, table: str) -> None:
        self._writes[table] = self._writes.get(table, 0) + 1

    async def ping(self) -> bool:
        try:
            return await self._call(self._client.ping)
        except StoreError:
            return False

    async def columns(self, table: str) -> list[Column]:
        """The insertable columns of `table`, in table order (cached until the next command)."""
        cached = self._columns.get(table)
        if cached is None:
            described = await self.query(f"DESCRIBE TABLE {table}")
            cached = [
                Column(row["name"], row["type"], row["default_type"] == "DEFAULT")
                for row in described
                if row["default_type"] not in ("MATERIALIZED", "ALIAS", "EPHEMERAL")
            ]
            self._columns[table] = cached
        return cached

    async def insert(self, table: str, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> int:
        """Insert dict rows column-wise; absent keys get the column's zero value (or its DEFAULT when no row
        has them). `columns` restricts the insert to those columns. DateTime values may be datetimes or
        ISO-8601 strings (as the writer's spill holds them). Returns the row count."""
        if not rows:
            return 0
        schema = await self.columns(table)
        try:
            await self._call(self._insert_blocking, table, schema, rows, columns)
        finally:
            self._wrote(table)
        return len(rows)

    def _insert_blocking(
        self, table: str, schema: list[Column], rows: Sequence[dict[str, Any]], columns: Sequence[str] | None
    ) -> None:
        """On the store thread: pivot rows to columns (CPU work kept off the event loop) and insert."""
        wanted = set(columns) if columns is not None else _keys(rows)
        unknown = wanted - {c.name for c in schema}
        if unknown:
            raise StoreQueryError(f"{table} has no column(s) {', '.join(sorted(unknown))}")
        if columns is not None:
            chosen = [c for c in schema if c.name in wanted]
        else:
            chosen = [c for c in schema if c.name in wanted or not c.server_default]
        if self.embedded and _json_insertable(rows, chosen):
            try:
                data_json = orjson.dumps(rows)
            except TypeError:
                pass  # a value JSON cannot carry (bytes, a datetime subclass...): the columnar path below
            else:
                self._insert_json(table, chosen, data_json, True)
                return
        data = [_column(rows, c) for c in chosen]
        names = [c.name for c in chosen]
        types = [c.type for c in chosen]
        self._client.insert(table, data, column_names=names, column_type_names=types, column_oriented=True)

    async def insert_json_arrays(self, table: str, arrays: Sequence[bytes]) -> bool:
        """chDB only: insert rows given as JSON arrays of objects (as the writer's spill holds them) without
        building them in Python. False, with nothing stored, when this path does not apply: not embedded, a
        column with a server DEFAULT or a type it does not convert, or data the engine refuses (unknown key,
        bad value): the caller then inserts the rows as dicts, which reports and sets aside exactly what is bad."""
        if not self.embedded:
            return False
        try:
            schema = await self.columns(table)
        except StoreQueryError:
            return False  # no such table: the rows path sets the rows aside
        if not _json_table(schema):
            return False
        parts = [a[1:-1].strip() for a in arrays]
        data = b"[" + b",".join(p for p in parts if p) + b"]"
        if data == b"[]":
            return True
        try:
            await self._call(self._insert_json, table, schema, data, False)
        except StoreQueryError as exc:
            log.info("%s: JSON insert refused (%s); inserting as rows instead", table, exc)
            return False
        finally:
            self._wrote(table)
        return True

    def _insert_json(self, table: str, chosen: list[Column], data: bytes, skip_unknown: bool) -> None:
        """chDB only: let the engine parse JSONEachRow from a temporary file. About 3 times less CPU than
        clickhouse-connect's Python Native encoding for wide rows with Map columns, and the parsing runs in
        C++. DateTime64 values may be integer ticks in the column's precision or ISO-8601 text."""
        structure, exprs = [], []
        for c in chosen:
            name = quote_identifier(c.name)
            precision = _datetime64_precision(c.type)
            if precision is None:
                structure.append(f"{name} {c.type}")
                exprs.append(name)
                continue
            structure.append(f"{name} Nullable(String)")
            value = (
                f"if(match({name}, '^-?[0-9]+$'), {_FROM_TICKS[precision]}(toInt64({name}), 'UTC'), "
                f"parseDateTime64BestEffort({name}, {precision}, 'UTC'))"
            )
            if c.type.startswith("Nullable("):
                exprs.append(f"if({name} IS NULL OR {name} = '', NULL, {value})")
            else:
                exprs.append(f"if({name} IS NULL OR {name} = '', toDateTime64(0, {precision}, 'UTC'), {value})")
        fd, path = tempfile.mkstemp(prefix="tollgate-insert-", suffix=".json")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            sql = (
                f"INSERT INTO {table} ({', '.join(quote_identifier(c.name) for c in chosen)}) "
                f"SELECT {', '.join(exprs)} FROM file({_sql_string(path)}, 'JSONEachRow', "
                f"{_sql_string(', '.join(structure))}) SETTINGS {_JSON_INSERT_SETTINGS}, "
                f"input_format_skip_unknown_fields = {int(skip_unknown)}"
            )
            self._client.command(sql)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    async def close(self) -> None:
        """Release the client, the worker thread and the directory lock; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._client.close)
        except Exception:
            log.warning("closing store %s failed", self.display_dsn, exc_info=True)
        finally:
            self._executor.shutdown(wait=True)
            if self._lock:
                self._lock.release()


def _reported(error: StoreError, health: StoreHealth) -> StoreError:
    """`error`, after telling `health` when it means the store cannot be reached."""
    if isinstance(error, StoreUnavailable):
        health.failed(str(error))
    return error


def _keys(rows: Sequence[dict[str, Any]]) -> set[str]:
    keys: set[str] = set()
    for row in rows:
        keys.update(row)
    return keys


_FROM_TICKS = {3: "fromUnixTimestamp64Milli", 6: "fromUnixTimestamp64Micro", 9: "fromUnixTimestamp64Nano"}
# optimize_on_insert = 0: no ReplacingMergeTree collapse inside one insert (reads use FINAL; merges collapse);
# parallel parsing only adds threads on 2 cores.
_JSON_INSERT_SETTINGS = (
    "input_format_null_as_default = 1, input_format_defaults_for_omitted_fields = 1, "
    "input_format_json_read_numbers_as_strings = 1, input_format_parallel_parsing = 0, optimize_on_insert = 0"
)


def _datetime64_precision(type_name: str) -> int | None:
    """3, 6 or 9 for a (Nullable) DateTime64 column; -1 for other date/time types; None for everything else."""
    inner = type_name.removeprefix("Nullable(")
    if inner.startswith("DateTime64(") and inner[11:12].isdigit() and int(inner[11:12]) in _FROM_TICKS:
        return int(inner[11:12])
    if "Date" in inner or "Time" in inner:
        return -1
    return None


def _json_table(schema: list[Column]) -> bool:
    """Every column's value can come from JSON as the columnar path would take it, and none has a server
    DEFAULT (JSON rows that omit a key would get the type's zero instead)."""
    for c in schema:
        if c.server_default or c.type.startswith(("Enum", "Decimal", "FixedString")):
            return False
        if _datetime64_precision(c.type) == -1:
            return False
    return True


def _json_insertable(rows: Sequence[dict[str, Any]], chosen: list[Column]) -> bool:
    """True when every date/time value is an integer tick count in its column's precision (or None/absent), as
    ingest writes them, and no column needs more than JSON: then JSONEachRow stores what the columnar path
    would. Datetimes and ISO strings (the gateway's rows) take the columnar path."""
    for c in chosen:
        precision = _datetime64_precision(c.type)
        if precision is None:
            if c.type.startswith(("Enum", "Decimal", "FixedString")):
                return False
            continue
        if precision < 0:
            return False
        name = c.name
        for row in rows:
            value = row.get(name)
            if type(value) is not int and value is not None:
                return False
    return True


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _column(rows: Sequence[dict[str, Any]], column: Column) -> list[Any]:
    zero = zero_value(column.type)
    values = [row.get(column.name, zero) for row in rows]
    if zero is not None and None in values:
        values = [zero if v is None else v for v in values]
    if isinstance(zero, dt.datetime) or column.type.startswith("Nullable(DateTime"):
        parse = dt.datetime.fromisoformat  # C-fast; clickhouse-connect's own string parsing is not
        values = [parse(v) if type(v) is str else v for v in values]
    return values


def dsn_database(dsn: str) -> str:
    """The database a DSN names: the path of a server DSN, else the default."""
    if dsn.startswith("chdb:"):
        return DEFAULT_DATABASE
    return unquote(urlparse(dsn).path.strip("/")) or DEFAULT_DATABASE


def _connect(dsn: str, cluster: str | None) -> tuple[Client, str]:
    """Blocking: create the client, create the database if missing, and make it the client default."""
    database = dsn_database(dsn)
    if dsn.startswith("chdb:"):
        client = clickhouse_connect.get_client(interface="chdb", path=chdb_path(dsn), tz_mode="aware")
    else:
        parsed = urlparse(dsn)
        client = clickhouse_connect.get_client(
            dsn=urlunparse(parsed._replace(path="")), tz_mode="aware", autogenerate_session_id=False
        )
    try:
        on_cluster = f" ON CLUSTER {cluster}" if cluster else ""
        client.command(f"CREATE DATABASE IF NOT EXISTS {database}{on_cluster}")
        client.database = database
    except BaseException:
        with contextlib.suppress(Exception):
            client.close()
        raise
    return client, database
