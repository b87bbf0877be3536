"""The record store: stored once, retracts and blocks that stick, search that cannot break, and a
file that survives crashes, errors mid-batch and version changes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from p2pshare.node import schema
from p2pshare.node import store as store_module
from p2pshare.node.store import (
    CHUNK_RECORDS,
    Store,
    StoreError,
    fts_query,
    id_prefix_range,
    rebuild_record,
)
from p2pshare.protocol import canonical
from p2pshare.protocol.keys import format_id
from p2pshare.protocol.reasons import Reason
from p2pshare.protocol.records import (
    SIGNATURE_DOMAIN,
    Record,
    create_record,
    decode_record,
    repost_chain,
    unsigned_bytes,
)

T0 = 1_700_000_000_000
ALICE = SigningKey(bytes([1]) * 32)
BOB = SigningKey(bytes([2]) * 32)
CAROL = SigningKey(bytes([3]) * 32)


def pub(key: SigningKey) -> bytes:
    return bytes(key.verify_key)


def doc(
    key: SigningKey = ALICE,
    *,
    title: str = "Sourdough guide",
    t: int = T0,
    root: bytes = b"r" * 32,
    licence: str = "CC-BY-4.0",
    community: str = "public",
    **extra: Any,
) -> Record:
    body = {
        "title": title,
        "licence": licence,
        "mime": "application/pdf",
        "filename": "guide.pdf",
        "size": 1000,
        "root": root,
        "chunk_size": 262_144,
        **extra,
    }
    return create_record(key, "doc", body, community=community, created_ms=t)


def rec(
    key: SigningKey = ALICE, text: str = "great bakery", *, t: int = T0, **extra: Any
) -> Record:
    body = {"subject_type": "thing", "subject": "the corner bakery", "text": text, **extra}
    return create_record(key, "rec", body, created_ms=t)


def repost(key: SigningKey, original: Record, *, t: int = T0 + 1, note: str = "") -> Record:
    body: dict[str, Any] = {"original": original.wire}
    if note:
        body["note"] = note
    return create_record(key, "repost", body, created_ms=t)


def retract(key: SigningKey, target: Record | bytes, *, t: int = T0 + 2) -> Record:
    target_id = target.id if isinstance(target, Record) else target
    return create_record(key, "retract", {"target": target_id}, created_ms=t)


def profile(key: SigningKey, name: str, *, t: int = T0) -> Record:
    return create_record(key, "profile", {"name": name}, created_ms=t)


def follow(key: SigningKey, target: SigningKey, *, t: int = T0, kind: str = "follow") -> Record:
    return create_record(key, kind, {"target": pub(target)}, created_ms=t)


def many(n: int, key: SigningKey = ALICE, start: int = 0) -> list[Record]:
    return [rec(key, f"note number {i}", t=T0 + i) for i in range(start, start + n)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "store.sqlite", decode_workers=0) as opened:
        yield opened


def ids(records: list[Record]) -> list[bytes]:
    return [r.id for r in records]


# --- opening, schema, migrations ---------------------------------------------------------------


def test_new_store_is_wal_at_the_current_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with Store.open(path) as store:
        assert store.schema_version == schema.current_version()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == schema.current_version()
    assert db.execute("PRAGMA application_id").fetchone()[0] == schema.APPLICATION_ID
    db.close()


def test_records_survive_closing_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    records = [doc(), rec(), profile(BOB, "Bob's bikes")]
    with Store.open(path) as store:
        store.ingest(records)
        store.block(pub(CAROL))
    with Store.open(path) as store:
        assert [store.get(r.id) for r in records] == records
        assert store.is_blocked(pub(CAROL))
        assert store.search("sourdough") == [records[0]]


def test_older_store_is_migrated_forward_keeping_its_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store.sqlite"
    with Store.open(path) as store:
        store.ingest([doc()])
    version = schema.current_version()

    def add_notes_table(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE notes (text TEXT)")

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, add_notes_table])
    with Store.open(path) as store:
        assert store.schema_version == version + 1
        assert store.count() == 1
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM notes").fetchone() == (0,)
    db.close()


def test_each_migration_step_runs_from_the_version_the_store_is_at(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "store.sqlite", isolation_level=None)
    assert schema.migrate(db, target=0) == 0
    assert schema.user_version(db) == 0
    assert schema.migrate(db) == schema.current_version()
    assert "records" in {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    db.close()


def test_a_failing_migration_step_leaves_the_last_good_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store.sqlite"
    Store.open(path).close()
    version = schema.current_version()

    def broken(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half_done (x)")
        db.execute("THIS IS NOT SQL")

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, broken])
    with pytest.raises(StoreError, match="cannot prepare"):
        Store.open(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == version
    half_done = db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half_done'")
    assert half_done.fetchone() == (0,)
    db.close()


def test_a_store_from_a_newer_version_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    Store.open(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {schema.current_version() + 1}")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=r"newer p2pshare.*upgrade") as info:
        Store.open(path)
    assert "\n" not in str(info.value)


def test_a_file_that_is_not_a_database_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    path.write_bytes(b"this is a text file, not SQLite, and long enough to have a header" * 100)
    with pytest.raises(StoreError, match="not a p2pshare store"):
        Store.open(path)


def test_someone_elses_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE invoices (n INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a p2pshare store"):
        Store.open(path)


def test_a_store_in_a_missing_directory_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        Store.open(tmp_path / "no" / "such" / "dir" / "store.sqlite")


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "store.sqlite")
    store.close()
    store.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        store.count()


# --- ingest: once, in one transaction ------------------------------------------------------------


def test_ingested_records_read_back_exactly(store: Store) -> None:
    records = [doc(), rec(), profile(BOB, "Bob"), follow(BOB, ALICE)]
    result = store.ingest(records)
    assert result.added == records and result.duplicates == 0 and not result.rejected
    for record in records:
        assert store.has(record.id)
        got = store.get(record.id)
        assert got == record and got is not None and got.wire == record.wire
        assert store.get_wire(record.id) == record.wire
    assert store.get(b"\0" * 32) is None and not store.has(b"\0" * 32)
    assert store.get_wires([records[0].id, b"\0" * 32]) == {records[0].id: records[0].wire}
    assert store.count() == 4 and store.count("doc") == 1 and store.count("repost") == 0


def test_ingesting_the_same_batch_twice_changes_nothing(store: Store) -> None:
    records = [doc(), rec(), profile(BOB, "Bob")]
    store.ingest(records)
    again = store.ingest(records)
    assert again.added == [] and again.duplicates == 3
    assert store.count() == 3


def test_a_record_twice_in_one_batch_is_stored_once(store: Store) -> None:
    record = rec()
    result = store.ingest([record, record, record])
    assert result.added == [record] and result.duplicates == 2
    assert store.count() == 1


def test_ingest_wire_keeps_the_good_and_counts_the_bad_by_reason(store: Store) -> None:
    good = [rec(text=f"fine {i}", t=T0 + i) for i in range(3)]
    tampered = bytearray(rec(text="tampered").wire)
    tampered[-1] ^= 1
    future = rec(text="from the future", t=T0 + 3_600_000)
    wire = rec(text="padded").wire
    non_canonical = wire[:1] + b"\xcc\x01" + wire[2:]  # version 1 as uint8: not the minimal form
    wires = [
        good[0].wire,
        b"garbage",
        bytes(tampered),
        good[1].wire,
        future.wire,
        non_canonical,
        b"",
        good[2].wire,
    ]
    result = store.ingest_wire(wires, now=T0)
    assert result.added == good
    assert result.rejected == Counter(
        {
            Reason.TRAILING_BYTES: 1,
            Reason.MALFORMED: 1,
            Reason.BAD_SIGNATURE: 1,
            Reason.FROM_FUTURE: 1,
            Reason.NON_CANONICAL: 1,
        }
    )
    assert store.count() == 3


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_ingest_wire_never_raises_on_arbitrary_bytes(store: Store, wires: list[bytes]) -> None:
    result = store.ingest_wire([*wires, rec().wire], now=T0)
    assert sum(result.rejected.values()) + len(result.added) + result.duplicates == len(wires) + 1
    assert store.has(rec().id)


def forge(key: SigningKey, kind: str, body: dict[str, Any], t: int = T0) -> bytes:
    """Sign a body without create_record's checks, to build records it would refuse."""
    unsigned = unsigned_bytes(kind, pub(key), t, "public", body)
    sig = key.sign(SIGNATURE_DOMAIN + unsigned).signature
    return canonical.pack([1, kind, pub(key), t, "public", body, sig])


