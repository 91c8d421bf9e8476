"""Whether the store takes reads and writes, as the last attempt found it; each change is logged once.

Fed by `Store` (every call, and opening) and so by `DeferredStore`: down is said once, then every REMIND_SECONDS
with how many attempts failed, and back up once. The driver's own per-retry WARNINGs are quieted here too.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)
REMIND_SECONDS = 300.0  # while the store stays down, one line this often
DRIVER_LOGGERS = ("urllib3", "clickhouse_connect")  # each retry logs a WARNING there; Tollgate says it once


def quiet_driver_logs() -> None:
    """Keep only the ClickHouse driver's errors: its failures reach Tollgate as exceptions, said by StoreHealth."""
    for name in DRIVER_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


class StoreHealth:
    """The store's reachability for /healthz and the log; messages are stored with the DSN's password starred."""

    def __init__(self, display_dsn: str, secret: str | None = None) -> None:
        self.display_dsn = display_dsn
        self._secret = secret
        self.reachable = True
        self.last_error = ""
        self.failures = 0  # failed attempts since it was last reachable
        self._down_at = 0.0
        self._said_at = 0.0

    def failed(self, error: str) -> None:
        """An attempt to reach the store failed (it is down, refusing, or timing out)."""
        now = time.monotonic()
        self.last_error = self._redacted(error)
        self.failures += 1
        if self.reachable:
            self.reachable = False
            self._down_at = self._said_at = now
            log.warning("store %s unreachable (%s); serving anyway, records wait in the spill until it is back",
                        self.display_dsn, self.last_error)
        elif now - self._said_at >= REMIND_SECONDS:
            self._said_at = now
            log.warning("store %s still unreachable after %s (%d failed attempts): %s", self.display_dsn,
                        _duration(now - self._down_at), self.failures, self.last_error)

    def succeeded(self) -> None:
        """The store answered."""
        if self.reachable:
            return
        log.info("store %s reachable again after %s (%d failed attempts)", self.display_dsn,
                 _duration(time.monotonic() - self._down_at), self.failures)
        self.reachable, self.last_error, self.failures = True, "", 0

    def document(self) -> dict[str, Any]:
        """For /healthz: `connected`, or `unreachable` with the last error and for how long."""
        if self.reachable:
            return {"state": "connected", "dsn": self.display_dsn}
        return {"state": "unreachable", "dsn": self.display_dsn, "last_error": self.last_error,
                "down_seconds": round(time.monotonic() - self._down_at, 1), "failed_attempts": self.failures}

    def _redacted(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"
