"""OTLP ingest into a running `tollgate serve` (embedded chDB): events/s at 100 and 1,000-record batches, and
request latency at a paced 1,000 events/s.

Bodies are protobuf, built once per batch size from the captured s1 api_request record with a fixed-width token in
its session, prompt and request ids; each POST swaps the token, so no two requests share an id (no dedupe collapse).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

CAPTURE = Path(__file__).resolve().parent.parent / "tests/data/claude_code/s1_protobuf/otlp/0001_logs.bin"
TOKEN = b"@@@@@@@@"  # replaced by an 8-digit body number: same length, so protobuf lengths stay valid
PROTOBUF = {"Content-Type": "application/x-protobuf"}


def template(records: int) -> bytes:
    """An export of `records` api_request events: 10 per prompt, 50 per session, ids carrying TOKEN."""
    request = ExportLogsServiceRequest.FromString(CAPTURE.read_bytes())
    scope = request.resource_logs[0].scope_logs[0]
    record0 = next(r for r in scope.log_records if r.body.string_value == "claude_code.api_request")
    del scope.log_records[:]
    token = TOKEN.decode()
    for i in range(records):
        record = scope.log_records.add()
        record.CopyFrom(record0)
        record.time_unix_nano += i * 1000
        values = {"session.id": f"bench-{token}-{i // 50:06d}", "prompt.id": f"prompt-{token}-{i // 10:06d}",
                  "request_id": f"req_{token}_{i:06d}"}
        for kv in record.attributes:
            if kv.key in values:
                kv.value.string_value = values[kv.key]
            elif kv.key == "event.sequence":
                kv.value.int_value = i
    return request.SerializeToString()


def body(tmpl: bytes, number: int) -> bytes:
    return tmpl.replace(TOKEN, b"%08d" % number)


@dataclass
class IngestResult:
    records: int
    acked_per_s: float = 0.0  # answered 200 (spilled durably, DESIGN: acknowledged)
    stored_per_s: float = 0.0  # including the drain into chDB
    drain_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)  # each POST's, answered 200 or throttled
    throttled: int = 0  # bodies answered 429/503 and sent again after Retry-After


async def pending_rows(http: aiohttp.ClientSession, base: str) -> float:
    async with http.get(f"{base}/metrics") as response:
        text = await response.text()
    match = re.search(r"^tollgate_writer_pending_rows(?:\{\})? ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def wait_drained(http: aiohttp.ClientSession, base: str, timeout: float) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout and await pending_rows(http, base) > 0:  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # another process's queue: polling /metrics is the only way to watch it
    return time.perf_counter() - start


async def throughput(base: str, records: int, seconds: float, first: int, concurrency: int = 4) -> IngestResult:
    """POST distinct bodies from `concurrency` workers for `seconds`, then wait for the writer to drain."""
    tmpl = template(records)
    counter = iter(range(first, first + 10_000_000))
    sent = 0
    async with aiohttp.ClientSession() as http:
        await wait_drained(http, base, 30)
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal sent, throttled
            while time.perf_counter() < deadline:
                data = body(tmpl, next(counter))
                while (wait := await timed_post(data)) is not None:
                    throttled += 1  # back-pressure: wait as the answer says, then send the same body again
                    await asyncio.sleep(wait)
                sent += records

        async def timed_post(data: bytes) -> float | None:
            start = time.perf_counter()
            wait = await _post_once(http, base, data)
            latencies.append((time.perf_counter() - start) * 1000)  # every POST, a throttled one too
            return wait

        throttled = 0
        latencies: list[float] = []
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        acked = time.perf_counter() - start
        drain = await wait_drained(http, base, 120)
    return IngestResult(records, sent / acked, sent / (acked + drain), drain, latencies, throttled)


async def _post_once(http: aiohttp.ClientSession, base: str, data: bytes) -> float | None:
    """POST one body: None when accepted, the Retry-After seconds on 429/503 (as an OTLP exporter honours it)."""
    async with http.post(f"{base}/v1/logs", data=data, headers=PROTOBUF) as r:
        await r.read()
        if r.status == 200:
            return None
        if r.status in (429, 503):
            return float(r.headers.get("Retry-After", "1"))
        raise RuntimeError(f"/v1/logs answered {r.status}")


async def paced_latency(base: str, events_per_s: int, records: int, seconds: float, first: int) -> list[float]:
    """Latency of each POST while sending `events_per_s` in `records`-record bodies, on a fixed schedule."""
    tmpl = template(records)
    interval = records / events_per_s
    timings: list[float] = []
    async with aiohttp.ClientSession() as http:
        start = time.perf_counter()
        for n in range(int(seconds / interval)):
            await asyncio.sleep(max(0.0, start + n * interval - time.perf_counter()))
            t0 = time.perf_counter()
            async with http.post(f"{base}/v1/logs", data=body(tmpl, first + n), headers=PROTOBUF) as r:
                await r.read()
            timings.append((time.perf_counter() - t0) * 1000)
    return timings
