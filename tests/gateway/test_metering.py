"""Every byte that crosses Tollgate is counted where it crossed, and lands in the store once."""

from __future__ import annotations

import base64
import shlex
import sys
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientSession as Http

from gateway import jsonrpc, metering
from gateway.app import create_app
from gateway.config import UpstreamConfig
from tests.gateway.conftest import (
    RAW_SERVER,
    echo_upstream,
    everything_upstream,
    gateway_config,
    mcp_session,
    served,
)
from tests.gateway.recorder import Recorder
from tests.gateway.service import running_service
from tests.gateway.test_downstream import JSON_HEADERS, open_session


def teed_raw_upstream(name: str, tee: Path) -> UpstreamConfig:
    """The raw fixture server with its stdout copied byte for byte to `tee`: an independent record of
    exactly what the gateway read from the upstream."""
    server = shlex.join([sys.executable, str(RAW_SERVER), "--name", name])
    command = f"{server} | tee {shlex.quote(str(tee))}"
    return UpstreamConfig(name=name, type="stdio", command="sh", args=("-c", command))


async def call_raw(http: Http, url: str, session_id: str, request_id: int, tool: str,
                   arguments: dict[str, Any]) -> tuple[bytes, bytes]:
    body = orjson.dumps(jsonrpc.request_body(request_id, "tools/call", {"name": tool, "arguments": arguments}))
    async with http.post(url, data=body, headers={**JSON_HEADERS, "Mcp-Session-Id": session_id}) as response:
        assert response.content_type == "application/json"
        return body, await response.read()


async def test_call_rows_carry_exact_wire_bytes_on_every_hop(tmp_path: Path) -> None:
    tee = tmp_path / "upstream-stdout"
    config = gateway_config(teed_raw_upstream("raw", tee))
    async with running_service(config, tmp_path / "db") as svc, Http() as http:
        session_id = await open_session(http, svc.mcp_url)
        sent, received = await call_raw(http, svc.mcp_url, session_id, 7, "raw__utf8", {})
        rows = await svc.query("SELECT * FROM calls FINAL WHERE tool = 'utf8'")
    upstream_lines = tee.read_bytes().split(b"\n")
    answer = next(line for line in upstream_lines if b'"id"' in line and "é—🙂漢".encode() in line)
    (row,) = rows
    assert row["req_bytes_client"] == len(sent)
    assert row["resp_bytes_client"] == len(received)
    assert row["resp_bytes_upstream"] == len(answer)
    assert row["text_bytes"] == 12  # é—🙂漢 = 2 + 3 + 4 + 3 bytes of UTF-8
    assert row["status"] == "ok" and row["upstream"] == "raw" and row["exposed_name"] == "raw__utf8"
    assert orjson.loads(received)["result"]["content"][0]["text"] == "é—🙂漢"


async def test_a_5_mib_result_is_counted_exactly_with_its_token_estimate(tmp_path: Path) -> None:
    size = 5 * 1024 * 1024
    async with running_service(gateway_config(echo_upstream("a")), tmp_path / "db") as svc, Http() as http:
        session_id = await open_session(http, svc.mcp_url)
        _, received = await call_raw(http, svc.mcp_url, session_id, 1, "a__blob", {"n": size})
        (row,) = await svc.query("SELECT * FROM calls FINAL WHERE tool = 'blob'")
    assert len(orjson.loads(received)["result"]["content"][0]["text"]) == size
    assert row["text_bytes"] == size
    assert row["est_tokens"] == size // metering.BYTES_PER_TOKEN
    assert row["resp_bytes_client"] == len(received) and row["resp_bytes_upstream"] > size


async def test_image_blocks_count_encoded_and_decoded_bytes(tmp_path: Path) -> None:
    async with running_service(gateway_config(everything_upstream()), tmp_path / "db") as svc:
        async with mcp_session(svc.mcp_url) as client:
            result = await client.call_tool("everything__get-tiny-image", {})
        (row,) = await svc.query("SELECT * FROM calls FINAL WHERE tool = 'get-tiny-image'")
    images = [block for block in result.content if block.type == "image"]
    assert images
    assert row["image_bytes_encoded"] == sum(len(block.data) for block in images)  # type: ignore[union-attr]
    assert row["image_bytes_decoded"] == sum(len(base64.b64decode(b.data)) for b in images)  # type: ignore[union-attr]
    assert row["content_blocks"] == len(result.content)


async def test_tool_list_context_cost_equals_the_json_the_client_received(tmp_path: Path) -> None:
    async with running_service(gateway_config(echo_upstream("a"), echo_upstream("b")), tmp_path / "db") as svc:
        async with Http() as http:
            session_id = await open_session(http, svc.mcp_url)
            body = orjson.dumps(jsonrpc.request_body(1, "tools/list"))
            async with http.post(svc.mcp_url, data=body,
                                 headers={**JSON_HEADERS, "Mcp-Session-Id": session_id}) as response:
                tools = orjson.loads(await response.read())["result"]["tools"]
        rows = await svc.query("SELECT upstream, exposed_name, def_bytes, server_bytes FROM tool_lists FINAL")
    received = {tool["name"]: len(orjson.dumps(tool)) for tool in tools}
    latest = {row["exposed_name"]: row for row in rows}
    assert {name: row["def_bytes"] for name, row in latest.items()} == received
    for upstream in ("a", "b"):
        per_server = sum(size for name, size in received.items() if name.startswith(f"{upstream}__"))
        assert {row["server_bytes"] for row in latest.values() if row["upstream"] == upstream} == {per_server}


async def test_a_gateway_with_no_observer_and_no_policy_meters_nothing(monkeypatch: Any) -> None:
    """`serve --no-store` (the bench's metering-off arm) relays without breaking results down; one observer is
    enough to have every call measured again."""
    measured: list[int] = []
    real = metering.measure

    def counting(result: dict[str, Any]) -> metering.ContentSizes:
        measured.append(1)
        return real(result)

    monkeypatch.setattr(metering, "measure", counting)
    recorder = Recorder()
    for observers in ([], [recorder]):
        async with served(create_app(gateway_config(echo_upstream("a")), observers=observers)) as url, Http() as http:
            session_id = await open_session(http, url)
            _, received = await call_raw(http, url, session_id, 1, "a__echo", {"text": "héllo"})
        result = orjson.loads(received)["result"]
        assert result["content"][0]["text"] == "héllo"
    assert len(measured) == 1
    assert [(c.tool, c.text_bytes, c.est_tokens) for c in recorder.calls] == [("echo", 6, real(result).est_tokens)]
