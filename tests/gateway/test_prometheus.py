"""`/metrics` exposes calls, errors, bytes by direction, latency, upstream health and writer backlog."""

from __future__ import annotations

from pathlib import Path

from aiohttp import ClientSession as Http

from gateway.config import UpstreamConfig
from tests.gateway.conftest import echo_upstream, gateway_config, mcp_session
from tests.gateway.service import running_service


def series(text: str, name: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            found[key] = float(value)
    return found


async def test_metrics_count_calls_bytes_and_health(tmp_path: Path) -> None:
    dead = UpstreamConfig(name="dead", type="stdio", command="false")
    async with running_service(gateway_config(echo_upstream("a"), dead), tmp_path / "db") as svc:
        async with mcp_session(svc.mcp_url) as client:
            await client.call_tool("a__blob", {"n": 1000})
            await client.call_tool("a__blob", {"n": 3000})
        async with Http() as http, http.get(svc.base_url + "/metrics") as response:
            text = await response.text()
    assert response.status == 200
    calls = series(text, "tollgate_calls_total")
    assert calls['tollgate_calls_total{method="tools/call",status="ok",upstream="a"}'] == 2
    text_out = series(text, "tollgate_bytes_total")['tollgate_bytes_total{direction="response_client",upstream="a"}']
    assert text_out > 4000
    assert series(text, "tollgate_upstream_up") == {'tollgate_upstream_up{upstream="a"}': 1.0,
                                                    'tollgate_upstream_up{upstream="dead"}': 0.0}
    assert series(text, "tollgate_call_duration_seconds_count") == {
        'tollgate_call_duration_seconds_count{upstream="a"}': 2.0}
    assert "tollgate_writer_pending_rows" in text


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
    assert series(text, "tollgate_client_messages_ignored") == {
        'tollgate_client_messages_ignored{reason="cancel_bad_request_id"}': 2.0}
    assert series(text, "tollgate_upstream_notifications_unrouted") == {
        'tollgate_upstream_notifications_unrouted{upstream="a"}': 0.0}


def test_values_are_written_exactly_and_counters_typed_as_counters() -> None:
    from gateway.prometheus import Metrics

    metrics = Metrics()
    metrics.sampled_counters["tollgate_things"] = lambda: {(): 22_349_417.0}
    metrics.gauges["tollgate_ratio"] = lambda: {(): 0.125}
    text = metrics.render()
    assert "# TYPE tollgate_things counter\ntollgate_things 22349417\n" in text  # `:g` wrote 2.23494e+07
    assert "tollgate_ratio 0.125" in text
