"""Stored rows against Claude Code's own bodies: every shared capture decodes and stores the row counts its
decoded JSON implies, typed rows match the capture field by field, and hand-built variants cover what no
capture holds (identity fields, `api_error`, exact int64 metric values)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from ingest.app import OtlpSettings
from tests.ingest.conftest import (
    DATA,
    ClientFactory,
    capture,
    capture_doc,
    events_named,
    expected_logs,
    expected_points,
)

PROTOBUF = {"Content-Type": "application/x-protobuf"}
# Claude Code event name -> the typed table it lands in (written here, not read from ingest).
TYPED = {"user_prompt": "cc_user_prompts", "api_request": "cc_api_requests", "api_error": "cc_api_errors",
         "tool_result": "cc_tool_results", "tool_decision": "cc_tool_decisions"}
IDENTITY = ("event_key, session_id, prompt_id, event_sequence, user_id, user_email, user_account_uuid, "
            "organization_id, app_version, terminal_type, service_name, toUnixTimestamp64Nano(event_time) AS t")


def shared_bodies() -> list[tuple[str, str]]:
    """(scenario, body name) of every captured logs, metrics and traces body in tests/data."""
    return sorted((path.parent.parent.name, path.stem) for path in DATA.glob("*/otlp/*.bin"))


def content_type(scenario: str, name: str) -> str:
    meta = orjson.loads((DATA / scenario / "otlp" / f"{name}.meta.json").read_bytes())
    return str(meta["content_type"])


def spans_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]


def identity_of(event: dict[str, Any]) -> dict[str, Any]:
    a, resource = event["attrs"], event["resource"]
    return {
        "event_key": f"seq:{a['session.id']}:{a['event.sequence']}", "session_id": a["session.id"],
        "prompt_id": a.get("prompt.id", ""), "event_sequence": a["event.sequence"], "user_id": a["user.id"],
        **{column: a.get(key, resource.get(key, "")) for column, key in (
            ("user_email", "user.email"), ("user_account_uuid", "user.account_uuid"),
            ("organization_id", "organization.id"))},
        "app_version": resource["service.version"], "terminal_type": a["terminal.type"],
        "service_name": resource["service.name"], "t": event["time"],
    }


Stored = Callable[..., Any]


@pytest.mark.parametrize(("scenario", "name"), shared_bodies())
async def test_every_shared_body_decodes_and_stores_the_rows_its_capture_holds(
    otlp_client: ClientFactory, stored: Stored, scenario: str, name: str
) -> None:
    signal = name.split("_", 1)[1]
    client = await otlp_client()
    response = await client.post(f"/v1/{signal}", data=capture(scenario, name),
                                 headers={"Content-Type": content_type(scenario, name)})
    assert response.status == 200
    doc = capture_doc(scenario, name)
    if signal == "logs":
        events = expected_logs(doc)
        assert len(await stored("cc_events_raw", "event_key")) == len(events) > 0
        by_name = Counter(e["attrs"].get("event.name") for e in events)
        for event, table in TYPED.items():
            assert len(await stored(table, "event_key")) == by_name[event], table
    elif signal == "metrics":
        points = expected_points(doc)
        rows = await stored("cc_metric_points", "metric_name, unit, value, toUnixTimestamp64Nano(time) AS t")
        assert sorted((r["metric_name"], r["unit"], r["t"], r["value"]) for r in rows) == sorted(
            (p["name"], p["unit"], p["time"], float(p["value"])) for p in points)
    else:
        assert len(await stored("cc_spans", "span_id")) == len(spans_of(doc)) > 0


@pytest.mark.parametrize(("scenario", "headers"), [("s1_protobuf", PROTOBUF),
                                                    ("s2_json", {"Content-Type": "application/json"})])
async def test_tool_decision_and_user_prompt_rows_match_the_capture_field_by_field(
    otlp_client: ClientFactory, stored: Stored, scenario: str, headers: dict[str, str]
) -> None:
    client = await otlp_client()
    assert (await client.post("/v1/logs", data=capture(scenario, "0001_logs"), headers=headers)).status == 200
    doc = capture_doc(scenario, "0001_logs")
    decisions = []
    for event in events_named(doc, "tool_decision"):
        a = event["attrs"]
        decisions.append({**identity_of(event), **{k: a.get(k, "") for k in (
            "tool_name", "tool_use_id", "decision", "source", "tool_source", "permission_mode", "tool_parameters",
            "request_id")}})
    columns = IDENTITY + ", tool_name, tool_use_id, decision, source, tool_source, permission_mode, " \
        "tool_parameters, request_id"
    assert await stored("cc_tool_decisions", columns, order="event_sequence") == sorted(
        decisions, key=lambda r: r["event_sequence"])
    (prompt,) = events_named(doc, "user_prompt")
    assert await stored("cc_user_prompts", IDENTITY + ", prompt_length, prompt, message_uuid") == [{
        **identity_of(prompt), "prompt_length": int(prompt["attrs"]["prompt_length"]), "prompt": "",
        "message_uuid": prompt["attrs"]["message.uuid"]}]


def string_attribute(key: str, value: str) -> KeyValue:
    attribute = KeyValue(key=key)
    attribute.value.string_value = value
    return attribute


def with_identity() -> bytes:
    """s1's logs with `organization.id` on the resource (another value on the first record's attributes, which
    wins) and `user.email` / `user.account_uuid` on every record, as Claude Code sends them when signed in."""
    request = ExportLogsServiceRequest.FromString(capture("s1_protobuf", "0001_logs"))
    for resource_logs in request.resource_logs:
        resource_logs.resource.attributes.append(string_attribute("organization.id", "org-from-resource"))
        for index, record in enumerate(r for sl in resource_logs.scope_logs for r in sl.log_records):
            record.attributes.append(string_attribute("user.email", "dev@example.com"))
            record.attributes.append(string_attribute("user.account_uuid", "5a6b7c8d-0000-4000-8000-000000000001"))
            if index == 0:
                record.attributes.append(string_attribute("organization.id", "org-from-record"))
    return request.SerializeToString()


async def test_identity_fields_reach_every_stored_row_log_attribute_first(
    otlp_client: ClientFactory, stored: Stored
) -> None:
    client = await otlp_client()
    assert (await client.post("/v1/logs", data=with_identity(), headers=PROTOBUF)).status == 200
    events = expected_logs(capture_doc("s1_protobuf", "0001_logs"))  # in body order, like with_identity
    raw = await stored("cc_events_raw", "user_email, user_account_uuid, organization_id, event_sequence",
                       order="event_time, event_sequence")
    first_sequence = events[0]["attrs"]["event.sequence"]
    assert len(raw) == len(events)
    for row in raw:
        organization = "org-from-record" if row["event_sequence"] == first_sequence else "org-from-resource"
        assert (row["user_email"], row["user_account_uuid"], row["organization_id"]) == (
            "dev@example.com", "5a6b7c8d-0000-4000-8000-000000000001", organization)
    for table in TYPED.values():
        for row in await stored(table, "user_email, user_account_uuid, organization_id"):
            assert row["user_email"] == "dev@example.com" and row["organization_id"].startswith("org-from-")


def api_error_body() -> tuple[bytes, dict[str, Any]]:
    """One hand-built `api_error` record (no capture has one) on s1's first api_request record's resource and
    identity; returns the body and the attributes it carries."""
    request = ExportLogsServiceRequest.FromString(capture("s1_protobuf", "0001_logs"))
    scope_logs = request.resource_logs[0].scope_logs[0]
    record = next(r for r in scope_logs.log_records if r.body.string_value == "claude_code.api_request")
    keep = {kv.key: kv for kv in record.attributes if kv.key in (
        "session.id", "prompt.id", "user.id", "terminal.type", "event.sequence")}
    del record.attributes[:]
    record.attributes.extend(keep.values())
    record.body.string_value = "claude_code.api_error"
    error = {"event.name": "api_error", "model": "claude-sonnet-4-5", "error": "Request was aborted.",
             "status_code": "undefined", "query_source": "repl_main_thread", "speed": "normal",
             "request_id": "req_011CVerror"}
    record.attributes.extend(string_attribute(k, v) for k, v in error.items())
    for key, number in (("attempt", 3), ("duration_ms", 30125)):
        attribute = KeyValue(key=key)
        attribute.value.int_value = number
        record.attributes.append(attribute)
    del scope_logs.log_records[:]
    scope_logs.log_records.append(record)
    for extra in request.resource_logs[1:]:
        request.resource_logs.remove(extra)
    attributes = {kv.key: kv.value for kv in keep.values()}
    return request.SerializeToString(), {
        **error, "attempt": 3, "duration_ms": 30125, "time": record.time_unix_nano,
        "session.id": attributes["session.id"].string_value, "prompt.id": attributes["prompt.id"].string_value,
        "user.id": attributes["user.id"].string_value, "terminal.type": attributes["terminal.type"].string_value,
        "event.sequence": attributes["event.sequence"].int_value,
        "resource": {kv.key: kv.value.string_value for kv in request.resource_logs[0].resource.attributes}}


async def test_a_hand_built_api_error_record_maps_to_its_table_field_by_field(
    otlp_client: ClientFactory, stored: Stored
) -> None:
    body, a = api_error_body()
    client = await otlp_client()
    assert (await client.post("/v1/logs", data=body, headers=PROTOBUF)).status == 200
    rows = await stored("cc_api_errors", IDENTITY + ", event_name, model, error, status_code, attempt, duration_ms, "
                        "request_id, query_source, speed")
    assert rows == [{
        "event_key": f"seq:{a['session.id']}:{a['event.sequence']}", "session_id": a["session.id"],
        "prompt_id": a["prompt.id"], "event_sequence": a["event.sequence"], "user_id": a["user.id"],
        "user_email": "", "user_account_uuid": "", "organization_id": "",
        "app_version": a["resource"]["service.version"], "terminal_type": a["terminal.type"],
        "service_name": a["resource"]["service.name"], "t": a["time"], "event_name": "api_error",
        "model": "claude-sonnet-4-5", "error": "Request was aborted.", "status_code": "undefined",
        "attempt": 3, "duration_ms": 30125, "request_id": "req_011CVerror", "query_source": "repl_main_thread",
        "speed": "normal"}]
    assert [r["event_name"] for r in await stored("cc_events_raw", "event_name")] == ["api_error"]
    assert await stored("cc_api_requests", "event_key") == []


EXACT = 2**62 + 1  # not representable as a float64: any float on the way would change it


def int_metrics_body() -> tuple[bytes, str, int]:
    """s1's metrics with the first data point's value replaced by the int64 EXACT and its unit by `By`."""
    request = ExportMetricsServiceRequest.FromString(capture("s1_protobuf", "0002_metrics"))
    metric = request.resource_metrics[0].scope_metrics[0].metrics[0]
    points = metric.sum.data_points if metric.HasField("sum") else metric.gauge.data_points
    points[0].as_int = EXACT
    metric.unit = "By"
    return request.SerializeToString(), metric.name, points[0].time_unix_nano


async def test_an_int64_metric_value_is_stored_exactly_with_its_unit(
    otlp_client: ClientFactory, stored: Stored
) -> None:
    body, name, at = int_metrics_body()
    client = await otlp_client()
    assert (await client.post("/v1/metrics", data=body, headers=PROTOBUF)).status == 200
    where = f"metric_name = '{name}' AND toUnixTimestamp64Nano(time) = {at} AND value_int IS NOT NULL"
    rows = await stored("cc_metric_points", "value_int, value, unit", where=where)
    assert rows == [{"value_int": EXACT, "value": float(EXACT), "unit": "By"}]
    others = await stored("cc_metric_points", "count() AS n", where="value_int IS NOT NULL")
    assert others == [{"n": 1}]  # the captured points are doubles: no value_int invented for them


@pytest.mark.parametrize("store_prompt_text", [False, True])
async def test_prompt_text_in_span_attributes_is_dropped_unless_enabled(
    otlp_client: ClientFactory, stored: Stored, store_prompt_text: bool
) -> None:
    spans = spans_of(capture_doc("s3_traces", "0001_traces"))
    with_prompt = {s["spanId"]: kv["value"]["stringValue"] for s in spans for kv in s["attributes"]
                   if kv["key"] == "user_prompt"}
    assert with_prompt  # the capture has one
    client = await otlp_client(OtlpSettings(store_prompt_text=store_prompt_text))
    response = await client.post("/v1/traces", data=capture("s3_traces", "0001_traces"), headers=PROTOBUF)
    assert response.status == 200
    rows = {r["span_id"]: r for r in await stored("cc_spans", "span_id, attributes, attributes_json")}
    for span_id, text in with_prompt.items():
        attributes, as_json = rows[span_id]["attributes"], orjson.loads(rows[span_id]["attributes_json"])
        assert "user_prompt_length" in attributes  # the length always stays
        if store_prompt_text:
            assert attributes["user_prompt"] == text == as_json["user_prompt"]
        else:
            assert "user_prompt" not in attributes and "user_prompt" not in as_json
            assert text not in rows[span_id]["attributes_json"]
