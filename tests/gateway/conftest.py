"""Fixtures for gateway tests: real upstream processes, a real Tollgate on port 0, real clients."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from gateway.app import create_app
from gateway.config import Config, ServerConfig, Timeouts, UpstreamConfig

ROOT = Path(__file__).resolve().parents[2]
ECHO_SERVER = ROOT / "tests" / "fixtures" / "servers" / "echo_server.py"
RAW_SERVER = ROOT / "tests" / "fixtures" / "servers" / "raw_stdio_server.py"
EVERYTHING = ROOT / "node_modules" / ".bin" / "mcp-server-everything"


def echo_upstream(name: str, **kwargs: Any) -> UpstreamConfig:
    """A stdio upstream running the SDK echo fixture server under `name`."""
    return UpstreamConfig(name=name, type="stdio", command=sys.executable,
                          args=(str(ECHO_SERVER), "--name", name), **kwargs)


def raw_upstream(name: str, *flags: str, **kwargs: Any) -> UpstreamConfig:
    """A stdio upstream running the hand-written wire-fault fixture server."""
    return UpstreamConfig(name=name, type="stdio", command=sys.executable, args=(str(RAW_SERVER), *flags), **kwargs)


def everything_upstream(name: str = "everything") -> UpstreamConfig:
    if not EVERYTHING.exists():
        pytest.fail(f"{EVERYTHING} missing: run `npm install` (make install does)")
    return UpstreamConfig(name=name, type="stdio", command=str(EVERYTHING), args=("stdio",),
                          timeouts=Timeouts(init_seconds=30.0))


@asynccontextmanager
async def running_gateway(config: Config, **app_kwargs: Any) -> AsyncIterator[str]:
    """Serve Tollgate on a real loopback port; yields the MCP endpoint URL."""
    async with served(create_app(config, **app_kwargs)) as url:
        yield url


@asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[str]:
    """Serve an app already made (so a test can reach its hub or relay) on a loopback port."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        sockets = site._server.sockets  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}/mcp"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def mcp_session(url: str) -> AsyncIterator[ClientSession]:
    """The real `mcp` SDK client over Streamable HTTP, initialized."""
    async with streamable_http_client(url) as streams, ClientSession(streams[0], streams[1]) as session:
        await session.initialize()
        yield session


def gateway_config(*upstreams: UpstreamConfig, **server: Any) -> Config:
    return Config(server=ServerConfig(**server), upstreams=upstreams)


@pytest.fixture
def make_config() -> Callable[..., Config]:
    return gateway_config
