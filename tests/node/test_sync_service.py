"""Record sync over ``/p2pshare/sync/1`` between real hosts on 127.0.0.1 and real SQLite stores.

Peers that misbehave are real hosts too: raw stream handlers (or openers) that speak the session
protocol with the pure modules and break it on purpose.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import msgpack
import pytest
import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID
from nacl.signing import SigningKey

from p2pshare.node.identity import Identity
from p2pshare.node.store import IngestResult, Store, StoreError
from p2pshare.node.streams import FramedStream, FrameError
from p2pshare.node.sync_service import (
    PROTOCOL,
    REASON_BAD_FRAME,
    SyncFailed,
    SyncRefused,
    SyncService,
    SyncStats,
    store_from_peer,
)
from p2pshare.protocol import sync_session as S
from p2pshare.protocol.records import REC, Record, create_record
from p2pshare.protocol.sync import Reconciler, Role, SortedSyncSet
from tests.netfixtures import Net, Peer, wait_until

T0 = 1_700_000_000_000
DEADLINE = 30.0  # any one sync: generous for a loaded 2-core machine
_serial = itertools.count()


def make_records(
    count: int, community: str = "public", key: SigningKey | None = None
) -> list[Record]:
    key = key or SigningKey.generate()
    out = []
    for _ in range(count):
        n = next(_serial)
        body = {"subject_type": "thing", "subject": f"shop {n}", "text": f"recommended #{n}"}
        out.append(create_record(key, REC, body, community=community, created_ms=T0 + n * 7))
    return out


def forged(record: Record) -> bytes:
    """The record's wire with one signature byte flipped: well formed, signature wrong."""
    wire = bytearray(record.wire)
    wire[-1] ^= 0x01
    return bytes(wire)


# --- sides ----------------------------------------------------------------------------------------


@dataclass
class Side:
    """A host with its store, sync service and what its callbacks saw."""

    name: str
    peer: Peer
    store: Store
    communities: set[str]
    service: SyncService | None = None
    invalid: list[tuple[str, str]] = field(default_factory=list)

    @property
    def peer_id(self) -> str:
        return self.peer.peer_id

    def ids(self, community: str = "public") -> set[bytes]:
        return {i for _, i in self.store.range_items(community, None, None)}

    def add(self, records: Sequence[Record]) -> None:
        self.store.ingest(records)

    @property
    def sync(self) -> SyncService:
        assert self.service is not None
        return self.service


@dataclass
class Swarm:
    net: Net
    tmp: Path
    nursery: trio.Nursery
    stores: list[Store] = field(default_factory=list)

    async def side(
        self,
        name: str,
        communities: Sequence[str] = ("public",),
        *,
        identity: Identity | None = None,
        store: Store | None = None,
        run: bool = False,
        **options: float,
    ) -> Side:
        if store is None:
            store = Store.open(self.tmp / f"{name}.sqlite", decode_workers=0)
            self.stores.append(store)
        peer = await self.net.peer(identity)
        side = Side(name, peer, store, set(communities))
        limiter = trio.CapacityLimiter(1)

        def charge(peer_id: str, reason: str) -> None:
            side.invalid.append((peer_id, str(reason)))

        ingest = partial(store_from_peer, store, limiter, on_invalid=charge)
        side.service = SyncService(
            peer.host,
            communities=lambda: side.communities,
            store=store,
            store_limiter=limiter,
            ingest=ingest,
            on_invalid=charge,
            **options,  # type: ignore[arg-type]
        )
        if run:
            await self.nursery.start(side.service.run)
        else:
            side.service.start()
        return side

    async def pair(self, **options: float) -> tuple[Side, Side]:
        a = await self.side("a", **options)
        b = await self.side("b", **options)
        await a.peer.connect(b.peer)
        return a, b


@pytest.fixture
async def swarm(net: Net, tmp_path: Path) -> Iterator[Swarm]:
    async with trio.open_nursery() as nursery:
        swarm = Swarm(net, tmp_path, nursery)
        yield swarm
        nursery.cancel_scope.cancel()
    for store in swarm.stores:
        store.close()


async def sync(side: Side, other: Side, community: str = "public") -> SyncStats:
    with trio.fail_after(DEADLINE):
        return await side.sync.sync_with(other.peer_id, community)


