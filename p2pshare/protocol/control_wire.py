"""The control protocol's wire form, sans-IO: frames, envelopes, error codes, the drop queue.

A frame is a 4-byte big-endian unsigned length, then that many bytes of one msgpack map. Values
are JSON-like (nil, bool, int, float, str, bin, array, map with str keys); ext types, including
msgpack's timestamp, are refused so every client language decodes what it gets. Canonical form is
not required: nothing here is signed.

Messages (each one frame):
    request   {"id": int|str, "method": str, "params": map}      client -> node
    response  {"id": ..., "result": any}                          node -> client
    error     {"id": ...|nil, "error": {"code": str, "message": str}}
    event     {"event": str, "data": any}                         node -> subscribed client

The first request on a connection is ``hello`` with ``{"version": PROTOCOL_VERSION, "client":
name}``; the node answers with its own version and who it is. ``subscribe`` with ``{"events":
[names]}`` or ``{"events": "*"}`` replaces the connection's subscription. When a client's event
queue was full the node sends ``{"event": "dropped", "data": {"count": n}}`` where the lost events
would have been, so the client knows to re-read state.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

import msgpack

PROTOCOL_VERSION = 1
MAX_CONTROL_FRAME = 4 * 1024 * 1024  # bytes of msgpack per frame (the length prefix excluded)
MAX_CONTROL_DEPTH = 32  # nesting of arrays/maps in one message
MAX_METHOD_CHARS = 64
MAX_EVENT_CHARS = 64
MAX_ID_CHARS = 64
MAX_ERROR_MESSAGE_CHARS = 1_000

HEADER = struct.Struct(">I")

METHOD_HELLO = "hello"
METHOD_SUBSCRIBE = "subscribe"
EVENT_DROPPED = "dropped"
ALL_EVENTS = "*"

RequestId = int | str


class ErrorCode(StrEnum):
    """Why a request failed; stable strings a client may branch on."""

    PROTOCOL_ERROR = "protocol-error"  # the byte stream is unusable; the node closes it
    BAD_REQUEST = "bad-request"  # a well-framed message that is not a valid request
    HELLO_REQUIRED = "hello-required"  # a request came before ``hello``
    VERSION_MISMATCH = "version-mismatch"
    UNKNOWN_METHOD = "unknown-method"
    INVALID_PARAMS = "invalid-params"
    NOT_FOUND = "not-found"
    REFUSED = "refused"  # the node's rules refuse it (a record that fails validation, a block)
    CONFLICT = "conflict"  # already exists / state changed underneath
    UNAVAILABLE = "unavailable"  # not possible right now (no peer has it, shutting down)
    TIMEOUT = "timeout"
    INTERNAL = "internal"  # a bug in the node; its log has the traceback


class ControlProtocolError(ValueError):
    """Bytes or a message that break the control protocol; ``request_id`` when one was readable."""

    def __init__(
        self, message: str, code: ErrorCode = ErrorCode.PROTOCOL_ERROR, request_id: Any = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


# --- values -----------------------------------------------------------------------------------


def check_value(value: Any, depth: int = 0) -> None:
    """Refuse anything outside the JSON-like value set (and msgpack's Timestamp, which decodes
    from ext type -1 whatever ``ext_hook`` says)."""
    if depth > MAX_CONTROL_DEPTH:
        raise ControlProtocolError(f"value nested deeper than {MAX_CONTROL_DEPTH}")
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return
    if isinstance(value, list | tuple):
        for item in value:
            check_value(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ControlProtocolError("map keys must be strings")
            check_value(item, depth + 1)
        return
    raise ControlProtocolError(f"{type(value).__name__} values cannot be sent")


def _forbid_ext(code: int, data: bytes) -> Any:
    raise ControlProtocolError(f"msgpack ext type {code} is not allowed")


def encode_frame(message: dict[str, Any], max_frame: int = MAX_CONTROL_FRAME) -> bytes:
    """One frame holding ``message``; raises ControlProtocolError if it cannot be sent."""
    if not isinstance(message, dict):
        raise ControlProtocolError("a control message must be a map")
    check_value(message)
    try:
        body: bytes = msgpack.packb(message, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ControlProtocolError(f"cannot encode message: {exc}") from exc
    if len(body) > max_frame:
        raise ControlProtocolError(
            f"message of {len(body)} bytes exceeds the {max_frame}-byte limit"
        )
    return HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    """The map one frame body holds."""
    try:
        message = msgpack.unpackb(
            body, raw=False, use_list=True, strict_map_key=True, ext_hook=_forbid_ext
        )
    except ControlProtocolError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ControlProtocolError(f"frame is not valid msgpack: {exc}") from exc
    if not isinstance(message, dict):
        raise ControlProtocolError(f"frame holds {type(message).__name__}, not a map")
    check_value(message)
    return message


class FrameDecoder:
    """Turns received bytes into messages. A declared length over the limit is refused as soon as
    the 4 header bytes are in, before any of the body is buffered. After an error the stream
    position is lost, so the decoder refuses further input."""

    def __init__(self, max_frame: int = MAX_CONTROL_FRAME) -> None:
        self._max_frame = max_frame
        self._buffer = bytearray()
        self._failed: ControlProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet make a whole frame (0 means we are between frames)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        if self._failed is not None:
            raise ControlProtocolError(f"stream already failed: {self._failed}")
        self._buffer += data
        messages: list[dict[str, Any]] = []
        start = 0
        try:
            while len(self._buffer) - start >= HEADER.size:
                (length,) = HEADER.unpack_from(self._buffer, start)
                if length > self._max_frame:
                    raise ControlProtocolError(
                        f"frame of {length} bytes exceeds the {self._max_frame}-byte limit"
                    )
                end = start + HEADER.size + length
                if len(self._buffer) < end:
                    break
                messages.append(decode_body(bytes(self._buffer[start + HEADER.size : end])))
                start = end
        except ControlProtocolError as exc:
            self._failed = exc
            self._buffer.clear()
            raise
        del self._buffer[:start]
        return messages


# --- envelopes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    id: RequestId
    method: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "method": self.method, "params": self.params}


@dataclass(frozen=True)
class ErrorInfo:
    code: str  # an ErrorCode value, or a newer code this client does not know
    message: str


@dataclass(frozen=True)
class Response:
    """The answer to one request: ``error`` is None on success."""

    id: RequestId | None
    result: Any = None
    error: ErrorInfo | None = None

    def to_wire(self) -> dict[str, Any]:
        if self.error is None:
            return {"id": self.id, "result": self.result}
        return {"id": self.id, "error": {"code": self.error.code, "message": self.error.message}}


@dataclass(frozen=True)
class Event:
    event: str
    data: Any = None

    def to_wire(self) -> dict[str, Any]:
        return {"event": self.event, "data": self.data}


def error_response(request_id: RequestId | None, code: str, message: str) -> Response:
    """An error answer, its message cut to a length a terminal line can show."""
    if len(message) > MAX_ERROR_MESSAGE_CHARS:
        message = message[: MAX_ERROR_MESSAGE_CHARS - 1] + "…"
    return Response(request_id, error=ErrorInfo(str(code), message))


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**64
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS


def parse_request(message: dict[str, Any]) -> Request:
    """Validate a client's message; on failure the error carries the id if one was usable."""
    raw_id = message.get("id")
    request_id = raw_id if _valid_id(raw_id) else None
    if request_id is None:
        raise ControlProtocolError(
            "a request needs an id (int or short str)", ErrorCode.BAD_REQUEST
        )
    method = message.get("method")
    if not isinstance(method, str) or not 0 < len(method) <= MAX_METHOD_CHARS:
        raise ControlProtocolError(
            "a request needs a method name (str)", ErrorCode.BAD_REQUEST, request_id
        )
    params = message.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ControlProtocolError("params must be a map", ErrorCode.INVALID_PARAMS, request_id)
    return Request(request_id, method, params)


