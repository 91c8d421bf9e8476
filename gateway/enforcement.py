"""The budget policy on the relay path: admit before forwarding, settle results, charge spend when calls end.

Implements `gateway.relay.Policy` and the relay `Observer` protocol. Owns the model-facing texts, the
`budget_events` rows, decision counters and the denial log line; the arithmetic lives in `gateway.budgets`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import logging
import math
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, Protocol

from gateway import metering
from gateway.budgets import Budgets, Decision, Reservation, Spend, day_bounds
from gateway.config import BUDGET_LIMITS, BudgetConfig, Config, describe_budget
from gateway.records import CallRecord, ToolListSnapshot
from gateway.truncation import LIST_KEYS, json_size, truncate
from store.kinds import label  # budgets key a resource or prompt by its label: tool overrides never match it

log = logging.getLogger("tollgate.budgets")
SPEND_UNKNOWN = "spend_unknown"
_WHAT = {
    "max_request_bytes": "bytes per request", "max_result_bytes": "bytes per result",
    "session_calls": "calls per client session", "session_bytes": "bytes per client session",
    "session_tokens": "estimated tokens per client session", "day_calls": "calls per day",
    "day_bytes": "bytes per day", "day_tokens": "estimated tokens per day",
}


class RowSink(Protocol):
    def submit(self, table: str, rows: list[dict[str, Any]]) -> None: ...


class Counter(Protocol):
    def inc(self, name: str, value: float = 1.0, **labels: str) -> None: ...


def budget_rules(config: Config) -> dict[str, BudgetConfig | None]:
    return {u.name: u.budget for u in config.upstreams}


class BudgetPolicy:
    """Applies each upstream's budget to its calls; also an observer, to charge what calls really spent."""

    def __init__(self, config: Config, *, sink: RowSink | None = None, metrics: Counter | None = None,
                 now: Callable[[], float] = time.time, gateway_id: str | None = None) -> None:
        self.config = config
        self.budgets = Budgets(budget_rules(config), now)
        self.sink = sink
        self.metrics = metrics
        self.gateway_id = gateway_id or socket.gethostname()
        self.started_at = now()
        self._held: dict[str, Reservation] = {}
        self._tools: dict[str, list[str]] = {}  # upstream -> its tool names, as last listed
        self._warned: set[str] = set()  # upstreams told of unknown budget tools since the config was loaded

    # ----- Policy ------------------------------------------------------------------------------

    async def admit(self, call: CallRecord, params: dict[str, Any]) -> str | None:
        if self._spend_unknown(call.upstream):
            call.budget_action, call.budget_limit = "deny", SPEND_UNKNOWN
            log.warning("budget denied %s/%s: past spend unknown and the budget fails closed",
                        call.upstream, call.tool)
            self._count(call.upstream, "deny", SPEND_UNKNOWN)
            self._record(call, SPEND_UNKNOWN, "deny", 0, 0, "", None)
            return (f"Tollgate refused this call to upstream {call.upstream!r}: its budget could not read past "
                    "spend from Tollgate's store and is set to fail closed (fail_open = false). Try again in a "
                    "few minutes, or ask the user to check that Tollgate's store is reachable.")
        if call.upstream not in self.budgets.rules:
            return None  # nothing to check: no reservation either, the spend is charged when the call ends
        admission = self.budgets.admit(call.upstream, label(call.method, call.tool), call.mcp_session_id,
                                       call.req_bytes_client)
        for decision in admission.decisions:
            self._decided(call, decision)
        denial = admission.denial
        if denial is not None:
            return denial_text(denial, self.budgets.now())
        assert admission.reservation is not None
        self._held[call.call_id] = admission.reservation
        return None

    def settle(self, call: CallRecord, result: dict[str, Any], size: int) -> dict[str, Any] | str:
        if self.budgets.check_result(call.upstream, label(call.method, call.tool), sys.maxsize) is None:
            return result  # no result-size limit applies: skip re-encoding the result to measure it
        original = json_size(result)
        decision = self.budgets.check_result(call.upstream, label(call.method, call.tool), original)
        if decision is None:
            return result
        self._decided(call, decision)
        if decision.action == "warn":
            return result
        if decision.action == "deny":
            return denial_text(decision, self.budgets.now())
        marker = (f"[Tollgate: result truncated from {original} to {{delivered}} bytes by the budget of upstream "
                  f"{call.upstream!r} (max_result_bytes {decision.allowed}){{dropped}}. Ask for a narrower "
                  "result (a more specific query, a filter, a smaller page) to see the rest.]")
        cut = truncate(result, decision.allowed, original, marker, key=LIST_KEYS.get(call.method, "content"))
        call.finish("truncated", f"result truncated from {original} to {cut.delivered_bytes} bytes")
        _apply_sizes(call, metering.measure(cut.result))
        return cut.result

    # ----- Observer ----------------------------------------------------------------------------

    def call_finished(self, record: CallRecord) -> None:
        reservation = self._held.pop(record.call_id, None)
        if not record.upstream:  # refused before routing (unknown tool, bad params): no upstream to charge
            return
        denied = record.status == "denied"
        spend = Spend() if denied else Spend(calls=1, bytes=record.req_bytes_client + record.resp_bytes_client,
                                             tokens=record.est_tokens)
        spend = spend + Spend(denied=int(denied), truncated=int(record.status == "truncated"),
                              warned=int(record.budget_action == "warn"))
        if reservation is not None:
            self.budgets.settle(reservation, spend, record.started_at)
        else:  # denied before reserving, or an upstream without a budget (spend still shows in reports)
            self.budgets.record(record.upstream, label(record.method, record.tool), record.mcp_session_id,
                                record.started_at, spend)

    def tool_list_changed(self, snapshot: ToolListSnapshot) -> None:
        self._tools[snapshot.upstream] = [tool for tool, _, _ in snapshot.tools]
        self._warn_unknown_tools(snapshot.upstream)

    def upstream_event(self, upstream: str, kind: str, detail: str) -> None:
        pass

    def session_event(self, row: dict[str, Any]) -> None:
        if row.get("ended_at"):
            self.budgets.forget_session(str(row.get("mcp_session_id", "")))
            self.budgets.prune()

    # ----- configuration -----------------------------------------------------------------------

    def apply_config(self, config: Config) -> list[str]:
        """Swap in the budgets of a re-read config; spend is kept. Returns one line per changed upstream."""
        old, new = budget_rules(self.config), budget_rules(config)
        changes = [f"{name}: {describe_budget(old.get(name))} -> {describe_budget(new.get(name))}"
                   for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]
        self.config = config
        self.budgets.replace_rules(new)
        self._warned.clear()
        for upstream in sorted(self._tools):
            self._warn_unknown_tools(upstream)
        return changes

    def _warn_unknown_tools(self, upstream: str) -> None:
        """Once per upstream and config load: a per-tool budget for a tool the upstream does not list."""
        if upstream in self._warned:
            return
        text = unknown_tools_warning(upstream, self.budgets.rules.get(upstream), self._tools[upstream])
        if text is not None:
            self._warned.add(upstream)
            log.warning("%s", text)

    def health(self) -> tuple[dict[str, Any], bool]:
        """For /healthz: upstreams whose past spend is unknown (the store could not be read), and of those the ones
        refusing every call (fail_open = false); healthy while none refuses."""
        unknown = sorted(self.budgets.unknown_spend & set(self.budgets.rules))
        refusing = [name for name in unknown if self.fails_closed(name)]
        return {"spend_unknown": unknown, "refusing_calls": refusing}, not refusing

    def fails_closed(self, upstream: str) -> bool:
        budget = self.budgets.rules.get(upstream)
        return budget is not None and not budget.fail_open

    def _spend_unknown(self, upstream: str) -> bool:
        return upstream in self.budgets.unknown_spend and self.fails_closed(upstream)

    # ----- recording ---------------------------------------------------------------------------

    def _decided(self, call: CallRecord, decision: Decision) -> None:
        if not call.budget_action or decision.denies or decision.action == "truncate":
            call.budget_action, call.budget_limit = decision.action, decision.limit
        self._count(call.upstream, decision.action, decision.limit)
        if decision.denies:
            log.warning("budget denied %s/%s session %s: %s used %d of %d (%s window)", call.upstream, call.tool,
                        call.mcp_session_id[:8], decision.limit, decision.used, decision.allowed, decision.window)
        else:
            log.info("budget %s %s/%s: %s used %d of %d", decision.action, call.upstream, call.tool,
                     decision.limit, decision.used, decision.allowed)
        self._record(call, decision.limit, decision.action, decision.used, decision.allowed, decision.window,
                     decision.reset_at)

    def _record(self, call: CallRecord, limit: str, action: str, used: int, allowed: int, window: str,
                reset_at: float | None) -> None:
        """One `budget_events` row: every decision is recorded, a fail-closed refusal (no window) included."""
        if self.sink is None:
            return
        row = {"event_id": uuid.uuid4().hex, "upstream": call.upstream, "tool": call.tool,
               "mcp_session_id": call.mcp_session_id, "at": int(self.budgets.now() * 1_000_000),
               "limit_name": limit, "action": action, "used": float(used), "limit": float(allowed),
               "window": window, "reset_at": int(reset_at * 1000) if reset_at else None,
               "gateway_id": self.gateway_id}
        try:
            self.sink.submit("budget_events", [row])
        except Exception as exc:  # recording must never break the relay
            log.error("could not record a budget event: %s", exc)

    def _count(self, upstream: str, action: str, limit: str) -> None:
        if self.metrics is not None:
            self.metrics.inc("tollgate_budget_decisions_total", upstream=upstream, action=action, limit=limit)


