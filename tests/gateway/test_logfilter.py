"""A client's unparseable HTTP is logged as one warning line, not an ERROR with a traceback."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import pytest

from gateway import logfilter
from gateway.app import create_app
from tests.gateway.conftest import gateway_config, served

BAD_REQUESTS = [
    b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n",
    b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
]


@pytest.mark.parametrize("raw", BAD_REQUESTS, ids=["negative-length", "length-and-chunked", "huge-header"])
async def test_a_malformed_request_is_answered_400_and_logged_as_one_warning(
        raw: bytes, caplog: pytest.LogCaptureFixture) -> None:
    logfilter.install()
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    async with served(create_app(gateway_config())) as url:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(10):
            status_line = await reader.readline()
            await reader.read()  # the server closes the connection after a parse error
        writer.close()
    assert status_line.split()[1] == b"400"
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert records, "the bad request is still logged"
    assert all(r.levelno == logging.WARNING and not r.exc_info for r in records)
    assert all(r.getMessage().startswith("bad request from a client") for r in records)
