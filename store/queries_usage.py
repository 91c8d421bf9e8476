"""Usage report SQL over Claude Code telemetry: per session and per model, tokens by kind, spend, requests.

Reads `cc_api_requests` FINAL (re-delivered events counted once). Used by `tollgate report usage` and
`/api/usage`; callers format, this module only queries.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from store.client import Store
from store.sums import ROW_MICROS, ROW_USD, int_sum

USAGE_SQL = f"""
SELECT
    session_id,
    model,
    count() AS requests,
    uniqExactIf(prompt_id, prompt_id != '') AS turns,
    {int_sum('ifNull(input_tokens, 0)')} AS input_tokens,
    {int_sum('ifNull(output_tokens, 0)')} AS output_tokens,
    {int_sum('ifNull(cache_read_tokens, 0)')} AS cache_read_tokens,
    {int_sum('ifNull(cache_creation_tokens, 0)')} AS cache_creation_tokens,
    {int_sum('ifNull(cache_creation_5m_tokens, 0)')} AS cache_creation_5m_tokens,
    {int_sum('ifNull(cache_creation_1h_tokens, 0)')} AS cache_creation_1h_tokens,
    {int_sum('micros')} AS cost_usd_micros,
    sum(usd) AS cost_usd,
    countIf(no_cost) AS requests_without_cost,
    any(user_id) AS user_id,
    any(app_version) AS app_version,
    min(event_time) AS first_at,
    max(event_time) AS last_at
FROM
(
    SELECT
        *,
        {ROW_MICROS} AS micros,
        {ROW_USD} AS usd,
        cost_usd IS NULL AND cost_usd_micros IS NULL AS no_cost
    FROM {{table}} FINAL
    WHERE {{where}}
)
GROUP BY session_id, model
ORDER BY first_at, session_id, model
"""


async def usage_report(
    store: Store, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """One row per (session, model) with `since <= event_time < until` (both optional, UTC if naive)."""
    conditions = ["1"]
    params: dict[str, Any] = {}
    if since is not None:
        conditions.append("event_time >= {since:DateTime64(6, 'UTC')}")
        params["since"] = _utc(since)
    if until is not None:
        conditions.append("event_time < {until:DateTime64(6, 'UTC')}")
        params["until"] = _utc(until)
    sql = USAGE_SQL.replace("{table}", f"{store.database}.cc_api_requests").replace(
        "{where}", " AND ".join(conditions)
    )
    return await store.query(sql, params)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
