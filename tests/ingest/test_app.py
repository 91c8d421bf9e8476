"""OTLP/HTTP routes end to end: real captured Claude Code bodies POSTed to a real aiohttp server, stored by
the real Writer in embedded chDB, asserted row by row against values read from the capture (C15-C20)."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from ingest.app import OtlpSettings, encode_status
from ingest.claude_code import TABLES
from store.errors import StoreUnavailable, WriterBusy
from store.writer import Writer
from tests.ingest.conftest import (
    ClientFactory,
    attrs,
    capture,
    capture_doc,
    events_named,
    expected_logs,
    expected_points,
    gz,
)

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
API_COLUMNS = (
    "model, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cache_creation_5m_tokens, "
    "cache_creation_1h_tokens, cost_usd, cost_usd_micros, duration_ms, ttft_ms, request_id, query_source, "
    "speed, effort, mcp_server_name, mcp_tool_name, session_id, prompt_id, event_sequence, user_id, "
    "app_version, terminal_type, service_name, resource_attributes, event_key, "
    "toUnixTimestamp64Nano(event_time) AS t, toUnixTimestamp64Nano(observed_time) AS ot"
)
SCENARIOS = [("s1_protobuf", PROTOBUF), ("s2_json", JSON)]


def api_expectation(event: dict[str, Any]) -> dict[str, Any]:
    a = event["attrs"]
    return {
        "model": a["model"],
        **{k: a[k] for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
                             "cache_creation_5m_tokens", "cache_creation_1h_tokens", "cost_usd_micros",
                             "duration_ms", "ttft_ms")},
        "cost_usd": a["cost_usd"],
        "request_id": a["request_id"],
        "query_source": a["query_source"],
        "speed": a["speed"],
        "effort": a["effort"],
        "mcp_server_name": a.get("mcp_server.name", ""),
        "mcp_tool_name": a.get("mcp_tool.name", ""),
        "session_id": a["session.id"],
        "prompt_id": a["prompt.id"],
        "event_sequence": a["event.sequence"],
        "user_id": a["user.id"],
        "app_version": event["resource"]["service.version"],
        "terminal_type": a["terminal.type"],
        "service_name": event["resource"]["service.name"],
        "resource_attributes": {k: str(v) for k, v in event["resource"].items()},
        "event_key": f"req:{a['request_id']}",
        "t": event["time"],
        "ot": event["observed"],
    }


@pytest.mark.parametrize(("scenario", "headers"), SCENARIOS)
@pytest.mark.parametrize("compressed", [False, True])
async def test_captured_logs_become_typed_api_request_rows_field_by_field(
    otlp_client: ClientFactory, stored: Any, scenario: str, headers: dict[str, str], compressed: bool
) -> None:
    body = capture(scenario, "0001_logs")
    send = {**headers, "Content-Encoding": "gzip"} if compressed else headers
    client = await otlp_client()
    response = await client.post("/v1/logs", data=gz(body) if compressed else body, headers=send)
    assert response.status == 200
    doc = capture_doc(scenario, "0001_logs")
    expected = sorted((api_expectation(e) for e in events_named(doc, "api_request")), key=lambda r: r["t"])
    rows = await stored("cc_api_requests", API_COLUMNS, order="t")
    assert len(rows) == len(expected) > 0
    for row, want in zip(rows, expected, strict=True):
        assert row == want


@pytest.mark.parametrize(("scenario", "headers"), SCENARIOS)
async def test_every_captured_event_lands_raw_and_typed_tables_get_their_events(
    otlp_client: ClientFactory, stored: Any, scenario: str, headers: dict[str, str]
) -> None:
    client = await otlp_client()
    response = await client.post("/v1/logs", data=capture(scenario, "0001_logs"), headers=headers)
    assert response.status == 200
    events = expected_logs(capture_doc(scenario, "0001_logs"))
    raw = await stored("cc_events_raw", "event_name, event_sequence, attributes", order="event_sequence")
    assert [(r["event_name"], r["event_sequence"]) for r in raw] == sorted(
        ((e["attrs"]["event.name"], e["attrs"]["event.sequence"]) for e in events), key=lambda p: p[1]
    )
    for row in raw:
        assert "prompt" not in row["attributes"] and "prompt_text" not in row["attributes"]
    for name, table in [("user_prompt", "cc_user_prompts"), ("tool_result", "cc_tool_results"),
                        ("tool_decision", "cc_tool_decisions")]:
        assert len(await stored(table, "event_key")) == len(events_named(
            capture_doc(scenario, "0001_logs"), name))


async def test_captured_tool_results_keep_sizes_and_mcp_names_from_tool_parameters(
    otlp_client: ClientFactory, stored: Any
) -> None:
    client = await otlp_client()
    assert (await client.post("/v1/logs", data=capture("s1_protobuf", "0001_logs"), headers=PROTOBUF)).status == 200
    expected = []
    for e in events_named(capture_doc("s1_protobuf", "0001_logs"), "tool_result"):
        a = e["attrs"]
        params = orjson.loads(a["tool_parameters"]) if "tool_parameters" in a else {}
        expected.append({
            "tool_name": a["tool_name"], "tool_use_id": a["tool_use_id"], "success": a["success"] == "true",
            "duration_ms": int(a["duration_ms"]), "tool_input_size_bytes": int(a["tool_input_size_bytes"]),
            "tool_result_size_bytes": int(a["tool_result_size_bytes"]),
            "mcp_server_scope": a.get("mcp_server_scope", ""), "tool_parameters": a.get("tool_parameters", ""),
            "mcp_server_name": params.get("mcp_server_name", ""), "mcp_tool_name": params.get("mcp_tool_name", ""),
            "prompt_id": a["prompt.id"], "event_sequence": a["event.sequence"],
        })
    rows = await stored("cc_tool_results", ", ".join(expected[0]), order="event_sequence")
    assert rows == sorted(expected, key=lambda r: r["event_sequence"])
    assert any(r["mcp_tool_name"] for r in rows)


async def test_user_prompt_keeps_length_and_drops_text_unless_enabled(
    otlp_client: ClientFactory, stored: Any
) -> None:
    prompt = events_named(capture_doc("s1_protobuf", "0001_logs"), "user_prompt")[0]["attrs"]
    client = await otlp_client()
    assert (await client.post("/v1/logs", data=capture("s1_protobuf", "0001_logs"), headers=PROTOBUF)).status == 200
    rows = await stored("cc_user_prompts", "prompt_length, prompt, message_uuid")
    assert rows == [{"prompt_length": int(prompt["prompt_length"]), "prompt": "",
                     "message_uuid": prompt["message.uuid"]}]


async def test_user_prompt_text_is_stored_when_the_config_enables_it(
    otlp_client: ClientFactory, stored: Any
) -> None:
    prompt = events_named(capture_doc("s2_json", "0001_logs"), "user_prompt")[0]["attrs"]
    client = await otlp_client(OtlpSettings(store_prompt_text=True))
    assert (await client.post("/v1/logs", data=capture("s2_json", "0001_logs"), headers=JSON)).status == 200
    rows = await stored("cc_user_prompts", "prompt")
    assert rows == [{"prompt": prompt["prompt"]}]


@pytest.mark.parametrize(("scenario", "headers"), SCENARIOS)
async def test_metrics_body_lands_as_data_points_with_temporality(
    otlp_client: ClientFactory, stored: Any, scenario: str, headers: dict[str, str]
) -> None:
    client = await otlp_client()
    response = await client.post("/v1/metrics", data=capture(scenario, "0002_metrics"), headers=headers)
    assert response.status == 200
    expected = expected_points(capture_doc(scenario, "0002_metrics"))
    rows = await stored("cc_metric_points", "metric_name, unit, temporality, value, value_int, attributes, "
                        "toUnixTimestamp64Nano(time) AS t, session_id")
    assert len(rows) == len(expected)
    got = sorted((r["metric_name"], r["t"], sorted(r["attributes"].items()), r["value"]) for r in rows)
    want = sorted((p["name"], p["time"], sorted((k, _text(v)) for k, v in p["attrs"].items()), float(p["value"]))
                  for p in expected)
    assert got == want
    assert {r["temporality"] for r in rows} == {"delta"}
    assert all(r["session_id"] for r in rows)


def cumulative_metrics(encoding: str) -> bytes:
    """s1's metrics (protobuf) or s2's (JSON) with every sum's temporality set to cumulative."""
    if encoding == "protobuf":
        request = ExportMetricsServiceRequest.FromString(capture("s1_protobuf", "0002_metrics"))
        for metric in (m for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics):
            assert metric.WhichOneof("data") == "sum"
            metric.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
        return request.SerializeToString()
    doc = capture_doc("s2_json", "0002_metrics")
    for metric in (m for rm in doc["resourceMetrics"] for sm in rm["scopeMetrics"] for m in sm["metrics"]):
        metric["sum"]["aggregationTemporality"] = "AGGREGATION_TEMPORALITY_CUMULATIVE"
    return orjson.dumps(doc)


