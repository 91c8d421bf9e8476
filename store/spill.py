"""The writer's durable spill: append-only segment files of orjson lines `{"t": table, "r": [rows]}`.

One line per acknowledged write, written with one `os.write` (survives kill -9; fsync optional for power loss).
Knows files only: it never talks to the store. The directory is locked to one process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from store.client import DirLock, unusable_dir

log = logging.getLogger(__name__)

SEGMENT_PREFIX = "segment-"
SEGMENT_SUFFIX = ".jsonl"
REJECTED_DIR = "rejected"
_DUMPS_OPTIONS = orjson.OPT_NAIVE_UTC  # datetimes as ISO-8601 with +00:00, which inserts parse

Batch = tuple[str, list[dict[str, Any]]]  # (table, rows) as written by one append


@dataclass
class Segment:
    path: Path
    rows: int = 0
    bytes: int = 0


class Spill:
    """Segments in `directory`: one active (appended to) and any number sealed (waiting to be stored)."""

    def __init__(self, directory: Path, *, fsync: bool = False) -> None:
        self.directory = directory
        self.fsync = fsync
        self.sealed: list[Segment] = []
        # Totals of `sealed`, kept as it changes: read on every write, and a long outage seals many segments.
        self._sealed_rows = 0
        self._sealed_bytes = 0
        self._active: Segment | None = None
        self._fd = -1
        self._next_seq = 1
        self._lock: DirLock | None = None

    def open(self) -> None:
        """Blocking: lock the directory and adopt leftover segments (a previous run's unstored rows) as sealed."""
        self._lock = DirLock(str(self.directory), "spill directory")
        try:
            for path in sorted(self.directory.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}")):
                batches = read_segment(path)
                self._add_sealed(Segment(path, sum(len(r) for _, r in batches), path.stat().st_size))
                self._next_seq = max(self._next_seq, _seq(path) + 1)
        except OSError as exc:
            self._lock.release()
            self._lock = None
            raise unusable_dir(str(self.directory), "spill directory", exc) from None

    @property
    def pending_rows(self) -> int:
        active = self._active.rows if self._active else 0
        return active + self._sealed_rows

    @property
    def size_bytes(self) -> int:
        active = self._active.bytes if self._active else 0
        return active + self._sealed_bytes

    @property
    def active_rows(self) -> int:
        return self._active.rows if self._active else 0

    def append(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Durably append one batch; returns once the line is in the kernel (and on disk if fsync)."""
        self.append_lines(encode({table: rows}), len(rows))

    def append_lines(self, data: bytes, rows: int) -> None:
        """Durably append lines from `encode`, all or none: a failed write (disk full) is cut back off."""
        if self._active is None:
            self._start_segment()
        assert self._active is not None
        start = self._active.bytes  # the file's size: this process alone appends to the active segment
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise
        self._active.rows += rows
        self._active.bytes += len(data)

    def seal(self) -> None:
        """Close the active segment so it can be stored; the next append starts a new one."""
        if self._active is None:
            return
        if self.fsync:
            os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._add_sealed(self._active)
        self._active = None

    def _add_sealed(self, segment: Segment) -> None:
        self.sealed.append(segment)
        self._sealed_rows += segment.rows
        self._sealed_bytes += segment.bytes

    def retire(self, segments: Sequence[Segment]) -> None:
        """Delete segments whose rows are all stored."""
        for segment in segments:
            segment.path.unlink(missing_ok=True)
            self.sealed.remove(segment)
            self._sealed_rows -= segment.rows
            self._sealed_bytes -= segment.bytes

    def reject(self, table: str, rows: list[dict[str, Any]], error: str) -> Path:
        """Keep rows the store refused for good, beside the spill, for a person to inspect or replay."""
        directory = self.directory / REJECTED_DIR
        directory.mkdir(exist_ok=True)
        path = directory / f"{table}-{time.time_ns()}{SEGMENT_SUFFIX}"
        path.write_bytes(orjson.dumps({"t": table, "r": rows, "error": error}, option=_DUMPS_OPTIONS) + b"\n")
        return path

    def close(self) -> None:
        self.seal()
        if self._lock:
            self._lock.release()
            self._lock = None

    def _start_segment(self) -> None:
        path = self.directory / f"{SEGMENT_PREFIX}{self._next_seq:012d}{SEGMENT_SUFFIX}"
        self._next_seq += 1
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._active = Segment(path)


def encode(tables: Mapping[str, Sequence[dict[str, Any]]]) -> bytes:
    """The spill lines of one write: one `{"t": table, "r": rows}` line per table that has rows."""
    return b"".join(orjson.dumps({"t": table, "r": rows}, option=_DUMPS_OPTIONS) + b"\n"
                    for table, rows in tables.items() if rows)


def read_segment(path: Path) -> list[Batch]:
    """Blocking: the batches of one segment. A torn last line (a crash mid-write, never acknowledged) is
    skipped; a corrupt line in the middle is moved to `rejected/` and logged."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline
    if torn:
        log.warning("spill %s ends in a partial line of %d bytes (unacknowledged write); skipped", path, len(torn))
    batches: list[Batch] = []
    for number, line in enumerate(lines, 1):
        try:
            entry = orjson.loads(line)
            batches.append((entry["t"], entry["r"]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.error("spill %s line %d is corrupt; kept in %s", path, number, REJECTED_DIR)
            rejected = path.parent / REJECTED_DIR
            rejected.mkdir(exist_ok=True)
            (rejected / f"{path.stem}-line{number}.bin").write_bytes(line)
    return batches


_LINE_HEAD = b'{"t":"'
_ROWS_KEY = b'","r":['


def read_segment_raw(path: Path) -> dict[str, list[bytes]] | None:
    """Blocking: each table's row arrays (the JSON text of `r`, brackets included) of one segment, without
    parsing the rows, for stores that parse JSON themselves. A torn last line is skipped as in `read_segment`;
    None when a line does not have the shape `append` writes (a corrupt line: let `read_segment` handle it)."""
    lines = path.read_bytes().split(b"\n")
    lines.pop()  # a torn last line, or b"" (read_segment logs it)
    out: dict[str, list[bytes]] = {}
    for line in lines:
        end = line.find(_ROWS_KEY, len(_LINE_HEAD))
        if not line.startswith(_LINE_HEAD) or end < 0 or not line.endswith(b"]}"):
            return None
        table = line[len(_LINE_HEAD) : end]
        if b'"' in table or b"\\" in table:
            return None
        out.setdefault(table.decode(), []).append(line[end + len(_ROWS_KEY) - 1 : -1])
    return out


def _seq(path: Path) -> int:
    try:
        return int(path.name[len(SEGMENT_PREFIX) : -len(SEGMENT_SUFFIX)])
    except ValueError:
        return 0
