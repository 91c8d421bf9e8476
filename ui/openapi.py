"""The OpenAPI 3.1 description of the JSON API served at `/api/openapi.json`.

Every route in `ui.api.ROUTES`, and `/api/budgets` (served by `gateway/budget_report.py`), has a path here (a test
checks both ways and validates each route's real answer against its schema); schemas require the fields clients
rely on and leave room for more (`additionalProperties` stays open).
"""

from __future__ import annotations

from typing import Any

from store import statuses

VERSION = "0.1.0"


def _param(name: str, description: str, schema: dict[str, Any], where: str = "query",
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "description": description,
            "schema": schema}


TIME = {"type": "string", "format": "date-time"}
SINCE = _param("since", "Start of the time range (ISO 8601, UTC when no offset); default: until - 30 days", TIME)
UNTIL = _param("until", "End of the time range, exclusive (ISO 8601); default: now; since must be earlier "
                        "(else 400)", TIME)
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
NINT = {"type": ["integer", "null"]}
NUM = {"type": "number"}
NNUM = {"type": ["number", "null"]}
STR = {"type": "string"}
NSTR = {"type": ["string", "null"]}
NTIME = {"type": ["string", "null"], "format": "date-time"}
BOOL = {"type": "boolean"}
STRS = {"type": "array", "items": STR}
KINDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")
TOKENS = {k: INT for k in (*KINDS, "cache_creation_5m_tokens", "cache_creation_1h_tokens", "total_tokens")}
TIE = {"type": "string", "enum": ["tool_use_id", "hook", "telemetry_window", "unmatched"]}
METHOD = {"type": ["string", "null"], "enum": ["prompt_id", "turn_order", None]}
RESULT_SIZES = {  # differ when a budget truncated the result
    "resp_bytes_upstream": {**INT, "description": "the response as the upstream sent it (JSON-RPC message bytes)"},
    "resp_bytes_client": {**INT, "description": "the response as delivered to the client (after any truncation)"}}
STATUS = {"type": "string", "enum": list(statuses.STATUSES)}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _array(name: str) -> dict[str, Any]:
    return {"type": "array", "items": _ref(name)}


SPEND = _object(["calls", "bytes", "tokens", "denied", "truncated", "warned"],
                {k: INT for k in ("calls", "bytes", "tokens", "denied", "truncated", "warned")})
LIMITS = {"type": "object", "additionalProperties": _object(["allowed", "action"], {"allowed": INT, "action": STR})}

SERVER_TOTALS = {  # an upstream with no call in the range has only upstream, calls (0) and errors (0)
    "upstream": STR, "calls": INT, "errors": INT, "tools_used": INT, "sessions": INT, "req_bytes": INT,
    "resp_bytes": INT, "resp_bytes_p50": INT, "resp_bytes_p95": INT, "resp_bytes_max": INT,
    "resp_bytes_max_tool": STR, "req_bytes_p50": INT, "req_bytes_p95": INT, "req_bytes_max": INT, "est_tokens": INT,
    "duration_ms_p95": NUM, "first_at": TIME, "last_at": TIME}

CLIENT = _object(["name", "version", "terminal_type"], {
    "name": {**STR, "description": "claude-code for a Claude Code session; an MCP session's clientInfo.name"},
    "version": {**STR, "description": "Claude Code's app.version (the latest of the session's telemetry); an MCP "
                                      "session's clientInfo.version"},
    "terminal_type": {**STR, "description": "Claude Code's terminal.type (vscode, non-interactive, ...); empty for "
                                            "an MCP session"}})

