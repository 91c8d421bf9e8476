"""OTLP/HTTP routes `/v1/logs`, `/v1/metrics`, `/v1/traces`: check media type and auth, read and inflate the
body under a size cap, decode, map, hand rows to the writer, and answer per the OTLP/HTTP spec.

The one place that turns ingest and store failures into HTTP statuses; it never retries or stores itself.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson
from aiohttp import web
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_pb

from ingest.claude_code import MappingOptions, to_rows
from ingest.otlp import Decoded, OtlpDecodeError, Signal, decode
from store.errors import StoreError, StoreUnavailable, WriterBusy

log = logging.getLogger(__name__)

Encoding = Literal["protobuf", "json"]
MEDIA_TYPES: dict[str, Encoding] = {
    "application/x-protobuf": "protobuf",
    "application/protobuf": "protobuf",
    "application/json": "json",
}
CONTENT_TYPES: dict[Encoding, str] = {"protobuf": "application/x-protobuf", "json": "application/json"}
# google.rpc.Code values for the Status body of an error answer.
RPC_CODES = {400: 3, 401: 16, 404: 5, 405: 12, 413: 3, 415: 3, 429: 8, 503: 14}
OTLP_METHOD = "POST"  # the one method OTLP/HTTP exports use
SHOWN_ISSUES = 5
# aiohttp inflates gzip request bodies itself unless told not to, and then cannot report a truncated gzip
# stream: the app (or AppRunner) that serves these routes should be created with these handler args.
RAW_BODY_HANDLER_ARGS: dict[str, Any] = {"auto_decompress": False}


@dataclass(frozen=True)
class OtlpSettings:
    max_body_bytes: int = 8 * 1024 * 1024  # on the wire and after inflating
    store_prompt_text: bool = False
    auth_tokens: tuple[str, ...] = ()  # empty: no authentication


class RowWriter(Protocol):
    """The narrow slice of `store.writer.Writer` ingest needs: returns once every table's rows are durable,
    or raises having kept none of them."""

    async def write_all(self, tables: Mapping[str, Sequence[dict[str, Any]]]) -> None: ...


@dataclass
class OtlpStats:
    """Counters for the gateway's /metrics: requests by (signal, status), records, invalid values."""

    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    records_accepted: Counter[str] = field(default_factory=Counter)
    records_rejected: Counter[str] = field(default_factory=Counter)
    invalid_values: Counter[str] = field(default_factory=Counter)
    bad_bodies: Counter[int] = field(default_factory=Counter)  # by status
    bytes_received: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": {f"{signal}:{status}": n for (signal, status), n in sorted(self.requests.items())},
            "records_accepted": dict(self.records_accepted),
            "records_rejected": dict(self.records_rejected),
            "invalid_values": dict(self.invalid_values),
            "bad_bodies": {str(status): n for status, n in sorted(self.bad_bodies.items())},
            "bytes_received": self.bytes_received,
        }


