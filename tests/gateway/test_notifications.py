"""Upstream notifications reach only the sessions they concern: a call's logs its own client, a
resource update its subscribers, an upstream's cancel of a relayed request the client holding it."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import ClientSession as Http

from gateway import jsonrpc
from gateway.app import HUB_KEY, create_app
from gateway.upstreams.sse_parser import SseParser
from tests.gateway.conftest import echo_upstream, everything_upstream, gateway_config, served
from tests.gateway.test_downstream import JSON_HEADERS, post

MARKER = jsonrpc.notification_body("notifications/message", {"level": "info", "data": "marker"})


async def open_session(http: Http, url: str, capabilities: dict[str, Any] | None = None) -> str:
    init = jsonrpc.request_body(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": capabilities or {},
                                                  "clientInfo": {"name": "raw-test", "version": "1"}})
    status, headers, body = await post(http, url, init)
    assert status == 200, body
    await post(http, url, jsonrpc.notification_body("notifications/initialized"), headers["Mcp-Session-Id"])
    return headers["Mcp-Session-Id"]


async def events_until(response: Any, done: Any) -> list[dict[str, Any]]:
    """The JSON-RPC messages of an SSE response, up to and including the first for which `done` is true."""
    parser, seen = SseParser(), []
    async for chunk in response.content.iter_any():
        for event in parser.feed(chunk):
            if event.data:
                seen.append(orjson.loads(bytes(event.data)))
                if done(seen[-1]):
                    return seen
    raise AssertionError(f"stream ended before the awaited event: {seen}")


def answer_of(body: Any) -> dict[str, Any]:
    """The final JSON-RPC message of a POST answer given as JSON or as an SSE stream."""
    if isinstance(body, dict):
        return body
    return dict(orjson.loads(bytes(body).rsplit(b"data: ", 1)[1].split(b"\n", 1)[0]))


def is_marker(body: dict[str, Any]) -> bool:
    return body == MARKER


def get_stream(http: Http, url: str, session_id: str) -> Any:
    return http.get(url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": session_id})


async def test_a_calls_log_and_progress_reach_its_own_client_and_never_another_session() -> None:
    app = create_app(gateway_config(echo_upstream("a")))
    hub = app[HUB_KEY]
    async with served(app) as url, Http() as http:
        one, two = await open_session(http, url), await open_session(http, url)
        async with get_stream(http, url, two) as two_stream:
            call = jsonrpc.request_body(1, "tools/call", {"name": "a__log", "arguments": {"text": "secret-of-one"},
                                                          "_meta": {"progressToken": "p1"}})
            async with http.post(url, data=orjson.dumps(call), headers={**JSON_HEADERS, "Mcp-Session-Id": one}) as r:
                own = await events_until(r, lambda body: body.get("id") == 1)
            hub.upstream_notification(hub.upstreams["a"], MARKER)  # after the call: every session gets it
            seen_by_two = await events_until(two_stream, is_marker)
    methods = [body.get("method") for body in own]
    assert methods == ["notifications/message", "notifications/progress", None]
    assert own[0]["params"]["data"] == "secret-of-one" and own[1]["params"]["progressToken"] == "p1"
    assert seen_by_two == [MARKER]


async def test_two_sessions_using_one_progress_token_at_once_each_see_only_their_own_progress() -> None:
    async def progress_seen(http: Http, url: str, session_id: str, steps: int) -> list[dict[str, Any]]:
        call = jsonrpc.request_body(1, "tools/call", {"name": "a__progress", "arguments": {"steps": steps, "ms": 100},
                                                      "_meta": {"progressToken": "same"}})
        async with http.post(url, data=orjson.dumps(call), headers={**JSON_HEADERS, "Mcp-Session-Id": session_id}) \
                as response:
            events = await events_until(response, lambda body: body.get("id") == 1)
        assert events[-1]["result"]["content"][0]["text"] == "done"
        return [body["params"] for body in events[:-1]]

    async with served(create_app(gateway_config(echo_upstream("a")))) as url, Http() as http:
        one, two = await open_session(http, url), await open_session(http, url)
        seen_by_one, seen_by_two = await asyncio.gather(progress_seen(http, url, one, 3),
                                                        progress_seen(http, url, two, 4))
    assert seen_by_one == [{"progressToken": "same", "progress": float(n), "total": 3.0, "message": f"step {n}"}
                           for n in range(1, 4)]
    assert seen_by_two == [{"progressToken": "same", "progress": float(n), "total": 4.0, "message": f"step {n}"}
                           for n in range(1, 5)]


async def test_a_resource_update_reaches_only_the_sessions_subscribed_to_its_uri() -> None:
    app = create_app(gateway_config(everything_upstream()))
    hub = app[HUB_KEY]
    async with served(app) as url, Http() as http:
        one, two = await open_session(http, url), await open_session(http, url)
        _, _, listed = await post(http, url, jsonrpc.request_body(1, "resources/list"), one)
        uri = answer_of(listed)["result"]["resources"][0]["uri"]
        status, _, answer = await post(http, url, jsonrpc.request_body(2, "resources/subscribe", {"uri": uri}), one)
        assert status == 200 and "result" in answer_of(answer), answer
        updated = jsonrpc.notification_body("notifications/resources/updated", {"uri": uri})
        async with get_stream(http, url, one) as one_stream, get_stream(http, url, two) as two_stream:
            hub.upstream_notification(hub.upstreams["everything"], updated)  # as the upstream sends it
            hub.upstream_notification(hub.upstreams["everything"], MARKER)
            seen_by_one = await events_until(one_stream, is_marker)
            seen_by_two = await events_until(two_stream, is_marker)
    assert updated in seen_by_one
    assert updated not in seen_by_two


async def test_an_upstreams_cancel_of_a_relayed_request_reaches_the_client_under_its_own_id() -> None:
    async with served(create_app(gateway_config(echo_upstream("a")))) as url, Http() as http:
        session_id = await open_session(http, url, {"elicitation": {}})
        call = jsonrpc.request_body(1, "tools/call", {"name": "a__elicit_abandoned", "arguments": {"ms": 300}})
        async with http.post(url, data=orjson.dumps(call), headers={**JSON_HEADERS, "Mcp-Session-Id": session_id}) \
                as response:
            events = await events_until(response, lambda body: body.get("id") == 1)
    asked, cancelled, answer = events
    assert asked["method"] == "elicitation/create"
    assert cancelled["method"] == "notifications/cancelled"
    assert cancelled["params"]["requestId"] == asked["id"]  # the id the client knows, not the upstream's
    assert answer["result"]["content"][0]["text"] == "abandoned"




async def test_an_ended_sessions_last_subscription_is_unsubscribed_upstream_and_a_shared_one_is_kept() -> None:
    app = create_app(gateway_config(everything_upstream()))
    hub = app[HUB_KEY]
    upstream = hub.upstreams["everything"]
    sent: list[tuple[str, Any]] = []
    unsubscribed = asyncio.Event()
    real_request = upstream.request

    async def spy(method: str, params: dict[str, Any] | None, **kwargs: Any) -> Any:
        sent.append((method, (params or {}).get("uri")))
        answer = await real_request(method, params, **kwargs)
        if method == "resources/unsubscribe":
            unsubscribed.set()
        return answer

    upstream.request = spy  # type: ignore[method-assign]
    async with served(app) as url, Http() as http:
        one, two = await open_session(http, url), await open_session(http, url)
        _, _, listed = await post(http, url, jsonrpc.request_body(1, "resources/list"), one)
        first, second = [r["uri"] for r in answer_of(listed)["result"]["resources"][:2]]
        for session_id, uri in ((one, first), (one, second), (two, second)):
            status, _, answer = await post(http, url, jsonrpc.request_body(2, "resources/subscribe", {"uri": uri}),
                                           session_id)
            assert status == 200 and "result" in answer_of(answer), answer
        async with http.delete(url, headers={"Mcp-Session-Id": one}) as response:
            assert response.status == 200
        async with asyncio.timeout(10):
            await unsubscribed.wait()
        # Both unsubscribes (a wrong second one too) start before the first is answered: all are in `sent` now.
        after_delete = [uri for method, uri in sent if method == "resources/unsubscribe"]
    assert after_delete == [first]  # `second` is still wanted by session two (ended only at shutdown)
