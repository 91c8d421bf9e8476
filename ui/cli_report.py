"""`tollgate report ...` output: fetch an API document (from a running server over HTTP, or from the store
directly through the same route code) and render it as aligned tables for people or JSON for scripts.

Knows API documents, never SQL; `gateway/cli.py` decides which source to use and calls `fetch` and `render`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import orjson

from store.client import Store
from ui.api import NO_SETTINGS, Settings, answer, check_window, resolve
from ui.terminal import visible_doc

Column = tuple[str, str, Callable[[Any], str]]  # (header, key, format)
Fetch = Callable[[str, Mapping[str, str]], Awaitable[Any]]  # (API path, query) -> document


class ReportError(Exception):
    """The API answered with an error; carries its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def api_path(command: str, session_id: str | None = None, server: str | None = None) -> str:
    if command == "session":
        return "/api/sessions/" + quote(session_id or "", safe="")
    if command == "servers" and server:
        return "/api/servers/" + quote(server, safe="")
    return f"/api/{command}"


async def fetch_direct(store: Store, path: str, query: Mapping[str, str], settings: Settings = NO_SETTINGS) -> Any:
    """The document the running server would answer: `settings` as it has them from its config (`settings_of`)."""
    resolved = resolve(path)
    if resolved is None:
        raise ReportError(404, f"no API route for {path}")
    status, body, _ = await answer(store, resolved[0], query, resolved[1], settings)
    return _checked(status, body)


async def fetch_http(base_url: str, path: str, query: Mapping[str, str], token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = base_url.rstrip("/") + path + ("?" + urlencode(query) if query else "")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http, \
                http.get(url, headers=headers) as response:
            return _checked(response.status, await response.read())
    except (aiohttp.ClientError, TimeoutError) as exc:  # e.g. serving on another --listen than the config's
        raise ReportError(503, f"a running Tollgate owns the store, but its API at {base_url} does not answer "
                               f"({exc or type(exc).__name__}); pass the config it serves with") from None


async def fetch_report(fetch: Fetch, path: str, query: Mapping[str, str]) -> Any:
    """The document at `path`; `report session` and `report calls --session` take the start of one session id,
    which the API resolves itself (one request, no refusal), as it refuses a `--server` that is no server. A time
    range ending before it starts is refused before anything is fetched."""
    if (why := check_window(query)) is not None:
        raise ReportError(400, why)
    return await fetch(path, query)


def _checked(status: int, body: bytes) -> Any:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:  # e.g. an older server's HTML error page: a message, not a traceback
        raise ReportError(status if status != 200 else 502,
                          f"the API answered {status} with a body that is not JSON") from None
    if status != 200:
        raise ReportError(status, as_flags(str(doc.get("error", doc)) if isinstance(doc, dict) else str(doc)))
    return doc


API_PARAMETER = re.compile(r"`(since|until|server|session|limit|offset|user)`")  # those `report` has as flags


def as_flags(message: str) -> str:
    """An API message for the CLI: the query parameters it names (`since`) as the flags setting them (--since)."""
    return API_PARAMETER.sub(r"--\1", message)


# ----- formatting ----------------------------------------------------------------------------------------


def _n(value: Any) -> str:
    return "" if value is None else f"{int(value):,}"


def _usd(value: Any) -> str:
    return "" if value is None else f"${float(value):.4f}"


def _n_known(value: Any) -> str:
    """A count that may be unknown (null): 'unknown', never a blank that reads as nothing or 0."""
    return "unknown" if value is None else _n(value)


def _usd_known(value: Any) -> str:
    return "unknown" if value is None else _usd(value)


def _t(value: Any) -> str:
    return "" if not value else str(value).replace("T", " ")[:19]


def _s(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)


NO_SESSION_LABEL = "(no session id)"


def _session(value: Any) -> str:
    """A usage row's session: requests sent without session.id are grouped under an empty one."""
    return _s(value) or NO_SESSION_LABEL


def _short(value: Any) -> str:
    text = _s(value)
    return text if len(text) <= 14 else text[:12] + ".."


def _client(value: Any) -> str:
    """{"name": "claude-code", "version": "2.1.332", "terminal_type": "vscode"} -> claude-code/2.1.332 (vscode)."""
    if not value or not value.get("name"):
        return ""
    text = "/".join(v for v in (value["name"], value.get("version")) if v)
    return text + (f" ({value['terminal_type']})" if value.get("terminal_type") else "")


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """Aligned columns: numbers right, text left; one header line."""
    cells = [[fmt(row.get(key)) for _, key, fmt in columns] for row in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (h, _, _) in enumerate(columns)]
    right = [fmt in (_n, _usd, _n_known, _usd_known) for _, _, fmt in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True))

    return "\n".join([line([h for h, _, _ in columns]).rstrip(), *(line(c).rstrip() for c in cells)])


