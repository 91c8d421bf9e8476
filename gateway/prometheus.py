"""In-process counters and a latency histogram, rendered in the Prometheus text format at /metrics.

An observer of relay events plus gauges read on demand (upstream health, writer backlog); no
client library needed for this handful of series.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from gateway.records import CallRecord, ToolListSnapshot
from store.statuses import ERRORS

BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
Gauge = Callable[[], dict[tuple[tuple[str, str], ...], float]]


class Metrics:
    """Counts what the relay reports; renders everything registered as Prometheus text."""

    def __init__(self) -> None:
        self.counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(lambda: defaultdict(float))
        self.histogram: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS_MS) + 1))
        self.histogram_sum: dict[str, float] = defaultdict(float)
        self.gauges: dict[str, Gauge] = {}
        self.sampled_counters: dict[str, Gauge] = {}  # counters kept elsewhere (upstream clients), read at render
        self.help: dict[str, str] = {}
        self._call_series: dict[tuple[str, str, str], _CallSeries] = {}

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        self.counters[name][tuple(sorted(labels.items()))] += value

    def call_finished(self, record: CallRecord) -> None:
        # Label tuples are built once per (upstream, method, status) and reused: this runs on every call.
        key = (record.upstream, record.method, record.status)
        series = self._call_series.get(key)
        if series is None:
            series = self._call_series[key] = _call_series(self, *key)
        calls, errors, bytes_series = series
        calls[0][calls[1]] += 1.0
        if errors is not None:
            errors[0][errors[1]] += 1.0
        for (counter, labels), size in zip(bytes_series, (record.req_bytes_client, record.req_bytes_upstream,
                                                          record.resp_bytes_upstream, record.resp_bytes_client),
                                           strict=True):
            counter[labels] += size
        self._observe(record.upstream, record.duration_ms)

    def tool_list_changed(self, snapshot: ToolListSnapshot) -> None:
        self.inc("tollgate_tool_list_snapshots_total", upstream=snapshot.upstream)

    def upstream_event(self, upstream: str, kind: str, detail: str) -> None:
        self.inc("tollgate_upstream_events_total", upstream=upstream, kind=kind)

    def session_event(self, row: dict[str, Any]) -> None:
        self.inc("tollgate_sessions_total", event="ended" if row.get("ended_at") else "started")

    def _observe(self, upstream: str, duration_ms: float) -> None:
        buckets = self.histogram[upstream]
        index = bisect.bisect_left(BUCKETS_MS, duration_ms)  # the first bound >= duration_ms; len() past the last
        buckets[index] += 1
        self.histogram_sum[upstream] += duration_ms / 1000.0

    def render(self) -> str:
        lines: list[str] = []
        for name, series in sorted(self.counters.items()):
            lines.append(f"# TYPE {name} counter")
            lines += [f"{name}{_labels(labels)} {_number(value)}" for labels, value in sorted(series.items())]
        for name, sample in sorted(self.sampled_counters.items()):
            lines.append(f"# TYPE {name} counter")
            lines += [f"{name}{_labels(labels)} {_number(value)}" for labels, value in sorted(sample().items())]
        lines += self._render_histogram()
        for name, gauge in sorted(self.gauges.items()):
            lines.append(f"# TYPE {name} gauge")
            lines += [f"{name}{_labels(labels)} {_number(value)}" for labels, value in sorted(gauge().items())]
        return "\n".join(lines) + "\n"

    def _render_histogram(self) -> list[str]:
        name = "tollgate_call_duration_seconds"
        lines = [f"# TYPE {name} histogram"] if self.histogram else []
        for upstream, buckets in sorted(self.histogram.items()):
            running = 0
            for bound, count in zip((*BUCKETS_MS, None), buckets, strict=True):
                running += count
                le = "+Inf" if bound is None else f"{bound / 1000:g}"
                lines.append(f'{name}_bucket{{le="{le}",upstream="{_escape(upstream)}"}} {running}')
            lines.append(f'{name}_sum{{upstream="{_escape(upstream)}"}} {_number(self.histogram_sum[upstream])}')
            lines.append(f'{name}_count{{upstream="{_escape(upstream)}"}} {running}')
        return lines


Series = tuple[dict[tuple[tuple[str, str], ...], float], tuple[tuple[str, str], ...]]
_CallSeries = tuple[Series, Series | None, tuple[Series, ...]]
_DIRECTIONS = ("request_client", "request_upstream", "response_upstream", "response_client")


def _series(metrics: Metrics, name: str, **labels: str) -> Series:
    return metrics.counters[name], tuple(sorted(labels.items()))


def _call_series(metrics: Metrics, upstream: str, method: str, status: str) -> _CallSeries:
    """The counters one finished call increments, each with its label tuple, as `inc` would address them."""
    calls = _series(metrics, "tollgate_calls_total", upstream=upstream, method=method, status=status)
    errors = (_series(metrics, "tollgate_call_errors_total", upstream=upstream, status=status)
              if status in ERRORS else None)
    return calls, errors, tuple(_series(metrics, "tollgate_bytes_total", upstream=upstream, direction=direction)
                                for direction in _DIRECTIONS)


def _number(value: float) -> str:
    """Exact: a byte counter past 1e6 must not round to 6 digits (`:g`), or rate() misses what was added."""
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
