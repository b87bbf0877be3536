"""Reconnecting to peers over real hosts on 127.0.0.1, and the address/TXT helpers of mDNS.

mDNS itself only runs inside a network namespace of its own: see test_mdns_netns.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pshare.node.discovery import (
    Reconnector,
    dialable_addrs,
    encode_txt,
    expand_wildcards,
    parse_txt,
    split_peer_addr,
)
from p2pshare.node.identity import Identity
from p2pshare.node.peerbook import PeerBook, PeerEntry
from tests.netfixtures import Net, Peer, wait_until

FAST = {"poll_interval": 0.05, "save_interval": 0.2, "dial_timeout": 5.0}


class Events:
    def __init__(self) -> None:
        self.up: list[str] = []
        self.down: list[str] = []


def fast_book(path: Path | None) -> PeerBook:
    """Backoff steps of 0.1-0.4 s, so retries happen within the test's patience."""
    return PeerBook(path, base_backoff=0.1, max_backoff=0.4)


@asynccontextmanager
async def running(
    peer: Peer, book: PeerBook, bootstrap: list[str] | None = None, **options: Any
) -> AsyncIterator[tuple[Reconnector, Events]]:
    events = Events()
    reconnector = Reconnector(
        peer.host,
        book,
        bootstrap=bootstrap or [],
        peer_connected=events.up.append,
        peer_disconnected=events.down.append,
        **{**FAST, **options},
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(reconnector.run)
        yield reconnector, events
        nursery.cancel_scope.cancel()


def transport(peer: Peer) -> str:
    return peer.addr.rsplit("/p2p/", 1)[0]


def negative_cache_blocks(peer: Peer, other_id: str) -> bool:
    """Whether py-libp2p's swarm currently refuses to dial ``other_id`` (its 60 s block)."""
    cache = peer.host.get_network()._negative_peer_cache  # type: ignore[attr-defined]
    return bool(cache.is_blocked(other_id))


# --- real hosts ---------------------------------------------------------------------------------


async def test_bootstrap_peer_is_dialled_at_start_and_remembered(net: Net, tmp_path: Path) -> None:
    a, b = await net.peers(2)
    book = fast_book(tmp_path / "peers.json")

    async with running(a, book, bootstrap=[b.addr]) as (reconnector, events):
        await wait_until(lambda: b.peer_id in reconnector.connected, what="bootstrap dialled")
        assert a.is_connected(b)
        assert events.up == [b.peer_id]

    saved = PeerBook.load(tmp_path / "peers.json")
    entry = saved.get(b.peer_id)
    assert entry is not None
    assert entry.addrs[0] == transport(b)
    assert entry.failures == 0


async def test_peer_restarting_on_the_same_port_is_reconnected_despite_the_dial_block(
    net: Net, tmp_path: Path
) -> None:
    a, b = await net.peers(2)
    book = fast_book(tmp_path / "peers.json")

    async with running(a, book, bootstrap=[b.addr]) as (reconnector, events):
        await wait_until(lambda: b.peer_id in reconnector.connected, what="first link")
        await b.stop()
        # At least one redial must fail while B is down, so the swarm blocks B for 60 s.
        await wait_until(lambda: reconnector.failed_dials >= 1, what="a failed redial")
        assert b.peer_id in events.down
        assert negative_cache_blocks(a, b.peer_id)
        links_before = events.up.count(b.peer_id)

        restarted = await net.peer(b.identity, listen=transport(b))

        # Well within the 60 s block: only a dial that lifts it gets through.
        await wait_until(lambda: a.is_connected(restarted), timeout=15, what="reconnect")
        await wait_until(lambda: events.up.count(b.peer_id) > links_before, what="link seen")


async def test_inbound_peer_is_reported_and_its_listen_address_remembered(
    net: Net, tmp_path: Path
) -> None:
    a, b = await net.peers(2)
    book = fast_book(tmp_path / "peers.json")

    async with running(a, book) as (reconnector, events):
        await b.connect(a)  # B dials A; A's reconnector did nothing
        await wait_until(lambda: events.up == [b.peer_id], what="inbound link reported")
        # Identify tells A where B listens (not the ephemeral port B dialled from).
        await wait_until(
            lambda: transport(b) in (book.get(b.peer_id) or _no_entry).addrs,
            what="B's listen address remembered",
        )
        assert reconnector.dials == 0


async def test_remembered_peers_are_dialled_after_a_restart(net: Net, tmp_path: Path) -> None:
    a, b = await net.peers(2)
    path = tmp_path / "peers.json"
    book = fast_book(path)
    async with running(a, book):
        await b.connect(a)
        await wait_until(
            lambda: transport(b) in (book.get(b.peer_id) or _no_entry).addrs,
            what="B's listen address learnt",
        )
    # "A restarts": a new host with A's identity and the book it saved.
    await a.stop()
    a_again = await net.peer(a.identity)

    again = PeerBook.load(path, base_backoff=0.1, max_backoff=0.4)
    async with running(a_again, again) as (reconnector, _):
        await wait_until(lambda: b.peer_id in reconnector.connected, what="remembered peer")
        assert reconnector.dials >= 1


async def test_discovered_peer_is_dialled_and_own_announcements_ignored(
    net: Net, tmp_path: Path
) -> None:
    a, b = await net.peers(2)
    book = fast_book(None)

    async with running(a, book) as (reconnector, events):
        reconnector.discovered(a.peer_id, [transport(a)])  # our own mDNS echo
        reconnector.discovered(b.peer_id, [transport(b)])
        await wait_until(lambda: events.up == [b.peer_id], what="discovered peer dialled")
        assert a.peer_id not in book


async def test_peer_that_moved_to_a_new_port_is_reached_at_the_announced_one(
    net: Net, tmp_path: Path
) -> None:
    """py-libp2p would dial the stale address it still holds; the reconnector must not."""
    a, b = await net.peers(2)
    book = fast_book(None)

    async with running(a, book, bootstrap=[b.addr]) as (reconnector, _):
        await wait_until(lambda: b.peer_id in reconnector.connected, what="first link")
        await b.stop()
        await wait_until(lambda: reconnector.failed_dials >= 1, what="a failed redial")
        moved = await net.peer(b.identity)  # new port
        assert transport(moved) != transport(b)

        reconnector.discovered(b.peer_id, [transport(moved)])

        await wait_until(lambda: a.is_connected(moved), timeout=15, what="reached at new port")


async def test_unreachable_peer_is_retried_with_growing_delays(net: Net) -> None:
    (a,) = await net.peers(1)
    ghost = Identity.generate().peer_id
    book = fast_book(None)
    delays: list[float] = []
    real_failed = book.failed

    def record_failure(peer_id: str) -> float:
        delays.append(real_failed(peer_id))
        return delays[-1]

    book.failed = record_failure  # type: ignore[method-assign]
    dead_addr = "/ip4/127.0.0.1/tcp/9"  # discard port: nothing listens here

    async with running(a, book, bootstrap=[f"{dead_addr}/p2p/{ghost}"]) as (reconnector, _):
        await wait_until(lambda: len(delays) >= 3, timeout=30, what="three failed dials")
        assert reconnector.connected == frozenset()
    assert delays[0] < delays[2]


async def test_a_failing_callback_does_not_stop_the_loop(net: Net) -> None:
    a, b, c = await net.peers(3)
    seen: list[str] = []

    def fragile(peer_id: str) -> None:
        seen.append(peer_id)
        raise RuntimeError("callback bug")

    reconnector = Reconnector(a.host, fast_book(None), peer_connected=fragile, **FAST)
    async with trio.open_nursery() as nursery:
        await nursery.start(reconnector.run)
        await b.connect(a)
        await wait_until(lambda: seen == [b.peer_id], what="first callback")
        await c.connect(a)
        await wait_until(lambda: seen == [b.peer_id, c.peer_id], what="second callback")
        nursery.cancel_scope.cancel()


_no_entry = PeerEntry("")  # for "no entry yet": no addresses


# --- pure helpers -------------------------------------------------------------------------------

PEER = Identity.generate().peer_id


def test_txt_records_round_trip_one_string_per_address() -> None:
    addrs = ["/ip4/192.168.1.5/tcp/4011", "/ip6/fd00::5/tcp/4011"]
    text = encode_txt(PEER, addrs)
    assert text.count(b"dnsaddr=") == 2
    assert parse_txt(text) == (PEER, addrs)


def test_txt_parser_accepts_py_libp2p_numbered_keys_and_skips_junk() -> None:
    other = Identity.generate().peer_id
    strings = [
        b"dnsaddr=/ip4/10.0.0.1/tcp/1/p2p/" + PEER.encode(),
        b"dnsaddr2=/ip4/10.0.0.2/tcp/2/p2p/" + PEER.encode(),
        b"dnsaddr=/ip4/10.0.0.3/tcp/3/p2p/" + other.encode(),  # someone else's: ignored
        b"dnsaddr=garbage",
        b"id=whatever",
        b"\xff\xfe=\x00",
    ]
    text = b"".join(bytes([len(s)]) + s for s in strings)
    assert parse_txt(text) == (PEER, ["/ip4/10.0.0.1/tcp/1", "/ip4/10.0.0.2/tcp/2"])


def test_truncated_txt_gives_what_it_holds() -> None:
    text = encode_txt(PEER, ["/ip4/10.0.0.1/tcp/1"])
    assert parse_txt(text[:-5]) == (None, [])
    assert parse_txt(b"") == (None, [])


def test_wildcard_listen_addresses_are_expanded_to_interface_ips() -> None:
    ips = ["127.0.0.1", "192.168.1.5", "10.8.0.2", "fd00::5"]
    assert expand_wildcards(["/ip4/0.0.0.0/tcp/4011", "/ip6/::/tcp/4012"], ips) == [
        "/ip4/192.168.1.5/tcp/4011",
        "/ip4/10.8.0.2/tcp/4011",
        "/ip6/fd00::5/tcp/4012",
    ]


def test_loopback_is_announced_only_when_it_is_all_there_is() -> None:
    assert expand_wildcards(["/ip4/127.0.0.1/tcp/4011"], ["192.168.1.5"]) == [
        "/ip4/127.0.0.1/tcp/4011"
    ]
    assert expand_wildcards(["/ip4/0.0.0.0/tcp/1"], ["127.0.0.1"]) == ["/ip4/127.0.0.1/tcp/1"]


def test_announced_wildcards_become_the_address_the_peer_came_from() -> None:
    announced = [
        f"/ip4/0.0.0.0/tcp/4011/p2p/{PEER}",
        "/ip4/127.0.0.1/tcp/4011",
        "/ip6/::/tcp/4011",
        "/ip4/192.168.1.9/udp/4011/quic-v1",
    ]
    assert dialable_addrs(announced, "192.168.1.9") == ["/ip4/192.168.1.9/tcp/4011"]
    assert dialable_addrs(announced, "127.0.0.1") == ["/ip4/127.0.0.1/tcp/4011"]
    assert dialable_addrs(announced, None) == []


def test_split_peer_addr() -> None:
    assert split_peer_addr(f"/ip4/1.2.3.4/tcp/5/p2p/{PEER}") == (PEER, "/ip4/1.2.3.4/tcp/5")
    for bad in ("/ip4/1.2.3.4/tcp/5", f"/p2p/{PEER}", "/ip4/1.2.3.4/tcp/5/p2p/nope"):
        with pytest.raises(ValueError):
            split_peer_addr(bad)
