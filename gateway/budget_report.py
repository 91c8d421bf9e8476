"""What budgets look like from outside: the `/api/budgets` JSON and the `tollgate report budgets` text.

Reads `Budgets` (live, or rebuilt from the store by the CLI); changes nothing.
"""

from __future__ import annotations

import datetime as dt
import hmac
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from gateway.budgets import WINDOW_LIMITS, Budgets, Spend
from gateway.config import BUDGET_LIMITS, BudgetConfig
from gateway.enforcement import minutes_until

_SPEND_KEYS = ("calls", "bytes", "tokens", "denied", "truncated", "warned")


def budgets_snapshot(budgets: Budgets) -> dict[str, Any]:
    """Per upstream: limits, spend today and per live session, decisions, and when the day resets."""
    now = budgets.now()
    return {"generated_at": _iso(now, "UTC"),
            "upstreams": [_upstream(budgets, name, now) for name in budgets.upstreams()]}


def _upstream(budgets: Budgets, name: str, now: float) -> dict[str, Any]:
    budget = budgets.rules.get(name)
    day, reset_at = budgets.day_spend(name)
    sessions = budgets.session_spends(name)
    busiest = max(sessions.values(), key=lambda s: (s.calls, s.bytes), default=Spend())
    zone = budget.timezone if budget else "UTC"
    return {
        "upstream": name,
        "limits": _limits(budget),
        "timezone": zone,
        "fail_open": budget.fail_open if budget else True,
        "spend_unknown": name in budgets.unknown_spend,
        "day": {**_spend(day), "reset_at": _iso(reset_at, zone),
                "resets_in_seconds": max(0, int(reset_at - now))},
        "sessions": {"count": len(sessions), "busiest": _spend(busiest)},
        "usage": _usage(budget, day, busiest),
        "tools": [_tool(budgets, name, tool, budget) for tool in _tools(budgets, name, budget)],
    }


def _tools(budgets: Budgets, name: str, budget: BudgetConfig | None) -> list[str]:
    return sorted(set(budgets.tools_with_spend(name)) | set(budget.tools if budget else ()))


def _tool(budgets: Budgets, name: str, tool: str, budget: BudgetConfig | None) -> dict[str, Any]:
    day, _ = budgets.day_spend(name, tool)
    override = budget.tools.get(tool) if budget else None
    return {"tool": tool, "limits": _limits(override) if override else None, "day": _spend(day)}


def _limits(budget: BudgetConfig | None) -> dict[str, Any]:
    if budget is None:
        return {}
    return {limit: {"allowed": value, "action": budget.action_for(limit)}
            for limit in BUDGET_LIMITS if (value := getattr(budget, limit)) is not None}


def _usage(budget: BudgetConfig | None, day: Spend, session: Spend) -> list[dict[str, Any]]:
    rows = []
    for limit, (window, measure) in WINDOW_LIMITS.items():
        allowed = getattr(budget, limit) if budget else None
        if allowed is not None:
            used = (day if window == "day" else session).of(measure)
            rows.append({"limit": limit, "window": window, "used": used, "allowed": allowed})
    return rows


def _iso(at: float, zone: str) -> str:
    return dt.datetime.fromtimestamp(at, ZoneInfo(zone)).isoformat(timespec="seconds")


def _spend(spend: Spend) -> dict[str, int]:
    return {key: getattr(spend, key) for key in _SPEND_KEYS}


def render_budgets(snapshot: dict[str, Any]) -> str:
    """The `tollgate report budgets` text: one block per upstream."""
    lines = [f"budgets at {snapshot['generated_at']}"]
    if not snapshot["upstreams"]:
        lines.append("  no upstream has a budget or any spend yet")
    for u in snapshot["upstreams"]:
        day = u["day"]
        limits = ", ".join(f"{k} {v['allowed']:,} ({v['action']})" for k, v in u["limits"].items()) or "no limits"
        lines.append(f"\n{u['upstream']}: {limits}")
        lines.append(f"  today: {day['calls']:,} calls, {day['bytes']:,} bytes, {day['tokens']:,} est. tokens; "
                     f"{day['denied']} denied, {day['truncated']} truncated, {day['warned']} warned")
        lines.append(f"  day resets at {day['reset_at']} ({u['timezone']}), "
                     f"in {minutes_until(day['resets_in_seconds'], 0)} min")
        busiest = u["sessions"]["busiest"]
        lines.append(f"  sessions with spend: {u['sessions']['count']}, busiest {busiest['calls']:,} calls, "
                     f"{busiest['bytes']:,} bytes, {busiest['tokens']:,} est. tokens")
        for row in u["usage"]:
            share = 100.0 * row["used"] / row["allowed"] if row["allowed"] else 100.0
            lines.append(f"  {row['limit']:<15} {row['used']:>12,} of {row['allowed']:>12,}  {share:5.1f}%")
        if u["spend_unknown"]:
            lines.append("  past spend unknown (store unavailable): " + (
                "failing open" if u["fail_open"] else "failing closed, calls refused"))
        for tool in u["tools"]:
            own = ", ".join(f"{k} {v['allowed']:,}" for k, v in (tool["limits"] or {}).items())
            lines.append(f"  tool {tool['tool']}: today {tool['day']['calls']:,} calls, {tool['day']['bytes']:,} "
                         f"bytes" + (f"; override: {own}" if own else ""))
    return "\n".join(lines)


def add_budget_routes(app: web.Application, budgets: Budgets, auth_tokens: tuple[str, ...] = ()) -> None:
    """GET /api/budgets (a bearer token is required when the server has any)."""

    async def handler(request: web.Request) -> web.Response:
        if auth_tokens and not _authorized(request.headers.get("Authorization", ""), auth_tokens):
            return web.json_response({"error": "bearer token required"}, status=401)
        return web.json_response(budgets_snapshot(budgets))

    app.router.add_get("/api/budgets", handler)


def _authorized(header: str, tokens: tuple[str, ...]) -> bool:
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and any(hmac.compare_digest(token.strip(), t) for t in tokens)