@pytest.mark.parametrize(("encoding", "scenario", "headers"),
                         [("protobuf", "s1_protobuf", PROTOBUF), ("json", "s2_json", JSON)])
async def test_a_cumulative_metrics_body_lands_with_temporality_cumulative(
    otlp_client: ClientFactory, stored: Any, encoding: str, scenario: str, headers: dict[str, str]
) -> None:
    client = await otlp_client()
    response = await client.post("/v1/metrics", data=cumulative_metrics(encoding), headers=headers)
    assert response.status == 200
    expected = expected_points(capture_doc(scenario, "0002_metrics"))
    rows = await stored("cc_metric_points", "metric_name, temporality, value, toUnixTimestamp64Nano(time) AS t")
    assert sorted((r["metric_name"], r["t"], r["value"], r["temporality"]) for r in rows) == sorted(
        (p["name"], p["time"], float(p["value"]), "cumulative") for p in expected)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


SPAN_KINDS = {"SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2, "SPAN_KIND_CLIENT": 3,
              "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5}
STATUS_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
PROMPT_KEYS = {"prompt", "prompt_text", "response", "user_prompt"}  # dropped by default (docs/ingest.md, Privacy)
SPAN_COLUMNS = (
    "trace_id, span_id, parent_span_id, trace_state, name, kind, toUnixTimestamp64Nano(start_time) AS start, "
    "toUnixTimestamp64Nano(end_time) AS end, duration_ns, status_code, status_message, flags, session_id, user_id, "
    "app_version, service_name, scope_name, scope_version, attributes, attributes_json, events_json, links_json, "
    "resource_attributes"
)


def traces_with_status_and_link() -> bytes:
    """s3's traces in OTLP/JSON with an error status on the first span and a link from the second to it (the
    capture has neither)."""
    doc = capture_doc("s3_traces", "0001_traces")
    first, second = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][:2]
    first["status"] = {"code": "STATUS_CODE_ERROR", "message": "tool failed"}
    second["links"] = [{"traceId": first["traceId"], "spanId": first["spanId"], "traceState": "k=v",
                        "attributes": [{"key": "link.kind", "value": {"stringValue": "follows"}}]}]
    return orjson.dumps(doc)


def span_expectation(span: dict[str, Any], resource: dict[str, Any], scope: dict[str, Any]) -> dict[str, Any]:
    """A stored cc_spans row as the capture's decoded JSON says it should be."""
    a = {k: v for k, v in attrs(span["attributes"]).items() if k not in PROMPT_KEYS}
    start, end = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
    events = [{"time_unix_nano": int(e["timeUnixNano"]), "name": e["name"],
               "attributes": attrs(e.get("attributes", []))} for e in span.get("events", [])]
    links = [{"trace_id": k["traceId"], "span_id": k["spanId"], "trace_state": k.get("traceState", ""),
              "attributes": attrs(k.get("attributes", []))} for k in span.get("links", [])]
    status = span.get("status", {})
    return {
        "trace_id": span["traceId"], "span_id": span["spanId"], "parent_span_id": span.get("parentSpanId", ""),
        "trace_state": span.get("traceState", ""), "name": span["name"], "kind": SPAN_KINDS[span["kind"]],
        "start": start, "end": end, "duration_ns": end - start,
        "status_code": STATUS_CODES[status.get("code", "STATUS_CODE_UNSET")],
        "status_message": status.get("message", ""), "flags": span.get("flags", 0),
        "session_id": a.get("session.id", resource.get("session.id", "")), "user_id": a.get("user.id", ""),
        "app_version": resource["service.version"], "service_name": resource["service.name"],
        "scope_name": scope["name"], "scope_version": scope["version"],
        "attributes": {k: map_text(v) for k, v in a.items()}, "attributes_json": a,
        "events_json": events, "links_json": links,
        "resource_attributes": {k: map_text(v) for k, v in resource.items()},
    }


def map_text(value: Any) -> str:
    """A value as a `Map(String, String)` column holds it: arrays as JSON text, the rest as `_text` writes it."""
    return orjson.dumps(value).decode() if isinstance(value, list | dict) else _text(value)


