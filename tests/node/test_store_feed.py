"""The feed: what neighbours share, ranked by trust distance, then by recency."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from p2pshare.node.store import Store
from tests.node.test_store import ALICE, BOB, CAROL, T0, doc, follow, profile, pub, rec

DAVE = SigningKey(bytes([4]) * 32)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "store.sqlite", decode_workers=0) as opened:
        yield opened


def test_followed_authors_rank_before_their_follows_before_strangers_then_newest_first(
    store: Store,
) -> None:
    # ALICE is me; I follow BOB; BOB follows CAROL; DAVE is a stranger.
    store.ingest([follow(ALICE, BOB), follow(BOB, CAROL)])
    stranger_new = doc(DAVE, title="stranger new", t=T0 + 900, root=b"d" * 32)
    carol_doc = doc(CAROL, title="carol", t=T0 + 500, root=b"c" * 32)
    bob_old = rec(BOB, "bob old", t=T0 + 100)
    bob_new = rec(BOB, "bob new", t=T0 + 200)
    mine = doc(ALICE, title="mine", t=T0 + 50, root=b"a" * 32)
    store.ingest([stranger_new, carol_doc, bob_old, bob_new, mine, profile(DAVE, "Dave")])

    page = store.feed(pub(ALICE), limit=10)

    assert [(r.id, d) for r, d in page] == [
        (mine.id, 0),
        (bob_new.id, 1),
        (bob_old.id, 1),
        (carol_doc.id, 2),
        (stranger_new.id, 3),
    ]  # profiles and follows are not feed items


def test_an_unfollow_moves_an_author_back_among_strangers(store: Store) -> None:
    store.ingest([follow(ALICE, BOB), follow(ALICE, BOB, t=T0 + 1, kind="unfollow")])
    bob_rec = rec(BOB, "hello", t=T0 + 10)
    store.ingest([bob_rec])
    assert store.feed(pub(ALICE), limit=5) == [(store.get(bob_rec.id), 3)]


def test_the_feed_pages_without_gaps_or_repeats(store: Store) -> None:
    records = [rec(BOB, f"r{i}", t=T0 + i) for i in range(25)]
    store.ingest(records)
    seen = []
    for offset in range(0, 30, 10):
        seen += [r.id for r, _ in store.feed(pub(ALICE), limit=10, offset=offset)]
    assert sorted(seen) == sorted(r.id for r in records)
    assert len(seen) == len(set(seen)) == 25
