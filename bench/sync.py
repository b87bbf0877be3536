"""Benchmark: record sync catch-up between two real libp2p hosts, beside a local ingest.

Two hosts in this process on 127.0.0.1 (Noise, Yamux, TCP: ``open_host``), each with a
``SyncService`` on a real SQLite ``Store`` that checks records in worker processes started
before timing, as a node does. A holds ``--records`` valid signed ``rec`` records (~480-byte
wires, 16 authors) in community "public", made before timing and stored with the Store's batch
ingest; B holds none. Each repeat, with a fresh B (new host, new store):

1. catch-up: ``B.sync_with(A, "public")``: reconciliation, B pulls every record (decoded,
   verified and stored by B's store), A pulls nothing; timed until ``sync_with`` returns.
2. in sync: the same call again; both sides already hold the same set.
3. local: a fresh store like B's ingests the very same wires with ``ingest_wire`` in batches
   of the sync's ``INGEST_BATCH_RECORDS`` (decode + verify + insert, no network): the ceiling
   for (1), printed beside it with the ratio.

Both hosts share one Python thread (and the machine's cores with the checking processes), so
the catch-up rate is a lower bound for two machines.

JSON lines ``{"name", "value", "unit", ...}``; the target lines carry ``target`` and ``pass``.
Targets: catch-up >= 8,000 records/s; <= 4,096 bytes each way when already in sync. The figures
per repeat are printed, the target lines use the median.

Run: ``.venv/bin/python bench/sync.py [--records 100000] [--repeat 3] [--seed 1]
[--profile FILE]``
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import trio
from benchlib import WORDS, emit
from nacl.signing import SigningKey

from p2pshare.node.host import configure_libp2p_logging, connect, listen_addrs, open_host
from p2pshare.node.identity import Identity
from p2pshare.node.store import Store, rebuild_record
from p2pshare.node.sync_service import (
    INGEST_BATCH_RECORDS,
    SyncService,
    SyncStats,
    store_from_peer,
)
from p2pshare.protocol.records import (
    REC,
    SIGNATURE_DOMAIN,
    decode_record,
    now_ms,
    unsigned_bytes,
)

T = TypeVar("T")

TARGET_RATE = 8_000
TARGET_IN_SYNC_BYTES = 4_096
COMMUNITY = "public"
AUTHORS = 16
SYNC_DEADLINE = 600.0


# --- records --------------------------------------------------------------------------------------


def generate(n: int, seed: int) -> list[bytes]:
    """``n`` valid signed ``rec`` wires in COMMUNITY, ascending created_ms, all in the past.

    Signs the canonical unsigned array and splices the signature in rather than packing the
    whole record again (a 6-array header becomes a 7-array one): ~2x faster than
    ``create_record``, and the result is checked below.
    """
    rng = random.Random(seed)
    keys = [SigningKey(rng.randbytes(32)) for _ in range(AUTHORS)]
    authors = [bytes(key.verify_key) for key in keys]
    texts = [" ".join(rng.choices(WORDS, k=45))[:300] for _ in range(256)]
    base = now_ms() - 60_000 - n * 20
    wires: list[bytes] = []
    for i in range(n):
        body = {
            "subject_type": "thing",
            "subject": f"item {i} at {rng.choice(WORDS)}",
            "rating": 1 + i % 5,
            "text": texts[i % len(texts)],
            "tags": [WORDS[i % len(WORDS)], WORDS[(i * 7) % len(WORDS)]],
        }
        author = i % AUTHORS
        created = base + i * 20 + rng.randrange(20)
        unsigned = unsigned_bytes(REC, authors[author], created, COMMUNITY, body)
        sig = keys[author].sign(SIGNATURE_DOMAIN + unsigned).signature
        wires.append(b"\x97" + unsigned[1:] + msgpack.packb(sig, use_bin_type=True))
    for wire in wires[:: max(1, n // 50)]:  # the splice is exactly the canonical record
        decode_record(wire, now=now_ms())
    return wires


# --- one side: host + store + sync service --------------------------------------------------------


@dataclass
class Side:
    """A host with its own store and sync service; ``busy`` adds up seconds spent in the store."""

    name: str
    host: Any
    store: Store
    service: SyncService
    invalid: list[tuple[str, str]]
    busy: dict[str, float]

    @property
    def peer_id(self) -> str:
        return str(self.host.get_id())

    @property
    def addr(self) -> str:
        return listen_addrs(self.host)[0]


def timed(busy: dict[str, float], what: str, fn: Callable[..., T]) -> Callable[..., T]:
    """``fn``, adding the seconds each call takes to ``busy[what]``."""

    def run(*args: Any, **kwargs: Any) -> T:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            busy[what] = busy.get(what, 0.0) + time.perf_counter() - started
            busy[f"{what}_calls"] = busy.get(f"{what}_calls", 0) + 1

    return run


async def open_side(stack: AsyncExitStack, name: str, directory: Path) -> Side:
    """What a node runs for sync: a store (checking processes started), a host, the service with
    an ingest callback like ``Node.ingest_wires`` (one store thread, the ``now`` clock check)."""
    store = Store.open(directory / f"{name}.sqlite")  # default checking processes, as a node
    stack.callback(store.close)
    await trio.to_thread.run_sync(store.start_workers)
    host = await stack.enter_async_context(open_host(Identity.generate()))
    limiter = trio.CapacityLimiter(1)
    invalid: list[tuple[str, str]] = []
    busy: dict[str, float] = {}
    # instance attributes shadow the methods: the service's calls are timed too
    store.ingest_wire = timed(busy, "ingest", store.ingest_wire)  # type: ignore[method-assign]
    store.get_wires = timed(busy, "serve_lookup", store.get_wires)  # type: ignore[method-assign]
    store.range_items = timed(busy, "snapshot_query", store.range_items)  # type: ignore[method-assign]

    def charge(peer_id: str, reason: str) -> None:
        invalid.append((peer_id, str(reason)))

    service = SyncService(
        host,
        communities=lambda: {COMMUNITY},
        store=store,
        store_limiter=limiter,
        ingest=partial(store_from_peer, store, limiter, on_invalid=charge),
        on_invalid=charge,
        sync_timeout=SYNC_DEADLINE,
    )
    service.start()
    return Side(name, host, store, service, invalid, busy)


# --- measurements ---------------------------------------------------------------------------------


@dataclass
class Repeat:
    catch_up: SyncStats
    in_sync: SyncStats
    local_seconds: float
    b_busy: dict[str, float]
    a_busy: dict[str, float]
    stored: int


def local_ingest(wires: list[bytes], directory: Path) -> float:
    """Seconds for a fresh store like B's to ingest ``wires`` in the sync's batch size."""
    with Store.open(directory / "local.sqlite") as store:
        store.start_workers()
        now = now_ms()
        started = time.perf_counter()
        added = 0
        for i in range(0, len(wires), INGEST_BATCH_RECORDS):
            added += len(store.ingest_wire(wires[i : i + INGEST_BATCH_RECORDS], now=now).added)
        seconds = time.perf_counter() - started
    if added != len(wires):
        raise SystemExit(f"local ingest stored {added} of {len(wires)} records")
    return seconds


async def one_repeat(
    a: Side, wires: list[bytes], directory: Path, profiler: cProfile.Profile | None
) -> Repeat:
    """A fresh B catches up with A, syncs again in sync; then the local ingest, in ``directory``
    (removed afterwards, SQLite's side files included)."""
    directory.mkdir()
    a.busy.clear()
    async with AsyncExitStack() as stack:
        b = await open_side(stack, "b", directory)
        await connect(b.host, a.addr)
        if profiler:
            profiler.enable()
        with trio.fail_after(SYNC_DEADLINE):
            catch_up = await b.service.sync_with(a.peer_id, COMMUNITY)
        if profiler:
            profiler.disable()
        a_busy, b_busy = dict(a.busy), dict(b.busy)
        with trio.fail_after(SYNC_DEADLINE):
            in_sync = await b.service.sync_with(a.peer_id, COMMUNITY)
        stored = await trio.to_thread.run_sync(b.store.count)
        if b.invalid or a.invalid:
            raise SystemExit(f"records refused: A {a.invalid[:3]}, B {b.invalid[:3]}")
    local = await trio.to_thread.run_sync(local_ingest, wires, directory)
    shutil.rmtree(directory)
    return Repeat(catch_up, in_sync, local, b_busy, a_busy, stored)


def report_repeat(index: int, run: Repeat, n: int) -> None:
    c, s = run.catch_up, run.in_sync
    emit(
        "sync_catch_up",
        n / c.seconds,
        "records/s",
        repeat=index,
        seconds=round(c.seconds, 3),
        records_received=c.records_received,
        records_added=c.records_added,
        stored=run.stored,
        bytes_to_a=c.bytes_sent,
        bytes_from_a=c.bytes_received,
        bytes_per_record=round(c.bytes_received / max(1, c.records_received), 1),
        rounds=c.rounds,
        reconcile_s=round(c.reconcile_seconds, 3),
        b_ingest_busy_s=round(run.b_busy.get("ingest", 0.0), 3),
        b_ingest_calls=int(run.b_busy.get("ingest_calls", 0)),
        b_snapshot_query_s=round(run.b_busy.get("snapshot_query", 0.0), 3),
        a_snapshot_query_s=round(run.a_busy.get("snapshot_query", 0.0), 3),
        a_serve_lookup_s=round(run.a_busy.get("serve_lookup", 0.0), 3),
    )
    emit(
        "sync_in_sync",
        max(s.bytes_sent, s.bytes_received),
        "bytes (larger direction)",
        repeat=index,
        bytes_to_a=s.bytes_sent,
        bytes_from_a=s.bytes_received,
        rounds=s.rounds,
        seconds=round(s.seconds, 3),
    )
    emit(
        "local_ingest",
        n / run.local_seconds,
        "records/s",
        repeat=index,
        seconds=round(run.local_seconds, 3),
        batch=INGEST_BATCH_RECORDS,
    )


async def run(args: argparse.Namespace) -> int:
    configure_libp2p_logging(None)
    started = time.perf_counter()
    wires = await trio.to_thread.run_sync(generate, args.records, args.seed)
    emit("generate", time.perf_counter() - started, "s", records=len(wires))
    profiler = cProfile.Profile() if args.profile else None
    runs: list[Repeat] = []
    with tempfile.TemporaryDirectory(prefix="p2pshare-bench-sync-") as tmp:
        directory = Path(tmp)
        async with AsyncExitStack() as stack:
            a = await open_side(stack, "a", directory)
            started = time.perf_counter()
            records = [rebuild_record(w) for w in wires]
            result = await trio.to_thread.run_sync(a.store.ingest, records)
            emit("a_store_fill", time.perf_counter() - started, "s", added=len(result.added))
            del records
            for index in range(args.repeat):
                runs.append(await one_repeat(a, wires, directory / str(index), profiler))
                report_repeat(index, runs[-1], len(wires))
    n = len(wires)
    rate = statistics.median(n / r.catch_up.seconds for r in runs)
    local = statistics.median(n / r.local_seconds for r in runs)
    in_sync = max(max(r.in_sync.bytes_sent, r.in_sync.bytes_received) for r in runs)
    ok = all(r.stored == n and r.catch_up.records_added == n for r in runs)
    common = {"records": n, "repeats": len(runs), "cpus": os.cpu_count()}
    emit("sync_vs_local_ingest", rate / local, "ratio", local_records_per_s=round(local), **common)
    emit("sync_catch_up_target", rate, "records/s", target=TARGET_RATE,
         **{"pass": rate >= TARGET_RATE}, all_stored=ok, **common)  # fmt: skip
    emit("sync_in_sync_target", in_sync, "bytes each way (max)", target=TARGET_IN_SYNC_BYTES,
         **{"pass": in_sync <= TARGET_IN_SYNC_BYTES}, **common)  # fmt: skip
    emit("load_avg_1m", os.getloadavg()[0], "")
    if profiler:
        write_profile(profiler, args.profile)
    return 0 if ok else 1


def write_profile(profiler: cProfile.Profile, path: str) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(60)
    Path(path).write_text(out.getvalue(), encoding="utf-8")
    print(f"profile (event-loop thread only) written to {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="records A has, B lacks")
    parser.add_argument("--repeat", type=int, default=3, help="catch-ups, each with a fresh B")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", metavar="FILE", help="cProfile the catch-ups' event loop")
    args = parser.parse_args(argv)
    if args.records < 1 or args.repeat < 1:
        parser.error("--records and --repeat must be at least 1")
    return int(trio.run(run, args))


if __name__ == "__main__":
    sys.exit(main())
