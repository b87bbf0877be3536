"""Gossip of records over real hosts: delivery along a line, validation, strikes and bans."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
import trio
from libp2p.host.exceptions import StreamFailure
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service
from nacl.signing import SigningKey

from p2pshare.node import gossip as gossip_module
from p2pshare.node.gossip import GOSSIP_PROTOCOLS, Gossip, GossipError, open_gossip, topic_for
from p2pshare.node.host import open_host
from p2pshare.node.identity import Identity
from p2pshare.protocol.reasons import Reason
from p2pshare.protocol.records import PROFILE, Record, create_record
from tests.netfixtures import Net, Peer, wait_until

COMMUNITY = "public"
TOPIC = topic_for(COMMUNITY)


@dataclass
class Inbox:
    """What a node's callbacks saw."""

    records: list[tuple[Record, str]] = field(default_factory=list)
    invalid: list[tuple[str, Reason]] = field(default_factory=list)
    blocked_authors: set[bytes] = field(default_factory=set)

    def on_record(self, record: Record, peer_id: str) -> None:
        self.records.append((record, peer_id))

    def policy(self, record: Record) -> Reason | None:
        return Reason.BLOCKED if record.author in self.blocked_authors else None

    def on_invalid(self, peer_id: str, reason: Reason) -> None:
        self.invalid.append((peer_id, reason))

    def ids(self) -> list[bytes]:
        return [record.id for record, _ in self.records]


@dataclass
class Node:
    peer: Peer
    gossip: Gossip
    inbox: Inbox


async def start_node(stack: AsyncExitStack, peer: Peer, **options: Any) -> Node:
    """Gossip on ``peer`` (started before it connects anywhere), joined to COMMUNITY."""
    inbox = Inbox()
    gossip = await stack.enter_async_context(
        open_gossip(peer.host, inbox.on_record, inbox.policy, inbox.on_invalid, **options)
    )
    await gossip.join(COMMUNITY)
    return Node(peer, gossip, inbox)


async def link(a: Node, b: Node) -> None:
    """Connect two gossiping nodes and wait until each has the other in its mesh."""
    await a.peer.connect(b.peer)
    with trio.fail_after(10):
        await a.gossip.wait_for_mesh(COMMUNITY, b.peer.peer_id, timeout=10)
        await b.gossip.wait_for_mesh(COMMUNITY, a.peer.peer_id, timeout=10)


def profile(name: str, key: SigningKey | None = None, community: str = COMMUNITY) -> Record:
    return create_record(key or SigningKey.generate(), PROFILE, {"name": name}, community=community)


def forged(record: Record) -> bytes:
    """The record with one signature bit flipped: canonical, but not signed by its author."""
    return record.wire[:-1] + bytes([record.wire[-1] ^ 1])


def non_canonical(name: str) -> bytes:
    """A profile whose body map is not in sorted key order (signature irrelevant)."""
    key = SigningKey.generate()
    body = {"name": name, "about": "unsorted keys"}
    wire = msgpack.packb(
        [1, PROFILE, bytes(key.verify_key), 1, COMMUNITY, body, bytes(64)], use_bin_type=True
    )
    return bytes(wire)


@asynccontextmanager
async def unvalidated_pubsub(peer: Peer) -> AsyncIterator[Pubsub]:
    """A misbehaving node: plain py-libp2p gossipsub on TOPIC that publishes whatever it likes."""
    router = GossipSub(
        protocols=GOSSIP_PROTOCOLS,
        degree=6,
        degree_low=4,
        degree_high=12,
        heartbeat_interval=1,
        spam_protection_enabled=False,
    )
    pubsub = Pubsub(peer.host, router)
    async with background_trio_service(pubsub), background_trio_service(router):
        await pubsub.wait_until_ready()
        await pubsub.subscribe(TOPIC)
        yield pubsub


async def test_a_record_published_at_one_end_of_a_line_arrives_at_the_other(net: Net) -> None:
    async with AsyncExitStack() as stack:
        a, b, c = [await start_node(stack, peer) for peer in await net.peers(3)]
        await link(a, b)
        await link(b, c)
        record = profile("bakery")
        assert await a.gossip.publish(record)

        await wait_until(lambda: c.inbox.records, what="the record to reach c")
        assert c.inbox.records == [(record, b.peer.peer_id)]
        assert b.inbox.records == [(record, a.peer.peer_id)]
        assert a.inbox.records == []  # our own publish is not handed back to us
        assert a.inbox.invalid == b.inbox.invalid == c.inbox.invalid == []


async def test_a_burst_of_records_all_arrive(net: Net) -> None:
    """py-libp2p drops what overflows its 32-slot queues; publishing is paced to avoid that."""
    async with AsyncExitStack() as stack:
        a, b, c = [await start_node(stack, peer) for peer in await net.peers(3)]
        await link(a, b)
        await link(b, c)
        key = SigningKey.generate()
        records = [profile(f"item {i}", key) for i in range(60)]
        for record in records:
            await a.gossip.publish(record)
        await wait_until(lambda: len(c.inbox.records) == len(records), what="all 60 at c")
        assert sorted(c.inbox.ids()) == sorted(r.id for r in records)
        assert a.gossip.dropped == b.gossip.dropped == c.gossip.dropped == 0


