"""What tool results cost in the model's context: observed tokens, carried cost, startup overhead, tool lists.

Pure functions over one session's rows. Observed tokens of a result = the growth in input + cache tokens of the
request that consumed it over the request before it (shared by size when one request consumed several results).
Prices are not configured: a model's input-token price is inferred from the session's own reported costs with
Anthropic's price ratios (output 5x, cache read 0.1x, 5-minute cache write 1.25x, 1-hour write 2x); every
figure derived from it is an estimate and named `est_*`.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from store import ties

OUTPUT_RATIO, CACHE_READ_RATIO, CACHE_5M_RATIO, CACHE_1H_RATIO = 5.0, 0.1, 1.25, 2.0
BYTES_PER_TOKEN = 4


def context_tokens(request: dict[str, Any]) -> int:
    return int(request["input_tokens"] + request["cache_read_tokens"] + request["cache_creation_tokens"])


def input_price_micros(requests: Iterable[dict[str, Any]]) -> dict[str, float]:
    """model -> inferred price of one input token in micro-USD (0 when the model reported no cost)."""
    spent: dict[str, float] = {}
    weighted: dict[str, float] = {}
    for r in requests:
        unsplit = max(0, r["cache_creation_tokens"] - r["cache_creation_5m_tokens"] - r["cache_creation_1h_tokens"])
        weight = (r["input_tokens"] + OUTPUT_RATIO * r["output_tokens"] + CACHE_READ_RATIO * r["cache_read_tokens"]
                  + CACHE_5M_RATIO * (r["cache_creation_5m_tokens"] + unsplit)
                  + CACHE_1H_RATIO * r["cache_creation_1h_tokens"])
        spent[r["model"]] = spent.get(r["model"], 0.0) + r["cost_usd_micros"]
        weighted[r["model"]] = weighted.get(r["model"], 0.0) + weight
    return {m: spent[m] / weighted[m] if weighted[m] else 0.0 for m in spent}


def _order(row: dict[str, Any]) -> tuple[Any, int]:
    return row["event_time"], row["seq"]


def tool_costs(requests: Sequence[dict[str, Any]], results: Sequence[dict[str, Any]],
               calls: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per MCP tool result of the session, with the gateway's bytes when a call is tied to it.
    Also sets `observed_tokens` and `carried_tokens` on every call: None on one tied to no result here."""
    for c in calls:  # set again below for each call tied to a result
        c["observed_tokens"] = c["carried_tokens"] = None
    ordered = sorted(requests, key=_order)
    index_of = _Index(ordered)
    prices = input_price_micros(ordered)
    by_consumer: dict[int, list[dict[str, Any]]] = {}
    for result in sorted((r for r in results if r["mcp_tool_name"]), key=_order):
        index = _consumer(index_of, result)
        by_consumer.setdefault(index if index is not None else -1, []).append(result)
    call_of = {c["telemetry_tool_use_id"]: c for c in calls if c.get("telemetry_tool_use_id")}
    out: list[dict[str, Any]] = []
    for index, consumed in by_consumer.items():
        consumer = ordered[index] if index >= 0 else None
        growth, later = _growth(index_of, index) if consumer is not None else (0, 0)
        weights = [max(1, r["tool_result_size_bytes"]) for r in consumed]
        for result, weight in zip(consumed, weights, strict=True):
            observed = round(growth * weight / sum(weights))
            price = prices.get(consumer["model"], 0.0) if consumer else 0.0
            carried = observed * later
            call = call_of.get(result["tool_use_id"])
            row = {
                "tool_use_id": result["tool_use_id"], "prompt_id": result["prompt_id"],
                "mcp_server_name": result["mcp_server_name"], "mcp_tool_name": result["mcp_tool_name"],
                "tool_result_size_bytes": result["tool_result_size_bytes"],
                "consumed_by_request_id": consumer["request_id"] if consumer else None,
                "observed_tokens": observed, "later_requests": later, "carried_tokens": carried,
                "est_carried_cost_usd": carried * price * CACHE_READ_RATIO / 1e6,
                "call_id": call["call_id"] if call else None, "upstream": call["upstream"] if call else None,
                "tool": call["tool"] if call else None,
                "resp_bytes_upstream": call["resp_bytes_upstream"] if call else None,
                "est_tokens": call["est_tokens"] if call else None,
            }
            if call is not None:
                call["observed_tokens"] = observed
                call["carried_tokens"] = carried
            out.append(row)
    return sorted(out, key=lambda r: (r["consumed_by_request_id"] is None, -r["carried_tokens"]))


