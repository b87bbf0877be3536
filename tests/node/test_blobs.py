"""The blob store: one blob per root, verified chunks only, downloads that survive crashes."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pshare.node.blobs import (
    BlobNotFound,
    BlobStore,
    ChunkNotPresent,
    ChunkResult,
    CorruptBlob,
    IncompleteDownload,
)
from p2pshare.protocol import limits as L
from p2pshare.protocol.documents import Manifest, manifest_of

C = L.CHUNK_SIZE
SMALL = L.MIN_CHUNK_SIZE  # downloads accept any valid chunk size; small ones keep tests fast


def _bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _blob_files(store: BlobStore) -> list[Path]:
    return [p for p in store.directory.glob("??/*") if p.suffix != ".manifest"]


def _partial(store: BlobStore, root: bytes, suffix: str) -> Path:
    return store.directory / "partial" / f"{root.hex()}{suffix}"


def _chunk(data: bytes, manifest: Manifest, index: int) -> bytes:
    offset, length = manifest.chunk_range(index)
    return data[offset : offset + length]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BlobStore]:
    with BlobStore(tmp_path / "blobs") as opened:
        yield opened


def _download(store: BlobStore, data: bytes, indices: list[int]) -> Manifest:
    manifest = manifest_of(data, SMALL)
    store.start(manifest)
    for index in indices:
        assert store.write_chunk(manifest.root, index, _chunk(data, manifest, index)) == (
            ChunkResult.WRITTEN
        )
    return manifest


# --- adding files ---------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    size=st.one_of(
        st.sampled_from([0, 1, C - 1, C, C + 1, 2 * C, 3 * C + 5]), st.integers(0, 3 * C)
    ),
)
def test_added_file_round_trips_byte_identical(seed: int, size: int) -> None:
    data = _bytes(seed, size)
    with tempfile.TemporaryDirectory() as tmp, BlobStore(Path(tmp) / "blobs") as store:
        source = _write(Path(tmp) / "doc.pdf", data)
        manifest = store.add_file(source)
        assert manifest == manifest_of(data) == store.hash_file(source)
        assert store.is_complete(manifest.root) and store.has(manifest.root)
        assert store.path_of(manifest.root).read_bytes() == data
        assert store.manifest(manifest.root) == manifest
        assert store.present_chunks(manifest.root) == frozenset(range(manifest.chunk_count))
        assert store.missing_chunks(manifest.root) == []
        for index in range(manifest.chunk_count):
            assert store.read_chunk(manifest.root, index) == _chunk(data, manifest, index)
        assert list((Path(tmp) / "blobs" / "tmp").iterdir()) == []


def test_same_content_added_twice_is_one_blob(store: BlobStore, tmp_path: Path) -> None:
    data = _bytes(1, C + 10)
    first = store.add_file(_write(tmp_path / "a.pdf", data))
    second = store.add_file(_write(tmp_path / "b.epub", data))
    again = store.add_file(tmp_path / "a.pdf")
    assert first.root == second.root == again.root
    assert _blob_files(store) == [store.path_of(first.root)]
    assert store.roots() == [first.root]


def test_different_content_gets_different_roots(store: BlobStore, tmp_path: Path) -> None:
    a = store.add_file(_write(tmp_path / "a", b"a"))
    b = store.add_file(_write(tmp_path / "b", b"b"))
    assert a.root != b.root
    assert store.roots() == sorted([a.root, b.root])


def test_adding_an_unreadable_path_raises_os_errors(store: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        store.add_file(tmp_path / "missing.pdf")
    with pytest.raises(IsADirectoryError):
        store.add_file(tmp_path)
    assert store.roots() == []
    assert list((store.directory / "tmp").iterdir()) == []


def test_empty_file_is_one_blob_with_no_chunks(store: BlobStore, tmp_path: Path) -> None:
    manifest = store.add_file(_write(tmp_path / "empty.md", b""))
    assert manifest == manifest_of(b"") == store.hash_file(tmp_path / "empty.md")
    assert store.path_of(manifest.root).read_bytes() == b""
    assert store.read(manifest.root, 0, 0) == b""


def test_export_copies_and_refuses_to_overwrite(store: BlobStore, tmp_path: Path) -> None:
    data = _bytes(2, 1000)
    root = store.add_file(_write(tmp_path / "in.pdf", data)).root
    out = store.export(root, tmp_path / "out.pdf")
    assert out.read_bytes() == data
    with pytest.raises(FileExistsError):
        store.export(root, out)
    out.write_bytes(b"changed")
    store.export(root, out, overwrite=True)
    assert out.read_bytes() == data
    with pytest.raises(BlobNotFound):
        store.export(b"\0" * 32, tmp_path / "nothing")


def test_lost_manifest_is_rebuilt_from_the_blob(store: BlobStore, tmp_path: Path) -> None:
    manifest = store.add_file(_write(tmp_path / "in", _bytes(3, 2 * C + 1)))
    sidecar = store.path_of(manifest.root).with_suffix(".manifest")
    sidecar.unlink()
    assert store.manifest(manifest.root) == manifest
    sidecar.write_bytes(b"junk")
    assert store.manifest(manifest.root) == manifest
    assert sidecar.read_bytes() == manifest.encode()


def test_a_tampered_blob_is_detected(store: BlobStore, tmp_path: Path) -> None:
    manifest = store.add_file(_write(tmp_path / "in", _bytes(4, C + 1)))
    assert store.verify(manifest.root)
    blob = store.path_of(manifest.root)
    with open(blob, "r+b") as f:
        f.write(b"X")
    assert not store.verify(manifest.root)
    blob.with_suffix(".manifest").unlink()
    with pytest.raises(CorruptBlob):
        store.manifest(manifest.root)


def test_delete_removes_blobs_and_downloads(store: BlobStore, tmp_path: Path) -> None:
    complete = store.add_file(_write(tmp_path / "in", b"x" * 100)).root
    partial = _download(store, _bytes(5, 3 * SMALL), [0]).root
    assert store.delete(complete) and store.delete(partial)
    assert not store.has(complete) and not store.has(partial)
    assert not store.delete(complete)
    assert list(store.directory.rglob("*.*")) == []
    with pytest.raises(BlobNotFound):
        store.path_of(complete)


def test_opening_a_store_removes_leftovers_of_a_crash(tmp_path: Path) -> None:
    directory = tmp_path / "blobs"
    BlobStore(directory).close()
    (directory / "tmp" / "add-123").write_bytes(b"half a copy")
    (directory / "partial" / f"{'ab' * 32}.part").write_bytes(b"no manifest")
    with BlobStore(directory) as store:
        assert list((directory / "tmp").iterdir()) == []
        assert list((directory / "partial").iterdir()) == []
        assert store.partial_roots() == []


# --- downloads ------------------------------------------------------------------------------


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**32),
    size=st.one_of(
        st.sampled_from([0, 1, SMALL - 1, SMALL, SMALL + 1, 5 * SMALL]),
        st.integers(0, 6 * SMALL),
    ),
    data_order=st.data(),
)
def test_chunks_in_any_order_complete_byte_identical(
    tmp_path: Path, seed: int, size: int, data_order: st.DataObject
) -> None:
    data = _bytes(seed, size)
    manifest = manifest_of(data, SMALL)
    order = data_order.draw(st.permutations(range(manifest.chunk_count)))
    with BlobStore(Path(tempfile.mkdtemp(dir=tmp_path))) as store:
        assert store.start(manifest) == list(range(manifest.chunk_count))
        for done, index in enumerate(order):
            assert store.write_chunk(manifest.root, index, _chunk(data, manifest, index)) == (
                ChunkResult.WRITTEN
            )
            assert len(store.missing_chunks(manifest.root)) == manifest.chunk_count - done - 1
        blob = store.finish(manifest.root)
        assert blob.read_bytes() == data
        assert store.is_complete(manifest.root)
        assert store.manifest(manifest.root) == manifest
        assert store.partial_roots() == []
        assert not _partial(store, manifest.root, ".part").exists()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32), where=st.integers(0, 3 * SMALL - 1))
def test_a_flipped_byte_is_refused_and_never_written(tmp_path: Path, seed: int, where: int) -> None:
    data = _bytes(seed, 3 * SMALL)
    manifest = manifest_of(data, SMALL)
    index = where // SMALL
    bad = bytearray(_chunk(data, manifest, index))
    bad[where % SMALL] ^= 0x80
    with BlobStore(Path(tempfile.mkdtemp(dir=tmp_path)), sync_every_bytes=0) as store:
        store.start(manifest)
        assert store.write_chunk(manifest.root, index, bad) == ChunkResult.CORRUPT
        assert store.present_chunks(manifest.root) == frozenset()
        on_disk = _partial(store, manifest.root, ".part").read_bytes()
        assert on_disk == bytes(len(data))  # still the sparse zeros it was created with


def test_chunks_with_the_wrong_index_or_length_are_corrupt(store: BlobStore) -> None:
    data = _bytes(6, 2 * SMALL + 3)
    manifest = _download(store, data, [])
    first = _chunk(data, manifest, 0)
    root = manifest.root
    assert store.write_chunk(root, 1, first) == ChunkResult.CORRUPT
    assert store.write_chunk(root, 3, first) == ChunkResult.CORRUPT
    assert store.write_chunk(root, -1, first) == ChunkResult.CORRUPT
    assert store.write_chunk(root, 0, first + b"\0") == ChunkResult.CORRUPT
    assert store.write_chunk(root, 2, _chunk(data, manifest, 2)[:-1]) == ChunkResult.CORRUPT
    assert store.missing_chunks(root) == [0, 1, 2]


def test_a_chunk_written_twice_is_reported_present(store: BlobStore) -> None:
    data = _bytes(7, 2 * SMALL)
    manifest = _download(store, data, [1])
    assert store.write_chunk(manifest.root, 1, _chunk(data, manifest, 1)) == (
        ChunkResult.ALREADY_PRESENT
    )


def test_writing_to_a_download_never_started_is_an_error(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        store.write_chunk(b"\1" * 32, 0, b"x")
    with pytest.raises(BlobNotFound):
        store.missing_chunks(b"\1" * 32)


def test_finish_refuses_an_incomplete_download(store: BlobStore) -> None:
    data = _bytes(8, 3 * SMALL)
    manifest = _download(store, data, [0, 2])
    with pytest.raises(IncompleteDownload, match="1 chunks"):
        store.finish(manifest.root)
    assert not store.is_complete(manifest.root)
    assert store.has(manifest.root)


def test_empty_download_finishes_at_once(store: BlobStore) -> None:
    manifest = manifest_of(b"")
    assert store.start(manifest) == []
    assert store.finish(manifest.root).read_bytes() == b""


def test_starting_a_document_we_have_needs_nothing(store: BlobStore, tmp_path: Path) -> None:
    data = _bytes(9, C + 1)
    manifest = store.add_file(_write(tmp_path / "in", data))
    assert store.start(manifest) == []
    assert store.write_chunk(manifest.root, 0, data[:C]) == ChunkResult.ALREADY_PRESENT
    assert store.partial_roots() == []


def test_adding_a_file_completes_its_download(store: BlobStore, tmp_path: Path) -> None:
    data = _bytes(10, C + 1)
    manifest = manifest_of(data)
    store.start(manifest)
    store.write_chunk(manifest.root, 1, data[C:])
    assert store.add_file(_write(tmp_path / "in", data)) == manifest
    assert store.partial_roots() == []
    assert store.present_chunks(manifest.root) == {0, 1}


def test_present_chunks_of_a_download_can_be_read(store: BlobStore) -> None:
    data = _bytes(11, 3 * SMALL + 9)
    manifest = _download(store, data, [1, 3])
    root = manifest.root
    assert store.read(root, SMALL + 5, 100) == data[SMALL + 5 : SMALL + 105]
    assert store.read_chunk(root, 3) == data[3 * SMALL :]
    with pytest.raises(ChunkNotPresent):
        store.read(root, SMALL, SMALL + 1)
    with pytest.raises(ChunkNotPresent):
        store.read_chunk(root, 0)
    with pytest.raises(ValueError, match="beyond"):
        store.read(root, 3 * SMALL, 10)
    assert store.partial_roots() == [root]
    assert store.manifest(root) == manifest


def test_parallel_writers_complete_a_download(store: BlobStore) -> None:
    data = _bytes(12, 40 * SMALL + 1)
    manifest = manifest_of(data, SMALL)
    store.start(manifest)
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(
                lambda i: store.write_chunk(manifest.root, i, _chunk(data, manifest, i)),
                range(manifest.chunk_count),
            )
        )
    assert set(results) == {ChunkResult.WRITTEN}
    assert store.finish(manifest.root).read_bytes() == data


# --- resuming and crashes -------------------------------------------------------------------


def test_a_new_store_resumes_a_download(tmp_path: Path) -> None:
    data = _bytes(13, 5 * SMALL + 1)
    with BlobStore(tmp_path / "blobs") as first:
        manifest = _download(first, data, [4, 0, 2])
    with BlobStore(tmp_path / "blobs") as second:
        assert second.has(manifest.root)
        assert second.partial_roots() == [manifest.root]
        assert second.present_chunks(manifest.root) == {0, 2, 4}
        assert second.start(manifest) == [1, 3, 5]
        for index in (1, 3, 5):
            second.write_chunk(manifest.root, index, _chunk(data, manifest, index))
        assert second.finish(manifest.root).read_bytes() == data


_CRASHING_WRITER = textwrap.dedent(
    """
    import os, random, signal, sys
    from pathlib import Path
    from p2pshare.node.blobs import BlobStore
    from p2pshare.protocol.documents import manifest_of

    chunk = int(sys.argv[2])
    data = random.Random(0).randbytes(8 * chunk)
    manifest = manifest_of(data, chunk)
    store = BlobStore(Path(sys.argv[1]), sync_every_bytes=3 * chunk)
    store.start(manifest)
    for index in (0, 1, 2, 3, 4):  # 0-2 are synced and marked; 3 and 4 only written
        store.write_chunk(manifest.root, index, data[index * chunk : (index + 1) * chunk])
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_download_killed_midway_resumes_from_verified_chunks(tmp_path: Path) -> None:
    directory = tmp_path / "blobs"
    killed = subprocess.run(
        [sys.executable, "-c", _CRASHING_WRITER, str(directory), str(SMALL)],
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr
    data = _bytes(0, 8 * SMALL)
    manifest = manifest_of(data, SMALL)
    part = directory / "partial" / f"{manifest.root.hex()}.part"

    with open(part, "r+b") as f:  # damage everything past the last marked chunk, and chunk 1
        f.seek(3 * SMALL)
        f.write(os.urandom(5 * SMALL))
        f.seek(SMALL + 17)
        f.write(b"!")

    with BlobStore(directory) as store:
        assert store.present_chunks(manifest.root) == {0, 2}
        missing = store.start(manifest)
        assert missing == [1, 3, 4, 5, 6, 7]
        for index in missing:
            store.write_chunk(manifest.root, index, _chunk(data, manifest, index))
        assert store.finish(manifest.root).read_bytes() == data


def test_a_damaged_bitmap_only_means_fewer_chunks(tmp_path: Path) -> None:
    data = _bytes(14, 20 * SMALL)
    with BlobStore(tmp_path / "blobs") as first:
        manifest = _download(first, data, [0, 2, 19])
    have = _partial(first, manifest.root, ".have")
    for junk in (b"\xff" * 100, b"", b"\x55"):
        have.write_bytes(junk)
        with BlobStore(tmp_path / "blobs") as store:
            present = store.present_chunks(manifest.root)
            assert present <= {0, 2, 19}
            for index in present:
                assert store.read_chunk(manifest.root, index) == _chunk(data, manifest, index)
    assert present == {0, 2}  # b"\x55" marks chunks 0, 2, 4, 6: only 0 and 2 are real


def test_a_truncated_part_file_only_means_fewer_chunks(tmp_path: Path) -> None:
    data = _bytes(15, 4 * SMALL + 3)
    with BlobStore(tmp_path / "blobs") as first:
        manifest = _download(first, data, [0, 1, 2, 3])
    os.truncate(_partial(first, manifest.root, ".part"), SMALL + SMALL // 2)
    with BlobStore(tmp_path / "blobs") as store:
        assert store.start(manifest) == [1, 2, 3, 4]
        for index in (1, 2, 3, 4):
            store.write_chunk(manifest.root, index, _chunk(data, manifest, index))
        assert store.finish(manifest.root).read_bytes() == data


def test_a_damaged_download_manifest_drops_the_download(tmp_path: Path) -> None:
    data = _bytes(16, 3 * SMALL)
    with BlobStore(tmp_path / "blobs") as first:
        manifest = _download(first, data, [0])
    _partial(first, manifest.root, ".manifest").write_bytes(b"\x93\x00")
    with BlobStore(tmp_path / "blobs") as store:
        assert not store.has(manifest.root)
        assert store.partial_roots() == []
        assert store.start(manifest) == [0, 1, 2]


def test_leftovers_of_a_crash_during_finish_are_cleaned(tmp_path: Path) -> None:
    data = _bytes(17, 2 * SMALL)
    with BlobStore(tmp_path / "blobs") as first:
        manifest = _download(first, data, [0, 1])
        first.finish(manifest.root)
    _partial(first, manifest.root, ".manifest").write_bytes(manifest.encode())
    with BlobStore(tmp_path / "blobs") as store:
        assert store.partial_roots() == []
        assert store.start(manifest) == []
        assert not _partial(store, manifest.root, ".manifest").exists()
        assert store.path_of(manifest.root).read_bytes() == data