@pytest.mark.parametrize("body", ["captured protobuf", "json with status and link"])
async def test_traces_body_is_stored_raw_as_spans_field_by_field(
    otlp_client: ClientFactory, stored: Any, body: str
) -> None:
    doc = orjson.loads(traces_with_status_and_link()) if body.startswith("json") else capture_doc(
        "s3_traces", "0001_traces")
    expected = {s["spanId"]: span_expectation(s, attrs(rs["resource"]["attributes"]), ss["scope"])
                for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]}
    assert any(e["events_json"] for e in expected.values()) and any(e["attributes"] for e in expected.values())
    data, headers = ((traces_with_status_and_link(), JSON) if body.startswith("json")
                     else (capture("s3_traces", "0001_traces"), PROTOBUF))
    client = await otlp_client()
    response = await client.post("/v1/traces", data=data, headers=headers)
    assert response.status == 200
    rows = await stored("cc_spans", SPAN_COLUMNS)
    decoded = [{**r, **{k: orjson.loads(r[k]) if r[k] else [] for k in ("events_json", "links_json")},
                "attributes_json": orjson.loads(r["attributes_json"])} for r in rows]
    assert {r["span_id"]: r for r in decoded} == expected
    assert len(rows) == len(expected)


RAW_BODIES = [("s1_protobuf", "0001_logs"), ("s4_two_turns_stream", "0005_logs")]  # every kind of event between them


async def test_raw_event_rows_keep_every_attribute_of_every_kind_of_event_as_captured(
    otlp_client: ClientFactory, stored: Any
) -> None:
    client = await otlp_client()
    expected = {}
    for scenario, name in RAW_BODIES:
        assert (await client.post("/v1/logs", data=capture(scenario, name), headers=PROTOBUF)).status == 200
        doc = capture_doc(scenario, name)
        [scope] = [sl["scope"] for rl in doc["resourceLogs"] for sl in rl["scopeLogs"]]
        for event in expected_logs(doc):
            a = {k: v for k, v in event["attrs"].items() if k not in PROMPT_KEYS}
            expected[(a["session.id"], a["event.sequence"])] = {
                "event_name": a["event.name"], "body": event["body"], "t": event["time"], "ot": event["observed"],
                "trace_id": event["trace_id"], "scope_name": scope["name"], "scope_version": scope["version"],
                "attributes": {k: map_text(v) for k, v in a.items()}, "attributes_json": a,
                "resource_attributes": {k: map_text(v) for k, v in event["resource"].items()}}
    assert {e["event_name"] for e in expected.values()} == {
        "managed_settings_resolved", "plugin_loaded", "mcp_server_connection", "user_prompt", "tool_decision",
        "tool_result", "api_request", "assistant_response", "retention_sweep"}
    rows = await stored("cc_events_raw", "session_id, event_sequence, event_name, body, trace_id, scope_name, "
                        "scope_version, attributes, attributes_json, resource_attributes, "
                        "toUnixTimestamp64Nano(event_time) AS t, toUnixTimestamp64Nano(observed_time) AS ot")
    got = {(r.pop("session_id"), r.pop("event_sequence")): {**r, "attributes_json": orjson.loads(r["attributes_json"])}
           for r in rows}
    assert got == expected
    assert len(rows) == len(expected)


# --- C15 -------------------------------------------------------------------------------------------

def one_api_request_body() -> bytes:
    """A protobuf logs body holding only the first captured api_request record."""
    request = ExportLogsServiceRequest()
    request.ParseFromString(capture("s1_protobuf", "0001_logs"))
    scope_logs = request.resource_logs[0].scope_logs[0]
    keep = next(r for r in scope_logs.log_records if r.body.string_value == "claude_code.api_request")
    kept = type(keep)()
    kept.CopyFrom(keep)
    del scope_logs.log_records[:]
    scope_logs.log_records.append(kept)
    return request.SerializeToString()


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_c15_chunked_body_in_two_chunks_without_length_gives_one_typed_row(
    otlp_client: ClientFactory, stored: Any
) -> None:
    body = one_api_request_body()
    client = await otlp_client()
    half = len(body) // 2
    response = await client.post("/v1/logs", data=chunks(body[:half], body[half:]), headers=PROTOBUF)
    assert response.status == 200
    assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.request_info.headers
    assert len(await stored("cc_api_requests", "event_key")) == 1


async def test_c15_chunked_body_past_the_cap_is_refused_while_reading(
    otlp_client: ClientFactory, stored: Any
) -> None:
    body = capture("s1_protobuf", "0001_logs")
    client = await otlp_client(OtlpSettings(max_body_bytes=len(body) - 1))
    response = await client.post("/v1/logs", data=chunks(body[:100], body[100:]), headers=PROTOBUF)
    assert response.status == 413
    assert await stored("cc_events_raw", "event_key") == []


# --- C16, C17 ------------------------------------------------------------------------------------------

def api_record(seq: int, cost: dict[str, Any], tokens: dict[str, Any], time: Any) -> dict[str, Any]:
    return {
        "timeUnixNano": time,
        "body": {"stringValue": "claude_code.api_request"},
        "attributes": [
            {"key": "event.name", "value": {"stringValue": "api_request"}},
            {"key": "session.id", "value": {"stringValue": "s-c16"}},
            {"key": "event.sequence", "value": {"intValue": seq}},
            {"key": "request_id", "value": {"stringValue": f"req_{seq}"}},
            {"key": "model", "value": {"stringValue": "claude-opus-5-5"}},
            {"key": "cost_usd", "value": cost},
            {"key": "input_tokens", "value": tokens},
        ],
    }


def logs_json(records: Sequence[dict[str, Any]]) -> bytes:
    resource = {"attributes": [{"key": "service.version", "value": {"stringValue": "2.1.100"}}]}
    return orjson.dumps({"resourceLogs": [{"resource": resource, "scopeLogs": [{"logRecords": list(records)}]}]})


T0 = 1796322543600000000


async def test_c16_numbers_as_strings_or_numbers_give_the_same_typed_values(
    otlp_client: ClientFactory, stored: Any
) -> None:
    body = logs_json([
        api_record(1, {"stringValue": "0.0123"}, {"stringValue": "1200"}, str(T0)),
        api_record(2, {"doubleValue": 0.0123}, {"intValue": 1200}, T0 + 1),
        api_record(3, {"doubleValue": 0.0123}, {"intValue": "1200"}, str(T0 + 2)),
    ])
    client = await otlp_client()
    response = await client.post("/v1/logs", data=body, headers=JSON)
    assert response.status == 200
    assert await response.json() == {}
    rows = await stored("cc_api_requests", "cost_usd, input_tokens, app_version, toUnixTimestamp64Nano(event_time) t",
                        order="t")
    assert rows == [{"cost_usd": 0.0123, "input_tokens": 1200, "app_version": "2.1.100", "t": T0 + i}
                    for i in range(3)]


