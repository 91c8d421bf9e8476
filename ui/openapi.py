"""The OpenAPI 3.1 description of the JSON API served at `/api/openapi.json`.

Every route in `ui.api.ROUTES` has a path here (a test checks both ways); schemas name the fields clients rely
on and leave room for more (`additionalProperties` stays open).
"""

from __future__ import annotations

from typing import Any

VERSION = "0.1.0"


def _param(name: str, description: str, schema: dict[str, Any], where: str = "query",
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "description": description,
            "schema": schema}


TIME = {"type": "string", "format": "date-time"}
SINCE = _param("since", "Start of the time range (ISO 8601, UTC when no offset); default: until - 30 days", TIME)
UNTIL = _param("until", "End of the time range, exclusive (ISO 8601); default: now", TIME)
ERROR = {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _ok(description: str, schema_ref: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}}


def _get(summary: str, params: list[dict[str, Any]], ok: dict[str, Any], not_found: bool = False) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok, "400": ERROR, "503": ERROR}
    if not_found:
        responses["404"] = ERROR
    return {"get": {"summary": summary, "parameters": params, "responses": responses}}


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": True}


INT = {"type": "integer"}
NUM = {"type": "number"}
STR = {"type": "string"}
NSTR = {"type": ["string", "null"]}
STRS = {"type": "array", "items": STR}
TOKENS = {k: INT for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
                           "cache_creation_5m_tokens", "cache_creation_1h_tokens", "total_tokens")}
TIE = {"type": "string", "enum": ["tool_use_id", "hook", "telemetry_window", "unmatched"]}
METHOD = {"type": ["string", "null"], "enum": ["prompt_id", "turn_order", None]}

SCHEMAS: dict[str, Any] = {
    "Error": _object(["error"], {"error": STR}),
    "SessionSummary": _object(["session_id", "kind", "started_at", "last_at"], {
        "session_id": STR, "kind": {"type": "string", "enum": ["claude_code", "mcp"]}, "started_at": TIME,
        "last_at": TIME, "turns": INT, "match_method": STR, "requests": INT, "input_tokens": INT, "output_tokens": INT,
        "cache_read_tokens": INT, "cache_creation_tokens": INT, "total_tokens": INT, "cost_usd": NUM,
        "cost_usd_micros": INT, "models": STRS, "user": STR, "tool_calls": INT, "resp_bytes_upstream": INT,
        "servers": STRS}),
    "SessionPage": _object(["sessions", "total", "limit", "offset"], {
        "sessions": {"type": "array", "items": {"$ref": "#/components/schemas/SessionSummary"}},
        "total": INT, "limit": INT, "offset": INT, "next_offset": {"type": ["integer", "null"]},
        "since": TIME, "until": TIME}),
    "ToolCall": _object(["call_id", "upstream", "tool", "mcp_session_id", "tie"], {
        "call_id": STR, "tool_use_id": STR, "prompt_id": STR, "upstream": STR, "tool": STR, "exposed_name": STR,
        "mcp_session_id": STR, "started_at": TIME, "ended_at": TIME, "duration_ms": NUM, "status": STR,
        "req_bytes_client": INT, "req_bytes_upstream": INT, "resp_bytes_upstream": INT, "resp_bytes_client": INT,
        "text_bytes": INT, "est_tokens": INT, "observed_tokens": INT, "carried_tokens": INT, "tie": TIE,
        "tie_candidates": INT, "turn_index": {"type": ["integer", "null"]}, "match_method": METHOD}),
    "Turn": _object(["session_id", "turn_id", "turn_index", "match_method", "requests", "calls"], {
        "session_id": STR, "turn_id": STR, "prompt_id": STR, "turn_index": INT,
        "match_method": {"type": "string", "enum": ["prompt_id", "turn_order"]},
        "prompt_length": {"type": ["integer", "null"]}, "prompt": STR, "started_at": TIME, "ended_at": TIME,
        "requests": INT, **TOKENS, "cost_usd": NUM, "cost_usd_micros": INT, "models": STRS, "query_sources": STRS,
        "tool_calls": INT, "resp_bytes_upstream": INT,
        "calls": {"type": "array", "items": {"$ref": "#/components/schemas/ToolCall"}}}),
    "ToolCost": _object(["tool_use_id", "observed_tokens", "carried_tokens"], {
        "tool_use_id": STR, "prompt_id": STR, "mcp_server_name": STR, "mcp_tool_name": STR,
        "tool_result_size_bytes": INT, "consumed_by_request_id": NSTR, "observed_tokens": INT,
        "later_requests": INT, "carried_tokens": INT, "est_carried_cost_usd": NUM, "call_id": NSTR,
        "upstream": NSTR, "resp_bytes_upstream": {"type": ["integer", "null"]}}),
    "SessionDetail": _object(["session", "turns", "calls_outside_turns", "tool_costs"], {
        "session": {"type": "object", "additionalProperties": True},
        "turns": {"type": "array", "items": {"$ref": "#/components/schemas/Turn"}},
        "calls_outside_turns": {"type": "array", "items": {"$ref": "#/components/schemas/ToolCall"}},
        "tool_costs": {"type": "array", "items": {"$ref": "#/components/schemas/ToolCost"}},
        "startup": {"type": ["object", "null"], "additionalProperties": True},
        "tool_list_context": {"type": "array", "items": {"type": "object", "additionalProperties": True}}}),
    "Usage": _object(["usage"], {"usage": {"type": "array", "items": {"type": "object",
                                                                        "additionalProperties": True}}}),
    "ServerSummary": _object(["upstream", "calls", "errors"], {
        "upstream": STR, "calls": INT, "errors": INT, "req_bytes": INT, "resp_bytes": INT, "resp_bytes_p50": INT,
        "resp_bytes_p95": INT, "resp_bytes_max": INT, "est_tokens": INT, "tool_list_bytes": INT,
        "tool_list_est_tokens": INT}),
    "Servers": _object(["servers"], {"servers": {"type": "array",
                                                 "items": {"$ref": "#/components/schemas/ServerSummary"}}}),
    "ServerDetail": _object(["server", "tools", "largest_results"], {
        "server": {"$ref": "#/components/schemas/ServerSummary"},
        "tools": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
        "largest_results": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
        "tool_list_context": {"type": ["object", "null"], "additionalProperties": True}}),
    "Calls": _object(["calls"], {"calls": {"type": "array", "items": {"type": "object",
                                                                        "additionalProperties": True}}}),
}