def flip_last_byte(wire: bytes) -> bytes:
    return wire[:-1] + bytes([wire[-1] ^ 1])


def test_worker_processes_give_the_same_result_as_the_calling_thread(tmp_path: Path) -> None:
    records = many(CHUNK_RECORDS * 2 + 17)
    wires = [r.wire for r in records]
    wires[5] = flip_last_byte(wires[5])  # bad signature
    wires.insert(300, b"\x93junk")
    wires.append(repost(BOB, records[0], note="pass it on").wire)
    wires.append(forge(BOB, "repost", {"original": flip_last_byte(records[1].wire)}))
    wires.append(flip_last_byte(repost(CAROL, records[2]).wire))
    wires.append(forge(CAROL, "repost", {"original": forge(BOB, "repost", {"original": b"x"})}))
    with (
        Store.open(tmp_path / "a.sqlite", decode_workers=1) as pooled,
        Store.open(tmp_path / "b.sqlite", decode_workers=0) as inline,
    ):
        got = pooled.ingest_wire(wires, now=T0)
        want = inline.ingest_wire(wires, now=T0)
        assert pooled.decode_workers == 1 and pooled._pool is not None
        assert got.added == want.added and got.rejected == want.rejected
        assert [r.original for r in got.added] == [r.original for r in want.added]
        assert got.rejected == Counter(
            {Reason.BAD_SIGNATURE: 2, Reason.TRAILING_BYTES: 1, Reason.BAD_REPOST: 2}
        )
        assert pooled.count() == inline.count() == len(records)  # records[5] was the bad one


