"""Cutting an MCP result down to a byte limit: text on a UTF-8 boundary, binary blocks whole or not at all.

Pure functions over parsed result dicts. Sizes are the JSON encoding of the result (what Tollgate relays,
without the JSON-RPC envelope). Never cuts inside a base64 payload: such blocks are dropped with a note.
The items cut are a result's `content` blocks, `contents` items or `messages` (each message's one block).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

META_KEY = "tollgate/truncated"
LIST_KEYS = {"tools/call": "content", "resources/read": "contents", "prompts/get": "messages"}
MAX_PASSES = 4  # the first pass reserves nothing; each next one reserves what the marker and _meta overshot


@dataclass(frozen=True, slots=True)
class Truncated:
    result: dict[str, Any]
    original_bytes: int
    delivered_bytes: int  # the kept result, before the marker and _meta were added
    dropped: tuple[str, ...]  # "2 image block(s)", "structuredContent", ...


def json_size(value: Any) -> int:
    return len(orjson.dumps(value))


def cut_text(text: str, room: int) -> str:
    """The longest prefix of `text` whose JSON string encoding fits `room` bytes; never splits a character."""
    encoded = text.encode("utf-8", "surrogatepass")
    keep = max(room - 2, 0)
    while True:
        prefix = encoded[:keep].decode("utf-8", "ignore")
        over = json_size(prefix) - room
        if over <= 0 or not prefix:
            return prefix if over <= 0 else ""
        keep = len(prefix.encode("utf-8", "surrogatepass")) - over


def truncate(result: dict[str, Any], limit: int, original_bytes: int, marker: str, *, key: str) -> Truncated:
    """The result cut so that, marker and `_meta` included, it fits in `limit` bytes (when the marker alone fits).

    `key` names the list of items to cut (a value of `LIST_KEYS`). The marker's size depends on what was
    dropped, so the room left for content is found in a few passes.
    """
    reserve = 0
    for _ in range(MAX_PASSES):
        cut = _truncate(result, key, limit - reserve, limit, original_bytes, marker)
        over = json_size(cut.result) - limit
        if over <= 0 or reserve >= limit:
            return cut
        reserve = min(limit, reserve + over)
    return cut


def _truncate(result: dict[str, Any], key: str, room_limit: int, limit: int, original_bytes: int,
              marker: str) -> Truncated:
    """Keep items in order while they fit in `room_limit` bytes, cut the first text that does not, drop the rest."""
    items = [b for b in result.get(key) or [] if isinstance(b, dict)] if isinstance(result.get(key), list) else []
    shell = {k: v for k, v in result.items() if k not in (key, "structuredContent")}
    room = room_limit - json_size({**shell, key: []})
    kept: list[dict[str, Any]] = []
    dropped: dict[str, int] = {}
    cut = False
    for item in items:
        size = json_size(item) + (1 if kept else 0)
        if not cut and size <= room:
            kept.append(item)
            room -= size
            continue
        if not cut and _has_text(item):
            cut = True
            partial = _cut_item(item, room - (1 if kept else 0))
            if partial is not None:
                kept.append(partial)
                room -= json_size(partial) + (1 if len(kept) > 1 else 0)
                continue
        kind = _kind(item)
        dropped[kind] = dropped.get(kind, 0) + 1
    structured = result.get("structuredContent")
    out: dict[str, Any] = {**shell, key: kept}
    notes = [f"{n} {kind} block(s)" for kind, n in dropped.items()]
    if structured is not None:
        if json_size(structured) + len(',"structuredContent":') <= room:
            out["structuredContent"] = structured
        else:
            notes.append("structuredContent")
    delivered = json_size(out)
    _add_marker(out, key, marker.format(delivered=delivered, dropped=_dropped_text(notes)))
    meta = out.get("_meta")
    meta = meta if isinstance(meta, dict) else {}
    out["_meta"] = {**meta, META_KEY: {"original_bytes": original_bytes, "delivered_bytes": delivered,
                                       "limit": limit, "dropped": notes}}
    return Truncated(out, original_bytes, delivered, tuple(notes))


def _message_block(item: dict[str, Any]) -> dict[str, Any] | None:
    """The content block of a prompts/get message, or None when `item` is not a message."""
    content = item.get("content")
    return content if "role" in item and isinstance(content, dict) else None


def _has_text(item: dict[str, Any]) -> bool:
    """A text block, a resources/read text item, an embedded text resource, or a message holding one of these."""
    inner = _message_block(item)
    if inner is not None:
        return _has_text(inner)
    if isinstance(item.get("text"), str) and item.get("type") in (None, "text"):
        return True
    resource = item.get("resource")
    return item.get("type") == "resource" and isinstance(resource, dict) and isinstance(resource.get("text"), str)


def _cut_item(item: dict[str, Any], room: int) -> dict[str, Any] | None:
    """`item` with its text cut so that it fits `room` bytes, or None when no character fits."""
    for field in ("content", "resource"):  # a message's block, an embedded resource: cut the text inside
        inner = item.get(field)
        if isinstance(inner, dict) and (field == "resource" or _message_block(item) is not None):
            overhead = json_size({**item, field: {}}) - 2
            cut = _cut_item(inner, room - overhead)
            return {**item, field: cut} if cut is not None else None
    overhead = json_size({**item, "text": ""}) - 2
    text = cut_text(item["text"], room - overhead)
    return {**item, "text": text} if text else None


def _kind(item: dict[str, Any]) -> str:
    inner = _message_block(item)
    if inner is not None:
        return _kind(inner)
    return str(item.get("type") or ("resource" if "uri" in item else "content"))


def _dropped_text(notes: list[str]) -> str:
    return f"; dropped {', '.join(notes)}" if notes else ""


def _add_marker(out: dict[str, Any], key: str, marker: str) -> None:
    items: list[dict[str, Any]] = out[key]
    if key == "messages":  # a message of its own, in the last kept message's voice so no turn is added
        role = items[-1].get("role", "user") if items else "user"
        items.append({"role": role, "content": {"type": "text", "text": marker}})
        return
    if key != "contents":
        items.append({"type": "text", "text": marker})
        return
    # resources/read items need a uri: the marker joins the last text item, or becomes one of its own.
    for index in range(len(items) - 1, -1, -1):
        if isinstance(items[index].get("text"), str):
            items[index] = {**items[index], "text": items[index]["text"] + "\n" + marker}
            return
    uri = str(items[0].get("uri", "tollgate:truncated")) if items else "tollgate:truncated"
    items.append({"uri": uri, "mimeType": "text/plain", "text": marker})