SESSION_COLUMNS: list[Column] = [
    ("SESSION", "session_id", _s), ("KIND", "kind", _s), ("LAST", "last_at", _t), ("TURNS", "turns", _n),
    ("MATCH", "match_method", _s), ("REQS", "requests", _n), ("TOKENS", "total_tokens", _n),
    ("COST", "cost_usd", _usd), ("CALLS", "tool_calls", _n), ("UPSTREAM BYTES", "resp_bytes_upstream", _n),
    ("SERVERS", "servers", _s), ("USER", "user", _short), ("CLIENT", "client", _client)]
TURN_COLUMNS: list[Column] = [
    ("TURN", "turn_index", _n), ("MATCH", "match_method", _s), ("PROMPT ID", "prompt_id", _short),
    ("START", "started_at", _t), ("REQS", "requests", _n), ("INPUT", "input_tokens", _n),
    ("OUTPUT", "output_tokens", _n), ("CACHE READ", "cache_read_tokens", _n),
    ("CACHE WRITE", "cache_creation_tokens", _n), ("TOTAL", "total_tokens", _n), ("COST", "cost_usd", _usd),
    ("CALLS", "tool_calls", _n), ("UPSTREAM BYTES", "resp_bytes_upstream", _n), ("MODELS", "models", _s)]
# A result cut by a budget reaches the client smaller than the upstream sent it: show both sizes.
RESULT_SIZES: list[Column] = [("UPSTREAM BYTES", "resp_bytes_upstream", _n),
                              ("DELIVERED BYTES", "resp_bytes_client", _n)]
CALL_COLUMNS: list[Column] = [
    ("TURN", "turn_index", _n), ("SERVER", "upstream", _s), ("TOOL", "tool", _s), ("STATUS", "status", _s),
    ("REQ BYTES", "req_bytes_client", _n), *RESULT_SIZES,
    ("EST TOKENS", "est_tokens", _n), ("OBSERVED", "observed_tokens", _n), ("CARRIED", "carried_tokens", _n),
    ("TIE", "tie", _s), ("CANDIDATES", "tie_candidates", _n), ("TOOL USE ID", "tool_use_id", _s)]
SERVER_COLUMNS: list[Column] = [
    ("SERVER", "upstream", _s), ("CALLS", "calls", _n), ("ERRORS", "errors", _n), ("REQ BYTES", "req_bytes", _n),
    ("REQ P50", "req_bytes_p50", _n), ("REQ P95", "req_bytes_p95", _n), ("REQ MAX", "req_bytes_max", _n),
    ("RESULT BYTES", "resp_bytes", _n), ("RESULT P50", "resp_bytes_p50", _n), ("RESULT P95", "resp_bytes_p95", _n),
    ("RESULT MAX", "resp_bytes_max", _n), ("LARGEST FROM", "resp_bytes_max_tool", _s),
    ("EST TOKENS", "est_tokens", _n), ("TOOL LIST BYTES", "tool_list_bytes", _n),
    ("TOOL LIST TOKENS", "tool_list_est_tokens", _n)]
RECENT_CALL_COLUMNS: list[Column] = [
    ("STARTED", "started_at", _t), ("SERVER", "upstream", _s), ("KIND", "kind", _s), ("TOOL", "tool", _s),
    ("STATUS", "status", _s),
    ("REQ BYTES", "req_bytes_client", _n), *RESULT_SIZES,
    ("EST TOKENS", "est_tokens", _n), ("MCP SESSION", "mcp_session_id", _short),
    ("CC SESSION", "cc_session_id", _short), ("TOOL USE ID", "tool_use_id", _s)]
