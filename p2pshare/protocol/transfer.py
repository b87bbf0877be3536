"""Document transfer ``/p2pshare/blocks/1``: the wire messages, their limits and strict checks.

Framing. Every message is one frame: an unsigned varint (LEB128, as libp2p's msgio) giving the
length, then that many bytes of *canonical* msgpack (see ``canonical.py``: sorted map keys,
minimal ints, ``bin`` for bytes, nothing trailing) holding one map. A map has exactly the keys
listed below, no others. ``id`` is a uint32 the requester picks; every reply frame echoes it, so
requests may be pipelined on one stream (the responder answers them in order). ``root`` is a
32-byte SHA-256 document root. Chunk ``index``/``start``/``end`` are ints counted from 0.

Requests (requester -> responder), at most ``MAX_REQUEST_FRAME_BYTES`` each::

    {"t": "have",     "id": id, "roots": [root, ...]}
        1..MAX_HAVE_ROOTS distinct roots.
    {"t": "manifest", "id": id, "root": root}
    {"t": "chunks",   "id": id, "root": root, "ranges": [[start, end], ...]}
        1..MAX_RANGES_PER_REQUEST half-open ranges, each start < end <= MAX_CHUNK_COUNT, sorted,
        not overlapping (a range may start where the previous one ended); at most
        MAX_CHUNKS_PER_REQUEST chunks in total.

Replies (responder -> requester)::

    {"t": "have_reply",     "id": id, "have": [state, ...]}
        One state per requested root, in request order: ``false`` (nothing), ``true`` (complete),
        or ``bin`` = a partial bitmap (below).
    {"t": "manifest_reply", "id": id, "manifest": bin}
        The manifest bytes; the requester checks SHA-256(manifest) == root.
    {"t": "chunk",          "id": id, "index": i, "data": bin}
    {"t": "end",            "id": id}
    {"t": "error",          "id": id, "code": "not-found" | "busy" | "bad-request"}

A ``have`` or ``manifest`` request is answered by one reply frame (or one ``error``; an unknown
root in ``manifest`` is ``not-found``). A ``chunks`` request is answered by zero or more ``chunk``
frames in strictly ascending index order, each index inside a requested range, each ``data``
exactly ``chunk_size`` bytes long except the document's last chunk (``size`` minus the bytes
before it), then exactly one ``end`` or ``error`` frame. A responder that lacks some requested
chunks leaves them out (the requester then stops asking it for them); one that lacks the whole
document sends only ``error not-found``; ranges reaching past the document are ``bad-request``.
An ``error`` may follow some chunk frames (the responder gave up midway): those chunks still
count. Because py-libp2p reports a reset stream as a clean EOF, EOF before ``end``/``error`` is a
failed request, never a completed one.

Bitmaps: ``ceil(chunk_count / 8)`` bytes; chunk ``i`` is bit ``0x80 >> (i % 8)`` of byte
``i // 8`` (most significant bit first, as BitTorrent); padding bits past the last chunk are 0.

Limits (constants below): ids 0..2**32-1; chunk indices < MAX_CHUNK_COUNT = 65,536 per document;
MAX_HAVE_ROOTS = 64; MAX_RANGES_PER_REQUEST = 32; MAX_CHUNKS_PER_REQUEST = 256; bitmaps at most
8,192 bytes; manifests 1..MAX_MANIFEST_BYTES (2,228,244) bytes; chunk data 1..4 MiB. Request frames
are at most 16 KiB; reply frames at most MAX_REPLY_FRAME_BYTES (4 MiB + 128), and a requester
should read with the tighter ``max_reply_bytes(request, chunk_size)`` (chunk size + 128 for chunk
responses). A responder that cannot decode a request resets the stream; a requester that gets a
malformed reply drops the stream and counts it against the peer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from p2pshare.protocol import canonical
from p2pshare.protocol import limits as L
from p2pshare.protocol.reasons import RecordError

PROTOCOL_ID = "/p2pshare/blocks/1"

ROOT_BYTES = 32
MAX_REQUEST_ID = 2**32 - 1
MAX_CHUNK_COUNT = L.MAX_MANIFEST_CHUNKS
MAX_BITMAP_BYTES = MAX_CHUNK_COUNT // 8
# fixarray(3) + uint64 size + uint32 chunk_size + array32 header + (bin8 header + hash) per chunk
MAX_MANIFEST_BYTES = L.MAX_MANIFEST_BYTES
MAX_HAVE_ROOTS = 64
MAX_RANGES_PER_REQUEST = 32
MAX_CHUNKS_PER_REQUEST = 256
FRAME_OVERHEAD = 128  # map header, keys, type name, id, index and bin32 header, with room to spare
MAX_REQUEST_FRAME_BYTES = 16 * 1024
# a have_reply entry is at most a bin16 header (3 bytes) plus a bitmap
MAX_HAVE_REPLY_BYTES = FRAME_OVERHEAD + MAX_HAVE_ROOTS * (3 + MAX_BITMAP_BYTES)
_LARGEST_REPLY_PAYLOAD = max(L.MAX_CHUNK_SIZE, MAX_MANIFEST_BYTES, MAX_HAVE_REPLY_BYTES)
MAX_REPLY_FRAME_BYTES = _LARGEST_REPLY_PAYLOAD + FRAME_OVERHEAD

HaveState = bool | bytes  # False: none, True: complete, bytes: partial bitmap
Range = tuple[int, int]  # half-open [start, end) of chunk indices


class PeerProtocolError(ValueError):
    """The peer sent something this protocol does not allow: drop the stream, score the peer."""


class ErrorCode(StrEnum):
    """Why a responder refused a request; the value is the wire string."""

    NOT_FOUND = "not-found"
    BUSY = "busy"
    BAD_REQUEST = "bad-request"


class RequestRefused(Exception):
    """The responder answered with an ``error`` frame: a refusal, not a protocol violation."""

    def __init__(self, code: ErrorCode) -> None:
        super().__init__(f"peer refused the request: {code.value}")
        self.code = code


# --- field checks: shared by construction and decoding, so nothing invalid is ever sent ---------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_id(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_REQUEST_ID:
        raise PeerProtocolError(f"request id {value!r} is not a uint32")
    return value


def _check_root(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != ROOT_BYTES:
        raise PeerProtocolError(f"a root must be {ROOT_BYTES} bytes")
    return value


def _check_index(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < MAX_CHUNK_COUNT:
        raise PeerProtocolError(f"chunk index {value!r} is outside 0..{MAX_CHUNK_COUNT - 1}")
    return value


def _check_ranges(value: object) -> tuple[Range, ...]:
    if not isinstance(value, list | tuple) or not 1 <= len(value) <= MAX_RANGES_PER_REQUEST:
        raise PeerProtocolError(f"ranges must be a list of 1..{MAX_RANGES_PER_REQUEST} ranges")
    ranges: list[Range] = []
    previous_end = 0
    for item in value:
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise PeerProtocolError("a range must be [start, end]")
        start, end = item
        if not (_is_int(start) and _is_int(end)):
            raise PeerProtocolError("range bounds must be integers")
        if not previous_end <= start < end <= MAX_CHUNK_COUNT:
            raise PeerProtocolError(f"range [{start}, {end}) is empty, unsorted or overlapping")
        ranges.append((start, end))
        previous_end = end
    if sum(end - start for start, end in ranges) > MAX_CHUNKS_PER_REQUEST:
        raise PeerProtocolError(f"more than {MAX_CHUNKS_PER_REQUEST} chunks in one request")
    return tuple(ranges)


def _check_state(value: object) -> HaveState:
    if isinstance(value, bool):
        return value
    if isinstance(value, bytes) and 1 <= len(value) <= MAX_BITMAP_BYTES:
        return value
    raise PeerProtocolError("a have state must be false, true or a 1..8192-byte bitmap")


# --- messages -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HaveRequest:
    id: int
    roots: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_id(self.id)
        if not isinstance(self.roots, tuple) or not 1 <= len(self.roots) <= MAX_HAVE_ROOTS:
            raise PeerProtocolError(f"have asks about 1..{MAX_HAVE_ROOTS} roots")
        for root in self.roots:
            _check_root(root)
        if len(set(self.roots)) != len(self.roots):
            raise PeerProtocolError("have lists a root twice")


@dataclass(frozen=True, slots=True)
class ManifestRequest:
    id: int
    root: bytes

    def __post_init__(self) -> None:
        _check_id(self.id)
        _check_root(self.root)


@dataclass(frozen=True, slots=True)
class ChunksRequest:
    id: int
    root: bytes
    ranges: tuple[Range, ...]

    def __post_init__(self) -> None:
        _check_id(self.id)
        _check_root(self.root)
        object.__setattr__(self, "ranges", _check_ranges(self.ranges))

    def indices(self) -> list[int]:
        """Every requested chunk index, ascending."""
        return [i for start, end in self.ranges for i in range(start, end)]


@dataclass(frozen=True, slots=True)
class HaveReply:
    id: int
    have: tuple[HaveState, ...]

    def __post_init__(self) -> None:
        _check_id(self.id)
        if not isinstance(self.have, tuple) or not 1 <= len(self.have) <= MAX_HAVE_ROOTS:
            raise PeerProtocolError(f"have_reply holds 1..{MAX_HAVE_ROOTS} states")
        for state in self.have:
            _check_state(state)


@dataclass(frozen=True, slots=True)
class ManifestReply:
    id: int
    manifest: bytes

    def __post_init__(self) -> None:
        _check_id(self.id)
        if not isinstance(self.manifest, bytes) or not 1 <= len(self.manifest) <= (
            MAX_MANIFEST_BYTES
        ):
            raise PeerProtocolError(f"a manifest must be 1..{MAX_MANIFEST_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class ChunkFrame:
    """A chunk; ``data`` may be a byte view into the received frame (decoding copies nothing)."""

    id: int
    index: int
    data: bytes | memoryview

    def __post_init__(self) -> None:
        _check_id(self.id)
        _check_index(self.index)
        data = self.data
        if isinstance(data, memoryview):
            if data.ndim != 1 or data.itemsize != 1:
                raise PeerProtocolError("chunk data must be a flat byte buffer")
        elif not isinstance(data, bytes):
            raise PeerProtocolError("chunk data must be bytes")
        if not 1 <= len(data) <= L.MAX_CHUNK_SIZE:
            raise PeerProtocolError(f"chunk data must be 1..{L.MAX_CHUNK_SIZE} bytes")


@dataclass(frozen=True, slots=True)
class EndFrame:
    id: int

    def __post_init__(self) -> None:
        _check_id(self.id)


@dataclass(frozen=True, slots=True)
class ErrorReply:
    id: int
    code: ErrorCode

    def __post_init__(self) -> None:
        _check_id(self.id)
        if not isinstance(self.code, ErrorCode):
            raise PeerProtocolError(f"unknown error code {self.code!r}")


Request = HaveRequest | ManifestRequest | ChunksRequest
Reply = HaveReply | ManifestReply | ChunkFrame | EndFrame | ErrorReply
Message = Request | Reply


# --- encoding and decoding ------------------------------------------------------------------------


def _fields(message: Message) -> dict[str, Any]:
    match message:
        case HaveRequest(id=i, roots=roots):
            return {"t": "have", "id": i, "roots": list(roots)}
        case ManifestRequest(id=i, root=root):
            return {"t": "manifest", "id": i, "root": root}
        case ChunksRequest(id=i, root=root, ranges=ranges):
            return {"t": "chunks", "id": i, "root": root, "ranges": [list(r) for r in ranges]}
        case HaveReply(id=i, have=have):
            return {"t": "have_reply", "id": i, "have": list(have)}
        case ManifestReply(id=i, manifest=manifest):
            return {"t": "manifest_reply", "id": i, "manifest": manifest}
        case ChunkFrame(id=i, index=index, data=data):
            return {"t": "chunk", "id": i, "index": index, "data": data}
        case EndFrame(id=i):
            return {"t": "end", "id": i}
        case ErrorReply(id=i, code=code):
            return {"t": "error", "id": i, "code": code.value}
    raise TypeError(f"not a transfer message: {message!r}")


def encode(message: Message) -> bytes:
    """The frame body (without the varint length) for ``message``."""
    if isinstance(message, ChunkFrame):
        return b"".join(encode_chunk_parts(message))
    return canonical.pack(_fields(message))


# A chunk frame's canonical form is fixed by its sorted keys: "data" < "id" < "index" < "t", so
# it is ``map(4) "data" bin(len) <data> "id" uint "index" uint "t" "chunk"``: a head, the data,
# and a tail of a few bytes. Building those around the data (and, on receipt, checking them
# around it) avoids packing and unpacking 256 KiB per chunk; the result is byte for byte what
# ``canonical.pack`` makes, and the decoder accepts exactly what the general path accepts.
_CHUNK_HEAD = b"\x84\xa4data"
_CHUNK_TAIL_END = b"\xa1t\xa5chunk"


def _bin_header(length: int) -> bytes:
    if length < 0x100:
        return b"\xc4" + length.to_bytes(1, "big")
    if length < 0x10000:
        return b"\xc5" + length.to_bytes(2, "big")
    return b"\xc6" + length.to_bytes(4, "big")


def _uint(value: int) -> bytes:
    """msgpack's minimal encoding of a non-negative int."""
    if value < 0x80:
        return bytes((value,))
    if value < 0x100:
        return b"\xcc" + value.to_bytes(1, "big")
    if value < 0x10000:
        return b"\xcd" + value.to_bytes(2, "big")
    if value < 0x100000000:
        return b"\xce" + value.to_bytes(4, "big")
    return b"\xcf" + value.to_bytes(8, "big")


