"""OTLP/JSON bodies to the plain records of `ingest.otlp`, decoded directly with orjson.

Accepts lowerCamelCase and snake_case field names, hex (or base64) ids, 64-bit integers as JSON
strings or numbers (kept exact, never through a float), and enum names or numbers.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any

import orjson
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus

from ingest.otlp import (
    INT_RE,
    TEMPORALITY,
    Attributes,
    BadValue,
    Decoded,
    LogRecord,
    MetricPoint,
    Origin,
    OtlpDecodeError,
    Signal,
    Span,
    to_float,
    to_int,
)

_SNAKE: dict[str, str] = {}
_ROOTS: dict[Signal, tuple[str, str, str]] = {
    "logs": ("resourceLogs", "scopeLogs", "logRecords"),
    "metrics": ("resourceMetrics", "scopeMetrics", "metrics"),
    "traces": ("resourceSpans", "scopeSpans", "spans"),
}
_METRIC_KINDS = ("gauge", "sum", "histogram", "exponentialHistogram", "summary")


def decode_json(signal: Signal, body: bytes) -> Decoded:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OtlpDecodeError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise OtlpDecodeError("body is not a JSON object")
    out = Decoded(signal)
    resource_key, scope_key, records_key = _ROOTS[signal]
    for rb in _list(doc, resource_key, "body"):
        resource = get(rb, "resource")
        resource_attrs = attributes(get(resource, "attributes"), out, "resource") if resource else {}
        for sb in _list(rb, scope_key, resource_key):
            scope = get(sb, "scope") or {}
            origin = Origin(resource_attrs, _text(get(scope, "name")), _text(get(scope, "version")))
            for record in _list(sb, records_key, scope_key, strict=False):
                index = out.count + out.rejected
                if not isinstance(record, dict):
                    out.note(f"{signal} record {index}: not a JSON object, dropped", rejected=True)
                    continue
                _DECODERS[signal](record, origin, out, f"{signal} record {index}")
    return out


def get(obj: Any, camel: str) -> Any:
    """A field by its lowerCamelCase name, or by its snake_case name."""
    if not isinstance(obj, dict):
        return None
    value = obj.get(camel)
    if value is None:
        snake = _SNAKE.get(camel)
        if snake is None:
            snake = _SNAKE[camel] = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel)
        value = obj.get(snake)
    return value


def _list(obj: Any, key: str, where: str, strict: bool = True) -> list[Any]:
    value = get(obj, key)
    if value is None:
        return []
    if not isinstance(value, list):
        if strict:
            raise OtlpDecodeError(f"{where}: {key} is not a list")
        return []
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def to_id(value: Any, size: int) -> str:
    """A trace or span id: hex per OTLP/JSON, base64 as protobuf's JSON mapping writes it."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        if len(value) == size * 2:
            try:
                return bytes.fromhex(value).hex()
            except ValueError:
                pass
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == size:
            return raw.hex()
    raise BadValue(f"not a {size}-byte hex id")


def _enum(value: Any, lookup: Callable[[str], int]) -> int:
    if isinstance(value, str) and not INT_RE.fullmatch(value):
        try:
            return int(lookup(value))
        except ValueError as exc:
            raise BadValue("unknown enum name") from exc
    return to_int(value)


def any_value(value: Any) -> Any:
    """An OTLP/JSON AnyValue object to a Python value; raises BadValue."""
    if not isinstance(value, dict):
        raise BadValue("value is not an AnyValue object")
    if not value:
        return None
    for key, raw in value.items():
        kind = key if "_" not in key else re.sub(r"_([a-z])", lambda m: m.group(1).upper(), key)
        if kind == "stringValue":
            if not isinstance(raw, str):
                raise BadValue("stringValue is not a string")
            return raw
        if kind == "intValue":
            return to_int(raw)
        if kind == "doubleValue":
            return to_float(raw)
        if kind == "boolValue":
            if not isinstance(raw, bool):
                raise BadValue("boolValue is not a boolean")
            return raw
        if kind == "arrayValue":
            return [any_value(v) for v in _values(raw)]
        if kind == "kvlistValue":
            return {_key(kv): any_value(get(kv, "value") or {}) for kv in _values(raw)}
        if kind == "bytesValue":
            try:
                return base64.b64decode(raw, validate=True) if isinstance(raw, str) else _bad_bytes()
            except (binascii.Error, ValueError) as exc:
                raise BadValue("bytesValue is not base64") from exc
    raise BadValue("AnyValue has no known value field")