async def test_a_record_without_time_takes_its_observed_time_else_the_latest_time_of_its_body(
    otlp_client: ClientFactory, stored: Any
) -> None:
    untimed = api_record(1, {"doubleValue": 0.5}, {"intValue": 10}, None)
    del untimed["timeUnixNano"]
    observed = {**api_record(2, {"doubleValue": 0.5}, {"intValue": 10}, None), "observedTimeUnixNano": str(T0)}
    del observed["timeUnixNano"]
    later = api_record(3, {"doubleValue": 0.5}, {"intValue": 10}, str(T0 + 5_000))
    client = await otlp_client()
    before = time.time_ns() // 1000
    response = await client.post("/v1/logs", data=logs_json([untimed, observed, later]), headers=JSON)
    after = time.time_ns() // 1000
    assert response.status == 200
    rows = await stored("cc_api_requests", "event_sequence, toUnixTimestamp64Nano(event_time) AS t, "
                        "toUnixTimestamp64Micro(observed_time) AS ot, toUnixTimestamp64Micro(ingested_at) AS i",
                        order="event_sequence")
    assert [(r["event_sequence"], r["t"]) for r in rows] == [(1, T0 + 5_000), (2, T0), (3, T0 + 5_000)]
    assert [r["ot"] for r in rows[1:]] == [T0 // 1000, (T0 + 5_000) // 1000]
    assert before <= rows[0]["ot"] == rows[0]["i"] <= after  # the untimed one: observed when it arrived


async def test_an_unusable_time_falls_back_to_the_observed_time_then_the_receive_time_and_says_so(
    otlp_client: ClientFactory, stored: Any
) -> None:
    year_3000 = str(32_503_680_000 * 10**9)  # past Int64 nanoseconds and DateTime64(9)
    times: list[tuple[Any, Any]] = [(None, None), ("abc", None), (year_3000, None), ("0", None),
                                    (str(946_684_799 * 10**9), None),  # 1999-12-31
                                    ("abc", str(T0)), (str(7_258_118_400 * 10**9), str(T0 + 1)),  # 2200
                                    (None, str(T0 + 2))]
    records = []
    for seq, (own, observed) in enumerate(times):
        record = {k: v for k, v in api_record(seq, {"doubleValue": 0.5}, {"intValue": 10}, own).items()
                  if v is not None}
        records.append({**record, "observedTimeUnixNano": observed} if observed else record)
    client = await otlp_client()
    response = await client.post("/v1/logs", data=logs_json(records), headers=JSON)
    assert response.status == 200
    message = (await response.json())["partialSuccess"]["errorMessage"]
    assert f"{len(times)} record(s) without a usable timeUnixNano dated by a fallback" in message
    assert message.startswith("3 invalid value(s) stored as NULL")  # the two "abc" and the year 3000
    rows = await stored("cc_api_requests", "event_sequence, toUnixTimestamp64Nano(event_time) AS t",
                        order="event_sequence")
    dated = [r["t"] for r in rows]
    # The untimed ones take the latest time of their body (T0 + 2); alone in a body, the receive time.
    assert dated == [T0 + 2] * 5 + [T0, T0 + 1, T0 + 2]
    alone = api_record(99, {"doubleValue": 0.5}, {"intValue": 10}, "abc")
    before = time.time_ns() // 1000 * 1000
    assert (await client.post("/v1/logs", data=logs_json([alone]), headers=JSON)).status == 200
    after = time.time_ns()
    (row,) = await stored("cc_api_requests", "toUnixTimestamp64Nano(event_time) AS t", where="event_sequence = 99")
    assert before <= row["t"] <= after


def untimed_metrics_and_traces() -> dict[str, bytes]:
    """A metrics body whose point and a traces body whose span carry no times (and the span no ids)."""
    resource = {"attributes": [{"key": "session.id", "value": {"stringValue": "s-untimed"}}]}
    point = {"asInt": "3", "attributes": [{"key": "type", "value": {"stringValue": "input"}}]}
    metric = {"name": "claude_code.token.usage", "unit": "tokens",
              "sum": {"aggregationTemporality": 1, "isMonotonic": True, "dataPoints": [point]}}
    span = {"name": "claude_code.interaction", "kind": 1}
    return {
        "/v1/metrics": orjson.dumps({"resourceMetrics": [
            {"resource": resource, "scopeMetrics": [{"metrics": [metric]}]}]}),
        "/v1/traces": orjson.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}),
    }


@pytest.mark.parametrize("bodies", ["captured", "untimed"])
async def test_c20_metrics_and_traces_bodies_delivered_twice_are_stored_once(
    otlp_client: ClientFactory, store: Any, writer: Writer, stored: Any, bodies: str
) -> None:
    posts = {"/v1/metrics": (capture("s1_protobuf", "0002_metrics"), PROTOBUF),
             "/v1/traces": (capture("s3_traces", "0001_traces"), PROTOBUF)} if bodies == "captured" else {
        path: (body, JSON) for path, body in untimed_metrics_and_traces().items()}
    client = await otlp_client()
    for path, (body, headers) in posts.items():
        for _ in range(2):
            assert (await client.post(path, data=body, headers=headers)).status == 200
            await writer.flush()
    metrics_doc, traces_doc = (capture_doc("s1_protobuf", "0002_metrics"), capture_doc("s3_traces", "0001_traces"))
    expected = {"cc_metric_points": len(expected_points(metrics_doc)) if bodies == "captured" else 1,
                "cc_spans": sum(len(ss["spans"]) for rs in traces_doc["resourceSpans"] for ss in rs["scopeSpans"])
                if bodies == "captured" else 1}
    assert await raw_counts(store, list(expected)) == {table: 2 * n for table, n in expected.items()}
    assert {table: len(await stored(table, "ingested_at")) for table in expected} == expected


async def test_c16_int64_values_decode_exactly_never_through_a_float(
    otlp_client: ClientFactory, stored: Any
) -> None:
    big = 2**62 + 1  # not representable as a float
    body = logs_json([api_record(1, {"doubleValue": 1.0}, {"intValue": str(big)}, T0),
                      api_record(2, {"doubleValue": 1.0}, {"intValue": big}, T0 + 1)])
    client = await otlp_client()
    assert (await client.post("/v1/logs", data=body, headers=JSON)).status == 200
    assert [r["input_tokens"] for r in await stored("cc_api_requests", "input_tokens")] == [big, big]


