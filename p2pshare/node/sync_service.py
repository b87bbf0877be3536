"""Record sync over libp2p: serve ``/p2pshare/sync/1`` and reconcile with peers, one community each.

The wire format is ``p2pshare.protocol.sync_session`` (the session: open, fetch, done) around
``p2pshare.protocol.sync`` (the reconciliation); their docstrings are the spec. This module moves
frames between them, the Store and the network.

One session, either role: snapshot the community's ``(created_ms, id)`` items from the store
(``Store.range_items`` under the store limiter, then a ``SortedSyncSet`` built in a worker
thread: ~50 ms and ~230 bytes an item at 25k items, where the query-backed ``QuerySyncSet``
re-reads ranges and took ~5x longer per reconciliation), run the Reconciler (each step in a
worker thread: a big message costs milliseconds), then phase 1 (the initiator pulls what it
lacks) and phase 2 (the responder pulls). Pulling: up to PIPELINE_GETS ``get`` requests in
flight; each ``records`` frame is checked by ``sync_session.Fetcher`` (asked-for id, right
community) and queued for an ingest task, which hands the Node's ``ingest`` callback everything
queued at once (up to INGEST_BATCH_RECORDS), so the store's checking processes work on one batch
while the next arrives. ``done`` goes out after the last batch was ingested, so when
``sync_with`` returns both sides have stored what they fetched.

Faults: a peer that breaks the protocol (malformed frame, unrequested record, another
community's record, an id it may not ask for) is charged with ``on_invalid(peer, reason)`` and
its stream is reset; records refused by the ingest (bad signature, ...) are charged by the
ingest callback itself (the Node's ``ingest_wires`` does), so nothing is charged twice. A refusal
(``not-member``, ``busy``) is no fault. Every read and write has a deadline and every session an
overall one; no error escapes a served stream or the run loop.

Scheduling (``run``): a bounded number of worker tasks take peers from a de-duplicated queue and
sync every community we are in with them (``sync_all``: the peer refuses those it is not in, one
round trip each). Peers enter the queue from ``peer_connected`` (the Node calls it when it sees
a new connection; we use that hook rather than libp2p notifees, which fire inside the swarm's
tasks for every connection attempt) and every ``interval`` seconds (jittered) for every
connected peer. On a new connection only the side whose peer id sorts lower starts a sync (one
session serves both directions); should both start one anyway, the lower id's session wins and
the other is refused ``busy``. Sync never dials: it uses connections the node chose to make.

Usage, inside the host's lifetime::

    service = SyncService(host, communities=lambda: node.communities, store=store,
                          store_limiter=limiter, ingest=node.ingest_wires,
                          on_invalid=node.report_invalid)
    nursery.start_soon(service.run)          # serves, and syncs on connect and periodically
    service.peer_connected(peer_id)          # from the Node's connection watcher
    stats = await service.sync_with(peer_id, "public")
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Any, TypeVar

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.protocol_muxer.exceptions import ProtocolNotSupportedError

from p2pshare.node.host import is_connected
from p2pshare.node.store import IngestResult, Store, StoreError
from p2pshare.node.streams import (
    FramedStream,
    FrameError,
    FrameTooLarge,
    MalformedFrame,
    encode_uvarint,
)
from p2pshare.protocol import sync_session as session
from p2pshare.protocol.communities import is_community
from p2pshare.protocol.records import now_ms
from p2pshare.protocol.sync import Reconciler, Role, SortedSyncSet, SyncProtocolError
from p2pshare.protocol.sync_session import (
    Done,
    ErrorCode,
    Fetcher,
    Get,
    Message,
    Open,
    Recon,
    Records,
    Server,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

PROTOCOL = TProtocol(session.PROTOCOL_ID)

OPEN_TIMEOUT = 10.0  # stream negotiation on an existing connection
OPEN_RETRY_DELAYS = (0.5, 1.0, 2.0)  # a restarted peer's dead connection takes a moment to go
RETRY_DELAYS = (1.0, 3.0, 9.0)  # a busy peer or a session cut short: sync again after these
READ_TIMEOUT = 30.0  # one whole frame (a peer answering a get may first wait for its store)
WRITE_TIMEOUT = 30.0  # a peer that stops reading cannot hold us longer
SYNC_TIMEOUT = 300.0  # one whole session: ~1M records at the measured catch-up rate
SYNC_INTERVAL = 60.0
INTERVAL_JITTER = 0.2  # +-20%: peers that started together drift apart
MAX_CONCURRENT_SYNCS = 4  # sessions we initiate at once
MAX_SERVE_SESSIONS = 16  # sessions we answer at once, from all peers
PIPELINE_GETS = 2  # requests in flight: the peer reads the next one while we take the last
INGEST_QUEUE_FRAMES = 4  # received frames (<= 1 MiB each) waiting for the ingest task
INGEST_BATCH_RECORDS = 4096  # records handed to one ingest call at most

REASON_BAD_FRAME = "sync-bad-frame"  # a frame over the limit, or a malformed length prefix

Ingest = Callable[[Sequence[bytes], str], Awaitable[IngestResult]]
OnInvalid = Callable[[str, str], None]


async def store_from_peer(
    store: Store,
    limiter: trio.CapacityLimiter,
    wires: Sequence[bytes],
    peer_id: str,
    on_invalid: OnInvalid,
) -> IngestResult:
    """Store records a peer sent (each checked by the store, against the clock now) on the
    store's thread, and charge every one the store refuses to that peer: an ``Ingest``'s core."""
    fn = partial(store.ingest_wire, list(wires), now=now_ms())
    result = await trio.to_thread.run_sync(fn, limiter=limiter)
    for reason, count in result.rejected.items():
        for _ in range(count):
            on_invalid(peer_id, reason)
    return result


class SyncError(Exception):
    """A session did not complete; ``stats`` holds what it did before that.

    ``transient``: worth trying again soon (the peer was busy, or a connection died under the
    session while another one is up), as opposed to a refusal that stands or a fault.
    """

    def __init__(
        self, message: str, stats: SyncStats | None = None, *, transient: bool = False
    ) -> None:
        super().__init__(message)
        self.stats = stats
        self.transient = transient


class SyncRefused(SyncError):
    """The peer (or we, for a session already running) declined: no fault of anyone."""

    def __init__(self, code: ErrorCode, stats: SyncStats | None = None) -> None:
        super().__init__(f"sync refused: {code.value}", stats, transient=code is ErrorCode.BUSY)
        self.code = code


class SyncFailed(SyncError):
    """The stream failed, timed out, or the peer broke the protocol (then it was charged)."""


def _not_supported(exc: BaseException) -> bool:
    """Whether opening a stream failed because the peer refused the protocol (no use retrying)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ProtocolNotSupportedError) or "not supported" in str(cause):
            return True
        cause = cause.__cause__
    return False


