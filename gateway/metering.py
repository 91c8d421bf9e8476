"""Content accounting of MCP results: bytes per content type and an estimated token count.

Pure functions over parsed result dicts. Wire byte counts are taken by the relay where bytes
cross; this module only breaks a result down. Token estimate: UTF-8 bytes / 4 for text-like
content (Claude's tokenizer averages 3.5-4.5 bytes per token on English prose, code and JSON),
and a flat IMAGE_TOKENS per image (Claude caps an image at about 1,600 tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

BYTES_PER_TOKEN = 4
IMAGE_TOKENS = 1600


@dataclass(slots=True)
class ContentSizes:
    text_bytes: int = 0
    image_bytes_encoded: int = 0
    image_bytes_decoded: int = 0
    audio_bytes: int = 0
    resource_bytes: int = 0
    structured_bytes: int = 0
    content_blocks: int = 0
    images: int = 0

    @property
    def est_tokens(self) -> int:
        textish = self.text_bytes + self.resource_bytes + self.structured_bytes
        return -(-textish // BYTES_PER_TOKEN) + self.images * IMAGE_TOKENS


def utf8_len(text: str) -> int:
    """Length of `text` in UTF-8 without building the encoded copy for pure-ASCII text."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def base64_decoded_len(data: str) -> int:
    stripped = data.rstrip("=")
    return len(stripped) * 3 // 4


def measure(result: dict[str, Any]) -> ContentSizes:
    """Break down a tools/call, resources/read or prompts/get result."""
    sizes = ContentSizes()
    for block in _blocks(result):
        sizes.content_blocks += 1
        _add_block(sizes, block)
    structured = result.get("structuredContent")
    if structured is not None:
        sizes.structured_bytes = len(orjson.dumps(structured))
    return sizes


def _blocks(result: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for key in ("content", "contents"):
        value = result.get(key)
        if isinstance(value, list):
            blocks.extend(b for b in value if isinstance(b, dict))
    for message in result.get("messages") or []:  # prompts/get
        if isinstance(message, dict) and isinstance(message.get("content"), dict):
            blocks.append(message["content"])
    return blocks


def _add_block(sizes: ContentSizes, block: dict[str, Any]) -> None:
    kind = block.get("type")
    if kind == "image":
        data = str(block.get("data", ""))
        sizes.images += 1
        sizes.image_bytes_encoded += len(data)
        sizes.image_bytes_decoded += base64_decoded_len(data)
    elif kind == "audio":
        sizes.audio_bytes += base64_decoded_len(str(block.get("data", "")))
    elif kind == "resource" and isinstance(block.get("resource"), dict):
        sizes.resource_bytes += _resource_len(block["resource"])
    elif kind is None and "uri" in block and ("text" in block or "blob" in block):  # resources/read contents
        sizes.resource_bytes += _resource_len(block)
    elif "text" in block and kind in (None, "text"):
        sizes.text_bytes += utf8_len(str(block["text"]))
    else:
        sizes.text_bytes += len(orjson.dumps(block))


def _resource_len(resource: dict[str, Any]) -> int:
    if "text" in resource:
        return utf8_len(str(resource["text"]))
    return base64_decoded_len(str(resource.get("blob", "")))
