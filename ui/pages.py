"""The HTML pages: one shell document for `/` and `/ui/*`, and the JS/CSS assets shipped in `ui/static`.

Serves files only; every number on a page comes from the JSON API in the browser. Assets carry no data,
so they need no token; a Content-Security-Policy of 'self' keeps every page from loading anything off the host.
"""

from __future__ import annotations

import hashlib
import html
import re
from importlib import resources
from urllib.parse import quote

from aiohttp import web

STATIC_PREFIX = "/ui/static/"
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
IMMUTABLE = "public, max-age=31536000, immutable"  # for ?v=<current version> asset URLs
PAGES = ("/", "/ui", "/ui/", "/ui/sessions", "/ui/sessions/{session_id}", "/ui/servers", "/ui/servers/{name}",
         "/ui/budgets")


def _assets() -> dict[str, bytes]:
    """Every file in ui/static, read once at startup (a few tens of KB)."""
    folder = resources.files("ui").joinpath("static")
    return {item.name: item.read_bytes() for item in folder.iterdir() if item.is_file()}


def _versioned(assets: dict[str, bytes]) -> tuple[dict[str, bytes], str]:
    """The assets with every reference to another asset (the shell's links, the modules' imports) carrying
    `?v=<hash of all assets>`, and that version. A versioned URL never changes content, so the browser may keep
    it (Cache-Control immutable) and a page load asks the server for nothing but the shell and its API call."""
    version = hashlib.sha256(b"".join(assets[name] for name in sorted(assets))).hexdigest()[:12]
    out = {}
    for name, body in assets.items():
        if name.endswith(".js"):
            body = re.sub(rb'(from\s+"\./[\w.-]+\.js)"', rb'\1?v=' + version.encode() + b'"', body)
        elif name.endswith(".html"):
            body = re.sub(rb'((?:href|src)="/ui/static/[\w.-]+)"', rb'\1?v=' + version.encode() + b'"', body)
        out[name] = body
    return out, version


def _headers(content_type: str, cache: str) -> dict[str, str]:
    return {"Content-Type": content_type, "Cache-Control": cache, "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def _content_type(name: str) -> str:
    suffix = name[name.rfind("."):]
    return CONTENT_TYPES.get(suffix, "application/octet-stream") + ("; charset=utf-8" if suffix != ".svg" else "")


def _with_preload(shell: bytes, api_path: str) -> bytes:
    """The shell with the page's API call started by the HTML parser, before any script has loaded."""
    link = f'<link rel="preload" href="{html.escape(api_path)}" as="fetch" crossorigin="anonymous">\n  '
    return shell.replace(b"<link rel=\"stylesheet\"", link.encode() + b"<link rel=\"stylesheet\"", 1)


def add_page_routes(app: web.Application) -> None:
    """GET `/`, the `/ui/*` pages (all the same shell; the browser picks the view from the path) and assets."""
    assets, version = _versioned(_assets())
    shell = assets["index.html"]

    async def page(request: web.Request) -> web.Response:
        body = shell
        if "session_id" in request.match_info:
            body = _with_preload(shell, "/api/sessions/" + quote(request.match_info["session_id"], safe=""))
        return web.Response(body=body, headers=_headers("text/html; charset=utf-8", "no-cache"))

    tags = {name: '"' + hashlib.sha256(body).hexdigest()[:16] + '"' for name, body in assets.items()}

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = assets.get(name)
        if body is None:
            raise web.HTTPNotFound()
        cache = IMMUTABLE if request.query.get("v") == version else "no-cache"
        headers = _headers(_content_type(name), cache) | {"ETag": tags[name]}
        if request.headers.get("If-None-Match") == tags[name]:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, headers=headers)

    for path in PAGES:
        app.router.add_get(path, page)
    app.router.add_get(STATIC_PREFIX + "{name}", asset)
