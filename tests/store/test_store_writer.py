"""Writer against real chDB: rows arrive, acknowledged rows survive kill -9 and store outages exactly once,
the backlog is bounded, and rows the store refuses are set aside instead of blocking the rest."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from store.client import Store
from store.errors import SpillFull, StoreLocked, StoreUnavailable, WriterBusy
from store.spill import REJECTED_DIR, encode, read_segment
from store.writer import Writer

REPO = Path(__file__).resolve().parents[2]
WAIT = 20.0  # bound for every wait on the writer's own events


class FlakyStore:
    """The real store behind a switch: inserts fail as an outage would until `healthy` is set."""

    def __init__(self, store: Store) -> None:
        self.real = store
        self.healthy = asyncio.Event()
        self.display_dsn = store.display_dsn
        self.health = store.health

    async def insert(self, table: str, rows: Sequence[dict[str, Any]]) -> int:
        if not self.healthy.is_set():
            raise StoreUnavailable("store is down (test outage)")
        return await self.real.insert(table, rows)


def call(k: int) -> dict[str, Any]:
    return {
        "call_id": f"call-{k}",
        "mcp_session_id": "s",
        "started_at": dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=k),
        "resp_bytes_client": k,
    }


async def counts(store: Store) -> dict[str, int]:
    [row] = await store.query(
        "SELECT count() AS rows, uniqExact(call_id) AS ids, sum(resp_bytes_client) AS bytes FROM calls FINAL"
    )
    return {key: int(value) for key, value in row.items()}


@pytest.fixture
async def writer(store: Store, tmp_path: Path) -> AsyncIterator[Writer]:
    started = Writer(store, tmp_path / "spill", flush_rows=100, flush_seconds=0.01)
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


async def test_written_rows_reach_the_store(writer: Writer, store: Store) -> None:
    await writer.write("calls", [call(k) for k in range(250)])
    writer.submit("upstream_events", [{"event_id": "e-1", "upstream": "everything", "kind": "start"}])

    await writer.wait_drained(WAIT)

    assert await counts(store) == {"rows": 250, "ids": 250, "bytes": sum(range(250))}
    assert await store.query("SELECT kind FROM upstream_events") == [{"kind": "start"}]
    assert writer.stats()["flushed_rows"] == 251 and writer.stats()["queued_rows"] == 0


async def test_stop_stores_everything_and_leaves_no_spill(store: Store, tmp_path: Path) -> None:
    writer = Writer(store, tmp_path / "spill", flush_seconds=3600)
    await writer.start()
    await writer.write("calls", [call(k) for k in range(10)])

    await writer.stop()

    assert (await counts(store))["ids"] == 10
    assert not list((tmp_path / "spill").glob("segment-*"))


async def test_acknowledged_rows_survive_sigkill_and_are_stored_exactly_once(tmp_path: Path) -> None:
    dsn, spill = f"chdb://{tmp_path / 'chdb'}", tmp_path / "spill"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(REPO / "tests/store/writer_child.py"),
        dsn,
        str(spill),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout is not None
    acked: list[str] = []
    async with asyncio.timeout(60):
        async for line in child.stdout:
            _, k, flushed = line.decode().split()
            acked.append(f"call-{k}")
            if int(flushed) > 0 and len(acked) >= 300:
                child.send_signal(signal.SIGKILL)
                break
        acked += [f"call-{line.split()[1].decode()}" async for line in child.stdout]  # acked before death
        await child.wait()
    assert child.returncode == -signal.SIGKILL
    assert list(spill.glob("segment-*")), "the kill should leave unstored rows in the spill"

    store = await Store.open(dsn)
    try:
        writer = Writer(store, spill)
        await writer.start()
        await writer.stop()
        rows = await store.query(
            "SELECT call_id, count() AS n FROM calls FINAL WHERE call_id IN {ids:Array(String)} GROUP BY call_id",
            {"ids": acked},
        )
    finally:
        await store.close()
    assert {row["call_id"] for row in rows} == set(acked)
    assert all(row["n"] == 1 for row in rows)


async def test_replaying_the_same_spill_twice_does_not_double_count(store: Store, tmp_path: Path) -> None:
    spill, saved = tmp_path / "spill", tmp_path / "saved"
    down = FlakyStore(store)
    first = Writer(down, spill)  # type: ignore[arg-type]
    await first.start()
    await first.write("calls", [call(k) for k in range(40)])
    await first.stop()  # the store is down: the rows stay in the spill
    shutil.copytree(spill, saved, ignore=shutil.ignore_patterns(".tollgate.lock"))

    for _ in range(2):
        replay = Writer(store, spill)
        await replay.start()
        await replay.stop()
        shutil.copytree(saved, spill, dirs_exist_ok=True)

    [raw] = await store.query("SELECT count() AS n FROM calls")
    assert raw["n"] == 80  # both replays landed; FINAL (ReplacingMergeTree) shows each call once
    assert await counts(store) == {"rows": 40, "ids": 40, "bytes": sum(range(40))}


async def test_replay_leftovers_stores_what_a_previous_run_spilled_and_then_nothing_more(
    store: Store, tmp_path: Path
) -> None:
    flaky = FlakyStore(store)
    first = Writer(flaky, tmp_path / "spill")  # type: ignore[arg-type]
    await first.start()
    await first.write("calls", [call(k) for k in range(10)])
    await first.stop()  # the store is down: the rows stay in the spill
    second = Writer(flaky, tmp_path / "spill", flush_seconds=3600)  # type: ignore[arg-type]
    await second.start()  # its own replay fails; no flush of its own accord during the test
    try:
        with pytest.raises(StoreUnavailable):
            await second.replay_leftovers()
        flaky.healthy.set()
        await second.replay_leftovers()
        assert await counts(store) == {"rows": 10, "ids": 10, "bytes": sum(range(10))}
        second.submit("calls", [call(10)])
        await second.replay_leftovers()  # nothing left from before: this run's row waits for a flush
        assert second.stats()["queued_rows"] == 1 and (await counts(store))["rows"] == 10
    finally:
        await second.stop()


async def test_rows_written_during_an_outage_arrive_after_recovery(store: Store, tmp_path: Path) -> None:
    flaky = FlakyStore(store)
    writer = Writer(flaky, tmp_path / "spill", flush_seconds=0.01, max_backoff_seconds=0.02)  # type: ignore[arg-type]
    await writer.start()
    try:
        await writer.write("calls", [call(k) for k in range(30)])
        writer.submit("calls", [call(k) for k in range(30, 35)])
        while writer.stats()["flush_errors"] == 0:
            await writer.wait_progress(WAIT)
        assert writer.stats()["queued_rows"] == 35
        assert "test outage" in writer.stats()["last_error"]

        flaky.healthy.set()
        await writer.wait_drained(WAIT)
    finally:
        await writer.stop()

    assert await counts(store) == {"rows": 35, "ids": 35, "bytes": sum(range(35))}


async def test_backlog_past_its_bound_raises_writer_busy_but_submit_still_spills(store: Store, tmp_path: Path) -> None:
    writer = Writer(FlakyStore(store), tmp_path / "spill", max_pending_rows=10, flush_seconds=3600)  # type: ignore[arg-type]
    await writer.start()
    try:
        await writer.write("calls", [call(k) for k in range(10)])
        with pytest.raises(WriterBusy) as busy:
            await writer.write("calls", [call(10)])
        writer.submit("calls", [call(11)])

        assert busy.value.retry_after_seconds >= 1.0
        assert writer.stats()["queued_rows"] == 11
    finally:
        await writer.stop()
    assert list((tmp_path / "spill").glob("segment-*"))


async def test_a_full_spill_refuses_writes_whole_and_drops_submitted_rows_counted_and_logged_once(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyStore(store)
    first, second = [call(k) for k in range(10)], [call(k) for k in range(10, 20)]
    bound = len(encode({"calls": first})) + 100  # room for the first write, not for a second one
    writer = Writer(flaky, tmp_path / "spill", max_spill_bytes=bound, flush_seconds=3600)  # type: ignore[arg-type]
    await writer.start()
    try:
        await writer.write_all({"calls": first})
        spilled = writer.stats()["spilled_bytes"]
        with pytest.raises(SpillFull) as full:
            await writer.write_all({"calls": second, "upstream_events": [{"event_id": "e", "upstream": "a"}]})
        assert full.value.retry_after_seconds >= 1.0
        assert (writer.stats()["queued_rows"], writer.stats()["spilled_bytes"]) == (10, spilled)
        refusing, healthy = writer.health()
        assert (refusing["accepting_writes"], refusing["spill_bytes"], healthy) == (False, spilled, False)
        with caplog.at_level(logging.ERROR, logger="store.writer"):
            writer.submit("calls", [call(20)])
            writer.submit("calls", [call(21), call(22)])
        assert writer.stats()["dropped_rows"] == 3
        assert [r.message for r in caplog.records if "spill full" in r.message] == [caplog.records[0].message]
        assert "dropped 1 rows" in caplog.records[0].message

        flaky.healthy.set()
        await writer.flush()
        await writer.write_all({"calls": second})  # room again once the store took the backlog
        accepting, healthy = writer.health()
        assert (accepting["state"], accepting["accepting_writes"], healthy) == ("connected", True, True)
        await writer.flush()
    finally:
        await writer.stop()
    assert await counts(store) == {"rows": 20, "ids": 20, "bytes": sum(range(20))}


async def test_a_write_the_disk_cannot_take_is_refused_and_cut_back_off_the_spill(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "tests/store/disk_full_child.py"), str(spill),
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    out, _ = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == 0
    report = orjson.loads(out)
    assert report["outcome"].startswith("refused: cannot append to spill")
    assert (report["stats"]["queued_rows"], report["stats"]["spilled_bytes"]) == (1, report["size"])
    (segment,) = spill.glob("segment-*")
    assert segment.stat().st_size == report["size"]  # the partial write of the refused body was cut off
    assert read_segment(segment) == [("calls", [{"call_id": "kept"}])]


async def test_rows_the_store_refuses_are_set_aside_and_the_rest_stored(writer: Writer, store: Store) -> None:
    await writer.write("calls", [call(1)])
    await writer.write("calls", [{"call_id": "bad", "no_such_column": 1}])
    await writer.write("calls", [call(2)])
    await writer.write("no_such_table", [{"x": 1}])

    await writer.wait_drained(WAIT)

    assert (await counts(store))["ids"] == 2
    assert writer.stats()["rejected_rows"] == 2
    assert len(list((writer._spill.directory / REJECTED_DIR).iterdir())) == 2


async def test_a_torn_last_line_from_a_crash_is_skipped(store: Store, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    spill.mkdir()
    (spill / "segment-000000000001.jsonl").write_bytes(
        b'{"t":"calls","r":[{"call_id":"whole","mcp_session_id":"s"}]}\n{"t":"calls","r":[{"call_'
    )

    writer = Writer(store, spill)
    await writer.start()
    await writer.stop()

    assert await store.query("SELECT call_id FROM calls") == [{"call_id": "whole"}]


async def test_a_spill_directory_has_one_writer(writer: Writer, store: Store) -> None:
    second = Writer(store, writer._spill.directory)

    with pytest.raises(StoreLocked):
        await second.start()