def encode_chunk_parts(frame: ChunkFrame) -> tuple[bytes, bytes | memoryview, bytes]:
    """``encode(frame)`` as (head, data, tail), so the data need not be copied into a new body."""
    head = _CHUNK_HEAD + _bin_header(len(frame.data))
    tail = b"\xa2id" + _uint(frame.id) + b"\xa5index" + _uint(frame.index) + _CHUNK_TAIL_END
    return head, frame.data, tail


def _decode_chunk(frame: bytes | bytearray | memoryview) -> ChunkFrame | None:
    """A canonical chunk frame without copying its data, or None: let the general path decide."""
    if frame[:6] != _CHUNK_HEAD or len(frame) < 8:
        return None
    kind = frame[6]
    if kind == 0xC4:
        start, length = 8, frame[7]
    elif kind == 0xC5:
        start, length = 9, int.from_bytes(frame[7:9], "big")
        if length < 0x100:
            return None
    elif kind == 0xC6:
        start, length = 11, int.from_bytes(frame[7:11], "big")
        if length < 0x10000:
            return None
    else:
        return None
    end = start + length
    tail = bytes(frame[end:])
    if len(frame) < end or not tail.endswith(_CHUNK_TAIL_END) or len(tail) > 32:
        return None
    try:  # the rest of the map, as a map of its own: the canonical checks apply to it as well
        rest = canonical.unpack(b"\x83" + tail, 64)
    except RecordError:
        return None
    if not isinstance(rest, dict) or rest.keys() != {"id", "index", "t"}:
        return None
    try:
        return ChunkFrame(rest["id"], rest["index"], memoryview(frame)[start:end])
    except PeerProtocolError:
        return None


