"""Content addressing for documents: fixed-size chunks, a manifest of their hashes, one root.

A document is cut into ``chunk_size`` pieces (256 KiB by default), each named by its SHA-256 (a raw
IPFS leaf has the same digest). The manifest is the canonical msgpack list
``[size, chunk_size, [chunk hashes...]]`` and the document's ``root`` is the SHA-256 of those bytes,
so one file always has one root and any chunk can be checked on its own before it is written.

Pure: this module hashes buffers it is given and never reads files or starts threads. Callers that
want chunks hashed in parallel pass a ``map_fn`` (for example ``ThreadPoolExecutor.map``); hashlib
releases the GIL on large buffers, so the node layer can use both cores without this layer owning
a pool.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from p2pshare.protocol import limits as L
from p2pshare.protocol.canonical import pack, unpack
from p2pshare.protocol.reasons import RecordError

HASH_SIZE = 32  # SHA-256
# One manifest is one message on the wire, so its hash list is bounded: 65,536 chunks is 16 GiB at
# the default chunk size (documents are expected to be 1-200 MB, i.e. at most 800 chunks).
MAX_MANIFEST_CHUNKS = L.MAX_MANIFEST_CHUNKS
MAX_MANIFEST_BYTES = L.MAX_MANIFEST_BYTES

Buffer = bytes | bytearray | memoryview
# ``map_fn(fn, offsets)`` must return fn(offset) for every offset, in order (like the builtin map).
ChunkMap = Callable[[Callable[[int], bytes], Iterable[int]], Iterable[bytes]]


class ManifestError(ValueError):
    """A manifest (or a document being hashed into one) is invalid; the message says how."""


def chunk_count(size: int, chunk_size: int) -> int:
    """How many chunks a document of ``size`` bytes has: an empty document has none."""
    return -(-size // chunk_size)


def check_chunk_size(chunk_size: object) -> int:
    """Chunk sizes are powers of two within limits, the same rule ``doc`` records follow."""
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool):
        raise ManifestError("chunk size must be an integer")
    if not L.MIN_CHUNK_SIZE <= chunk_size <= L.MAX_CHUNK_SIZE:
        raise ManifestError(
            f"chunk size {chunk_size} is outside {L.MIN_CHUNK_SIZE}..{L.MAX_CHUNK_SIZE}"
        )
    if chunk_size & (chunk_size - 1):
        raise ManifestError(f"chunk size {chunk_size} is not a power of two")
    return chunk_size


def check_document_size(size: object, chunk_size: int) -> int:
    """Refuse sizes a manifest cannot describe, before anyone spends time hashing them."""
    if not isinstance(size, int) or isinstance(size, bool):
        raise ManifestError("document size must be an integer")
    if not 0 <= size <= L.MAX_DOC_SIZE:
        raise ManifestError(f"document size {size} is outside 0..{L.MAX_DOC_SIZE}")
    if chunk_count(size, chunk_size) > MAX_MANIFEST_CHUNKS:
        limit = MAX_MANIFEST_CHUNKS * chunk_size
        raise ManifestError(f"document of {size} bytes is over the {limit}-byte limit")
    return size


@dataclass(frozen=True)
class Manifest:
    """What a root names: the document's size, its chunk size and every chunk's SHA-256.

    Construction checks consistency, so a ``Manifest`` in hand always describes a possible file.
    """

    size: int
    chunk_size: int
    hashes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        check_chunk_size(self.chunk_size)
        check_document_size(self.size, self.chunk_size)
        expected = chunk_count(self.size, self.chunk_size)
        if len(self.hashes) != expected:
            raise ManifestError(
                f"{len(self.hashes)} chunk hashes for {self.size} bytes; expected {expected}"
            )
        for index, digest in enumerate(self.hashes):
            if not isinstance(digest, bytes) or len(digest) != HASH_SIZE:
                raise ManifestError(f"chunk hash {index} is not {HASH_SIZE} bytes")

    @cached_property
    def _wire(self) -> bytes:
        return pack([self.size, self.chunk_size, list(self.hashes)])

    def encode(self) -> bytes:
        """The canonical bytes whose SHA-256 is the root."""
        return self._wire

    @cached_property
    def root(self) -> bytes:
        return hashlib.sha256(self._wire).digest()

    @property
    def chunk_count(self) -> int:
        return len(self.hashes)

    def chunk_range(self, index: int) -> tuple[int, int]:
        """``(offset, length)`` of chunk ``index``; only the last chunk may be short."""
        if not 0 <= index < len(self.hashes):
            raise IndexError(f"chunk {index} is outside 0..{len(self.hashes) - 1}")
        offset = index * self.chunk_size
        return offset, min(self.chunk_size, self.size - offset)


def decode_manifest(data: bytes, expected_root: bytes) -> Manifest:
    """Check ``data`` hashes to ``expected_root`` and is a consistent canonical manifest."""
    if len(expected_root) != HASH_SIZE:
        raise ManifestError(f"a root is {HASH_SIZE} bytes, not {len(expected_root)}")
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest of {len(data)} bytes is over {MAX_MANIFEST_BYTES}")
    if hashlib.sha256(data).digest() != expected_root:
        raise ManifestError("manifest does not hash to the expected root")
    try:
        value = unpack(data, MAX_MANIFEST_BYTES)
    except RecordError as exc:
        raise ManifestError(f"manifest is not canonical msgpack: {exc}") from exc
    return _manifest_from_value(value)


def _manifest_from_value(value: Any) -> Manifest:
    if not isinstance(value, list) or len(value) != 3:
        raise ManifestError("a manifest is a list [size, chunk_size, hashes]")
    size, chunk_size, hashes = value
    if not isinstance(hashes, list):
        raise ManifestError("manifest hashes must be a list")
    return Manifest(size, check_chunk_size(chunk_size), tuple(hashes))


def verify_chunk(manifest: Manifest, index: int, data: Buffer) -> bool:
    """True when ``data`` is exactly chunk ``index`` of the document ``manifest`` describes."""
    if not 0 <= index < manifest.chunk_count:
        return False
    if len(memoryview(data).cast("B")) != manifest.chunk_range(index)[1]:
        return False
    return hashlib.sha256(data).digest() == manifest.hashes[index]


def chunk_hashes(
    buffer: Buffer, chunk_size: int = L.CHUNK_SIZE, map_fn: ChunkMap | None = None
) -> list[bytes]:
    """SHA-256 of every ``chunk_size`` piece of ``buffer`` (the last may be short).

    Slices are zero-copy views, so an mmap'd file is hashed straight from the page cache; with a
    ``map_fn`` backed by threads the chunks are hashed on several cores at once.
    """
    view = memoryview(buffer).cast("B")
    total = len(view)

    def digest(offset: int) -> bytes:
        return hashlib.sha256(view[offset : offset + chunk_size]).digest()

    offsets = range(0, total, chunk_size)
    if map_fn is None or len(offsets) < 2:
        return [digest(offset) for offset in offsets]
    return list(map_fn(digest, offsets))


def manifest_of(
    data: Buffer, chunk_size: int = L.CHUNK_SIZE, map_fn: ChunkMap | None = None
) -> Manifest:
    """The manifest of a document held whole in memory."""
    size = len(memoryview(data).cast("B"))
    check_document_size(size, check_chunk_size(chunk_size))
    return Manifest(size, chunk_size, tuple(chunk_hashes(data, chunk_size, map_fn)))


class ChunkHasher:
    """Build a manifest from bytes fed in pieces of any size, so callers hash while they copy.

    Whole chunks inside a piece are hashed straight from it (in parallel when a ``map_fn`` is
    given); only a chunk split across pieces goes through an incremental hash object.
    """

    def __init__(self, chunk_size: int = L.CHUNK_SIZE, map_fn: ChunkMap | None = None) -> None:
        self._chunk_size = check_chunk_size(chunk_size)
        self._map_fn = map_fn
        self._hashes: list[bytes] = []
        self._pending = hashlib.sha256()
        self._pending_len = 0
        self._size = 0
        self._finished = False

    @property
    def size(self) -> int:
        """Bytes fed so far."""
        return self._size

    def feed(self, data: Buffer) -> None:
        if self._finished:
            raise RuntimeError("feed() after finish()")
        view = memoryview(data).cast("B")
        check_document_size(self._size + len(view), self._chunk_size)
        self._size += len(view)
        if self._pending_len:
            take = min(len(view), self._chunk_size - self._pending_len)
            self._add_pending(view[:take])
            view = view[take:]
        whole = len(view) - len(view) % self._chunk_size
        if whole:
            self._hashes.extend(chunk_hashes(view[:whole], self._chunk_size, self._map_fn))
        if whole < len(view):
            self._add_pending(view[whole:])

    def _add_pending(self, piece: memoryview) -> None:
        self._pending.update(piece)
        self._pending_len += len(piece)
        if self._pending_len == self._chunk_size:
            self._close_pending()

    def _close_pending(self) -> None:
        self._hashes.append(self._pending.digest())
        self._pending = hashlib.sha256()
        self._pending_len = 0

    def finish(self) -> Manifest:
        """The manifest of everything fed; the hasher cannot be fed after this."""
        if not self._finished:
            if self._pending_len:
                self._close_pending()
            self._finished = True
        return Manifest(self._size, self._chunk_size, tuple(self._hashes))
