"""The record store: every record we hold, what is derived from them, and the full-text index.

SQLite in WAL mode with ``synchronous=NORMAL``: each ingest is one transaction, so a crash at any
instant leaves a store that opens, holding every batch that committed and nothing of the one that
did not (a power cut may lose the last few commits, never consistency).

What the store enforces, so every path in (gossip, sync, bundles, our own publishing) agrees:
- a record seen twice is stored once (``id`` = hash of the wire bytes);
- a ``repost`` brings the records it embeds with it, and falls with them;
- a ``retract`` by a record's author removes that record and every repost embedding it, and leaves
  a tombstone so neither is stored again; the retract itself is kept so it keeps spreading. A
  retract naming a record we do not have is kept too, and applies if that record later arrives
  from the same author;
- records by a blocked author, or embedding one, are refused (``Reason.BLOCKED``).

Removing a record can leave a document root that nothing refers to any more; unless the document is
pinned (one of our own files) the store forgets it and reports the root so the caller can delete
the blob.

Speed: for a big ``ingest_wire`` batch, worker processes run the full ``decode_record`` (canonical
check, limits, Ed25519 signature: ~90 us a record, 70 of it the signature) on chunks ahead, while
this thread rebuilds the accepted records from their bytes (~5 us) and writes the previous chunk
with a few ``executemany`` calls (~50 us at 100k records). Measured on 2 shared cores this beat
decoding here and verifying only the signatures in a worker (the writer thread is the bottleneck,
so the less it does the better), and threads would not do at all: PyNaCl releases the GIL while
verifying, but a thread getting it back from one running Python waits up to the 5 ms switch
interval per signature.

Methods are blocking and serialised by a lock, so they may be called from ``trio.to_thread``.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import sqlite3
import threading
from collections import Counter, deque
from collections.abc import Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from types import TracebackType
from typing import Any

import msgpack

from p2pshare.node import schema
from p2pshare.protocol.keys import ID_BYTES, is_id_prefix
from p2pshare.protocol.reasons import Reason, RecordError
from p2pshare.protocol.records import (
    DOC,
    FOLLOW,
    PROFILE,
    REC,
    REPOST,
    RETRACT,
    SUBJECT_THING,
    SUBJECT_URL,
    UNFOLLOW,
    Record,
    check_retract,
    decode_record,
    now_ms,
    record_id,
    repost_chain,
    root_original,
)

DOCUMENT_STATES = ("missing", "partial", "complete")
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"  # keys.format_id's alphabet, in digit order
_KEY_OFFSET = 1 << 63
_MAX_KEY = (1 << 63) - 1
CHUNK_RECORDS = 256  # records per decode task and per duplicate lookup
MAX_DECODE_WORKERS = 4
MAX_SEARCH_TERMS = 32  # a longer query is cut: every term is one more index lookup
CACHE_KIB = 32 * 1024
# Random ids mean every 1,000-record commit dirties ~1,500 pages, so the default checkpoint every
# 1,000 WAL pages ran on every commit, copying (and fsyncing) the same index pages each time.
# Every 8,000 pages copies each page once per ~6 commits: ~6 us less CPU and ~10 us less waiting
# per record at 100k records, for a WAL of up to ~32 MiB (trimmed back to 64 MiB at most).
CHECKPOINT_PAGES = 8_000
WAL_SIZE_LIMIT = 64 * 1024 * 1024

_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA temp_store = MEMORY",
    f"PRAGMA cache_size = -{CACHE_KIB}",
    f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}",
    f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}",
    "PRAGMA busy_timeout = 5000",
)

Decoded = Record | Reason


FEED_MAX_SECOND_HOP = 2000  # authors two follows away that rank above strangers
FEED_KINDS = (DOC, REC, REPOST)  # what the feed lists (not profiles, follows, retracts)
STRANGER = 3  # the trust distance of anyone beyond two follows


def trust_distances(tiers: list[set[bytes]]) -> dict[bytes, int]:
    """Author -> trust distance, from ``Store.trust_tiers`` (disjoint tiers); others: STRANGER."""
    return {author: distance for distance, authors in enumerate(tiers) for author in authors}


@dataclass
class FeedPage:
    """One page of the feed: (record, trust distance) pairs, the feed's length in this
    snapshot, and the snapshot (pass it back as ``upto`` for the next pages)."""

    items: list[tuple[Record, int]]
    total: int | None
    snapshot: int


class StoreError(Exception):
    """The store cannot do what was asked; the message is one sentence for people."""


@dataclass
class IngestResult:
    """What one ingest did, in input order.

    ``added`` includes the embedded originals a repost brought with it, and a record a later
    retract in the same batch removed again (it is then in ``removed`` too).
    """

    added: list[Record] = field(default_factory=list)
    duplicates: int = 0
    rejected: Counter[Reason] = field(default_factory=Counter)
    removed: list[bytes] = field(default_factory=list)  # ids removed by retracts
    orphaned_roots: list[bytes] = field(default_factory=list)  # caller deletes these blobs


# --- what is indexed ------------------------------------------------------------------------


def fts_fields(record: Record) -> tuple[str, str, str] | None:
    """The (title, body, tags) text a record contributes to the full-text index, if any.

    The index is contentless, so deleting a row re-supplies these exact values: this function must
    stay a pure function of the record (a change needs a migration that rebuilds the index).
    """
    body = record.body
    kind = record.kind
    if kind == DOC:
        parts = [body.get("description", ""), *body.get("authors", ()), body["filename"]]
        return body["title"], "\n".join(parts), " ".join(body.get("tags", ()))
    if kind == REC:
        text = body["text"]
        if body["subject_type"] in (SUBJECT_URL, SUBJECT_THING):
            text = f"{body['subject']}\n{text}"
        return "", text, " ".join(body.get("tags", ()))
    if kind == PROFILE:
        parts = [body.get("about", ""), body.get("location", ""), body.get("website", "")]
        return body["name"], "\n".join(parts), ""
    if kind == REPOST and body.get("note"):
        return "", body["note"], ""
    return None


def fts_query(text: str) -> str:
    """Turn what a person typed into an FTS5 query that cannot be a syntax error.

    Every whitespace-separated term becomes a quoted phrase (all must match); the last one also
    matches as a prefix, so results appear while typing.
    """
    text = text.encode("utf-8", "replace").decode("utf-8").replace("\0", " ")
    terms = [t for t in text.split() if any(c.isalnum() for c in t)][:MAX_SEARCH_TERMS]
    if not terms:
        return ""
    quoted = ['"' + term.replace('"', '""') + '"' for term in terms]
    quoted[-1] += "*"
    return " ".join(quoted)


def key64(digest: bytes) -> int:
    """A digest's first 8 bytes as an SQLite integer, in the same order as the bytes."""
    return int.from_bytes(digest[:8], "big") - _KEY_OFFSET


