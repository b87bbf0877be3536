"""A blocking control client (stdlib sockets) for the CLI: connect, call, read events, close.

Responses and events share the byte stream, so whatever arrives while waiting for an answer is kept:
events go into a bounded buffer (a marker counts any that did not fit) for ``events()`` to hand
out, and a late answer to a call that timed out is thrown away. Not thread-safe: one thread per
client.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from p2pshare.control.errors import (
    ConnectionClosed,
    ControlConnectionError,
    ControlError,
    ControlTimeout,
    NodeNotRunning,
    VersionMismatch,
)
from p2pshare.protocol.control_wire import (
    ALL_EVENTS,
    EVENT_DROPPED,
    MAX_CONTROL_FRAME,
    METHOD_HELLO,
    METHOD_SUBSCRIBE,
    ControlProtocolError,
    DropQueue,
    ErrorCode,
    Event,
    FrameDecoder,
    Request,
    Response,
    encode_frame,
    hello_params,
    parse_server_message,
)

DEFAULT_TIMEOUT = 30.0
DEFAULT_EVENT_BUFFER = 10_000
READ_CHUNK = 64 * 1024


def not_running_message(path: Path | str) -> str:
    return f"no node is running on {path}; start one with: p2pshare node"


def raise_for_error(response: Response) -> Any:
    """The result, or the node's error as ControlError (VersionMismatch for that code)."""
    if response.error is None:
        return response.result
    if response.error.code == ErrorCode.VERSION_MISMATCH:
        raise VersionMismatch(response.error.message)
    raise ControlError(response.error.code, response.error.message)


class ControlClient:
    """A connection to a node that has completed ``hello``; ``server_info`` is the node's answer."""

    def __init__(self, sock: socket.socket, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self.server_info: dict[str, Any] = {}
        self._sock = sock
        self._decoder = FrameDecoder(MAX_CONTROL_FRAME)
        self._pending: deque[dict[str, Any]] = deque()
        self._events: DropQueue[Event] = DropQueue(
            DEFAULT_EVENT_BUFFER, lambda n: Event(EVENT_DROPPED, {"count": n})
        )
        self._ids = itertools.count(1)
        self._closed_reason: str | None = None

    @classmethod
    def connect(
        cls,
        path: Path | str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        client_name: str = "p2pshare-cli",
        not_running: str | None = None,
    ) -> ControlClient:
        """Connect to the node on the unix socket ``path`` and say hello. ``not_running`` is
        the NodeNotRunning message (default: a generic one naming the socket)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise NodeNotRunning(not_running or not_running_message(path)) from exc
        except PermissionError as exc:
            sock.close()
            raise ControlConnectionError(
                f"not allowed to open {path}: the node belongs to another user"
            ) from exc
        except TimeoutError as exc:
            sock.close()
            raise ControlTimeout(f"the node on {path} did not accept in {timeout:g}s") from exc
        except OSError as exc:
            sock.close()
            raise ControlConnectionError(f"cannot connect to {path}: {exc.strerror}") from exc
        client = cls(sock, timeout=timeout)
        try:
            client.hello(client_name)
        except BaseException:
            client.close()
            raise
        return client

    def hello(self, client_name: str) -> dict[str, Any]:
        info = self.request(METHOD_HELLO, hello_params(client_name))
        if not isinstance(info, dict):
            raise ConnectionClosed("the node's hello answer is not a map")
        self.server_info = info
        return info

    def call(self, method: str, /, **params: Any) -> Any:
        """Call ``method`` with ``params`` within ``self.timeout``; the node's error raises
        ControlError."""
        return self.request(method, params)

    def request(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Like call(), with the params as a map and an explicit timeout."""
        self._check_open()
        request = Request(next(self._ids), method, params or {})
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._send(encode_frame(request.to_wire()), deadline)
        while True:
            message = self._next_message(deadline)
            if message is None:
                raise ControlTimeout(f"the node did not answer {method} in time")
            if isinstance(message, Event):
                self._events.put(message)
            elif message.id == request.id:
                return raise_for_error(message)
            elif message.id is None and message.error is not None:
                self._closed_reason = message.error.message
                raise_for_error(message)
            # else: the late answer to a call that timed out; nobody waits for it

    def subscribe(self, events: Iterable[str] | None = None) -> Any:
        """Receive ``events`` (all when None) from now on; replaces any earlier subscription."""
        wanted: Any = ALL_EVENTS if events is None else list(events)
        return self.request(METHOD_SUBSCRIBE, {"events": wanted})

    def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event, or None if none arrives within ``timeout`` (default self.timeout)."""
        buffered = self._events.pop()
        if buffered is not None:
            return buffered
        self._check_open()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            message = self._next_message(deadline)
            if message is None:
                return None
            if isinstance(message, Event):
                return message
            if message.id is None and message.error is not None:
                self._closed_reason = message.error.message
                raise_for_error(message)

    def events(self, idle_timeout: float | None = None) -> Iterator[Event]:
        """Events as they arrive; stops after ``idle_timeout`` seconds without one (never when
        None). Raises ConnectionClosed when the node goes away."""
        while True:
            event = self.next_event(timeout=idle_timeout if idle_timeout is not None else 3600.0)
            if event is not None:
                yield event
            elif idle_timeout is not None:
                return

    def close(self) -> None:
        if self._closed_reason is None:
            self._closed_reason = "the client closed the connection"
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- bytes ---------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed_reason is not None:
            raise ConnectionClosed(f"connection to the node is closed: {self._closed_reason}")

    def _send(self, frame: bytes, deadline: float) -> None:
        try:
            self._sock.settimeout(max(deadline - time.monotonic(), 0.001))
            self._sock.sendall(frame)
        except TimeoutError as exc:
            self._lost("the node stopped reading")
            raise ControlTimeout("the node did not take our request in time") from exc
        except OSError as exc:
            self._lost(f"the node closed the connection ({exc.strerror or exc})")
            raise ConnectionClosed("the node closed the connection") from exc

    def _next_message(self, deadline: float) -> Response | Event | None:
        """The next message from the node, or None at the deadline."""
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(READ_CHUNK)
            except TimeoutError:
                return None
            except OSError as exc:  # ECONNRESET when the node closed with our bytes unread
                self._lost(f"the node closed the connection ({exc.strerror or exc})")
                raise ConnectionClosed("the node closed the connection") from exc
            if not data:
                self._lost("the node closed the connection")
                raise ConnectionClosed("the node closed the connection")
            try:
                self._pending.extend(self._decoder.feed(data))
            except ControlProtocolError as exc:
                self._lost(f"the node sent bad data: {exc}")
                raise ConnectionClosed(f"the node sent bad data: {exc}") from exc
        try:
            return parse_server_message(self._pending.popleft())
        except ControlProtocolError as exc:
            self._lost(f"the node sent a bad message: {exc}")
            raise ConnectionClosed(f"the node sent a bad message: {exc}") from exc

    def _lost(self, reason: str) -> None:
        if self._closed_reason is None:
            self._closed_reason = reason
        self._sock.close()
