"""The JSON API over the replayed s4 capture: every route answers, its OpenAPI description is valid and complete,
and bad input gets 400/404 rather than an error page."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from openapi_spec_validator import validate

from store.client import Store
from store.writer import Writer
from tests.store.test_queries_turns import Post, post, replay, writer  # noqa: F401 (fixtures)
from ui.api import ROUTES, add_api_routes
from ui.openapi import spec

SINCE = "since=2026-01-01T00:00:00Z"


def test_the_openapi_description_is_valid_and_describes_every_route() -> None:
    doc = spec()
    validate(doc)
    assert set(doc["paths"]) == {path for path, _ in ROUTES}
    for path, item in doc["paths"].items():
        declared = {p["name"] for p in item["get"]["parameters"] if p["in"] == "path"} if "parameters" in item["get"] \
            else set()
        assert declared == {part[1:-1] for part in path.split("/") if part.startswith("{")}, path


@pytest.fixture
async def api(aiohttp_client: Any, post: Post, writer: Writer, store: Store) -> Any:  # noqa: F811
    session_id = await replay(post, writer, store)
    app = web.Application()
    add_api_routes(app, store)
    client = await aiohttp_client(app)
    client.session_id = session_id
    return client


def required_of(doc: dict[str, Any], path: str) -> list[str]:
    ref = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"].get("$ref")
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]]["required"] if ref else []


async def test_every_route_answers_with_the_fields_its_schema_requires(api: Any) -> None:
    doc = spec()
    paths = {
        "/api/sessions": f"/api/sessions?{SINCE}", "/api/sessions/{id}": f"/api/sessions/{api.session_id}",
        "/api/usage": f"/api/usage?{SINCE}", "/api/servers": f"/api/servers?{SINCE}",
        "/api/servers/{name}": f"/api/servers/capture?{SINCE}", "/api/calls": f"/api/calls?{SINCE}&server=capture",
        "/api/openapi.json": "/api/openapi.json",
    }
    assert set(paths) == {path for path, _ in ROUTES}
    bodies = {}
    for template, url in paths.items():
        response = await api.get(url)
        assert response.status == 200, (url, await response.text())
        body = await response.json()
        assert set(required_of(doc, template)) <= set(body), template
        bodies[template] = body
    assert [s["session_id"] for s in bodies["/api/sessions"]["sessions"]] == [api.session_id]
    detail = bodies["/api/sessions/{id}"]
    assert [t["match_method"] for t in detail["turns"] if t["turn_index"] > 0] == ["prompt_id", "prompt_id"]
    call = detail["turns"][-1]["calls"][0]
    for field in ("tool_use_id", "prompt_id", "upstream", "tool", "req_bytes_client", "resp_bytes_upstream",
                  "est_tokens", "observed_tokens", "status", "tie"):
        assert field in call, field
    assert bodies["/api/servers"]["servers"][0]["calls"] == 4
    assert bodies["/api/servers/{name}"]["largest_results"][0]["resp_bytes_upstream"] == 1000
    assert len(bodies["/api/calls"]["calls"]) == 4


@pytest.mark.parametrize(("url", "status"), [
    ("/api/sessions/no-such-session", 404), ("/api/servers/no-such-server", 404),
    ("/api/sessions?limit=0", 400), ("/api/sessions?limit=x", 400), ("/api/calls?since=yesterday", 400),
    ("/api/servers/capture?largest=1000", 400),
])
async def test_bad_requests_get_a_status_and_a_reason(api: Any, url: str, status: int) -> None:
    response = await api.get(url)
    assert response.status == status
    assert "error" in await response.json()


async def test_assets_are_versioned_and_a_versioned_asset_is_kept_by_the_browser(aiohttp_client: Any) -> None:
    import re

    from ui.pages import add_page_routes

    app = web.Application()
    add_page_routes(app)
    client = await aiohttp_client(app)
    shell = await (await client.get("/ui/sessions/s-1")).text()
    version = re.search(r'src="/ui/static/app\.js\?v=(\w+)"', shell)
    assert version and f'href="/ui/static/session.js?v={version[1]}"' in shell
    assert '<link rel="preload" href="/api/sessions/s-1" as="fetch"' in shell
    app_js = await client.get(f"/ui/static/app.js?v={version[1]}")
    assert app_js.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert f'from "./session.js?v={version[1]}"' in await app_js.text()  # imports resolve to the preloaded URLs
    for stale in ("/ui/static/app.js", "/ui/static/app.js?v=old"):
        response = await client.get(stale)
        assert response.status == 200 and response.headers["Cache-Control"] == "no-cache"
    etag = response.headers["ETag"]
    assert (await client.get("/ui/static/app.js", headers={"If-None-Match": etag})).status == 304
