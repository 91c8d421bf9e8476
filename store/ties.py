"""Tying gateway calls to Claude Code tool results (DESIGN §6): exact by tool_use_id, else by telemetry window.

Pure functions over rows already read from the store. A window tie is never labelled exact; it carries the
number of candidate results it was chosen among. An MCP session bound to a Claude Code session (by an exact
tie, or else by the session whose tool results fit its whole sequence of calls best) only matches results of
that session, so concurrent sessions calling the same tools do not steal each other's results.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

EXACT = "tool_use_id"
WINDOW = "telemetry_window"
UNMATCHED = "unmatched"
# Claude Code logs tool_result after it has the MCP answer: its end may trail the gateway's by its own
# processing and export delay, and lead it only by clock skew between hosts.
MAX_LAG_S = 5.0
MAX_SKEW_S = 0.5


@dataclass
class Tie:
    call_id: str
    tie: str
    cc_session_id: str = ""
    cc_prompt_id: str = ""
    tool_use_id: str = ""  # of the tool result tied to (for window ties: the telemetry's id)
    candidates: int = 0


def seconds(value: Any) -> float:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return float(value or 0)


def _in_seconds(row: dict[str, Any], *keys: str) -> dict[str, Any]:
    """A copy of `row` with these times as Unix seconds, converted once: the passes below take rows so converted
    and compare each time many times."""
    return {**row, **{key: seconds(row[key]) for key in keys}}


def tie_calls(calls: Sequence[dict[str, Any]], results: Sequence[dict[str, Any]]) -> dict[str, Tie]:
    """call_id -> Tie. `calls`: call_id, mcp_session_id, tool_use_id, tool, exposed_name, started_at, ended_at.
    `results`: tool_use_id, session_id, prompt_id, mcp_tool_name, event_time, duration_ms (tool results and
    decisions; a decision only lends its ids to an exact tie)."""
    calls = [_in_seconds(c, "started_at", "ended_at") for c in calls]
    results = [_in_seconds(r, "event_time") for r in results]
    by_id = {r["tool_use_id"]: r for r in results if r.get("tool_use_id")}
    ties: dict[str, Tie] = {}
    binding: dict[str, str] = {}
    claimed: set[str] = set()
    for c in calls:
        hit = by_id.get(c.get("tool_use_id") or "")
        if hit is not None:
            ties[c["call_id"]] = Tie(c["call_id"], EXACT, hit["session_id"], hit["prompt_id"], hit["tool_use_id"], 1)
            binding.setdefault(c["mcp_session_id"], hit["session_id"])
            claimed.add(hit["tool_use_id"])
    open_calls = [c for c in calls if c["call_id"] not in ties]
    open_results = [r for r in _windowable(results) if r["tool_use_id"] not in claimed]
    if not open_calls or not open_results:
        return _with_unmatched(ties, calls)
    binding.update(_bind_sessions([c for c in open_calls if c["mcp_session_id"] not in binding], open_results))
    for call_id, (result, candidates) in _in_order(open_calls, open_results, binding).items():
        ties[call_id] = Tie(call_id, WINDOW, result["session_id"], result["prompt_id"], result["tool_use_id"],
                            candidates)
    return _with_unmatched(ties, calls)


def _bind_sessions(calls: Sequence[dict[str, Any]], results: Sequence[dict[str, Any]]) -> dict[str, str]:
    """MCP session -> Claude Code session for sessions no exact tie bound: the pairing whose whole sequence of
    calls fits best (most calls matched, then the least time distance), one to one first, leftovers after."""
    calls_of: dict[str, list[dict[str, Any]]] = {}
    for c in calls:
        calls_of.setdefault(c["mcp_session_id"], []).append(c)
    results_of: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        results_of.setdefault(r["session_id"], []).append(r)
    index = _by_name(results)
    scored: list[tuple[int, float, str, str]] = []
    for mcp_session, own in calls_of.items():
        # Only a session with a result that fits one of these calls can match any: scoring every pair made the
        # sessions list's pass over a month (200 x 200 sessions) take seconds.
        near = {results[j]["session_id"] for c in own for j in _near(index, c) if _fits(c, results[j]) is not None}
        for cc_session in near:
            matched = _greedy(own, results_of[cc_session], {})
            if matched:
                scored.append((-len(matched), sum(d for _, _, d in matched.values()), mcp_session, cc_session))
    scored.sort()
    binding: dict[str, str] = {}
    taken: set[str] = set()
    for _, _, mcp_session, cc_session in scored:
        if mcp_session not in binding and cc_session not in taken:
            binding[mcp_session] = cc_session
            taken.add(cc_session)
    for _, _, mcp_session, cc_session in scored:
        binding.setdefault(mcp_session, cc_session)
    return binding


def _in_order(calls: Sequence[dict[str, Any]], results: Sequence[dict[str, Any]],
              binding: dict[str, str]) -> dict[str, tuple[dict[str, Any], int]]:
    """Within each bound (MCP session, Claude Code session) pair, calls and results of one tool keep their
    order: the k-th call takes the first unused result that fits it. call_id -> (result, candidate count)."""
    index = _by_name(results)
    used: set[int] = set()
    out: dict[str, tuple[dict[str, Any], int]] = {}
    for call in sorted(calls, key=lambda c: c["started_at"]):
        bound = binding.get(call["mcp_session_id"])
        fitting = [j for j in _near(index, call)
                   if (bound is None or results[j]["session_id"] == bound) and _fits(call, results[j]) is not None]
        free = sorted((j for j in fitting if j not in used), key=lambda j: _start(results[j]))
        if free:
            used.add(free[0])
            out[call["call_id"]] = (results[free[0]], len(fitting))
    return out


def _start(result: dict[str, Any]) -> float:
    return float(result["event_time"]) - float(result.get("duration_ms") or 0) / 1000.0


def _windowable(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool results of MCP tools (decisions carry no end time), one per tool_use_id."""
    seen: dict[str, dict[str, Any]] = {}
    for r in results:
        if r.get("kind", "result") == "result" and r.get("mcp_tool_name"):
            seen.setdefault(r["tool_use_id"] or f"#{len(seen)}", r)
    return list(seen.values())


