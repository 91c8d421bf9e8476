"""Claude Code event mapping: typed columns by meaning, identity, dedupe keys, prompt privacy."""

from __future__ import annotations

from typing import Any

from ingest.claude_code import TIME_FALLBACK, MappingOptions, event_key, identity, mcp_names, to_rows
from ingest.otlp import Decoded, LogRecord, Origin, decode
from tests.ingest.conftest import capture, capture_doc, events_named

ORIGIN = Origin({"service.name": "claude-code", "service.version": "2.1.332", "user.email": "r@example.com"})


def decoded_with(*records: LogRecord) -> Decoded:
    return Decoded("logs", logs=list(records))


T = 1_700_000_000_000_000_000  # 2023-11-14: a usable time on any clock this runs on


def record(name: str, body: Any = None, **attributes: Any) -> LogRecord:
    attrs = {"event.name": name, "session.id": "s1", **{k.replace("__", "."): v for k, v in attributes.items()}}
    return LogRecord(ORIGIN, time_unix_nano=T, body=body, attributes=attrs)


def test_numeric_attributes_get_their_column_type_from_meaning_not_from_arrival() -> None:
    as_strings = record("api_request", input_tokens="1200", cost_usd="0.0123", duration_ms="7", request_id="r1")
    as_numbers = record("api_request", input_tokens=1200, cost_usd=0.0123, duration_ms=7.0, request_id="r2")
    decoded = decoded_with(as_strings, as_numbers)
    rows = to_rows(decoded, MappingOptions())["cc_api_requests"]
    picked = [(r["input_tokens"], r["cost_usd"], r["duration_ms"]) for r in rows]
    assert picked == [(1200, 0.0123, 7), (1200, 0.0123, 7)]
    assert decoded.issues == []


def test_a_value_that_does_not_fit_its_column_is_null_and_counted() -> None:
    decoded = decoded_with(record("tool_result", success="maybe", duration_ms="fast", tool_name=5))
    row = to_rows(decoded, MappingOptions())["cc_tool_results"][0]
    assert (row["success"], row["duration_ms"], row["tool_name"]) == (None, None, "5")
    assert decoded.invalid_values == 2
    assert any("'duration_ms'" in issue for issue in decoded.issues)


def api(request_id: str, **times: int) -> LogRecord:
    return LogRecord(ORIGIN, body="claude_code.api_request", **times,
                     attributes={"event.name": "api_request", "session.id": "s1", "request_id": request_id})


def test_a_record_without_times_takes_the_latest_time_of_its_body_else_the_receive_time() -> None:
    received = T + 3_600_123_456_789
    mixed = decoded_with(api("r1"), api("r2", observed_time_unix_nano=T), api("r3", time_unix_nano=T + 9_000))
    rows = to_rows(mixed, MappingOptions(), received_ns=received)["cc_api_requests"]
    at_receipt = received // 1000 * 1000  # ingested_at's microseconds
    assert [(r["event_time"], r["observed_time"]) for r in rows] == [
        (T + 9_000, at_receipt), (T, T), (T + 9_000, T + 9_000)]
    assert [r["event_key"] for r in rows] == ["req:r1", "req:r2", "req:r3"]
    assert mixed.remarks == {TIME_FALLBACK: 2} and mixed.invalid_values == 0
    assert [i.split(": ", 1)[1] for i in mixed.issues] == [
        "timeUnixNano missing or unreadable, dated by another record of its body",
        "timeUnixNano missing or unreadable, dated by observedTimeUnixNano"]
    alone = decoded_with(api("r1"))
    (row,) = to_rows(alone, MappingOptions(), received_ns=received)["cc_events_raw"]
    assert (row["event_time"], row["observed_time"], row["event_key"]) == (at_receipt, at_receipt, "req:r1")
    assert alone.issues[0].endswith("dated by the receive time")


def test_a_time_before_2000_or_over_a_day_ahead_is_unusable_and_falls_back_like_a_missing_one() -> None:
    received = T + 10**9
    unusable = [1, 9_000, 946_684_799 * 10**9, received + 86_400 * 10**9 + 1, 2**63 - 1, 32_503_680_000 * 10**9]
    decoded = decoded_with(*(api(f"r{i}", time_unix_nano=t, observed_time_unix_nano=T + i)
                             for i, t in enumerate(unusable)),
                           api("late", time_unix_nano=received + 86_400 * 10**9, observed_time_unix_nano=T))
    rows = to_rows(decoded, MappingOptions(), received_ns=received)["cc_api_requests"]
    assert [r["event_time"] for r in rows] == [T + i for i in range(len(unusable))] + [received + 86_400 * 10**9]
    assert decoded.remarks == {TIME_FALLBACK: len(unusable)}
    assert all("out of range (before 2000 or over a day ahead), dated by observedTimeUnixNano" in i
               for i in decoded.issues)
    no_fallback = decoded_with(api("r", time_unix_nano=5, observed_time_unix_nano=7))
    (row,) = to_rows(no_fallback, MappingOptions(), received_ns=received)["cc_api_requests"]
    assert (row["event_time"], row["observed_time"]) == (received, received)