def id_prefix_range(prefix: str) -> tuple[bytes, bytes | None] | None:
    """The ids whose base32 form starts with ``prefix`` are ``lo <= id < hi`` (``hi`` None: no
    upper bound); None if no id can start so. Lets one index on the id bytes serve prefixes too.
    """
    prefix = prefix.strip().lower()
    if not is_id_prefix(prefix):
        return None
    value = 0
    for char in prefix:
        value = value * 32 + _BASE32.index(char)
    bits = 5 * len(prefix)
    total = 8 * ID_BYTES
    if bits > total:  # the 52nd character carries 4 padding bits, always zero
        extra = bits - total
        if value & ((1 << extra) - 1):
            return None
        value >>= extra
        bits = total
    lo = value << (total - bits)
    hi = (value + 1) << (total - bits)
    return lo.to_bytes(ID_BYTES, "big"), hi.to_bytes(ID_BYTES, "big") if hi < 1 << total else None


def _doc_root(record: Record) -> bytes | None:
    source = root_original(record)
    return source.body["root"] if source.kind == DOC else None  # type: ignore[no-any-return]


def _decode_chunk(wires: Sequence[bytes], now: int | None) -> list[Decoded]:
    """Decode and verify wires; a bad one becomes its reason (never raises for bad input)."""
    out: list[Decoded] = []
    for wire in wires:
        try:
            out.append(decode_record(wire, now=now))
        except RecordError as exc:
            out.append(exc.reason)
    return out


def _check_chunk(wires: Sequence[bytes], now: int | None) -> list[Reason | None]:
    """Worker-process side: the full ``decode_record`` of every wire; None means accepted.

    Only verdicts travel back: rebuilding a Record from accepted bytes costs the parent ~5 us,
    unpickling one ~10 us, decoding it again ~20 us.
    """
    out: list[Reason | None] = []
    for wire in wires:
        try:
            decode_record(wire, now=now)
            out.append(None)
        except RecordError as exc:
            out.append(exc.reason)
    return out


def rebuild_record(wire: bytes) -> Record:
    """The Record for wire bytes ``decode_record`` has accepted; equal to what it returned.

    Skips the checks (they ran in a worker process), not the meaning: same fields, same id.
    """
    _version, kind, author, created_ms, community, body, sig = msgpack.unpackb(wire, raw=False)
    original = rebuild_record(body["original"]) if kind == REPOST else None
    return Record(kind, author, created_ms, community, body, sig, wire, record_id(wire), original)


