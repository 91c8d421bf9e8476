"""Seed data for the UI tests and the render benchmark: a real Claude Code OTLP/JSON capture moved to the present,
and the gateway calls beyond the capture's that the servers pages need.

The capture (tests/data/claude_code/s2_json) is one session of one turn with two MCP tool results; tests make
gateway calls carrying the same tool_use_ids, so they tie exactly.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from mcp import ClientSession

CAPTURE = Path(__file__).resolve().parents[1] / "data" / "claude_code" / "s2_json" / "otlp" / "0001_logs.json"
CC_SESSION = "286536ae-b03a-47b9-b418-15f5a3c40438"
ECHO_USE_ID = "toolu_01yUXMEvGa7KI515qlhWlnYdDI"  # capture/echo in the capture
BLOB_USE_ID = "toolu_01h2SBItZC2OZ1L5WXDuhxHdPm"  # capture/big_payload in the capture


def _records(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for rl in doc["resourceLogs"] for sl in rl["scopeLogs"] for r in sl["logRecords"]]


def otlp_logs_now(end_ns: int | None = None) -> bytes:
    """The capture's body with every timestamp shifted so its last event happened at `end_ns` (default: now)."""
    return logs_now([CAPTURE], end_ns)[0]


TURN_ORDER_SESSION = "0d1e7a5c-7e11-4c1a-9f0e-5e55105e7a11"  # the capture's prompts and requests, without prompt.id
PROMPT_TEXT = ("prompt", "prompt_text")  # the user_prompt attributes that carry the text


def turn_order_logs_now(end_ns: int | None = None) -> bytes:
    """The capture as a client that sends no prompt.id would: its turns are segmented by prompt order. It keeps the
    prompts, requests and other events under its own session id (TURN_ORDER_SESSION) and drops the tool events, so
    its results neither share tool_use_ids with the original's nor tie to any test's calls. Its prompts carry their
    length only, as Claude Code's do without OTEL_LOG_USER_PROMPTS: no text to store even when the store keeps
    prompt text."""
    doc: dict[str, Any] = orjson.loads(otlp_logs_now(end_ns))
    for sl in (sl for rl in doc["resourceLogs"] for sl in rl["scopeLogs"]):
        sl["logRecords"] = [r for r in sl["logRecords"] if _event_name(r) not in ("tool_result", "tool_decision")]
        for record in sl["logRecords"]:
            record["attributes"] = [a for a in record["attributes"] if a["key"] not in ("prompt.id", *PROMPT_TEXT)]
            for attr in record["attributes"]:
                if attr["key"] == "session.id":
                    attr["value"] = {"stringValue": TURN_ORDER_SESSION}
    return orjson.dumps(doc)


def _event_name(record: dict[str, Any]) -> str:
    return next((str(a["value"]["stringValue"]) for a in record["attributes"] if a["key"] == "event.name"), "")


def logs_now(paths: Sequence[Path], end_ns: int | None = None) -> list[bytes]:
    """OTLP/JSON log bodies shifted by one amount, so the last event of them all happened at `end_ns` (default:
    now) and the gaps between batches stay as captured."""
    docs: list[dict[str, Any]] = [orjson.loads(path.read_bytes()) for path in paths]
    shift = (end_ns or time.time_ns()) - max(int(r["timeUnixNano"]) for doc in docs for r in _records(doc))
    for record in (r for doc in docs for r in _records(doc)):
        for key in ("timeUnixNano", "observedTimeUnixNano"):
            if key in record:
                record[key] = str(int(record[key]) + shift)
        for attr in record["attributes"]:
            if attr["key"] == "event.timestamp":
                at = int(record["timeUnixNano"]) / 1e9
                attr["value"] = {"stringValue": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at))
                                 + f".{int(at * 1000) % 1000:03d}Z"}
    return [orjson.dumps(doc) for doc in docs]


# beta__slow calls (milliseconds, result text bytes): each starts when the one before ends, so together they span
# about 3.5 s and the server page's timeline draws them as a series of one-second buckets. All under the UI
# tests' beta result limit (not truncated), of different sizes so the line moves.
SPREAD = ((700, 20_000), (700, 3_000), (700, 35_000), (700, 8_000), (700, 45_000))


async def failing_call(client: ClientSession) -> None:
    """A tool error through the gateway: beta__blob with an `n` that is not an integer (the tool's own argument
    validation answers isError), so the servers pages have an error to count."""
    result = await client.call_tool("beta__blob", {"n": "many"})
    assert result.is_error, result


async def spread_calls(client: ClientSession) -> None:
    for ms, size in SPREAD:
        result = await client.call_tool("beta__slow", {"ms": ms, "text": "s" * size})
        assert not result.is_error, result