async def test_invalid_records_never_arrive_strike_the_sender_and_get_it_disconnected(
    net: Net,
) -> None:
    mallory_peer, b_peer, c_peer = await net.peers(3)
    async with AsyncExitStack() as stack:
        b = await start_node(stack, b_peer, max_strikes=4)
        c = await start_node(stack, c_peer)
        mallory = await stack.enter_async_context(unvalidated_pubsub(mallory_peer))
        await link(b, c)
        await mallory_peer.connect(b_peer)
        with trio.fail_after(10):
            await mallory.wait_for_mesh(ID.from_base58(b_peer.peer_id), TOPIC, timeout=10)

        # Control: mallory's valid records do get through, so the path works.
        honest = profile("honest")
        await mallory.publish(TOPIC, honest.wire)
        await wait_until(lambda: c.inbox.records, what="mallory's valid record at c")

        bad = [
            forged(profile("forged")),
            non_canonical("unsorted"),
            profile("elsewhere", community="elsewhere").wire,  # a valid record, wrong topic
            b"\x01\x02 not msgpack at all",
        ]
        for wire in bad:
            await mallory.publish(TOPIC, wire)
        await wait_until(lambda: not b_peer.is_connected(mallory_peer), what="b to drop mallory")

        assert b.inbox.invalid == [
            (mallory_peer.peer_id, Reason.BAD_SIGNATURE),
            (mallory_peer.peer_id, Reason.NON_CANONICAL),
            (mallory_peer.peer_id, Reason.BAD_COMMUNITY),
            (mallory_peer.peer_id, Reason.TRAILING_BYTES),
        ]
        assert b.gossip.is_banned(mallory_peer.peer_id)
        assert b.gossip.strikes(mallory_peer.peer_id) == 4
        assert b.inbox.ids() == c.inbox.ids() == [honest.id]
        assert c.inbox.invalid == []  # b forwarded none of it


async def test_a_policy_refusal_is_reported_but_does_not_strike_the_forwarder(net: Net) -> None:
    async with AsyncExitStack() as stack:
        a, b, c = [await start_node(stack, peer) for peer in await net.peers(3)]
        await link(a, b)
        await link(b, c)
        spammer = SigningKey.generate()
        b.inbox.blocked_authors.add(bytes(spammer.verify_key))

        await a.gossip.publish(profile("spam", spammer))
        await wait_until(lambda: b.inbox.invalid, what="b to refuse the blocked author")
        later = profile("welcome")
        await a.gossip.publish(later)
        await wait_until(lambda: c.inbox.records, what="the next record to reach c")

        assert b.inbox.invalid == [(a.peer.peer_id, Reason.BLOCKED)]
        assert b.gossip.strikes(a.peer.peer_id) == 0
        assert b.peer.is_connected(a.peer)
        assert b.inbox.ids() == c.inbox.ids() == [later.id]  # b did not pass the blocked one on


async def test_after_leaving_a_community_its_records_stop_arriving(net: Net) -> None:
    async with AsyncExitStack() as stack:
        a, b, c = [await start_node(stack, peer) for peer in await net.peers(3)]
        await link(a, b)
        await link(a, c)
        first = profile("first")
        await a.gossip.publish(first)
        await wait_until(lambda: b.inbox.records and c.inbox.records, what="first record")

        await b.gossip.leave(COMMUNITY)
        assert b.gossip.joined == frozenset()
        await wait_until(
            lambda: b.peer.peer_id not in a.gossip.mesh_peers(COMMUNITY), what="a to drop b"
        )
        second = profile("second")
        await a.gossip.publish(second)
        await wait_until(lambda: len(c.inbox.records) == 2, what="second record at c")

        assert b.inbox.ids() == [first.id]


async def test_publishing_needs_membership_and_a_gossip_sized_record(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer = await net.peer()
    async with open_gossip(peer.host, Inbox().on_record) as gossip:
        with pytest.raises(GossipError, match="not a member"):
            await gossip.publish(profile("outsider", community="elsewhere"))
        await gossip.join(COMMUNITY)
        assert await gossip.publish(profile("fits"))
        monkeypatch.setattr(gossip_module, "MAX_GOSSIP_RECORD_BYTES", 100)
        assert not await gossip.publish(profile("too big for gossip, left to sync"))


async def test_gossip_cannot_be_used_before_it_runs_and_rejects_bad_community_names(
    net: Net,
) -> None:
    peer = await net.peer()
    idle = Gossip(peer.host, Inbox().on_record)
    with pytest.raises(GossipError, match="not running"):
        await idle.join(COMMUNITY)
    async with open_gossip(peer.host, Inbox().on_record) as gossip:
        with pytest.raises(ValueError, match="slug"):
            await gossip.join("Not A Slug")


async def test_a_host_outlives_its_gossip_and_can_run_it_again(net: Net) -> None:
    a, b, c = await net.peers(3)
    async with open_gossip(a.host, Inbox().on_record) as gossip:
        await gossip.join(COMMUNITY)
    await a.connect(b, timeout=5)
    with trio.fail_after(10), pytest.raises(StreamFailure):  # nobody would read gossip now
        await b.host.new_stream(ID.from_base58(a.peer_id), GOSSIP_PROTOCOLS)

    async with AsyncExitStack() as stack:
        again = await start_node(stack, a)
        other = await start_node(stack, c)
        await link(other, again)
        record = profile("second life")
        await other.gossip.publish(record)
        await wait_until(lambda: again.inbox.records, what="delivery on the restarted gossip")
        assert again.inbox.ids() == [record.id]


async def test_an_error_inside_gossip_and_host_blocks_comes_out_as_itself() -> None:
    """Both context managers run nurseries; the caller's exception must not come out wrapped."""
    with pytest.raises(KeyError):
        async with (
            open_host(Identity.generate()) as host,
            open_gossip(host, Inbox().on_record) as gossip,
        ):
            await gossip.join(COMMUNITY)
            raise KeyError("from the caller")
