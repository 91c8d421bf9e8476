"""Every byte that crosses Tollgate is counted where it crossed, and lands in the store once."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientSession as Http

from gateway import jsonrpc, metering
from gateway.app import create_app
from tests.fixtures.servers.echo_server import UTF8_TEXT
from tests.gateway.conftest import (
    EVERYTHING,
    echo_upstream,
    everything_upstream,
    gateway_config,
    raw_upstream,
    served,
)
from tests.gateway.recorder import Recorder
from tests.gateway.service import running_service
from tests.gateway.taps import Wire, teed
from tests.gateway.test_downstream import JSON_HEADERS, open_session

HOPS = ("req_bytes_client", "req_bytes_upstream", "resp_bytes_upstream", "resp_bytes_client")
EVERYTHING_DOC = EVERYTHING.resolve().parent / "docs" / "architecture.md"  # served as a static resource


def hops(row: dict[str, Any]) -> tuple[int, ...]:
    return tuple(row[hop] for hop in HOPS)


async def post_raw(http: Http, url: str, session_id: str, request_id: int, method: str,
                   params: dict[str, Any]) -> tuple[bytes, bytes]:
    """One request as the exact bytes sent; returns them and the exact JSON answer bytes received."""
    body = orjson.dumps(jsonrpc.request_body(request_id, method, params))
    async with http.post(url, data=body, headers={**JSON_HEADERS, "Mcp-Session-Id": session_id}) as response:
        assert response.content_type == "application/json"
        return body, await response.read()


async def call_raw(http: Http, url: str, session_id: str, request_id: int, tool: str,
                   arguments: dict[str, Any]) -> tuple[bytes, bytes]:
    return await post_raw(http, url, session_id, request_id, "tools/call", {"name": tool, "arguments": arguments})


def compact_json_len(value: Any) -> int:
    """UTF-8 length of `value` as compact JSON (how structured content is sized), without orjson."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def array_items(raw: bytes, key: bytes) -> tuple[list[bytes], bytes]:
    """The elements (objects) of the first array under `"key":` in `raw`, each as the exact bytes sent, and the
    array's whole inner text, found by scanning brackets and strings: nothing re-encoded."""
    start = raw.index(b'"' + key + b'":[') + len(key) + 4
    items: list[bytes] = []
    depth, begin, in_string, escaped = 1, start, False, False
    for i in range(start, len(raw)):
        char = raw[i : i + 1]
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == b"\\", char != b'"')
        elif char == b'"':
            in_string = True
        elif char in (b"{", b"["):
            depth += 1
            begin = i if depth == 2 else begin
        elif char in (b"}", b"]"):
            depth -= 1
            if depth == 1:
                items.append(raw[begin : i + 1])
            elif depth == 0:
                return items, raw[start:i]
    raise AssertionError(f"no end to the {key!r} array")


async def test_call_rows_carry_exact_wire_bytes_on_every_hop(tmp_path: Path) -> None:
    config = gateway_config(teed(raw_upstream("raw", "--name", "raw"), tmp_path))
    async with running_service(config, tmp_path / "db") as svc, Http() as http:
        session_id = await open_session(http, svc.mcp_url)
        sent, received = await call_raw(http, svc.mcp_url, session_id, 7, "raw__utf8", {})
        rows = await svc.query("SELECT * FROM calls FINAL WHERE tool = 'utf8'")
    to_upstream, answer = Wire.of(tmp_path, "raw").hop("tools/call", "name", "utf8")
    (row,) = rows
    assert hops(row) == (len(sent), len(to_upstream), len(answer), len(received))
    assert "é—🙂漢".encode() in answer
    assert row["text_bytes"] == 12  # é—🙂漢 = 2 + 3 + 4 + 3 bytes of UTF-8
    assert row["status"] == "ok" and row["upstream"] == "raw" and row["exposed_name"] == "raw__utf8"
    assert orjson.loads(received)["result"]["content"][0]["text"] == "é—🙂漢"


async def test_a_5_mib_non_ascii_result_is_counted_exactly_on_every_hop_with_its_token_estimate(
        tmp_path: Path) -> None:
    size = 5 * 1024 * 1024
    async with running_service(gateway_config(teed(echo_upstream("a"), tmp_path)), tmp_path / "db") as svc, \
            Http() as http:
        session_id = await open_session(http, svc.mcp_url)
        sent, received = await call_raw(http, svc.mcp_url, session_id, 1, "a__utf8_blob", {"n": size})
        (row,) = await svc.query("SELECT * FROM calls FINAL WHERE tool = 'utf8_blob'")
    to_upstream, answer = Wire.of(tmp_path, "a").hop("tools/call", "name", "utf8_blob")
    text = orjson.loads(received)["result"]["content"][0]["text"]
    assert len(text.encode()) == size and text.startswith(UTF8_TEXT * 1000)
    assert UTF8_TEXT.encode() * 1000 in answer and UTF8_TEXT.encode() * 1000 in received  # raw UTF-8, no \\u
    assert hops(row) == (len(sent), len(to_upstream), len(answer), len(received))
    assert row["text_bytes"] == size
    assert row["est_tokens"] == size // metering.BYTES_PER_TOKEN