def _bad_bytes() -> bytes:
    raise BadValue("bytesValue is not a string")


def _values(raw: Any) -> list[Any]:
    values = get(raw, "values") if isinstance(raw, dict) else None
    if values is None and isinstance(raw, dict):
        return []
    if not isinstance(values, list):
        raise BadValue("values is not a list")
    return values


def _key(kv: Any) -> str:
    key = get(kv, "key")
    if not isinstance(key, str):
        raise BadValue("key is not a string")
    return key


def attributes(raw: Any, out: Decoded, where: str) -> Attributes:
    """A KeyValue list to a dict; a malformed value becomes None and an issue, never an error."""
    result: Attributes = {}
    if raw is None:
        return result
    if not isinstance(raw, list):
        out.note(f"{where}: attributes is not a list")
        return result
    for kv in raw:
        key = get(kv, "key")
        if not isinstance(key, str):
            out.note(f"{where}: attribute without a string key dropped")
            continue
        value = get(kv, "value")
        try:
            result[key] = None if value is None else any_value(value)
        except BadValue as exc:
            result[key] = None
            out.note(f"{where}: attribute {key!r}: {exc}")
    return result


def _field(record: dict[str, Any], name: str, parse: Callable[[Any], Any], default: Any,
           out: Decoded, where: str) -> Any:
    raw = get(record, name)
    if raw is None:
        return default
    try:
        return parse(raw)
    except BadValue as exc:
        out.note(f"{where}: {name}: {exc}")
        return default


def _log(record: dict[str, Any], origin: Origin, out: Decoded, where: str) -> None:
    body = get(record, "body")
    try:
        body_value = None if body is None else any_value(body)
    except BadValue as exc:
        body_value = None
        out.note(f"{where}: body: {exc}")
    out.logs.append(
        LogRecord(
            origin,
            _field(record, "timeUnixNano", to_int, 0, out, where),
            _field(record, "observedTimeUnixNano", to_int, 0, out, where),
            _field(record, "severityNumber", lambda v: _enum(v, SeverityNumber.Value), 0, out, where),
            _text(get(record, "severityText")),
            body_value,
            attributes(get(record, "attributes"), out, where),
            _text(get(record, "eventName")),
            _field(record, "traceId", lambda v: to_id(v, 16), "", out, where),
            _field(record, "spanId", lambda v: to_id(v, 8), "", out, where),
            _field(record, "flags", to_int, 0, out, where),
        )
    )


def _metric(record: dict[str, Any], origin: Origin, out: Decoded, where: str) -> None:
    name = _text(get(record, "name"))
    kind = next((k for k in _METRIC_KINDS if isinstance(get(record, k), dict)), None)
    if kind is None:
        out.note(f"{where}: metric {name!r} has no data", rejected=True)
        return
    data = get(record, kind)
    temporality = _field(data, "aggregationTemporality", lambda v: _enum(v, AggregationTemporality.Value),
                         0, out, where)
    monotonic = get(data, "isMonotonic")
    snake_kind = "exponential_histogram" if kind == "exponentialHistogram" else kind
    for i, dp in enumerate(_list(data, "dataPoints", where, strict=False)):
        at = f"{where} point {i}"
        if not isinstance(dp, dict):
            out.note(f"{at}: not a JSON object, dropped", rejected=True)
            continue
        point = MetricPoint(
            origin, name, _text(get(record, "description")), _text(get(record, "unit")), snake_kind,
            TEMPORALITY.get(temporality, "unspecified"),
            bool(monotonic) if kind == "sum" else None,
            _field(dp, "startTimeUnixNano", to_int, 0, out, at),
            _field(dp, "timeUnixNano", to_int, 0, out, at),
            attributes(get(dp, "attributes"), out, at),
            flags=_field(dp, "flags", to_int, 0, out, at),
        )
        _point_values(snake_kind, dp, point, out, at)
        out.points.append(point)