def _fits(call: dict[str, Any], result: dict[str, Any]) -> float | None:
    """The pair's distance in seconds when the result can be this call's, else None."""
    if result["mcp_tool_name"] not in (call["exposed_name"], call["tool"]):
        return None
    call_start, call_end, end = float(call["started_at"]), float(call["ended_at"]), float(result["event_time"])
    start = end - float(result.get("duration_ms") or 0) / 1000.0
    if not (call_end - MAX_SKEW_S <= end <= call_end + MAX_LAG_S and start <= call_start + MAX_SKEW_S):
        return None
    return abs(end - call_end) + abs(start - call_start)


def _greedy(calls: Sequence[dict[str, Any]], results: Sequence[dict[str, Any]],
            binding: dict[str, str]) -> dict[str, tuple[dict[str, Any], int, float]]:
    """One-to-one assignment, closest pairs first; call_id -> (result, candidate count, distance)."""
    index = _by_name(results)
    pairs: list[tuple[float, int, int]] = []
    counts: Counter[int] = Counter()
    for i, c in enumerate(calls):
        bound = binding.get(c["mcp_session_id"])
        for j in _near(index, c):
            r = results[j]
            if bound is not None and r["session_id"] != bound:
                continue
            distance = _fits(c, r)
            if distance is not None:
                pairs.append((distance, i, j))
                counts[i] += 1
    pairs.sort()
    used_calls: set[int] = set()
    used_results: set[int] = set()
    out: dict[str, tuple[dict[str, Any], int, float]] = {}
    for distance, i, j in pairs:
        if i in used_calls or j in used_results:
            continue
        used_calls.add(i)
        used_results.add(j)
        out[calls[i]["call_id"]] = (results[j], counts[i], distance)
    return out


def _by_name(results: Sequence[dict[str, Any]]) -> dict[str, tuple[list[float], list[int]]]:
    """mcp_tool_name -> (end times ascending, result indexes in that order)."""
    grouped: dict[str, list[tuple[float, int]]] = {}
    for j, r in enumerate(results):
        grouped.setdefault(r["mcp_tool_name"], []).append((r["event_time"], j))
    return {name: ([t for t, _ in sorted(v)], [j for _, j in sorted(v)]) for name, v in grouped.items()}


def _near(index: dict[str, tuple[list[float], list[int]]], call: dict[str, Any]) -> list[int]:
    """Indexes of results named like `call` whose end falls in its window."""
    end = call["ended_at"]
    found: list[int] = []
    for name in {call["exposed_name"], call["tool"]}:
        times, order = index.get(name, ([], []))
        lo, hi = bisect.bisect_left(times, end - MAX_SKEW_S), bisect.bisect_right(times, end + MAX_LAG_S)
        found.extend(order[lo:hi])
    return found


def _with_unmatched(ties: dict[str, Tie], calls: Sequence[dict[str, Any]]) -> dict[str, Tie]:
    for c in calls:
        ties.setdefault(c["call_id"], Tie(c["call_id"], UNMATCHED))
    return ties