def _init_worker() -> None:
    """Ignore Ctrl-C (it goes to the whole process group; the parent decides), and exit when
    the parent dies: a node killed with SIGKILL would otherwise leave its workers waiting on a
    queue whose other end they hold themselves, for ever."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()


def _exit_with(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(0)


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _pipelined(
    pool: ProcessPoolExecutor, chunks: Iterable[list[bytes]], now: int | None, window: int
) -> Generator[list[Decoded], None, None]:
    """Check chunks in worker processes, ``window`` chunks ahead, yielding in input order, so the
    workers decode and verify while this thread writes."""
    pending: deque[tuple[list[bytes], Future[list[Reason | None]]]] = deque()

    def ready() -> list[Decoded]:
        chunk, future = pending.popleft()
        verdicts = future.result()
        return [rebuild_record(w) if v is None else v for w, v in zip(chunk, verdicts, strict=True)]

    try:
        for chunk in chunks:
            pending.append((chunk, pool.submit(_check_chunk, chunk, now)))
            if len(pending) > window:
                yield ready()
        while pending:
            yield ready()
    finally:
        for _chunk, future in pending:
            future.cancel()


# --- one ingest call --------------------------------------------------------------------------


class _Ingest:
    """The state of one ingest transaction: rows waiting for ``executemany`` and what we know.

    Rowids are assigned here (one writer per store), so a whole chunk of records and their
    derived rows go to SQLite in a handful of ``executemany`` calls.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store._db_or_raise()
        self.result = IngestResult()
        self.present: set[bytes] = set()  # ids stored (in the db or pending)
        self.tombstones: dict[bytes, set[bytes]] = {}  # target id -> retract authors
        self.touched_roots: set[bytes] = set()
        self._records: list[tuple[Any, ...]] = []
        self._fts: list[tuple[Any, ...]] = []
        self._follows: list[tuple[Any, ...]] = []
        self._refs: list[tuple[Any, ...]] = []
        self._embeds: list[tuple[Any, ...]] = []
        self._subjects: list[tuple[int, bytes, bytes]] = []

    def chunk(self, items: Sequence[Decoded]) -> None:
        records = [item for item in items if not isinstance(item, Reason)]
        self._look_up(records)
        for item in items:
            if isinstance(item, Reason):
                self.result.rejected[item] += 1
            else:
                self._one(item)
        self.flush()  # memory stays bounded however long the input is

    def _look_up(self, records: Sequence[Record]) -> None:
        """One query each for which of these ids we hold and which are tombstoned."""
        ids: set[bytes] = set()
        for record in records:
            member: Record | None = record
            while member is not None:
                ids.add(member.id)
                member = member.original
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        params = list(ids)
        keys = [key64(i) for i in params]
        found = self.db.execute(f"SELECT id FROM records WHERE id_key IN ({marks})", keys)
        self.present.update(row[0] for row in found)
        tombs = self.db.execute(
            f"SELECT target, author FROM tombstones WHERE target IN ({marks})", params
        )
        for target, author in tombs:
            self.tombstones.setdefault(target, set()).add(author)

    def _one(self, record: Record) -> None:
        chain = repost_chain(record) if record.original is not None else [record]
        blocked = self.store._blocked
        if blocked and any(member.author in blocked for member in chain):
            self.result.rejected[Reason.BLOCKED] += 1
        elif self.tombstones and any(
            member.author in self.tombstones.get(member.id, ()) for member in chain
        ):
            self.result.rejected[Reason.RETRACTED] += 1
        elif record.id in self.present:
            self.result.duplicates += 1
        elif record.kind == RETRACT:
            self._retract(record)
        else:
            for member in reversed(chain):
                if member.id not in self.present:
                    self._add(member)

    def _add(self, record: Record) -> None:
        rowid = self.store._next_rowid
        self.store._next_rowid += 1
        self._records.append(
            (
                rowid,
                key64(record.id),
                record.id,
                record.kind,
                record.author,
                record.created_ms,
                record.community,
                record.wire,
            )
        )
        fts = fts_fields(record)
        if fts is not None:
            self._fts.append((rowid, *fts))
        if record.kind in (FOLLOW, UNFOLLOW):
            target = record.body["target"]
            active = record.kind == FOLLOW
            self._follows.append(
                (rowid, record.author, target, record.created_ms, record.id, active)
            )
        if record.kind in (DOC, REPOST):
            root = _doc_root(record)
            if root is not None:
                self._refs.append((rowid, key64(root), root))
        if record.original is not None:
            for member in repost_chain(record)[1:]:
                self._embeds.append((member.id, rowid, member.author))
        subject = schema.rec_subject_row(rowid, record)
        if subject is not None:
            self._subjects.append(subject)
        self.present.add(record.id)
        self.result.added.append(record)

    def _retract(self, retract: Record) -> None:
        target_id: bytes = retract.body["target"]
        self.flush()  # the target may be waiting in this batch
        row = self.db.execute(
            "SELECT rowid, wire FROM records WHERE id_key = ? AND id = ?",
            (key64(target_id), target_id),
        ).fetchone()
        if row is not None:
            try:
                check_retract(retract, decode_record(row[1], verify=False))
            except RecordError as exc:
                self.result.rejected[exc.reason] += 1
                return
            removed = self.store._delete_rows([row[0]], self.touched_roots)
            self.present.difference_update(removed)
            self.result.removed.extend(removed)
        self.db.execute(
            "INSERT OR IGNORE INTO tombstones (target, author, retract) VALUES (?, ?, ?)",
            (target_id, retract.author, retract.id),
        )
        self.tombstones.setdefault(target_id, set()).add(retract.author)
        self._add(retract)

    def flush(self) -> None:
        db = self.db
        if self._records:
            db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self._records)
            self._records.clear()
        if self._fts:
            db.executemany(
                "INSERT INTO records_fts (rowid, title, body, tags) VALUES (?, ?, ?, ?)", self._fts
            )
            self._fts.clear()
        if self._follows:
            db.executemany("INSERT INTO follows VALUES (?, ?, ?, ?, ?, ?)", self._follows)
            self._follows.clear()
        if self._refs:
            db.executemany("INSERT INTO doc_refs VALUES (?, ?, ?)", self._refs)
            self._refs.clear()
        if self._embeds:
            db.executemany("INSERT OR IGNORE INTO embeds VALUES (?, ?, ?)", self._embeds)
            self._embeds.clear()
        if self._subjects:
            db.executemany("INSERT INTO rec_subjects VALUES (?, ?, ?)", self._subjects)
            self._subjects.clear()

    def finish(self) -> IngestResult:
        self.flush()
        self.result.orphaned_roots = self.store._forget_orphans(self.touched_roots)
        return self.result


