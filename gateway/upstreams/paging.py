"""Reading one MCP list method (tools/list, resources/list, ...) to its end, each item once.

A repeating cursor or too many pages stops the reading with what was read so far; the caller is told why.
Knows nothing of transports or sessions: it is handed the request function.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

IDENTITY = {"tools": "name", "resources": "uri", "resourceTemplates": "uriTemplate", "prompts": "name"}
MAX_PAGES = 1000

Fetch = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
Stopped = Callable[[str, str], None]  # (event kind, detail)


async def read_all_pages(fetch: Fetch, method: str, key: str, items: list[dict[str, Any]], stopped: Stopped) -> None:
    """Append every page's items to `items` (the caller keeps what was read if `fetch` raises midway)."""
    held: set[str] = set()
    seen: set[str] = set()
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        result = await fetch(method, {"cursor": cursor} if cursor else {})
        # A server that ignores the cursor sends a page again: keep each item once (by its name or uri, as the
        # merged catalog routes), before deciding whether to read on.
        add_new(items, held, result.get(key), IDENTITY[key])
        cursor = result.get("nextCursor")
        if not cursor:
            return
        if not isinstance(cursor, str) or cursor in seen:
            stopped("pagination_cycle", f"{method} repeated cursor {cursor!r}")
            return
        seen.add(cursor)
    stopped("pagination_cap", f"{method} still had more after {MAX_PAGES} pages")


def add_new(items: list[dict[str, Any]], held: set[str], page: Any, identity: str) -> None:
    """Append the page's items whose `identity` field is not held yet (items without one are kept)."""
    for item in page if isinstance(page, list) else []:
        if not isinstance(item, dict):
            continue
        ident = item.get(identity)
        if isinstance(ident, str):
            if ident in held:
                continue
            held.add(ident)
        items.append(item)
