"""Records by gossip: one GossipSub topic per community, validated before anything is forwarded.

Topic ``p2pshare/1/<community>``; each message's data is one record's exact wire bytes and its
message id is the record id, so the same record reaching us by two paths is one message. The
validator decodes the record (canonical form, signature, limits, clock), checks it belongs to the
topic's community, then asks the node's policy (blocked authors...). A refused record is neither
delivered nor forwarded; the peer that handed it to us is reported through ``on_invalid`` and,
for faults no honest peer commits, struck; enough strikes and we disconnect and ignore it for a
while (py-libp2p's peer scores never disconnect anyone). Gossip is best-effort: sync repairs gaps.

Delivery happens from the validator, not from py-libp2p's subscription queue: pubsub checks
"seen", runs the validator and marks the message seen without yielding in between, so each new
valid record is accepted exactly once, and only the validator learns which peer forwarded it.
The subscription queue holds just 32 messages and drops the rest of a burst (measured: 16 of 100
delivered), so we only drain it and queue accepted records in a queue of our own.

Lifecycle, inside the host's lifetime::

    async with open_host(identity, addrs) as host, trio.open_nursery() as nursery:
        gossip = Gossip(host, on_record=..., policy=..., on_invalid=...)
        await nursery.start(gossip.run)      # start before dialing anyone (see ``run``)
        await gossip.join("public")
        await gossip.publish(record)
        ...
        nursery.cancel_scope.cancel()        # or leave the block: gossip stops before the host

``open_gossip(host, ...)`` does the nursery part for code that wants one block.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from libp2p.abc import IHost, ISubscriptionAPI
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from p2pshare.node.host import only_wraps
from p2pshare.protocol import limits as L
from p2pshare.protocol.communities import is_community
from p2pshare.protocol.reasons import Reason, RecordError
from p2pshare.protocol.records import Record, decode_record, now_ms, record_id

logger = logging.getLogger(__name__)

TOPIC_PREFIX = "p2pshare/1/"

# Whole gossip messages (record + pubsub envelope + sender record) must stay under one 64 KiB
# Yamux frame: concurrent larger RPCs interleave and stall js-libp2p readers. The envelope
# takes a few hundred bytes; larger records travel by sync only.
MAX_GOSSIP_RECORD_BYTES = L.MAX_GOSSIP_RECORD_BYTES

# --- GossipSub settings, each chosen on purpose (see notes/py-libp2p.md) -------------------
# /meshsub/1.1.0 only (go and js speak it). py-libp2p's 1.2 sends an IDONTWANT for every
# message whatever its size, one by one, before forwarding it: measured 9.8 -> 4.8 RPCs per
# node-message and half the CPU (bench/gossip.py) without it.
GOSSIP_PROTOCOLS = [PROTOCOL_ID_V11]
DEGREE = 6
DEGREE_LOW = 4
# Above the ~12 peers a small node has: with 6, low-degree nodes were pruned and backed off
# for over 60 s in 13 of 59 runs; with 12, in none of 24.
DEGREE_HIGH = 12
HEARTBEAT_SECONDS = 1  # library default is 120 s: mesh repair would take minutes
# Messages per second per topic that one neighbour may forward to us; beyond it the library
# drops them (and dings the peer's score). Its default, 10, lost 20 of 30 in a burst. A Python
# node spends milliseconds of CPU per message, so this is also roughly our CPU ceiling.
MAX_MESSAGES_PER_TOPIC_PER_SECOND = 100.0
# The same limit applies to our own publishes, silently. We pace ours evenly, well below it,
# leaving room for other origins' records that share a neighbour with ours.
OWN_PUBLISHES_PER_TOPIC_PER_SECOND = 50
# "Adaptive gossip" stretches the heartbeat to 30-60 s whenever its health estimate drops,
# undoing HEARTBEAT_SECONDS; IP-diversity "eclipse protection" means nothing on one LAN.
ADAPTIVE_GOSSIP = False
ECLIPSE_PROTECTION = False
# Invalid messages are never cached as invalid: each repeat must reach the validator so that it
# counts against the peer (valid ones are deduplicated by the seen-cache anyway).
VALIDATION_CACHE_TTL = 0
VALIDATION_CACHE_SIZE = 1

DELIVERY_QUEUE = 1024  # accepted records waiting for on_record; beyond it they are dropped
DEFAULT_MAX_STRIKES = 10
DEFAULT_BAN_SECONDS = 600.0
_DISCONNECT_TIMEOUT = 5.0

# Faults in the encoding or signature, which every honest version rejects, so the peer that
# forwarded them skipped validation: these strike it. Content rules (kinds, fields, licences,
# clock, our blocks) may differ between versions or be our own policy: reported, not struck.
PEER_FAULT_REASONS = frozenset(
    {
        Reason.TOO_LARGE,
        Reason.MALFORMED,
        Reason.NON_CANONICAL,
        Reason.TRAILING_BYTES,
        Reason.FORBIDDEN_TYPE,
        Reason.BAD_AUTHOR,
        Reason.BAD_TIMESTAMP,
        Reason.BAD_COMMUNITY,
        Reason.BAD_SIGNATURE,
    }
)

# trio.TaskStatus exists, but libp2p pulls in the old trio-stubs package, which shadows trio's
# own annotations for mypy and lacks it.
TaskStatusAny = Any

OnRecord = Callable[[Record, str], Awaitable[None] | None]
Policy = Callable[[Record], Reason | None]
OnInvalid = Callable[[str, Reason], None]


class GossipError(Exception):
    """Gossip was used wrongly (not running, community not joined)."""


def topic_for(community: str) -> str:
    if not is_community(community):
        raise ValueError(f"{community!r} is not a community slug")
    return TOPIC_PREFIX + community


def _accept_all(record: Record) -> Reason | None:
    return None


def _ignore_invalid(peer_id: str, reason: Reason) -> None:
    return None


class Gossip:
    """One node's gossip: joined communities, validation, delivery, strikes against peers.

    ``on_record(record, peer_id)`` gets each new valid record from others, with the peer that
    handed it to us, in one task, in arrival order. Normally once per record, but the seen-cache
    forgets after two minutes: the store must still deduplicate. Keep it quick: beyond
    ``DELIVERY_QUEUE`` waiting records, new ones are dropped (counted in ``dropped``). Our own
    publishes are not handed back. ``policy(record)`` returns a reason to refuse (e.g.
    ``Reason.BLOCKED``) or ``None``. ``on_invalid(peer_id, reason)`` hears of every refused
    record; it is called from the validator, so it must not block.
    """

    def __init__(
        self,
        host: IHost,
        on_record: OnRecord,
        policy: Policy = _accept_all,
        on_invalid: OnInvalid = _ignore_invalid,
        *,
        max_strikes: int = DEFAULT_MAX_STRIKES,
        ban_seconds: float = DEFAULT_BAN_SECONDS,
    ) -> None:
        self.host = host
        self._on_record = on_record
        self._policy = policy
        self._on_invalid = on_invalid
        self.max_strikes = max_strikes
        self.ban_seconds = ban_seconds
        self.dropped = 0  # accepted records lost because on_record fell behind
        self._my_id = host.get_id()
        self._pubsub: Pubsub | None = None
        self._router: GossipSub | None = None
        self._nursery: trio.Nursery | None = None
        self._deliveries: trio.MemorySendChannel[tuple[Record, str]] | None = None
        self._joined: set[str] = set()
        self._drains: dict[str, trio.CancelScope] = {}
        self._publishing = trio.Lock()
        self._next_publish: dict[str, float] = {}
        self._strikes: dict[str, int] = {}
        self._banned: set[str] = set()

    # --- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatusAny = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; ``await nursery.start(gossip.run)`` returns once it is ready.

        Start it before connecting to peers: py-libp2p's pubsub learns of peers from connection
        events, and a peer connected earlier may have given up opening its pubsub stream to us
        (we still open ours to every already-connected peer).
        """
        if self._pubsub is not None:
            raise GossipError("gossip is already running")
        router = _new_router()
        network: Any = self.host.get_network()
        notifees_before = list(network.notifees)
        pubsub = Pubsub(
            self.host,
            router,
            strict_signing=True,  # as go/js: every message signed by its origin peer
            msg_id_constructor=_message_id,
            validation_cache_ttl=VALIDATION_CACHE_TTL,
            validation_cache_size=VALIDATION_CACHE_SIZE,
        )
        added_notifees = [n for n in network.notifees if n not in notifees_before]
        send, receive = trio.open_memory_channel[tuple[Record, str]](DELIVERY_QUEUE)
        try:
            async with background_trio_service(pubsub), background_trio_service(router):
                await pubsub.wait_until_ready()
                with send, receive:  # closed after the nursery's tasks have ended
                    async with trio.open_nursery() as nursery:
                        self._pubsub, self._router, self._nursery = pubsub, router, nursery
                        self._deliveries = send
                        nursery.start_soon(self._deliver, receive)
                        for peer in self.host.get_connected_peers():
                            nursery.start_soon(pubsub.ensure_peer_stream, peer)
                        task_status.started()
                        await trio.sleep_forever()
        finally:
            self._pubsub = self._router = self._nursery = self._deliveries = None
            self._joined.clear()
            self._drains.clear()
            # Pubsub never unregisters itself: without this its notifee would hear every later
            # connection and its handlers would accept gossip streams nobody reads.
            for notifee in added_notifees:
                network.remove_notifee(notifee)
            for protocol in GOSSIP_PROTOCOLS:
                self.host.remove_stream_handler(protocol)

    # --- communities -------------------------------------------------------------------------

    @property
    def joined(self) -> frozenset[str]:
        return frozenset(self._joined)

    async def join(self, community: str) -> None:
        """Subscribe to a community's topic; its records start arriving at ``on_record``."""
        pubsub, nursery = self._running()
        if community in self._joined:
            return
        topic = topic_for(community)
        self._joined.add(community)
        # The validator goes in first, so no message of the topic is ever accepted unchecked.
        pubsub.set_topic_validator(topic, self._validator(topic), is_async_validator=False)
        subscription = await pubsub.subscribe(topic)
        await nursery.start(self._drain, community, subscription)

    async def leave(self, community: str) -> None:
        """Unsubscribe: no more records of the community are delivered or forwarded by us."""
        pubsub, _ = self._running()
        if community not in self._joined:
            return
        self._joined.discard(community)  # records of it still queued are not delivered either
        topic = topic_for(community)
        await pubsub.unsubscribe(topic)
        pubsub.remove_topic_validator(topic)  # after unsubscribing: never a moment unchecked
        drain = self._drains.pop(community, None)
        if drain is not None:
            drain.cancel()

    async def publish(self, record: Record) -> bool:
        """Gossip one of our records (or one we pass on); ``False`` if too big for gossip.

        Only to joined communities: we push nothing into communities we are not part of. Paced
        to ``OWN_PUBLISHES_PER_TOPIC_PER_SECOND``: faster, py-libp2p drops the excess without
        telling us (its rate limit, and its outbound queues).
        """
        pubsub, _ = self._running()
        if record.community not in self._joined:
            raise GossipError(f"not a member of community {record.community!r}")
        if len(record.wire) > MAX_GOSSIP_RECORD_BYTES:
            return False
        topic = topic_for(record.community)
        async with self._publishing:
            await self._pace(topic)
            await pubsub.publish(topic, record.wire)
        return True

    async def _pace(self, topic: str) -> None:
        """Evenly spaced, never in bursts: a burst overflows py-libp2p's 32-RPC outbound queue
        per peer before its sender runs (measured: a burst of 50 lost more than half)."""
        now = trio.current_time()
        start = max(now, self._next_publish.get(topic, now))
        self._next_publish[topic] = start + 1.0 / OWN_PUBLISHES_PER_TOPIC_PER_SECOND
        await trio.sleep(start - now)  # also a checkpoint when no wait is due

    # --- peers -------------------------------------------------------------------------------

    def mesh_peers(self, community: str) -> set[str]:
        """Peers we exchange full messages with for this community right now."""
        if self._router is None:
            return set()
        return {str(peer) for peer in self._router.mesh.get(topic_for(community), ())}

    async def wait_for_mesh(self, community: str, peer_id: str, timeout: float) -> None:
        """Wait until ``peer_id`` is in the community's mesh; raises trio.TooSlowError."""
        if self._router is None:
            raise GossipError("gossip is not running")
        await self._router.wait_for_mesh(ID.from_base58(peer_id), topic_for(community), timeout)

    def strikes(self, peer_id: str) -> int:
        return self._strikes.get(peer_id, 0)

    def is_banned(self, peer_id: str) -> bool:
        return peer_id in self._banned

    # --- validation and delivery -------------------------------------------------------------

    def _validator(self, topic: str) -> Callable[[ID, rpc_pb2.Message], bool]:
        community = topic.removeprefix(TOPIC_PREFIX)

        def validate(forwarder: ID, message: rpc_pb2.Message) -> bool:
            if forwarder == self._my_id:
                return True  # our own publish: a Record, checked when it was made
            if list(message.topicIDs) != [topic]:  # validated per topic: one topic each
                self._refuse(forwarder, Reason.BAD_COMMUNITY)
                return False
            checked = self._check(community, message.data)
            if isinstance(checked, Reason):
                self._refuse(forwarder, checked)
                return False
            if message.from_id != self._my_id.to_bytes():  # pubsub drops echoes of ours
                self._queue(checked, str(forwarder))
            return True

        return validate

    def _check(self, community: str, wire: bytes) -> Record | Reason:
        try:
            record = decode_record(wire, now=now_ms())
        except RecordError as exc:
            return exc.reason
        except Exception:  # a decoder bug must not take pubsub down; it is not the peer's fault
            logger.exception("record decoder failed")
            return Reason.MALFORMED
        if record.community != community:
            return Reason.BAD_COMMUNITY
        try:
            reason = self._policy(record)
        except Exception:
            logger.exception("gossip policy callback failed; refusing the record")
            return Reason.BLOCKED
        return record if reason is None else reason

    def _queue(self, record: Record, forwarder: str) -> None:
        if self._deliveries is None:
            return
        try:
            self._deliveries.send_nowait((record, forwarder))
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.dropped += 1

    def _refuse(self, forwarder: ID, reason: Reason) -> None:
        peer = str(forwarder)
        try:
            self._on_invalid(peer, reason)
        except Exception:
            logger.exception("gossip on_invalid callback failed")
        if reason not in PEER_FAULT_REASONS or peer in self._banned:
            return
        self._strikes[peer] = self._strikes.get(peer, 0) + 1
        if self._strikes[peer] >= self.max_strikes:
            self._ban(forwarder)

    def _ban(self, peer: ID) -> None:
        pubsub, nursery = self._running()
        logger.warning("disconnecting %s: %d invalid records", peer, self._strikes[str(peer)])
        self._banned.add(str(peer))
        pubsub.add_to_blacklist(peer)  # drops its messages, refuses its pubsub streams
        nursery.start_soon(self._disconnect_then_unban, peer)

    async def _disconnect_then_unban(self, peer: ID) -> None:
        with trio.move_on_after(_DISCONNECT_TIMEOUT):
            await self.host.disconnect(peer)
        await trio.sleep(self.ban_seconds)
        self._banned.discard(str(peer))
        self._strikes.pop(str(peer), None)
        if self._pubsub is not None:
            self._pubsub.remove_from_blacklist(peer)

    async def _deliver(self, receive: trio.MemoryReceiveChannel[tuple[Record, str]]) -> None:
        async for record, forwarder in receive:
            if record.community not in self._joined:
                continue  # left the community while the record waited
            try:
                result = self._on_record(record, forwarder)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("gossip on_record callback failed")

    async def _drain(
        self,
        community: str,
        subscription: ISubscriptionAPI,
        task_status: TaskStatusAny = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Empty the library's subscription queue, whose contents we already have."""
        # TrioSubscriptionAPI's channel; the interface only offers get(), one message per turn.
        channel: trio.MemoryReceiveChannel[Any] = subscription.receive_channel  # type: ignore[attr-defined]
        with trio.CancelScope() as scope:
            self._drains[community] = scope
            task_status.started()
            async for _ in channel:  # ends when leave() unsubscribes
                with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel):
                    while True:  # all that queued up, in one go
                        channel.receive_nowait()

    def _running(self) -> tuple[Pubsub, trio.Nursery]:
        if self._pubsub is None or self._nursery is None:
            raise GossipError("gossip is not running: start it with nursery.start(gossip.run)")
        return self._pubsub, self._nursery