def _point_values(kind: str, dp: dict[str, Any], point: MetricPoint, out: Decoded, at: str) -> None:
    if kind in ("gauge", "sum"):
        point.value_int = _field(dp, "asInt", to_int, None, out, at)
        if point.value_int is not None:
            point.value_double = float(point.value_int)
        else:
            point.value_double = _field(dp, "asDouble", to_float, None, out, at)
        return
    point.count = _field(dp, "count", to_int, None, out, at)
    point.sum = _field(dp, "sum", to_float, None, out, at)
    point.min = _field(dp, "min", to_float, None, out, at)
    point.max = _field(dp, "max", to_float, None, out, at)
    ints = lambda v: [to_int(x) for x in v] if isinstance(v, list) else _raise("not a list")  # noqa: E731
    if kind == "histogram":
        point.bucket_counts = _field(dp, "bucketCounts", ints, [], out, at)
        point.explicit_bounds = _field(
            dp, "explicitBounds", lambda v: [to_float(x) for x in v] if isinstance(v, list) else
            _raise("not a list"), [], out, at)
    elif kind == "exponential_histogram":
        point.extra = {"scale": _field(dp, "scale", to_int, 0, out, at),
                       "zero_count": _field(dp, "zeroCount", to_int, 0, out, at)}
        for side in ("positive", "negative"):
            buckets = get(dp, side) or {}
            point.extra[side] = {"offset": _field(buckets, "offset", to_int, 0, out, at),
                                 "bucket_counts": _field(buckets, "bucketCounts", ints, [], out, at)}
    else:
        quantiles = [{"quantile": _field(q, "quantile", to_float, None, out, at),
                      "value": _field(q, "value", to_float, None, out, at)}
                     for q in _list(dp, "quantileValues", at, strict=False) if isinstance(q, dict)]
        point.extra = {"quantiles": quantiles}


def _raise(reason: str) -> Any:
    raise BadValue(reason)


def _span(record: dict[str, Any], origin: Origin, out: Decoded, where: str) -> None:
    status = get(record, "status") or {}
    events = [
        {"time_unix_nano": _field(e, "timeUnixNano", to_int, 0, out, where), "name": _text(get(e, "name")),
         "attributes": attributes(get(e, "attributes"), out, where)}
        for e in _list(record, "events", where, strict=False) if isinstance(e, dict)
    ]
    links = [
        {"trace_id": _field(k, "traceId", lambda v: to_id(v, 16), "", out, where),
         "span_id": _field(k, "spanId", lambda v: to_id(v, 8), "", out, where),
         "trace_state": _text(get(k, "traceState")),
         "attributes": attributes(get(k, "attributes"), out, where)}
        for k in _list(record, "links", where, strict=False) if isinstance(k, dict)
    ]
    out.spans.append(
        Span(
            origin,
            _field(record, "traceId", lambda v: to_id(v, 16), "", out, where),
            _field(record, "spanId", lambda v: to_id(v, 8), "", out, where),
            _field(record, "parentSpanId", lambda v: to_id(v, 8), "", out, where),
            _text(get(record, "traceState")),
            _text(get(record, "name")),
            _field(record, "kind", lambda v: _enum(v, PbSpan.SpanKind.Value), 0, out, where),
            _field(record, "startTimeUnixNano", to_int, 0, out, where),
            _field(record, "endTimeUnixNano", to_int, 0, out, where),
            attributes(get(record, "attributes"), out, where),
            events,
            links,
            _field(status, "code", lambda v: _enum(v, PbStatus.StatusCode.Value), 0, out, where),
            _text(get(status, "message")),
            _field(record, "flags", to_int, 0, out, where),
        )
    )


_DECODERS: dict[Signal, Callable[[dict[str, Any], Origin, Decoded, str], None]] = {
    "logs": _log,
    "metrics": _metric,
    "traces": _span,
}
