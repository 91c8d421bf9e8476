"""JSON-RPC 2.0 on the wire: bytes to classified messages and back, ids and error codes.

Knows envelopes only, nothing of MCP; does no I/O. Parsing is strict about the envelope and
lenient about everything inside it, which passes through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeGuard

import orjson

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Implementation-defined server errors. MCP leaves -32000..-32019 to implementations; -32002 is retired
# (earlier revisions' "resource not found", never to be reused), and the SDK reads -32001 as a timeout.
REQUEST_TIMEOUT = -32001
UPSTREAM_UNAVAILABLE = -32005
SERVER_BUSY = -32003  # a bound was reached (server.max_sessions): retry later
BUDGET_EXCEEDED = -32004  # a budget refused a call whose result has no error shape (docs/budgets.md)
REQUEST_CANCELLED = -32800  # MCP's RequestCancelled

RequestId = str | int


class Kind(Enum):
    REQUEST = "request"
    NOTIFICATION = "notification"
    RESPONSE = "response"


class ProtocolError(Exception):
    """A message that is not valid JSON-RPC; carries the code and the id when one was readable."""

    def __init__(self, code: int, message: str, request_id: RequestId | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(slots=True)
class Message:
    """One parsed JSON-RPC message with its raw wire size."""

    kind: Kind
    body: dict[str, Any]
    size: int

    @property
    def id(self) -> RequestId | None:
        value = self.body.get("id")
        return value if isinstance(value, str | int) else None

    @property
    def method(self) -> str:
        return self.body.get("method", "")  # type: ignore[no-any-return]

    @property
    def params(self) -> dict[str, Any]:
        params = self.body.get("params")
        return params if isinstance(params, dict) else {}


@dataclass(slots=True)
class Batch:
    """A JSON-RPC batch (an array): each element parsed on its own, in order, as a Message or the ProtocolError
    it raised (JSON-RPC answers each bad element with its own error; the others are served)."""

    items: list[Message | ProtocolError]
    size: int


def parse(raw: bytes) -> Message:
    """Parse one message; batches (arrays) and malformed envelopes raise ProtocolError."""
    body = _loads(raw)
    if isinstance(body, list):
        raise ProtocolError(INVALID_REQUEST, "Invalid Request: JSON-RPC batches are not supported")
    return _message(body, len(raw))


def parse_message_or_batch(raw: bytes) -> Message | Batch:
    """Parse one message or a batch of them; an empty array or a malformed single message raises ProtocolError.

    An element's size is that of its compact re-encoding: the array's bytes are not split per element, and a
    client's compact JSON (what SDKs send) re-encodes to the same bytes."""
    body = _loads(raw)
    if not isinstance(body, list):
        return _message(body, len(raw))
    if not body:
        raise ProtocolError(INVALID_REQUEST, "Invalid Request: an empty batch")
    return Batch([_element(item) for item in body], len(raw))


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(PARSE_ERROR, f"Parse error: {_parse_fault(raw, exc)}") from None


def _parse_fault(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    # orjson words invalid UTF-8 as a str fault ("surrogates not allowed"): say what the sender got wrong.
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"the body is not valid UTF-8 (byte 0x{raw[bad.start]:02x} at offset {bad.start})"
    return str(exc)


def _message(body: Any, size: int) -> Message:
    if not isinstance(body, dict):
        raise ProtocolError(INVALID_REQUEST, "Invalid Request: a message must be a JSON object")
    return Message(classify(body), body, size)


def _element(item: Any) -> Message | ProtocolError:
    try:
        return _message(item, len(orjson.dumps(item)))
    except ProtocolError as exc:
        return exc


def classify(body: dict[str, Any]) -> Kind:
    """Tell request, notification and response apart, checking the envelope on the way."""
    request_id = body.get("id")
    if not _valid_id(request_id):
        raise ProtocolError(INVALID_REQUEST, "Invalid Request: id must be a string or an integer, got "
                                             f"{_json_type(request_id)} {_excerpt(request_id)}")
    if body.get("jsonrpc") != "2.0":
        raise ProtocolError(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0", got '
                                             f"{_excerpt(body['jsonrpc']) if 'jsonrpc' in body else 'none'}",
                            request_id)
    if "method" in body:
        if not isinstance(body["method"], str) or not body["method"]:
            raise ProtocolError(INVALID_REQUEST, "Invalid Request: method must be a string", request_id)
        params = body.get("params")
        if params is not None and not isinstance(params, dict):
            raise ProtocolError(INVALID_REQUEST, "Invalid Request: params must be an object", request_id)
        if "id" not in body:
            return Kind.NOTIFICATION
        if request_id is None:  # MCP: a request id must not be null (it could never be answered or cancelled)
            raise ProtocolError(INVALID_REQUEST, "Invalid Request: a request id must not be null")
        return Kind.REQUEST
    if request_id is not None and ("result" in body) != ("error" in body):
        return Kind.RESPONSE
    raise ProtocolError(INVALID_REQUEST, "Invalid Request: neither a request nor a response", request_id)


def _json_type(value: object) -> str:
    names = {bool: "a boolean", float: "a number with a fraction", list: "an array", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _excerpt(value: object) -> str:
    """A value as JSON, cut short: an error message quotes what was sent, never all of it."""
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def _valid_id(value: object) -> bool:
    return value is None or is_request_id(value)


def is_request_id(value: object) -> TypeGuard[RequestId]:
    """A usable JSON-RPC id: a string or an integer (booleans are ints in Python, but not ids)."""
    return isinstance(value, str | int) and not isinstance(value, bool)


def encode(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


def encode_result(request_id: RequestId, result: dict[str, Any], raw_result: bytes | memoryview | None = None) -> bytes:
    """A response carrying `result`; given the result's bytes as received (`result_slice`), they pass untouched."""
    if raw_result is None:
        return orjson.dumps(result_body(request_id, result))
    return b"".join((b'{"jsonrpc":"2.0","id":', orjson.dumps(request_id), b',"result":', raw_result, b"}"))


def result_slice(raw: bytes, body: dict[str, Any]) -> memoryview | None:
    """The bytes of `result` inside `raw`, the compact response `body` was parsed from, when it has exactly the
    keys jsonrpc, id and result in the order the Python SDK writes or the one the TypeScript SDK writes (result
    first); None for any other shape, which callers then re-encode."""
    if len(body) != 3 or not isinstance(body.get("result"), dict) or body.get("jsonrpc") != "2.0":
        return None
    request_id = orjson.dumps(body.get("id"))
    end = len(raw)
    while end and raw[end - 1] in b" \t\r\n":
        end -= 1
    prefix = b'{"jsonrpc":"2.0","id":' + request_id + b',"result":'
    if raw.startswith(prefix) and raw[end - 1 : end] == b"}":
        return memoryview(raw)[len(prefix) : end - 1]
    suffix = b',"jsonrpc":"2.0","id":' + request_id + b"}"
    if raw.startswith(b'{"result":') and raw[end - len(suffix) : end] == suffix:
        return memoryview(raw)[len(b'{"result":') : end - len(suffix)]
    return None


def error_body(request_id: RequestId | None, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def result_body(request_id: RequestId, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def request_body(request_id: RequestId, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = params
    return body


def notification_body(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        body["params"] = params
    return body