def spec() -> dict[str, Any]:
    limit = {"type": "integer", "minimum": 1}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tollgate API", "version": VERSION,
                 "description": "Read-only usage accounting: Claude Code sessions turn by turn, MCP tool calls "
                                "tied to turns, per-server volumes. Estimates are named est_*."},
        "paths": {
            "/api/sessions": _get("Sessions active in a time range, newest first", [
                _param("user", "user.id, user.email or account uuid (MCP sessions: auth identity)", STR),
                _param("server", "only sessions that called this upstream", STR), SINCE, UNTIL,
                _param("limit", "page size (1-500, default 50)", {**limit, "maximum": 500}),
                _param("offset", "rows to skip (default 0)", {"type": "integer", "minimum": 0})],
                _ok("One page of sessions", "SessionPage")),
            "/api/sessions/{id}": _get("A session: roll-up, turns with their tool calls, per-tool cost", [
                _param("id", "Claude Code session.id, or an MCP session id no Claude Code session claims", STR,
                       where="path")], _ok("The session", "SessionDetail"), not_found=True),
            "/api/usage": _get("Tokens, spend and requests per session and model", [SINCE, UNTIL],
                               _ok("Usage rows", "Usage")),
            "/api/servers": _get("Per upstream: calls, errors, bytes (p50/p95/max), est tokens, tool-list size",
                                 [SINCE, UNTIL], _ok("Servers", "Servers")),
            "/api/servers/{name}": _get("One upstream: totals, per tool, largest results, tool-list context", [
                _param("name", "upstream name from the config", STR, where="path"), SINCE, UNTIL,
                _param("largest", "how many largest results (1-100, default 10)", {**limit, "maximum": 100})],
                _ok("The server", "ServerDetail"), not_found=True),
            "/api/calls": _get("Recent tool calls, newest first", [
                _param("server", "upstream name", STR),
                _param("session", "MCP session id or bound Claude Code session id", STR), SINCE, UNTIL,
                _param("limit", "rows (1-1000, default 100)", {**limit, "maximum": 1000})],
                _ok("Calls", "Calls")),
            "/api/openapi.json": {"get": {"summary": "This description", "responses": {
                "200": {"description": "OpenAPI 3.1 document",
                        "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        },
        "components": {"schemas": SCHEMAS},
    }
