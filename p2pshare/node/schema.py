"""The record store's SQLite schema and its forward migrations.

``PRAGMA user_version`` holds the schema version. ``MIGRATIONS[i]`` takes a store from version ``i``
to ``i + 1``; each step runs in its own transaction together with the version bump, so a crash
mid-migration leaves the store at the last completed version and the next open carries on. We never
migrate backwards: a store written by a newer p2pshare is refused with a clear message.

Notes for whoever adds a step:
- Append, never edit a released step: stores in the wild already ran it.
- ``records_fts`` is contentless: rows are deleted by re-supplying the exact values that were
  indexed (see ``store.fts_fields``). A step that changes what is indexed must rebuild the index
  (``INSERT INTO records_fts(records_fts) VALUES('delete-all')`` and re-insert from ``records``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from p2pshare.protocol.records import REC, SUBJECT_RECORD, Record, decode_record

# 'P2PS': marks the file as ours, so we can refuse someone else's SQLite database.
APPLICATION_ID = 0x50325053

Migration = Callable[[sqlite3.Connection], None]

_V1 = (
    # One row per stored record. ``id`` is the SHA-256 of ``wire``. It is found through ``id_key``,
    # its first 8 bytes as an order-preserving int64 (``store.key64``): ids are random, so every
    # commit dirties pages all over an index of them, and a 3x smaller index is ~3x fewer pages to
    # write. The key is not unique (a collision is harmless: lookups compare the full id; the
    # ingest path keeps ids unique). A base32 prefix a person types is a range of ids, so the same
    # index serves it. ``rowid`` ties the derived tables and the full-text index to a record.
    """CREATE TABLE records (
        rowid INTEGER PRIMARY KEY,
        id_key INTEGER NOT NULL,
        id BLOB NOT NULL,
        kind TEXT NOT NULL,
        author BLOB NOT NULL,
        created_ms INTEGER NOT NULL,
        community TEXT NOT NULL,
        wire BLOB NOT NULL
    )""",
    "CREATE INDEX records_by_id ON records (id_key)",
    # Sync walks (created_ms, id) per community; listings are newest first in the same order.
    # Every index costs a few us per ingested record, so there are only these.
    "CREATE INDEX records_by_community ON records (community, created_ms, id)",
    "CREATE INDEX records_by_author ON records (author, kind, created_ms)",
    # The unfiltered newest-first feed: 340 ms without it at 100k records, ~1 ms with it, and it
    # is nearly append-only (new records are recent), so it costs little at ingest.
    "CREATE INDEX records_by_time ON records (created_ms)",
    # follow / unfollow events; the latest per (follower, target) wins.
    """CREATE TABLE follows (
        record INTEGER PRIMARY KEY,
        follower BLOB NOT NULL,
        target BLOB NOT NULL,
        created_ms INTEGER NOT NULL,
        id BLOB NOT NULL,
        active INTEGER NOT NULL
    )""",
    "CREATE INDEX follows_by_follower ON follows (follower, target)",
    "CREATE INDEX follows_by_target ON follows (target, follower)",
    # Which records point at which document root (doc records and reposts of them).
    # (roots are random too: found by root_key, as records by id_key)
    """CREATE TABLE doc_refs (
        record INTEGER PRIMARY KEY,
        root_key INTEGER NOT NULL,
        root BLOB NOT NULL
    )""",
    "CREATE INDEX doc_refs_by_root ON doc_refs (root_key)",
    # For every repost, each record it embeds (at any depth): dropping a record drops its reposts.
    """CREATE TABLE embeds (
        original BLOB NOT NULL,
        record INTEGER NOT NULL,
        original_author BLOB NOT NULL,
        PRIMARY KEY (original, record)
    ) WITHOUT ROWID""",
    "CREATE INDEX embeds_by_record ON embeds (record)",
    "CREATE INDEX embeds_by_author ON embeds (original_author)",
    # A retract's target, kept after the target is gone so it is not stored again.
    """CREATE TABLE tombstones (
        target BLOB NOT NULL,
        author BLOB NOT NULL,
        retract BLOB NOT NULL,
        PRIMARY KEY (target, author)
    ) WITHOUT ROWID""",
    "CREATE TABLE blocks (author BLOB PRIMARY KEY, blocked_ms INTEGER NOT NULL) WITHOUT ROWID",
    """CREATE TABLE documents (
        root BLOB PRIMARY KEY,
        size INTEGER NOT NULL,
        chunk_size INTEGER NOT NULL,
        pinned INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('missing', 'partial', 'complete')),
        added_ms INTEGER NOT NULL
    ) WITHOUT ROWID""",
    # Contentless: the text lives in the records' wire bytes already; we only need the index.
    """CREATE VIRTUAL TABLE records_fts USING fts5 (
        title, body, tags,
        content = '',
        tokenize = 'unicode61 remove_diacritics 2'
    )""",
)


def _statements(statements: Sequence[str]) -> Migration:
    def step(db: sqlite3.Connection) -> None:
        for statement in statements:
            db.execute(statement)

    return step


_V2 = (
    # What each recommendation of a record is about, so "who recommends this" reads a few index
    # entries instead of every recommendation by the people one trusts.
    """CREATE TABLE rec_subjects (
        record INTEGER PRIMARY KEY,
        subject BLOB NOT NULL,
        author BLOB NOT NULL
    )""",
    "CREATE INDEX rec_subjects_by_subject ON rec_subjects (subject, author)",
)


def _v2(db: sqlite3.Connection) -> None:
    _statements(_V2)(db)
    rows = db.execute("SELECT rowid, wire FROM records WHERE kind = ?", (REC,))
    for rowid, wire in rows.fetchall():
        entry = rec_subject_row(rowid, decode_record(wire, verify=False))
        if entry is not None:
            db.execute("INSERT INTO rec_subjects VALUES (?, ?, ?)", entry)


def rec_subject_row(rowid: int, record: Record) -> tuple[int, bytes, bytes] | None:
    """The ``rec_subjects`` row of a recommendation of a record (None for anything else)."""
    if record.kind != REC or record.body.get("subject_type") != SUBJECT_RECORD:
        return None
    return (rowid, record.body["subject"], record.author)


MIGRATIONS: list[Migration] = [_statements(_V1), _v2]


def current_version() -> int:
    return len(MIGRATIONS)


def user_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, *, target: int | None = None) -> int:
    """Run every step from the store's version up to ``target`` (default: current); return it.

    ``db`` must be in autocommit mode (``isolation_level=None``): each step is its own transaction.
    """
    goal = current_version() if target is None else target
    version = user_version(db)
    while version < goal:
        db.execute("BEGIN IMMEDIATE")
        try:
            if version == 0:
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            MIGRATIONS[version](db)
            db.execute(f"PRAGMA user_version = {version + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        version += 1
    return version
