"""`store.queries_usage.usage_report` over captures ingested through the OTLP endpoint."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from store.client import Store
from store.queries_usage import usage_report
from tests.ingest.conftest import ClientFactory, capture, capture_doc, events_named

SCENARIOS = [("s1_protobuf", "application/x-protobuf"), ("s2_json", "application/json")]
TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
          "cache_creation_5m_tokens", "cache_creation_1h_tokens", "cost_usd_micros")


def expected_usage() -> dict[tuple[str, str], dict[str, Any]]:
    usage: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for scenario, _ in SCENARIOS:
        for event in events_named(capture_doc(scenario, "0001_logs"), "api_request"):
            a = event["attrs"]
            row = usage[(a["session.id"], a["model"])]
            row["requests"] += 1
            row["cost_usd"] += a["cost_usd"]
            for kind in TOKENS:
                row[kind] += a[kind]
    return usage


async def ingest_all(otlp_client: ClientFactory, twice: bool = False) -> None:
    client = await otlp_client()
    for scenario, content_type in SCENARIOS:
        for _ in range(2 if twice else 1):
            response = await client.post("/v1/logs", data=capture(scenario, "0001_logs"),
                                         headers={"Content-Type": content_type})
            assert response.status == 200


async def test_usage_per_session_and_model_sums_tokens_cost_and_requests(
    otlp_client: ClientFactory, writer: Any, store: Store
) -> None:
    await ingest_all(otlp_client, twice=True)
    await writer.flush()
    report = await usage_report(store)
    want = expected_usage()
    assert {(r["session_id"], r["model"]) for r in report} == set(want)
    for row in report:
        expected = want[(row["session_id"], row["model"])]
        assert row["requests"] == expected["requests"]
        assert abs(row["cost_usd"] - expected["cost_usd"]) < 1e-9
        for kind in TOKENS:
            assert row[kind] == expected[kind], kind
        assert row["turns"] == 1
        assert row["app_version"] == "2.1.332"


async def test_usage_report_honours_since_and_until(
    otlp_client: ClientFactory, writer: Any, store: Store
) -> None:
    await ingest_all(otlp_client)
    await writer.flush()
    report = await usage_report(store)
    first = min(r["first_at"] for r in report)
    last = max(r["last_at"] for r in report)
    assert await usage_report(store, since=last + dt.timedelta(seconds=1)) == []
    assert await usage_report(store, until=first) == []
    window = await usage_report(store, since=first, until=last + dt.timedelta(microseconds=1))
    assert sum(r["requests"] for r in window) == sum(r["requests"] for r in report)