def unknown_tools_warning(upstream: str, budget: BudgetConfig | None, tools: Sequence[str],
                          shown: int = 20) -> str | None:
    """The warning for per-tool budgets that name tools `upstream` does not list (their limits never apply), with
    its real tools, the closest to those names first; None when every name is one of its tools."""
    unknown = sorted(set(budget.tools) - set(tools)) if budget is not None else []
    if not unknown:
        return None
    close = [match for name in unknown for match in difflib.get_close_matches(name, tools, n=3, cutoff=0.5)]
    ordered = list(dict.fromkeys([*close, *sorted(tools)]))
    listed = ", ".join(ordered[:shown]) + (f", ... ({len(ordered) - shown} more)" if len(ordered) > shown else "")
    return (f"upstream {upstream!r}: the budget has limits for tools it does not list, which never apply: "
            f"{', '.join(unknown)}; its tools, closest first: {listed or 'none'}")


def denial_text(decision: Decision, now: float) -> str:
    """What the model reads: the server, the limit, used and allowed, when it resets, what to do instead."""
    d = decision
    unit = _unit(d.limit)
    if d.window == "call":
        head = (f"Tollgate budget: this {'request' if d.limit == 'max_request_bytes' else 'result'} to upstream "
                f"{d.upstream!r} is {d.used:,} {unit}, over its {d.limit} limit of {d.allowed:,} {unit} "
                f"({_WHAT[d.limit]}).")
        return f"{head} This limit applies to each call. {_instead(d)}"
    scope = f"upstream {d.upstream!r}" + (f" (tool {d.tool!r})" if d.tool and _tool_scoped(d) else "")
    head = (f"Tollgate budget: {scope} reached its {d.limit} limit ({_WHAT[d.limit]}): used {d.used:,} of "
            f"{d.allowed:,} {unit} allowed.")
    return f"{head} {reset_text(d, now)} {_instead(d)}"