async def test_c17_one_bad_value_is_stored_as_null_and_reported_as_partial_success(
    otlp_client: ClientFactory, stored: Any
) -> None:
    body = logs_json([
        api_record(1, {"doubleValue": 0.5}, {"intValue": 10}, T0),
        api_record(2, {"doubleValue": {}}, {"intValue": 20}, T0 + 1),
        api_record(3, {"doubleValue": 0.25}, {"intValue": 30}, T0 + 2),
    ])
    client = await otlp_client()
    response = await client.post("/v1/logs", data=body, headers=JSON)
    assert response.status == 200
    partial = (await response.json())["partialSuccess"]
    assert partial["rejectedLogRecords"] == 0
    assert "1 invalid value" in partial["errorMessage"] and "cost_usd" in partial["errorMessage"]
    rows = await stored("cc_api_requests", "event_sequence, cost_usd, input_tokens", order="event_sequence")
    assert rows == [{"event_sequence": 1, "cost_usd": 0.5, "input_tokens": 10},
                    {"event_sequence": 2, "cost_usd": None, "input_tokens": 20},
                    {"event_sequence": 3, "cost_usd": 0.25, "input_tokens": 30}]


# (attribute, AnyValue, column that must be NULL): values no column may hold for that quantity.
UNSTORABLE = [
    ("cost_usd", {"doubleValue": 1e300}, "cost_usd"),  # micro-USD would overflow Int64
    ("cost_usd", {"doubleValue": 9223372036854.775}, "cost_usd"),  # (2^63-1)/10^6 as a float: 2^63 micros
    ("cost_usd", {"doubleValue": -3.5}, "cost_usd"),
    ("cost_usd", {"stringValue": "-5"}, "cost_usd"),
    ("cost_usd", {"doubleValue": "Infinity"}, "cost_usd"),
    ("cost_usd", {"stringValue": "NaN"}, "cost_usd"),
    ("input_tokens", {"stringValue": "-100"}, "input_tokens"),
    ("input_tokens", {"intValue": "-1"}, "input_tokens"),
    ("input_tokens", {"stringValue": "1e30"}, "input_tokens"),
    ("cost_usd_micros", {"intValue": "9223372036854775808"}, "cost_usd_micros"),
    ("cost_usd_micros", {"intValue": -7}, "cost_usd_micros"),
    ("duration_ms", {"intValue": -20}, "duration_ms"),
    ("ttft_ms", {"doubleValue": -1.0}, "ttft_ms"),
    ("cache_read_tokens", {"doubleValue": 1e300}, "cache_read_tokens"),
]


async def test_values_a_column_cannot_hold_are_null_counted_and_named_and_the_rest_is_kept(
    otlp_client: ClientFactory, stored: Any
) -> None:
    from ingest.app import OTLP_STATS

    records = [api_record(0, {"doubleValue": 0.5}, {"intValue": 10}, T0)]
    for seq, (attribute, value, _) in enumerate(UNSTORABLE, start=1):
        record = api_record(seq, {"doubleValue": 0.5}, {"intValue": 10}, T0 + seq)
        record["attributes"] = [kv for kv in record["attributes"] if kv["key"] != attribute]
        record["attributes"].append({"key": attribute, "value": value})
        records.append(record)
    client = await otlp_client()
    response = await client.post("/v1/logs", data=logs_json(records), headers=JSON)
    assert response.status == 200
    partial = (await response.json())["partialSuccess"]
    assert partial["rejectedLogRecords"] == 0
    assert partial["errorMessage"].startswith(f"{len(UNSTORABLE)} invalid value(s) stored as NULL")
    assert "'cost_usd': cost out of range" in partial["errorMessage"]
    assert "'cost_usd': negative cost" in partial["errorMessage"]
    assert client.app[OTLP_STATS].snapshot()["invalid_values"] == {"logs": len(UNSTORABLE)}
    rows = await stored("cc_api_requests", "event_sequence, cost_usd, input_tokens, cost_usd_micros, duration_ms, "
                        "ttft_ms, cache_read_tokens", order="event_sequence")
    assert len(rows) == len(records)
    assert rows[0] == {"event_sequence": 0, "cost_usd": 0.5, "input_tokens": 10, "cost_usd_micros": None,
                       "duration_ms": None, "ttft_ms": None, "cache_read_tokens": None}
    for row, (attribute, value, column) in zip(rows[1:], UNSTORABLE, strict=True):
        assert row[column] is None, (attribute, value)
        kept = {"cost_usd": 0.5, "input_tokens": 10}
        assert {k: row[k] for k in kept if k != column} == {k: v for k, v in kept.items() if k != column}


async def test_negative_sizes_and_non_finite_metric_values_are_null_and_counted(
    otlp_client: ClientFactory, stored: Any
) -> None:
    tool = {"timeUnixNano": str(T0), "attributes": [
        {"key": "event.name", "value": {"stringValue": "tool_result"}},
        {"key": "session.id", "value": {"stringValue": "s-sizes"}},
        {"key": "event.sequence", "value": {"intValue": 1}},
        {"key": "tool_result_size_bytes", "value": {"intValue": -4096}},
        {"key": "tool_input_size_bytes", "value": {"intValue": 12}},
        {"key": "duration_ms", "value": {"stringValue": "-3"}}]}
    point = {"timeUnixNano": str(T0), "asDouble": "NaN"}
    histogram = {"timeUnixNano": str(T0 + 1), "count": "2", "sum": "Infinity", "min": 1.0, "max": "-Infinity"}
    metrics = orjson.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [
        {"name": "g", "gauge": {"dataPoints": [point]}},
        {"name": "h", "histogram": {"dataPoints": [histogram]}}]}]}]})
    client = await otlp_client()
    logs_answer = await client.post("/v1/logs", data=logs_json([tool]), headers=JSON)
    metrics_answer = await client.post("/v1/metrics", data=metrics, headers=JSON)
    assert "2 invalid value(s)" in (await logs_answer.json())["partialSuccess"]["errorMessage"]
    assert "3 invalid value(s)" in (await metrics_answer.json())["partialSuccess"]["errorMessage"]
    assert await stored("cc_tool_results", "tool_result_size_bytes, tool_input_size_bytes, duration_ms") == [
        {"tool_result_size_bytes": None, "tool_input_size_bytes": 12, "duration_ms": None}]
    assert await stored("cc_metric_points", "metric_name, value, sum, min, max", order="metric_name") == [
        {"metric_name": "g", "value": None, "sum": None, "min": None, "max": None},
        {"metric_name": "h", "value": None, "sum": None, "min": 1.0, "max": None}]