@pytest.mark.parametrize(
    "record",
    [
        doc(tags=["bread", "rye"], authors=["A. Baker"], description="crust"),
        rec(rating=5, tags=["x"]),
        profile(BOB, "Bob"),
        follow(BOB, ALICE),
        retract(ALICE, b"x" * 32),
        repost(CAROL, repost(BOB, doc(), note="n1"), note="n2"),
    ],
    ids=lambda r: r.kind,
)
def test_rebuilding_an_accepted_record_equals_decoding_it(record: Record) -> None:
    rebuilt = rebuild_record(record.wire)
    decoded = decode_record(record.wire)
    assert rebuilt == decoded and rebuilt.id == decoded.id
    assert rebuilt.body == decoded.body
    assert [m.body for m in repost_chain(rebuilt)] == [m.body for m in repost_chain(decoded)]
    assert [m.id for m in repost_chain(rebuilt)] == [m.id for m in repost_chain(decoded)]


def test_a_database_error_mid_batch_stores_nothing_and_the_store_carries_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.sqlite"
    with Store.open(path, decode_workers=0) as store:
        other = sqlite3.connect(path)
        other.execute(
            "CREATE TRIGGER fail AFTER INSERT ON follows"
            " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
        other.commit()
        batch = [*many(CHUNK_RECORDS + 5), follow(ALICE, BOB), doc()]
        with pytest.raises(StoreError, match="disk on fire"):
            store.ingest(batch)
        assert store.count() == 0
        assert store.search("note") == []
        other.execute("DROP TRIGGER fail")
        other.commit()
        other.close()
        result = store.ingest(batch)
        assert len(result.added) == len(batch) and store.count() == len(batch)


def test_an_exception_from_the_input_mid_batch_stores_nothing(store: Store) -> None:
    def records() -> Iterator[Record]:
        yield from many(CHUNK_RECORDS * 2)  # two chunks are written before the failure
        raise RuntimeError("the peer went away")

    with pytest.raises(RuntimeError, match="went away"):
        store.ingest(records())
    assert store.count() == 0
    assert store.ingest(many(3)).added  # rowids handed out in the failed batch are reused safely
    assert store.count() == 3 and len(store.search("note")) == 3


CRASH_SCRIPT = """
import os, sys
from pathlib import Path
from nacl.signing import SigningKey
from p2pshare.node.store import Store
from p2pshare.protocol.records import create_record

key = SigningKey(bytes([9]) * 32)
def rec(i):
    body = {"subject_type": "thing", "subject": "x", "text": f"crash test {i}"}
    return create_record(key, "rec", body, created_ms=1_700_000_000_000 + i)

store = Store.open(Path(sys.argv[1]), decode_workers=0)
store.ingest([rec(i) for i in range(100)])
store._db.execute("PRAGMA cache_size = 8")  # so uncommitted pages spill into the WAL
def doomed():
    for i in range(100, 1000):
        yield rec(i)
    os._exit(3)  # dies inside the transaction, after several chunks were written
store.ingest(doomed())
"""


def test_a_crash_mid_ingest_leaves_a_store_that_opens_with_only_committed_batches(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.sqlite"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CRASH_SCRIPT), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr
    assert Path(str(path) + "-wal").exists()
    with Store.open(path) as store:
        assert store.count() == 100
        assert len(store.search("crash", limit=1000)) == 100
        assert store.ingest(many(5)).added
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.execute("INSERT INTO records_fts (records_fts) VALUES ('integrity-check')")  # raises if bad
    db.close()


def test_the_store_can_be_used_from_another_thread(store: Store) -> None:
    store.ingest([doc()])
    counts: list[int] = []
    worker = threading.Thread(target=lambda: counts.append(store.count()))
    worker.start()
    worker.join()
    assert counts == [1]


# --- reposts -------------------------------------------------------------------------------------


def test_a_repost_brings_the_records_it_embeds(store: Store) -> None:
    original = doc()
    inner = repost(BOB, original, note="worth reading")
    outer = repost(CAROL, inner, t=T0 + 5)
    result = store.ingest([outer])
    assert result.added == [original, inner, outer]
    assert all(store.has(r.id) for r in (original, inner, outer))
    assert store.search("worth") == [inner]
    assert ids(store.doc_records(b"r" * 32)) == [outer.id, inner.id, original.id]


def test_a_repost_of_a_record_we_hold_adds_only_the_repost(store: Store) -> None:
    original = doc()
    store.ingest([original])
    result = store.ingest([repost(BOB, original)])
    assert [r.kind for r in result.added] == ["repost"] and result.duplicates == 0


# --- retracts ------------------------------------------------------------------------------------


def test_a_retract_removes_its_target_and_reposts_of_it_and_is_kept(store: Store) -> None:
    target = doc(root=b"R" * 32)
    shared = repost(BOB, target, note="look")
    store.ingest([target, shared, rec()])
    withdrawal = retract(ALICE, target)
    result = store.ingest([withdrawal])
    assert result.added == [withdrawal]
    assert set(result.removed) == {target.id, shared.id}
    assert result.orphaned_roots == [b"R" * 32]
    assert not store.has(target.id) and not store.has(shared.id)
    assert store.has(withdrawal.id)
    assert store.search("sourdough") == [] and store.search("look") == []
    assert store.is_retracted(target.id)
    assert store.doc_records(b"R" * 32) == []


def test_a_retracted_record_arriving_again_is_dropped_and_so_is_a_repost_of_it(
    store: Store,
) -> None:
    target = doc()
    store.ingest([target, retract(ALICE, target)])
    result = store.ingest([target, repost(BOB, target, t=T0 + 9)])
    assert result.added == [] and result.rejected == Counter({Reason.RETRACTED: 2})
    wire_result = store.ingest_wire([target.wire], now=None)
    assert wire_result.rejected == Counter({Reason.RETRACTED: 1})


def test_a_retract_by_someone_else_is_refused_when_we_hold_the_target(store: Store) -> None:
    target = doc()
    store.ingest([target])
    result = store.ingest([retract(BOB, target)])
    assert result.rejected == Counter({Reason.NOT_AUTHOR: 1}) and not result.added
    assert store.has(target.id) and not store.is_retracted(target.id)


def test_a_retract_before_its_target_drops_the_target_from_the_same_author(store: Store) -> None:
    target = rec()
    early = retract(ALICE, target)
    assert store.ingest([early]).added == [early]
    assert store.is_retracted(target.id)
    result = store.ingest([target])
    assert result.rejected == Counter({Reason.RETRACTED: 1})
    assert not store.has(target.id) and store.has(early.id)


def test_a_retract_before_its_target_does_not_apply_to_another_authors_record(
    store: Store,
) -> None:
    target = rec(ALICE)
    store.ingest([retract(BOB, target)])
    assert store.ingest([target]).added == [target]
    assert not store.is_retracted(target.id)
    assert store.ingest([retract(BOB, target, t=T0 + 7)]).rejected == Counter(
        {Reason.NOT_AUTHOR: 1}
    )


@pytest.mark.parametrize("retract_first", [False, True])
def test_a_record_and_its_retract_in_one_batch_leave_only_the_retract(
    store: Store, retract_first: bool
) -> None:
    target = doc()
    withdrawal = retract(ALICE, target)
    batch = [withdrawal, target] if retract_first else [target, withdrawal]
    store.ingest(batch)
    assert not store.has(target.id) and store.has(withdrawal.id)
    assert store.count() == 1 and store.search("sourdough") == []


def test_a_root_still_described_by_another_record_is_not_orphaned(store: Store) -> None:
    mine, theirs = doc(ALICE), doc(BOB, title="Same file, their words")
    store.ingest([mine, theirs])
    result = store.ingest([retract(ALICE, mine)])
    assert result.orphaned_roots == []
    assert ids(store.doc_records(b"r" * 32)) == [theirs.id]


def test_retracting_the_record_of_a_pinned_document_keeps_the_document(store: Store) -> None:
    target = doc()
    store.add_document(b"r" * 32, 1000, 262_144, pinned=True)
    store.ingest([target])
    result = store.ingest([retract(ALICE, target)])
    assert result.orphaned_roots == []
    document = store.document(b"r" * 32)
    assert document is not None and document["pinned"]


def test_an_orphaned_unpinned_document_is_forgotten(store: Store) -> None:
    target = doc()
    store.add_document(b"r" * 32, 1000, 262_144, pinned=False)
    store.ingest([target])
    assert store.ingest([retract(ALICE, target)]).orphaned_roots == [b"r" * 32]
    assert store.document(b"r" * 32) is None


def test_delete_record_forgets_locally_without_a_tombstone(store: Store) -> None:
    target = doc()
    store.ingest([target, repost(BOB, target)])
    assert store.delete_record(target.id) == [b"r" * 32]
    assert store.count() == 0
    assert store.ingest([target]).added == [target]


# --- profiles and follows ----------------------------------------------------------------------


def test_the_latest_profile_wins_whatever_the_arrival_order(store: Store) -> None:
    old, new = profile(BOB, "Bob", t=T0), profile(BOB, "Bob's Bikes", t=T0 + 10)
    store.ingest([new, old])
    assert store.profile(pub(BOB)) == {"name": "Bob's Bikes"}
    assert store.profile(pub(CAROL)) is None


def test_equal_timestamps_resolve_by_id(store: Store) -> None:
    a, b = profile(BOB, "A", t=T0), profile(BOB, "B", t=T0)
    store.ingest([a, b])
    assert store.profile(pub(BOB)) == dict(max(a, b, key=lambda r: r.id).body)


def test_the_latest_follow_or_unfollow_per_pair_wins(store: Store) -> None:
    store.ingest(
        [
            follow(ALICE, BOB, t=T0),
            follow(ALICE, BOB, t=T0 + 20, kind="unfollow"),
            follow(ALICE, CAROL, t=T0 + 20, kind="unfollow"),
            follow(ALICE, CAROL, t=T0 + 30),
            follow(BOB, CAROL, t=T0),
        ]
    )
    assert store.following(pub(ALICE)) == {pub(CAROL)}
    assert store.followers(pub(CAROL)) == {pub(ALICE), pub(BOB)}
    assert store.followers(pub(BOB)) == set()
    store.ingest([follow(ALICE, BOB, t=T0 + 40)])
    assert store.following(pub(ALICE)) == {pub(BOB), pub(CAROL)}


def test_retracting_an_unfollow_brings_back_the_follow(store: Store) -> None:
    unfollow = follow(ALICE, BOB, t=T0 + 5, kind="unfollow")
    store.ingest([follow(ALICE, BOB), unfollow])
    assert store.following(pub(ALICE)) == set()
    store.ingest([retract(ALICE, unfollow, t=T0 + 6)])
    assert store.following(pub(ALICE)) == {pub(BOB)}


# --- blocks --------------------------------------------------------------------------------------


def test_blocking_purges_the_author_and_reposts_of_them_and_refuses_them_later(
    store: Store,
) -> None:
    theirs = doc(BOB, root=b"B" * 32)
    shared = repost(ALICE, theirs)
    mine = rec(ALICE)
    store.ingest([theirs, shared, mine, profile(BOB, "Bob")])
    assert store.block(pub(BOB)) == [b"B" * 32]
    assert store.is_blocked(pub(BOB)) and store.blocked() == [pub(BOB)]
    assert ids(store.list_records()) == [mine.id]
    assert store.search("sourdough") == [] and store.profile(pub(BOB)) is None
    later = store.ingest([rec(BOB, t=T0 + 50), repost(CAROL, theirs), theirs])
    assert later.rejected == Counter({Reason.BLOCKED: 3}) and not later.added
    store.unblock(pub(BOB))
    assert not store.is_blocked(pub(BOB)) and store.blocked() == []
    assert store.ingest([theirs]).added == [theirs]


# --- reading -------------------------------------------------------------------------------------


def test_list_records_filters_and_is_newest_first(store: Store) -> None:
    records = [
        doc(ALICE, t=T0 + 1, community="bikes"),
        rec(ALICE, t=T0 + 3),
        rec(BOB, t=T0 + 2),
        profile(BOB, "Bob", t=T0 + 4),
    ]
    store.ingest(records)
    a_doc, a_rec, b_rec, b_profile = records
    assert ids(store.list_records()) == ids([b_profile, a_rec, b_rec, a_doc])
    assert ids(store.list_records(kind="rec")) == ids([a_rec, b_rec])
    assert ids(store.list_records(author=pub(BOB))) == ids([b_profile, b_rec])
    assert ids(store.list_records(community="bikes")) == ids([a_doc])
    assert ids(store.list_records(kind="rec", author=pub(ALICE))) == ids([a_rec])
    assert ids(store.list_records(limit=2, offset=1)) == ids([a_rec, b_rec])


def test_search_covers_titles_descriptions_tags_texts_notes_and_names(store: Store) -> None:
    records = {
        "title": doc(title="Wheel truing handbook", root=b"1" * 32),
        "description": doc(title="x", description="all about spokes", root=b"2" * 32),
        "tags": doc(title="y", tags=["derailleur"], root=b"3" * 32),
        "authors": doc(title="z", authors=["Sheldon Brown"], root=b"4" * 32),
        "rec text": rec(text="the best croissants in town"),
        "rec subject": rec(text="nice", t=T0 + 1),
        "note": repost(BOB, profile(CAROL, "Carol"), note="meet the cheesemonger"),
        "profile name": profile(BOB, "Bob's Bicycles"),
    }
    store.ingest(records.values())
    assert store.search("truing") == [records["title"]]
    assert store.search("spokes") == [records["description"]]
    assert store.search("derailleur") == [records["tags"]]
    assert store.search("sheldon") == [records["authors"]]
    assert store.search("croissants town") == [records["rec text"]]
    assert records["rec subject"] in store.search("corner bakery")
    assert store.search("cheesemonger") == [records["note"]]
    assert store.search("bicycles") == [records["profile name"]]


def test_search_matches_the_last_term_as_a_prefix_and_ignores_case_and_accents(
    store: Store,
) -> None:
    target = rec(text="Crème brûlée at the Café")
    store.ingest([target, rec(text="plain toast", t=T0 + 1)])
    assert store.search("creme brul") == [target]
    assert store.search("CAFE") == [target]
    assert store.search("cafe toast") == []
    assert store.search("") == [] and store.search("  !!! ") == []


def test_search_ranks_and_limits(store: Store) -> None:
    store.ingest(many(30))
    assert len(store.search("note", limit=7)) == 7


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=60))
def test_search_never_raises_whatever_is_typed(store: Store, query: str) -> None:
    store.ingest([rec(text='tricky "quotes" AND OR NOT NEAR( * ^ col:umn')])
    assert isinstance(store.search(query), list)