# --- convergence ----------------------------------------------------------------------------------


async def test_disjoint_sets_converge_both_ways_in_one_session(swarm: Swarm) -> None:
    a, b = await swarm.pair()
    only_a, only_b = make_records(30), make_records(20)
    a.add(only_a)
    b.add(only_b)

    stats = await sync(a, b)

    everything = {r.id for r in only_a + only_b}
    assert a.ids() == b.ids() == everything
    assert (stats.want, stats.offer) == (20, 30)
    assert (stats.records_received, stats.records_added, stats.records_sent) == (20, 20, 30)
    assert a.invalid == b.invalid == []


async def test_overlapping_sets_converge_and_other_communities_stay_apart(swarm: Swarm) -> None:
    a, b = await swarm.pair()
    common, only_a, only_b = make_records(40), make_records(15), make_records(25)
    elsewhere = make_records(5, community="bikes")  # A holds them; nobody syncs "bikes" here
    a.add(common + only_a + elsewhere)
    b.add(common + only_b)

    stats = await sync(b, a)

    assert a.ids() == b.ids() == {r.id for r in common + only_a + only_b}
    assert b.ids("bikes") == set()
    assert (stats.records_received, stats.records_sent) == (15, 25)


async def test_peers_already_in_sync_exchange_under_4_kb_each_way(swarm: Swarm) -> None:
    a, b = await swarm.pair()
    records = make_records(300)
    a.add(records)
    b.add(records)

    stats = await sync(a, b)

    assert (stats.want, stats.offer, stats.records_received, stats.records_sent) == (0, 0, 0, 0)
    assert stats.bytes_sent <= 4096
    assert stats.bytes_received <= 4096


async def test_records_made_while_a_peer_was_offline_arrive_by_sync_alone(swarm: Swarm) -> None:
    a = await swarm.side("a", run=True)
    b = await swarm.side("b", run=True)
    b_identity = b.peer.identity
    early = make_records(20)
    a.add(early)
    await a.peer.connect(b.peer)
    for side, other in ((a, b), (b, a)):  # as the Node's connection watcher does
        side.sync.peer_connected(other.peer_id)
    await wait_until(lambda: b.ids() == a.ids(), DEADLINE, "the first catch-up")

    await b.peer.stop()  # B goes offline; its store stays on disk
    late = make_records(500)
    a.add(late)
    b_again = await swarm.side("b", identity=b_identity, store=b.store, run=True)
    await b_again.peer.connect(a.peer)
    for side, other in ((a, b_again), (b_again, a)):
        side.sync.peer_connected(other.peer_id)

    await wait_until(lambda: len(b.ids()) == 520, DEADLINE, "500 records caught up")
    assert b.ids() == a.ids()
    assert a.invalid == b.invalid == b_again.invalid == []


async def test_periodic_sync_picks_up_new_records_without_a_new_connection(swarm: Swarm) -> None:
    a = await swarm.side("a", run=True, interval=0.2)
    b = await swarm.side("b", run=True, interval=0.2)
    await a.peer.connect(b.peer)
    fresh = make_records(10)
    a.add(fresh)

    await wait_until(lambda: b.ids() == {r.id for r in fresh}, DEADLINE, "a periodic sync")
    # The records are stored before the session says done: wait for it to finish.
    await wait_until(
        lambda: a.sync.counters.completed + b.sync.counters.completed >= 1,
        DEADLINE,
        "the periodic session to complete",
    )
    starter, other = (a, b) if a.peer_id < b.peer_id else (b, a)
    assert starter.sync.counters.initiated >= 1
    assert other.sync.counters.initiated == 0  # one session per pair serves both ways


# --- communities and refusals ---------------------------------------------------------------------


async def test_a_community_the_peer_is_not_in_is_refused_and_not_charged(swarm: Swarm) -> None:
    a = await swarm.side("a", ("public", "bikes"))
    b = await swarm.side("b", ("public",))
    await a.peer.connect(b.peer)
    b.add(make_records(3, community="bikes"))  # B left "bikes" but still holds some
    a.add(make_records(4))

    with pytest.raises(SyncRefused) as refused:
        await sync(a, b, "bikes")
    assert refused.value.code is S.ErrorCode.NOT_MEMBER

    with trio.fail_after(DEADLINE):
        done = await a.sync.sync_all(b.peer_id)
    assert [s.community for s in done] == ["public"]
    assert a.ids("bikes") == set()
    assert len(b.ids()) == 4
    assert a.invalid == b.invalid == []