LARGEST_COLUMNS = [column for column in RECENT_CALL_COLUMNS if column[1] != "resp_bytes_client"]  # not in those rows
USAGE_COLUMNS: list[Column] = [
    ("SESSION", "session_id", _session), ("MODEL", "model", _s), ("REQS", "requests", _n), ("TURNS", "turns", _n),
    ("INPUT", "input_tokens", _n), ("OUTPUT", "output_tokens", _n), ("CACHE READ", "cache_read_tokens", _n),
    ("CACHE WRITE", "cache_creation_tokens", _n), ("COST", "cost_usd", _usd)]


def render_sessions(doc: Mapping[str, Any]) -> str:
    more = f"\n(more: --offset {doc['next_offset']})" if doc.get("next_offset") is not None else ""
    return table(doc["sessions"], SESSION_COLUMNS) + f"\n{len(doc['sessions'])} of {doc['total']} session(s)" + more


def render_session(doc: Mapping[str, Any]) -> str:
    s = doc["session"]
    lines = [
        f"session {s['session_id']} ({s['kind']}; turns matched by {', '.join(s['match_methods']) or '-'})",
        f"  {_t(s.get('started_at'))} .. {_t(s.get('ended_at'))}   user {s.get('user_id') or '-'}",
        f"  requests {_n(s.get('requests', 0))}   tokens {_n(s.get('total_tokens', 0))}   "
        f"cost {_usd(s.get('cost_usd', 0))} ({_n(s.get('cost_usd_micros', 0))} micros)   "
        f"tool calls {_n(s['tool_calls'])} ({_n(s['tool_errors'])} errors)   "
        f"result bytes {_n(s['resp_bytes_upstream'])}   ties {_ties(s['ties'])}",
    ]
    if doc["turns"]:
        lines += ["", "turns", table(doc["turns"], TURN_COLUMNS)]
    calls = [c for t in doc["turns"] for c in t["calls"]] + list(doc["calls_outside_turns"])
    if calls:
        lines += ["", "tool calls", table(calls, CALL_COLUMNS)]
    if doc.get("startup"):
        st = doc["startup"]
        lines += ["", f"startup overhead (before the first tool call): {_n(st['requests'])} request(s), "
                      f"{_n(st['total_tokens'])} tokens, {_usd(st['cost_usd'])}"]
    if doc.get("tool_list_context"):
        # The session figures are upper bounds when known, null (unknown) when the session is not known to be
        # connected through this gateway; the API's note says which and why.
        lines += ["", "tool-list context per server (estimates)", table(doc["tool_list_context"], [
            ("SERVER", "upstream", _s), ("TOOLS", "tool_count", _n), ("BYTES", "server_bytes", _n),
            ("EST TOKENS/REQ", "est_tokens", _n), ("EST SESSION TOKENS (UP TO)", "est_session_tokens", _n_known),
            ("EST SESSION COST (UP TO)", "est_session_cost_usd", _usd_known)])]
        if doc.get("tool_list_attribution"):
            lines.append(f"  {doc['tool_list_attribution']['note']}")
    return "\n".join(lines)


def _ties(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "-"


def render_servers(doc: Mapping[str, Any]) -> str:
    if "servers" in doc:
        return table(doc["servers"], SERVER_COLUMNS)
    lines = [table([doc["server"]], SERVER_COLUMNS), "", "tools", table(doc["tools"], [
        ("TOOL", "tool", _s), ("CALLS", "calls", _n), ("ERRORS", "errors", _n), ("RESULT BYTES", "resp_bytes", _n),
        ("P95", "resp_bytes_p95", _n), ("MAX", "resp_bytes_max", _n), ("EST TOKENS", "est_tokens", _n)]),
        "", "largest results", table(doc["largest_results"], LARGEST_COLUMNS)]
    return "\n".join(lines)


def render(command: str, doc: Any, as_json: bool) -> str:
    """JSON as the API sent it, or the command's text with the document's control characters made visible."""
    if as_json:
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
    doc = visible_doc(doc)  # untrusted ids and names: never raw control characters to the terminal
    renderers: dict[str, Callable[[Any], str]] = {
        "sessions": render_sessions, "session": render_session, "servers": render_servers,
        "calls": lambda d: table(d["calls"], RECENT_CALL_COLUMNS), "usage": lambda d: table(d["usage"], USAGE_COLUMNS),
    }
    return renderers[command](doc)