SCHEMAS: dict[str, Any] = {
    "Error": _object(["error"], {"error": STR}),
    "SessionSummary": _object(["session_id", "kind", "started_at", "last_at", "turns", "match_method", "requests",
                               *KINDS, "total_tokens", "cost_usd", "cost_usd_micros", "models", "user",
                               "client", "tool_calls", "resp_bytes_upstream", "servers"], {
        "session_id": STR, "kind": {"type": "string", "enum": ["claude_code", "mcp"]}, "started_at": TIME,
        "last_at": TIME, "turns": INT, "match_method": {"type": "string", "enum": ["prompt_id", "turn_order", ""]},
        "requests": INT, **{k: INT for k in KINDS}, "total_tokens": INT, "cost_usd": NUM, "cost_usd_micros": INT,
        "models": STRS, "user": STR, "client": CLIENT, "tool_calls": INT, "resp_bytes_upstream": INT,
        "servers": STRS}),
    "SessionPage": _object(["sessions", "total", "limit", "offset", "next_offset", "since", "until"], {
        "sessions": _array("SessionSummary"), "total": INT, "limit": INT, "offset": INT, "next_offset": NINT,
        "since": TIME, "until": TIME}),
    "ToolCall": _object(["call_id", "upstream", "tool", "mcp_session_id", "tool_use_id", "prompt_id", "status",
                         "req_bytes_client", "resp_bytes_upstream", "resp_bytes_client", "est_tokens",
                         "observed_tokens", "carried_tokens", "tie", "tie_candidates", "turn_index", "match_method"], {
        "call_id": STR, "tool_use_id": STR, "prompt_id": STR, "upstream": STR, "tool": STR, "exposed_name": STR,
        "mcp_session_id": STR, "started_at": TIME, "ended_at": TIME, "duration_ms": NUM, "status": STATUS,
        "req_bytes_client": INT, "req_bytes_upstream": INT, **RESULT_SIZES,
        "text_bytes": INT, "est_tokens": INT, "tie": TIE,
        "observed_tokens": {**NINT, "description": "Tokens the model saw of the result (null: no tool result of "
                                                   "the session's telemetry is tied to the call)"},
        "carried_tokens": {**NINT, "description": "observed_tokens x later requests of the same chain (null as "
                                                  "observed_tokens)"},
        "tie_candidates": INT, "turn_index": NINT, "match_method": METHOD}),
    "Turn": _object(["session_id", "turn_id", "prompt_id", "turn_index", "match_method", "started_at", "ended_at",
                     "requests", *TOKENS, "cost_usd", "cost_usd_micros", "models", "calls"], {
        "session_id": STR, "turn_id": STR, "prompt_id": STR, "turn_index": INT,
        "match_method": {"type": "string", "enum": ["prompt_id", "turn_order"]},
        "prompt_length": NINT, "prompt": STR, "started_at": TIME, "ended_at": TIME,
        "requests": INT, **TOKENS, "cost_usd": NUM, "cost_usd_micros": INT, "models": STRS, "query_sources": STRS,
        "tool_calls": INT, "resp_bytes_upstream": INT, "calls": _array("ToolCall")}),
    "ToolCost": _object(["tool_use_id", "observed_tokens", "later_requests", "carried_tokens",
                         "est_carried_cost_usd"], {
        "tool_use_id": STR, "prompt_id": STR, "mcp_server_name": STR, "mcp_tool_name": STR,
        "tool_result_size_bytes": INT, "consumed_by_request_id": NSTR, "observed_tokens": INT,
        "later_requests": INT, "carried_tokens": INT, "est_carried_cost_usd": NUM, "call_id": NSTR,
        "upstream": NSTR, "resp_bytes_upstream": NINT}),
    "SessionRollup": _object(["session_id", "kind", "turns", "match_methods", "tool_calls", "tool_errors",
                              "req_bytes_client", "resp_bytes_upstream", "est_tool_tokens", "servers", "by_server",
                              "ties"], {
        "session_id": STR, "kind": {"type": "string", "enum": ["claude_code", "mcp"]}, "turns": INT,
        "match_methods": STRS, **TOKENS, "requests": INT, "cost_usd": NUM, "cost_usd_micros": INT,
        "started_at": NTIME, "ended_at": NTIME, "models": STRS, "user_id": STR, "tool_calls": INT,
        "tool_errors": INT, "req_bytes_client": INT, "resp_bytes_upstream": INT, "est_tool_tokens": INT,
        "servers": STRS, "mcp_sessions": STRS,
        "by_server": {"type": "array", "description": "per upstream, the largest result bytes first",
                      "items": _object(["upstream", "calls", "errors", "req_bytes_client", "resp_bytes_upstream",
                                        "est_tokens"], {"upstream": STR, **{k: INT for k in (
                                            "calls", "errors", "req_bytes_client", "resp_bytes_upstream",
                                            "est_tokens")}})},
        "ties": _object(["tool_use_id", "telemetry_window", "unmatched"], {k: INT for k in (
            "tool_use_id", "telemetry_window", "unmatched")})}),
    "Startup": _object(["first_tool_call_at", "requests", *KINDS, "total_tokens", "cost_usd", "cost_usd_micros"], {
        "first_tool_call_at": {"type": ["number", "null"], "description": "Unix seconds"}, "requests": INT,
        **{k: INT for k in KINDS}, "total_tokens": INT, "cost_usd": NUM, "cost_usd_micros": INT}),
    "SessionToolList": _object(["upstream", "snapshot_id", "taken_at", "server_bytes", "tool_count", "est_tokens",
                                "used_in_session", "est_session_tokens", "est_session_cost_usd"], {
        "upstream": STR, "snapshot_id": {**STR, "description": "the snapshot in effect during the session"},
        "taken_at": TIME, "server_bytes": INT, "tool_count": INT, "est_tokens": INT, "used_in_session": BOOL,
        "est_session_tokens": {**NINT, "description": "at most: est_tokens x the session's requests; null (unknown) "
                                                      "when the session is not known to be connected through this "
                                                      "gateway (tool_list_attribution says why)"},
        "est_session_cost_usd": {**NNUM, "description": "est_session_tokens at cache-read price; null as it"}}),
    "ToolListAttribution": _object(["connected_by", "tools_deferred", "note"], {
        "connected_by": {"type": ["string", "null"], "enum": ["mcp_session", "telemetry", None],
                         "description": "how the session is known to be connected through this gateway: an MCP "
                                        "session of it bound to the session (or a call tied exactly), or telemetry "
                                        "naming its MCP server; null: not known, so tool-list costs are null"},
        "tools_deferred": {**BOOL, "description": "the session loaded deferred MCP tools with ToolSearch"},
        "note": {**STR, "description": "how the tool-list figures are estimated, or why they are unknown"}}),
    "SessionDetail": _object(["session", "turns", "calls_outside_turns", "tool_costs", "startup",
                              "tool_list_context", "tool_list_attribution"], {
        "session": _ref("SessionRollup"), "turns": _array("Turn"), "calls_outside_turns": _array("ToolCall"),
        "tool_costs": _array("ToolCost"), "startup": {"oneOf": [_ref("Startup"), {"type": "null"}]},
        "tool_list_context": _array("SessionToolList"),
        "tool_list_attribution": {"oneOf": [_ref("ToolListAttribution"), {"type": "null"}],
                                  "description": "null for an MCP-only session (no telemetry)"}}),
    "UsageRow": _object(["session_id", "model", "requests", "turns", *KINDS, "cost_usd", "cost_usd_micros"], {
        "session_id": STR, "model": STR, "requests": INT, "turns": INT, **TOKENS, "cost_usd": NUM,
        "cost_usd_micros": INT, "requests_without_cost": INT, "user_id": STR, "app_version": STR,
        "first_at": TIME}),
    "Usage": _object(["usage"], {"usage": _array("UsageRow")}),
    "ServerSummary": _object(["upstream", "calls", "errors", "tool_list_bytes", "tool_list_tools",
                              "tool_list_est_tokens"], {
        **SERVER_TOTALS, "tool_list_bytes": INT, "tool_list_tools": INT, "tool_list_est_tokens": INT}),
    "Servers": _object(["servers"], {"servers": _array("ServerSummary")}),
    "ToolSummary": _object(["tool", "calls", "errors", "resp_bytes", "resp_bytes_p95", "resp_bytes_max",
                            "est_tokens"], {
        "tool": STR, "calls": INT, "errors": INT, "resp_bytes": INT, "resp_bytes_p95": INT, "resp_bytes_max": INT,
        "est_tokens": INT}),
    "LargestResult": _object(["call_id", "upstream", "tool", "mcp_session_id", "started_at", "status",
                              "req_bytes_client", "resp_bytes_upstream"], {
        "call_id": STR, "upstream": STR, "tool": STR, "mcp_session_id": STR, "cc_session_id": STR,
        "tool_use_id": STR, "started_at": TIME, "status": STATUS, "req_bytes_client": INT,
        "resp_bytes_upstream": INT, "text_bytes": INT, "est_tokens": INT}),
    "ToolDefinition": _object(["tool", "exposed_name", "def_bytes", "est_tokens"], {
        "tool": STR, "exposed_name": STR, "def_bytes": INT, "est_tokens": INT}),
    "ToolListContext": _object(["upstream", "snapshot_id", "server_bytes", "tool_count", "taken_at", "est_tokens",
                                "tools"], {
        "upstream": STR, "snapshot_id": STR, "server_bytes": INT, "tool_count": INT, "taken_at": TIME,
        "est_tokens": INT, "tools": _array("ToolDefinition")}),
    "TimelinePoint": _object(["at", "calls", "resp_bytes", "resp_bytes_max"], {  # every bucket, empty ones as 0
        "at": TIME, "calls": INT, "resp_bytes": INT, "resp_bytes_max": INT}),
    "Timeline": _object(["bucket_seconds", "points"], {
        "bucket_seconds": {"type": "integer", "enum": [1, 5, 15, 60, 300, 900, 3600, 86400],
                           "description": "the finest bucket that draws the calls' span in at most 120 points, "
                                          "daily when they span over 2 days"},
        "points": _array("TimelinePoint")}),
    "SizeBucket": _object(["lo", "hi", "count"], {
        "lo": INT, "hi": INT, "count": {**INT, "description": "results of lo <= bytes < hi"}}),
    "ServerDetail": _object(["server", "tools", "largest_results", "timeline", "sizes", "tool_list_context"], {
        "server": _ref("ServerSummary"), "tools": _array("ToolSummary"), "largest_results": _array("LargestResult"),
        "timeline": _ref("Timeline"), "sizes": _array("SizeBucket"),
        "tool_list_context": {"oneOf": [_ref("ToolListContext"), {"type": "null"}]}}),
    "Call": _object(["call_id", "method", "upstream", "tool", "mcp_session_id", "started_at", "status",
                     "req_bytes_client", "resp_bytes_upstream", "resp_bytes_client"], {
        "call_id": STR, "method": STR, "upstream": STR, "tool": STR, "exposed_name": STR, "mcp_session_id": STR,
        "cc_session_id": STR, "tool_use_id": STR, "started_at": TIME, "ended_at": TIME, "duration_ms": NUM,
        "status": STATUS, "error": STR, "req_bytes_client": INT, "req_bytes_upstream": INT, **RESULT_SIZES,
        "text_bytes": INT, "est_tokens": INT, "budget_action": STR}),
    "Calls": _object(["calls"], {"calls": _array("Call")}),
    "BudgetUpstream": _object(["upstream", "limits", "timezone", "fail_open", "spend_unknown", "day", "sessions",
                               "usage", "tools"], {
        "upstream": STR, "limits": LIMITS, "timezone": STR, "fail_open": BOOL, "spend_unknown": BOOL,
        "day": {**SPEND, "required": [*SPEND["required"], "reset_at", "resets_in_seconds"],
                "properties": {**SPEND["properties"], "reset_at": TIME, "resets_in_seconds": INT}},
        "sessions": _object(["count", "busiest"], {"count": INT, "busiest": SPEND}),
        "usage": {"type": "array", "items": _object(["limit", "window", "used", "allowed"], {
            "limit": STR, "window": {"type": "string", "enum": ["day", "session"]}, "used": INT, "allowed": INT})},
        "tools": {"type": "array", "items": _object(["tool", "limits", "day"], {
            "tool": STR, "limits": {"oneOf": [LIMITS, {"type": "null"}]}, "day": SPEND})}}),
    "Budgets": _object(["generated_at", "upstreams"], {
        "generated_at": TIME, "upstreams": _array("BudgetUpstream")}),
}


