"""Shared fixtures. Each owner keeps to their own delimited section."""

# ---- store fixtures (owner: store/) -------------------------------------------------------------------
# chDB hosts ONE data directory per process at a time: a fixture must close its Store before another test
# opens a different directory. `store` gives every test its own migrated embedded store and always closes it.
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from store.client import Store
from store.schema import migrate


@pytest.fixture
def store_dsn(tmp_path: Path) -> str:
    """A chdb DSN for a fresh data directory under the test's tmp_path."""
    return f"chdb://{tmp_path / 'chdb'}"


@pytest.fixture
async def store(store_dsn: str) -> AsyncIterator[Store]:
    """An open, migrated embedded store; closed (engine released) after the test."""
    opened = await Store.open(store_dsn)
    try:
        await migrate(opened)
        yield opened
    finally:
        await opened.close()


# ---- end store fixtures ---------------------------------------------------------------------------------


# ---- event loop (owner: gateway) ------------------------------------------------------------------------
# Tests run on uvloop, as `tollgate serve` does: loop-specific behaviour (pipe transports) must be covered.
from collections.abc import Callable, Mapping  # noqa: E402
from typing import Any  # noqa: E402

import uvloop  # noqa: E402


def pytest_asyncio_loop_factories(config: Any, item: Any) -> Mapping[str, Callable[[], Any]]:
    return {"uvloop": uvloop.new_event_loop}