@pytest.mark.parametrize(
    "query",
    ['"', '""', "AND", "OR NOT", "NEAR(a b)", "title:x", "a*b", "^x", "-x", "(", "a\0b", "\udcff"],
)
def test_fts_syntax_in_queries_is_searched_as_text(store: Store, query: str) -> None:
    store.ingest([rec(text="and or not near title")])
    store.search(query)  # must not raise
    assert fts_query(query).count('"') % 2 == 0


def test_resolve_prefix_finds_ids_by_the_start_of_their_base32_form(store: Store) -> None:
    records = many(200)
    store.ingest(records)
    texts = {format_id(r.id): r.id for r in records}
    for text, record_id in list(texts.items())[:40]:
        for length in (1, 2, 4, 13, 51, 52):
            prefix = text[:length]
            want = sorted(i for t, i in texts.items() if t.startswith(prefix))
            assert store.resolve_prefix(prefix) == want
            assert store.resolve_prefix(prefix.upper()) == want
        assert store.resolve_prefix(text) == [record_id]
    assert store.resolve_prefix("") == [] and store.resolve_prefix("01") == []
    assert len(store.resolve_prefix("a", limit=2)) <= 2


@given(st.binary(min_size=32, max_size=32), st.integers(min_value=1, max_value=52))
def test_a_prefix_range_holds_exactly_the_ids_with_that_prefix(
    record_id: bytes, length: int
) -> None:
    prefix = format_id(record_id)[:length]
    bounds = id_prefix_range(prefix)
    assert bounds is not None
    lo, hi = bounds
    assert lo <= record_id and (hi is None or record_id < hi)
    if hi is not None:
        assert not format_id(hi).startswith(prefix)
    assert format_id(lo).startswith(prefix)


