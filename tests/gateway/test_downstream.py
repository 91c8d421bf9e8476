"""The `/mcp` endpoint speaks Streamable HTTP correctly to raw HTTP clients (sessions, versions, errors)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession as Http

from gateway import jsonrpc, mcp
from gateway.app import HUB_KEY, create_app
from tests.gateway.conftest import echo_upstream, gateway_config, running_gateway, served

JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


@pytest.fixture
async def endpoint() -> AsyncIterator[str]:
    async with running_gateway(gateway_config(echo_upstream("a"), max_body_bytes=64 * 1024)) as url:
        yield url


async def post(http: Http, url: str, body: Any, session_id: str | None = None,
               **headers: str) -> tuple[int, dict[str, str], Any]:
    all_headers = {**JSON_HEADERS, **headers}
    if session_id:
        all_headers["Mcp-Session-Id"] = session_id
    async with http.post(url, data=orjson.dumps(body) if not isinstance(body, bytes) else body,
                         headers=all_headers) as response:
        raw = await response.read()
        parsed = orjson.loads(raw) if raw and response.content_type == "application/json" else raw
        return response.status, dict(response.headers), parsed


def initialize(version: str = "2025-11-25", request_id: int = 0) -> dict[str, Any]:
    return jsonrpc.request_body(request_id, "initialize", {
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw-test", "version": "1"}})


async def open_session(http: Http, url: str, version: str = "2025-11-25") -> str:
    status, headers, body = await post(http, url, initialize(version))
    assert status == 200, body
    await post(http, url, jsonrpc.notification_body("notifications/initialized"), headers["Mcp-Session-Id"])
    return headers["Mcp-Session-Id"]


async def test_stateless_probe_is_refused_like_a_legacy_server_so_clients_fall_back(endpoint: str) -> None:
    probe = jsonrpc.request_body("server-discover-probe-1", "server/discover", {
        "_meta": {mcp.META_PROTOCOL_VERSION: "2026-07-28"}})
    async with Http() as http:
        status, _, body = await post(http, endpoint, probe, **{"MCP-Protocol-Version": "2026-07-28",
                                                               "Mcp-Method": "server/discover"})
        assert status == 400
        assert body["error"]["code"] == jsonrpc.INVALID_REQUEST
        assert body["error"]["code"] != -32022 and "result" not in body
        assert await open_session(http, endpoint)  # the fallback works


@pytest.mark.parametrize(("asked", "expected"), [("2024-11-05", "2024-11-05"), ("2025-03-26", "2025-03-26"),
                                                  ("2025-06-18", "2025-06-18"), ("2025-11-25", "2025-11-25"),
                                                  ("2099-01-01", mcp.LATEST_VERSION)])
async def test_initialize_echoes_a_supported_version_and_offers_the_latest_otherwise(
        endpoint: str, asked: str, expected: str) -> None:
    async with Http() as http:
        status, headers, body = await post(http, endpoint, initialize(asked))
    assert status == 200
    assert body["result"]["protocolVersion"] == expected
    assert headers["Mcp-Session-Id"]


@pytest.mark.parametrize("params", [None, {}, {"protocolVersion": 20250618, "capabilities": {}}])
async def test_an_initialize_without_a_protocol_version_gets_invalid_params_and_no_session(
        endpoint: str, params: dict[str, Any] | None) -> None:
    async with Http() as http:
        status, headers, body = await post(http, endpoint, jsonrpc.request_body(3, "initialize", params))
        assert status == 200 and "Mcp-Session-Id" not in headers
        assert (body["id"], body["error"]["code"]) == (3, jsonrpc.INVALID_PARAMS)
        assert "params.protocolVersion" in body["error"]["message"]
        assert await open_session(http, endpoint)  # a proper initialize still works


async def test_a_2024_11_05_session_lists_and_calls_tools(endpoint: str) -> None:
    async with Http() as http:  # a client of that revision sends no MCP-Protocol-Version header
        session_id = await open_session(http, endpoint, "2024-11-05")
        list_status, _, listed = await post(http, endpoint, jsonrpc.request_body(1, "tools/list"), session_id)
        call = jsonrpc.request_body(2, "tools/call", {"name": "a__echo", "arguments": {"text": "old client"}})
        call_status, _, answer = await post(http, endpoint, call, session_id)
    assert list_status == 200 and "a__echo" in {tool["name"] for tool in listed["result"]["tools"]}
    assert call_status == 200 and answer["result"]["content"] == [{"type": "text", "text": "old client"}]
    assert not answer["result"]["isError"]


async def test_a_supported_but_different_version_header_is_accepted_and_logged(
        endpoint: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tollgate.downstream")
    async with Http() as http:
        session_id = await open_session(http, endpoint, "2025-03-26")
        status, _, body = await post(http, endpoint, jsonrpc.request_body(1, "tools/list"), session_id,
                                     **{"MCP-Protocol-Version": "2025-11-25"})
        assert status == 200 and "a__echo" in {t["name"] for t in body["result"]["tools"]}
        status, _, body = await post(http, endpoint, jsonrpc.request_body(2, "tools/list"), session_id,
                                     **{"MCP-Protocol-Version": "1999-01-01"})
        assert status == 400 and body["error"]["code"] == jsonrpc.INVALID_REQUEST
    logged = [r.getMessage() for r in caplog.records if r.name == "tollgate.downstream"]
    assert f"session {session_id[:8]} negotiated 2025-03-26 but sent MCP-Protocol-Version 2025-11-25" in logged


async def test_missing_session_is_400_unknown_is_404_and_delete_ends_it(endpoint: str) -> None:
    async with Http() as http:
        status, _, _ = await post(http, endpoint, jsonrpc.request_body(1, "tools/list"))
        assert status == 400
        status, _, _ = await post(http, endpoint, jsonrpc.request_body(1, "tools/list"), "no-such-session")
        assert status == 404
        session_id = await open_session(http, endpoint)
        async with http.delete(endpoint, headers={"Mcp-Session-Id": session_id}) as response:
            assert response.status == 200
        status, _, _ = await post(http, endpoint, jsonrpc.request_body(1, "tools/list"), session_id)
        assert status == 404


async def test_batches_are_rejected_before_any_dispatch(endpoint: str) -> None:
    async with Http() as http:
        session_id = await open_session(http, endpoint)
        batch = [jsonrpc.request_body(i, "tools/call", {"name": "a__echo", "arguments": {"text": "x"}})
                 for i in range(50)]
        status, _, body = await post(http, endpoint, batch, session_id)
    assert status == 400
    assert body["error"]["code"] == jsonrpc.INVALID_REQUEST and body["id"] is None


@pytest.mark.parametrize(("raw", "code", "says"), [
    (b"{not json", jsonrpc.PARSE_ERROR, "Parse error: unexpected character"),
    (b'{"jsonrpc":"2.0","id":1,"method":"p\xffing"}', jsonrpc.PARSE_ERROR,
     "Parse error: the body is not valid UTF-8 (byte 0xff at offset 35)"),
    (b'"text"', jsonrpc.INVALID_REQUEST, "Invalid Request: a message must be a JSON object"),
    (b'{"jsonrpc":"2.0","id":true,"method":"x"}', jsonrpc.INVALID_REQUEST,
     "Invalid Request: id must be a string or an integer, got a boolean true"),
    (b'{"jsonrpc":"2.0","id":1.5,"method":"x"}', jsonrpc.INVALID_REQUEST,
     "Invalid Request: id must be a string or an integer, got a number with a fraction 1.5"),
    (b'{"jsonrpc":"1.0","id":1,"method":"x"}', jsonrpc.INVALID_REQUEST,
     'Invalid Request: "jsonrpc" must be "2.0", got "1.0"'),
    (b'{"id":1,"method":"x"}', jsonrpc.INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0", got none'),
    (b'{"jsonrpc":"2.0","id":null,"method":"ping"}', jsonrpc.INVALID_REQUEST,
     "Invalid Request: a request id must not be null")])
async def test_malformed_messages_get_a_precise_error(endpoint: str, raw: bytes, code: int, says: str) -> None:
    async with Http() as http:
        session_id = await open_session(http, endpoint)
        status, _, body = await post(http, endpoint, raw, session_id)
        assert (status, body["error"]["code"]) == (400, code)
        assert body["error"]["message"].startswith(says)
        status, _, body = await post(http, endpoint, jsonrpc.request_body(9, "ping"), session_id)
        assert (status, body["result"]) == (200, {})  # and the session keeps serving


async def test_unknown_methods_tools_and_cursors_get_jsonrpc_errors(endpoint: str) -> None:
    async with Http() as http:
        session_id = await open_session(http, endpoint)
        _, _, body = await post(http, endpoint, jsonrpc.request_body(1, "no/such"), session_id)
        assert body["error"]["code"] == jsonrpc.METHOD_NOT_FOUND
        _, _, body = await post(http, endpoint, jsonrpc.request_body(2, "tools/call", {"name": "nope"}), session_id)
        assert body["error"]["code"] == jsonrpc.INVALID_PARAMS
        _, _, body = await post(http, endpoint, jsonrpc.request_body(3, "tools/list", {"cursor": "zzz"}), session_id)
        assert body["error"]["code"] == jsonrpc.INVALID_PARAMS


async def test_foreign_origins_are_refused_naming_the_origin_and_loopback_origins_allowed(endpoint: str) -> None:
    async with Http() as http:
        status, _, body = await post(http, endpoint, initialize(), Origin="https://evil.example")
        assert status == 403
        assert body["error"]["message"] == ("Forbidden: Origin 'https://evil.example' is not allowed "
                                            "(Tollgate answers loopback origins and server.allowed_origins)")
        status, _, _ = await post(http, endpoint, initialize(), Origin="http://localhost:3000")
        assert status == 200


async def test_oversized_bodies_get_413_and_wrong_media_type_415(endpoint: str) -> None:
    too_large = "Payload Too Large: the limit is 65536 bytes"
    big = orjson.dumps(jsonrpc.request_body(1, "tools/call", {"name": "a__echo", "arguments": {"text": "x" * 100_000}}))

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the cap must hold on the bytes as read
        for start in range(0, len(big), 8192):
            yield big[start:start + 8192]

    async with Http() as http:
        session_id = await open_session(http, endpoint)
        status, _, body = await post(http, endpoint, big, session_id)
        assert (status, body["error"]["code"], body["error"]["message"]) == (413, jsonrpc.INVALID_REQUEST, too_large)
        headers = {**JSON_HEADERS, "Mcp-Session-Id": session_id}
        async with http.post(endpoint, data=chunked(), headers=headers) as response:
            assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
            assert "Content-Length" not in response.request_info.headers
            assert (response.status, (await response.json())["error"]["message"]) == (413, too_large)
        status, _, _ = await post(http, endpoint, initialize(), **{"Content-Type": "text/plain"})
        assert status == 415


async def test_notifications_get_202_and_requests_before_initialized_are_served(endpoint: str) -> None:
    async with Http() as http:
        _, headers, _ = await post(http, endpoint, initialize())
        session_id = headers["Mcp-Session-Id"]
        status, _, body = await post(http, endpoint, jsonrpc.request_body(1, "tools/list"), session_id)
        assert status == 200 and body["result"]["tools"]
        status, _, _ = await post(http, endpoint, jsonrpc.notification_body("notifications/initialized"), session_id)
        assert status == 202


async def test_bearer_token_required_when_configured() -> None:
    config = gateway_config(echo_upstream("a"), auth_tokens=("s3cret",))
    async with running_gateway(config) as url, Http() as http:
        status, headers, _ = await post(http, url, initialize())
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        status, _, _ = await post(http, url, initialize(), Authorization="Bearer wrong")
        assert status == 401
        status, _, _ = await post(http, url, initialize(), Authorization="Bearer s3cret")
        assert status == 200


async def test_healthz_reports_each_upstream(endpoint: str) -> None:
    async with Http() as http, http.get(endpoint.replace("/mcp", "/healthz")) as response:
        health = await response.json()
    assert response.status == 200
    assert health["status"] == "ok"
    assert health["upstreams"]["a"]["state"] == "ready" and health["upstreams"]["a"]["tools"] >= 5


async def test_api_and_metrics_need_the_bearer_token_when_one_is_configured(tmp_path: Any) -> None:
    from tests.gateway.service import running_service

    config = gateway_config(echo_upstream("a"), auth_tokens=("s3cret",))
    async with running_service(config, tmp_path / "db") as svc, Http() as http:
        for path in ("/api/sessions", "/api/servers", "/metrics"):
            async with http.get(svc.base_url + path) as response:
                assert response.status == 401, path
            async with http.get(svc.base_url + path, headers={"Authorization": "Bearer s3cret"}) as response:
                assert response.status == 200, path
        async with http.get(svc.base_url + "/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}  # no upstream names or errors without the token
        async with http.get(svc.base_url + "/healthz", headers={"Authorization": "Bearer s3cret"}) as response:
            assert (await response.json())["upstreams"]["a"]["state"] == "ready"


async def test_an_initialize_past_max_sessions_gets_503_until_a_session_ends(
        tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    from tests.gateway.service import running_service

    async with running_service(gateway_config(echo_upstream("a"), max_sessions=3), tmp_path / "db") as svc, \
            Http() as http:
        url = svc.mcp_url
        sessions = [await open_session(http, url) for _ in range(3)]
        for request_id in (4, 5):
            status, headers, body = await post(http, url, initialize(request_id=request_id))
            assert status == 503 and "Mcp-Session-Id" not in headers
            assert int(headers["Retry-After"]) > 0
            assert body["id"] == request_id and body["error"]["code"] == jsonrpc.SERVER_BUSY
            assert "3 sessions" in body["error"]["message"]
        async with http.delete(url, headers={"Mcp-Session-Id": sessions[0]}) as deleted:
            assert deleted.status == 200
        assert await open_session(http, url)
        async with http.get(svc.base_url + "/metrics") as response:
            metrics = await response.text()
    assert "tollgate_sessions_refused_total 2" in metrics.splitlines()
    assert "tollgate_sessions_open 3" in metrics.splitlines()
    refusals = [r for r in caplog.records if r.name == "tollgate.downstream" and "refused" in r.getMessage()]
    assert len(refusals) == 1  # rate-limited: one line for the flood


async def test_a_method_mcp_does_not_take_gets_405_in_json_rpc_and_an_api_path_says_no_api_runs(
        endpoint: str) -> None:
    """The bare gateway (what `serve --no-store` runs) has no API: its 404 must not point at an openapi.json that
    is not there; a PUT on /mcp is answered in JSON-RPC, as everything on /mcp is, with the methods it takes."""
    async with Http() as http:
        async with http.put(endpoint, data=b"{}", headers=JSON_HEADERS) as response:
            assert response.status == 405 and response.content_type == "application/json"
            assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"POST", "GET", "DELETE"}
            body = orjson.loads(await response.read())
        assert (body["id"], body["error"]["code"]) == (None, jsonrpc.INVALID_REQUEST)
        assert body["error"]["message"] == "Method Not Allowed: PUT (/mcp takes POST, GET and DELETE)"
        async with http.get(endpoint.removesuffix("/mcp") + "/api/sessions") as response:
            assert response.status == 404
            assert orjson.loads(await response.read()) == {
                "error": "no API route '/api/sessions' (this server runs no API: it was started without a store)"}


NOT_ACCEPTABLE = "Not Acceptable: Accept must include application/json and text/event-stream (got {!r})"


@pytest.mark.parametrize("accept", ["text/html", "image/png, text/plain", "application/json;q=0, text/html",
                                    "text/plain;q=0.9, text/event-stream;q=0"])
async def test_a_post_whose_accept_takes_neither_json_nor_sse_gets_406_naming_what_it_must_contain(
        accept: str) -> None:
    app = create_app(gateway_config(echo_upstream("a")))
    async with served(app) as url, Http() as http:
        status, headers, body = await post(http, url, initialize(), Accept=accept)
        assert status == 406 and "Mcp-Session-Id" not in headers
        assert body == jsonrpc.error_body(None, jsonrpc.INVALID_REQUEST, NOT_ACCEPTABLE.format(accept))
        assert len(app[HUB_KEY].sessions) == 0  # refused before anything was made


@pytest.mark.parametrize("accept", [None, "", "*/*", "application/*", "text/*", "application/json",
                                    "text/event-stream", "text/html, application/json;q=0.5", "*/*;q=oops"])
async def test_a_post_accepting_json_or_sse_or_sending_no_accept_is_served(endpoint: str, accept: str | None) -> None:
    headers = {"Content-Type": "application/json"} if accept is None else {"Content-Type": "application/json",
                                                                          "Accept": accept}
    async with Http(skip_auto_headers=["Accept"]) as http, \
            http.post(endpoint, data=orjson.dumps(initialize()), headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Mcp-Session-Id"]


async def test_an_initialize_with_a_live_session_id_is_refused_and_creates_nothing() -> None:
    app = create_app(gateway_config(echo_upstream("a")))
    sessions = app[HUB_KEY].sessions
    async with served(app) as url, Http() as http:
        session_id = await open_session(http, url)
        status, headers, body = await post(http, url, initialize(request_id=7), session_id)
        assert (status, "Mcp-Session-Id" in headers) == (400, False)
        assert body == jsonrpc.error_body(7, jsonrpc.INVALID_REQUEST, "Bad Request: session already initialized; "
                                             "start a new session without Mcp-Session-Id")
        assert [s.session_id for s in sessions] == [session_id]  # nothing new, and the live one goes on
        status, _, body = await post(http, url, jsonrpc.request_body(8, "tools/list"), session_id)
        assert status == 200 and body["result"]["tools"]


async def test_an_initialize_with_an_unknown_session_id_starts_a_new_session_under_a_new_id() -> None:
    """As one without the header does: a client that kept an id from before a restart gets a session, and the
    answer's Mcp-Session-Id (the one it must use from now on) is not the stale one."""
    app = create_app(gateway_config(echo_upstream("a")))
    sessions = app[HUB_KEY].sessions
    stale = "deadbeef-0000-4000-8000-000000000000"
    async with served(app) as url, Http() as http:
        status, headers, body = await post(http, url, initialize(request_id=9), stale)
        assert status == 200 and body["result"]["protocolVersion"] == "2025-11-25"
        assert headers["Mcp-Session-Id"] != stale
        assert [s.session_id for s in sessions] == [headers["Mcp-Session-Id"]]