def reset_text(decision: Decision, now: float) -> str:
    if decision.window == "session":
        return "It resets when this client session ends (a new Claude Code session starts from zero)."
    reset_at = decision.reset_at if decision.reset_at is not None else day_bounds(now, decision.timezone)[1]
    return f"It resets at {iso_local(reset_at, decision.timezone)}, in {minutes_until(reset_at, now)} min."


def iso_local(at: float, timezone: str) -> str:
    from zoneinfo import ZoneInfo

    local = dt.datetime.fromtimestamp(at, ZoneInfo(timezone))
    return f"{local.isoformat(timespec='seconds')} ({timezone})"


def minutes_until(at: float, now: float) -> int:
    return max(0, math.ceil((at - now) / 60))


def _unit(limit: str) -> str:
    return "calls" if limit.endswith("_calls") else "estimated tokens" if limit.endswith("_tokens") else "bytes"


def _tool_scoped(decision: Decision) -> bool:
    return decision.tool != ""


def _instead(d: Decision) -> str:
    if d.limit == "max_request_bytes":
        return "Instead: send a smaller request (shorter arguments, fewer items per call)."
    if d.limit == "max_result_bytes":
        return ("Instead: ask for a narrower result (a more specific query, a filter, a smaller page or fewer "
                "fields).")
    until = "in this session" if d.window == "session" else "until then"
    if d.limit.endswith("_calls"):
        return (f"Instead: do not call this server again {until}; work with the results you already have or "
                "another tool, or ask the user to raise the budget in Tollgate's config.")
    return (f"Instead: use narrower queries (filters, smaller pages) or the results you already have {until}, "
            "or ask the user to raise the budget in Tollgate's config.")


_SIZE_FIELDS = tuple(f.name for f in fields(metering.ContentSizes) if f.name != "images")


def _apply_sizes(call: CallRecord, sizes: metering.ContentSizes) -> None:
    for name in _SIZE_FIELDS:
        setattr(call, name, getattr(sizes, name))
    call.est_tokens = sizes.est_tokens


assert set(_WHAT) == set(BUDGET_LIMITS)