def test_identity_prefers_log_attributes_then_resource_and_app_version_falls_back() -> None:
    attrs = {"session.id": "log-session", "user.email": "log@example.com", "event.sequence": "4"}
    decoded = decoded_with()
    ident = identity(attrs, ORIGIN, decoded, "test")
    assert ident["session_id"] == "log-session"
    assert ident["user_email"] == "log@example.com"
    assert ident["event_sequence"] == 4
    assert ident["app_version"] == "2.1.332"
    assert ident["service_name"] == "claude-code"
    assert identity({"app.version": "2.1.9"}, ORIGIN, decoded, "test")["app_version"] == "2.1.9"


def test_event_keys_use_request_id_then_session_sequence_then_a_stable_hash() -> None:
    decoded = decoded_with()
    api = record("api_request", request_id="req_1", event__sequence=3)
    ident = identity(api.attributes, ORIGIN, decoded, "t")
    assert event_key("api_request", ident, "req_1", api) == "req:req_1"
    assert event_key("tool_result", ident, "req_1", api) == "seq:s1:3"
    bare = LogRecord(ORIGIN, time_unix_nano=5, body="claude_code.x", attributes={"a": 1})
    bare_ident = identity(bare.attributes, ORIGIN, decoded, "t")
    key = event_key("x", bare_ident, "", bare)
    assert key.startswith("hash:") and key == event_key("x", bare_ident, "", bare)
    other = LogRecord(ORIGIN, time_unix_nano=6, body="claude_code.x", attributes={"a": 1})
    assert event_key("x", bare_ident, "", other) != key


def test_event_name_comes_from_attribute_or_body_without_prefix() -> None:
    from_body = LogRecord(ORIGIN, body="claude_code.user_prompt", attributes={"prompt_length": "3"})
    rows = to_rows(decoded_with(from_body), MappingOptions())
    assert rows["cc_user_prompts"][0]["event_name"] == "user_prompt"
    assert rows["cc_events_raw"][0]["event_name"] == "user_prompt"


def test_prompt_text_is_dropped_everywhere_unless_enabled() -> None:
    prompt = record("user_prompt", prompt="secret plan", prompt_text="secret plan", prompt_length="11")
    off = to_rows(decoded_with(prompt), MappingOptions())
    assert off["cc_user_prompts"][0]["prompt"] == "" and off["cc_user_prompts"][0]["prompt_length"] == 11
    assert "secret plan" not in str(off)
    on = to_rows(decoded_with(prompt), MappingOptions(store_prompt_text=True))
    assert on["cc_user_prompts"][0]["prompt"] == "secret plan"
    assert on["cc_events_raw"][0]["attributes"]["prompt"] == "secret plan"


def test_mcp_names_come_from_tool_parameters_when_tool_details_are_on() -> None:
    assert mcp_names('{"mcp_server_name":"capture","mcp_tool_name":"echo"}') == ("capture", "echo")
    assert mcp_names({"mcp_server_name": "a", "mcp_tool_name": "b"}) == ("a", "b")
    assert mcp_names('{"command":"ls"}') == ("", "")
    assert mcp_names("{not json") == ("", "")
    assert mcp_names(None) == ("", "")


def test_capture_without_tool_details_still_types_tool_results() -> None:
    decoded = decode("logs", capture("s6_defaults", "0001_logs"), "protobuf")
    rows = to_rows(decoded, MappingOptions())
    expected = events_named(capture_doc("s6_defaults", "0001_logs"), "tool_result")
    results = rows["cc_tool_results"]
    assert [r["tool_use_id"] for r in results] == [e["attrs"]["tool_use_id"] for e in expected]
    assert {r["mcp_server_name"] for r in results} == {""}
    assert [r["tool_result_size_bytes"] for r in results] == [
        int(e["attrs"]["tool_result_size_bytes"]) for e in expected]
    assert decoded.issues == []
