"""An asyncio control client for the Textual TUI: the blocking client's API, awaitable.

One reader task owns the incoming bytes: it resolves each call's future by id and hands events
either to ``on_event`` (called in the event loop; Textual apps post a message from it) or to a
bounded buffer read through ``events()`` / ``next_event()``. When the node goes away every pending
call fails with ConnectionClosed, ``on_close`` is called once, and ``wait_closed()`` returns.

Connect with ``connect(path)`` to a local node's socket, or ``connect_command(["ssh", HOST,
"p2pshare", "control-stdio"])`` to speak the same protocol through a child process's stdio.
No reconnection: a closed client stays closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from p2pshare.control.client import (
    DEFAULT_EVENT_BUFFER,
    DEFAULT_TIMEOUT,
    READ_CHUNK,
    not_running_message,
    raise_for_error,
)
from p2pshare.control.errors import (
    ConnectionClosed,
    ControlConnectionError,
    ControlTimeout,
    NodeNotRunning,
)
from p2pshare.protocol.control_wire import (
    ALL_EVENTS,
    EVENT_DROPPED,
    MAX_CONTROL_FRAME,
    METHOD_HELLO,
    METHOD_SUBSCRIBE,
    ControlProtocolError,
    DropQueue,
    Event,
    FrameDecoder,
    Request,
    Response,
    encode_frame,
    hello_params,
    parse_server_message,
)

logger = logging.getLogger(__name__)

EventCallback = Callable[[Event], None]
CloseCallback = Callable[[str], None]
_STDERR_TAIL = 2_000  # bytes of a child's stderr kept to explain why it ended
_CHILD_EXIT_TIMEOUT = 5.0


class AsyncControlClient:
    """A connection to a node that has completed ``hello``; ``server_info`` is the node's answer."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        on_event: EventCallback | None = None,
        on_close: CloseCallback | None = None,
        process: asyncio.subprocess.Process | None = None,
    ) -> None:
        """Wrap connected streams; use the connect* class methods, which also say hello."""
        self.timeout = timeout
        self.server_info: dict[str, Any] = {}
        self._reader = reader
        self._writer = writer
        self._on_event = on_event
        self._on_close = on_close
        self._process = process
        self._stderr_tail = bytearray()
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Response]] = {}
        self._events: DropQueue[Event] = DropQueue(
            DEFAULT_EVENT_BUFFER, lambda n: Event(EVENT_DROPPED, {"count": n})
        )
        self._event_signal = asyncio.Event()
        self._closed = asyncio.Event()
        self._close_reason: str | None = None
        self._write_lock = asyncio.Lock()
        self._stderr_done: asyncio.Task[None] | None = None
        if process is not None and process.stderr is not None:
            self._stderr_done = asyncio.create_task(self._collect_stderr(process.stderr))
        self._tasks = [asyncio.create_task(self._read_loop(), name="control-client-reader")]
        if self._stderr_done is not None:
            self._tasks.append(self._stderr_done)

    # --- connecting ----------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        path: Path | str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        client_name: str = "p2pshare-tui",
        not_running: str | None = None,
        on_event: EventCallback | None = None,
        on_close: CloseCallback | None = None,
    ) -> AsyncControlClient:
        """Connect to the node on the unix socket ``path`` and say hello."""
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NodeNotRunning(not_running or not_running_message(path)) from exc
        except PermissionError as exc:
            raise ControlConnectionError(
                f"not allowed to open {path}: the node belongs to another user"
            ) from exc
        except TimeoutError as exc:
            raise ControlTimeout(f"the node on {path} did not accept in {timeout:g}s") from exc
        except OSError as exc:
            raise ControlConnectionError(f"cannot connect to {path}: {exc.strerror}") from exc
        client = cls(reader, writer, timeout=timeout, on_event=on_event, on_close=on_close)
        return await client._greet(client_name)

    @classmethod
    async def connect_command(
        cls,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        client_name: str = "p2pshare-tui",
        on_event: EventCallback | None = None,
        on_close: CloseCallback | None = None,
    ) -> AsyncControlClient:
        """Run ``argv`` (e.g. ssh HOST p2pshare control-stdio) and speak to its stdin/stdout;
        its stderr is kept, not shown, and explains a failure."""
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise ControlConnectionError(f"cannot run {argv[0]}: {exc.strerror}") from exc
        assert process.stdin is not None and process.stdout is not None
        client = cls(
            process.stdout,
            process.stdin,
            timeout=timeout,
            on_event=on_event,
            on_close=on_close,
            process=process,
        )
        return await client._greet(client_name)

    async def _greet(self, client_name: str) -> AsyncControlClient:
        try:
            info = await self.request(METHOD_HELLO, hello_params(client_name))
            if not isinstance(info, dict):
                raise ConnectionClosed("the node's hello answer is not a map")
        except BaseException:
            await self.close()
            raise
        self.server_info = info
        return self

    # --- calls and events ----------------------------------------------------------------------

    async def call(self, method: str, /, **params: Any) -> Any:
        """Call ``method`` with ``params`` within ``self.timeout``; the node's error raises
        ControlError."""
        return await self.request(method, params)

    async def request(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Like call(), with the params as a map and an explicit timeout."""
        self._check_open()
        request = Request(next(self._ids), method, params or {})
        assert isinstance(request.id, int)
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiting[request.id] = future
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                await self._send(encode_frame(request.to_wire()))
                response = await future
        except TimeoutError:
            raise ControlTimeout(f"the node did not answer {method} in time") from None
        finally:
            self._waiting.pop(request.id, None)
            if future.done() and not future.cancelled():
                future.exception()  # _shutdown may have failed it while _send raised
        return raise_for_error(response)

    async def subscribe(self, events: Iterable[str] | None = None) -> Any:
        """Receive ``events`` (all when None) from now on; replaces any earlier subscription."""
        wanted: Any = ALL_EVENTS if events is None else list(events)
        return await self.request(METHOD_SUBSCRIBE, {"events": wanted})

    async def next_event(self, timeout: float | None = None) -> Event | None:
        """The next buffered event, or None if none arrives within ``timeout`` (default
        self.timeout). Only used without ``on_event``."""
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                return await self._wait_event()
        except TimeoutError:
            return None

    async def events(self) -> AsyncIterator[Event]:
        """Events as they arrive, until the node goes away (then ConnectionClosed)."""
        while True:
            yield await self._wait_event()

    async def _wait_event(self) -> Event:
        while True:
            event = self._events.pop()
            if event is not None:
                return event
            self._check_open()
            self._event_signal.clear()
            await self._event_signal.wait()

    # --- closing -------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._close_reason is not None

    @property
    def close_reason(self) -> str | None:
        return self._close_reason

    async def wait_closed(self) -> str:
        """Wait until the connection ends; returns why."""
        await self._closed.wait()
        return self._close_reason or ""

    async def close(self) -> None:
        self._shutdown("the client closed the connection")
        for task in self._tasks:
            task.cancel()
        self._writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await self._writer.wait_closed()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._process is not None:
            await self._end_process(self._process)

    async def __aenter__(self) -> AsyncControlClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- internals -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._close_reason is not None:
            raise ConnectionClosed(f"connection to the node is closed: {self._close_reason}")

    async def _send(self, frame: bytes) -> None:
        async with self._write_lock:
            try:
                self._writer.write(frame)
                await self._writer.drain()
            except (ConnectionError, RuntimeError) as exc:  # RuntimeError: transport closing
                self._shutdown(f"the node closed the connection ({exc})")
                raise ConnectionClosed("the node closed the connection") from exc

    async def _read_loop(self) -> None:
        decoder = FrameDecoder(MAX_CONTROL_FRAME)
        reason = "the node closed the connection"
        try:
            while data := await self._reader.read(READ_CHUNK):
                for message in decoder.feed(data):
                    self._deliver(parse_server_message(message))
        except ControlProtocolError as exc:
            reason = f"the node sent bad data: {exc}"
        except ConnectionError as exc:
            reason = f"the node closed the connection ({exc})"
        if self._stderr_done is not None:  # let the child's last words reach the tail
            await asyncio.wait([self._stderr_done], timeout=1.0)
            tail = self._stderr_tail.decode(errors="replace").strip()
            if tail:
                reason = f"{reason}: {tail.splitlines()[-1]}"
        self._shutdown(reason)

    def _deliver(self, message: Response | Event) -> None:
        if isinstance(message, Event):
            if self._on_event is None:
                self._events.put(message)
                self._event_signal.set()
                return
            try:
                self._on_event(message)
            except Exception:
                logger.exception("control event callback failed on %r", message.event)
            return
        if message.id is None:  # the node is refusing the stream and will close it
            if message.error is not None:
                self._close_reason = self._close_reason or message.error.message
            return
        future = self._waiting.get(message.id) if isinstance(message.id, int) else None
        if future is not None and not future.done():
            future.set_result(message)

    def _shutdown(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self._close_reason = self._close_reason or reason
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionClosed(self._close_reason))
        self._event_signal.set()
        self._closed.set()
        if self._on_close is not None:
            try:
                self._on_close(self._close_reason)
            except Exception:
                logger.exception("control close callback failed")

    async def _collect_stderr(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(4096):
            self._stderr_tail += chunk
            del self._stderr_tail[:-_STDERR_TAIL]

    @staticmethod
    async def _end_process(process: asyncio.subprocess.Process) -> None:
        try:
            async with asyncio.timeout(_CHILD_EXIT_TIMEOUT):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