async def test_a_second_sync_of_the_same_community_with_a_peer_is_refused_busy(
    swarm: Swarm,
) -> None:
    a, b = await swarm.pair()
    a.add(make_records(50))
    outcomes: list[object] = []

    async def one() -> None:
        try:
            outcomes.append(await sync(a, b))
        except SyncRefused as exc:
            outcomes.append(exc.code)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        nursery.start_soon(one)

    assert S.ErrorCode.BUSY in outcomes
    assert sum(isinstance(o, SyncStats) for o in outcomes) == 1
    assert b.ids() == a.ids()


async def test_a_community_we_are_not_in_is_not_asked_for(swarm: Swarm) -> None:
    a, b = await swarm.pair()
    with pytest.raises(ValueError, match="not a community we are in"):
        await sync(a, b, "bikes")


# --- misbehaving peers ----------------------------------------------------------------------------

Handler = Callable[[FramedStream], Awaitable[None]]


def serve_raw(side: Side, handler: Handler) -> None:
    """Replace a side's sync handler by ``handler`` (a peer speaking the protocol its own way)."""

    async def handle(stream: INetStream) -> None:
        framed = FramedStream(stream, S.MAX_FRAME_BYTES)
        try:
            await handler(framed)
        except FrameError:
            pass
        finally:
            await framed.reset()

    side.peer.host.set_stream_handler(PROTOCOL, handle)


async def read(framed: FramedStream) -> S.Message:
    return S.decode(await framed.read_frame(5.0))


async def write(framed: FramedStream, message: S.Message) -> None:
    await framed.write_frame(S.encode(message))


def evil_responder(wires: Sequence[bytes], mode: str, extra: bytes = b"") -> Handler:
    """A responder holding ``wires`` (any bytes: ids are their hashes) that, when asked for
    records, also sends ``extra`` (mode "unwanted") or answers with garbage (mode "garbage")."""

    items = [(created_ms(wire), hashlib.sha256(wire).digest()) for wire in wires]
    by_id = {hashlib.sha256(w).digest(): w for w in wires}

    async def handler(framed: FramedStream) -> None:
        assert isinstance(await read(framed), S.Open)
        reconciler = Reconciler(SortedSyncSet(items), Role.RESPONDER)
        while not reconciler.done:
            message = await read(framed)
            assert isinstance(message, S.Recon)
            reply = reconciler.receive(message.message)
            if reply is not None:
                await write(framed, S.Recon(reply))
        while isinstance(request := await read(framed), S.Get):
            if mode == "garbage":
                await framed.write_frame(b"\x92\xc1 not msgpack")
                return
            answer = [by_id[i] for i in request.ids]
            if mode == "unwanted":
                answer.append(extra)
            for frame in S.record_frames(answer):
                await write(framed, frame)
        await write(framed, S.Done())
        await framed.close()
        # Before serve_raw resets the stream: until the victim has read it all and ended its side.
        with suppress(FrameError):
            await framed.read_frame(DEADLINE)

    return handler


def created_ms(wire: bytes) -> int:
    created: int = msgpack.unpackb(wire)[3]
    return created


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("unwanted", S.UnwantedRecord.reason),
        ("wrong-community", S.WrongCommunity.reason),
        ("forged", "bad-signature"),
        ("garbage", S.BadMessage.reason),
    ],
)
async def test_a_misbehaving_responder_stores_nothing_bad_and_is_charged(
    swarm: Swarm, mode: str, reason: str
) -> None:
    victim = await swarm.side("victim")
    evil = await swarm.side("evil")
    honest = await swarm.side("honest")
    good, stray = make_records(5), make_records(1)
    bad = {
        "unwanted": [],
        "wrong-community": [make_records(1, community="bikes")[0].wire],
        "forged": [forged(make_records(1)[0])],
        "garbage": [],
    }[mode]
    serve_raw(evil, evil_responder([r.wire for r in good] + bad, mode, extra=stray[0].wire))
    await victim.peer.connect(evil.peer)

    with pytest.raises(SyncFailed) if mode != "forged" else nullcontext():
        await sync(victim, evil)

    stored = victim.ids() | victim.ids("bikes")
    assert stored <= {r.id for r in good}
    assert (evil.peer_id, reason) in victim.invalid
    assert all(peer == evil.peer_id for peer, _ in victim.invalid)

    honest_records = make_records(7)
    honest.add(honest_records)
    await victim.peer.connect(honest.peer)
    await sync(victim, honest)
    assert {r.id for r in honest_records} <= victim.ids()


