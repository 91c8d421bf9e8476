"""Per-message flow for one client session: route, meter, apply the budget policy, reply.

The single place where exceptions become JSON-RPC errors. Requests run as tasks registered in
the session (so `notifications/cancelled` can reach them); intermediate events (progress,
server-to-client requests) leave through an `emit` callback, the final answer as encoded bytes.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from gateway import jsonrpc, mcp, metering
from gateway.jsonrpc import Message, RequestId
from gateway.records import CallRecord
from gateway.sessions import Session
from gateway.upstreams.client import State, UpstreamClient, UpstreamError, UpstreamTimeout

if TYPE_CHECKING:
    from gateway.hub import Hub

log = logging.getLogger("tollgate.relay")
INTERNAL_ERROR_TEXT = "Internal error in Tollgate; see its log"

Emit = Callable[[dict[str, Any]], None]


class Policy(Protocol):
    """The budget seam: admit before forwarding, settle the result before the client sees it."""

    async def admit(self, call: CallRecord, params: dict[str, Any]) -> str | None:
        """Return a model-facing denial text to refuse the call, or None to let it through."""

    def settle(self, call: CallRecord, result: dict[str, Any], size: int) -> dict[str, Any] | str:
        """Return the result to deliver (possibly truncated), or a model-facing denial text to refuse it;
        record the decision on `call`."""


class DuplicateRequest(Exception):
    """The session already has a request in flight with this id."""


class Relay:
    """Serves the messages of every session against the hub's upstreams and catalog."""

    def __init__(self, hub: Hub, policy: Policy | None = None) -> None:
        self.hub = hub
        self.policy = policy
        self.ignored: collections.Counter[str] = collections.Counter()  # client messages ignored, by reason
        # Per upstream client: its tool list as last seen, its length and its names, so a call checks a set.
        self._offered: weakref.WeakKeyDictionary[UpstreamClient, tuple[list[dict[str, Any]], int, set[Any]]] = (
            weakref.WeakKeyDictionary())

    # ----- entry points (called by the downstream transport) --------------------------------

    def start_request(self, session: Session, message: Message, emit: Emit) -> asyncio.Task[bytes | None]:
        request_id = message.id
        assert request_id is not None
        if request_id in session.in_flight:
            raise DuplicateRequest(f"request id {request_id!r} is already in flight in this session")
        task = asyncio.create_task(self._answer(session, message, emit))
        session.in_flight[request_id] = task
        task.add_done_callback(lambda _: session.in_flight.pop(request_id, None))
        return task

    async def handle_notification(self, session: Session, message: Message) -> None:
        if message.method == "notifications/cancelled":
            request_id = message.params.get("requestId")
            if not jsonrpc.is_request_id(request_id):
                # The spec lets a receiver ignore a cancel it cannot match; a hostile id is never a key.
                self.ignored["cancel_bad_request_id"] += 1
                log.info("session %s sent a cancel with a non-id requestId (%s); ignored",
                         session.session_id[:8], type(request_id).__name__)
                return
            task = session.in_flight.get(request_id)
            if task is not None:
                task.cancel()
        elif message.method == "notifications/roots/list_changed":
            for upstream in self._ready() + self._own_ready(session):
                await self._notify_quietly(upstream, message.method, message.params or None)

    async def handle_response(self, session: Session, message: Message) -> None:
        """A client's answer to a server-to-client request: back to its upstream, original id."""
        pending = session.server_requests.pop(str(message.id), None)
        if pending is None:
            log.info("session %s answered unknown server request %r", session.session_id[:8], message.id)
            return
        upstream = pending.upstream
        try:
            await upstream.respond({**message.body, "id": pending.upstream_id})
        except UpstreamError as exc:
            log.warning("could not relay answer to %s: %s", upstream.name, exc)

    # ----- requests -------------------------------------------------------------------------

    async def _answer(self, session: Session, message: Message, emit: Emit) -> bytes | None:
        request_id = message.id
        assert request_id is not None
        if message.method in mcp.METERED_METHODS:
            try:
                return await self._metered(session, message, emit)  # turns every other failure into its row too
            except asyncio.CancelledError:
                return None
        try:
            _check_params(message)
            result = await self._dispatch(session, message, emit)
            return jsonrpc.encode(jsonrpc.result_body(request_id, result))
        except asyncio.CancelledError:
            return None
        except jsonrpc.ProtocolError as exc:
            return jsonrpc.encode(jsonrpc.error_body(request_id, exc.code, exc.message))
        except UpstreamPassthroughError as exc:
            return jsonrpc.encode(jsonrpc.error_body(request_id, exc.code, str(exc), exc.data))
        except UpstreamError as exc:
            return jsonrpc.encode(jsonrpc.error_body(request_id, exc.code, str(exc)))
        except Exception:
            log.exception("unexpected error serving %s", message.method)
            return jsonrpc.encode(jsonrpc.error_body(request_id, jsonrpc.INTERNAL_ERROR, INTERNAL_ERROR_TEXT))

    async def _dispatch(self, session: Session, message: Message, emit: Emit) -> dict[str, Any]:
        method, params = message.method, message.params
        if method == "ping":
            return {}
        if method in mcp.CATALOG_METHODS:
            return self._list(session, method, params)
        if method in ("resources/subscribe", "resources/unsubscribe"):
            return await self._subscription(session, method, params, emit)
        if method == "completion/complete":
            return await self._complete(session, params, emit)
        if method == "logging/setLevel":
            session.log_level = params["level"]  # for its own instances of stateful upstreams not started yet
            for upstream in [*self.hub.upstreams.values(), *session.private_upstreams.values()]:
                await upstream.set_log_level(params)
            return {}
        raise jsonrpc.ProtocolError(jsonrpc.METHOD_NOT_FOUND, f"Method not found: {method}")

    def _list(self, session: Session, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("cursor") is not None:
            # Tollgate answers every list in one page, so no cursor of ours can exist.
            raise jsonrpc.ProtocolError(jsonrpc.INVALID_PARAMS, f"Invalid params: unknown cursor {params['cursor']!r}")
        key = mcp.CATALOG_METHODS[method]
        if key in ("tools", "prompts"):
            _own_routes(session, key).update(self.hub.hand_out(key))
        return {key: self.hub.catalog.items(key)}

    async def _forward(self, session: Session, upstream: UpstreamClient, method: str,
                       params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        upstream = await self.hub.client_for(session, upstream)
        response = await upstream.request(method, params, sink=self._sink(session, upstream, emit), owner=session)
        return _result_or_raise(response.body)

    async def _subscription(self, session: Session, method: str, params: dict[str, Any],
                            emit: Emit) -> dict[str, Any]:
        """Subscribe or unsubscribe upstream, and remember it: `resources/updated` reaches subscribers only."""
        upstream = self._resource_owner(params["uri"])
        key = (upstream.name, params["uri"])
        if method == "resources/unsubscribe":
            session.subscriptions.discard(key)
            if not upstream.config.stateful and any(key in s.subscriptions for s in self.hub.sessions):
                return {}  # another session still wants this shared upstream's updates
        result = await self._forward(session, upstream, method, params, emit)
        if method == "resources/subscribe":
            session.subscriptions.add(key)
        return result

    async def _complete(self, session: Session, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        ref = params.get("ref") if isinstance(params.get("ref"), dict) else {}
        assert isinstance(ref, dict)
        if ref.get("type") == "ref/prompt":
            upstream_name, original = self._route(session, "prompts", str(ref.get("name", "")))
            params = {**params, "ref": {**ref, "name": original}}
            upstream = self._upstream(upstream_name)
        else:
            upstream = self._resource_owner(str(ref.get("uri", "")))
        return await self._forward(session, upstream, "completion/complete", params, emit)

    # ----- metered calls --------------------------------------------------------------------

    async def _metered(self, session: Session, message: Message, emit: Emit) -> bytes | None:
        request_id = message.id
        assert request_id is not None
        call = self._record(session, message)
        try:
            _check_params(message)
            upstream, params = self._prepare(session, message, call)
            result, raw_result = await self._metered_result(session, call, upstream, params, emit)
            encoded = jsonrpc.encode_result(request_id, result, raw_result)
        except asyncio.CancelledError:
            call.finish("cancelled", "cancelled by the client")
            self.hub.call_finished(call)
            raise
        except BudgetRefusal as exc:
            return self._encode_error(call, request_id, jsonrpc.BUDGET_EXCEEDED, exc.text)
        except UpstreamTimeout as exc:
            call.finish("timeout", str(exc))
            return self._encode_error(call, request_id, exc.code, str(exc))
        except UpstreamPassthroughError as exc:  # the upstream answered, with a JSON-RPC error
            call.finish("protocol_error", str(exc))
            return self._encode_error(call, request_id, exc.code, str(exc), exc.data)
        except UpstreamError as exc:
            call.finish("upstream_error", str(exc))
            return self._encode_error(call, request_id, exc.code, str(exc))
        except jsonrpc.ProtocolError as exc:
            call.finish("protocol_error", exc.message)
            return self._encode_error(call, request_id, exc.code, exc.message)
        except Exception as exc:  # a bug in Tollgate: the call still gets its row, and the budget its hold back
            log.exception("unexpected error serving %s to %s", call.method, call.upstream)
            call.finish("internal_error", f"{type(exc).__name__}: {exc}")
            return self._encode_error(call, request_id, jsonrpc.INTERNAL_ERROR, INTERNAL_ERROR_TEXT)
        call.resp_bytes_client = len(encoded)
        if not call.ended_at:
            call.finish("tool_error" if result.get("isError") else "ok")
        self.hub.call_finished(call)
        return encoded

    def _encode_error(self, call: CallRecord, request_id: RequestId, code: int, text: str,
                      data: Any = None) -> bytes:
        encoded = jsonrpc.encode(jsonrpc.error_body(request_id, code, text, data))
        call.resp_bytes_client = len(encoded)
        self.hub.call_finished(call)
        return encoded

    def _prepare(self, session: Session, message: Message, call: CallRecord) -> tuple[UpstreamClient, dict[str, Any]]:
        """The upstream that serves the call and the params it gets; names the upstream and tool on `call`."""
        params = message.params
        if message.method == "resources/read":
            upstream = self._resource_owner(call.exposed_name)
            call.upstream = upstream.name
            return upstream, params
        key = "tools" if message.method == "tools/call" else "prompts"
        call.upstream, call.tool = self._route(session, key, call.exposed_name)
        return self._upstream(call.upstream), {**params, "name": call.tool}

    def _record(self, session: Session, message: Message) -> CallRecord:
        """The call's row as the client asked for it; `_prepare` adds the upstream and its own name once routed."""
        params = message.params
        asked = params.get("uri" if message.method == "resources/read" else "name")
        asked = asked if isinstance(asked, str) else ""
        meta = params.get("_meta")
        meta = meta if isinstance(meta, dict) else {}
        return CallRecord(
            method=message.method, upstream="", tool=asked, exposed_name=asked,
            mcp_session_id=session.session_id, client_name=session.client_name,
            client_version=session.client_version, auth_identity=session.auth_identity,
            cc_session_id=session.cc_session_id, tool_use_id=str(meta.get(mcp.META_TOOL_USE_ID, "")),
            traceparent=str(meta.get("traceparent", "")), req_bytes_client=message.size,
        )

    async def _metered_result(self, session: Session, call: CallRecord, upstream: UpstreamClient,
                              params: dict[str, Any], emit: Emit) -> tuple[dict[str, Any], memoryview | None]:
        """The result to deliver and, when it is the upstream's own unchanged, its bytes to pass through."""
        if self.policy is not None:
            denial = await self.policy.admit(call, params)
            if denial is not None:
                return _refusal(call, denial), None
        if call.method == "tools/call" and not self._still_offered(upstream, call.tool):
            if upstream.state is not State.READY:
                raise upstream.unavailable()
            text = f"Tool {call.exposed_name!r} is no longer offered by upstream {upstream.name!r} (it dropped it)."
            call.finish("tool_error", text)
            return {"content": [{"type": "text", "text": text}], "isError": True}, None

        def sent(_: int, size: int) -> None:
            call.req_bytes_upstream = size

        upstream = await self.hub.client_for(session, upstream)

        response = await upstream.request(call.method, params, sink=self._sink(session, upstream, emit, call),
                                          on_sent=sent, owner=session)
        call.resp_bytes_upstream = response.size
        result = _result_or_raise(response.body)
        if self.policy is not None or self.hub.observers:  # `serve --no-store` has neither: nothing is metered
            _apply_sizes(call, metering.measure(result))
        settled = result if self.policy is None else self.policy.settle(call, result, response.size)
        delivered = settled if isinstance(settled, dict) else _refusal(call, settled)
        return delivered, jsonrpc.result_slice(response.raw, response.body) if delivered is result else None

    def _still_offered(self, upstream: UpstreamClient, tool: str) -> bool:
        if upstream.state is not State.READY:
            return False
        tools = upstream.catalog.items.get("tools", [])
        cached = self._offered.get(upstream)
        if cached is None or cached[0] is not tools or cached[1] != len(tools):  # a refresh makes a new list
            cached = self._offered[upstream] = (tools, len(tools), {t.get("name") for t in tools})
        return tool in cached[2]

    # ----- events from upstreams during a request --------------------------------------------

    def _sink(self, session: Session, upstream: UpstreamClient, emit: Emit,
              call: CallRecord | None = None) -> Callable[[dict[str, Any]], None]:
        deliver = _while_running(asyncio.current_task(), emit, session)

        def sink(body: dict[str, Any]) -> None:
            if "id" not in body:
                if call is not None and body.get("method") == "notifications/progress":
                    call.progress_events += 1
                emit(body)
            else:
                self.hub.offer_server_request(session, upstream, body, deliver)

        return sink

    # ----- routing helpers ------------------------------------------------------------------

    def _route(self, session: Session, key: str, exposed: str) -> tuple[str, str]:
        """The (upstream, original name) behind an exposed tool or prompt name. The session's own routes (what it
        was given) first, then the current catalog, whose names are handed out from then on. Either way a name
        keeps its item: the hub's ledger never lets a later catalog give a handed-out name to another."""
        own = _own_routes(session, key)
        route = own.get(exposed)
        if route is None:
            route = self.hub.hand_out(key).get(exposed)
            if route is None:
                raise self._unknown(key, exposed)
            own[exposed] = route
        return route

    def _unknown(self, key: str, exposed: str) -> Exception:
        """The error for a name no catalog routes. While an upstream that never listed its items is not ready
        (starting, or failing to start), the name may well be one of its: the error names it and what it is doing
        (an upstream error, worth a retry), rather than calling the name unknown. An exposed name is never split
        to guess its upstream (see gateway.naming), so every such upstream is named."""
        waiting = sorted((u for u in self.hub.upstreams.values()
                          if u.state is not State.READY and not u.catalog.read_at), key=lambda u: u.name)
        if not waiting:
            return jsonrpc.ProtocolError(jsonrpc.INVALID_PARAMS, f"Unknown {key[:-1]}: {exposed}")
        which = (f"upstream {waiting[0].name}, which is not ready ({waiting[0].condition()})" if len(waiting) == 1
                 else "upstreams " + ", ".join(f"{u.name} ({u.condition()})" for u in waiting)
                 + ", which are not ready")
        return UpstreamError(f"Unknown {key[:-1]}: {exposed}, unless it is one of {which} and has not listed its "
                             f"{key} yet; retry once it is ready")

    def _upstream(self, name: str) -> UpstreamClient:
        upstream = self.hub.upstreams.get(name)
        if upstream is None:
            raise UpstreamError(f"upstream {name!r} is not configured any more")
        return upstream

    def _resource_owner(self, uri: str) -> UpstreamClient:
        owner = self.hub.catalog.resource_owner(uri)
        if owner is None:
            candidates = [u for u in self._ready() if "resources" in u.capabilities]
            if len(candidates) != 1:
                raise jsonrpc.ProtocolError(jsonrpc.INVALID_PARAMS, f"Unknown resource: {uri}")
            return candidates[0]
        return self._upstream(owner)

    def _ready(self) -> list[UpstreamClient]:
        return [u for u in self.hub.upstreams.values() if u.state is State.READY]

    def _own_ready(self, session: Session) -> list[UpstreamClient]:
        """The session's own instances of stateful upstreams that are ready."""
        return [u for u in session.private_upstreams.values() if u.state is State.READY]

    async def _notify_quietly(self, upstream: UpstreamClient, method: str, params: dict[str, Any] | None) -> None:
        try:
            await upstream.notify(method, params)
        except UpstreamError as exc:
            log.info("could not notify %s: %s", upstream.name, exc)


def _check_params(message: Message) -> None:
    problem = mcp.params_problem(message.method, message.params)
    if problem is not None:
        raise jsonrpc.ProtocolError(jsonrpc.INVALID_PARAMS, f"Invalid params: {problem}")


def _own_routes(session: Session, key: str) -> dict[str, tuple[str, str]]:
    return session.tool_routes if key == "tools" else session.prompt_routes


def _while_running(task: asyncio.Task[Any] | None, emit: Emit, session: Session) -> Emit:
    """Emit on the request's own stream while it is open, later on the session's GET stream (where
    an upstream's cancel of a relayed request still finds the client after the call ended)."""
    def deliver(body: dict[str, Any]) -> None:
        if task is not None and not task.done():
            emit(body)
        else:
            session.general.push(jsonrpc.encode(body))

    return deliver


def _result_or_raise(body: dict[str, Any]) -> dict[str, Any]:
    if "error" in body:
        error = body["error"] if isinstance(body["error"], dict) else {}
        raise UpstreamPassthroughError(error)
    result = body.get("result")
    return result if isinstance(result, dict) else {}


class BudgetRefusal(Exception):
    """A budget refused a call whose result has no error shape (resources/read, prompts/get)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _refusal(call: CallRecord, text: str) -> dict[str, Any]:
    """A budget's refusal as the call's method can carry it: a tool result with isError for tools/call; any
    other method raises BudgetRefusal, answered as a JSON-RPC error with the same text."""
    call.finish("denied", text)
    if call.method != "tools/call":
        raise BudgetRefusal(text)
    return {"content": [{"type": "text", "text": text}], "isError": True}


class UpstreamPassthroughError(UpstreamError):
    """An upstream's own JSON-RPC error, relayed with its code, message and data."""

    def __init__(self, error: dict[str, Any]) -> None:
        self.data = error.get("data")
        code = error.get("code")
        super().__init__(str(error.get("message", "upstream error")),
                         code if isinstance(code, int) else jsonrpc.INTERNAL_ERROR)


def _apply_sizes(call: CallRecord, sizes: metering.ContentSizes) -> None:
    call.text_bytes = sizes.text_bytes
    call.image_bytes_encoded = sizes.image_bytes_encoded
    call.image_bytes_decoded = sizes.image_bytes_decoded
    call.audio_bytes = sizes.audio_bytes
    call.resource_bytes = sizes.resource_bytes
    call.structured_bytes = sizes.structured_bytes
    call.content_blocks = sizes.content_blocks
    call.est_tokens = sizes.est_tokens