class _Refused(Exception):
    def __init__(self, code: ErrorCode) -> None:
        self.code = code


class SyncRole(StrEnum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


@dataclass
class SyncStats:
    """What one session did, for logs and benchmarks."""

    peer: str
    community: str
    role: SyncRole
    snapshot_items: int = 0  # our items in the community when the session began
    want: int = 0  # ids the peer has and we lacked
    offer: int = 0  # ids we have and the peer lacked
    rounds: int = 0  # reconciliation messages received
    records_received: int = 0  # accepted from the peer and handed to ingest
    records_added: int = 0  # stored by the ingest (reposts bring their originals too)
    records_rejected: int = 0  # refused by the ingest (it charges the peer where due)
    records_missing: int = 0  # asked for but not delivered (deleted meanwhile)
    records_sent: int = 0
    bytes_sent: int = 0  # every frame, varint headers included
    bytes_received: int = 0
    reconcile_seconds: float = 0.0
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{self.role.value} {self.community} with {self.peer}: "
            f"+{self.records_added}/{self.records_received} received, {self.records_sent} sent, "
            f"{self.bytes_received} B in, {self.bytes_sent} B out, {self.rounds} rounds, "
            f"{self.seconds:.2f} s"
        )


@dataclass
class ServiceCounters:
    """Totals since start (status output, tests)."""

    initiated: int = 0
    served: int = 0
    completed: int = 0
    refused: int = 0
    failed: int = 0
    records_received: int = 0
    records_sent: int = 0