class _Index:
    """The session's requests (sorted by `_order`) indexed once, so finding each result's consumer and each
    consumer's chain is a binary search, not a scan of every request (linear, not quadratic, in session length)."""

    def __init__(self, ordered: Sequence[dict[str, Any]]) -> None:
        self.ordered = ordered
        self.lists: dict[tuple[str | None, str | None], tuple[list[tuple[Any, int]], list[int]]] = {}
        chains: dict[str, list[int]] = {}
        for i, r in enumerate(ordered):
            key = _order(r)
            for group in ((None, None), (r["prompt_id"], None), (None, r["mcp_tool_name"]),
                          (r["prompt_id"], r["mcp_tool_name"])):
                keys, indexes = self.lists.setdefault(group, ([], []))
                keys.append(key)
                indexes.append(i)
            chains.setdefault(r["query_source"], []).append(i)
        self.chain_of = {i: chain for chain in chains.values() for i in chain}
        self.position = {i: n for chain in chains.values() for n, i in enumerate(chain)}

    def first_after(self, prompt_id: str | None, tool: str | None, after: tuple[Any, int]) -> int | None:
        keys, indexes = self.lists.get((prompt_id, tool), ([], []))
        n = bisect.bisect_right(keys, after)
        return indexes[n] if n < len(indexes) else None


def _consumer(index: _Index, result: dict[str, Any]) -> int | None:
    """The first later request of the same prompt that names this tool, else the first later one of that prompt."""
    prompt = result["prompt_id"] or None
    after = _order(result)
    named = index.first_after(prompt, result["mcp_tool_name"], after)
    return named if named is not None else index.first_after(prompt, None, after)


def _growth(index: _Index, at: int) -> tuple[int, int]:
    """(context growth of request `at` over the previous request of its chain, later requests of that chain)."""
    ordered, chain, position = index.ordered, index.chain_of[at], index.position[at]
    before = context_tokens(ordered[chain[position - 1]]) if position > 0 else 0
    return max(0, context_tokens(ordered[at]) - before), len(chain) - position - 1