def _build(value: dict[str, Any]) -> Message:
    """Turn a decoded map into a message; the dataclass constructors check every field."""
    kind = value.get("t")
    keys = set(value)
    shapes: dict[str, tuple[set[str], Callable[[], Message]]] = {
        "have": ({"roots"}, lambda: HaveRequest(value["id"], _as_tuple(value["roots"]))),
        "manifest": ({"root"}, lambda: ManifestRequest(value["id"], value["root"])),
        "chunks": (
            {"root", "ranges"},
            lambda: ChunksRequest(value["id"], value["root"], value["ranges"]),
        ),
        "have_reply": ({"have"}, lambda: HaveReply(value["id"], _as_tuple(value["have"]))),
        "manifest_reply": ({"manifest"}, lambda: ManifestReply(value["id"], value["manifest"])),
        "chunk": (
            {"index", "data"},
            lambda: ChunkFrame(value["id"], value["index"], value["data"]),
        ),
        "end": (set(), lambda: EndFrame(value["id"])),
        "error": ({"code"}, lambda: ErrorReply(value["id"], _error_code(value["code"]))),
    }
    if not isinstance(kind, str) or kind not in shapes:
        raise PeerProtocolError(f"unknown message type {kind!r}")
    extra, build = shapes[kind]
    if keys != {"t", "id"} | extra:
        raise PeerProtocolError(f"{kind} must have exactly the keys {sorted({'t', 'id'} | extra)}")
    return build()