async def test_c17_partial_success_is_answered_in_protobuf_for_protobuf_requests(
    otlp_client: ClientFactory, stored: Any
) -> None:
    request = ExportLogsServiceRequest()
    request.ParseFromString(one_api_request_body())
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    for kv in record.attributes:
        if kv.key == "input_tokens":
            kv.value.string_value = "many"
    client = await otlp_client()
    response = await client.post("/v1/logs", data=request.SerializeToString(), headers=PROTOBUF)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/x-protobuf"
    answer = ExportLogsServiceResponse.FromString(await response.read())
    assert answer.partial_success.rejected_log_records == 0
    assert "input_tokens" in answer.partial_success.error_message
    assert [r["input_tokens"] for r in await stored("cc_api_requests", "input_tokens")] == [None]


# --- C18 ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("content_type", "encoding", "status"),
    [
        ("application/json; charset=utf-8", None, 200),
        ("Application/JSON", None, 200),
        ("application/json", "gzip", 200),
        ("APPLICATION/X-PROTOBUF", None, 200),
        ("application/x-protobuf", "GZIP", 200),
        ("text/plain", None, 415),
        ("application/json", "br", 415),
    ],
)
async def test_c18_media_type_and_encoding_variants(
    otlp_client: ClientFactory, stored: Any, content_type: str, encoding: str | None, status: int
) -> None:
    body = capture("s2_json" if "json" in content_type.lower() else "s1_protobuf", "0001_logs")
    headers = {"Content-Type": content_type}
    if encoding:
        headers["Content-Encoding"] = encoding
        body = gz(body) if encoding.lower() == "gzip" else body
    client = await otlp_client()
    response = await client.post("/v1/logs", data=body, headers=headers)
    assert response.status == status
    rows = await stored("cc_events_raw", "event_key")
    assert (len(rows) > 0) == (status == 200)


async def test_c18_gzip_and_chunked_together_is_accepted(otlp_client: ClientFactory, stored: Any) -> None:
    body = gz(capture("s1_protobuf", "0001_logs"))
    client = await otlp_client()
    response = await client.post("/v1/logs", data=chunks(body[:50], body[50:]),
                                 headers={**PROTOBUF, "Content-Encoding": "gzip"})
    assert response.status == 200
    assert len(await stored("cc_api_requests", "event_key")) == len(
        events_named(capture_doc("s1_protobuf", "0001_logs"), "api_request"))


