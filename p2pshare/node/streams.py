"""Length-prefixed frames on a libp2p stream: the framing of every p2pshare stream protocol.

Wire format (msgio-compatible, so any libp2p implementation can speak it): each frame is an
unsigned LEB128 varint holding the body length, minimally encoded, then the body. A protocol
fixes its own ``max_frame``; a declared length above it is refused before any body byte is read.

py-libp2p reports a remote *reset* as a clean EOF, so an EOF never means "done": an EOF before a
frame starts raises ``StreamEnded`` and one inside a frame raises ``FrameTruncated``; a protocol
that expects the end of the conversation catches ``StreamEnded`` explicitly. Every read has a
deadline, because a frozen peer otherwise blocks ``read()`` forever.

After any other error the framing position is lost, so the stream is reset and the
``FramedStream`` refuses further use; a read or write cancelled from outside in the middle of a
frame also spoils it (the caller then resets or closes it). Always end with close() or reset().
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF, StreamError

logger = logging.getLogger(__name__)

DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_WRITE_TIMEOUT = 30.0
# Asked for while looking for the next header. Reading ahead lets one read serve many small
# frames (measured: 16 bytes -> 3.4k frames/s, 64 KiB -> 66k frames/s of 200 bytes); the extra
# bytes are kept for the next frame, so wrap a stream once and read it only through FramedStream.
READ_AHEAD = 64 * 1024
_RESET_TIMEOUT = 2.0

Buffer = bytes | bytearray | memoryview


class FrameError(Exception):
    """The peer's stream is unusable; the message says why (for logs, not for people)."""


class FrameTooLarge(FrameError):
    """A frame (declared by the peer, or ours to send) exceeds the protocol's limit."""

    def __init__(self, declared: int, limit: int) -> None:
        super().__init__(f"frame of {declared} bytes exceeds the limit of {limit}")
        self.declared = declared
        self.limit = limit


class FrameTruncated(FrameError):
    """The stream ended or was reset in the middle of a frame."""


class StreamEnded(FrameError):
    """The stream ended (closed *or reset*) before the next frame began."""


class FrameTimeout(FrameError, TimeoutError):
    """The peer did not deliver a whole frame (or accept ours) in time."""


class MalformedFrame(FrameError):
    """The length prefix is not a minimal unsigned varint."""


class StreamBroken(FrameError):
    """Writing failed: the stream was closed or reset, or an earlier error spoilt it."""


def encode_uvarint(value: int) -> bytes:
    if value < 0:
        raise ValueError("a varint length cannot be negative")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def max_header_bytes(max_frame: int) -> int:
    return len(encode_uvarint(max_frame))


def decode_header(buf: bytes | bytearray, max_frame: int) -> tuple[int, int] | None:
    """Return ``(length, header size)`` if ``buf`` starts with a complete header, else ``None``.

    Raises ``FrameTooLarge`` as soon as the header is known to exceed ``max_frame``, without
    waiting for the rest of it, and ``MalformedFrame`` for a non-minimal encoding.
    """
    value = 0
    limit_bytes = max_header_bytes(max_frame)
    for index, byte in enumerate(buf):
        if index >= limit_bytes:
            raise FrameTooLarge(value | (1 << (7 * index)), max_frame)
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            if byte == 0 and index > 0:
                raise MalformedFrame("length prefix is not minimally encoded")
            if value > max_frame:
                raise FrameTooLarge(value, max_frame)
            return value, index + 1
    return None


