"""The merged catalog: every ready upstream's tools, prompts and resources under exposed names.

Rebuilt whenever an upstream's lists or health change; deterministic order (upstream, then
name). Routing goes through the maps built here, never by splitting exposed names; names already handed out
(the hub's ledgers) keep reaching the same tool in every later rebuild. An upstream
that is restarting is not listed but keeps its routes (from its last lists), so a call to it is
told the upstream is unavailable rather than that the tool is unknown.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway import mcp, naming
from gateway.records import ToolListSnapshot
from gateway.upstreams.client import State, UpstreamClient

Route = tuple[str, str]  # (upstream name, upstream's own name for the item)


@dataclass
class MergedCatalog:
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_routes: dict[str, Route] = field(default_factory=dict)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    prompt_routes: dict[str, Route] = field(default_factory=dict)
    resources: list[dict[str, Any]] = field(default_factory=list)
    resource_owners: dict[str, str] = field(default_factory=dict)
    templates: list[dict[str, Any]] = field(default_factory=list)
    template_owners: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    renamed: list[naming.Renamed] = field(default_factory=list)
    names: dict[str, naming.NameMap] = field(default_factory=dict)  # "tools", "prompts": the map routes came from

    def items(self, key: str) -> list[dict[str, Any]]:
        return {"tools": self.tools, "prompts": self.prompts, "resources": self.resources,
                "resourceTemplates": self.templates}[key]

    def resource_owner(self, uri: str) -> str | None:
        owner = self.resource_owners.get(uri)
        if owner is not None:
            return owner
        return next((name for pattern, name in self.template_owners if pattern.fullmatch(uri)), None)


def merge(registered_name: str, upstreams: Iterable[UpstreamClient],
          ledgers: Mapping[str, naming.NameLedger] | None = None) -> MergedCatalog:
    """The catalog of `upstreams`; `ledgers` ("tools", "prompts") hold the names no other item may get."""
    ledgers = ledgers or {}
    by_name = sorted(upstreams, key=lambda u: u.name)
    ready = [u for u in by_name if u.state is State.READY]
    # Ready ones first: what they list owns a resource uri before a restarting upstream's routes do.
    routed = ready + [u for u in by_name if _restarting(u)]
    listed = {u.name for u in ready}
    merged = MergedCatalog()
    _merge_named(merged, registered_name, routed, listed, "tools", ledgers.get("tools"))
    _merge_named(merged, registered_name, routed, listed, "prompts", ledgers.get("prompts"))
    for upstream in routed:
        for resource in sorted(upstream.catalog.items.get("resources", []), key=_by("uri")):
            uri = str(resource.get("uri", ""))
            if uri and uri not in merged.resource_owners:
                merged.resource_owners[uri] = upstream.name
                if upstream.name in listed:
                    merged.resources.append(resource)
        for template in sorted(upstream.catalog.items.get("resourceTemplates", []), key=_by("uriTemplate")):
            if upstream.name in listed:
                merged.templates.append(template)
            merged.template_owners.append((_template_pattern(str(template.get("uriTemplate", ""))),
                                           upstream.name))
    return merged


def _restarting(upstream: UpstreamClient) -> bool:
    """Not ready now, but it was (its lists were read) and it is being started again; a closed one is not."""
    return upstream.state in (State.STARTING, State.UNHEALTHY) and upstream.catalog.read_at > 0


def _merge_named(merged: MergedCatalog, registered_name: str, routed: list[UpstreamClient], listed: set[str],
                 key: str, ledger: naming.NameLedger | None) -> None:
    """Exposed names and routes for every routed upstream's items (names do not move when one restarts); the
    items of listed ones only in the list clients see."""
    originals: dict[Route, dict[str, Any]] = {}
    for upstream in routed:
        for item in upstream.catalog.items.get(key, []):
            name = item.get("name")
            if isinstance(name, str) and name:
                originals.setdefault((upstream.name, name), item)
    names = merged.names[key] = naming.expose(registered_name, list(originals), ledger)
    routes = merged.tool_routes if key == "tools" else merged.prompt_routes
    target = merged.tools if key == "tools" else merged.prompts
    for route in sorted(originals):
        exposed = names.exposed_name(*route)
        routes[exposed] = route
        if route[0] in listed:
            target.append(naming.annotate_tool(originals[route], route[0], exposed))
    if key == "tools":
        merged.renamed = [renamed for renamed in names.renamed if renamed.upstream in listed]


def fingerprints(merged: MergedCatalog) -> dict[str, bytes]:
    """Per list, a digest of its items exactly as clients receive them: a description or schema
    change counts, not only a name (key order inside an item does not)."""
    return {key: hashlib.blake2b(orjson.dumps(merged.items(key), option=orjson.OPT_SORT_KEYS), digest_size=16).digest()
            for key in mcp.LIST_CHANGED}


def snapshots(merged: MergedCatalog) -> list[ToolListSnapshot]:
    """Per upstream, the size of each tool definition exactly as clients receive it."""
    per_upstream: dict[str, list[tuple[str, str, int]]] = {}
    for tool in merged.tools:
        upstream, original = merged.tool_routes[tool["name"]]
        per_upstream.setdefault(upstream, []).append((original, tool["name"], len(orjson.dumps(tool))))
    taken = time.time()
    return [ToolListSnapshot(name, taken, tools) for name, tools in sorted(per_upstream.items())]


def _by(key: str) -> Any:
    return lambda item: str(item.get(key, ""))


def _template_pattern(template: str) -> re.Pattern[str]:
    """RFC 6570 level-1 style: each {var} matches one path segment ({+var} matches anything)."""
    parts = re.split(r"(\{[^}]*\})", template)
    regex = "".join(
        (".+" if part.startswith("{+") else "[^/]+") if part.startswith("{") else re.escape(part)
        for part in parts
    )
    return re.compile(regex)
