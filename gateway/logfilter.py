"""One line, not a traceback, when a client sends HTTP that cannot be parsed or goes away mid-request.

aiohttp logs those at ERROR with the whole stack; they are the client's fault, already answered (400) or
moot (the client left), and a busy or hostile client would otherwise fill the log with stacks.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError


class ClientFaults(logging.Filter):
    """Rewrites aiohttp.server records caused by a client's bad request or disconnect as one WARNING line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError | ConnectionResetError):
            record.msg = "bad request from a client (%s): %s"
            record.args = (type(exc).__name__, str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "-")
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


def install() -> None:
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientFaults) for f in logger.filters):
        logger.addFilter(ClientFaults())
