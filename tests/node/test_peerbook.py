"""The peer book: remembered peers survive restarts, back off on failure, stay bounded."""

from __future__ import annotations

import itertools
import json
import random
import stat
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pshare.node.identity import Identity
from p2pshare.node.peerbook import (
    BASE_BACKOFF,
    FORGET_AFTER,
    JITTER,
    MAX_ADDRS_PER_PEER,
    MAX_BACKOFF,
    PeerBook,
)

ADDR = "/ip4/192.168.1.20/tcp/4011"
OTHER_ADDR = "/ip4/10.0.0.7/tcp/4011"


class FakeClock:
    """Wall-clock stand-in the test moves by hand."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def new_peer() -> str:
    return Identity.generate().peer_id


def make_book(tmp_path: Path, clock: FakeClock | None = None, **options: object) -> PeerBook:
    return PeerBook(tmp_path / "peers.json", clock=clock or FakeClock(), **options)  # type: ignore[arg-type]


def test_saved_peers_are_loaded_back_with_their_schedule(tmp_path: Path) -> None:
    clock = FakeClock()
    book = make_book(tmp_path, clock)
    alive, dead = new_peer(), new_peer()
    book.seen(alive, [ADDR])
    book.learn(dead, [OTHER_ADDR + f"/p2p/{dead}"])
    book.failed(dead)
    book.save()

    loaded = PeerBook.load(tmp_path / "peers.json", clock=clock)

    assert {e.peer_id for e in loaded.entries()} == {alive, dead}
    for peer_id in (alive, dead):
        assert loaded.get(peer_id) == book.get(peer_id)
    assert loaded.get(dead).addrs == [OTHER_ADDR]  # type: ignore[union-attr]
    assert loaded.get(dead).failures == 1  # type: ignore[union-attr]
    assert not loaded.dirty


def test_saved_file_is_private_and_replaced_whole(tmp_path: Path) -> None:
    book = make_book(tmp_path)
    book.seen(new_peer(), [ADDR])
    book.save()
    book.seen(new_peer(), [OTHER_ADDR])
    book.save()

    path = tmp_path / "peers.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(json.loads(path.read_text())["peers"]) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["peers.json"]  # no temporary files left


def test_missing_or_damaged_file_gives_an_empty_book(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    assert len(PeerBook.load(path)) == 0
    for damage in (b"{not json", b'{"version": 99, "peers": []}', b"\xff\xfe", b"[]"):
        path.write_bytes(damage)
        assert len(PeerBook.load(path)) == 0


def test_bad_entries_are_skipped_and_good_ones_kept(tmp_path: Path) -> None:
    good = new_peer()
    entry = {"addrs": [ADDR], "last_seen_ms": 5, "failures": 0, "next_attempt_ms": 0}
    peers = [
        {"peer_id": good, **entry},
        {"peer_id": "not-a-peer-id", **entry},
        {"peer_id": new_peer(), **entry, "failures": -1},
        {"peer_id": new_peer(), **entry, "addrs": "one string"},
        {"peer_id": new_peer(), **entry, "last_seen_ms": True},
        "not a dict",
    ]
    path = tmp_path / "peers.json"
    path.write_text(json.dumps({"version": 1, "peers": peers}))

    assert [e.peer_id for e in PeerBook.load(path).entries()] == [good]


def test_backoff_grows_with_each_failure_up_to_the_cap(tmp_path: Path) -> None:
    clock = FakeClock()
    book = make_book(tmp_path, clock)
    peer = new_peer()
    book.learn(peer, [ADDR])

    delays = [book.failed(peer) for _ in range(20)]

    assert BASE_BACKOFF * (1 - JITTER) <= delays[0] <= BASE_BACKOFF
    growing = delays[:9]  # doubling from 2 s: the 10th failure hits the 600 s cap
    assert all(later > earlier for earlier, later in itertools.pairwise(growing))
    assert max(delays) <= MAX_BACKOFF
    assert delays[-1] >= MAX_BACKOFF * (1 - JITTER)
    entry = book.get(peer)
    assert entry is not None
    assert entry.next_attempt_ms == int(clock.now * 1000) + int(delays[-1] * 1000)


@settings(max_examples=200)
@given(failures=st.integers(min_value=1, max_value=200), seed=st.integers(0, 2**32))
def test_each_backoff_lies_within_its_jitter_band(failures: int, seed: int) -> None:
    book = PeerBook(rng=random.Random(seed))
    ceiling = min(MAX_BACKOFF, BASE_BACKOFF * 2 ** (failures - 1))
    assert ceiling * (1 - JITTER) <= book.backoff(failures) <= ceiling


def test_jitter_spreads_peers_that_failed_together(tmp_path: Path) -> None:
    book = make_book(tmp_path)
    assert len({book.backoff(5) for _ in range(20)}) > 1


def test_a_failed_peer_is_due_only_after_its_backoff(tmp_path: Path) -> None:
    clock = FakeClock()
    book = make_book(tmp_path, clock)
    peer = new_peer()
    book.learn(peer, [ADDR])
    assert [e.peer_id for e in book.due()] == [peer]

    delay = book.failed(peer)
    assert book.due() == []
    clock.advance(delay + 0.001)
    assert [e.peer_id for e in book.due()] == [peer]


def test_a_connection_puts_the_working_address_first(tmp_path: Path) -> None:
    book = make_book(tmp_path)
    peer = new_peer()
    book.learn(peer, [OTHER_ADDR])

    book.seen(peer, [ADDR])

    entry = book.get(peer)
    assert entry is not None
    assert entry.addrs == [ADDR, OTHER_ADDR]


def test_only_a_lasting_link_clears_failures(tmp_path: Path) -> None:
    book = make_book(tmp_path)
    peer = new_peer()
    book.learn(peer, [ADDR])
    book.failed(peer)
    book.failed(peer)

    book.seen(peer, [ADDR])
    assert book.get(peer).failures == 2  # type: ignore[union-attr]
    book.stable(peer)
    assert book.get(peer).failures == 0  # type: ignore[union-attr]


def test_after_a_lasting_link_the_first_redial_comes_after_one_backoff_step(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    book = make_book(tmp_path, clock)
    peer = new_peer()
    book.seen(peer, [ADDR])
    book.failed(peer)

    delay = book.disconnected(peer, stable=True)

    assert BASE_BACKOFF * (1 - JITTER) <= delay <= BASE_BACKOFF
    assert book.get(peer).failures == 0  # type: ignore[union-attr]
    assert book.due() == []
    clock.advance(BASE_BACKOFF)
    assert [e.peer_id for e in book.due()] == [peer]


def test_a_peer_that_keeps_hanging_up_backs_off_like_a_failed_dial(tmp_path: Path) -> None:
    book = make_book(tmp_path)
    peer = new_peer()
    delays = []
    for _ in range(4):
        book.seen(peer, [ADDR])
        delays.append(book.disconnected(peer, stable=False))

    assert book.get(peer).failures == 4  # type: ignore[union-attr]
    assert all(later > earlier for earlier, later in itertools.pairwise(delays))


def test_defer_keeps_a_peer_from_being_dialled(tmp_path: Path) -> None:
    clock = FakeClock()
    book = make_book(tmp_path, clock)
    peer = new_peer()
    book.learn(peer, [ADDR])
    book.defer(peer, 600)
    clock.advance(599)
    assert book.due() == []
    clock.advance(2)
    assert [e.peer_id for e in book.due()] == [peer]


def test_the_least_recently_seen_peer_is_evicted_when_full(tmp_path: Path) -> None:
    clock = FakeClock()
    book = make_book(tmp_path, clock, max_peers=3)
    oldest, middle, newest, extra = (new_peer() for _ in range(4))
    for peer in (oldest, middle, newest):
        book.learn(peer, [ADDR])
        clock.advance(1)
    book.seen(oldest, [ADDR])  # connected again: now the most recently seen
    clock.advance(1)

    book.learn(extra, [ADDR])

    assert len(book) == 3
    assert middle not in book
    assert {oldest, newest, extra} <= {e.peer_id for e in book.entries()}


def test_load_keeps_the_most_recently_seen_when_the_file_holds_too_many(tmp_path: Path) -> None:
    clock = FakeClock()
    big = make_book(tmp_path, clock)
    peers = [new_peer() for _ in range(5)]
    for peer in peers:
        big.seen(peer, [ADDR])
        clock.advance(1)
    big.save()

    small = PeerBook.load(tmp_path / "peers.json", max_peers=2, clock=clock)

    assert {e.peer_id for e in small.entries()} == set(peers[-2:])


def test_addresses_are_bounded_and_stripped_of_peer_ids(tmp_path: Path) -> None:
    book = make_book(tmp_path)
    peer = new_peer()
    many = [f"/ip4/10.0.0.{i}/tcp/4011/p2p/{peer}" for i in range(20)]

    book.learn(peer, [*many, "not an address", "/x" * 200])

    entry = book.get(peer)
    assert entry is not None
    assert entry.addrs == [a.split("/p2p/")[0] for a in many[:MAX_ADDRS_PER_PEER]]
    assert entry.dial_addrs()[0] == many[0]


def test_invalid_peer_ids_are_not_remembered(tmp_path: Path) -> None:
    book = make_book(tmp_path)
    assert book.learn("QmNotReallyAPeer", [ADDR]) is None
    assert len(book) == 0


def test_prune_forgets_long_unreachable_peers_only(tmp_path: Path) -> None:
    clock = FakeClock()
    book = make_book(tmp_path, clock)
    unreachable, quiet = new_peer(), new_peer()
    book.learn(unreachable, [ADDR])
    book.failed(unreachable)
    book.seen(quiet, [ADDR])
    clock.advance(FORGET_AFTER + 1)

    assert book.prune() == 1
    assert unreachable not in book
    assert quiet in book  # never failed since we last saw it: kept
