"""The `ui` package's one entry point for the composition root: mounts the JSON API (and, later, the pages).

`gateway/cli.py` calls `add_ui_routes`; this package never imports `gateway`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from store.client import Store
from ui.api import add_api_routes
from ui.pages import add_page_routes


def add_ui_routes(app: web.Application, store: Store, hub: Any = None, config: Any = None) -> None:
    """Mount `/api/*` over `store`; `hub` and `config` are passed on for routes that need live state."""
    add_api_routes(app, store, hub=hub, config=config)
    add_page_routes(app)
