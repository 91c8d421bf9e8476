"""OTLP body decoding: protobuf and JSON give the same records; one bad value never fails a body."""

from __future__ import annotations

import base64
import re
from typing import Any

import orjson
import pytest

from ingest.otlp import OtlpDecodeError, Signal, decode
from tests.ingest.conftest import DATA, capture

CAPTURES = sorted(
    (p.parent.parent.name, p.stem) for p in DATA.glob("*/otlp/*.bin")
)


def signal_of(name: str) -> Signal:
    signal = name.split("_", 1)[1]
    assert signal in ("logs", "metrics", "traces")
    return signal  # type: ignore[return-value]


@pytest.mark.parametrize(("scenario", "name"), CAPTURES)
def test_capture_body_and_its_decoded_json_give_identical_records(scenario: str, name: str) -> None:
    encoding = "json" if scenario == "s2_json" else "protobuf"
    from_body = decode(signal_of(name), capture(scenario, name), encoding)
    from_json = decode(signal_of(name), (DATA / scenario / "otlp" / f"{name}.json").read_bytes(), "json")
    assert from_body.count > 0
    assert (from_body.logs, from_body.points, from_body.spans) == (from_json.logs, from_json.points, from_json.spans)
    assert from_body.issues == from_json.issues == []


def snake(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), k): snake(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [snake(v) for v in doc]
    return doc


def test_snake_case_field_names_decode_like_camel_case() -> None:
    body = capture("s2_json", "0001_logs")
    camel = decode("logs", body, "json")
    snaked = decode("logs", orjson.dumps(snake(orjson.loads(body))), "json")
    assert snaked.logs == camel.logs


def log_body(record: dict[str, Any]) -> bytes:
    return orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]})


def test_trace_ids_accept_hex_in_any_case_and_base64() -> None:
    trace = bytes(range(16))
    span = bytes(range(8))
    upper = decode("logs", log_body({"traceId": trace.hex().upper(), "spanId": span.hex()}), "json").logs[0]
    b64 = decode("logs", log_body({"traceId": base64.b64encode(trace).decode(),
                                   "spanId": base64.b64encode(span).decode()}), "json").logs[0]
    assert (upper.trace_id, upper.span_id) == (b64.trace_id, b64.span_id) == (trace.hex(), span.hex())


def test_int64_values_are_exact_whether_quoted_or_not() -> None:
    big = 2**63 - 1
    record = {"timeUnixNano": str(2**63 + 5), "attributes": [
        {"key": "quoted", "value": {"intValue": str(big)}},
        {"key": "bare", "value": {"intValue": big}},
    ]}
    log = decode("logs", log_body(record), "json").logs[0]
    assert log.attributes == {"quoted": big, "bare": big}
    assert log.time_unix_nano == 2**63 + 5


def test_malformed_values_become_none_with_an_issue_and_the_record_is_kept() -> None:
    record = {"timeUnixNano": "soon", "attributes": [
        {"key": "cost_usd", "value": {"doubleValue": {}}},
        {"key": "tokens", "value": {"intValue": "12.5"}},
        {"key": "huge", "value": {"intValue": "9" * 30}},
        {"key": "ok", "value": {"stringValue": "fine"}},
        {"value": {"stringValue": "no key"}},
    ]}
    decoded = decode("logs", log_body(record), "json")
    assert len(decoded.logs) == 1 and decoded.rejected == 0
    assert decoded.logs[0].attributes == {"cost_usd": None, "tokens": None, "huge": None, "ok": "fine"}
    assert decoded.logs[0].time_unix_nano == 0
    assert decoded.invalid_values == 5
    assert any("'cost_usd'" in issue for issue in decoded.issues)


def test_a_record_that_is_not_an_object_is_rejected_and_the_rest_kept() -> None:
    body = orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [7, {"body": {"stringValue": "x"}}]}]}]})
    decoded = decode("logs", body, "json")
    assert decoded.rejected == 1
    assert [log.body for log in decoded.logs] == ["x"]


@pytest.mark.parametrize("body", [b"", b"[1, 2]", b'{"resourceLogs": 5}', b"\xff\xfe"])
def test_unusable_json_bodies_raise(body: bytes) -> None:
    with pytest.raises(OtlpDecodeError):
        decode("logs", body, "json")


def test_malformed_protobuf_raises() -> None:
    with pytest.raises(OtlpDecodeError, match="ExportLogsServiceRequest"):
        decode("logs", b"\x0a\xff\xff\xff\x0f{", "protobuf")


def test_enum_names_and_numbers_are_both_accepted() -> None:
    def span_body(kind: Any, temporality: Any) -> tuple[bytes, bytes]:
        spans = {"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "s", "kind": kind}]}]}]}
        metrics = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [
            {"name": "m", "sum": {"aggregationTemporality": temporality, "dataPoints": [{"asInt": "3"}]}}]}]}]}
        return orjson.dumps(spans), orjson.dumps(metrics)

    named = span_body("SPAN_KIND_INTERNAL", "AGGREGATION_TEMPORALITY_DELTA")
    numbered = span_body(1, 1)
    for spans, metrics in (named, numbered):
        assert decode("traces", spans, "json").spans[0].kind == 1
        point = decode("metrics", metrics, "json").points[0]
        assert (point.temporality, point.value_int, point.value_double) == ("delta", 3, 3.0)
