"""Sums and per-row costs that neither wrap nor fail over any value a telemetry column can hold.

ClickHouse's `sum` over Int64 is Int64 and wraps past 2^63-1 (a session of huge token counts listed as
negative), and `toInt64(round(cost_usd * 1e6))` of a cost near Float64's range is garbage. Ingest refuses such
values now, but rows stored before it did, or written by other means, must still read as a saturated figure,
never a wrapped or failing one. The SQL here and its Python twins keep the reads of `queries_usage` and
`queries_turns` in agreement.
"""

from __future__ import annotations

import math

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# |cost_usd| above this is read as this: its micro-USD (x 10^6) stay inside Int64 after rounding.
MAX_READ_USD = 9.2e12


def int_sum(expr: str) -> str:
    """SQL: the sum of an Int64 expression, exact in Int128 and then saturated into Int64."""
    return f"toInt64(greatest(least(sum(toInt128({expr})), {INT64_MAX}), {INT64_MIN}))"


def int_add(*exprs: str) -> str:
    """SQL: the saturated Int64 sum of several Int64 expressions of one row."""
    total = " + ".join(f"toInt128({e})" for e in exprs)
    return f"toInt64(greatest(least({total}, {INT64_MAX}), {INT64_MIN}))"


# SQL: a row's cost in USD (a non-finite cost_usd counts as absent) and in micro-USD (saturated), 0 when neither
# column has one. The column names are those of cc_api_requests.
ROW_USD = "ifNull(coalesce(if(isFinite(cost_usd), cost_usd, NULL), cost_usd_micros / 1000000), 0)"
ROW_MICROS = (
    "ifNull(coalesce(cost_usd_micros, if(isFinite(cost_usd), "
    f"toInt64(round(greatest(least(cost_usd, {MAX_READ_USD}), -{MAX_READ_USD}) * 1000000)), NULL)), 0)"
)


def usd(value: float | None) -> float | None:
    """Python twin of ROW_USD's first choice: a finite cost, else None."""
    return value if value is not None and math.isfinite(value) else None


def micros(value: float) -> int:
    """Python twin of ROW_MICROS for a finite cost in USD."""
    return round(max(-MAX_READ_USD, min(value, MAX_READ_USD)) * 1_000_000)


def clamp(value: int) -> int:
    """An integer saturated into Int64 (what JSON readers and orjson can take)."""
    return max(INT64_MIN, min(value, INT64_MAX))
