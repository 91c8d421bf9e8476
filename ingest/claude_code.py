"""Claude Code meaning of decoded OTLP records: one row per event in its typed table and in the raw table.

Column types come from each attribute's meaning, never from how the value happened to arrive (numbers
or strings). A value that does not fit becomes NULL and an issue; the record itself is always kept.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from ingest.otlp import INT_RE, Attributes, BadValue, Decoded, LogRecord, MetricPoint, Origin, Span, to_float

Row = dict[str, Any]
Rows = dict[str, list[Row]]
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
RAW_TABLE = "cc_events_raw"
METRICS_TABLE = "cc_metric_points"
SPANS_TABLE = "cc_spans"
# Text the user typed or the model wrote: kept only when `store_prompt_text` is on.
CONTENT_KEYS = frozenset({"prompt", "prompt_text", "response", "user_prompt"})

# Largest cost accepted: its micro-USD (10^18) fit the Int64 every read derives from `cost_usd` with room to
# spare; (2^63-1) / 10^6 itself rounds to a float whose micros are 2^63, one past Int64.
MAX_COST_USD = 1e12

# (column, attribute, kind): kind is str | int | uint | float | bool, or one of the quantities that cannot be
# negative: count (tokens, durations, sizes, lengths, attempts: 0..Int64 max) and usd (a finite cost in
# 0..MAX_COST_USD). A value outside its kind's range is NULL and an issue, never stored wrapped or negative.
Column = tuple[str, str, str]
TYPED_EVENTS: dict[str, tuple[str, tuple[Column, ...]]] = {
    "user_prompt": ("cc_user_prompts", (
        ("prompt_length", "prompt_length", "count"), ("message_uuid", "message.uuid", "str"),
    )),
    "api_request": ("cc_api_requests", (
        ("model", "model", "str"), ("input_tokens", "input_tokens", "count"),
        ("output_tokens", "output_tokens", "count"), ("cache_read_tokens", "cache_read_tokens", "count"),
        ("cache_creation_tokens", "cache_creation_tokens", "count"),
        ("cache_creation_5m_tokens", "cache_creation_5m_tokens", "count"),
        ("cache_creation_1h_tokens", "cache_creation_1h_tokens", "count"),
        ("cost_usd", "cost_usd", "usd"), ("cost_usd_micros", "cost_usd_micros", "count"),
        ("duration_ms", "duration_ms", "count"), ("ttft_ms", "ttft_ms", "count"),
        ("request_id", "request_id", "str"), ("query_source", "query_source", "str"),
        ("speed", "speed", "str"), ("effort", "effort", "str"),
        ("mcp_server_name", "mcp_server.name", "str"), ("mcp_tool_name", "mcp_tool.name", "str"),
    )),
    "api_error": ("cc_api_errors", (
        ("model", "model", "str"), ("error", "error", "str"), ("status_code", "status_code", "str"),
        ("attempt", "attempt", "count"), ("duration_ms", "duration_ms", "count"),
        ("request_id", "request_id", "str"), ("query_source", "query_source", "str"), ("speed", "speed", "str"),
    )),
    "tool_result": ("cc_tool_results", (
        ("tool_name", "tool_name", "str"), ("tool_use_id", "tool_use_id", "str"),
        ("success", "success", "bool"), ("duration_ms", "duration_ms", "count"),
        ("tool_input_size_bytes", "tool_input_size_bytes", "count"),
        ("tool_result_size_bytes", "tool_result_size_bytes", "count"),
        ("mcp_server_scope", "mcp_server_scope", "str"), ("tool_parameters", "tool_parameters", "str"),
        ("error", "error", "str"), ("decision_source", "decision_source", "str"),
        ("decision_type", "decision_type", "str"), ("request_id", "request_id", "str"),
    )),
    "tool_decision": ("cc_tool_decisions", (
        ("tool_name", "tool_name", "str"), ("tool_use_id", "tool_use_id", "str"),
        ("decision", "decision", "str"), ("source", "source", "str"), ("tool_source", "tool_source", "str"),
        ("permission_mode", "permission_mode", "str"), ("tool_parameters", "tool_parameters", "str"),
        ("request_id", "request_id", "str"),
    )),
}
TABLES = (RAW_TABLE, METRICS_TABLE, SPANS_TABLE, *(table for table, _ in TYPED_EVENTS.values()))


class FirstSeen:
    """When each untimed event was first received, so a body re-delivered with no usable time (an exporter retrying
    after a lost 200) gets the same `event_time`, part of the row's identity, and is stored once. Kept for this
    process's most recent `capacity` such events: exporters retry within seconds."""

    __slots__ = ("_capacity", "_seen")

    def __init__(self, capacity: int = 65_536) -> None:
        self._capacity = capacity
        self._seen: OrderedDict[str, int] = OrderedDict()

    def first(self, key: str, received_ns: int) -> int:
        seen = self._seen.setdefault(key, received_ns)
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return seen