def startup_overhead(requests: Sequence[dict[str, Any]], results: Sequence[dict[str, Any]],
                     calls: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Tokens and spend of the requests that finished before the session's first MCP tool call started."""
    starts = [c["started_at"].timestamp() for c in calls]
    starts += [r["event_time"].timestamp() - r.get("duration_ms", 0) / 1000 for r in results if r["mcp_tool_name"]]
    first = min(starts) if starts else None
    before = [r for r in requests if first is None or r["event_time"].timestamp() < first]
    out: dict[str, Any] = {"first_tool_call_at": first, "requests": len(before)}
    for key in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens"):
        out[key] = sum(r[key] for r in before)
    out["total_tokens"] = sum(out[k] for k in ("input_tokens", "output_tokens", "cache_read_tokens",
                                                "cache_creation_tokens"))
    out["cost_usd"] = sum(r["cost_usd"] for r in before)
    out["cost_usd_micros"] = sum(r["cost_usd_micros"] for r in before)
    return out


def tool_lists_in_effect(snapshots: Iterable[dict[str, Any]], start: dt.datetime,
                         last: dt.datetime) -> list[dict[str, Any]]:
    """Per upstream, the tool-list snapshot in effect during a session that started at `start` and made its last
    request at `last`: the latest taken at or before `last`, else (none taken by then, e.g. older ones expired)
    the first taken after `start`. `snapshots`: one row per snapshot (`queries_servers.tool_list_snapshots`)."""
    by_upstream: dict[str, list[dict[str, Any]]] = {}
    for snapshot in snapshots:
        by_upstream.setdefault(snapshot["upstream"], []).append(snapshot)
    out = []
    for _, rows in sorted(by_upstream.items()):
        before = [s for s in rows if _utc(s["taken_at"]) <= _utc(last)]
        after = [s for s in rows if _utc(s["taken_at"]) >= _utc(start)]
        chosen = max(before, key=_taken) if before else min(after, key=_taken, default=None)
        if chosen is not None:
            out.append(chosen)
    return out


def _taken(snapshot: dict[str, Any]) -> tuple[dt.datetime, str]:
    return _utc(snapshot["taken_at"]), snapshot["snapshot_id"]


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


BY_MCP_SESSION, BY_TELEMETRY = "mcp_session", "telemetry"
TOOL_SEARCH = "ToolSearch"  # Claude Code's tool that loads deferred tools' definitions
NOT_CONNECTED = ("unknown: not connected through this Tollgate (no MCP session of it is bound to this session, "
                 "and its telemetry names none of the gateway's MCP server names)")
UPPER_BOUND = ("up to: each request counted as carrying every server's whole tool list; Claude Code may defer "
               "MCP tools (its requests then offer ToolSearch and carry only the definitions it loaded)")
DEFERRED = ("up to: each request counted as carrying every server's whole tool list, but this session loaded "
            "deferred MCP tools with ToolSearch, so its requests carried only the definitions it loaded")


def connected_by(calls: Sequence[dict[str, Any]], bound: Sequence[str], telemetry: Iterable[dict[str, Any]],
                 gateway_names: Collection[str]) -> str | None:
    """How a Claude Code session is known to have used this gateway: BY_MCP_SESSION when an MCP session of it is
    bound to the session (the `sessions` table) or one of its calls ties to it exactly; BY_TELEMETRY when one of
    the session's requests or tool events names the gateway's MCP server (the name Claude Code registered it
    under); else None (a window tie is a guess, not knowledge)."""
    if bound or any(c["tie"] == ties.EXACT for c in calls):
        return BY_MCP_SESSION
    if any(row["mcp_server_name"] in gateway_names for row in telemetry):
        return BY_TELEMETRY
    return None


def tool_list_attribution(connected: str | None, results: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Whether the session's tool-list cost is known, how it is estimated, and why when it is not."""
    deferred = any(r["tool_name"] == TOOL_SEARCH for r in results)
    note = NOT_CONNECTED if connected is None else DEFERRED if deferred else UPPER_BOUND
    return {"connected_by": connected, "tools_deferred": deferred, "note": note}


def tool_list_context(lists: Sequence[dict[str, Any]], requests: Sequence[dict[str, Any]],
                      used: set[str], connected: bool) -> list[dict[str, Any]]:
    """Per upstream: the size of its tool definitions in the snapshot in effect and, for a session known to be
    connected through this gateway, what carrying them in every request would cost at most (None otherwise:
    unknown, not zero; the session's tool lists may have come from elsewhere or never been sent)."""
    prices = input_price_micros(requests)
    price = sum(prices.values()) / len(prices) if prices else 0.0
    out = []
    for t in lists:
        tokens = t["est_tokens"] * len(requests) if connected else None
        out.append({
            "upstream": t["upstream"], "snapshot_id": t["snapshot_id"], "taken_at": t["taken_at"],
            "server_bytes": t["server_bytes"], "tool_count": t["tool_count"], "est_tokens": t["est_tokens"],
            "used_in_session": t["upstream"] in used, "est_session_tokens": tokens,
            "est_session_cost_usd": None if tokens is None else tokens * price * CACHE_READ_RATIO / 1e6,
        })
    return out