class _Channel:
    """A session's framed stream: typed messages, byte counts, the right limit per read."""

    def __init__(self, framed: FramedStream, stats: SyncStats, read_timeout: float) -> None:
        self.framed = framed
        self.stats = stats
        self._read_timeout = read_timeout

    async def send(self, message: Message) -> None:
        data = session.encode(message)
        self.framed.max_frame = session.MAX_FRAME_BYTES
        await self.framed.write_frame(data, WRITE_TIMEOUT)
        self.stats.bytes_sent += len(data) + len(encode_uvarint(len(data)))

    async def receive(self, *types: type[Any]) -> Any:
        """The next message, which must be one of ``types``; only records may exceed 64 KiB."""
        big = Records in types
        limit = session.MAX_FRAME_BYTES if big else session.MAX_CONTROL_FRAME_BYTES
        self.framed.max_frame = limit
        frame = await self.framed.read_frame(self._read_timeout)
        self.stats.bytes_received += len(frame) + len(encode_uvarint(len(frame)))
        return session.expect(session.decode(frame, limit), *types)


class SyncService:
    """Answer and start record reconciliations (see the module docstring)."""

    def __init__(
        self,
        host: IHost,
        *,
        communities: Callable[[], Iterable[str]],
        store: Store,
        store_limiter: trio.CapacityLimiter,
        ingest: Ingest,
        on_invalid: OnInvalid,
        interval: float = SYNC_INTERVAL,
        max_concurrent: int = MAX_CONCURRENT_SYNCS,
        max_serving: int = MAX_SERVE_SESSIONS,
        sync_timeout: float = SYNC_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        if max_concurrent < 1 or max_serving < 1 or interval <= 0:
            raise ValueError("max_concurrent and max_serving >= 1, interval > 0")
        self._host = host
        self._own_id = str(host.get_id())
        self._communities = communities
        self._store = store
        self._store_limiter = store_limiter
        self._ingest = ingest
        self._on_invalid = on_invalid
        self._interval = interval
        self._max_concurrent = max_concurrent
        self._max_serving = max_serving
        self._sync_timeout = sync_timeout
        self._read_timeout = read_timeout
        self._outgoing = trio.CapacityLimiter(max_concurrent)
        self._initiating: set[tuple[str, str]] = set()
        self._serving: Counter[tuple[str, str]] = Counter()
        self._queue_send, self._queue_receive = trio.open_memory_channel[str](math.inf)
        self._queued: set[str] = set()
        self._retries: dict[str, int] = {}  # peer -> retries made since its last full sync
        self._nursery: trio.Nursery | None = None
        self.counters = ServiceCounters()

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Answer ``/p2pshare/sync/1`` from now on (``run`` does this itself)."""
        self._host.set_stream_handler(PROTOCOL, self._handle)

    def stop(self) -> None:
        """Refuse new inbound sessions; running ones finish or time out."""
        self._host.remove_stream_handler(PROTOCOL)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve, and sync with peers as they connect and every ``interval`` seconds."""
        self.start()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for _ in range(self._max_concurrent):
                    nursery.start_soon(self._worker)
                nursery.start_soon(self._periodic)
                task_status.started()
        finally:
            self._nursery = None
            self.stop()

    def peer_connected(self, peer_id: str) -> None:
        """A new connection: sync with it soon, if we are the side that starts (lower id)."""
        self._retries.pop(peer_id, None)
        if self._own_id < peer_id:
            self.request_sync(peer_id)

    def request_sync(self, peer_id: str) -> None:
        """Queue a sync of every shared community with ``peer_id`` (once, however often asked)."""
        if peer_id == self._own_id or peer_id in self._queued:
            return
        self._queued.add(peer_id)
        self._queue_send.send_nowait(peer_id)

    async def _worker(self) -> None:
        async for peer_id in self._queue_receive:
            self._queued.discard(peer_id)
            if not is_connected(self._host, peer_id):
                continue
            try:
                await self.sync_all(peer_id)
            except Exception:  # a bug must not stop the other syncs
                logger.exception("sync: syncing with %s failed", peer_id)

    async def _periodic(self) -> None:
        """Every interval, sync with each connected peer we start with (the lower id, as on
        connect): one session serves both directions, so the other side need not start one."""
        while True:
            jitter = random.uniform(1 - INTERVAL_JITTER, 1 + INTERVAL_JITTER)
            await trio.sleep(self._interval * jitter)
            for peer in map(str, self._host.get_connected_peers()):
                if self._own_id < peer:
                    self.request_sync(peer)

    # --- initiating -----------------------------------------------------------------------------

    async def sync_all(self, peer_id: str) -> list[SyncStats]:
        """Sync each community we are in with ``peer_id``; the ones it is not in are skipped.

        A community that failed for a passing reason (busy, connection replaced) is tried again
        a few times with growing delays.
        """
        done: list[SyncStats] = []
        again = False
        for community in sorted(set(self._communities())):
            try:
                done.append(await self.sync_with(peer_id, community))
            except SyncRefused as exc:
                logger.debug("sync: %s refused %s: %s", peer_id, community, exc.code.value)
                again |= exc.transient
            except SyncError as exc:
                logger.info("sync: %s with %s failed: %s", community, peer_id, exc)
                again |= exc.transient
        if again:
            self._retry_later(peer_id)
        else:
            self._retries.pop(peer_id, None)
        return done

    def _retry_later(self, peer_id: str) -> None:
        attempt = self._retries.get(peer_id, 0)
        if attempt >= len(RETRY_DELAYS) or self._nursery is None:
            return
        self._retries[peer_id] = attempt + 1
        self._nursery.start_soon(self._request_after, peer_id, RETRY_DELAYS[attempt])

    async def _request_after(self, peer_id: str, delay: float) -> None:
        await trio.sleep(delay * random.uniform(1 - INTERVAL_JITTER, 1 + INTERVAL_JITTER))
        self.request_sync(peer_id)

    async def sync_with(self, peer_id: str, community: str) -> SyncStats:
        """Reconcile ``community`` with a connected peer, fetch what we lack, let it fetch.

        Returns when both sides have ingested what they fetched. Raises SyncRefused if the peer
        is not in the community or busy (or we already sync it with that peer), SyncFailed if
        the session broke (a protocol fault is charged to the peer first).
        """
        if not is_community(community) or community not in set(self._communities()):
            raise ValueError(f"{community!r} is not a community we are in")
        key = (peer_id, community)
        stats = SyncStats(peer_id, community, SyncRole.INITIATOR)
        if key in self._initiating or self._serving[key]:
            raise SyncRefused(ErrorCode.BUSY, stats)
        self._initiating.add(key)
        try:
            async with self._outgoing:
                self.counters.initiated += 1
                await self._counted(self._session(stats, None))
        finally:
            self._initiating.discard(key)
        return stats

    async def _open(self, peer_id: str) -> FramedStream:
        """A sync stream to a connected peer, retried a few times.

        A peer that restarted and reconnected may leave a dead connection behind that the swarm
        has not noticed yet; opening on it fails, and a moment later the new one is in place.
        """
        for delay in (*OPEN_RETRY_DELAYS, None):
            if not is_connected(self._host, peer_id):
                raise SyncFailed(f"not connected to {peer_id}")
            try:
                with trio.fail_after(OPEN_TIMEOUT):
                    raw = await self._host.new_stream(ID.from_base58(peer_id), [PROTOCOL])
                return FramedStream(raw, session.MAX_CONTROL_FRAME_BYTES)
            except trio.TooSlowError:
                failure = f"no sync stream to {peer_id} within {OPEN_TIMEOUT:g} s"
            except Exception as exc:  # the swarm raises many unrelated types
                if _not_supported(exc):  # not a p2pshare peer (or a much older one)
                    raise SyncFailed(f"{peer_id} does not speak {PROTOCOL}") from None
                failure = f"cannot open a sync stream: {type(exc).__name__}: {exc}"
            if delay is None:
                break
            logger.debug("sync: %s; retrying in %g s", failure, delay)
            await trio.sleep(delay)
        raise SyncFailed(failure, transient=True)

    async def _session(self, stats: SyncStats, framed: FramedStream | None) -> None:
        """Run one session to its end (opening the stream if ``framed`` is None, as initiator),
        turning every failure into SyncError; a broken stream is reset, never left half-read."""
        started = time.perf_counter()
        reset = True
        try:
            with trio.fail_after(self._sync_timeout):
                if framed is None:
                    framed = await self._open(stats.peer)
                channel = _Channel(framed, stats, self._read_timeout)
                if stats.role is SyncRole.RESPONDER:
                    await self._respond(channel)
                else:
                    await self._run_initiator(channel)
                await framed.close()
            reset = False
        except _Refused as exc:
            reset = stats.role is SyncRole.INITIATOR  # a responder closed after its error frame
            self.counters.refused += 1
            raise SyncRefused(exc.code, stats) from None
        except SyncProtocolError as exc:
            self._report(stats.peer, session.violation_reason(exc))
            raise SyncFailed(f"peer broke the protocol: {exc}", stats) from None
        except (FrameTooLarge, MalformedFrame) as exc:
            self._report(stats.peer, REASON_BAD_FRAME)
            raise SyncFailed(f"bad frame: {exc}", stats) from None
        except FrameError as exc:
            raise SyncFailed(f"stream failed: {exc}", stats, transient=True) from None
        except trio.TooSlowError:
            raise SyncFailed(f"session took over {self._sync_timeout:g} s", stats) from None
        except StoreError as exc:
            logger.warning("sync: store error: %s", exc)
            raise SyncFailed(f"store error: {exc}", stats) from None
        except SyncFailed as exc:
            exc.stats = stats
            raise
        finally:
            stats.seconds = time.perf_counter() - started
            if reset and framed is not None:
                await framed.reset()  # shielded and bounded; harmless on a dead stream
        self.counters.completed += 1
        self.counters.records_received += stats.records_received
        self.counters.records_sent += stats.records_sent
        log = logger.info if stats.records_received or stats.records_sent else logger.debug
        log("sync: %s", stats.summary())

    async def _counted(self, running: Awaitable[None]) -> None:
        try:
            await running
        except SyncFailed:
            self.counters.failed += 1
            raise

    def _report(self, peer: str, reason: str) -> None:
        logger.info("sync: %s from %s", reason, peer)
        try:
            self._on_invalid(peer, reason)
        except Exception:
            logger.exception("sync: on_invalid callback failed")

    async def _run_initiator(self, channel: _Channel) -> None:
        stats = channel.stats
        reconciler = await self._reconciler(stats, Role.INITIATOR)
        started = time.perf_counter()
        await channel.send(Open(stats.community))
        await channel.send(Recon(reconciler.initiate()))
        first = True
        while not reconciler.done:
            types: tuple[type[Any], ...] = (Recon, session.Error) if first else (Recon,)
            message = await channel.receive(*types)
            if isinstance(message, session.Error):
                raise _Refused(message.code)
            first = False
            await self._step(channel, reconciler, message)
        self._reconciled(stats, reconciler, started)
        await self._pull(channel, Fetcher(reconciler.want_ids, stats.community))
        await self._serve(channel, Server(reconciler.offer_ids))

    # --- responding -----------------------------------------------------------------------------

    async def _handle(self, stream: INetStream) -> None:
        peer = str(stream.muxed_conn.peer_id)
        framed = FramedStream(stream, session.MAX_CONTROL_FRAME_BYTES)
        stats = SyncStats(peer, "", SyncRole.RESPONDER)
        self.counters.served += 1

        try:
            await self._counted(self._session(stats, framed))
        except SyncRefused as exc:
            logger.debug("sync: refused %s from %s: %s", stats.community, peer, exc.code.value)
        except SyncError as exc:
            logger.info("sync: serving %s failed: %s", peer, exc)
        except Exception:  # never let a bug here take the connection down with it
            logger.exception("sync: serving %s failed", peer)
            await framed.reset()

    def _refusal(self, peer: str, request: Open) -> ErrorCode | None:
        if request.version != session.SESSION_VERSION:
            return ErrorCode.BAD_VERSION
        if request.community not in set(self._communities()):
            return ErrorCode.NOT_MEMBER
        key = (peer, request.community)
        if self._serving[key] or self._serving.total() >= self._max_serving:
            return ErrorCode.BUSY
        if key in self._initiating and self._own_id < peer:
            return ErrorCode.BUSY  # both started one: the lower peer id's session goes ahead
        return None

    async def _respond(self, channel: _Channel) -> None:
        stats = channel.stats
        request: Open = await channel.receive(Open)
        stats.community = request.community
        code = self._refusal(stats.peer, request)
        if code is not None:
            await channel.send(session.Error(code))
            await channel.framed.close()
            raise _Refused(code)
        key = (stats.peer, request.community)
        self._serving[key] += 1
        try:
            reconciler = await self._reconciler(stats, Role.RESPONDER)
            started = time.perf_counter()
            while not reconciler.done:
                await self._step(channel, reconciler, await channel.receive(Recon))
            self._reconciled(stats, reconciler, started)
            await self._serve(channel, Server(reconciler.offer_ids))
            await self._pull(channel, Fetcher(reconciler.want_ids, stats.community))
        finally:
            self._serving[key] -= 1
            if self._serving[key] <= 0:
                del self._serving[key]

    # --- the shared parts -----------------------------------------------------------------------

    async def _reconciler(self, stats: SyncStats, role: Role) -> Reconciler:
        """A reconciler over a snapshot of the community (query under the store limiter)."""
        items = await trio.to_thread.run_sync(
            self._store.range_items, stats.community, None, None, None, limiter=self._store_limiter
        )
        snapshot = await trio.to_thread.run_sync(SortedSyncSet, items)
        stats.snapshot_items = len(snapshot)
        return Reconciler(snapshot, role)

    async def _step(self, channel: _Channel, reconciler: Reconciler, message: Recon) -> None:
        reply = await trio.to_thread.run_sync(reconciler.receive, message.message)
        if reply is not None:
            await channel.send(Recon(reply))

    @staticmethod
    def _reconciled(stats: SyncStats, reconciler: Reconciler, started: float) -> None:
        stats.rounds = reconciler.rounds
        stats.want = len(reconciler.want_ids)
        stats.offer = len(reconciler.offer_ids)
        stats.reconcile_seconds = time.perf_counter() - started

    async def _pull(self, channel: _Channel, fetcher: Fetcher) -> None:
        """Fetch what we lack, ingesting while the next batch arrives; then say done.

        Records already accepted are ingested even when the peer breaks the protocol later
        (each is checked by the store on its own), so the error is raised after the drain.
        """
        send, receive = trio.open_memory_channel[list[bytes]](INGEST_QUEUE_FRAMES)
        failure: Exception | None = None

        async def ingest() -> None:
            nonlocal failure
            try:
                await self._ingest_loop(receive, channel.stats)
            except StoreError as exc:  # raised inside the nursery it would come out as a group
                failure = exc
                nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ingest)
            async with send:
                try:
                    await self._fetch(channel, fetcher, send)
                except Exception as exc:
                    failure = exc
        channel.stats.records_received = fetcher.received
        channel.stats.records_missing = fetcher.missing
        if failure is not None:
            raise failure
        await channel.send(Done())

    async def _fetch(
        self, channel: _Channel, fetcher: Fetcher, send: trio.MemorySendChannel[list[bytes]]
    ) -> None:
        while not fetcher.finished:
            while fetcher.outstanding < PIPELINE_GETS:
                request = fetcher.next_get()
                if request is None:
                    break
                await channel.send(request)
            frame: Records = await channel.receive(Records)
            wires = fetcher.accept(frame)
            if wires:
                await send.send(wires)

    async def _ingest_loop(
        self, receive: trio.MemoryReceiveChannel[list[bytes]], stats: SyncStats
    ) -> None:
        async with receive:
            async for wires in receive:
                batch = list(wires)
                while len(batch) < INGEST_BATCH_RECORDS:
                    try:
                        batch.extend(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                result = await self._ingest(batch, stats.peer)
                stats.records_added += len(result.added)
                stats.records_rejected += result.rejected.total()

    async def _serve(self, channel: _Channel, server: Server) -> None:
        """Answer the peer's gets from the store until it says done."""
        while True:
            message = await channel.receive(Get, Done)
            if isinstance(message, Done):
                return
            ids = server.check(message)
            found = await trio.to_thread.run_sync(
                self._store.get_wires, ids, limiter=self._store_limiter
            )
            wires = [found[i] for i in ids if i in found]
            for frame in session.record_frames(wires):
                await channel.send(frame)
            channel.stats.records_sent += len(wires)