def _message_id(message: rpc_pb2.Message) -> bytes:
    return record_id(message.data)


def _new_router() -> GossipSub:
    return GossipSub(
        protocols=GOSSIP_PROTOCOLS,
        degree=DEGREE,
        degree_low=DEGREE_LOW,
        degree_high=DEGREE_HIGH,
        heartbeat_interval=HEARTBEAT_SECONDS,
        adaptive_gossip_enabled=ADAPTIVE_GOSSIP,
        eclipse_protection_enabled=ECLIPSE_PROTECTION,
        spam_protection_enabled=True,
        max_messages_per_topic_per_second=MAX_MESSAGES_PER_TOPIC_PER_SECOND,
    )


@asynccontextmanager
async def open_gossip(
    host: IHost,
    on_record: OnRecord,
    policy: Policy = _accept_all,
    on_invalid: OnInvalid = _ignore_invalid,
    **options: Any,
) -> AsyncIterator[Gossip]:
    """Run a ``Gossip`` for the duration of the block (its own nursery, cancelled at exit)."""
    gossip = Gossip(host, on_record, policy, on_invalid, **options)
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(gossip.run)
            try:
                yield gossip
            except BaseException as exc:
                body_error = exc
                raise
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if body_error is None or not only_wraps(group, body_error):
            raise
    if body_error is not None:  # the caller's own error, without the nursery's wrapping
        raise body_error
