"""The listening sockets of `tollgate serve`, bound before anything else starts.

A port in use is then reported at once, not after the store's migrations and every upstream's startup; aiohttp
serves the sockets once the app is ready (connections meanwhile wait in the backlog).
"""

from __future__ import annotations

import contextlib
import socket

BACKLOG = 128


class ListenError(Exception):
    """The listen address cannot be bound (in use, not local, no permission)."""


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address `host` names (as aiohttp's TCPSite would bind); ListenError if any fails."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise _error(host, port, exc) from exc
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(addresses):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as asyncio does: '::' must not also take the IPv4 port
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError as exc:
        close(sockets)
        raise _error(host, port, exc) from exc
    return sockets


def close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()


def _error(host: str, port: int, exc: OSError) -> ListenError:
    reason = exc.strerror or str(exc)
    return ListenError(f"cannot listen on {host}:{port}: {reason} (another process? pick one with "
                       "--listen HOST:PORT or server.listen)")
