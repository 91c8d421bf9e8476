"""Fixtures for ingest tests: captured Claude Code bodies, a real Writer on the shared chDB `store`, and an
aiohttp test client serving the OTLP routes. Expected values are read from the captures' decoded JSON with
a flattener written here, independent of `ingest`."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from ingest.app import RAW_BODY_HANDLER_ARGS, OtlpSettings, RowWriter, add_otlp_routes
from store.client import Store
from store.writer import Writer

DATA = Path(__file__).resolve().parent.parent / "data" / "claude_code"


def capture(scenario: str, name: str) -> bytes:
    """A raw OTLP body exactly as Claude Code POSTed it (`name` like `0001_logs`)."""
    return (DATA / scenario / "otlp" / f"{name}.bin").read_bytes()


def capture_doc(scenario: str, name: str) -> dict[str, Any]:
    """The capture's decoded JSON (OTLP/JSON mapping)."""
    doc: dict[str, Any] = orjson.loads((DATA / scenario / "otlp" / f"{name}.json").read_bytes())
    return doc


def plain(value: dict[str, Any]) -> Any:
    """An OTLP/JSON AnyValue as a Python value (int64 strings to int)."""
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [plain(v) for v in value["arrayValue"].get("values", [])]
    return None


def attrs(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    return {kv["key"]: plain(kv["value"]) for kv in pairs}


def expected_logs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every log record of a decoded capture: times, body, typed attributes, resource attributes."""
    out = []
    for rl in doc["resourceLogs"]:
        resource = attrs(rl["resource"]["attributes"])
        for sl in rl["scopeLogs"]:
            for r in sl["logRecords"]:
                out.append({
                    "time": int(r["timeUnixNano"]),
                    "observed": int(r.get("observedTimeUnixNano", 0)),
                    "body": plain(r["body"]),
                    "attrs": attrs(r["attributes"]),
                    "resource": resource,
                    "trace_id": r.get("traceId", ""),
                })
    return out


def expected_points(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for rm in doc["resourceMetrics"]:
        for sm in rm["scopeMetrics"]:
            for m in sm["metrics"]:
                data = m["sum"] if "sum" in m else m["gauge"]
                for dp in data["dataPoints"]:
                    value = int(dp["asInt"]) if "asInt" in dp else float(dp["asDouble"])
                    out.append({"name": m["name"], "unit": m.get("unit", ""), "time": int(dp["timeUnixNano"]),
                                "value": value, "attrs": attrs(dp["attributes"]),
                                "temporality": data.get("aggregationTemporality")})
    return out


def events_named(doc: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e for e in expected_logs(doc) if e["attrs"].get("event.name") == name]


def gz(body: bytes) -> bytes:
    return gzip.compress(body, mtime=0)


@pytest.fixture
async def writer(store: Store, tmp_path: Path) -> AsyncIterator[Writer]:
    """A started real Writer that flushes only when a test asks (flush_seconds is long)."""
    real = Writer(store, tmp_path / "spill", flush_seconds=3600.0)
    await real.start()
    try:
        yield real
    finally:
        await real.stop()


ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def otlp_client(aiohttp_client: Any, writer: Writer) -> ClientFactory:
    """`await otlp_client(settings, writer_)`: a test client on a real server with the OTLP routes, served
    as the gateway serves them (aiohttp's own gzip inflation off unless `raw_body=False`)."""

    async def make(
        settings: OtlpSettings | None = None, writer_: RowWriter | None = None, raw_body: bool = True
    ) -> TestClient[Any, Any]:
        app = web.Application(handler_args=RAW_BODY_HANDLER_ARGS if raw_body else None)
        add_otlp_routes(app, writer_ or writer, settings or OtlpSettings())
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return make


@pytest.fixture
def stored(store: Store, writer: Writer) -> Callable[..., Awaitable[list[dict[str, Any]]]]:
    """`await stored(table, "col, col")`: flush the writer, then the table's rows (FINAL)."""

    async def read(table: str, columns: str = "*", where: str = "1", order: str = "1") -> list[dict[str, Any]]:
        await writer.flush()
        return await store.query(f"SELECT {columns} FROM {table} FINAL WHERE {where} ORDER BY {order}")

    return read
