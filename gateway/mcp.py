"""MCP meaning on top of JSON-RPC: protocol versions, method classes, gateway capabilities.

Pure data and small functions; no I/O and no routing.
"""

from __future__ import annotations

from typing import Any

SUPPORTED_VERSIONS: tuple[str, ...] = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]
# Revisions whose clients may POST a JSON-RPC batch (2025-03-26: servers MUST support receiving them); 2025-06-18
# removed batching, so its sessions and later ones are refused a batch.
BATCH_VERSIONS: frozenset[str] = frozenset({"2024-11-05", "2025-03-26"})
# The _meta key of the stateless 2026-07-28 revision Claude Code probes with first (refused as a legacy server does).
META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
META_TOOL_USE_ID = "claudecode/toolUseId"

# List methods the gateway answers by merging every healthy upstream's catalog.
CATALOG_METHODS: dict[str, str] = {
    "tools/list": "tools",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
    "prompts/list": "prompts",
}
# The notification telling clients that a merged list changed (templates belong to the resources list).
LIST_CHANGED: dict[str, str] = {
    "tools": "notifications/tools/list_changed",
    "resources": "notifications/resources/list_changed",
    "resourceTemplates": "notifications/resources/list_changed",
    "prompts": "notifications/prompts/list_changed",
}
# Requests routed to exactly one upstream, and the params key that names the target.
ROUTED_METHODS: dict[str, str] = {
    "tools/call": "name",
    "resources/read": "uri",
    "resources/subscribe": "uri",
    "resources/unsubscribe": "uri",
    "prompts/get": "name",
}
METERED_METHODS = frozenset({"tools/call", "resources/read", "prompts/get"})
# Server-to-client requests, and the client capability each needs.
SERVER_REQUEST_CAPABILITY: dict[str, str] = {
    "elicitation/create": "elicitation", "sampling/createMessage": "sampling", "roots/list": "roots"}


# MCP's LoggingLevel: the syslog severities of RFC 5424. Another level would be kept and given to every upstream
# (and again after each restart), each refusing it.
LOG_LEVELS = frozenset({"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"})

# Params that must be JSON strings when present (a client's value is used as a key or a name).
_STRING_PARAMS: dict[str, tuple[str, ...]] = {
    "tools/call": ("name",), "prompts/get": ("name",), "resources/read": ("uri",),
    "resources/subscribe": ("uri",), "resources/unsubscribe": ("uri",), "logging/setLevel": ("level",),
}
_OBJECT_PARAMS: dict[str, tuple[str, ...]] = {
    "tools/call": ("arguments",), "prompts/get": ("arguments",), "completion/complete": ("ref", "argument"),
}


def params_problem(method: str, params: dict[str, Any]) -> str | None:
    """What makes `params` unusable for `method` (a wrong JSON type in a key the gateway reads, a logging level MCP
    does not name), or None."""
    meta = params.get("_meta")
    if meta is not None and not isinstance(meta, dict):
        return "_meta must be an object"
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    if token is not None and (isinstance(token, bool) or not isinstance(token, str | int | float)):
        return "_meta.progressToken must be a string or a number"
    for key in _STRING_PARAMS.get(method, ()):
        if not isinstance(params.get(key), str):
            return f"{key} must be a string"
    if method == "logging/setLevel" and params["level"] not in LOG_LEVELS:
        return f"level must be one of {', '.join(sorted(LOG_LEVELS))}"
    for key in _OBJECT_PARAMS.get(method, ()):
        if key in params and not isinstance(params[key], dict):
            return f"{key} must be an object"
    if method == "completion/complete":  # the only method whose `ref` is read; others pass theirs on as it is
        ref = params.get("ref")
        if not isinstance(ref, dict):
            return "ref must be an object"
        if not isinstance(ref.get("name" if ref.get("type") == "ref/prompt" else "uri"), str):
            return "ref.name (for ref/prompt) or ref.uri (for ref/resource) must be a string"
    return None


def negotiate(requested: object) -> str:
    """Echo a supported version; otherwise offer the latest (the spec's rule, never an error)."""
    if isinstance(requested, str) and requested in SUPPORTED_VERSIONS:
        return requested
    return LATEST_VERSION


def server_capabilities() -> dict[str, Any]:
    """What the gateway offers downstream: the union of what it can relay."""
    return {
        "tools": {"listChanged": True},
        "resources": {"subscribe": True, "listChanged": True},
        "prompts": {"listChanged": True},
        "logging": {},
        "completions": {},
    }


def client_capabilities(downstream: dict[str, Any] | None) -> dict[str, Any]:
    """Capabilities the gateway declares to upstreams: elicitation, sampling and roots are
    relayed to clients that have them; clients without them get an error at relay time."""
    caps: dict[str, Any] = {"roots": {"listChanged": True}, "sampling": {}, "elicitation": {"form": {}, "url": {}}}
    if downstream:
        caps.update({k: v for k, v in downstream.items() if k in caps})
    return caps