@dataclass(frozen=True)
class MappingOptions:
    store_prompt_text: bool = False
    untimed: FirstSeen = field(default_factory=FirstSeen, compare=False)


def to_rows(decoded: Decoded, options: MappingOptions, received_ns: int | None = None) -> Rows:
    """Rows per table for one decoded body received at `received_ns` (default: now); value problems are noted
    on `decoded`. The receive time is each row's `ingested_at`, and the `event_time` and `observed_time` of a log
    record when no record of its body carries a usable time."""
    ingested_at = (time.time_ns() if received_ns is None else received_ns) // 1000
    rows: Rows = {}
    if decoded.logs:
        raw = rows[RAW_TABLE] = []
        received = ingested_at * 1000
        stand_in = UntimedTime(decoded.logs, received)
        for record in decoded.logs:
            _log_rows(record, decoded, options, received, stand_in, raw, rows)
    for point in decoded.points:
        row = _point_row(point, decoded)
        row["ingested_at"] = ingested_at
        rows.setdefault(METRICS_TABLE, []).append(row)
    for span in decoded.spans:
        row = _span_row(span, decoded, options)
        row["ingested_at"] = ingested_at
        rows.setdefault(SPANS_TABLE, []).append(row)
    return rows


# --- values ---------------------------------------------------------------------------------------

def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return orjson.dumps(value, default=_json_default).decode()


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError


def as_int(value: Any, low: int = -INT64_MAX - 1, high: int = INT64_MAX) -> int:
    if isinstance(value, bool):
        raise BadValue("boolean where an integer was expected")
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 40:
            raise BadValue("not an integer")
        if INT_RE.fullmatch(text):
            number = int(text)
        else:
            try:
                exact = Decimal(text)
            except InvalidOperation as exc:
                raise BadValue("not an integer") from exc
            if not exact.is_finite() or exact != exact.to_integral_value():
                raise BadValue("not an integer")
            number = int(exact)
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        raise BadValue("not an integer")
    if not low <= number <= high:
        raise BadValue("integer out of range")
    return number


def as_count(value: Any) -> int:
    """A quantity that cannot be negative (tokens, durations, sizes): an integer in 0..Int64 max."""
    number = as_int(value)
    if number < 0:
        raise BadValue("negative where a count was expected")
    return number


def as_usd(value: Any) -> float:
    """A cost in USD: finite, not negative, and small enough that its micro-USD fit Int64."""
    number = to_float(value)
    if not math.isfinite(number):
        raise BadValue("not a finite number")
    if number < 0:
        raise BadValue("negative cost")
    if number > MAX_COST_USD:
        raise BadValue("cost out of range (its micro-USD exceed Int64)")
    return number + 0.0  # -0.0 would show as $-0.0000


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise BadValue("not a boolean")


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "str": as_text,
    "int": as_int,
    "uint": lambda v: as_int(v, 0, UINT64_MAX),
    "float": to_float,
    "count": as_count,
    "usd": as_usd,
    "bool": as_bool,
}


def convert(kind: str, value: Any, decoded: Decoded, where: str, attribute: str) -> Any:
    """One attribute value in its column's type; absent stays absent (NULL), bad becomes NULL + issue."""
    if kind == "str":
        return as_text(value)
    if value is None or value == "":
        return None
    try:
        return _CONVERT[kind](value)
    except BadValue as exc:
        decoded.note(f"{where}: attribute {attribute!r}: {exc}, stored as NULL")
        return None


def string_map(attributes: Attributes) -> dict[str, str]:
    """Every value as text (`as_text`); str and int, the common cases, without a call."""
    return {
        key: value if type(value) is str else str(value) if type(value) is int else as_text(value)
        for key, value in attributes.items()
    }


_CONTENT_KEYS_TUPLE = tuple(sorted(CONTENT_KEYS))


def _has_content(attributes: Attributes) -> bool:
    for key in _CONTENT_KEYS_TUPLE:  # noqa: SIM110 (a loop: any() over a generator is slower here)
        if key in attributes:
            return True
    return False