def _as_tuple(value: object) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise PeerProtocolError("expected a list")
    return tuple(value)


def _error_code(value: object) -> ErrorCode:
    if isinstance(value, str) and value in ErrorCode.__members__.values():
        return ErrorCode(value)
    raise PeerProtocolError(f"unknown error code {value!r}")


def _decode(frame: bytes, max_bytes: int) -> Message:
    if not isinstance(frame, bytes):
        raise PeerProtocolError("a frame must be bytes")
    try:
        value = canonical.unpack(frame, max_bytes)
    except RecordError as exc:
        raise PeerProtocolError(f"undecodable frame: {exc}") from None
    if not isinstance(value, dict):
        raise PeerProtocolError("a frame must hold a map")
    return _build(value)


def decode_request(frame: bytes) -> Request:
    """Decode what a requester sent; anything else, or anything malformed, is PeerProtocolError."""
    message = _decode(frame, MAX_REQUEST_FRAME_BYTES)
    if not isinstance(message, HaveRequest | ManifestRequest | ChunksRequest):
        raise PeerProtocolError("expected a request")
    return message


def decode_reply(
    frame: bytes | bytearray | memoryview, max_bytes: int = MAX_REPLY_FRAME_BYTES
) -> Reply:
    """Decode what a responder sent, refusing frames over ``max_bytes`` (see max_reply_bytes).

    A ``chunk`` reply's data is a view into ``frame`` (no copy): do not change ``frame`` after.
    """
    limit = min(max_bytes, MAX_REPLY_FRAME_BYTES)
    if len(frame) <= limit:
        chunk = _decode_chunk(frame)
        if chunk is not None:
            return chunk
    if not isinstance(frame, bytes):
        frame = bytes(frame)
    message = _decode(frame, limit)
    if isinstance(message, HaveRequest | ManifestRequest | ChunksRequest):
        raise PeerProtocolError("expected a reply")
    return message