async def test_image_blocks_count_encoded_and_decoded_bytes_and_every_hop_exactly(tmp_path: Path) -> None:
    config = gateway_config(teed(everything_upstream(), tmp_path))
    async with running_service(config, tmp_path / "db") as svc, Http() as http:
        session_id = await open_session(http, svc.mcp_url)
        sent, received = await call_raw(http, svc.mcp_url, session_id, 1, "everything__get-tiny-image", {})
        (row,) = await svc.query("SELECT * FROM calls FINAL WHERE tool = 'get-tiny-image'")
    to_upstream, answer = Wire.of(tmp_path, "everything").hop("tools/call", "name", "get-tiny-image")
    content = orjson.loads(received)["result"]["content"]
    images = [block["data"] for block in content if block["type"] == "image"]
    assert len(images) == 1
    assert hops(row) == (len(sent), len(to_upstream), len(answer), len(received))
    assert row["image_bytes_encoded"] == len(images[0])
    assert row["image_bytes_decoded"] == len(base64.b64decode(images[0]))
    assert row["content_blocks"] == len(content)
    text = sum(len(block["text"].encode()) for block in content if block["type"] == "text")
    assert (row["text_bytes"], row["est_tokens"]) == (text, -(-text // 4) + metering.IMAGE_TOKENS)


async def test_audio_embedded_resource_and_structured_content_are_counted_exactly(tmp_path: Path) -> None:
    text = f"{UTF8_TEXT} in a resource"
    async with running_service(gateway_config(echo_upstream("a")), tmp_path / "db") as svc, Http() as http:
        session_id = await open_session(http, svc.mcp_url)
        results = {tool: orjson.loads((await call_raw(http, svc.mcp_url, session_id, i, f"a__{tool}", args))[1])
                   for i, (tool, args) in enumerate([("audio", {"n": 1001}), ("embedded", {"text": text}),
                                                     ("echo", {"text": UTF8_TEXT})])}
        rows = {r["tool"]: r for r in await svc.query("SELECT * FROM calls FINAL")}
    sizes = ("text_bytes", "audio_bytes", "resource_bytes", "structured_bytes", "content_blocks", "est_tokens")
    [audio] = results["audio"]["result"]["content"]
    assert len(base64.b64decode(audio["data"])) == 1001
    assert tuple(rows["audio"][k] for k in sizes) == (0, 1001, 0, 0, 1, 0)  # audio has no token estimate
    [embedded] = results["embedded"]["result"]["content"]
    assert embedded["resource"]["text"] == text
    resource = len(text.encode())
    assert tuple(rows["embedded"][k] for k in sizes) == (0, 0, resource, 0, 1, -(-resource // 4))
    structured = compact_json_len(results["echo"]["result"]["structuredContent"])
    assert structured == len(b'{"result":""}') + 12
    assert tuple(rows["echo"][k] for k in sizes) == (12, 0, 0, structured, 1, -(-(12 + structured) // 4))


async def test_resources_read_and_prompts_get_rows_carry_exact_sizes_on_every_hop(tmp_path: Path) -> None:
    uri = "demo://resource/static/document/architecture.md"
    prompt = {"name": "everything__resource-prompt", "arguments": {"resourceType": "Text", "resourceId": "2"}}
    async with running_service(gateway_config(teed(everything_upstream(), tmp_path)), tmp_path / "db") as svc, \
            Http() as http:
        session_id = await open_session(http, svc.mcp_url)
        read = await post_raw(http, svc.mcp_url, session_id, 1, "resources/read", {"uri": uri})
        got = await post_raw(http, svc.mcp_url, session_id, 2, "prompts/get", prompt)
        rows = {r["method"]: r for r in await svc.query("SELECT * FROM calls FINAL")}
    wire = Wire.of(tmp_path, "everything")
    document = EVERYTHING_DOC.stat().st_size
    assert orjson.loads(read[1])["result"]["contents"][0]["text"].encode() == EVERYTHING_DOC.read_bytes()
    row = rows["resources/read"]
    assert (row["upstream"], row["tool"], row["exposed_name"], row["status"]) == ("everything", uri, uri, "ok")
    assert hops(row) == (len(read[0]), *map(len, wire.hop("resources/read", "uri", uri)), len(read[1]))
    assert (row["resource_bytes"], row["text_bytes"], row["content_blocks"], row["est_tokens"]) == (
        document, 0, 1, -(-document // 4))

    first, second = (m["content"] for m in orjson.loads(got[1])["result"]["messages"])
    text, resource = len(first["text"].encode()), len(second["resource"]["text"].encode())
    assert second["resource"]["text"].startswith("Resource 2: ")
    row = rows["prompts/get"]
    assert (row["tool"], row["exposed_name"], row["status"]) == ("resource-prompt", prompt["name"], "ok")
    assert hops(row) == (len(got[0]), *map(len, wire.hop("prompts/get", "name", "resource-prompt")), len(got[1]))
    assert (row["text_bytes"], row["resource_bytes"], row["content_blocks"], row["est_tokens"]) == (
        text, resource, 2, -(-(text + resource) // 4))


async def test_call_rows_name_the_client_and_the_bearer_token_it_used(tmp_path: Path) -> None:
    config = gateway_config(echo_upstream("a"), auth_tokens=("first-secret", "second-secret"))
    auth = {**JSON_HEADERS, "Authorization": "Bearer second-secret"}
    init = jsonrpc.request_body(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                                  "clientInfo": {"name": "metering-client", "version": "3.1.4"}})
    async with running_service(config, tmp_path / "db") as svc, Http() as http:
        async with http.post(svc.mcp_url, json=init, headers=auth) as response:
            assert response.status == 200
            session = {**auth, "Mcp-Session-Id": response.headers["Mcp-Session-Id"]}
        for body in (jsonrpc.notification_body("notifications/initialized"),
                     jsonrpc.request_body(1, "tools/call", {"name": "a__whoami", "arguments": {}})):
            async with http.post(svc.mcp_url, json=body, headers=session) as response:
                assert response.status in (200, 202)
        (row,) = await svc.query("SELECT * FROM calls FINAL")
    # The identity is the token's place in server.auth_tokens (1-based), never the secret itself.
    assert (row["client_name"], row["client_version"], row["auth_identity"]) == (
        "metering-client", "3.1.4", "token-2")


async def test_tool_list_context_cost_is_the_bytes_of_each_definition_the_client_received(tmp_path: Path) -> None:
    async with running_service(gateway_config(echo_upstream("a"), echo_upstream("b")), tmp_path / "db") as svc:
        async with Http() as http:
            session_id = await open_session(http, svc.mcp_url)
            _, raw = await post_raw(http, svc.mcp_url, session_id, 1, "tools/list", {})
        rows = await svc.query("SELECT upstream, exposed_name, def_bytes, server_bytes FROM tool_lists FINAL")
    definitions, inner = array_items(raw, b"tools")
    assert inner == b",".join(definitions)  # every byte of the list is in one definition or a separator
    assert [orjson.loads(d) for d in definitions] == orjson.loads(raw)["result"]["tools"]
    received = {orjson.loads(d)["name"]: len(d) for d in definitions}
    assert {row["exposed_name"]: row["def_bytes"] for row in rows} == received
    for upstream in ("a", "b"):
        per_server = sum(size for name, size in received.items() if name.startswith(f"{upstream}__"))
        assert {row["server_bytes"] for row in rows if row["upstream"] == upstream} == {per_server}



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


async def test_requests_answered_with_a_json_rpc_error_leave_one_protocol_error_row_with_their_bytes(
        tmp_path: Path) -> None:
    unknown_uri = "echo://a/missing"  # a's resources do not match it: the upstream answers with an error
    asked = {  # request id -> (method, params, what the row's tool and exposed name are)
        1: ("tools/call", {"name": "a__nope", "arguments": {}}, "a__nope"),
        2: ("tools/call", {"name": 5, "arguments": {}}, ""),
        3: ("tools/call", {"name": "a__echo", "arguments": {"text": "x"}, "_meta": 7}, "a__echo"),
        4: ("prompts/get", {"name": "a__nope"}, "a__nope"),
        5: ("resources/read", {"uri": unknown_uri}, unknown_uri),
    }
    async with running_service(gateway_config(teed(echo_upstream("a"), tmp_path)), tmp_path / "db") as svc, \
            Http() as http:
        session_id = await open_session(http, svc.mcp_url)
        wire = {i: await post_raw(http, svc.mcp_url, session_id, i, method, params)
                for i, (method, params, _) in asked.items()}
        rows = await svc.query("SELECT * FROM calls FINAL ORDER BY started_at")
    upstream_hop = Wire.of(tmp_path, "a").hop("resources/read", "uri", unknown_uri)
    errors = {i: orjson.loads(received)["error"] for i, (_, received) in wire.items()}
    assert {error["code"] for i, error in errors.items() if i < 5} == {jsonrpc.INVALID_PARAMS}
    assert errors[5] == orjson.loads(upstream_hop[1])["error"]  # the upstream's own error, relayed
    assert [(r["method"], r["exposed_name"], r["tool"], r["status"], r["error"]) for r in rows] == [
        (method, name, name, "protocol_error", errors[i]["message"]) for i, (method, _, name) in asked.items()]
    assert [r["upstream"] for r in rows] == ["", "", "", "", "a"]
    refused = [(len(sent), 0, 0, len(received)) for sent, received in list(wire.values())[:4]]  # never forwarded
    assert [hops(r) for r in rows] == [*refused, (len(wire[5][0]), *map(len, upstream_hop), len(wire[5][1]))]