# A log record's time is usable from 2000-01-01 up to a day past its receive time: 0 (unset), 1970, a garbled
# or far-future value would hide the record from every time-ranged list or wrap in DateTime64(9).
MIN_TIME_NS = 946_684_800 * 1_000_000_000
FUTURE_SLACK_NS = 86_400 * 1_000_000_000
TIME_FALLBACK = "record(s) without a usable timeUnixNano dated by a fallback"
NO_SESSION = "record(s) carry no session.id (kept; reports show them as '(no session id)')"


def usable_time(value: int, received_ns: int) -> bool:
    return MIN_TIME_NS <= value <= received_ns + FUTURE_SLACK_NS


def own_time(record: LogRecord, received_ns: int) -> tuple[int, str]:
    """The record's first usable time and where it came from: timeUnixNano, else observedTimeUnixNano, else
    Claude Code's `event.timestamp`; (0, "") when none is usable."""
    candidates = (
        ("timeUnixNano", record.time_unix_nano),
        ("observedTimeUnixNano", record.observed_time_unix_nano),
        ("event.timestamp", _iso_ns(record.attributes.get("event.timestamp"))),
    )
    for source, value in candidates:
        if usable_time(value, received_ns):
            return value, source
    return 0, ""


class UntimedTime:
    """The `event_time` of a record that carries no usable time: the latest time another record of the same body
    carries (an exporter batches records emitted together, and a re-delivered body comes out the same), else the
    receive time. Computed once, on first need."""

    __slots__ = ("_received_ns", "_records", "_time")

    def __init__(self, records: list[LogRecord], received_ns: int) -> None:
        self._records = records
        self._received_ns = received_ns
        self._time: int | None = None

    def get(self) -> int:
        if self._time is None:
            self._time = max((t for r in self._records if (t := own_time(r, self._received_ns)[0])),
                             default=self._received_ns)
        return self._time


def _time(value: int, decoded: Decoded, where: str) -> int:
    if 0 <= value <= INT64_MAX:
        return value
    decoded.note(f"{where}: timestamp out of range, stored as 0")
    return 0


def _iso_ns(value: Any) -> int:
    if not isinstance(value, str):
        return 0
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp()) * 1_000_000_000 + parsed.microsecond * 1000


