"""StoreHealth: the store's reachability is logged once per change (and reminded while it lasts), never with the
DSN's password."""

from __future__ import annotations

import logging

import pytest

from store import health as health_mod
from store.health import REMIND_SECONDS, StoreHealth

DSN = "http://default:***@db:8123/tollgate"


def test_down_is_said_once_then_reminded_with_a_count_and_back_up_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "store.health")
    now = [1000.0]
    monkeypatch.setattr(health_mod.time, "monotonic", lambda: now[0])
    health = StoreHealth(DSN, secret="pw-123")
    health.succeeded()  # up and staying up: nothing to say
    for _ in range(10):
        health.failed("connection refused by db (password pw-123)")
        now[0] += 5.0
    down = health.document()
    now[0] += REMIND_SECONDS
    health.failed("connection refused")
    health.succeeded()
    health.succeeded()
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, f"store {DSN} unreachable (connection refused by db (password ***)); serving anyway, "
                          "records wait in the spill until it is back"),
        (logging.WARNING, f"store {DSN} still unreachable after 6 min (11 failed attempts): connection refused"),
        (logging.INFO, f"store {DSN} reachable again after 6 min (11 failed attempts)"),
    ]
    assert down == {"state": "unreachable", "dsn": DSN, "last_error": "connection refused by db (password ***)",
                    "down_seconds": 50.0, "failed_attempts": 10}
    assert health.document() == {"state": "connected", "dsn": DSN}