SERVED_BY_GATEWAY = ("/api/budgets",)  # described here, served beside /mcp from the live budgets


def spec() -> dict[str, Any]:
    limit = {"type": "integer", "minimum": 1}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tollgate API", "version": VERSION,
                 "description": "Read-only usage accounting: Claude Code sessions turn by turn, MCP tool calls "
                                "tied to turns, per-server volumes. Estimates are named est_*."},
        "paths": {
            "/api/sessions": _get("Sessions active in a time range, the latest active (last_at) first", [
                _param("user", "user.id, user.email or account uuid (MCP sessions: auth identity)", STR),
                _param("server", "only sessions that called this upstream", STR), SINCE, UNTIL,
                _param("limit", "page size (1-500, default 50)", {**limit, "maximum": 500}),
                _param("offset", "rows to skip (default 0)", {"type": "integer", "minimum": 0})],
                _ok("One page of sessions", "SessionPage")),
            "/api/sessions/{id}": _get("A session: roll-up, turns with their tool calls, per-tool cost", [
                _param("id", "Claude Code session.id, or an MCP session id no Claude Code session claims, or the "
                             "start (6+ characters) of exactly one such id in the time range (409 when several)",
                       STR, where="path"), SINCE, UNTIL], _ok("The session", "SessionDetail"), not_found=True),
            "/api/usage": _get("Tokens, spend and requests per session and model", [SINCE, UNTIL],
                               _ok("Usage rows", "Usage")),
            "/api/servers": _get("Per upstream: calls, errors, bytes (p50/p95/max), est tokens, tool-list size",
                                 [SINCE, UNTIL], _ok("Servers", "Servers")),
            "/api/servers/{name}": _get("One upstream: totals, per tool, largest results, result bytes over time, "
                                        "result sizes (power-of-two buckets), tool-list context", [
                _param("name", "upstream name from the config", STR, where="path"), SINCE, UNTIL,
                _param("largest", "how many largest results (1-100, default 10)", {**limit, "maximum": 100})],
                _ok("The server", "ServerDetail"), not_found=True),
            "/api/calls": _get("Recent tool calls, newest first", [
                _param("server", "upstream name (404 when no call has it and it is no server: neither configured "
                                 "nor named by a call or tool list in the time range)", STR),
                _param("session", "MCP session id or bound Claude Code session id; when no call has it, the start "
                                  "(6+ characters) of exactly one session id (404 when none, 409 when several)",
                       STR), SINCE, UNTIL,
                _param("limit", "rows (1-1000, default 100)", {**limit, "maximum": 1000})],
                _ok("Calls", "Calls"), not_found=True),
            "/api/budgets": {"get": {
                "summary": "Per upstream: budget limits and actions, spend today and in the busiest live session, "
                           "denials, truncations, time to reset (served by the gateway: live figures)",
                "responses": {"200": _ok("Budgets", "Budgets"), "401": ERROR}}},
            "/api/openapi.json": {"get": {"summary": "This description", "responses": {
                "200": {"description": "OpenAPI 3.1 document",
                        "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        },
        "components": {"schemas": SCHEMAS},
    }
