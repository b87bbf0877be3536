"""Benchmark: ingesting wire records into the SQLite store, against raw Ed25519 verification.

Pre-generates N valid records (mostly ``doc``/``rec`` with 200-500 characters of text, several
authors, plus profiles, follows, reposts and a few retracts; generation is not timed and is cached
in the temp dir), then times ``Store.ingest_wire`` of all of them into a fresh store file in
batches of ``--batch`` per transaction. That is the full path a record from the network takes:
decode, canonical check, limits, signature, duplicate/tombstone/block checks, insert + derived
rows + full-text index, commit. In the same run it times ``crypto_sign_open`` alone over the same
records' signed bytes, on one thread, and compares.

The store checks big batches in worker processes (as a node does, started once at node start);
their start-up is reported separately and not timed. ``--workers 0`` checks on the calling thread.

Prints JSON lines ``{"name", "value", "unit", ...}``. Targets: ingest >= 8,000 records/s and
>= 0.3x the raw verify rate.

Run: ``.venv/bin/python bench/ingest.py [--n 100000] [--batch 1000] [--workers N] [--compare]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
from benchlib import WORDS
from nacl.bindings import crypto_sign_open
from nacl.signing import SigningKey

from p2pshare.node.store import Store
from p2pshare.protocol.records import (
    DOC,
    FOLLOW,
    PROFILE,
    REC,
    REPOST,
    RETRACT,
    SIGNATURE_DOMAIN,
    create_record,
    decode_record,
    record_id,
    unsigned_bytes,
)

TARGET_RATE = 8_000
TARGET_RATIO = 0.3
GENERATOR_VERSION = 1  # bump when the generated records change, to refresh the cache
AUTHORS = 24
COMMUNITIES = ("public", "bikes", "books", "bakers")


def _emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def _text(rng: random.Random, low: int, high: int) -> str:
    target = rng.randint(low, high)
    words: list[str] = []
    length = 0
    while length < target:
        word = rng.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:high]


def _body(rng: random.Random, kind: str, keys: list[SigningKey], i: int) -> dict[str, Any]:
    if kind == DOC:
        return {
            "title": _text(rng, 20, 80),
            "description": _text(rng, 150, 400),
            "tags": rng.sample(WORDS, 3),
            "licence": rng.choice(("CC-BY-4.0", "CC0-1.0", "all-rights-reserved")),
            "mime": "application/pdf",
            "filename": f"document-{i}.pdf",
            "size": rng.randrange(1, 200_000_000),
            "root": rng.randbytes(32),
            "chunk_size": 262_144,
        }
    if kind == REC:
        return {
            "subject_type": "record",
            "subject": rng.randbytes(32),
            "rating": rng.randint(1, 5),
            "text": _text(rng, 200, 500),
            "tags": rng.sample(WORDS, 2),
        }
    if kind == PROFILE:
        return {"name": _text(rng, 5, 40), "about": _text(rng, 50, 300)}
    return {"target": bytes(rng.choice(keys).verify_key)}


def generate(n: int, seed: int) -> list[bytes]:
    """N valid wire records from a fixed seed (about 25k/s: signing, plus create_record's check)."""
    rng = random.Random(seed)
    keys = [SigningKey(rng.randbytes(32)) for _ in range(AUTHORS)]
    base_ms = 1_700_000_000_000
    redistributable: list[tuple[SigningKey, bytes]] = []  # (author key, wire) of CC docs
    retractable: list[tuple[SigningKey, bytes]] = []  # (author key, id)
    wires: list[bytes] = []
    for i in range(n):
        key = rng.choice(keys)
        created = base_ms + i * 40 + rng.randrange(40)
        community = rng.choice(COMMUNITIES)
        roll = rng.random()
        if roll < 0.010 and redistributable:
            _, original = rng.choice(redistributable)
            body: dict[str, Any] = {"original": original, "note": _text(rng, 20, 200)}
            kind = REPOST
        elif roll < 0.012 and retractable:
            key, target = retractable.pop(rng.randrange(len(retractable)))
            body, kind = {"target": target}, RETRACT
            redistributable = [(k, w) for k, w in redistributable if record_id(w) != target]
        else:
            kind = (
                DOC if roll < 0.47 else REC if roll < 0.94 else PROFILE if roll < 0.97 else FOLLOW
            )
            body = _body(rng, kind, keys, i)
        record = create_record(key, kind, body, community=community, created_ms=created)
        wires.append(record.wire)
        if kind == DOC and body["licence"] != "all-rights-reserved" and rng.random() < 0.1:
            redistributable.append((key, record.wire))
        if kind in (DOC, REC) and rng.random() < 0.01:
            retractable.append((key, record.id))
    return wires


def load_or_generate(n: int, seed: int) -> list[bytes]:
    cache = Path(tempfile.gettempdir()) / f"p2pshare-bench-ingest-v{GENERATOR_VERSION}-{n}-{seed}"
    if cache.exists():
        wires: list[bytes] = msgpack.unpackb(cache.read_bytes())
        if len(wires) == n:
            return wires
    wires = generate(n, seed)
    partial = cache.with_suffix(".tmp")
    partial.write_bytes(msgpack.packb(wires))
    partial.replace(cache)
    return wires


def expected_counts(wires: list[bytes]) -> tuple[int, int]:
    """(records the store should hold, records retracts remove) — checked after the timed run."""
    records = [decode_record(w, verify=False) for w in wires]
    ids = {r.id for r in records}
    retracted = {r.body["target"] for r in records if r.kind == RETRACT} & ids
    # Reposts are of records generated earlier, so each embedded original is already counted.
    reposts_of_retracted = {
        r.id for r in records if r.kind == REPOST and r.original and r.original.id in retracted
    }
    gone = retracted | reposts_of_retracted
    return len(ids - gone), len(gone)


def time_ingest(wires: list[bytes], batch: int, workers: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="p2pshare-bench-") as tmp:
        store = Store.open(Path(tmp) / "store.sqlite", decode_workers=workers)
        try:
            start = time.perf_counter()
            if store.decode_workers:
                store.start_workers()
            startup = time.perf_counter() - start
            now = int(time.time() * 1000)
            added = duplicates = removed = 0
            rejected: dict[str, int] = {}
            children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu_start = time.process_time()
            start = time.perf_counter()
            for i in range(0, len(wires), batch):
                result = store.ingest_wire(wires[i : i + batch], now=now)
                added += len(result.added)
                duplicates += result.duplicates
                removed += len(result.removed)
                for reason, count in result.rejected.items():
                    rejected[reason.value] = rejected.get(reason.value, 0) + count
            seconds = time.perf_counter() - start
            main_cpu = time.process_time() - cpu_start
            stored = store.count()
            db_bytes = sum(f.stat().st_size for f in Path(tmp).iterdir())
            workers_used = store.decode_workers
        finally:
            store.close()  # workers exit here, so their CPU time is counted below
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker_cpu = (children.ru_utime + children.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    return {
        "main_cpu_us": main_cpu / len(wires) * 1e6,
        "worker_cpu_us": worker_cpu / len(wires) * 1e6,
        "seconds": seconds,
        "rate": len(wires) / seconds,
        "startup": startup,
        "stored": stored,
        "added": added,
        "duplicates": duplicates,
        "removed": removed,
        "rejected": rejected,
        "db_bytes": db_bytes,
        "workers": workers_used,
    }


def time_raw_verify(wires: list[bytes]) -> float:
    """crypto_sign_open over each record's exact signed bytes, one thread: verifies per second."""
    signed = []
    for wire in wires:
        r = decode_record(wire, verify=False)
        message = SIGNATURE_DOMAIN + unsigned_bytes(
            r.kind, r.author, r.created_ms, r.community, r.body
        )
        signed.append((r.sig + message, r.author))
    start = time.perf_counter()
    for smessage, author in signed:
        crypto_sign_open(smessage, author)
    return len(signed) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="records to ingest")
    parser.add_argument("--batch", type=int, default=1_000, help="records per transaction")
    parser.add_argument("--workers", type=int, default=None, help="checking processes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--compare", action="store_true", help="also time --workers 0")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    wires = load_or_generate(args.n, args.seed)
    _emit(name="generate", value=round(time.perf_counter() - start, 2), unit="s", n=len(wires))
    expect_stored, expect_removed = expected_counts(wires)

    run = time_ingest(wires, args.batch, args.workers)
    ok = (
        run["stored"] == expect_stored
        and run["removed"] == expect_removed
        and not run["rejected"]
        and run["duplicates"] == 0
    )
    _emit(
        name="ingest",
        value=round(run["rate"]),
        unit="records/s",
        n=len(wires),
        batch=args.batch,
        seconds=round(run["seconds"], 3),
        workers=run["workers"],
        workers_startup_s=round(run["startup"], 3),
        stored=run["stored"],
        removed_by_retracts=run["removed"],
        rejected=run["rejected"],
        db_mb=round(run["db_bytes"] / 1e6, 1),
        cpu_us_per_record_main=round(run["main_cpu_us"], 1),
        cpu_us_per_record_workers=round(run["worker_cpu_us"], 1),
        all_stored_as_expected=ok,
        cpus=os.cpu_count(),
        load_avg_1m=round(os.getloadavg()[0], 2),
    )
    if args.compare:
        inline = time_ingest(wires, args.batch, 0)
        _emit(
            name="ingest_inline",
            value=round(inline["rate"]),
            unit="records/s",
            workers=0,
            cpu_us_per_record=round(inline["main_cpu_us"], 1),
        )

    raw = time_raw_verify(wires)
    _emit(name="raw_ed25519_verify", value=round(raw), unit="verifies/s", n=len(wires))
    ratio = run["rate"] / raw
    _emit(
        name="ingest_vs_raw_verify",
        value=round(ratio, 3),
        unit="ratio",
        target=TARGET_RATIO,
        **{"pass": ratio >= TARGET_RATIO},
    )
    _emit(
        name="ingest_target",
        value=round(run["rate"]),
        unit="records/s",
        target=TARGET_RATE,
        **{"pass": run["rate"] >= TARGET_RATE},
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