async def test_an_initiator_asking_for_what_it_was_not_offered_is_charged(swarm: Swarm) -> None:
    responder = await swarm.side("responder")
    rogue = await swarm.side("rogue")
    responder.add(make_records(5))
    secret = make_records(1, community="bikes")  # ours, but not in the synced community
    responder.add(secret)
    await rogue.peer.connect(responder.peer)

    with trio.fail_after(DEADLINE):
        raw = await rogue.peer.host.new_stream(ID.from_base58(responder.peer_id), [PROTOCOL])
    framed = FramedStream(raw, S.MAX_FRAME_BYTES)
    reconciler = Reconciler(SortedSyncSet([]), Role.INITIATOR)
    await write(framed, S.Open("public"))
    await write(framed, S.Recon(reconciler.initiate()))
    while not reconciler.done:
        message = await read(framed)
        assert isinstance(message, S.Recon)
        reply = reconciler.receive(message.message)
        if reply is not None:
            await write(framed, S.Recon(reply))
    assert len(reconciler.want_ids) == 5
    await write(framed, S.Get((secret[0].id,)))
    with pytest.raises(FrameError):
        await read(framed)  # the responder resets instead of answering

    await wait_until(lambda: responder.invalid, DEADLINE, "the charge")
    assert responder.invalid == [(rogue.peer_id, S.UnwantedRequest.reason)]
    await sync(rogue, responder)  # and it still serves an honest session
    assert rogue.ids() == responder.ids()


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\xc1", S.BadMessage.reason),
        (S.encode(S.Get((b"\x01" * 32,))), S.BadMessage.reason),  # a get before any open
        (b"x" * (S.MAX_CONTROL_FRAME_BYTES + 1), REASON_BAD_FRAME),
    ],
)
async def test_a_bad_first_frame_is_charged_and_the_responder_keeps_serving(
    swarm: Swarm, frame: bytes, reason: str
) -> None:
    responder = await swarm.side("responder")
    rogue = await swarm.side("rogue")
    responder.add(make_records(3))
    await rogue.peer.connect(responder.peer)

    with trio.fail_after(DEADLINE):
        raw = await rogue.peer.host.new_stream(ID.from_base58(responder.peer_id), [PROTOCOL])
    framed = FramedStream(raw, S.MAX_FRAME_BYTES * 2)
    await framed.write_frame(frame)
    with pytest.raises(FrameError):
        await read(framed)

    await wait_until(lambda: responder.invalid, DEADLINE, "the charge")
    assert responder.invalid == [(rogue.peer_id, reason)]
    await sync(rogue, responder)
    assert rogue.ids() == responder.ids()


async def test_a_store_that_cannot_save_fails_the_session_and_is_counted(
    swarm: Swarm, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await swarm.pair()
    b.add(make_records(10))

    def cannot_save(*args: object, **kwargs: object) -> IngestResult:
        raise StoreError("the store could not save the change")

    monkeypatch.setattr(a.store, "ingest_wire", cannot_save)

    with pytest.raises(SyncFailed, match="store error"):
        await sync(a, b)
    assert a.sync.counters.failed == 1
    assert a.invalid == []  # our own disk is nobody's fault


async def test_a_peer_that_stops_answering_fails_the_sync_within_the_read_timeout(
    swarm: Swarm,
) -> None:
    victim = await swarm.side("victim", read_timeout=0.5)
    frozen = await swarm.side("frozen")

    async def never_answer(framed: FramedStream) -> None:
        await trio.sleep_forever()

    serve_raw(frozen, never_answer)
    await victim.peer.connect(frozen.peer)

    with pytest.raises(SyncFailed, match="stream failed"):
        await sync(victim, frozen)
    assert victim.invalid == []
    assert victim.sync.counters.failed == 1
