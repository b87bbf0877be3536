"""Content addressing: one file, one root; each chunk checkable alone; bad manifests refused."""

from __future__ import annotations

import hashlib
import mmap
import random
from concurrent.futures import ThreadPoolExecutor

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pshare.protocol import limits as L
from p2pshare.protocol.documents import (
    MAX_MANIFEST_BYTES,
    MAX_MANIFEST_CHUNKS,
    ChunkHasher,
    Manifest,
    ManifestError,
    chunk_hashes,
    decode_manifest,
    manifest_of,
    verify_chunk,
)

SMALL = L.MIN_CHUNK_SIZE  # small chunks keep property tests fast; the rules are the same


def _bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _sizes(chunk: int) -> st.SearchStrategy[int]:
    """Sizes at and around chunk boundaries, plus anything up to a few chunks."""
    edges = [0, 1, chunk - 1, chunk, chunk + 1, 2 * chunk - 1, 2 * chunk, 3 * chunk + 7]
    return st.one_of(st.sampled_from(edges), st.integers(0, 4 * chunk))


def _independent_root(data: bytes, chunk: int) -> bytes:
    """The spec written out with plain msgpack, not our code."""
    hashes = [hashlib.sha256(data[i : i + chunk]).digest() for i in range(0, len(data), chunk)]
    wire = msgpack.packb([len(data), chunk, hashes], use_bin_type=True)
    return hashlib.sha256(wire).digest()


def _manifest_bytes(size: object, chunk: object, hashes: object) -> bytes:
    return msgpack.packb([size, chunk, hashes], use_bin_type=True)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), size=_sizes(SMALL))
def test_root_is_deterministic_and_matches_the_spec(seed: int, size: int) -> None:
    data = _bytes(seed, size)
    first, second = manifest_of(data, SMALL), manifest_of(bytes(data), SMALL)
    assert first.root == second.root == _independent_root(data, SMALL)
    assert first.chunk_count == -(-size // SMALL)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), size=_sizes(SMALL))
def test_chunks_reassemble_byte_identical_and_each_verifies(seed: int, size: int) -> None:
    data = _bytes(seed, size)
    manifest = manifest_of(data, SMALL)
    pieces = []
    for index in range(manifest.chunk_count):
        offset, length = manifest.chunk_range(index)
        chunk = data[offset : offset + length]
        assert verify_chunk(manifest, index, chunk)
        pieces.append(chunk)
    assert b"".join(pieces) == data


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), size=_sizes(SMALL).filter(bool), where=st.floats(0, 1))
def test_a_flipped_byte_fails_verification(seed: int, size: int, where: float) -> None:
    data = bytearray(_bytes(seed, size))
    manifest = manifest_of(data, SMALL)
    position = min(int(where * size), size - 1)
    index = position // SMALL
    data[position] ^= 0x01
    offset, length = manifest.chunk_range(index)
    assert not verify_chunk(manifest, index, data[offset : offset + length])


def test_verify_chunk_refuses_wrong_index_and_wrong_length() -> None:
    data = _bytes(1, 2 * SMALL + 5)
    manifest = manifest_of(data, SMALL)
    first = data[:SMALL]
    assert verify_chunk(manifest, 0, first)
    assert not verify_chunk(manifest, 1, first)
    assert not verify_chunk(manifest, 3, first)
    assert not verify_chunk(manifest, -1, first)
    assert not verify_chunk(manifest, 2, data[2 * SMALL :] + b"\0")
    with pytest.raises(IndexError):
        manifest.chunk_range(3)


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    size=_sizes(SMALL),
    cuts=st.lists(st.integers(0, 4 * SMALL), max_size=8),
)
def test_streaming_hasher_matches_one_shot_for_any_split(
    seed: int, size: int, cuts: list[int]
) -> None:
    data = _bytes(seed, size)
    hasher = ChunkHasher(SMALL)
    previous = 0
    for cut in [*sorted(c for c in cuts if c <= size), size]:
        hasher.feed(memoryview(data)[previous:cut])
        previous = cut
    assert hasher.size == size
    assert hasher.finish() == manifest_of(data, SMALL)


def test_parallel_hashing_gives_the_same_hashes() -> None:
    data = _bytes(2, 9 * SMALL + 3)
    with ThreadPoolExecutor(2) as pool:
        parallel = chunk_hashes(data, SMALL, pool.map)
        hasher = ChunkHasher(SMALL, pool.map)
        hasher.feed(data[:5])
        hasher.feed(data[5:])
        streamed = hasher.finish()
    assert parallel == chunk_hashes(data, SMALL)
    assert streamed == manifest_of(data, SMALL)


def test_hasher_cannot_be_fed_after_finish() -> None:
    hasher = ChunkHasher()
    hasher.feed(b"abc")
    hasher.finish()
    with pytest.raises(RuntimeError):
        hasher.feed(b"d")


def test_default_chunks_are_256_kib() -> None:
    data = _bytes(3, L.CHUNK_SIZE + 1)
    manifest = manifest_of(data)
    assert manifest.chunk_size == L.CHUNK_SIZE == 256 * 1024
    assert manifest.chunk_range(1) == (L.CHUNK_SIZE, 1)
    assert manifest.root == _independent_root(data, L.CHUNK_SIZE)