def max_reply_bytes(request: Request, chunk_size: int = L.MAX_CHUNK_SIZE) -> int:
    """The largest reply frame ``request`` can legitimately get: use it as the read limit."""
    if isinstance(request, HaveRequest):
        return FRAME_OVERHEAD + len(request.roots) * (3 + MAX_BITMAP_BYTES)
    if isinstance(request, ManifestRequest):
        return FRAME_OVERHEAD + MAX_MANIFEST_BYTES
    return FRAME_OVERHEAD + min(chunk_size, L.MAX_CHUNK_SIZE)


# --- bitmaps ------------------------------------------------------------------------------------


def bitmap_bytes(chunk_count: int) -> int:
    return (chunk_count + 7) // 8


def make_bitmap(indices: Iterable[int], chunk_count: int) -> bytes:
    """A bitmap with the bits of ``indices`` set (ValueError for an index out of range)."""
    bits = bytearray(bitmap_bytes(chunk_count))
    for i in indices:
        if not 0 <= i < chunk_count:
            raise ValueError(f"chunk {i} is outside 0..{chunk_count - 1}")
        bits[i >> 3] |= 0x80 >> (i & 7)
    return bytes(bits)


def check_bitmap(bitmap: bytes, chunk_count: int) -> None:
    """Refuse a peer's bitmap of the wrong length or with padding bits set."""
    if len(bitmap) != bitmap_bytes(chunk_count):
        raise PeerProtocolError(
            f"bitmap of {len(bitmap)} bytes for {chunk_count} chunks "
            f"(expected {bitmap_bytes(chunk_count)})"
        )
    spare = len(bitmap) * 8 - chunk_count
    if spare and bitmap[-1] & ((1 << spare) - 1):
        raise PeerProtocolError("bitmap has bits set past the last chunk")


