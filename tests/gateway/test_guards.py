"""The DNS-rebinding guard: a loopback-bound Tollgate answers loopback Host names only, and no foreign Origin.

Runs the whole service (store, ingest, API, UI) so every kind of route is behind the same guard.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from aiohttp import ClientSession as Http

from gateway.config import ServerConfig
from gateway.guards import allowed_hosts, host_of, origin_allowed
from tests.gateway.conftest import gateway_config
from tests.gateway.service import running_service

CAPTURE = Path(__file__).resolve().parents[1] / "data" / "claude_code" / "s2_json" / "otlp" / "0001_logs.json"
ROUTES = ["/api/sessions", "/healthz", "/metrics", "/", "/mcp"]


async def _status(http: Http, method: str, url: str, **headers: str) -> tuple[int, bytes]:
    async with http.request(method, url, headers=headers, data=b"{}" if method == "POST" else None) as response:
        return response.status, await response.read()


@pytest.mark.parametrize("path", ROUTES)
async def test_a_rebound_host_name_is_refused_on_every_route(tmp_path: Path, path: str) -> None:
    async with running_service(gateway_config(), tmp_path / "store") as svc, Http() as http:
        method = "POST" if path == "/mcp" else "GET"
        status, body = await _status(http, method, svc.base_url + path, Host="evil.example:8765")
        assert status == 403
        if path == "/mcp":
            assert orjson.loads(body)["error"]["code"] == -32600
        loopback, _ = await _status(http, "GET", svc.base_url + "/healthz", Host="localhost:8765")
        assert loopback == 200


async def test_telemetry_from_a_foreign_origin_is_refused_and_stores_nothing(tmp_path: Path) -> None:
    body = CAPTURE.read_bytes()
    json_type = {"Content-Type": "application/json"}
    async with running_service(gateway_config(), tmp_path / "store") as svc, Http() as http:
        url = svc.base_url + "/v1/logs"
        async with http.post(url, data=body, headers={"Origin": "http://evil.example", **json_type}) as response:
            assert response.status == 403
        assert (await svc.query("SELECT count() AS n FROM cc_api_requests"))[0]["n"] == 0
        async with http.post(url, data=body, headers=json_type) as response:
            assert response.status == 200
        assert (await svc.query("SELECT count() AS n FROM cc_api_requests"))[0]["n"] > 0


async def test_configured_hosts_and_origins_are_answered(tmp_path: Path) -> None:
    config = gateway_config(allowed_hosts=("tollgate.internal",), allowed_origins=("https://ui.example",))
    async with running_service(config, tmp_path / "store") as svc, Http() as http:
        for host in ("tollgate.internal", "ui.example:443"):
            status, _ = await _status(http, "GET", svc.base_url + "/healthz", Host=host)
            assert status == 200, host
        status, _ = await _status(http, "GET", svc.base_url + "/healthz", Origin="https://ui.example")
        assert status == 200


def test_a_server_listening_beyond_loopback_checks_no_host_names() -> None:
    assert allowed_hosts(ServerConfig(listen="0.0.0.0:8765", auth_tokens=("t",))) is None
    assert allowed_hosts(ServerConfig()) == frozenset()


@pytest.mark.parametrize(("header", "host"), [("127.0.0.1:8765", "127.0.0.1"), ("[::1]:8765", "::1"),
                                              ("Example.ORG", "example.org"), ("", ""), ("[", "[")])
def test_host_header_parsing(header: str, host: str) -> None:
    assert host_of(header) == host


def test_loopback_origins_are_allowed_and_others_only_when_configured() -> None:
    assert origin_allowed("http://localhost:3000", ())
    assert origin_allowed("http://[::1]:8765", ())
    assert not origin_allowed("https://evil.example", ())
    assert origin_allowed("https://ui.example", ("https://ui.example",))
    assert not origin_allowed("http://[::1", ())


@pytest.mark.parametrize("headers", [{"Host": "["}, {"Host": "a b[c"}, {"Origin": "http://[::1"}])
async def test_a_malformed_host_or_origin_is_refused_not_an_internal_error(
        tmp_path: Path, headers: dict[str, str]) -> None:
    async with running_service(gateway_config(), tmp_path / "store") as svc, Http() as http:
        for path in ("/mcp", "/api/sessions", "/v1/logs"):
            status, body = await _status(http, "POST" if path != "/api/sessions" else "GET", svc.base_url + path,
                                         **headers)
            assert status == 403, (path, body)