# --- the store --------------------------------------------------------------------------------


class Store:
    """Open with :meth:`open`; one Store per file (the data-dir lock sees to that)."""

    def __init__(self, path: Path, db: sqlite3.Connection, decode_workers: int) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = db
        self._lock = threading.RLock()
        self._decode_workers = decode_workers
        self._pool: ProcessPoolExecutor | None = None
        self._blocked: set[bytes] = {row[0] for row in db.execute("SELECT author FROM blocks")}
        self._next_rowid = self._max_rowid() + 1

    @classmethod
    def open(cls, path: Path, *, decode_workers: int | None = None) -> Store:
        """Open (creating or migrating) the store at ``path``; raise StoreError if we cannot.

        ``decode_workers``: processes that check records for big ``ingest_wire`` batches
        (0 = check on the calling thread; default: one per CPU, at most 4, none on one CPU).
        """
        path = Path(path)
        workers = decode_workers
        if workers is None:
            cpus = os.cpu_count() or 1
            workers = 0 if cpus == 1 else min(MAX_DECODE_WORKERS, cpus)
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {path}: {exc}") from None
        try:
            _prepare(db, path)
        except BaseException:
            db.close()
            raise
        return cls(path, db, workers)

    def close(self) -> None:
        with self._lock:
            self._stop_workers()
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def decode_workers(self) -> int:
        """How many processes check big ``ingest_wire`` batches (0: the calling thread does)."""
        return self._decode_workers

    @property
    def schema_version(self) -> int:
        with self._lock:
            return schema.user_version(self._db_or_raise())

    def _db_or_raise(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the store is closed")
        return self._db

    def _max_rowid(self) -> int:
        row = self._db_or_raise().execute("SELECT max(rowid) FROM records").fetchone()
        return int(row[0] or 0)

    # --- transactions ---------------------------------------------------------------------

    def _write(self, work: Any) -> Any:
        """Run ``work()`` in one write transaction; on any error nothing of it is kept."""
        db = self._db_or_raise()
        try:
            db.execute("BEGIN IMMEDIATE")
            result = work()
            db.execute("COMMIT")
            return result
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._next_rowid = self._max_rowid() + 1
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"the store could not save the change: {exc}") from exc
            raise

    # --- ingest ---------------------------------------------------------------------------

    def ingest(self, records: Iterable[Record]) -> IngestResult:
        """Store decoded, verified records in one transaction (see the module docstring)."""
        return self._ingest(_chunks(records, CHUNK_RECORDS))

    def ingest_wire(self, wires: Iterable[bytes], *, now: int | None) -> IngestResult:
        """Decode, check and store wire bytes in one transaction; bad ones are counted by reason.

        ``now`` (ms) enables the clock check for records from the network. When there is more
        than one chunk of wires, worker processes check them while this thread writes.
        """
        with self._lock:
            chunks = _chunks(wires, CHUNK_RECORDS)
            first = next(chunks, [])
            if self._decode_workers == 0 or len(first) < CHUNK_RECORDS:
                rest = (_decode_chunk(chunk, now) for chunk in chain([first], chunks))
                return self._ingest(rest)
            pool = self.start_workers()
            window = self._decode_workers + 1
            decoded = _pipelined(pool, chain([first], chunks), now, window)
            try:
                return self._ingest(decoded)
            except BrokenProcessPool:
                self._stop_workers()
                raise StoreError(
                    "a record-checking worker process died; nothing was stored"
                ) from None
            finally:
                decoded.close()

    def start_workers(self) -> ProcessPoolExecutor:
        """Start the record-checking processes now (a node does at start-up; ~0.1-0.3 s)."""
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max(1, self._decode_workers),
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker,
                )
                # Spawn them now rather than on the first big batch.
                started = [
                    self._pool.submit(_check_chunk, [], None) for _ in range(self._decode_workers)
                ]
                for future in started:
                    future.result()
            return self._pool

    def _stop_workers(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _ingest(self, chunks: Iterable[Sequence[Decoded]]) -> IngestResult:
        with self._lock:
            batch = _Ingest(self)

            def work() -> IngestResult:
                for chunk in chunks:
                    batch.chunk(chunk)
                return batch.finish()

            result: IngestResult = self._write(work)
            return result

    # --- removing -------------------------------------------------------------------------

    def _delete_rows(self, rowids: Iterable[int], touched_roots: set[bytes]) -> list[bytes]:
        """Delete records, every repost embedding them, and their derived rows; return the ids.

        Runs inside the caller's transaction; the roots these records referred to are added to
        ``touched_roots`` for :meth:`_forget_orphans`.
        """
        db = self._db_or_raise()
        queue = list(rowids)
        done: set[int] = set()
        removed: list[bytes] = []
        while queue:
            rowid = queue.pop()
            if rowid in done:
                continue
            done.add(rowid)
            row = db.execute("SELECT wire FROM records WHERE rowid = ?", (rowid,)).fetchone()
            if row is None:
                continue
            record = decode_record(row[0], verify=False)
            embedders = db.execute("SELECT record FROM embeds WHERE original = ?", (record.id,))
            queue.extend(r[0] for r in embedders)
            fts = fts_fields(record)
            if fts is not None:
                db.execute(
                    "INSERT INTO records_fts (records_fts, rowid, title, body, tags)"
                    " VALUES ('delete', ?, ?, ?, ?)",
                    (rowid, *fts),
                )
            touched_roots.update(
                r[0] for r in db.execute("SELECT root FROM doc_refs WHERE record = ?", (rowid,))
            )
            for table in ("doc_refs", "follows", "embeds", "rec_subjects"):
                db.execute(f"DELETE FROM {table} WHERE record = ?", (rowid,))
            db.execute("DELETE FROM records WHERE rowid = ?", (rowid,))
            removed.append(record.id)
        return removed

    def _forget_orphans(self, roots: Iterable[bytes]) -> list[bytes]:
        """Roots no record refers to and we did not pin: forget them and return them."""
        db = self._db_or_raise()
        orphans = []
        for root in sorted(roots):
            referenced = db.execute(
                "SELECT 1 FROM doc_refs WHERE root_key = ? AND root = ? LIMIT 1",
                (key64(root), root),
            )
            if referenced.fetchone():
                continue
            pinned = db.execute("SELECT pinned FROM documents WHERE root = ?", (root,)).fetchone()
            if pinned is not None and pinned[0]:
                continue
            db.execute("DELETE FROM documents WHERE root = ?", (root,))
            orphans.append(root)
        return orphans

    def delete_record(self, record_id: bytes) -> list[bytes]:
        """Forget a record locally (and the reposts embedding it); return orphaned roots.

        No tombstone is kept: the record can arrive again. Use a retract or a block for "never".
        """
        with self._lock:

            def work() -> list[bytes]:
                row = self._db_or_raise().execute(
                    "SELECT rowid FROM records WHERE id_key = ? AND id = ?",
                    (key64(record_id), record_id),
                )
                touched: set[bytes] = set()
                self._delete_rows([r[0] for r in row], touched)
                return self._forget_orphans(touched)

            result: list[bytes] = self._write(work)
            return result

    # --- blocking -------------------------------------------------------------------------

    def block(self, key: bytes) -> list[bytes]:
        """Block an author locally: purge their records and reposts of them; return orphaned roots.

        From now on their records, and reposts embedding them, are refused with Reason.BLOCKED.
        """
        with self._lock:
            db = self._db_or_raise()

            def work() -> list[bytes]:
                db.execute(
                    "INSERT OR IGNORE INTO blocks (author, blocked_ms) VALUES (?, ?)",
                    (key, now_ms()),
                )
                rowids = [
                    r[0] for r in db.execute("SELECT rowid FROM records WHERE author = ?", (key,))
                ]
                rowids += [
                    r[0]
                    for r in db.execute(
                        "SELECT record FROM embeds WHERE original_author = ?", (key,)
                    )
                ]
                touched: set[bytes] = set()
                self._delete_rows(rowids, touched)
                return self._forget_orphans(touched)

            orphans: list[bytes] = self._write(work)
            self._blocked.add(key)
            return orphans

    def unblock(self, key: bytes) -> None:
        """Accept the author's records again (the purged ones come back only if sent again)."""
        with self._lock:
            self._write(
                lambda: self._db_or_raise().execute("DELETE FROM blocks WHERE author = ?", (key,))
            )
            self._blocked.discard(key)

    def is_blocked(self, key: bytes) -> bool:
        with self._lock:
            return key in self._blocked

    def blocked(self) -> list[bytes]:
        with self._lock:
            return sorted(self._blocked)

    # --- reading records ------------------------------------------------------------------

    def _records(self, sql: str, params: Sequence[Any] = ()) -> list[Record]:
        """Rows whose first column is a wire, decoded without re-checking the signature."""
        with self._lock:
            rows = self._db_or_raise().execute(sql, params).fetchall()
        return [decode_record(row[0], verify=False) for row in rows]

    def get(self, record_id: bytes) -> Record | None:
        wire = self.get_wire(record_id)
        return None if wire is None else decode_record(wire, verify=False)

    def get_wire(self, record_id: bytes) -> bytes | None:
        """The exact stored bytes, for forwarding without decoding."""
        with self._lock:
            row = (
                self._db_or_raise()
                .execute(
                    "SELECT wire FROM records WHERE id_key = ? AND id = ?",
                    (key64(record_id), record_id),
                )
                .fetchone()
            )
        return None if row is None else bytes(row[0])

    def get_wires(self, record_ids: Iterable[bytes]) -> dict[bytes, bytes]:
        """Stored bytes of those ids we hold (for serving sync requests in batches)."""
        out: dict[bytes, bytes] = {}
        with self._lock:
            db = self._db_or_raise()
            for chunk in _chunks(record_ids, CHUNK_RECORDS):
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT id, wire FROM records WHERE id_key IN ({marks})",
                    [key64(i) for i in chunk],
                )
                wanted = set(chunk)
                out.update((bytes(i), bytes(w)) for i, w in rows if i in wanted)
        return out

    def has(self, record_id: bytes) -> bool:
        with self._lock:
            return (
                self._db_or_raise()
                .execute(
                    "SELECT 1 FROM records WHERE id_key = ? AND id = ?",
                    (key64(record_id), record_id),
                )
                .fetchone()
                is not None
            )

    def resolve_prefix(self, prefix: str, *, limit: int | None = None) -> list[bytes]:
        """Ids whose base32 form (``keys.format_id``) starts with ``prefix``, in id order."""
        bounds = id_prefix_range(prefix)
        if bounds is None:
            return []
        lo, hi = bounds
        sql = "SELECT id FROM records WHERE id_key >= ? AND id_key <= ? AND id >= ?"
        params: list[Any] = [key64(lo), _MAX_KEY if hi is None else key64(hi), lo]
        if hi is not None:
            sql += " AND id < ?"
            params.append(hi)
        params.append(-1 if limit is None else limit)
        with self._lock:
            rows = self._db_or_raise().execute(sql + " ORDER BY id_key, id LIMIT ?", params)
            return [bytes(row[0]) for row in rows]

    def list_records(
        self,
        *,
        kind: str | None = None,
        community: str | None = None,
        author: bytes | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Record]:
        """Records matching every given filter, newest first by (created_ms, id)."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("kind", kind), ("community", community), ("author", author)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        params += [-1 if limit is None else limit, offset]
        return self._records(
            f"SELECT wire FROM records {clause} ORDER BY created_ms DESC, id DESC LIMIT ? OFFSET ?",
            params,
        )

    # --- the feed ---------------------------------------------------------------------------

    def trust_tiers(self, me: bytes) -> list[set[bytes]]:
        """Authors by trust distance: [{me}, whom I follow, whom they follow]. The second hop
        holds at most FEED_MAX_SECOND_HOP authors (the first ones in key order)."""
        first = self.following(me) - {me}
        second: set[bytes] = set()
        for author in sorted(first):
            second |= self.following(author)
            if len(second) > FEED_MAX_SECOND_HOP:
                break
        second -= first | {me}
        return [{me}, first, set(sorted(second)[:FEED_MAX_SECOND_HOP])]

    def feed(
        self,
        me: bytes,
        *,
        limit: int,
        offset: int = 0,
        upto: int | None = None,
        count: bool = True,
    ) -> FeedPage:
        """Documents, recommendations and reposts, nearest in trust first, then newest.

        Trust distance: 0 for ``me``, 1 for whom I follow, 2 for whom they follow, 3 for
        everyone else (see ``trust_tiers``); within a distance, newest first (equal times: the
        last to arrive first). ``upto`` pins the snapshot: only records stored up to that point
        (rowids grow as records arrive), so paging through a feed that grows meanwhile neither
        repeats nor skips; a page answers with the snapshot it used. ``count=False`` skips
        counting the whole feed (``total`` is then None): later pages of a snapshot need not.

        Each distance is one query on an index (authors' for distances 0-2, time for the rest)
        and the sizes of the nearer distances map ``offset`` to one of them, so a page costs
        ~1 ms near the top and ~50 ms at the far end of 100k records, where sorting the whole
        table for each page cost 250-550 ms.
        """
        tiers = self.trust_tiers(me)
        trusted = set().union(*tiers)
        kinds = ",".join(f"'{k}'" for k in FEED_KINDS)
        # ``+rowid``: a bound, never the index to scan (that would read the whole table).
        scope = f"kind IN ({kinds}) AND +rowid <= ?"
        with self._lock:
            db = self._db_or_raise()
            if upto is None:
                upto = int(db.execute("SELECT coalesce(max(rowid), 0) FROM records").fetchone()[0])
            total = None
            if count:
                sql = f"SELECT count(*) FROM records WHERE {scope}"
                total = int(db.execute(sql, (upto,)).fetchone()[0])
            items: list[tuple[bytes, int]] = []
            skip = offset
            for distance, authors in enumerate([*tiers, trusted]):
                if len(items) >= limit:
                    break
                marks = ",".join("?" * len(authors))
                where = f"author {'NOT IN' if distance == STRANGER else 'IN'} ({marks}) AND {scope}"
                params: list[Any] = [*sorted(authors), upto]
                if distance < 3:
                    if not authors:
                        continue
                    size = db.execute(f"SELECT count(*) FROM records WHERE {where}", params)
                    tier_size = int(size.fetchone()[0])
                    if skip >= tier_size:
                        skip -= tier_size
                        continue
                # Sort (created_ms, rowid) from the covering index, then read only the page's
                # wires: sorting whole rows of a prolific author took 40 ms, this takes 1-5.
                rows = db.execute(
                    "SELECT r.wire FROM (SELECT rowid AS k, created_ms AS t FROM records"
                    f" WHERE {where} ORDER BY created_ms DESC, rowid DESC LIMIT ? OFFSET ?) p"
                    " JOIN records r ON r.rowid = p.k ORDER BY p.t DESC, p.k DESC",
                    [*params, limit - len(items), skip],
                )
                items += [(bytes(row[0]), distance) for row in rows]
                skip = 0
        page = [(decode_record(wire, verify=False), d) for wire, d in items]
        return FeedPage(page, total, upto)

    def recommenders(
        self, authors: Iterable[bytes], subjects: Iterable[bytes]
    ) -> dict[bytes, list[Record]]:
        """For each subject record id, the recommendations of it by any of ``authors``, newest
        first. Reads the subjects' index entries, so the cost follows how often these records
        were recommended, not how much the authors recommend."""
        chosen = set(authors)
        wanted = sorted(set(subjects))
        out: dict[bytes, list[Record]] = {}
        if not wanted or not chosen:
            return out
        with self._lock:
            db = self._db_or_raise()
            found: list[tuple[bytes, bytes]] = []
            for chunk in _chunks(wanted, CHUNK_RECORDS):
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    "SELECT s.subject, s.author, r.wire FROM rec_subjects s"
                    f" JOIN records r ON r.rowid = s.record WHERE s.subject IN ({marks})",
                    chunk,
                )
                found += [(bytes(s), bytes(w)) for s, a, w in rows if bytes(a) in chosen]
        for subject, wire in found:
            out.setdefault(subject, []).append(decode_record(wire, verify=False))
        for records in out.values():
            records.sort(key=lambda r: (r.created_ms, r.id), reverse=True)
        return out

    def vouchers(
        self, authors: Iterable[bytes], subjects: Iterable[bytes]
    ) -> dict[bytes, set[bytes]]:
        """For each subject record id, which of ``authors`` recommend it (the index alone: no
        record is read, for the feed's "recommended by N you follow")."""
        chosen = set(authors)
        out: dict[bytes, set[bytes]] = {}
        if not chosen:
            return out
        with self._lock:
            db = self._db_or_raise()
            for chunk in _chunks(sorted(set(subjects)), CHUNK_RECORDS):
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT subject, author FROM rec_subjects WHERE subject IN ({marks})"
                for subject, author in db.execute(sql, chunk):
                    if bytes(author) in chosen:
                        out.setdefault(bytes(subject), set()).add(bytes(author))
        return out

    def reposts_of(self, record_id: bytes) -> list[Record]:
        """Every stored repost that embeds this record (at any depth), newest first."""
        return self._records(
            "SELECT r.wire FROM embeds e JOIN records r ON r.rowid = e.record"
            " WHERE e.original = ? ORDER BY r.created_ms DESC, r.id DESC",
            (record_id,),
        )

    def search(self, query: str, *, limit: int = 50) -> list[Record]:
        """Full-text search over titles, descriptions, tags, texts, notes and profile names.

        Any text is a valid query: terms are quoted, all must match, the last matches as a prefix.
        """
        match = fts_query(query)
        if not match:
            return []
        return self._records(
            "SELECT r.wire FROM records_fts f JOIN records r ON r.rowid = f.rowid"
            " WHERE records_fts MATCH ? ORDER BY f.rank, r.created_ms DESC LIMIT ?",
            (match, limit),
        )

    def count(self, kind: str | None = None) -> int:
        with self._lock:
            db = self._db_or_raise()
            if kind is None:
                row = db.execute("SELECT count(*) FROM records").fetchone()
            else:
                row = db.execute("SELECT count(*) FROM records WHERE kind = ?", (kind,)).fetchone()
            return int(row[0])

    def count_by_author(self, author: bytes) -> int:
        with self._lock:
            sql = "SELECT count(*) FROM records WHERE author = ?"
            return int(self._db_or_raise().execute(sql, (author,)).fetchone()[0])

    def is_retracted(self, record_id: bytes) -> bool:
        """A retract naming this id is stored and no record with this id is.

        Until the record itself arrives we cannot know whether the retract is by its author.
        """
        with self._lock:
            db = self._db_or_raise()
            tomb = db.execute("SELECT 1 FROM tombstones WHERE target = ? LIMIT 1", (record_id,))
            return tomb.fetchone() is not None and not self.has(record_id)

    # --- profiles and follows -------------------------------------------------------------

    def profile(self, author: bytes) -> dict[str, Any] | None:
        """The body of the author's latest profile (by created_ms, then id)."""
        records = self._records(
            "SELECT wire FROM records WHERE author = ? AND kind = ?"
            " ORDER BY created_ms DESC, id DESC LIMIT 1",
            (author, PROFILE),
        )
        return dict(records[0].body) if records else None

    def following(self, follower: bytes) -> set[bytes]:
        """Whom ``follower`` follows: the latest follow/unfollow per target wins."""
        return self._latest_follows("follower", "target", follower)

    def followers(self, target: bytes) -> set[bytes]:
        return self._latest_follows("target", "follower", target)

    def _latest_follows(self, by: str, other: str, key: bytes) -> set[bytes]:
        with self._lock:
            rows = self._db_or_raise().execute(
                f"SELECT {other} FROM (SELECT {other}, active, row_number() OVER"
                f" (PARTITION BY {other} ORDER BY created_ms DESC, id DESC) AS n"
                f" FROM follows WHERE {by} = ?) WHERE n = 1 AND active",
                (key,),
            )
            return {bytes(row[0]) for row in rows}

    # --- documents ------------------------------------------------------------------------

    def add_document(self, root: bytes, size: int, chunk_size: int, *, pinned: bool) -> None:
        """Note a document we hold or fetch. Adding it again can pin it, never unpin it."""
        with self._lock:
            db = self._db_or_raise()
            self._write(
                lambda: db.execute(
                    "INSERT INTO documents (root, size, chunk_size, pinned, state, added_ms)"
                    " VALUES (?, ?, ?, ?, 'missing', ?) ON CONFLICT (root) DO UPDATE"
                    " SET pinned = max(pinned, excluded.pinned)",
                    (root, size, chunk_size, int(pinned), now_ms()),
                )
            )

    def document(self, root: bytes) -> dict[str, Any] | None:
        with self._lock:
            row = (
                self._db_or_raise()
                .execute(
                    "SELECT root, size, chunk_size, pinned, state, added_ms FROM documents"
                    " WHERE root = ?",
                    (root,),
                )
                .fetchone()
            )
        return None if row is None else _document(row)

    def documents(self, *, state: str | None = None) -> list[dict[str, Any]]:
        """Every document we know of (optionally in one state), oldest first."""
        sql = "SELECT root, size, chunk_size, pinned, state, added_ms FROM documents"
        params: tuple[Any, ...] = ()
        if state is not None:
            sql += " WHERE state = ?"
            params = (state,)
        with self._lock:
            rows = self._db_or_raise().execute(sql + " ORDER BY added_ms, root", params).fetchall()
        return [_document(row) for row in rows]

    def set_document_state(self, root: bytes, state: str) -> None:
        if state not in DOCUMENT_STATES:
            raise StoreError(f"{state!r} is not a document state ({', '.join(DOCUMENT_STATES)})")
        with self._lock:
            db = self._db_or_raise()
            cursor = self._write(
                lambda: db.execute("UPDATE documents SET state = ? WHERE root = ?", (state, root))
            )
            if cursor.rowcount == 0:
                raise StoreError(f"no document {root.hex()[:16]} in the store; add it first")

    def remove_document(self, root: bytes) -> None:
        """Forget a document row (the records describing it stay)."""
        with self._lock:
            db = self._db_or_raise()
            self._write(lambda: db.execute("DELETE FROM documents WHERE root = ?", (root,)))

    def doc_records(self, root: bytes) -> list[Record]:
        """The doc records (and reposts of them) that describe this root, newest first."""
        return self._records(
            "SELECT r.wire FROM doc_refs d JOIN records r ON r.rowid = d.record"
            " WHERE d.root_key = ? AND d.root = ? ORDER BY r.created_ms DESC, r.id DESC",
            (key64(root), root),
        )

    # --- sync -----------------------------------------------------------------------------

    def range_items(
        self,
        community: str,
        lo: tuple[int, bytes] | None,
        hi: tuple[int, bytes] | None,
        limit: int | None = None,
    ) -> list[tuple[int, bytes]]:
        """(created_ms, id) of the community's records with lo <= item < hi, in that order.

        ``None`` bounds are open. Ids compare as bytes, as in the sync protocol.
        """
        sql = "SELECT created_ms, id FROM records WHERE community = ?"
        params: list[Any] = [community]
        if lo is not None:
            sql += " AND (created_ms, id) >= (?, ?)"
            params += [lo[0], lo[1]]
        if hi is not None:
            sql += " AND (created_ms, id) < (?, ?)"
            params += [hi[0], hi[1]]
        sql += " ORDER BY created_ms, id LIMIT ?"
        params.append(-1 if limit is None else limit)
        with self._lock:
            rows = self._db_or_raise().execute(sql, params)
            return [(int(t), bytes(i)) for t, i in rows]


def _document(row: Sequence[Any]) -> dict[str, Any]:
    root, size, chunk_size, pinned, state, added_ms = row
    return {
        "root": bytes(root),
        "size": size,
        "chunk_size": chunk_size,
        "pinned": bool(pinned),
        "state": state,
        "added_ms": added_ms,
    }


def _prepare(db: sqlite3.Connection, path: Path) -> None:
    """Check the file is ours and current (migrating it if older), then set the PRAGMAs."""
    try:
        application_id = int(db.execute("PRAGMA application_id").fetchone()[0])
        version = schema.user_version(db)
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.DatabaseError:
        raise StoreError(f"{path} is not a p2pshare store (not an SQLite database)") from None
    if application_id not in (0, schema.APPLICATION_ID) or (version == 0 and tables):
        raise StoreError(f"{path} is an SQLite database but not a p2pshare store")
    if version > schema.current_version():
        raise StoreError(
            f"{path} was written by a newer p2pshare (store version {version}; this one reads up "
            f"to {schema.current_version()}): upgrade p2pshare to open it"
        )
    try:
        for pragma in _PRAGMAS:
            db.execute(pragma)
        schema.migrate(db)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot prepare the store {path}: {exc}") from None