async def test_c18_small_gzip_body_inflating_past_the_cap_gets_413_without_inflating_it(
    otlp_client: ClientFactory, stored: Any
) -> None:
    """A 64 MiB bomb in a 65 KB body: the answer is 413, and inflation stopped at the cap. The server runs in this
    process, so Python's allocations while it answers are traced: inflating the bomb whole (or in a few large
    steps) would peak at tens of MiB; stopping at cap + 1 bytes keeps the peak near a few times the cap."""
    cap = 100_000
    bomb = gz(b"\x00" * (64 << 20))
    client = await otlp_client(OtlpSettings(max_body_bytes=cap))
    assert len(bomb) < cap
    tracemalloc.start()
    try:
        response = await client.post("/v1/logs", data=bomb, headers={**PROTOBUF, "Content-Encoding": "gzip"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status == 413
    assert await response.read() == encode_status(3, f"body inflates past the {cap}-byte limit")
    assert peak < 10 * cap + 2 * len(bomb), peak  # measured 0.52 MB; 148 MB inflating whole
    assert await stored("cc_events_raw", "event_key") == []


async def test_c18_truncated_gzip_gets_400(otlp_client: ClientFactory, stored: Any) -> None:
    body = gz(capture("s1_protobuf", "0001_logs"))
    client = await otlp_client()
    response = await client.post("/v1/logs", data=body[: len(body) // 2],
                                 headers={**PROTOBUF, "Content-Encoding": "gzip"})
    assert response.status == 400
    assert response.headers["Content-Type"] == "application/x-protobuf"
    assert await response.read() == encode_status(3, "gzip body is truncated")
    assert await stored("cc_events_raw", "event_key") == []


# --- C19 ------------------------------------------------------------------------------------------------

async def test_c19_undecodable_protobuf_gets_400_with_a_status_message(
    otlp_client: ClientFactory, stored: Any
) -> None:
    client = await otlp_client()
    response = await client.post("/v1/logs", data=b"\x0a\xff\xff\xff\x0f{not protobuf", headers=PROTOBUF)
    assert response.status == 400
    assert b"ExportLogsServiceRequest" in await response.read()
    assert await stored("cc_events_raw", "event_key") == []


async def test_c19_undecodable_json_gets_400_in_json(otlp_client: ClientFactory, stored: Any) -> None:
    client = await otlp_client()
    response = await client.post("/v1/logs", data=b'{"resourceLogs": [', headers=JSON)
    assert response.status == 400
    status = await response.json()
    assert status["code"] == 3 and "not valid JSON" in status["message"]
    assert await stored("cc_events_raw", "event_key") == []


async def test_c19_writer_backlog_full_gets_429_with_retry_after(
    otlp_client: ClientFactory, store: Any, tmp_path: Any
) -> None:
    busy = Writer(store, tmp_path / "busy-spill", max_pending_rows=1, flush_seconds=3600.0)
    await busy.start()
    try:
        client = await otlp_client(writer_=busy)
        first = await client.post("/v1/logs", data=capture("s1_protobuf", "0001_logs"), headers=PROTOBUF)
        assert first.status == 200  # a body larger than the bound is still taken into an empty backlog
        response = await client.post("/v1/logs", data=capture("s1_protobuf", "0001_logs"), headers=PROTOBUF)
        assert response.status == 429
        assert int(response.headers["Retry-After"]) >= 1
        again = await client.post("/v1/logs", data=capture("s1_protobuf", "0001_logs"), headers=PROTOBUF)
        assert again.status == 429
    finally:
        await busy.stop()


async def raw_counts(store: Any, tables: Sequence[str]) -> dict[str, int]:
    """Rows per table as stored, copies included (no FINAL): a doubled write shows here."""
    return {t: (await store.query(f"SELECT count() AS n FROM {t}"))[0]["n"] for t in tables}


async def test_c19_a_body_the_writer_can_take_only_part_of_gets_429_and_leaves_no_row_behind(
    otlp_client: ClientFactory, store: Any, tmp_path: Any
) -> None:
    body, doc = capture("s1_protobuf", "0001_logs"), capture_doc("s1_protobuf", "0001_logs")
    expected = {"cc_events_raw": len(expected_logs(doc)), "cc_api_requests": len(events_named(doc, "api_request")),
                "cc_tool_results": len(events_named(doc, "tool_result"))}
    # One row already waits; room for the raw table's rows but not for the typed ones after them.
    writer = Writer(store, tmp_path / "part-spill", max_pending_rows=1 + expected["cc_events_raw"],
                    flush_seconds=3600.0)
    await writer.start()
    try:
        writer.submit("upstream_events", [{"event_id": "e-1", "upstream": "a", "kind": "start"}])
        client = await otlp_client(writer_=writer)
        refused = await client.post("/v1/logs", data=body, headers=PROTOBUF)
        assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
        assert writer.stats()["queued_rows"] == 1
        await writer.flush()
        assert await raw_counts(store, list(expected)) == dict.fromkeys(expected, 0)
        retried = await client.post("/v1/logs", data=body, headers=PROTOBUF)
        assert retried.status == 200
        await writer.flush()
        assert await raw_counts(store, list(expected)) == expected
    finally:
        await writer.stop()


async def test_c19_stopped_writer_gets_503_with_retry_after(
    otlp_client: ClientFactory, store: Any, tmp_path: Any
) -> None:
    stopped = Writer(store, tmp_path / "stopped-spill")
    client = await otlp_client(writer_=stopped)
    response = await client.post("/v1/metrics", data=capture("s2_json", "0002_metrics"), headers=JSON)
    assert response.status == 503
    assert "Retry-After" in response.headers
    assert (await response.json())["code"] == 14


class RefusingWriter:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def write_all(self, tables: Mapping[str, Sequence[dict[str, Any]]]) -> None:
        raise self.exc


@pytest.mark.parametrize(("exc", "status", "retry_after"), [
    (StoreUnavailable("connection refused", retry_after_seconds=7.2), 503, "8"),
    (WriterBusy(2.0, 1000), 429, "2"),
])
async def test_c19_store_errors_map_to_retryable_statuses(
    otlp_client: ClientFactory, exc: Exception, status: int, retry_after: str
) -> None:
    client = await otlp_client(writer_=RefusingWriter(exc))
    response = await client.post("/v1/logs", data=capture("s1_protobuf", "0001_logs"), headers=PROTOBUF)
    assert response.status == status
    assert response.headers["Retry-After"] == retry_after


# --- C20 ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("scenario", "headers"), SCENARIOS)
async def test_c20_same_export_twice_stores_one_row_per_event(
    otlp_client: ClientFactory, stored: Any, scenario: str, headers: dict[str, str]
) -> None:
    client = await otlp_client()
    for name, path in [("0001_logs", "/v1/logs"), ("0002_metrics", "/v1/metrics")]:
        for _ in range(2):
            assert (await client.post(path, data=capture(scenario, name), headers=headers)).status == 200
            await stored("cc_events_raw", "count()")  # flush between deliveries: two separate inserts
    doc = capture_doc(scenario, "0001_logs")
    assert len(await stored("cc_events_raw", "event_key")) == len(expected_logs(doc))
    assert len(await stored("cc_api_requests", "event_key")) == len(events_named(doc, "api_request"))
    assert len(await stored("cc_metric_points", "point_key")) == len(
        expected_points(capture_doc(scenario, "0002_metrics")))


async def test_c20_a_body_without_any_usable_time_delivered_twice_is_stored_once(
    otlp_client: ClientFactory, stored: Any
) -> None:
    # No record carries a usable time, so each is dated by its first receive time (its identity), which the
    # retry must get again; a record with api_request's request_id, one keyed by sequence, one by hash.
    keyed = {k: v for k, v in api_record(1, {"doubleValue": 0.5}, {"intValue": 10}, None).items() if v is not None}
    sequenced = {**keyed, "timeUnixNano": "abc", "attributes": [
        a for a in keyed["attributes"] if a["key"] not in ("request_id", "event.sequence")] + [
        {"key": "event.sequence", "value": {"intValue": 2}}]}
    hashed = {**sequenced, "timeUnixNano": "0", "attributes": [
        a for a in sequenced["attributes"] if a["key"] not in ("session.id", "event.sequence")]}
    body = logs_json([keyed, sequenced, hashed])
    client = await otlp_client()
    for _ in range(2):
        assert (await client.post("/v1/logs", data=body, headers=JSON)).status == 200
        await stored("cc_events_raw", "count()")  # flush between deliveries: two separate inserts
    keys = [r["event_key"] for r in await stored("cc_api_requests", "event_key", order="event_key")]
    assert len(keys) == len(set(keys)) == 3
    assert [key.split(":")[0] for key in keys] == ["hash", "req", "seq"]


# --- bad bodies, auth, stats ------------------------------------------------------------------------------

CAP = 64 * 1024  # the receiver's body cap in the bad-body tests: the valid capture fits, the bad ones do not


def bad_bodies() -> dict[str, tuple[bytes, dict[str, str], int]]:
    """name -> (body, headers, status) of bodies that must change nothing stored."""
    valid = capture("s1_protobuf", "0001_logs")
    gzipped = {**PROTOBUF, "Content-Encoding": "gzip"}
    return {
        "malformed protobuf": (b"\x0a\xff\xff\xff\x0f{not protobuf", PROTOBUF, 400),
        "malformed json": (b'{"resourceLogs": [', JSON, 400),
        "truncated gzip": (gz(valid)[:-8], gzipped, 400),
        "gzip inflating past the cap": (gz(b"\x00" * (4 * CAP)), gzipped, 413),
        "wrong content type": (valid, {"Content-Type": "text/plain"}, 415),
        "unsupported content encoding": (valid, {**PROTOBUF, "Content-Encoding": "br"}, 415),
        "oversized": (valid + b"\x00" * CAP, PROTOBUF, 413),
        "empty protobuf": (b"", PROTOBUF, 200),
        "empty json": (b"", JSON, 400),
    }


async def every_table_count(store: Any, writer: Writer) -> dict[str, int]:
    """Rows per telemetry table, copies included (no FINAL), after storing everything written."""
    await writer.flush()
    return {t: (await store.query(f"SELECT count() AS n FROM {t}"))[0]["n"] for t in TABLES}


@pytest.mark.parametrize("bad", list(bad_bodies()))
async def test_a_bad_body_after_a_good_one_gets_its_status_and_changes_no_count(
    otlp_client: ClientFactory, store: Any, writer: Writer, bad: str
) -> None:
    assert len(capture("s1_protobuf", "0001_logs")) < CAP
    client = await otlp_client(OtlpSettings(max_body_bytes=CAP))
    assert (await client.post("/v1/logs", data=capture("s1_protobuf", "0001_logs"), headers=PROTOBUF)).status == 200
    before = await every_table_count(store, writer)
    assert before["cc_events_raw"] == len(expected_logs(capture_doc("s1_protobuf", "0001_logs")))
    body, headers, status = bad_bodies()[bad]
    response = await client.post("/v1/logs", data=body, headers=headers)
    assert response.status == status
    assert "Retry-After" not in response.headers  # permanent: the exporter must not retry it
    assert await every_table_count(store, writer) == before


async def test_c19_a_signal_tollgate_does_not_store_gets_404_not_a_retryable_status(
    otlp_client: ClientFactory, store: Any, writer: Writer
) -> None:
    client = await otlp_client()
    before = await every_table_count(store, writer)
    response = await client.post("/v1/profiles", data=b"\x0a\x00", headers=PROTOBUF)
    assert response.status == 404  # OTLP/HTTP: not retried (only 429, 502, 503, 504 are)
    assert await every_table_count(store, writer) == before

async def test_oversized_body_with_content_length_gets_413(otlp_client: ClientFactory, stored: Any) -> None:
    body = capture("s1_protobuf", "0001_logs")
    client = await otlp_client(OtlpSettings(max_body_bytes=1000))
    response = await client.post("/v1/logs", data=body, headers=PROTOBUF)
    assert response.status == 413
    assert await stored("cc_events_raw", "event_key") == []


@pytest.mark.parametrize(("headers", "status"), [(PROTOBUF, 200), (JSON, 400)])
async def test_empty_body_stores_nothing(
    otlp_client: ClientFactory, stored: Any, headers: dict[str, str], status: int
) -> None:
    """An empty protobuf body is a valid empty export request; an empty JSON body is not JSON."""
    client = await otlp_client()
    response = await client.post("/v1/logs", data=b"", headers=headers)
    assert response.status == status
    assert await stored("cc_events_raw", "event_key") == []


async def test_bearer_token_is_required_when_configured(otlp_client: ClientFactory, stored: Any) -> None:
    client = await otlp_client(OtlpSettings(auth_tokens=("s3cret",)))
    body = capture("s1_protobuf", "0001_logs")
    refused = await client.post("/v1/logs", data=body, headers=PROTOBUF)
    assert refused.status == 401
    wrong = await client.post("/v1/logs", data=body, headers={**PROTOBUF, "Authorization": "Bearer nope"})
    assert wrong.status == 401
    assert await stored("cc_events_raw", "event_key") == []
    ok = await client.post("/v1/logs", data=body, headers={**PROTOBUF, "Authorization": "Bearer s3cret"})
    assert ok.status == 200


async def test_stats_count_accepted_records_and_refused_bodies(otlp_client: ClientFactory) -> None:
    from ingest.app import OTLP_STATS

    client = await otlp_client()
    await client.post("/v1/logs", data=capture("s1_protobuf", "0001_logs"), headers=PROTOBUF)
    await client.post("/v1/logs", data=b"x", headers={"Content-Type": "text/plain"})
    stats = client.app[OTLP_STATS].snapshot()
    assert stats["records_accepted"] == {"logs": len(expected_logs(capture_doc("s1_protobuf", "0001_logs")))}
    assert stats["requests"] == {"logs:200": 1, "logs:415": 1}
    assert stats["bad_bodies"] == {"415": 1}


async def test_gzip_still_works_when_the_hosting_server_inflates_bodies_itself(
    otlp_client: ClientFactory, stored: Any
) -> None:
    client = await otlp_client(raw_body=False)
    gzipped = {**PROTOBUF, "Content-Encoding": "gzip"}
    bad = await client.post("/v1/logs", data=b"not gzip at all", headers=gzipped)
    assert bad.status == 400
    assert await stored("cc_events_raw", "event_key") == []
    ok = await client.post("/v1/logs", data=gz(capture("s1_protobuf", "0001_logs")), headers=gzipped)
    assert ok.status == 200
    events = expected_logs(capture_doc("s1_protobuf", "0001_logs"))
    assert len(await stored("cc_events_raw", "event_key")) == len(events)


async def test_on_rows_hook_sees_durable_rows_and_its_failure_does_not_fail_the_export(
    aiohttp_client: Any, writer: Writer, stored: Any
) -> None:
    from aiohttp import web

    from ingest.app import RAW_BODY_HANDLER_ARGS, add_otlp_routes

    seen: list[dict[str, int]] = []

    def hook(rows: Any) -> None:
        seen.append({table: len(table_rows) for table, table_rows in rows.items()})
        raise RuntimeError("observer bug")

    app = web.Application(handler_args=RAW_BODY_HANDLER_ARGS)
    add_otlp_routes(app, writer, OtlpSettings(), on_rows=hook)
    client = await aiohttp_client(app)
    response = await client.post("/v1/logs", data=capture("s1_protobuf", "0001_logs"), headers=PROTOBUF)
    assert response.status == 200
    doc = capture_doc("s1_protobuf", "0001_logs")
    assert seen == [{
        "cc_events_raw": len(expected_logs(doc)),
        **{table: len(events_named(doc, name)) for name, table in [
            ("user_prompt", "cc_user_prompts"), ("api_request", "cc_api_requests"),
            ("tool_result", "cc_tool_results"), ("tool_decision", "cc_tool_decisions")]},
    }]
    assert len(await stored("cc_events_raw", "event_key")) == len(expected_logs(doc))


async def test_standalone_otlp_app_serves_the_routes_with_raw_bodies(
    aiohttp_client: Any, writer: Writer, stored: Any
) -> None:
    from ingest.app import create_otlp_app

    client = await aiohttp_client(create_otlp_app(writer, OtlpSettings()))
    body = gz(capture("s1_protobuf", "0001_logs"))
    gzipped = {**PROTOBUF, "Content-Encoding": "gzip"}
    assert (await client.post("/v1/logs", data=body[:-8], headers=gzipped)).status == 400
    assert (await client.post("/v1/logs", data=body, headers=gzipped)).status == 200
    events = expected_logs(capture_doc("s1_protobuf", "0001_logs"))
    assert len(await stored("cc_events_raw", "event_key")) == len(events)
