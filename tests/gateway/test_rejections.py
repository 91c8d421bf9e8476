"""Every request refused at the HTTP edge of any route (/mcp, OTLP, /api, pages, /healthz, /metrics) leaves one log
line (reason, method, client address, never the token), rate-limited per route and status, and is counted in
/metrics."""

from __future__ import annotations

import gzip
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from aiohttp import ClientSession as Http

from gateway import jsonrpc
from gateway import rejections as rejections_mod
from gateway.config import TelemetryConfig
from gateway.rejections import LINES_PER_MINUTE
from ingest.app import encode_status
from tests.gateway.conftest import echo_upstream, gateway_config, running_gateway
from tests.gateway.service import running_service, serve_app
from tests.gateway.test_downstream import JSON_HEADERS, initialize, open_session

TOKEN = "s3cret-token-value"
WRONG = "wrong-token-value"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UNKNOWN = "deadbeef-0000-4000-8000-000000000000"
EXPIRED = "Not Found: unknown or expired session deadbeef; the client must initialize again"


def refusals(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "tollgate.rejections"]


async def test_each_refusal_on_mcp_and_api_is_logged_once_with_its_reason_and_counted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tollgate")
    config = gateway_config(echo_upstream("a"), auth_tokens=(TOKEN,), max_body_bytes=64 * 1024)
    big = orjson.dumps(jsonrpc.request_body(1, "tools/call", {"name": "a__echo", "arguments": {"text": "x" * 100_000}}))

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 8192):
            yield big[start:start + 8192]

    list_tools = orjson.dumps(jsonrpc.request_body(1, "tools/list"))
    async with running_service(config, tmp_path / "db") as svc, Http(headers=AUTH) as http:
        url = svc.mcp_url
        session_id = await open_session(http, url)
        caplog.clear()
        statuses = []
        for data, headers in [
            (list_tools, {**JSON_HEADERS, "Content-Type": "text/plain"}),
            (big, JSON_HEADERS),
            (chunked(), JSON_HEADERS),
            (list_tools, JSON_HEADERS),
            (list_tools, {**JSON_HEADERS, "Mcp-Session-Id": UNKNOWN}),
            (orjson.dumps(jsonrpc.request_body(2, "ping")),
             {**JSON_HEADERS, "Mcp-Session-Id": session_id, "MCP-Protocol-Version": "1999-01-01"}),
        ]:
            async with http.post(url, data=data, headers=headers) as response:
                statuses.append(response.status)
        async with http.get(url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": UNKNOWN}) as response:
            statuses.append(response.status)
        async with http.delete(url, headers={"Mcp-Session-Id": UNKNOWN}) as response:
            statuses.append(response.status)
        async with Http() as anonymous:
            for headers in ({}, {"Authorization": f"Bearer {WRONG}"}):
                async with anonymous.post(url, data=orjson.dumps(initialize()),
                                          headers={**JSON_HEADERS, **headers}) as response:
                    statuses.append(response.status)
            async with anonymous.get(svc.base_url + "/api/sessions") as response:
                statuses.append(response.status)
        async with http.get(svc.base_url + "/metrics") as response:
            metrics = (await response.text()).splitlines()
    assert statuses == [415, 413, 413, 400, 404, 400, 404, 404, 401, 401, 401]
    info, warning = logging.INFO, logging.WARNING
    assert refusals(caplog) == [
        (info, "refused POST /mcp from 127.0.0.1: 415 Unsupported Media Type 'text/plain': use application/json"),
        (warning, "refused POST /mcp from 127.0.0.1: 413 Payload Too Large: the limit is 65536 bytes"),
        (warning, "refused POST /mcp from 127.0.0.1: 413 Payload Too Large: the limit is 65536 bytes"),
        (info, "refused POST /mcp (tools/list) from 127.0.0.1: 400 Bad Request: Missing session ID"),
        (info, f"refused POST /mcp (tools/list) from 127.0.0.1: 404 {EXPIRED}"),
        (info, "refused POST /mcp (ping) from 127.0.0.1: 400 Bad Request: unsupported MCP-Protocol-Version "
               "'1999-01-01'"),
        (info, f"refused GET /mcp from 127.0.0.1: 404 {EXPIRED}"),
        (info, f"refused DELETE /mcp from 127.0.0.1: 404 {EXPIRED}"),
        (warning, "refused POST /mcp from 127.0.0.1: 401 Unauthorized: bearer token required"),
        (warning, "refused POST /mcp from 127.0.0.1: 401 Unauthorized: bearer token not accepted"),
        (warning, "refused GET /api/sessions from 127.0.0.1: 401 bearer token required"),
    ]
    assert TOKEN not in caplog.text and WRONG not in caplog.text
    counted = [line for line in metrics if line.startswith("tollgate_http_rejections_total{")]
    assert counted == [
        'tollgate_http_rejections_total{route="/api",status="401"} 1',
        'tollgate_http_rejections_total{route="/mcp",status="400"} 2',
        'tollgate_http_rejections_total{route="/mcp",status="401"} 2',
        'tollgate_http_rejections_total{route="/mcp",status="404"} 3',
        'tollgate_http_rejections_total{route="/mcp",status="413"} 2',
        'tollgate_http_rejections_total{route="/mcp",status="415"} 1',
    ]


async def test_a_session_from_before_a_restart_gets_404_and_the_log_says_the_client_must_initialize_again(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tollgate")
    config = gateway_config(echo_upstream("a"))
    async with running_gateway(config) as url, Http() as http:
        old_session = await open_session(http, url)
    async with running_gateway(config) as url, Http() as http, (  # restarted: sessions are forgotten
            http.post(url, data=orjson.dumps(jsonrpc.request_body(1, "tools/list")),
                      headers={**JSON_HEADERS, "Mcp-Session-Id": old_session})) as response:
        status, body = response.status, await response.json()
    said = f"unknown or expired session {old_session[:8]}; the client must initialize again"
    assert (status, body["error"]["code"], body["error"]["message"]) == (404, jsonrpc.INVALID_REQUEST,
                                                                        f"Not Found: {said}")
    assert refusals(caplog) == [(logging.INFO, f"refused POST /mcp (tools/list) from 127.0.0.1: 404 Not Found: {said}")]


async def test_a_flood_of_refusals_is_logged_so_many_lines_a_minute_and_all_are_counted(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tollgate")
    now = [1000.0]
    monkeypatch.setattr(rejections_mod.time, "monotonic", lambda: now[0])
    async with running_gateway(gateway_config()) as url, Http() as http:
        async def unknown_session() -> None:
            async with http.delete(url, headers={"Mcp-Session-Id": UNKNOWN}) as response:
                assert response.status == 404

        for _ in range(LINES_PER_MINUTE + 5):
            await unknown_session()
        # Another kind of refusal within the same minute is still logged: each route and status has its own limit.
        async with http.post(url, data=orjson.dumps(jsonrpc.request_body(1, "ping")), headers=JSON_HEADERS):
            pass
        now[0] += 60.0
        await unknown_session()
    logged = [message for _, message in refusals(caplog)]
    expired = f"refused DELETE /mcp from 127.0.0.1: 404 {EXPIRED}"
    assert logged == [expired] * LINES_PER_MINUTE + [
        "refused POST /mcp (ping) from 127.0.0.1: 400 Bad Request: Missing session ID",
        f"{expired} (5 more like it not logged)"]


async def test_a_method_name_cannot_forge_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tollgate")
    forged = "tools/list\n2026-01-01 00:00:00,000 INFO tollgate: all fine"
    async with running_gateway(gateway_config()) as url, Http() as http, \
            http.post(url, data=orjson.dumps(jsonrpc.request_body(1, forged)), headers=JSON_HEADERS) as response:
        assert response.status == 400
    assert refusals(caplog) == [(logging.INFO, "refused POST /mcp (tools/list\\n2026-01-01 00:00:00,000 INFO tollgate: "
                                               "all fine) from 127.0.0.1: 400 Bad Request: Missing session ID")]


async def test_every_4xx_of_every_route_is_counted_under_its_route_and_status_and_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """OTLP bodies refused (bad protobuf, media type, size, a gzip bomb, on both listen addresses), methods a route
    does not take, bad API queries and unknown API ids, pages and paths that do not exist: each one counted once
    under its route and status in /metrics, and logged with the reason its body gave the client."""
    caplog.set_level(logging.INFO, "tollgate")
    cap = 4096
    config = replace(gateway_config(echo_upstream("a"), otlp_listen="127.0.0.1:4318"),
                     telemetry=TelemetryConfig(max_body_bytes=cap))
    protobuf = {"Content-Type": "application/x-protobuf"}
    async with running_service(config, tmp_path / "db") as svc, Http() as http:
        assert svc.service.otlp_app is not None
        async with serve_app(svc.service.otlp_app) as otlp_url:
            statuses = []
            for method, url, data, headers in [
                ("POST", svc.base_url + "/v1/logs", b"\xff\xff\xff garbage", protobuf),
                ("POST", svc.base_url + "/v1/logs", b"{}", {"Content-Type": "text/plain"}),
                ("POST", svc.base_url + "/v1/metrics", b"\x00" * (cap + 1), protobuf),
                ("POST", svc.base_url + "/v1/traces", gzip.compress(b"\x00" * (cap * 100)),
                 {**protobuf, "Content-Encoding": "gzip"}),
                ("GET", svc.base_url + "/v1/logs", None, {}),
                ("POST", otlp_url + "/v1/logs", b"{}", {"Content-Type": "text/plain"}),
                ("GET", svc.base_url + "/api/sessions?limit=lots", None, {}),
                ("GET", svc.base_url + "/api/sessions/nope", None, {}),
                ("GET", svc.base_url + "/api/nothing", None, {}),
                ("POST", svc.base_url + "/api/sessions", b"", {}),
                ("GET", svc.base_url + "/ui/static/nothing.js", None, {}),
                ("POST", svc.base_url + "/", b"", {}),
                ("POST", svc.base_url + "/healthz", b"", {}),
                ("POST", svc.base_url + "/metrics", b"", {}),
                ("GET", svc.base_url + "/nothing", None, {}),
            ]:
                async with http.request(method, url, data=data, headers=headers) as response:
                    statuses.append(response.status)
            async with http.get(svc.base_url + "/metrics") as response:
                metrics = (await response.text()).splitlines()
    assert statuses == [400, 415, 413, 413, 405, 415, 400, 404, 404, 405, 404, 405, 405, 405, 404]
    counted = [line for line in metrics if line.startswith("tollgate_http_rejections_total{")]
    assert counted == [
        'tollgate_http_rejections_total{route="/api",status="400"} 1',
        'tollgate_http_rejections_total{route="/api",status="404"} 2',
        'tollgate_http_rejections_total{route="/api",status="405"} 1',
        'tollgate_http_rejections_total{route="/healthz",status="405"} 1',
        'tollgate_http_rejections_total{route="/metrics",status="405"} 1',
        'tollgate_http_rejections_total{route="/ui",status="404"} 1',
        'tollgate_http_rejections_total{route="/ui",status="405"} 1',
        'tollgate_http_rejections_total{route="/v1",status="400"} 1',
        'tollgate_http_rejections_total{route="/v1",status="405"} 1',
        'tollgate_http_rejections_total{route="/v1",status="413"} 2',
        'tollgate_http_rejections_total{route="/v1",status="415"} 2',
        'tollgate_http_rejections_total{route="other",status="404"} 1',
    ]
    logged = [message for _, message in refusals(caplog)]
    assert len(logged) == len(statuses)
    assert [line.split(" from ")[0] for line in logged] == [
        "refused POST /v1/logs", "refused POST /v1/logs", "refused POST /v1/metrics", "refused POST /v1/traces",
        "refused GET /v1/logs", "refused POST /v1/logs", "refused GET /api/sessions", "refused GET /api/sessions/nope",
        "refused GET /api/nothing", "refused POST /api/sessions", "refused GET /ui/static/nothing.js",
        "refused POST /", "refused POST /healthz", "refused POST /metrics", "refused GET /nothing"]
    # the reason each body gave: the OTLP Status message, the API's JSON error, aiohttp's text
    assert logged[1].endswith(": 415 unsupported media type 'text/plain': use application/x-protobuf or "
                              "application/json")
    assert logged[3].endswith(f": 413 body inflates past the {cap}-byte limit")
    assert logged[6].endswith(": 400 limit must be an integer, got 'lots'")
    assert logged[7].endswith(": 404 no session 'nope' (an id prefix needs at least 6 characters)")
    assert logged[9].endswith(": 405 POST is not allowed on '/api/sessions'")
    assert logged[12].endswith(": 405 POST is not allowed on '/healthz' (allowed: GET, HEAD)")
    assert not [line for line in logged if re.search(r": (\d{3}) \1\b", line)]  # the status is said once


OTLP_WHERE = "OTLP/HTTP exports are POSTed to /v1/logs, /v1/metrics and /v1/traces"


async def test_a_method_or_path_no_route_serves_is_answered_in_its_listeners_error_format_with_allow(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """OTLP paths (on both listeners) answer a google.rpc.Status in the request's encoding (JSON for a GET), /mcp
    JSON-RPC, every other path the JSON `{"error"}` shape: never aiohttp's text page; a 405 names what is allowed."""
    caplog.set_level(logging.INFO, "tollgate")
    protobuf = {"Content-Type": "application/x-protobuf"}
    config = gateway_config(echo_upstream("a"), otlp_listen="127.0.0.1:4318")
    answers = []
    async with running_service(config, tmp_path / "db") as svc, Http() as http:
        assert svc.service.otlp_app is not None
        async with serve_app(svc.service.otlp_app) as otlp_url:
            for method, url, headers in [
                ("GET", svc.base_url + "/v1/logs", {}),
                ("PUT", otlp_url + "/v1/metrics", {"Content-Type": "application/json"}),
                ("GET", svc.base_url + "/v1/traces", protobuf),
                ("POST", svc.base_url + "/v1/nothing", {}),
                ("GET", otlp_url + "/healthz", {}),
                ("DELETE", svc.base_url + "/healthz", {}),
                ("GET", svc.base_url + "/nothing", {}),
                ("PATCH", svc.base_url + "/ui/sessions", {}),
            ]:
                async with http.request(method, url, headers=headers) as response:
                    answers.append((response.status, response.content_type, response.headers.get("Allow"),
                                    await response.read()))
    not_allowed = "is not allowed on {}: OTLP/HTTP exports are sent with POST"

    def status(code: int, message: str) -> bytes:
        return orjson.dumps({"code": code, "message": message})

    assert answers == [
        (405, "application/json", "POST", status(12, "GET " + not_allowed.format("/v1/logs"))),
        (405, "application/json", "POST", status(12, "PUT " + not_allowed.format("/v1/metrics"))),
        (405, "application/x-protobuf", "POST", encode_status(12, "GET " + not_allowed.format("/v1/traces"))),
        (404, "application/json", None, status(5, f"no OTLP route '/v1/nothing': {OTLP_WHERE}")),
        (404, "application/json", None, status(5, f"no OTLP route '/healthz': {OTLP_WHERE}")),
        (405, "application/json", "GET,HEAD",
         b'{"error": "DELETE is not allowed on \'/healthz\' (allowed: GET, HEAD)"}'),
        (404, "application/json", None, b'{"error": "no route \'/nothing\'"}'),
        (405, "application/json", "GET,HEAD",
         b'{"error": "PATCH is not allowed on \'/ui/sessions\' (allowed: GET, HEAD)"}'),
    ]
    logged = [message.split(" from 127.0.0.1: ")[1] for _, message in refusals(caplog)]
    assert logged == [
        "405 GET " + not_allowed.format("/v1/logs"), "405 PUT " + not_allowed.format("/v1/metrics"),
        "405 GET " + not_allowed.format("/v1/traces"), f"404 no OTLP route '/v1/nothing': {OTLP_WHERE}",
        f"404 no OTLP route '/healthz': {OTLP_WHERE}", "405 DELETE is not allowed on '/healthz' (allowed: GET, HEAD)",
        "404 no route '/nothing'", "405 PATCH is not allowed on '/ui/sessions' (allowed: GET, HEAD)"]


async def test_otlp_paths_of_a_gateway_without_a_store_say_it_runs_no_otlp_receiver_in_json() -> None:
    async with running_gateway(gateway_config()) as url, Http() as http, \
            http.get(url.removesuffix("/mcp") + "/v1/logs") as response:
        assert (response.status, response.content_type) == (404, "application/json")
        assert await response.json() == {
            "error": "no route '/v1/logs': this server runs no OTLP receiver (it was started without a store)"}
