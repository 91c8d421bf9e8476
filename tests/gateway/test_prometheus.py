"""`/metrics` exposes calls, errors, bytes by direction, latency, upstream health, writer backlog and the OTLP
receiver's answers and records."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import orjson
from aiohttp import ClientSession as Http

from gateway.config import BudgetConfig, TelemetryConfig, UpstreamConfig
from tests.gateway.conftest import echo_upstream, gateway_config, mcp_session
from tests.gateway.service import running_service
from tests.ingest.conftest import capture, capture_doc, expected_logs

DIRECTIONS = {"request_client": "req_bytes_client", "request_upstream": "req_bytes_upstream",
              "response_upstream": "resp_bytes_upstream", "response_client": "resp_bytes_client"}


def series(text: str, name: str) -> dict[str, float]:
    """Every sample of the metric `name` (not of longer names it prefixes), by its name and labels."""
    found = {}
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            key, _, value = line.rpartition(" ")
            found[key] = float(value)
    return found


async def test_metrics_count_calls_bytes_errors_and_each_budget_action_exactly_as_the_stored_rows(
        tmp_path: Path) -> None:
    dead = UpstreamConfig(name="dead", type="stdio", command="false")
    config = gateway_config(
        echo_upstream("a"), echo_upstream("b", budget=BudgetConfig(day_calls=1)),
        echo_upstream("c", budget=BudgetConfig(max_result_bytes=500, action="truncate")),
        echo_upstream("w", budget=BudgetConfig(max_request_bytes=100, session_calls=1, action="warn")), dead)
    async with running_service(config, tmp_path / "db") as svc:
        async with mcp_session(svc.mcp_url) as client:
            await client.call_tool("a__blob", {"n": 1000})
            await client.call_tool("a__utf8_blob", {"n": 3001})
            await client.call_tool("a__blob", {"n": "many"})  # a tool error
            assert not (await client.call_tool("b__whoami", {})).is_error
            assert (await client.call_tool("b__whoami", {})).is_error  # denied: day_calls = 1
            assert not (await client.call_tool("c__blob", {"n": 2000})).is_error  # truncated to 500 bytes
            for _ in range(2):  # both over max_request_bytes, the second past session_calls too: 3 warnings
                assert not (await client.call_tool("w__echo", {"text": "x" * 200})).is_error
        rows = await svc.query("SELECT upstream, method, status, duration_ms, " + ", ".join(DIRECTIONS.values())
                               + " FROM calls FINAL")
        events = await svc.query("SELECT upstream, action, limit_name FROM budget_events FINAL")
        async with Http() as http, http.get(svc.base_url + "/metrics") as response:
            text = await response.text()
    assert response.status == 200
    assert sorted((r["upstream"], r["status"]) for r in rows) == [
        ("a", "ok"), ("a", "ok"), ("a", "tool_error"), ("b", "denied"), ("b", "ok"), ("c", "truncated"),
        ("w", "ok"), ("w", "ok")]
    assert series(text, "tollgate_calls_total") == {
        f'tollgate_calls_total{{method="tools/call",status="{status}",upstream="{upstream}"}}': float(n)
        for (upstream, status), n in Counter((r["upstream"], r["status"]) for r in rows).items()}
    assert series(text, "tollgate_call_errors_total") == {
        'tollgate_call_errors_total{status="tool_error",upstream="a"}': 1.0}
    assert series(text, "tollgate_bytes_total") == {
        f'tollgate_bytes_total{{direction="{direction}",upstream="{upstream}"}}':
            float(sum(r[column] for r in rows if r["upstream"] == upstream))
        for direction, column in DIRECTIONS.items() for upstream in ("a", "b", "c", "w")}
    # One series per (upstream, action, limit), each equal to the budget_events rows stored for it.
    assert Counter((e["action"], e["limit_name"]) for e in events) == {
        ("deny", "day_calls"): 1, ("truncate", "max_result_bytes"): 1, ("warn", "max_request_bytes"): 2,
        ("warn", "session_calls"): 1}
    assert series(text, "tollgate_budget_decisions_total") == {
        f'tollgate_budget_decisions_total{{action="{action}",limit="{limit}",upstream="{upstream}"}}': float(n)
        for (upstream, action, limit), n in Counter(
            (e["upstream"], e["action"], e["limit_name"]) for e in events).items()}
    assert series(text, "tollgate_upstream_up") == {
        **{f'tollgate_upstream_up{{upstream="{u}"}}': 1.0 for u in ("a", "b", "c", "w")},
        'tollgate_upstream_up{upstream="dead"}': 0.0}
    assert series(text, "tollgate_call_duration_seconds_count") == {
        f'tollgate_call_duration_seconds_count{{upstream="{u}"}}': float(n)
        for u, n in Counter(r["upstream"] for r in rows).items()}


async def test_writer_gauges_show_the_rows_and_bytes_waiting_in_the_spill_until_they_are_stored(
        tmp_path: Path) -> None:
    async with running_service(gateway_config(echo_upstream("a")), tmp_path / "db", flush_seconds=3600) as svc:
        async with mcp_session(svc.mcp_url) as client:
            for n in (10, 20, 30):
                await client.call_tool("a__blob", {"n": n})
        async with Http() as http:
            waiting = await metrics_text(http, svc.base_url)
            segments = sorted((tmp_path / "db" / "spill").glob("segment-*.jsonl"))
            contents = [path.read_bytes() for path in segments]
            await svc.flushed()
            stored = await metrics_text(http, svc.base_url)
    lines = [orjson.loads(line) for content in contents for line in content.splitlines()]
    assert sum(len(line["r"]) for line in lines if line["t"] == "calls") == 3  # nothing was flushed before
    assert series(waiting, "tollgate_writer_pending_rows") == {
        "tollgate_writer_pending_rows": float(sum(len(line["r"]) for line in lines))}
    assert series(waiting, "tollgate_writer_spill_bytes") == {
        "tollgate_writer_spill_bytes": float(sum(map(len, contents)))}
    assert series(stored, "tollgate_writer_pending_rows") == {"tollgate_writer_pending_rows": 0.0}
    assert series(stored, "tollgate_writer_spill_bytes") == {"tollgate_writer_spill_bytes": 0.0}


async def metrics_text(http: Http, base_url: str) -> str:
    async with http.get(base_url + "/metrics") as response:
        assert response.status == 200
        return await response.text()


def test_metrics_count_as_errors_exactly_the_statuses_the_reports_do() -> None:
    from gateway.prometheus import Metrics
    from gateway.records import CallRecord
    from store.statuses import ERRORS, STATUSES

    metrics = Metrics()
    for status in STATUSES:
        record = CallRecord(method="tools/call", upstream="u", tool="t", exposed_name="u__t", mcp_session_id="m")
        record.finish(status)
        metrics.call_finished(record)
    errors = series(metrics.render(), "tollgate_call_errors_total")
    assert errors == {f'tollgate_call_errors_total{{status="{s}",upstream="u"}}': 1.0 for s in ERRORS}


async def test_metrics_count_client_messages_ignored_on_purpose(tmp_path: Path) -> None:
    async with running_service(gateway_config(echo_upstream("a")), tmp_path / "db") as svc, Http() as http:
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
        async with http.post(svc.mcp_url, json=init, headers=headers) as response:
            headers["Mcp-Session-Id"] = response.headers["Mcp-Session-Id"]
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": [1]}}
        for _ in range(2):
            async with http.post(svc.mcp_url, json=cancel, headers=headers) as response:
                assert response.status == 202
        async with http.get(svc.base_url + "/metrics") as response:
            text = await response.text()
    assert series(text, "tollgate_client_messages_ignored_total") == {
        'tollgate_client_messages_ignored_total{reason="cancel_bad_request_id"}': 2.0}
    assert series(text, "tollgate_upstream_notifications_unrouted_total") == {
        'tollgate_upstream_notifications_unrouted_total{upstream="a"}': 0.0}


def test_values_are_written_exactly_and_counters_typed_as_counters() -> None:
    from gateway.prometheus import Metrics

    metrics = Metrics()
    metrics.sampled_counters["tollgate_things"] = lambda: {(): 22_349_417.0}
    metrics.gauges["tollgate_ratio"] = lambda: {(): 0.125}
    text = metrics.render()
    assert "# TYPE tollgate_things counter\ntollgate_things 22349417\n" in text  # `:g` wrote 2.23494e+07
    assert "tollgate_ratio 0.125" in text


async def test_otlp_answers_and_refusals_are_counted_by_signal_and_status(tmp_path: Path) -> None:
    logs = capture("s1_protobuf", "0001_logs")
    records = len(expected_logs(capture_doc("s1_protobuf", "0001_logs")))
    bad_cost = {"timeUnixNano": "1796322543600000000", "body": {"stringValue": "claude_code.api_request"},
                "attributes": [{"key": "event.name", "value": {"stringValue": "api_request"}},
                               {"key": "request_id", "value": {"stringValue": "req_bad_cost"}},
                               {"key": "cost_usd", "value": {"doubleValue": {}}}]}
    partial = orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [bad_cost, "not a record"]}]}]})
    protobuf, json = {"Content-Type": "application/x-protobuf"}, {"Content-Type": "application/json"}
    config = replace(gateway_config(echo_upstream("a")), telemetry=TelemetryConfig(max_body_bytes=2 * len(logs)))
    # The rows wait in the spill (no flush), so the writer's own bounds can refuse the next body.
    async with running_service(config, tmp_path / "db", flush_seconds=3600) as svc, Http() as http:
        writer = svc.service.writer

        async def post(path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
            async with http.post(svc.base_url + path, data=body, headers=headers) as response:
                return response.status, await response.read()

        assert (await post("/v1/logs", logs, protobuf))[0] == 200
        status, answer = await post("/v1/logs", partial, json)
        assert status == 200 and orjson.loads(answer)["partialSuccess"]["rejectedLogRecords"] == 1
        writer.max_pending_rows = 1  # the backlog is full: 429
        assert (await post("/v1/logs", logs, protobuf))[0] == 429
        writer.max_pending_rows, writer.max_spill_bytes = 10**6, 1  # the spill is full: 503
        assert (await post("/v1/logs", logs, protobuf))[0] == 503
        assert (await post("/v1/metrics", b"\x0a\xff\xff\xff\x0f{", protobuf))[0] == 400
        assert (await post("/v1/logs", logs * 3, protobuf))[0] == 413
        assert (await post("/v1/traces", b"{}", {"Content-Type": "text/plain"}))[0] == 415
        text = await metrics_text(http, svc.base_url)
    assert series(text, "tollgate_otlp_requests_total") == {
        f'tollgate_otlp_requests_total{{signal="{signal}",status="{status}"}}': float(n)
        for signal, status, n in [("logs", 200, 2), ("logs", 429, 1), ("logs", 503, 1), ("logs", 413, 1),
                                  ("metrics", 400, 1), ("traces", 415, 1)]}
    assert series(text, "tollgate_otlp_records_accepted_total") == {
        'tollgate_otlp_records_accepted_total{signal="logs"}': float(records + 1)}
    assert series(text, "tollgate_otlp_records_rejected_total") == {
        'tollgate_otlp_records_rejected_total{signal="logs"}': 1.0}
    assert series(text, "tollgate_otlp_invalid_values_total") == {
        'tollgate_otlp_invalid_values_total{signal="logs"}': 1.0}


DOCS = [Path(__file__).resolve().parents[2] / "README.md",
        *sorted((Path(__file__).resolve().parents[2] / "docs").glob("*.md"))]


async def test_every_counter_on_metrics_ends_in_total_and_no_gauge_does_and_the_docs_use_those_names(
        tmp_path: Path) -> None:
    """Prometheus naming: a counter's name ends in `_total`, a gauge's does not. Every series a served gateway
    renders (with a call made, so the call counters exist too) is checked, and no doc names a counter without it."""
    async with running_service(gateway_config(echo_upstream("a")), tmp_path / "db") as svc, Http() as http:
        async with mcp_session(svc.mcp_url) as client:
            await client.call_tool("a__echo", {"text": "hi"})
        text = await metrics_text(http, svc.base_url)
    types = {line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE ")}
    counters = {name for name, kind in types.items() if kind == "counter"}
    gauges = {name for name, kind in types.items() if kind == "gauge"}
    assert {"tollgate_calls_total", "tollgate_sessions_refused_total", "tollgate_writer_dropped_rows_total",
            "tollgate_otlp_records_accepted_total", "tollgate_otlp_invalid_values_total"} <= counters
    assert "tollgate_sessions_open" in gauges
    assert sorted(name for name in counters if not name.endswith("_total")) == []
    assert sorted(name for name in gauges if name.endswith("_total")) == []
    for doc in DOCS:
        said = doc.read_text()
        stale = [name for name in counters if re.search(rf"\b{name.removesuffix('_total')}\b(?!_total)", said)]
        assert stale == [], f"{doc.name} names counters without _total"
