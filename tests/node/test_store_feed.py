"""The feed: what neighbours share, ranked by trust distance, then by recency, paged from a
snapshot that new arrivals do not disturb; and who vouches for a record."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from p2pshare.node import schema
from p2pshare.node.store import FEED_KINDS, Store
from p2pshare.protocol.records import Record, create_record
from tests.node.test_store import (
    ALICE,
    BOB,
    CAROL,
    T0,
    doc,
    follow,
    profile,
    pub,
    rec,
    repost,
    retract,
)

DAVE = SigningKey(bytes([4]) * 32)
ERIN = SigningKey(bytes([5]) * 32)
KEYS = [ALICE, BOB, CAROL, DAVE, ERIN]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "store.sqlite", decode_workers=0) as opened:
        yield opened


def vouch(key: SigningKey, subject: Record, *, t: int = T0 + 5, text: str = "good") -> Record:
    body: dict[str, Any] = {"subject_type": "record", "subject": subject.id, "text": text}
    return create_record(key, "rec", body, created_ms=t)


def whole_feed(store: Store, me: bytes, page: int) -> list[tuple[bytes, int]]:
    """Every item, page by page from one snapshot."""
    first = store.feed(me, limit=page)
    out = [(r.id, d) for r, d in first.items]
    assert first.total is not None
    while len(out) < first.total:
        more = store.feed(me, limit=page, offset=len(out), upto=first.snapshot, count=False)
        assert more.items, "a page came back empty before the total was reached"
        assert more.total is None
        out += [(r.id, d) for r, d in more.items]
    return out


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

    assert [(r.id, d) for r, d in page.items] == [
        (mine.id, 0),
        (bob_new.id, 1),
        (bob_old.id, 1),
        (carol_doc.id, 2),
        (stranger_new.id, 3),
    ]  # profiles and follows are not feed items
    assert page.total == 5


def test_an_unfollow_moves_an_author_back_among_strangers(store: Store) -> None:
    store.ingest([follow(ALICE, BOB), follow(ALICE, BOB, t=T0 + 1, kind="unfollow")])
    bob_rec = rec(BOB, "hello", t=T0 + 10)
    store.ingest([bob_rec])
    assert [(r.id, d) for r, d in store.feed(pub(ALICE), limit=5).items] == [(bob_rec.id, 3)]


def test_someone_i_follow_who_is_also_two_hops_away_counts_as_followed(store: Store) -> None:
    store.ingest([follow(ALICE, BOB), follow(ALICE, CAROL), follow(BOB, CAROL), follow(BOB, ALICE)])
    tiers = store.trust_tiers(pub(ALICE))
    assert tiers == [{pub(ALICE)}, {pub(BOB), pub(CAROL)}, set()]


def test_the_feed_pages_without_gaps_or_repeats_across_distances(store: Store) -> None:
    store.ingest([follow(ALICE, BOB), follow(BOB, CAROL)])
    records = [rec(KEYS[i % 4], f"r{i}", t=T0 + i) for i in range(47)]
    store.ingest(records)
    seen = whole_feed(store, pub(ALICE), page=10)
    assert sorted(i for i, _ in seen) == sorted(r.id for r in records)
    assert len(seen) == len({i for i, _ in seen}) == 47
    assert [d for _, d in seen] == sorted(d for _, d in seen)


def test_records_arriving_while_paging_wait_for_the_next_snapshot(store: Store) -> None:
    store.ingest([rec(BOB, f"old {i}", t=T0 + i) for i in range(6)])
    first = store.feed(pub(ALICE), limit=3)
    newer = rec(BOB, "arrived meanwhile", t=T0 + 100)
    store.ingest([newer])

    rest = store.feed(pub(ALICE), limit=10, offset=3, upto=first.snapshot)
    assert newer.id not in {r.id for r, _ in rest.items}
    assert len(rest.items) == 3  # the three older ones, not shifted by the newcomer

    fresh = store.feed(pub(ALICE), limit=10)
    assert fresh.items[0][0].id == newer.id
    assert fresh.total == 7 and fresh.snapshot > first.snapshot


def test_a_retracted_record_leaves_the_feed(store: Store) -> None:
    gone = doc(BOB, title="oops", root=b"o" * 32)
    store.ingest([gone, rec(BOB, "stays", t=T0 + 1)])
    store.ingest([retract(BOB, gone)])
    assert [r.body["text"] for r, _ in store.feed(pub(ALICE), limit=5).items] == ["stays"]


# A model of the ranking: every ordering decision the SQL makes, in plain Python.
actions = st.lists(
    st.one_of(
        st.tuples(st.just("follow"), st.integers(0, 4), st.integers(0, 4)),
        st.tuples(st.just("post"), st.integers(0, 4), st.integers(0, 30)),
    ),
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=actions, page=st.integers(1, 7))
def test_any_follow_graph_and_any_page_size_give_the_models_order(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int, int]], page: int
) -> None:
    path = tmp_path_factory.mktemp("feed") / "store.sqlite"
    with Store.open(path, decode_workers=0) as store:
        follows: dict[int, set[int]] = {i: set() for i in range(5)}
        posted: list[tuple[Record, int]] = []  # (record, arrival)
        for n, (action, who, what) in enumerate(steps):
            if action == "follow" and who != what:
                store.ingest([follow(KEYS[who], KEYS[what], t=T0 + n)])
                follows[who].add(what)
            elif action == "post":
                record = rec(KEYS[who], f"post {n}", t=T0 + what)
                if store.ingest([record]).added:
                    posted.append((record, n))
        first = follows[0] - {0}
        second = set().union(*(follows[f] for f in first)) - first - {0} if first else set()

        def distance(author: bytes) -> int:
            index = next(i for i, k in enumerate(KEYS) if pub(k) == author)
            return 0 if index == 0 else 1 if index in first else 2 if index in second else 3

        model = sorted(posted, key=lambda p: (distance(p[0].author), -p[0].created_ms, -p[1]))
        expected = [(r.id, distance(r.author)) for r, _ in model]
        assert whole_feed(store, pub(ALICE), page) == expected


def test_the_feed_lists_documents_recommendations_and_reposts_only(store: Store) -> None:
    assert set(FEED_KINDS) == {"doc", "rec", "repost"}
    guide = doc(BOB, title="guide", root=b"g" * 32)
    gone = rec(CAROL, "soon retracted")
    store.ingest([guide, rec(BOB, "a thing"), repost(CAROL, guide), profile(BOB, "Bob")])
    store.ingest([follow(ALICE, BOB), gone, retract(CAROL, gone)])
    page = store.feed(pub(ALICE), limit=50)
    assert sorted(r.kind for r, _ in page.items) == ["doc", "rec", "repost"]
    assert page.total == 3


# --- who vouches ---------------------------------------------------------------------------


def test_recommenders_finds_what_the_given_authors_said_about_each_subject(store: Store) -> None:
    guide = doc(DAVE, title="guide", root=b"g" * 32)
    other = doc(DAVE, title="other", t=T0 + 1, root=b"h" * 32)
    bob_says = vouch(BOB, guide, t=T0 + 10)
    carol_says = vouch(CAROL, guide, t=T0 + 20)
    erin_says = vouch(ERIN, guide)  # not among the authors asked about
    store.ingest([guide, other, bob_says, carol_says, erin_says, rec(BOB, "about a thing")])

    found = store.recommenders([pub(BOB), pub(CAROL)], [guide.id, other.id])

    assert {k: [r.id for r in v] for k, v in found.items()} == {
        guide.id: [carol_says.id, bob_says.id]  # newest first
    }
    assert store.recommenders([], [guide.id]) == {}


def test_vouchers_says_which_of_the_given_authors_recommend_each_subject(store: Store) -> None:
    guide = doc(DAVE, title="guide", root=b"g" * 32)
    other = doc(DAVE, title="other", t=T0 + 1, root=b"h" * 32)
    store.ingest([guide, other, vouch(BOB, guide), vouch(BOB, guide, text="again")])
    store.ingest([vouch(CAROL, guide), vouch(ERIN, other)])

    found = store.vouchers([pub(BOB), pub(CAROL)], [guide.id, other.id])

    assert found == {guide.id: {pub(BOB), pub(CAROL)}}  # Erin was not asked about
    assert store.vouchers([], [guide.id]) == {}


def test_a_retracted_or_blocked_recommendation_no_longer_vouches(store: Store) -> None:
    guide = doc(DAVE, title="guide", root=b"g" * 32)
    bob_says, carol_says = vouch(BOB, guide), vouch(CAROL, guide)
    store.ingest([guide, bob_says, carol_says, retract(BOB, bob_says)])
    store.block(pub(CAROL))
    assert store.recommenders([pub(BOB), pub(CAROL)], [guide.id]) == {}


def test_a_version_1_store_gets_its_recommendation_index_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    guide = doc(DAVE, title="guide", root=b"g" * 32)
    says = [vouch(BOB, guide), vouch(CAROL, guide, t=T0 + 9), rec(BOB, "about a thing")]
    with Store.open(path) as opened:
        opened.ingest([guide, *says])
    db = sqlite3.connect(path)  # back to how version 1 left it: no index of subjects
    db.execute("DROP TABLE rec_subjects")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()

    with Store.open(path) as reopened:
        found = reopened.recommenders([pub(BOB), pub(CAROL)], [guide.id])
        assert reopened.schema_version == schema.current_version()

    assert [r.id for r in found[guide.id]] == [says[1].id, says[0].id]


def test_reposts_of_finds_every_repost_embedding_a_record_at_any_depth(store: Store) -> None:
    guide = doc(DAVE, title="guide", root=b"g" * 32)
    once = repost(BOB, guide, t=T0 + 1)
    twice = repost(CAROL, once, t=T0 + 2)
    store.ingest([twice, rec(BOB, "unrelated")])
    assert [r.id for r in store.reposts_of(guide.id)] == [twice.id, once.id]
    assert [r.id for r in store.reposts_of(once.id)] == [twice.id]


def test_count_by_author_counts_every_kind(store: Store) -> None:
    store.ingest([profile(BOB, "Bob"), rec(BOB, "x"), follow(BOB, CAROL), rec(CAROL, "y")])
    assert store.count_by_author(pub(BOB)) == 3
    assert store.count_by_author(pub(DAVE)) == 0