class FramedStream:
    """Frames over one libp2p stream; one reader task and one writer task at a time."""

    def __init__(self, stream: INetStream, max_frame: int) -> None:
        if max_frame < 0:
            raise ValueError("max_frame cannot be negative")
        self.stream = stream
        self.max_frame = max_frame
        self._pending = bytearray()  # bytes read past the end of the previous frame
        self._broken: str | None = None
        self._ended = False
        self._in_body = False  # the frame's body is being read into a local buffer

    @property
    def broken(self) -> bool:
        return self._broken is not None

    async def read_frame(self, timeout: float = DEFAULT_READ_TIMEOUT) -> bytes:
        """The next frame's body; the whole frame must arrive within ``timeout`` seconds.

        ``StreamEnded`` leaves the stream open for writing (the peer may have half-closed after
        its last request); every other error resets it.
        """
        return bytes(await self.read_frame_buffer(timeout))

    async def read_frame_buffer(self, timeout: float = DEFAULT_READ_TIMEOUT) -> bytes | bytearray:
        """Like ``read_frame``, but a large body comes back as the buffer it was read into.

        Saves one copy of every large frame; the buffer is the caller's (nothing here keeps
        it), so views into it stay valid.
        """
        if self._broken is not None:
            raise StreamBroken(self._broken)
        if self._ended:
            raise StreamEnded("stream already ended")
        try:
            with trio.fail_after(timeout):
                return await self._read_frame()
        except StreamEnded:
            self._ended = True
            raise
        except trio.TooSlowError:
            error: FrameError = FrameTimeout(f"no complete frame within {timeout:g} s")
        except FrameError as exc:
            error = exc
        except BaseException:
            if self._in_body:  # a partial header stays in _pending; a partial body is lost
                self._broken = "a read was interrupted in the middle of a frame"
            raise
        self._broken = str(error)
        await self.reset()
        raise error

    async def write_frame(
        self, data: bytes | bytearray | memoryview, timeout: float = DEFAULT_WRITE_TIMEOUT
    ) -> None:
        """Send one frame; a peer that stops reading cannot block us past ``timeout``."""
        await self.write_frames(((data,),), timeout)

    async def write_frames(
        self, frames: Sequence[Sequence[Buffer]], timeout: float = DEFAULT_WRITE_TIMEOUT
    ) -> None:
        """Send several frames with one write; each frame's body is the join of its parts.

        One write per frame would cost a Yamux frame and a Noise message for each header, and
        a few scheduler round trips per frame; one join of all the parts is the only copy made
        here. Nothing is sent if any frame is over the limit.
        """
        if self._broken is not None:
            raise StreamBroken(self._broken)
        pieces: list[Buffer] = []
        for parts in frames:
            size = sum(len(part) for part in parts)
            if size > self.max_frame:
                raise FrameTooLarge(size, self.max_frame)
            pieces.append(encode_uvarint(size))
            pieces.extend(parts)
        payload = b"".join(pieces)
        try:
            with trio.fail_after(timeout):
                await self.stream.write(payload)
        except trio.TooSlowError:
            error: FrameError = FrameTimeout(f"peer did not accept a frame within {timeout:g} s")
        except StreamError as exc:
            error = StreamBroken(f"cannot write: {type(exc).__name__} {exc}".strip())
        except BaseException:
            self._broken = "a write was interrupted; part of a frame may have been sent"
            raise
        else:
            return
        self._broken = str(error)
        await self.reset()
        raise error

    async def close(self) -> None:
        """Half-close: tell the peer we send no more frames (it may still send to us)."""
        try:
            await self.stream.close()
        except StreamError as exc:
            logger.debug("closing a stream that already failed: %s", exc)

    async def reset(self) -> None:
        """Abort both directions now; bounded and safe to call on a dead stream."""
        with trio.move_on_after(_RESET_TIMEOUT) as scope:
            scope.shield = True
            try:
                await self.stream.reset()
            except StreamError as exc:
                logger.debug("resetting a stream that already failed: %s", exc)

    async def _read_frame(self) -> bytes | bytearray:
        header = decode_header(self._pending, self.max_frame)
        while header is None:
            chunk = await self._read_some(READ_AHEAD, mid_frame=bool(self._pending))
            self._pending += chunk
            header = decode_header(self._pending, self.max_frame)
        length, header_size = header
        end = header_size + length
        if len(self._pending) >= end:
            with memoryview(self._pending) as pending:
                body = bytes(pending[header_size:end])
            del self._pending[:end]  # cheap: CPython drops a bytearray's head in O(1)
            return body
        # Fill a preallocated buffer: linear in the frame size, whatever the chunk sizes.
        buf = bytearray(length)
        filled = len(self._pending) - header_size
        with memoryview(self._pending) as pending:
            buf[:filled] = pending[header_size:]
        self._pending.clear()
        self._in_body = True
        with memoryview(buf) as view:
            while filled < length:
                chunk = await self._read_some(length - filled, mid_frame=True)
                view[filled : filled + len(chunk)] = chunk
                filled += len(chunk)
        self._in_body = False
        return buf

    async def _read_some(self, max_bytes: int, *, mid_frame: bool) -> bytes:
        """Between 1 and ``max_bytes`` bytes, or the right error for an ended stream."""
        try:
            chunk = await self.stream.read(max_bytes)
        except StreamEOF:
            chunk = b""
        except StreamError as exc:  # a locally known reset, or a muxer failure
            why = f"stream failed: {type(exc).__name__} {exc}".strip()
            raise (FrameTruncated(why) if mid_frame else StreamEnded(why)) from None
        if not chunk:
            if mid_frame:
                raise FrameTruncated("stream ended in the middle of a frame")
            raise StreamEnded("stream ended before the next frame")
        return chunk
