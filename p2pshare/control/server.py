"""The control server: runs inside the node (trio) and serves clients on a unix socket or stdio.

Each connection reads requests, runs handlers concurrently (at most ``max_in_flight`` at a time per
client, so a slow ``get`` does not hold up ``status`` and a flood of requests meets backpressure
instead of unbounded tasks), and writes responses and events through one lock. Events go into a
bounded per-client queue that drops and counts when full: ``publish`` never waits, so a client that
stops reading costs the node a fixed amount of memory and nothing else.

A frame that breaks the protocol (bad length, bad msgpack, not a map) gets one error frame, then
the connection is closed; other connections and the node carry on. A handler that raises
ControlError answers with that error; any other exception is logged with its traceback and answers
``internal``; either way the connection stays up.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
import struct
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import trio

from p2pshare.control.errors import ControlError, ControlServerError, NodeAlreadyRunning
from p2pshare.protocol.control_wire import (
    ALL_EVENTS,
    EVENT_DROPPED,
    MAX_CONTROL_FRAME,
    MAX_EVENT_CHARS,
    METHOD_HELLO,
    METHOD_SUBSCRIBE,
    PROTOCOL_VERSION,
    ControlProtocolError,
    DropQueue,
    ErrorCode,
    Event,
    FrameDecoder,
    Request,
    Response,
    encode_frame,
    error_response,
    parse_request,
)

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
T = TypeVar("T")

DEFAULT_QUEUE_SIZE = 1_000  # events per client; a few hundred KiB at most
DEFAULT_MAX_IN_FLIGHT = 16  # concurrent requests per client
READ_CHUNK = 64 * 1024
MAX_UNIX_PATH_BYTES = 107  # sun_path is 108 bytes including the terminating NUL
_CLOSING_ERROR_TIMEOUT = (
    5.0  # how long the last error frame may wait for a client that does not read
)
_PROBE_TIMEOUT = 2.0
_BACKLOG = 32
_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_BUILTIN_METHODS = (METHOD_HELLO, METHOD_SUBSCRIBE)


# --- handler helpers --------------------------------------------------------------------------


def require_param(params: Mapping[str, Any], name: str, kind: type[T]) -> T:
    """``params[name]`` if it is a ``kind`` (bool never counts as int), else invalid-params."""
    if name not in params:
        raise ControlError(ErrorCode.INVALID_PARAMS, f"missing parameter {name!r}")
    return _checked_param(params[name], name, kind)


def optional_param(params: Mapping[str, Any], name: str, kind: type[T], default: T) -> T:
    """Like require_param, but ``default`` when the parameter is absent or nil."""
    value = params.get(name)
    return default if value is None else _checked_param(value, name, kind)


def _checked_param(value: Any, name: str, kind: type[T]) -> T:
    if isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool):
        return value
    raise ControlError(
        ErrorCode.INVALID_PARAMS, f"parameter {name!r} must be {kind.__name__}, not {_kind(value)}"
    )


def _kind(value: Any) -> str:
    return "nil" if value is None else type(value).__name__


# --- peer credentials and the socket path -----------------------------------------------------


def peer_uid(sock: Any) -> int | None:
    """The uid of the process at the other end of a unix socket, or None where the platform
    cannot say (then the 0700 directory is the only guard)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def prepare_socket_dir(directory: Path) -> None:
    """Create the socket's directory readable by us only, and refuse one another user owns."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(directory)
    except OSError as exc:
        raise ControlServerError(f"cannot create {directory}: {exc.strerror}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise ControlServerError(f"{directory} is not a directory")
    if st.st_uid != os.getuid():
        raise ControlServerError(
            f"{directory} belongs to uid {st.st_uid}, not to this user; remove it or use "
            "another data dir"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(directory, 0o700)


def check_socket_path(path: Path) -> None:
    if len(os.fsencode(path)) > MAX_UNIX_PATH_BYTES:
        raise ControlServerError(
            f"control socket path {path} is longer than {MAX_UNIX_PATH_BYTES} bytes, the unix "
            "socket limit; use a shorter data dir"
        )


async def _socket_answers(path: Path) -> bool:
    """Whether a process listens on ``path``; a listener too busy to accept still counts."""
    probe = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with probe:
        with trio.move_on_after(_PROBE_TIMEOUT):
            try:
                await probe.connect(str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                return False
            except OSError as exc:
                raise ControlServerError(f"cannot check {path}: {exc.strerror}") from exc
        return True


async def _claim_socket_path(path: Path) -> None:
    """Remove a socket file left by a dead node; refuse if a live one answers on it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlServerError(f"{path} exists and is not a socket; move it away")
    if await _socket_answers(path):
        raise NodeAlreadyRunning(f"a node is already running on {path}")
    logger.info("removing stale control socket %s", path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _unlink_if_ours(path: Path, ours: os.stat_result) -> None:
    """Remove our socket file on exit, but not one a later node has put in its place."""
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == (ours.st_dev, ours.st_ino):
            os.unlink(path)
    except OSError:
        pass


# --- the server -------------------------------------------------------------------------------


class ControlServer:
    """Serves ``handlers`` (method name -> async function of the params map) to control clients.

    ``info()`` supplies what ``hello`` reports about the node (peer id, node version, ...).
    ``event_names``, when given, is the set ``subscribe`` and ``publish`` accept. Call ``publish``
    from the trio thread that runs the server.
    """

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        info: Callable[[], Mapping[str, Any]],
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        event_names: Iterable[str] | None = None,
        max_frame: int = MAX_CONTROL_FRAME,
    ) -> None:
        for name in _BUILTIN_METHODS:
            if name in handlers:
                raise ValueError(f"{name!r} is built into the control server")
        if queue_size < 1 or max_in_flight < 1:
            raise ValueError("queue_size and max_in_flight must be at least 1")
        self._handlers = dict(handlers)
        self._info = info
        self.queue_size = queue_size
        self.max_in_flight = max_in_flight
        self.max_frame = max_frame
        self._event_names = None if event_names is None else frozenset(event_names)
        self._connections: set[_Connection] = set()
        self._listen_scopes: set[trio.CancelScope] = set()
        self._closed = False
        self.refused_peers = 0
        self._dropped_total = 0

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    @property
    def methods(self) -> list[str]:
        return sorted([*self._handlers, *_BUILTIN_METHODS])

    @property
    def event_names(self) -> frozenset[str] | None:
        return self._event_names

    def dropped_events(self) -> int:
        """Events dropped so far for slow clients, connected now or not."""
        return self._dropped_total

    def publish(self, event: str, data: Any = None) -> None:
        """Queue ``event`` for every client subscribed to it; never waits. Raises
        ControlProtocolError if ``data`` cannot be sent (a bug in the caller)."""
        if not isinstance(event, str) or not 0 < len(event) <= MAX_EVENT_CHARS:
            raise ValueError(f"bad event name {event!r}")
        if event == EVENT_DROPPED or (
            self._event_names is not None and event not in self._event_names
        ):
            raise ValueError(f"event {event!r} is not one this server publishes")
        targets = [conn for conn in self._connections if conn.wants(event)]
        if not targets:
            return
        frame = encode_frame(Event(event, data).to_wire(), self.max_frame)
        for conn in targets:
            if not conn.queue_event(frame):
                self._dropped_total += 1

    def close(self) -> None:
        """Stop listening and close every client connection (they end at their next checkpoint)."""
        self._closed = True
        for scope in self._listen_scopes:
            scope.cancel()
        for conn in self._connections:
            conn.scope.cancel()

    async def serve_unix(
        self, path: Path | str, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on ``path`` (mode 0600 in a 0700 directory) until cancelled or closed; only
        processes of our own uid are served. Reports the path through ``task_status``."""
        path = Path(path)
        check_socket_path(path)
        prepare_socket_dir(path.parent)
        await _claim_socket_path(path)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old_umask = os.umask(0o077)  # the socket never exists with looser permissions
            try:
                await sock.bind(str(path))
            finally:
                os.umask(old_umask)
            os.chmod(path, 0o600)
            ours = os.lstat(path)
            sock.listen(_BACKLOG)
        except OSError as exc:
            sock.close()
            raise ControlServerError(f"cannot listen on {path}: {exc.strerror}") from exc
        except BaseException:
            sock.close()
            raise
        listener = trio.SocketListener(sock)
        scope = trio.CancelScope()
        if self._closed:
            scope.cancel()
        self._listen_scopes.add(scope)
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    task_status.started(path)
                    await self._accept_loop(listener, nursery)
        finally:
            self._listen_scopes.discard(scope)
            _unlink_if_ours(path, ours)
            await trio.aclose_forcefully(listener)

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY_ERRNOS:
                    raise
                logger.error("control socket cannot accept: %s; retrying", exc.strerror)
                await trio.sleep(0.1)
                continue
            nursery.start_soon(self._serve_unix_client, stream)

    async def _serve_unix_client(self, stream: trio.SocketStream) -> None:
        try:
            uid = peer_uid(stream.socket)
        except OSError:
            uid = -1
        if uid is not None and uid != os.getuid():
            self.refused_peers += 1
            logger.warning("refused a control connection from uid %d", uid)
            await trio.aclose_forcefully(stream)
            return
        await self.handle_stream(stream, name="unix")

    async def serve_stdio(self) -> None:
        """Serve one client on stdin/stdout (``p2pshare control-stdio`` under ssh) until stdin
        ends. While it runs, ``print`` goes to stderr so nothing else lands in the byte stream."""
        stream = _stdio_stream()
        saved_stdout = sys.stdout
        sys.stdout = sys.stderr
        try:
            await self.handle_stream(stream, name="stdio")
        finally:
            sys.stdout = saved_stdout

    async def handle_stream(self, stream: trio.abc.Stream, *, name: str = "stream") -> None:
        """Serve one client on any trio byte stream until it ends, breaks the protocol, or the
        server closes. Never raises for what the client does; closes ``stream``."""
        conn = _Connection(self, stream, name)
        if self._closed:
            conn.scope.cancel()
        self._connections.add(conn)
        try:
            with conn.scope:
                await conn.run()
        except Exception:
            logger.exception("control connection (%s) failed", name)
        finally:
            self._connections.discard(conn)
            await trio.aclose_forcefully(stream)

    # called by connections

    def hello_result(self) -> dict[str, Any]:
        events = ALL_EVENTS if self._event_names is None else sorted(self._event_names)
        return {
            **self._info(),
            "version": PROTOCOL_VERSION,
            "max_frame": self.max_frame,
            "methods": self.methods,
            "events": events,
        }

    async def call_handler(self, request: Request) -> Response:
        handler = self._handlers[request.method]
        try:
            result = await handler(request.params)
        except ControlError as exc:
            return error_response(request.id, exc.code, exc.message)
        except Exception as exc:
            logger.exception("control method %r failed", request.method)
            return error_response(
                request.id, ErrorCode.INTERNAL, f"{request.method} failed: {_short(exc)}"
            )
        return Response(request.id, result)

    def has_method(self, method: str) -> bool:
        return method in self._handlers


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"


def _dropped_frame(count: int) -> bytes:
    return encode_frame(Event(EVENT_DROPPED, {"count": count}).to_wire())


class _Connection:
    """One client: its stream, subscription, event queue and in-flight requests."""

    def __init__(self, server: ControlServer, stream: trio.abc.Stream, name: str) -> None:
        self.server = server
        self.stream = stream
        self.name = name
        self.scope = trio.CancelScope()
        self.client_name = ""
        self.greeted = False
        self.subscription: frozenset[str] | None = frozenset()  # None: every event
        self.events: DropQueue[bytes] = DropQueue(server.queue_size, _dropped_frame)
        self._event_ready = trio.Event()
        self._send_lock = trio.Lock()
        self._slots = trio.Semaphore(server.max_in_flight)

    def wants(self, event: str) -> bool:
        return self.greeted and (self.subscription is None or event in self.subscription)

    def queue_event(self, frame: bytes) -> bool:
        """Queue one encoded event; False if the client's queue was full and it was dropped."""
        if not self.events.put(frame):
            return False
        self._event_ready.set()
        return True

    async def run(self) -> None:
        async with trio.open_nursery() as outer:
            outer.start_soon(self._pump_events)
            async with trio.open_nursery() as requests:
                await self._read_requests(requests)
            outer.cancel_scope.cancel()  # the client has finished: its answers are all sent

    async def _pump_events(self) -> None:
        while True:
            frame = self.events.pop()
            if frame is None:
                self._event_ready = trio.Event()
                await self._event_ready.wait()
                continue
            await self._send(frame)

    async def _send(self, frame: bytes) -> None:
        async with self._send_lock:
            try:
                await self.stream.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.scope.cancel()  # the client is gone; end the whole connection

    async def _send_response(self, response: Response) -> None:
        try:
            frame = encode_frame(response.to_wire(), self.server.max_frame)
        except ControlProtocolError as exc:
            logger.error("control response to %r cannot be sent: %s", response.id, exc)
            fallback = error_response(
                response.id, ErrorCode.INTERNAL, f"result not sendable: {exc}"
            )
            frame = encode_frame(fallback.to_wire())
        await self._send(frame)

    async def _read_requests(self, nursery: trio.Nursery) -> None:
        decoder = FrameDecoder(self.server.max_frame)
        while True:
            try:
                data = await self.stream.receive_some(READ_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.scope.cancel()
                return
            if not data:
                if decoder.buffered:
                    logger.info("control client (%s) closed mid-frame", self.name)
                return
            try:
                messages = decoder.feed(data)
            except ControlProtocolError as exc:
                await self._fail(exc)
                return
            for message in messages:
                await self._dispatch(message, nursery)

    async def _fail(self, exc: ControlProtocolError) -> None:
        """Tell the client why, then close: the framing position is lost."""
        logger.warning("control client (%s) broke the protocol: %s", self.name, exc)
        with trio.move_on_after(_CLOSING_ERROR_TIMEOUT):
            await self._send_response(error_response(exc.request_id, exc.code, str(exc)))
        self.scope.cancel()

    async def _dispatch(self, message: dict[str, Any], nursery: trio.Nursery) -> None:
        try:
            request = parse_request(message)
        except ControlProtocolError as exc:
            await self._send_response(error_response(exc.request_id, exc.code, str(exc)))
            return
        if request.method == METHOD_HELLO:
            await self._hello(request)
        elif not self.greeted:
            await self._send_response(
                error_response(request.id, ErrorCode.HELLO_REQUIRED, "send hello first")
            )
        elif request.method == METHOD_SUBSCRIBE:
            await self._subscribe(request)
        elif not self.server.has_method(request.method):
            await self._send_response(
                error_response(
                    request.id, ErrorCode.UNKNOWN_METHOD, f"unknown method {request.method!r}"
                )
            )
        else:
            await self._slots.acquire()  # backpressure: stop reading while the client has many
            nursery.start_soon(self._run_handler, request)

    async def _run_handler(self, request: Request) -> None:
        try:
            await self._send_response(await self.server.call_handler(request))
        finally:
            self._slots.release()

    async def _hello(self, request: Request) -> None:
        version = request.params.get("version")
        client = request.params.get("client", "")
        if not isinstance(version, int) or isinstance(version, bool) or not isinstance(client, str):
            await self._send_response(
                error_response(
                    request.id, ErrorCode.INVALID_PARAMS, "hello needs an int version, str client"
                )
            )
            return
        if version != PROTOCOL_VERSION:
            message = (
                f"this node speaks control protocol version {PROTOCOL_VERSION}, the client "
                f"speaks {version}; use the same p2pshare version on both sides"
            )
            await self._fail(ControlProtocolError(message, ErrorCode.VERSION_MISMATCH, request.id))
            return
        try:
            result = self.server.hello_result()
        except Exception as exc:
            logger.exception("control hello: the node's info failed")
            response = error_response(
                request.id, ErrorCode.INTERNAL, f"hello failed: {_short(exc)}"
            )
        else:
            self.greeted = True
            self.client_name = client[:64]
            response = Response(request.id, result)
        await self._send_response(response)

    async def _subscribe(self, request: Request) -> None:
        wanted = request.params.get("events", ALL_EVENTS)
        known = self.server.event_names
        if wanted == ALL_EVENTS:
            subscription: frozenset[str] | None = None
        elif isinstance(wanted, list) and all(isinstance(name, str) for name in wanted):
            subscription = frozenset(wanted)
            unknown = sorted(subscription - known) if known is not None else []
            if unknown:
                await self._send_response(
                    error_response(
                        request.id, ErrorCode.INVALID_PARAMS, f"unknown events: {unknown}"
                    )
                )
                return
        else:
            await self._send_response(
                error_response(
                    request.id, ErrorCode.INVALID_PARAMS, 'events must be a list of names or "*"'
                )
            )
            return
        self.subscription = subscription
        events = ALL_EVENTS if subscription is None else sorted(subscription)
        await self._send_response(Response(request.id, {"events": events}))


# --- stdio ------------------------------------------------------------------------------------


def _stdio_stream() -> trio.StapledStream:
    """stdout + stdin as one trio stream, on duplicated descriptors so closing it leaves 0 and 1."""
    return trio.StapledStream(
        trio.lowlevel.FdStream(os.dup(sys.__stdout__.fileno() if sys.__stdout__ else 1)),
        trio.lowlevel.FdStream(os.dup(sys.__stdin__.fileno() if sys.__stdin__ else 0)),
    )


async def relay_stdio(path: Path | str) -> None:
    """Join stdin/stdout to a running node's control socket, for ``ssh HOST p2pshare
    control-stdio`` when the node is its own process. Ends when the node closes the connection;
    at the end of stdin it half-closes so the node can finish answering."""
    from p2pshare.control.errors import NodeNotRunning

    try:
        node = await trio.open_unix_socket(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise NodeNotRunning(f"no node is running on {path}") from exc
    stdio = _stdio_stream()
    saved_stdout = sys.stdout
    sys.stdout = sys.stderr
    try:
        async with node, stdio, trio.open_nursery() as nursery:
            nursery.start_soon(_copy_then_half_close, stdio, node)
            await _copy(node, stdio)
            nursery.cancel_scope.cancel()
    finally:
        sys.stdout = saved_stdout


async def _copy(source: trio.abc.ReceiveStream, sink: trio.abc.SendStream) -> None:
    try:
        while data := await source.receive_some(READ_CHUNK):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return


async def _copy_then_half_close(source: trio.abc.ReceiveStream, sink: trio.SocketStream) -> None:
    await _copy(source, sink)
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await sink.send_eof()
