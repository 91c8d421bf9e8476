"""Tollgate's store errors and the one function that maps clickhouse-connect/chDB exceptions onto them.

StoreError                    anything the store could not do
├── StoreUnavailable          retryable: unreachable, overloaded, timed out (has retry_after_seconds)
│   ├── WriterBusy            the writer's bounded backlog is full; try again later
│   └── SpillFull             the durable spill reached its byte bound (a long store outage)
├── StoreLocked               another process owns the embedded data directory (or spill directory)
├── StoreQueryError           permanent: bad SQL, unknown table or column, data that does not fit the type
└── MigrationError            the schema on disk disagrees with the migration files
"""

from __future__ import annotations

from clickhouse_connect.driver import exceptions as ch

# ClickHouse error codes that say "try again later", not "your request is wrong".
RETRYABLE_CODES = frozenset(
    {
        159,  # TIMEOUT_EXCEEDED
        164,  # READONLY
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        252,  # TOO_MANY_PARTS
        319,  # UNKNOWN_STATUS_OF_INSERT
        425,  # SYSTEM_ERROR
        999,  # KEEPER_EXCEPTION
        # Credentials and grants concern the connection, not the rows: retry (and log) until the
        # operator fixes them, rather than setting good rows aside as bad data.
        192,  # UNKNOWN_USER
        194,  # REQUIRED_PASSWORD
        497,  # ACCESS_DENIED
        516,  # AUTHENTICATION_FAILED
    }
)


class StoreError(Exception):
    """Base of every store failure; `code` is the ClickHouse error code when known."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class StoreUnavailable(StoreError):
    """Retryable: the store is down, slow or overloaded."""

    def __init__(self, message: str, *, code: int | None = None, retry_after_seconds: float = 1.0) -> None:
        super().__init__(message, code=code)
        self.retry_after_seconds = retry_after_seconds


class WriterBusy(StoreUnavailable):
    """The writer's unflushed backlog passed its bound: back-pressure, answer 503/429 with Retry-After."""

    def __init__(self, retry_after_seconds: float, pending_rows: int) -> None:
        super().__init__(
            f"store writer backlog is full ({pending_rows} rows not yet stored); retry in {retry_after_seconds:g}s",
            retry_after_seconds=retry_after_seconds,
        )
        self.pending_rows = pending_rows


class SpillFull(StoreUnavailable):
    """The spill reached `store.max_spill_bytes`: nothing more is acknowledged until the store takes some."""

    def __init__(self, retry_after_seconds: float, spill_bytes: int, max_spill_bytes: int) -> None:
        super().__init__(
            f"store unreachable and the spill is full ({spill_bytes} of {max_spill_bytes} bytes); "
            f"retry in {retry_after_seconds:g}s",
            retry_after_seconds=retry_after_seconds,
        )
        self.spill_bytes = spill_bytes


class StoreLocked(StoreError):
    """Another process (or another Store in this process) owns the directory."""


class StoreQueryError(StoreError):
    """Permanent: retrying the same request will fail the same way."""


class MigrationError(StoreError):
    """Applied migrations disagree with the files shipped with this Tollgate."""


def map_error(exc: BaseException, *, secret: str | None = None) -> StoreError:
    """Translate a clickhouse-connect, chDB or OS exception into a StoreError, scrubbing `secret`."""
    if isinstance(exc, StoreError):
        return exc
    message = str(exc) or type(exc).__name__
    if secret:
        message = message.replace(secret, "***")
    if "EmbeddedServer already initialized" in message:
        return StoreError(f"chDB hosts one data directory per process; another is open here: {message}")
    if isinstance(exc, ch.OperationalError | ConnectionError | TimeoutError | OSError):
        return StoreUnavailable(message, code=getattr(exc, "code", None))
    if isinstance(exc, ch.Error):
        if exc.code in RETRYABLE_CODES:
            return StoreUnavailable(message, code=exc.code)
        return StoreQueryError(message, code=exc.code)
    if isinstance(exc, TypeError | ValueError | KeyError):
        return StoreQueryError(f"data does not fit the table: {message}")
    return StoreError(message)


def network_cause(exc: BaseException) -> str | None:
    """The innermost OS-level cause's own words ("Connection refused", "timed out"), or None when no network
    error is in the chain (a refused login, say)."""
    found: str | None = None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            found = current.strerror or str(current) or type(current).__name__
        current = current.__cause__ or current.__context__
    return found