def test_a_full_length_prefix_with_nonzero_padding_bits_matches_nothing() -> None:
    text = format_id(b"\xff" * 32)
    assert text.endswith("q")  # 4 padding bits, all zero
    assert id_prefix_range(text[:-1] + "r") is None
    assert id_prefix_range(text) == (b"\xff" * 32, None)


def test_range_items_walk_a_community_in_time_then_id_order(store: Store) -> None:
    records = [rec(text=f"r{i}", t=T0 + i // 2) for i in range(10)]
    store.ingest([*records, doc(community="bikes")])
    items = sorted((r.created_ms, r.id) for r in records)
    assert store.range_items("public", None, None) == items
    assert store.range_items("public", items[3], items[7]) == items[3:7]
    assert store.range_items("public", items[3], None, limit=2) == items[3:5]
    assert store.range_items("public", None, items[0]) == []
    assert store.range_items("nowhere", None, None) == []
    assert len(store.range_items("bikes", None, None)) == 1


# --- documents -----------------------------------------------------------------------------------


def test_documents_record_their_state_and_pinning(store: Store) -> None:
    root = b"d" * 32
    assert store.document(root) is None
    store.add_document(root, 5000, 262_144, pinned=False)
    document = store.document(root)
    assert document is not None
    assert (document["size"], document["chunk_size"], document["state"]) == (
        5000,
        262_144,
        "missing",
    )
    assert document["pinned"] is False and document["root"] == root
    store.set_document_state(root, "partial")
    store.add_document(root, 5000, 262_144, pinned=True)  # sharing it ourselves pins it
    store.add_document(root, 5000, 262_144, pinned=False)  # and adding again never unpins
    document = store.document(root)
    assert document is not None and document["pinned"] is True and document["state"] == "partial"
    assert [d["root"] for d in store.documents(state="partial")] == [root]
    assert store.documents(state="complete") == []
    with pytest.raises(StoreError, match="not a document state"):
        store.set_document_state(root, "done")
    with pytest.raises(StoreError, match="no document"):
        store.set_document_state(b"e" * 32, "complete")
    store.remove_document(root)
    assert store.document(root) is None


# --- the batch logic against a model -----------------------------------------------------------


def _pool() -> list[Record]:
    """Records whose order matters: reposts, retracts by the author and by others, repeats."""
    keys = (ALICE, BOB, CAROL)
    docs = [doc(keys[i % 3], title=f"doc {i}", t=T0 + i, root=bytes([i]) * 32) for i in range(4)]
    recs = [rec(keys[i % 3], f"rec {i}", t=T0 + 10 + i) for i in range(3)]
    reposts = [repost(BOB, docs[0]), repost(CAROL, docs[1]), repost(ALICE, recs[0])]
    reposts.append(repost(ALICE, reposts[0], t=T0 + 30))
    originals = [*docs, *recs, *reposts]
    key_of = {pub(key): key for key in keys}
    retracts = [retract(key_of[o.author], o) for o in originals[::2]]  # by their authors
    retracts += [retract(CAROL, docs[0], t=T0 + 40), retract(BOB, recs[0], t=T0 + 41)]
    return [*originals, *retracts]


POOL = _pool()


def _model(sequence: list[Record]) -> set[bytes]:
    """The store's rules, one record at a time, written as plainly as possible."""
    stored: dict[bytes, Record] = {}
    tombstones: set[tuple[bytes, bytes]] = set()
    for record in sequence:
        chain = repost_chain(record)
        if any((m.id, m.author) in tombstones for m in chain) or record.id in stored:
            continue
        if record.kind == "retract":
            target = stored.get(record.body["target"])
            if target is not None and target.author != record.author:
                continue
            if target is not None:
                for other in list(stored.values()):
                    if target.id in {m.id for m in repost_chain(other)}:
                        del stored[other.id]
            tombstones.add((record.body["target"], record.author))
        for member in reversed(chain):
            stored.setdefault(member.id, member)
    return set(stored)


@settings(max_examples=120, deadline=None)
@given(
    st.lists(st.sampled_from(range(len(POOL))), max_size=30),
    st.lists(st.integers(min_value=1, max_value=30), max_size=5),
)
def test_any_order_and_any_batching_give_what_the_model_says(
    tmp_path_factory: pytest.TempPathFactory, picks: list[int], cuts: list[int]
) -> None:
    sequence = [POOL[i] for i in picks]
    with (
        Store.open(tmp_path_factory.mktemp("s") / "store.sqlite", decode_workers=0) as store,
        patch.object(store_module, "CHUNK_RECORDS", 4),  # so batches span several chunks
    ):
        start = 0
        for cut in [*sorted(cuts), len(sequence)]:
            store.ingest(sequence[start:cut])
            start = max(start, cut)
        stored = {r.id for r in store.list_records()}
        assert stored == _model(sequence)
        assert store.count() == len(stored)
        searchable = {r.id for r in store.search("doc")} | {r.id for r in store.search("rec")}
        assert searchable == {i for i in stored if POOL_BY_ID[i].kind in ("doc", "rec")}


POOL_BY_ID = {member.id: member for r in POOL for member in repost_chain(r)}