class Reject(Exception):
    """An answer other than 200, with the reason sent back in a google.rpc.Status."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


OTLP_STATS = web.AppKey("otlp_stats", OtlpStats)
# Called with each accepted body's rows (table -> rows) after they are durable; must return quickly, never raise.
RowsHook = Callable[[Mapping[str, Sequence[Mapping[str, Any]]]], None]
# Told of each body refused with a 4xx (request, status, reason): the gateway's edge counter and rate-limited log.
# Without one, ingest logs every refusal itself.
RefusedHook = Callable[[web.Request, int, str], None]


def add_otlp_routes(
    app: web.Application,
    writer: RowWriter,
    settings: OtlpSettings,
    stats: OtlpStats | None = None,
    on_rows: RowsHook | None = None,
    on_refused: RefusedHook | None = None,
) -> OtlpStats:
    """Register the three OTLP/HTTP routes on `app` (the gateway's app, or a standalone one); `on_rows`
    sees each accepted body's rows after they are durable (its failures are logged, not answered), `on_refused`
    each body refused with a 4xx."""
    receiver = OtlpReceiver(writer, settings, stats or OtlpStats(), on_rows, on_refused)
    # Every method routed here (not POST alone) and every other /v1 path too, so that a wrong method or path is
    # answered as OTLP/HTTP prescribes (a Status, in the request's encoding) rather than by aiohttp's text page.
    app.router.add_route("*", "/v1/logs", receiver.logs)
    app.router.add_route("*", "/v1/metrics", receiver.metrics)
    app.router.add_route("*", "/v1/traces", receiver.traces)
    app.router.add_route("*", "/v1/{path:.*}", unrouted_handler(on_refused))
    app[OTLP_STATS] = receiver.stats
    return receiver.stats


def create_otlp_app(
    writer: RowWriter, settings: OtlpSettings, stats: OtlpStats | None = None, on_rows: RowsHook | None = None,
    middlewares: Sequence[Any] = (), on_refused: RefusedHook | None = None,
) -> web.Application:
    """A standalone OTLP receiver application (for a second listen address such as :4318): the three OTLP
    routes and nothing else; pass the main app's `stats` to count both addresses together."""
    app = web.Application(client_max_size=settings.max_body_bytes, handler_args=RAW_BODY_HANDLER_ARGS,
                          middlewares=middlewares)
    add_otlp_routes(app, writer, settings, stats, on_rows, on_refused)
    app.router.add_route("*", "/{path:.*}", unrouted_handler(on_refused))  # this listener serves nothing else
    return app


def unrouted_handler(on_refused: RefusedHook | None) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The answer to a path no OTLP route serves: 404 with a Status saying where exports go."""

    async def unrouted(request: web.Request) -> web.Response:
        reject = Reject(404, f"no OTLP route {request.path[:200]!r}: OTLP/HTTP exports are POSTed to "
                             "/v1/logs, /v1/metrics and /v1/traces")
        return refuse_request(request, reject, on_refused)

    return unrouted


def refuse_request(request: web.Request, reject: Reject, on_refused: RefusedHook | None) -> web.Response:
    """Refuse a request whose body was never read (a method or path OTLP/HTTP does not have): told to
    `on_refused` (else logged), answered with a Status in the encoding the request named, JSON when none."""
    if on_refused is not None:
        on_refused(request, reject.status, reject.message)
    else:
        log.info("OTLP request %s %s refused with %d: %s", request.method, request.path[:200], reject.status,
                 reject.message)
    return status_response(reject, answer_encoding(request.headers.get("Content-Type", "")))


def answer_encoding(header: str) -> Encoding:
    """The encoding of an error answer to a request with this Content-Type: its own when OTLP has it, else JSON."""
    return MEDIA_TYPES.get(header.split(";", 1)[0].strip().lower(), "json")


class OtlpReceiver:
    def __init__(
        self, writer: RowWriter, settings: OtlpSettings, stats: OtlpStats, on_rows: RowsHook | None = None,
        on_refused: RefusedHook | None = None,
    ) -> None:
        self.writer = writer
        self.on_rows = on_rows
        self.on_refused = on_refused
        self.settings = settings
        self.stats = stats
        self.options = MappingOptions(store_prompt_text=settings.store_prompt_text)

    async def logs(self, request: web.Request) -> web.Response:
        return await self.handle("logs", request)

    async def metrics(self, request: web.Request) -> web.Response:
        return await self.handle("metrics", request)

    async def traces(self, request: web.Request) -> web.Response:
        return await self.handle("traces", request)

    async def handle(self, signal: Signal, request: web.Request) -> web.Response:
        if request.method != OTLP_METHOD:
            self.stats.requests[(signal, 405)] += 1
            reject = Reject(405, f"{request.method[:20]} is not allowed on {request.path}: OTLP/HTTP exports are "
                                 f"sent with {OTLP_METHOD}")
            return refuse_request(request, reject, self.on_refused)
        encoding: Encoding = "json"
        received_ns = time.time_ns()
        try:
            self._authenticate(request)
            encoding = media_type(request.headers.get("Content-Type", ""))
            gzipped = content_encoding(request.headers.get("Content-Encoding", ""))
            body = await read_body(request, self.settings.max_body_bytes)
            self.stats.bytes_received += len(body)
            if gzipped and not inflated_by_server(request):
                body = gunzip(body, self.settings.max_body_bytes)
            decoded = _decode(signal, body, encoding)
            rows = to_rows(decoded, self.options, received_ns)
            await self._write(rows)
        except Reject as reject:
            return self._refuse(signal, request, encoding, reject)
        self._count(signal, decoded)
        self._notify(rows)
        return export_response(signal, decoded, encoding)

    def _notify(self, rows: dict[str, list[dict[str, Any]]]) -> None:
        if self.on_rows is None or not rows:
            return
        try:
            self.on_rows(rows)
        except Exception:
            log.exception("OTLP on_rows hook failed; the rows are stored regardless")

    def _authenticate(self, request: web.Request) -> None:
        tokens = self.settings.auth_tokens
        if not tokens:
            return
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not any(
            hmac.compare_digest(given.strip().encode(), t.encode()) for t in tokens
        ):
            raise Reject(401, "missing or invalid bearer token")

    async def _write(self, rows: dict[str, list[dict[str, Any]]]) -> None:
        try:  # one unit: a refused body leaves no rows behind to be doubled by the exporter's retry
            await self.writer.write_all(rows)
        except WriterBusy as exc:
            raise Reject(429, f"store is busy: {exc}", exc.retry_after_seconds) from exc
        except StoreUnavailable as exc:
            raise Reject(503, f"store unavailable: {exc}", exc.retry_after_seconds) from exc
        except StoreError as exc:
            raise Reject(503, f"store cannot accept data: {exc}", 5.0) from exc

    def _count(self, signal: Signal, decoded: Decoded) -> None:
        self.stats.requests[(signal, 200)] += 1
        self.stats.records_accepted[signal] += decoded.count
        if decoded.rejected:
            self.stats.records_rejected[signal] += decoded.rejected
        if decoded.invalid_values:
            self.stats.invalid_values[signal] += decoded.invalid_values
            log.info("OTLP %s: %s", signal, partial_message(decoded))

    def _refuse(self, signal: Signal, request: web.Request, encoding: Encoding, reject: Reject) -> web.Response:
        self.stats.requests[(signal, reject.status)] += 1
        self.stats.bad_bodies[reject.status] += 1
        if self.on_refused is not None and 400 <= reject.status < 500:
            self.on_refused(request, reject.status, reject.message)
        else:
            log.warning(
                "OTLP %s body refused with %d from %s: %s", signal, reject.status, request.remote, reject.message
            )
        return status_response(reject, encoding)


def _decode(signal: Signal, body: bytes, encoding: Encoding) -> Decoded:
    try:
        return decode(signal, body, encoding)
    except OtlpDecodeError as exc:
        raise Reject(400, str(exc)) from exc


def media_type(header: str) -> Encoding:
    """`application/x-protobuf` or `application/json`, case-insensitive, parameters ignored; else 415."""
    essence = header.split(";", 1)[0].strip().lower()
    encoding = MEDIA_TYPES.get(essence)
    if encoding is None:
        raise Reject(415, f"unsupported media type {essence!r}: use application/x-protobuf or application/json")
    return encoding


def content_encoding(header: str) -> bool:
    """True for gzip, False for none or identity; any other coding (br, deflate, zstd) is 415."""
    coding = header.strip().lower()
    if coding in ("", "identity"):
        return False
    if coding in ("gzip", "x-gzip"):
        return True
    raise Reject(415, f"unsupported content encoding {coding!r}: use gzip or none")


async def read_body(request: web.Request, cap: int) -> bytes:
    """The body as it streams in (chunked or not), refused with 413 as soon as it passes `cap` bytes."""
    declared = request.content_length
    if declared is not None and declared > cap:
        raise Reject(413, f"body of {declared} bytes exceeds the {cap}-byte limit")
    body = bytearray()
    try:
        while chunk := await request.content.readany():
            if len(body) + len(chunk) > cap:
                raise Reject(413, f"body exceeds the {cap}-byte limit")
            body += chunk
    except web.RequestPayloadError as exc:  # the server's own gzip inflation failed
        raise Reject(400, "body cannot be read: " + " ".join(str(exc).split())) from exc
    return bytes(body)


def inflated_by_server(request: web.Request) -> bool:
    """True when aiohttp already inflated the body (its auto_decompress is on for this server)."""
    return getattr(request.content, "total_compressed_bytes", None) is not None


def gunzip(data: bytes, cap: int) -> bytes:
    """Inflate gzip member(s), stopping as soon as the output would pass `cap` bytes (413)."""
    if not data:
        raise Reject(400, "empty body with Content-Encoding: gzip")
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = data
        try:
            while pending:
                out += inflater.decompress(pending, cap + 1 - len(out))
                if len(out) > cap:
                    raise Reject(413, f"body inflates past the {cap}-byte limit")
                pending = inflater.unconsumed_tail
        except zlib.error as exc:
            raise Reject(400, f"body is not valid gzip: {exc}") from exc
        if not inflater.eof:
            raise Reject(400, "gzip body is truncated")
        data = inflater.unused_data
    return bytes(out)


# --- answers ------------------------------------------------------------------------------------

_RESPONSES: dict[Signal, tuple[type[Any], type[Any], str]] = {
    "logs": (logs_pb.ExportLogsServiceResponse, logs_pb.ExportLogsPartialSuccess, "rejected_log_records"),
    "metrics": (metrics_pb.ExportMetricsServiceResponse, metrics_pb.ExportMetricsPartialSuccess,
                "rejected_data_points"),
    "traces": (trace_pb.ExportTraceServiceResponse, trace_pb.ExportTracePartialSuccess, "rejected_spans"),
}
_JSON_REJECTED = {"logs": "rejectedLogRecords", "metrics": "rejectedDataPoints", "traces": "rejectedSpans"}


def partial_message(decoded: Decoded) -> str:
    parts = []
    if decoded.invalid_values:
        parts.append(f"{decoded.invalid_values} invalid value(s) stored as NULL")
    if decoded.rejected:
        parts.append(f"{decoded.rejected} record(s) dropped")
    parts += [f"{n} {summary}" for summary, n in decoded.remarks.items()]
    shown = "; ".join(decoded.issues[:SHOWN_ISSUES])
    more = len(decoded.issues) - SHOWN_ISSUES
    return ", ".join(parts) + (f": {shown}" if shown else "") + (f"; and {more} more" if more > 0 else "")


def export_response(signal: Signal, decoded: Decoded, encoding: Encoding) -> web.Response:
    """200 with Export*ServiceResponse; partial_success only when something was dropped or nulled."""
    message = partial_message(decoded) if decoded.issues or decoded.rejected or decoded.remarks else ""
    if encoding == "json":
        doc: dict[str, Any] = {}
        if message:
            doc["partialSuccess"] = {_JSON_REJECTED[signal]: decoded.rejected, "errorMessage": message}
        return web.Response(body=orjson.dumps(doc), content_type=CONTENT_TYPES["json"])
    response_type, partial_type, rejected_field = _RESPONSES[signal]
    response = response_type()
    if message:
        response.partial_success.CopyFrom(partial_type(**{rejected_field: decoded.rejected, "error_message": message}))
    return web.Response(body=response.SerializeToString(), content_type=CONTENT_TYPES["protobuf"])


def status_response(reject: Reject, encoding: Encoding) -> web.Response:
    """An error answer: google.rpc.Status in the request's encoding, Retry-After when retryable."""
    code = RPC_CODES.get(reject.status, 2)
    headers = {}
    if reject.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(reject.retry_after)))
    if reject.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="tollgate"'
    if reject.status == 405:
        headers["Allow"] = OTLP_METHOD
    if encoding == "json":
        body = orjson.dumps({"code": code, "message": reject.message})
    else:
        body = encode_status(code, reject.message)
    return web.Response(status=reject.status, body=body, content_type=CONTENT_TYPES[encoding], headers=headers)


def encode_status(code: int, message: str) -> bytes:
    """google.rpc.Status{code, message} in protobuf (googleapis-common-protos is not a dependency)."""
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