def parse_server_message(message: dict[str, Any]) -> Response | Event:
    """What a client received: a response (to its request or, with id nil, to the stream) or an
    event."""
    if "event" in message:
        name = message["event"]
        if not isinstance(name, str) or not name:
            raise ControlProtocolError("an event needs a name")
        return Event(name, message.get("data"))
    if "id" not in message:
        raise ControlProtocolError("a message from the node needs an id or an event name")
    request_id = message["id"]
    if request_id is not None and not _valid_id(request_id):
        raise ControlProtocolError("response id must be an int or short str")
    if "error" in message:
        error = message["error"]
        if not isinstance(error, dict):
            raise ControlProtocolError("error must be a map")
        code, text = error.get("code"), error.get("message", "")
        if not isinstance(code, str) or not isinstance(text, str):
            raise ControlProtocolError("error needs a str code and message")
        return Response(request_id, error=ErrorInfo(code, text))
    if "result" not in message:
        raise ControlProtocolError("a response needs a result or an error")
    return Response(request_id, result=message["result"])


def hello_params(client_name: str, version: int = PROTOCOL_VERSION) -> dict[str, Any]:
    return {"version": version, "client": client_name}


# --- bounded event queue ----------------------------------------------------------------------

T = TypeVar("T")


class DropQueue(Generic[T]):
    """A FIFO of at most ``capacity`` items that never blocks the producer: what does not fit is
    counted, and a marker saying how many were lost takes their place in the order once there is
    room again (or when the queue runs empty). The marker may take the queue one over capacity."""

    def __init__(self, capacity: int, marker: Callable[[int], T]) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._marker = marker
        self._items: deque[T] = deque()
        self._pending_drops = 0
        self.dropped_total = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def has_output(self) -> bool:
        return bool(self._items) or self._pending_drops > 0

    def put(self, item: T) -> bool:
        """Queue ``item``; False if it was dropped."""
        if len(self._items) >= self._capacity:
            self._pending_drops += 1
            self.dropped_total += 1
            return False
        self._flush_marker()
        self._items.append(item)
        return True

    def pop(self) -> T | None:
        """The next item (possibly a drop marker), or None when there is nothing to send."""
        if not self._items:
            self._flush_marker()
        return self._items.popleft() if self._items else None

    def _flush_marker(self) -> None:
        if self._pending_drops:
            self._items.append(self._marker(self._pending_drops))
            self._pending_drops = 0
