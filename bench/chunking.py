"""Benchmark: chunking + hashing a document against one raw SHA-256 pass over the same bytes.

Prints JSON lines ``{"name", "value", "unit", ...}`` (MB/s = 10^6 bytes/s; --size-mb is in MiB).
The last line compares our chunked hashing of a file (``BlobStore.hash_file``) with
``hashlib.sha256`` over the same bytes already in memory, against a target of 0.8x. The file
is freshly written (and fsync'd), so it is in the page cache: this measures CPU cost, not disk.
``add_file`` (hash + copy + fsync into a store) is reported for context.

Run: ``.venv/bin/python bench/chunking.py [--size-mb 200] [--repeat 3] [--file PATH]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from p2pshare.node.blobs import BlobStore
from p2pshare.protocol.documents import chunk_hashes

TARGET_RATIO = 0.8


def _emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def _median_seconds(run: Callable[[], object], repeat: int, after: Callable[[], object]) -> float:
    run()  # warm-up: starts the hashing threads and faults the page cache in, untimed
    after()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
        after()
    return statistics.median(times)


def nothing() -> None:
    """No clean-up between runs."""


def _make_file(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        left = size
        while left:
            piece = min(left, 16 * 1024 * 1024)
            out.write(os.urandom(piece))
            left -= piece
        os.fsync(out.fileno())  # so write-back does not steal CPU from the measurements


def _report(name: str, size: int, seconds: float, repeat: int, **extra: object) -> float:
    rate = size / seconds / 1e6
    _emit(
        name=name,
        value=round(rate, 1),
        unit="MB/s",
        median_s=round(seconds, 4),
        runs=repeat,
        **extra,
    )
    return rate


def _in_memory(path: Path, size: int, repeat: int) -> float:
    """The baseline: one hashlib.sha256 pass over bytes already in memory (and our chunking)."""
    data = path.read_bytes()
    raw = _report(
        "raw_sha256_in_memory",
        size,
        _median_seconds(lambda: hashlib.sha256(data).digest(), repeat, nothing),
        repeat,
    )
    _report(
        "chunk_hashes_in_memory_1_thread",
        size,
        _median_seconds(lambda: chunk_hashes(data), repeat, nothing),
        repeat,
    )
    return raw


def run(path: Path, work: Path, repeat: int) -> bool:
    size = path.stat().st_size
    raw = _in_memory(path, size, repeat)

    single = BlobStore(work / "single", hash_workers=1)
    _report(
        "hash_file_1_thread",
        size,
        _median_seconds(lambda: single.hash_file(path), repeat, nothing),
        repeat,
    )
    single.close()

    store = BlobStore(work / "store")
    workers = os.cpu_count() or 1
    chunked = _report(
        "hash_file",
        size,
        _median_seconds(lambda: store.hash_file(path), repeat, nothing),
        repeat,
        threads=workers,
    )
    root = store.hash_file(path).root
    _report(
        "add_file_hash_copy_fsync",
        size,
        _median_seconds(lambda: store.add_file(path), repeat, lambda: store.delete(root)),
        repeat,
        threads=workers,
    )
    store.close()

    ratio = chunked / raw
    passed = ratio >= TARGET_RATIO
    _emit(
        name="chunking_vs_raw_sha256",
        value=round(ratio, 3),
        unit="ratio",
        target=TARGET_RATIO,
        size_mib=round(size / 2**20, 1),
        cpus=workers,
        **{"pass": passed},
    )
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--file", type=Path, help="hash this file instead of a random one")
    parser.add_argument("--size-mb", type=int, default=200, help="size of the random file")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="p2pshare-bench-") as tmp:
        work = Path(tmp)
        path = args.file
        if path is None:
            path = work / "random.bin"
            _make_file(path, args.size_mb * 1024 * 1024)
        passed = run(path, work, max(1, args.repeat))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
