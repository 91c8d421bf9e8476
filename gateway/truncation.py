"""Cutting an MCP result down to a byte limit: text on a UTF-8 boundary, binary blocks whole or not at all.

Pure functions over parsed result dicts. Sizes are the JSON encoding of the result (what Tollgate relays,
without the JSON-RPC envelope). Never cuts inside a base64 payload: such blocks are dropped with a note.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

META_KEY = "tollgate/truncated"
_LIST_KEYS = ("content", "contents")  # tools/call, resources/read
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


def truncate(result: dict[str, Any], limit: int, original_bytes: int, marker: str) -> Truncated:
    """The result cut so that, marker and `_meta` included, it fits in `limit` bytes (when the marker alone fits).

    The marker's size depends on what was dropped, so the room left for content is found in a few passes.
    """
    reserve = 0
    for _ in range(MAX_PASSES):
        cut = _truncate(result, limit - reserve, limit, original_bytes, marker)
        over = json_size(cut.result) - limit
        if over <= 0 or reserve >= limit:
            return cut
        reserve = min(limit, reserve + over)
    return cut


def _truncate(result: dict[str, Any], room_limit: int, limit: int, original_bytes: int, marker: str) -> Truncated:
    """Keep blocks in order while they fit in `room_limit` bytes, cut the first text that does not, drop the rest."""
    key = next((k for k in _LIST_KEYS if isinstance(result.get(k), list)), "content")
    blocks = [b for b in result.get(key) or [] if isinstance(b, dict)]
    shell = {k: v for k, v in result.items() if k not in (key, "structuredContent")}
    room = room_limit - json_size({**shell, key: []})
    kept: list[dict[str, Any]] = []
    dropped: dict[str, int] = {}
    cut = False
    for block in blocks:
        size = json_size(block) + (1 if kept else 0)
        if not cut and size <= room:
            kept.append(block)
            room -= size
            continue
        text_field = _text_field(block)
        if not cut and text_field is not None:
            cut = True
            partial = _cut_block(block, text_field, room - (1 if kept else 0))
            if partial is not None:
                kept.append(partial)
                room -= json_size(partial) + (1 if len(kept) > 1 else 0)
                continue
        kind = str(block.get("type") or ("resource" if "uri" in block else "content"))
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


def _text_field(block: dict[str, Any]) -> str | None:
    if isinstance(block.get("text"), str) and block.get("type") in (None, "text"):
        return "text"  # a text block, or a resources/read text item
    resource = block.get("resource")
    if block.get("type") == "resource" and isinstance(resource, dict) and isinstance(resource.get("text"), str):
        return "resource"
    return None


def _cut_block(block: dict[str, Any], text_field: str, room: int) -> dict[str, Any] | None:
    if text_field == "resource":
        inner = block["resource"]
        overhead = json_size({**block, "resource": {**inner, "text": ""}}) - 2
        text = cut_text(inner["text"], room - overhead)
        return {**block, "resource": {**inner, "text": text}} if text else None
    overhead = json_size({**block, "text": ""}) - 2
    text = cut_text(block["text"], room - overhead)
    return {**block, "text": text} if text else None


def _dropped_text(notes: list[str]) -> str:
    return f"; dropped {', '.join(notes)}" if notes else ""


def _add_marker(out: dict[str, Any], key: str, marker: str) -> None:
    blocks: list[dict[str, Any]] = out[key]
    if key == "content":
        blocks.append({"type": "text", "text": marker})
        return
    # resources/read items need a uri: the marker joins the last text item, or becomes one of its own.
    for index in range(len(blocks) - 1, -1, -1):
        if isinstance(blocks[index].get("text"), str):
            blocks[index] = {**blocks[index], "text": blocks[index]["text"] + "\n" + marker}
            return
    uri = str(blocks[0].get("uri", "tollgate:truncated")) if blocks else "tollgate:truncated"
    blocks.append({"uri": uri, "mimeType": "text/plain", "text": marker})