def record_hash(*parts: Any) -> str:
    blob = orjson.dumps(parts, default=_json_default, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


# --- identity -------------------------------------------------------------------------------------

def _lookup(attributes: Attributes, resource: Attributes, key: str) -> Any:
    value = attributes.get(key)
    return resource.get(key) if value is None else value


# (column, attribute) of the text identity columns: log attribute first, then resource attribute.
_IDENTITY_TEXT = (
    ("session_id", "session.id"), ("prompt_id", "prompt.id"), ("user_id", "user.id"),
    ("user_email", "user.email"), ("user_account_uuid", "user.account_uuid"),
    ("organization_id", "organization.id"), ("terminal_type", "terminal.type"), ("service_name", "service.name"),
)


def identity(attributes: Attributes, origin: Origin, decoded: Decoded, where: str) -> Row:
    """Who and where: log attributes first, then resource attributes."""
    resource = origin.resource
    row: Row = {}
    for column, key in _IDENTITY_TEXT:
        value = attributes.get(key)
        if value is None:
            value = resource.get(key)
        row[column] = value if type(value) is str else "" if value is None else as_text(value)
    app_version = _lookup(attributes, resource, "app.version")
    if app_version is None:
        app_version = resource.get("service.version")
    row["app_version"] = app_version if type(app_version) is str else as_text(app_version)
    sequence = _lookup(attributes, resource, "event.sequence")
    if type(sequence) is int and 0 <= sequence <= UINT64_MAX:
        row["event_sequence"] = sequence
    else:
        row["event_sequence"] = convert("uint", sequence, decoded, where, "event.sequence")
    row["resource_attributes"] = _resource_map(origin)
    return row


def _resource_map(origin: Origin) -> dict[str, str]:
    cached: dict[str, str] | None = origin.derived.get("resource_map")
    if cached is None:
        cached = origin.derived["resource_map"] = string_map(origin.resource)
    return cached


def event_name(record: LogRecord) -> str:
    """`event.name` attribute, else the LogRecord's event_name, else its body; without `claude_code.`."""
    for candidate in (record.attributes.get("event.name"), record.event_name, record.body):
        if isinstance(candidate, str) and candidate:
            return candidate.removeprefix("claude_code.")
    return ""


def event_key(name: str, ident: Row, request_id: str, record: LogRecord) -> str:
    """Deterministic per event, so a re-delivered export replaces rather than adds."""
    if name == "api_request" and request_id:
        return f"req:{request_id}"
    if ident["session_id"] and ident["event_sequence"] is not None:
        return f"seq:{ident['session_id']}:{ident['event_sequence']}"
    origin = record.origin
    return "hash:" + record_hash(
        origin.resource, origin.scope_name, record.time_unix_nano, record.observed_time_unix_nano,
        record.severity_number, name, record.body, record.attributes, record.trace_id, record.span_id,
    )


# --- rows -----------------------------------------------------------------------------------------

_STR, _COUNT, _USD = "str", "count", "usd"
INT64_MIN = -INT64_MAX - 1


def _log_rows(
    record: LogRecord, decoded: Decoded, options: MappingOptions, received_ns: int, untimed: UntimedTime,
    raw: list[Row], rows: Rows,
) -> None:
    """Append the event's raw row to `raw` and its typed row (if its name has a table) to `rows`.

    The hot path of ingest: one pass per column, fast paths for values that already have their column's type,
    and the general converters (which note issues) only for the rest."""
    attrs = record.attributes
    name = event_name(record)
    where = f"event {name or '?'} (sequence {attrs.get('event.sequence')})"
    common = identity(attrs, record.origin, decoded, where)
    if not common["session_id"]:  # kept (its tokens and cost count), but the sender should know
        decoded.remark(NO_SESSION)
    request_id = attrs.get("request_id")
    key = event_key(name, common, request_id if type(request_id) is str else as_text(request_id), record)
    event_time, source = own_time(record, received_ns)
    if not event_time:
        event_time = untimed.get()
        source = "another record of its body"
        if event_time == received_ns:
            event_time, source = options.untimed.first(key, received_ns), "the receive time"
    if source != "timeUnixNano":
        decoded.remark(TIME_FALLBACK, f"{where}: timeUnixNano {_shown_time(record.time_unix_nano)}, "
                                      f"dated by {source}")
    # observed_time says when it was seen: its own, else its own time, else (no time of its own) when it arrived.
    observed = record.observed_time_unix_nano
    if not usable_time(observed, received_ns):
        observed = event_time if source in ("timeUnixNano", "event.timestamp") else received_ns
    common["event_name"] = name
    common["event_key"] = key
    common["event_time"] = event_time
    common["observed_time"] = observed
    common["trace_id"] = record.trace_id
    common["span_id"] = record.span_id
    common["ingested_at"] = received_ns // 1000
    kept = attrs if options.store_prompt_text or not _has_content(attrs) else {
        k: v for k, v in attrs.items() if k not in CONTENT_KEYS}
    origin = record.origin
    severity, flags = record.severity_number, record.flags
    raw_row = common.copy()
    raw_row["scope_name"] = origin.scope_name
    raw_row["scope_version"] = origin.scope_version
    raw_row["severity_number"] = severity if 0 <= severity <= 255 else 0
    raw_row["severity_text"] = record.severity_text
    raw_row["flags"] = flags if 0 <= flags <= 0xFFFFFFFF else 0
    raw_row["body"] = _body(record, name, options)
    raw_row["attributes"] = string_map(kept)
    raw_row["attributes_json"] = as_text(kept)
    raw.append(raw_row)
    typed = TYPED_EVENTS.get(name)
    if typed is None:
        return
    table, columns = typed
    row = common
    for column, attribute, kind in columns:
        value = attrs.get(attribute)
        if kind == _STR:
            row[column] = value if type(value) is str else "" if value is None else as_text(value)
        elif value is None or value == "":
            row[column] = None
        elif (kind == _COUNT and type(value) is int and 0 <= value <= INT64_MAX) or (
            kind == _USD and type(value) is float and 0.0 < value <= MAX_COST_USD  # False for NaN; -0.0 converts
        ):
            row[column] = value  # already its column's type
        else:
            row[column] = convert(kind, value, decoded, where, attribute)
    _enrich(name, row, attrs, options)
    table_rows = rows.get(table)
    if table_rows is None:
        table_rows = rows[table] = []
    table_rows.append(row)


def _shown_time(value: int) -> str:
    return "missing or unreadable" if value == 0 else "out of range (before 2000 or over a day ahead)"


def _body(record: LogRecord, name: str, options: MappingOptions) -> str:
    body = as_text(record.body)
    if name == "user_prompt" and not options.store_prompt_text and not body.endswith(name):
        return ""  # a client that puts the prompt itself in the body
    return body


def _enrich(name: str, row: Row, attrs: Attributes, options: MappingOptions) -> None:
    if name == "user_prompt":
        text = attrs.get("prompt") if attrs.get("prompt") is not None else attrs.get("prompt_text")
        if row["prompt_length"] is None and isinstance(text, str):
            row["prompt_length"] = len(text)
        row["prompt"] = as_text(text) if options.store_prompt_text else ""
    elif name in ("tool_result", "tool_decision"):
        server, tool = mcp_names(attrs.get("tool_parameters"))
        row["mcp_server_name"] = server
        row["mcp_tool_name"] = tool


def mcp_names(tool_parameters: Any) -> tuple[str, str]:
    """MCP server and tool names from `tool_parameters` (present with OTEL_LOG_TOOL_DETAILS=1)."""
    params = tool_parameters
    if isinstance(params, str) and params.startswith("{"):
        try:
            params = orjson.loads(params)
        except orjson.JSONDecodeError:
            return "", ""
    if not isinstance(params, dict):
        return "", ""
    server, tool = params.get("mcp_server_name"), params.get("mcp_tool_name")
    return (server if isinstance(server, str) else "", tool if isinstance(tool, str) else "")


def _point_row(point: MetricPoint, decoded: Decoded) -> Row:
    where = f"metric {point.metric_name!r}"
    origin = point.origin
    ident = identity(point.attributes, origin, decoded, where)
    del ident["prompt_id"], ident["event_sequence"]

    def checked(value: int | None, low: int, high: int) -> int | None:
        if value is None or low <= value <= high:
            return value
        decoded.note(f"{where}: integer out of range, stored as NULL")
        return None

    def finite(value: float | None, name: str) -> float | None:
        if value is None or math.isfinite(value):
            return value
        decoded.note(f"{where}: {name}: not a finite number, stored as NULL")
        return None

    buckets = [checked(c, 0, UINT64_MAX) for c in point.bucket_counts]
    return {
        **ident,
        "point_key": record_hash(
            origin.resource, origin.scope_name, point.metric_name, point.kind, point.attributes,
            point.start_time_unix_nano, point.time_unix_nano,
        ),
        "metric_name": point.metric_name,
        "description": point.description,
        "unit": point.unit,
        "metric_type": point.kind,
        "temporality": point.temporality,
        "is_monotonic": point.is_monotonic,
        "start_time": _time(point.start_time_unix_nano, decoded, where),
        "time": _time(point.time_unix_nano, decoded, where),
        "value": finite(point.value_double, "value"),
        "value_int": checked(point.value_int, -INT64_MAX - 1, INT64_MAX),
        "count": checked(point.count, 0, UINT64_MAX),
        "sum": finite(point.sum, "sum"),
        "min": finite(point.min, "min"),
        "max": finite(point.max, "max"),
        "bucket_counts": [c if c is not None else 0 for c in buckets],
        "explicit_bounds": point.explicit_bounds,
        "extra_json": as_text(point.extra) if point.extra else "",
        "flags": point.flags if 0 <= point.flags <= 0xFFFFFFFF else 0,
        "scope_name": origin.scope_name,
        "scope_version": origin.scope_version,
        "attributes": string_map(point.attributes),
    }


def _span_row(span: Span, decoded: Decoded, options: MappingOptions) -> Row:
    where = f"span {span.name!r}"
    origin = span.origin
    attrs = span.attributes
    ident = identity(attrs, origin, decoded, where)
    kept = attrs if options.store_prompt_text else {k: v for k, v in attrs.items() if k not in CONTENT_KEYS}
    start = _time(span.start_time_unix_nano, decoded, where)
    end = _time(span.end_time_unix_nano, decoded, where)
    return {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "trace_state": span.trace_state,
        "name": span.name,
        "kind": span.kind if 0 <= span.kind <= 255 else 0,
        "start_time": start,
        "end_time": end,
        "duration_ns": end - start if end >= start else 0,
        "status_code": span.status_code if 0 <= span.status_code <= 255 else 0,
        "status_message": span.status_message,
        "flags": span.flags if 0 <= span.flags <= 0xFFFFFFFF else 0,
        "session_id": ident["session_id"],
        "user_id": ident["user_id"],
        "app_version": ident["app_version"],
        "service_name": ident["service_name"],
        "scope_name": origin.scope_name,
        "scope_version": origin.scope_version,
        "attributes": string_map(kept),
        "attributes_json": as_text(kept),
        "events_json": as_text(span.events) if span.events else "",
        "links_json": as_text(span.links) if span.links else "",
        "resource_attributes": ident["resource_attributes"],
    }
