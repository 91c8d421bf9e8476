"""Benchmark of the OTLP endpoint: Claude Code log events per second into embedded chDB, and request latency.

Run: `python3 -m bench.otlp_ingest [--seconds 10]`. Real aiohttp server, real Writer, real chDB in a temp dir;
bodies are the captured s1 api_request record cloned with distinct request ids (protobuf, as Claude Code sends).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from ingest.app import RAW_BODY_HANDLER_ARGS, OtlpSettings, add_otlp_routes
from store.client import Store
from store.schema import migrate
from store.writer import Writer

CAPTURE = Path(__file__).resolve().parent.parent / "tests/data/claude_code/s1_protobuf/otlp/0001_logs.bin"


def make_body(records: int, batch_no: int) -> bytes:
    request = ExportLogsServiceRequest.FromString(CAPTURE.read_bytes())
    scope = request.resource_logs[0].scope_logs[0]
    template = next(r for r in scope.log_records if r.body.string_value == "claude_code.api_request")
    del scope.log_records[:]
    for i in range(records):
        record = scope.log_records.add()
        record.CopyFrom(template)
        record.time_unix_nano += batch_no * records + i
        for kv in record.attributes:
            if kv.key == "request_id":
                kv.value.string_value = f"req_bench_{batch_no}_{i}"
            elif kv.key == "event.sequence":
                kv.value.int_value = batch_no * records + i
    return request.SerializeToString()


async def throughput(url: str, records: int, seconds: float, concurrency: int) -> tuple[int, float]:
    bodies = [make_body(records, n) for n in range(64)]
    sent = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession() as session:

        async def worker(k: int) -> None:
            nonlocal sent
            n = k
            while time.perf_counter() < deadline:
                async with session.post(url, data=bodies[n % len(bodies)],
                                        headers={"Content-Type": "application/x-protobuf"}) as response:
                    assert response.status == 200, response.status
                    await response.read()
                sent += records
                n += concurrency

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return sent, time.perf_counter() - start


async def latency(url: str, events_per_second: int, records: int, seconds: float) -> list[float]:
    body = make_body(records, 10_000)
    interval = records / events_per_second
    timings: list[float] = []
    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        n = 0
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            async with session.post(url, data=body, headers={"Content-Type": "application/x-protobuf"}) as r:
                await r.read()
            timings.append((time.perf_counter() - t0) * 1000)
            n += 1
            await asyncio.sleep(max(0.0, start + n * interval - time.perf_counter()))
    return timings


async def main(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(f"chdb://{tmp}/chdb")
        await migrate(store)
        writer = Writer(store, Path(tmp) / "spill", flush_rows=20_000, flush_seconds=1.0,
                        max_pending_rows=2_000_000)
        await writer.start()
        app = web.Application(handler_args=RAW_BODY_HANDLER_ARGS)
        add_otlp_routes(app, writer, OtlpSettings(max_body_bytes=64 * 1024 * 1024))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/v1/logs"
        results: dict[str, Any] = {}
        for records in (100, 1000):
            sent, elapsed = await throughput(url, records, seconds, concurrency=4)
            drain0 = time.perf_counter()
            await writer.flush()
            drained = time.perf_counter() - drain0
            results[f"batch {records}"] = (
                f"{sent / elapsed:,.0f} events/s acknowledged (spilled); "
                f"{sent / (elapsed + drained):,.0f} events/s including the drain into chDB ({drained:.2f}s)"
            )
        timings = await latency(url, 1000, 100, seconds)
        q = statistics.quantiles(timings, n=100)
        results["latency at 1,000 events/s (100-record bodies)"] = (
            f"p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms over {len(timings)} requests"
        )
        rows = await store.query("SELECT count() AS n FROM cc_api_requests FINAL")
        results["typed rows stored"] = rows[0]["n"]
        for key, value in results.items():
            print(f"{key}: {value}")
        await runner.cleanup()
        await writer.stop()
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    asyncio.run(main(parser.parse_args().seconds))