def test_empty_document_has_zero_chunks_and_a_fixed_root() -> None:
    manifest = manifest_of(b"")
    assert (manifest.size, manifest.chunk_count, manifest.hashes) == (0, 0, ())
    assert manifest.encode() == bytes([0x93, 0x00, 0xCE, 0x00, 0x04, 0x00, 0x00, 0x90])
    assert manifest.root.hex() == hashlib.sha256(manifest.encode()).hexdigest()
    assert decode_manifest(manifest.encode(), manifest.root) == manifest
    assert ChunkHasher().finish() == manifest


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32), size=_sizes(SMALL))
def test_manifest_round_trips_through_its_bytes(seed: int, size: int) -> None:
    manifest = manifest_of(_bytes(seed, size), SMALL)
    assert decode_manifest(manifest.encode(), manifest.root) == manifest


def test_decode_refuses_a_manifest_that_is_not_the_root() -> None:
    manifest = manifest_of(_bytes(4, 3 * SMALL), SMALL)
    other = manifest_of(_bytes(5, 3 * SMALL), SMALL)
    with pytest.raises(ManifestError, match="root"):
        decode_manifest(manifest.encode(), other.root)
    with pytest.raises(ManifestError, match="32 bytes"):
        decode_manifest(manifest.encode(), manifest.root[:31])


def _refused(wire: bytes, match: str) -> None:
    """Decoding ``wire`` against its own true root must still fail, for the stated reason."""
    with pytest.raises(ManifestError, match=match):
        decode_manifest(wire, hashlib.sha256(wire).digest())


@pytest.mark.parametrize("count", [0, 2, 4])
def test_decode_refuses_the_wrong_number_of_hashes(count: int) -> None:
    _refused(_manifest_bytes(2 * SMALL + 1, SMALL, [b"\1" * 32] * count), "expected 3")


@pytest.mark.parametrize(
    ("size", "chunk", "hashes", "match"),
    [
        (-1, SMALL, [], "size"),
        (L.MAX_DOC_SIZE + 1, SMALL, [], "size"),
        (10, SMALL, [b"\1" * 31], "not 32 bytes"),
        (10, SMALL, ["x" * 32], "not 32 bytes"),
        (10, 3 * L.MIN_CHUNK_SIZE, [b"\1" * 32], "power of two"),
        (10, L.MIN_CHUNK_SIZE // 2, [b"\1" * 32], "outside"),
        (10, L.MAX_CHUNK_SIZE * 2, [b"\1" * 32], "outside"),
        ("10", SMALL, [b"\1" * 32], "integer"),
        (10, SMALL, b"\1" * 32, "list"),
        (True, SMALL, [b"\1" * 32], "integer"),
    ],
)
def test_decode_refuses_inconsistent_fields(
    size: object, chunk: object, hashes: object, match: str
) -> None:
    _refused(_manifest_bytes(size, chunk, hashes), match)


def test_decode_refuses_wrong_shapes_and_encodings() -> None:
    _refused(msgpack.packb({"size": 1}), "list")
    _refused(msgpack.packb([0, SMALL]), "list")
    _refused(msgpack.packb([0, SMALL, [], 0]), "list")
    good = manifest_of(b"hello", SMALL).encode()
    _refused(good + b"\0", "canonical")
    # 5 as a uint32 instead of a fixint: same value, not the canonical bytes
    _refused(bytes([0x93, 0xCE, 0, 0, 0, 5]) + good[2:], "canonical")


def test_decode_refuses_oversized_manifests_before_hashing_them() -> None:
    with pytest.raises(ManifestError, match="over"):
        decode_manifest(b"\0" * (MAX_MANIFEST_BYTES + 1), b"\0" * 32)


def test_manifests_cannot_describe_more_chunks_than_the_limit() -> None:
    size = (MAX_MANIFEST_CHUNKS + 1) * L.MIN_CHUNK_SIZE
    with pytest.raises(ManifestError, match="limit"):
        Manifest(size, L.MIN_CHUNK_SIZE, ())
    hasher = ChunkHasher(L.MIN_CHUNK_SIZE)
    with mmap.mmap(-1, size) as lazy, pytest.raises(ManifestError, match="limit"):
        hasher.feed(lazy)  # anonymous mmap: 1 GiB of address space, no memory touched
    assert hasher.size == 0


def test_the_largest_manifest_fits_its_byte_limit() -> None:
    size = MAX_MANIFEST_CHUNKS * L.MAX_CHUNK_SIZE
    manifest = Manifest(size, L.MAX_CHUNK_SIZE, (b"\xff" * 32,) * MAX_MANIFEST_CHUNKS)
    assert len(manifest.encode()) <= MAX_MANIFEST_BYTES
    assert decode_manifest(manifest.encode(), manifest.root) == manifest


def test_a_200_mb_document_has_a_small_manifest() -> None:
    size = 200 * 1024 * 1024
    manifest = Manifest(size, L.CHUNK_SIZE, (b"\0" * 32,) * 800)
    assert 26_000 < len(manifest.encode()) < 28_000
