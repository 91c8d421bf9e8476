"""Budget arithmetic: spend per window (client session, local day), reserve-then-settle, typed decisions.

Pure and clock-injected: no I/O, no asyncio, no wire formats. `gateway.enforcement` applies the decisions
to calls; `gateway.budget_store` feeds spend rebuilt from the store through `Budgets.record`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

from gateway.config import BudgetAction, BudgetConfig
from gateway.metering import BYTES_PER_TOKEN

Window = Literal["call", "session", "day"]
Measure = Literal["calls", "bytes", "tokens"]
Scope = tuple[str, str]  # (upstream, tool); tool "" is the whole upstream
BUCKET_SECONDS = 900  # every IANA zone's UTC offset is a multiple of 15 minutes, so days start on a bucket
KEEP_SECONDS = 3 * 86400
# The JSON-RPC envelope around a result, `{"jsonrpc":"2.0","id":...,"result":...}`, for ids of up to 30 characters.
ENVELOPE_BYTES = 64
WINDOW_LIMITS: dict[str, tuple[Window, Measure]] = {
    "session_calls": ("session", "calls"), "session_bytes": ("session", "bytes"),
    "session_tokens": ("session", "tokens"), "day_calls": ("day", "calls"), "day_bytes": ("day", "bytes"),
    "day_tokens": ("day", "tokens"),
}


@dataclass(frozen=True, slots=True)
class Spend:
    """Usage in one window: what was charged (calls, bytes both ways, estimated tokens) and decisions made."""

    calls: int = 0
    bytes: int = 0
    tokens: int = 0
    denied: int = 0
    truncated: int = 0
    warned: int = 0

    # Spelled out: called several times per call on the relay path, where a loop over fields() cost ~3 µs each.
    def __add__(self, other: Spend) -> Spend:
        return Spend(self.calls + other.calls, self.bytes + other.bytes, self.tokens + other.tokens,
                     self.denied + other.denied, self.truncated + other.truncated, self.warned + other.warned)

    def __sub__(self, other: Spend) -> Spend:
        return Spend(self.calls - other.calls, self.bytes - other.bytes, self.tokens - other.tokens,
                     self.denied - other.denied, self.truncated - other.truncated, self.warned - other.warned)

    def of(self, measure: Measure) -> int:
        value: int = getattr(self, measure)
        return value


assert tuple(f.name for f in fields(Spend)) == ("calls", "bytes", "tokens", "denied", "truncated", "warned")


@dataclass(frozen=True, slots=True)
class Decision:
    """One limit that a call hit, and what the budget does about it."""

    upstream: str
    tool: str
    limit: str  # a name from gateway.config.BUDGET_LIMITS
    action: BudgetAction
    used: int  # spend in the window before this call (for per-call limits: this call's size)
    allowed: int
    window: Window
    reset_at: float | None = None  # epoch seconds of the next local midnight, for day limits
    timezone: str = "UTC"

    @property
    def denies(self) -> bool:
        return self.action == "deny"


@dataclass(frozen=True, slots=True)
class Reservation:
    """What an admitted call holds against its windows until it settles."""

    upstream: str
    tool: str
    session: str
    spend: Spend


@dataclass(frozen=True, slots=True)
class Admission:
    reservation: Reservation | None  # None when denied
    decisions: tuple[Decision, ...]  # warnings, then the denial if any

    @property
    def denial(self) -> Decision | None:
        last = self.decisions[-1] if self.decisions else None
        return last if last is not None and last.denies else None


def day_bounds(now: float, timezone: str) -> tuple[float, float]:
    """Epoch seconds of the local midnight that started today in `timezone`, and of the next one."""
    zone = _zone(timezone)
    today = dt.datetime.fromtimestamp(now, zone).date()
    start = dt.datetime.combine(today, dt.time(0), tzinfo=zone).timestamp()
    end = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(0), tzinfo=zone).timestamp()
    return start, end


def bucket_of(at: float) -> int:
    return int(at // BUCKET_SECONDS) * BUCKET_SECONDS


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@dataclass
class Ledger:
    """Settled spend in 15-minute UTC buckets and per client session, plus what in-flight calls reserve."""

    buckets: dict[Scope, dict[int, Spend]] = field(default_factory=dict)
    sessions: dict[tuple[Scope, str], Spend] = field(default_factory=dict)
    reserved: dict[Scope, Spend] = field(default_factory=dict)
    reserved_sessions: dict[tuple[Scope, str], Spend] = field(default_factory=dict)

    def day(self, scope: Scope, start: float, end: float) -> Spend:
        total = self.reserved.get(scope, Spend())
        for bucket, spend in self.buckets.get(scope, {}).items():
            if start <= bucket < end:
                total += spend
        return total

    def session(self, scope: Scope, session: str) -> Spend:
        return self.sessions.get((scope, session), Spend()) + self.reserved_sessions.get((scope, session), Spend())

    def reserve(self, scope: Scope, session: str, spend: Spend) -> None:
        self.reserved[scope] = self.reserved.get(scope, Spend()) + spend
        key = (scope, session)
        self.reserved_sessions[key] = self.reserved_sessions.get(key, Spend()) + spend

    def release(self, scope: Scope, session: str, spend: Spend) -> None:
        self.reserved[scope] = self.reserved.get(scope, Spend()) - spend
        key = (scope, session)
        left = self.reserved_sessions.get(key, Spend()) - spend
        if left == Spend():
            self.reserved_sessions.pop(key, None)
        else:
            self.reserved_sessions[key] = left

    def charge(self, scope: Scope, session: str, at: float, spend: Spend) -> None:
        buckets = self.buckets.setdefault(scope, {})
        bucket = bucket_of(at)
        buckets[bucket] = buckets.get(bucket, Spend()) + spend
        if session:
            key = (scope, session)
            self.sessions[key] = self.sessions.get(key, Spend()) + spend

    def prune(self, before: float) -> None:
        for buckets in self.buckets.values():
            for bucket in [b for b in buckets if b < before]:
                del buckets[bucket]


class Budgets:
    """The budget rules of every upstream and the spend they are checked against."""

    def __init__(self, rules: Mapping[str, BudgetConfig | None], now: Callable[[], float] = time.time) -> None:
        self.now = now
        self.rules: dict[str, BudgetConfig] = {k: v for k, v in rules.items() if v is not None}
        self.ledger = Ledger()
        self.unknown_spend: set[str] = set()  # upstreams whose past spend could not be read (fail closed)

    def replace_rules(self, rules: Mapping[str, BudgetConfig | None]) -> None:
        self.rules = {k: v for k, v in rules.items() if v is not None}

    # ----- admission --------------------------------------------------------------------------

    def admit(self, upstream: str, tool: str, session: str, request_bytes: int) -> Admission:
        """Check request-side limits and, unless one denies, reserve one call, its request bytes and what its
        result may deliver when that is bounded (`result_hold`)."""
        budget = self.rules.get(upstream)
        decisions: list[Decision] = []
        if budget is not None:
            for decision in self._request_checks(budget, upstream, tool, session, request_bytes):
                decisions.append(decision)
                if decision.denies:
                    return Admission(None, tuple(decisions))
        hold = Spend(calls=1, bytes=request_bytes) + result_hold(budget, tool)
        reservation = Reservation(upstream, tool, session, hold)
        for scope in _scopes(upstream, tool):
            self.ledger.reserve(scope, session, reservation.spend)
        return Admission(reservation, tuple(decisions))

    def _request_checks(self, budget: BudgetConfig, upstream: str, tool: str, session: str,
                        request_bytes: int) -> Iterable[Decision]:
        rule = budget.for_tool(tool)
        if rule.max_request_bytes is not None and request_bytes > rule.max_request_bytes:
            yield Decision(upstream, tool, "max_request_bytes", rule.action_for("max_request_bytes"),
                           request_bytes, rule.max_request_bytes, "call")
        now = self.now()
        for limit, (window, measure) in WINDOW_LIMITS.items():
            allowed: int | None = getattr(rule, limit)
            if allowed is None:
                continue
            scope = self._scope_of(budget, upstream, tool, limit)
            reset_at: float | None = None
            if window == "day":
                start, reset_at = day_bounds(now, rule.timezone)
                spent = self.ledger.day(scope, start, reset_at)
            else:
                spent = self.ledger.session(scope, session)
            adding = {"calls": 1, "bytes": request_bytes, "tokens": 1}[measure]
            used = spent.of(measure)
            if used + adding > allowed:
                yield Decision(upstream, scope[1], limit, rule.action_for(limit), used, allowed, window,
                               reset_at, rule.timezone)

    @staticmethod
    def _scope_of(budget: BudgetConfig, upstream: str, tool: str, limit: str) -> Scope:
        """A tool override's own value counts that tool's calls; an inherited one counts the upstream's."""
        override = budget.tools.get(tool)
        if override is not None and getattr(override, limit) != getattr(budget, limit):
            return (upstream, tool)
        return (upstream, "")

    # ----- results ----------------------------------------------------------------------------

    def check_result(self, upstream: str, tool: str, result_bytes: int) -> Decision | None:
        budget = self.rules.get(upstream)
        if budget is None:
            return None
        rule = budget.for_tool(tool)
        if rule.max_result_bytes is None or result_bytes <= rule.max_result_bytes:
            return None
        return Decision(upstream, tool, "max_result_bytes", rule.action_for("max_result_bytes"), result_bytes,
                        rule.max_result_bytes, "call")

    def settle(self, reservation: Reservation, actual: Spend, started_at: float) -> None:
        """Replace what the call reserved with what it actually spent (zero usage for a denied call)."""
        for scope in _scopes(reservation.upstream, reservation.tool):
            self.ledger.release(scope, reservation.session, reservation.spend)
        self.record(reservation.upstream, reservation.tool, reservation.session, started_at, actual)

    def record(self, upstream: str, tool: str, session: str, at: float, spend: Spend) -> None:
        """Charge settled spend (live calls, or history rebuilt from the store). A call with no upstream was
        refused before routing (unknown tool, prompt or resource; bad params): no upstream's budget pays for it,
        live or rebuilt, so no report shows a blank upstream."""
        if not upstream:
            return
        for scope in _scopes(upstream, tool):
            self.ledger.charge(scope, session, at, spend)

    def forget_session(self, session: str) -> None:
        for key in [k for k in self.ledger.sessions if k[1] == session]:
            del self.ledger.sessions[key]

    def prune(self) -> None:
        self.ledger.prune(self.now() - KEEP_SECONDS)

    # ----- views ------------------------------------------------------------------------------

    def day_spend(self, upstream: str, tool: str = "") -> tuple[Spend, float]:
        """Today's spend of an upstream (or one tool) in its zone, and when today ends."""
        budget = self.rules.get(upstream)
        zone = budget.for_tool(tool).timezone if budget else "UTC"
        start, end = day_bounds(self.now(), zone)
        return self.ledger.day((upstream, tool), start, end), end

    def session_spends(self, upstream: str, tool: str = "") -> dict[str, Spend]:
        scope = (upstream, tool)
        keys = {k for k in (*self.ledger.sessions, *self.ledger.reserved_sessions) if k[0] == scope}
        return {session: self.ledger.session(scope, session) for _, session in keys}

    def upstreams(self) -> list[str]:
        seen = {scope[0] for scope in self.ledger.buckets} | set(self.rules)
        return sorted(seen)

    def tools_with_spend(self, upstream: str) -> list[str]:
        return sorted({s[1] for s in self.ledger.buckets if s[0] == upstream and s[1]})


def result_hold(budget: BudgetConfig | None, tool: str) -> Spend:
    """The most a result can deliver when `max_result_bytes` truncates or denies it (with its envelope, and
    its token estimate), so calls in flight together cannot all pass a byte or token window; nothing when
    a result is unbounded (no limit, or warn)."""
    rule = budget.for_tool(tool) if budget is not None else None
    if rule is None or rule.max_result_bytes is None or rule.action_for("max_result_bytes") == "warn":
        return Spend()
    return Spend(bytes=rule.max_result_bytes + ENVELOPE_BYTES, tokens=-(-rule.max_result_bytes // BYTES_PER_TOKEN))


def _scopes(upstream: str, tool: str) -> tuple[Scope, ...]:
    return ((upstream, ""), (upstream, tool)) if tool else ((upstream, ""),)


def with_decision(spend: Spend, action: str) -> Spend:
    """`spend` plus one count of a decision outcome (denied, truncated, warned)."""
    key = {"deny": "denied", "truncate": "truncated", "warn": "warned"}.get(action)
    return replace(spend, **{key: getattr(spend, key) + 1}) if key else spend