def bitmap_has(bitmap: bytes, index: int) -> bool:
    byte = index >> 3
    return index >= 0 and byte < len(bitmap) and bool(bitmap[byte] & (0x80 >> (index & 7)))


def bitmap_indices(bitmap: bytes, chunk_count: int) -> list[int]:
    """The set bits of a checked bitmap, ascending."""
    check_bitmap(bitmap, chunk_count)
    out: list[int] = []
    for byte_index, byte in enumerate(bitmap):
        if byte:
            base = byte_index * 8
            out.extend(base + bit for bit in range(8) if byte & (0x80 >> bit))
    return out


def bitmap_count(bitmap: bytes) -> int:
    return int.from_bytes(bitmap, "big").bit_count()


def state_has(state: HaveState, index: int) -> bool:
    """Whether a have state says chunk ``index`` is present."""
    return state if isinstance(state, bool) else bitmap_has(state, index)


# --- chunk geometry -----------------------------------------------------------------------------


def chunk_length(index: int, size: int, chunk_size: int) -> int:
    """Bytes in chunk ``index`` of a ``size``-byte document: full, except possibly the last."""
    count = -(-size // chunk_size)
    if not 0 <= index < count:
        raise ValueError(f"chunk {index} is outside a {count}-chunk document")
    return chunk_size if index < count - 1 else size - chunk_size * (count - 1)


# --- responder side -----------------------------------------------------------------------------


def answer_have(request: HaveRequest, lookup: Callable[[bytes], HaveState]) -> HaveReply:
    """Answer ``have`` from ``lookup(root)`` (False / True / bitmap of what we hold)."""
    return HaveReply(request.id, tuple(lookup(root) for root in request.roots))


def answer_manifest(request: ManifestRequest, manifest: bytes | None) -> ManifestReply | ErrorReply:
    if manifest is None:
        return ErrorReply(request.id, ErrorCode.NOT_FOUND)
    return ManifestReply(request.id, manifest)


def chunks_to_send(
    request: ChunksRequest, chunk_count: int | None, have: HaveState
) -> list[int] | ErrorReply:
    """Which chunks to stream, ascending, or the error to send instead.

    ``chunk_count`` is None (or ``have`` False) when we do not know the document at all. The
    node sends a ``chunk`` frame for each index, then ``end_of(request)``.
    """
    if chunk_count is None or have is False:
        return ErrorReply(request.id, ErrorCode.NOT_FOUND)
    if request.ranges[-1][1] > chunk_count:
        return ErrorReply(request.id, ErrorCode.BAD_REQUEST)
    return [i for i in request.indices() if state_has(have, i)]


def end_of(request: ChunksRequest) -> EndFrame:
    return EndFrame(request.id)


# --- requester side ------------------------------------------------------------------------------


def _refused_or(reply: Reply, request: Request, expected: type) -> None:
    if reply.id != request.id:
        raise PeerProtocolError(f"reply id {reply.id} does not answer request {request.id}")
    if isinstance(reply, ErrorReply):
        raise RequestRefused(reply.code)
    if not isinstance(reply, expected):
        raise PeerProtocolError(f"expected {expected.__name__}, got {type(reply).__name__}")


def check_have_reply(request: HaveRequest, reply: Reply) -> dict[bytes, HaveState]:
    """Map each asked root to its state (bitmaps still need check_bitmap once the size is known).

    Raises RequestRefused for an ``error`` reply, PeerProtocolError for anything wrong.
    """
    _refused_or(reply, request, HaveReply)
    assert isinstance(reply, HaveReply)
    if len(reply.have) != len(request.roots):
        raise PeerProtocolError(
            f"have_reply has {len(reply.have)} states for {len(request.roots)} roots"
        )
    return dict(zip(request.roots, reply.have, strict=True))


def check_manifest_reply(request: ManifestRequest, reply: Reply) -> bytes:
    """The manifest bytes, proven to hash to the requested root."""
    _refused_or(reply, request, ManifestReply)
    assert isinstance(reply, ManifestReply)
    if hashlib.sha256(reply.manifest).digest() != request.root:
        raise PeerProtocolError("manifest does not hash to the requested root")
    return reply.manifest


class ChunkResponse:
    """Requester side of one ``chunks`` request: feed it every reply frame carrying its id.

    It checks each chunk was requested, arrives once, in ascending order, with the exact length,
    and that the response ends with ``end`` or ``error`` (EOF before that is a failed request).
    Hash checking is the caller's job: the validator does not know the manifest.
    """

    def __init__(self, request: ChunksRequest, size: int, chunk_size: int) -> None:
        count = -(-size // chunk_size)
        if request.ranges[-1][1] > count:
            raise ValueError("request reaches past the document")
        self.request = request
        self._size = size
        self._chunk_size = chunk_size
        self._requested = frozenset(request.indices())
        self._last = -1
        self._seen: set[int] = set()
        self.received: list[int] = []
        self.done = False
        self.error: ErrorCode | None = None

    def feed(self, reply: Reply) -> ChunkFrame | None:
        """Return a checked chunk frame, or None once the response is over."""
        if self.done:
            raise PeerProtocolError("frame after the end of the response")
        if reply.id != self.request.id:
            raise PeerProtocolError(f"reply id {reply.id} does not answer {self.request.id}")
        if isinstance(reply, EndFrame | ErrorReply):
            self.done = True
            self.error = reply.code if isinstance(reply, ErrorReply) else None
            return None
        if not isinstance(reply, ChunkFrame):
            raise PeerProtocolError(f"{type(reply).__name__} inside a chunks response")
        index = reply.index
        if index not in self._requested:
            raise PeerProtocolError(f"chunk {index} was not requested")
        if index in self._seen:
            raise PeerProtocolError(f"chunk {index} sent twice")
        if index < self._last:
            raise PeerProtocolError(f"chunk {index} after chunk {self._last}: not ascending")
        expected = chunk_length(index, self._size, self._chunk_size)
        if len(reply.data) != expected:
            raise PeerProtocolError(f"chunk {index} has {len(reply.data)} bytes, not {expected}")
        self._last = index
        self._seen.add(index)
        self.received.append(index)
        return reply

    def unreceived(self) -> list[int]:
        """Requested chunks that did not arrive (all the rest, if the response never ended)."""
        return [i for i in self.request.indices() if i not in self._seen]


def ranges_of(indices: Sequence[int]) -> list[Range]:
    """Collapse ascending distinct indices into half-open ranges."""
    ranges: list[Range] = []
    for i in indices:
        if ranges and ranges[-1][1] == i:
            ranges[-1] = (ranges[-1][0], i + 1)
        else:
            ranges.append((i, i + 1))
    return ranges
