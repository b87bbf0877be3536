"""Documents over libp2p: serve ``/p2pshare/blocks/1`` and download a document from many peers.

The wire format is ``p2pshare.protocol.transfer`` (its docstring is the spec) and the choice of
which chunk to ask whom for is ``p2pshare.protocol.download_plan``; this module only moves frames
between them, the ``BlobStore`` and the network.

Serving. Every inbound stream carries requests answered in order. ``have`` and ``manifest`` come
from the blob store (complete blobs, and the verified chunks of partial downloads, which other
peers may fetch from us while we still download). Chunks are read in a worker thread a few at a
time while the previous ones are being sent. At most ``max_streams_per_peer`` streams per peer
(and ``MAX_SERVE_STREAMS`` in all) are served at once: a stream past that gets ``error busy`` for
its first request and is closed, so one peer cannot take every reader thread.

Downloading. ``download(root, peers)`` asks each peer ``have`` on a stream of its own, fetches the
manifest from the first one that has the document and checks it against the root, then lets
``BlobStore.start`` say which chunks are still missing (a resumed download never fetches a
verified chunk again). One worker task per peer then keeps ``PIPELINE_DEPTH`` ``chunks``
requests outstanding on its stream (``plan.next_request``; the peer answers them in order, so
its link never idles between two responses), checks every reply frame with
``transfer.ChunkResponse`` and hands each chunk to a verifier task, which hashes and writes the
chunks queued meanwhile in one thread hop (``BlobStore.write_chunk``) while the next ones
arrive, and settles each request with the plan once all its chunks were checked. A chunk that fails
its hash is a strike for the sender (``on_invalid(peer, "corrupt-chunk")``) and is fetched from
someone else; a broken reply (bad frame, unrequested chunk) is charged and the peer backs off; a
peer that vanishes only fails its current request. When the plan is done the download is
finished (atomic rename); when it is stuck (nothing in flight, no peer has what is missing) a
``DownloadError`` says what is missing and the partial file stays for a later resume. Peers that
connect meanwhile can join with ``add_source``. Cancelling a download persists what was verified.

Usage, inside the host's lifetime::

    service = TransferService(host, blobs=blobs, blob_limiter=trio.CapacityLimiter(1),
                              on_invalid=node.report_invalid, on_progress=publish_progress)
    service.start()                                # answer other peers
    path = await service.download(root, [peer_a, peer_b])
"""

from __future__ import annotations

import logging
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2pshare.node.blobs import BlobError, BlobNotFound, BlobStore, ChunkResult
from p2pshare.node.streams import (
    FramedStream,
    FrameError,
    FrameTooLarge,
    MalformedFrame,
    StreamEnded,
)
from p2pshare.protocol import transfer
from p2pshare.protocol.documents import Manifest, ManifestError, decode_manifest
from p2pshare.protocol.download_plan import DownloadPlan, PeerStats, PeerStatus
from p2pshare.protocol.transfer import (
    ChunkFrame,
    ChunkResponse,
    ChunksRequest,
    ErrorCode,
    ErrorReply,
    HaveRequest,
    HaveState,
    ManifestRequest,
    PeerProtocolError,
    Reply,
    Request,
    RequestRefused,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

PROTOCOL = TProtocol(transfer.PROTOCOL_ID)

OPEN_TIMEOUT = 10.0  # dial (if needed) + stream negotiation
READ_TIMEOUT = 30.0  # one whole reply frame; a 256 KiB chunk takes ~1 ms on a LAN
WRITE_TIMEOUT = 30.0  # a peer that stops reading cannot hold a stream longer than this
SERVE_IDLE_TIMEOUT = 60.0  # a served stream may sit this long between requests
CLIENT_IDLE_CLOSE = 20.0  # a downloader closes a stream idle this long (below the server's)
CLOSE_TIMEOUT = 2.0
SYNC_TIMEOUT = 10.0  # persisting a cancelled download's progress
MAX_STREAMS_PER_PEER = 4
MAX_SERVE_STREAMS = 64
READ_BATCH_CHUNKS = 4  # chunks read per thread hop and sent per write when serving (1 MiB)
VERIFY_BATCH_CHUNKS = 4  # chunks handed to the verifier at once (one thread hop), 1 MiB
VERIFY_QUEUE_BATCHES = 4  # batches waiting for their hash check, per peer
PIPELINE_DEPTH = 2  # chunks requests outstanding per peer (plan option max_requests_per_peer)
PROGRESS_INTERVAL = 0.1  # at most 10 progress callbacks per second per download
STOP_GRACE = 2.0  # workers still mid-request this long after the end are cancelled
START_GATE = 0.5  # first requests wait this long for the other initial peers' ``have``
IDLE_POLL = 0.25  # an idle worker re-asks the plan this often (back-off and endgame timers)
BUSY_RETRIES = 3

# Reasons passed to on_invalid (plain strings: the Node counts them as peer faults).
REASON_CORRUPT_CHUNK = "corrupt-chunk"
REASON_BAD_MANIFEST = "bad-manifest"
REASON_BAD_REPLY = "bad-reply"
REASON_BAD_FRAME = "bad-frame"
REASON_BAD_REQUEST = "bad-request"

OnInvalid = Callable[[str, str], None]
OnProgress = Callable[[bytes, "DownloadProgress"], None]


class DownloadError(Exception):
    """A download cannot finish now; what it has verified is kept for a later resume."""

    def __init__(self, root: bytes, message: str, missing: Sequence[int] = ()) -> None:
        super().__init__(f"document {root.hex()[:12]}: {message}")
        self.root = root
        self.missing = tuple(missing)


@dataclass(frozen=True)
class DownloadProgress:
    """What a download has, and who gave it: the UI's progress bar and "sources" column."""

    root: bytes
    size: int
    chunk_count: int
    present_chunks: int
    present_bytes: int
    sources: Mapping[str, PeerStats]
    elapsed: float
    done: bool = False

    @property
    def fraction(self) -> float:
        return 1.0 if self.size == 0 else self.present_bytes / self.size


@dataclass
class ServeStats:
    """What this node served (for status output and tests)."""

    requests: int = 0
    chunks_sent: int = 0
    bytes_sent: int = 0
    busy_refusals: int = 0
    bad_requests: int = 0


class _Unreachable(Exception):
    """No stream to the peer could be opened."""


class _BadFrame(Exception):
    """A request frame over the limit, or with a malformed length prefix."""


class _Stopping(Exception):
    """The download is over (done or given up): a worker leaves at a frame boundary."""


class _Dropped(Exception):
    """The plan dropped the peer (too many strikes) while it was still sending."""


@dataclass(frozen=True)
class _Settle:
    """For the verifier, after the chunks before it: a response ended, or the stream failed."""

    response: ChunkResponse | None  # None: every outstanding request failed with ``failure``
    failure: Exception | None = None


@dataclass(eq=False)
class _Job:
    """One running download: its plan, its workers, and the events they coordinate on."""

    root: bytes
    size_hint: int | None
    chunk_size_hint: int | None
    started: float
    plan: DownloadPlan[str] | None = None
    nursery: trio.Nursery | None = None
    workers: set[str] = field(default_factory=set)
    setting_up: set[str] = field(default_factory=set)  # workers still at have / manifest
    notes: dict[str, str] = field(default_factory=dict)  # peer -> why it could not help
    changed: trio.Event = field(default_factory=trio.Event)
    gate: trio.Event = field(default_factory=trio.Event)
    manifest_lock: trio.Lock = field(default_factory=trio.Lock)
    finished: trio.Event = field(default_factory=trio.Event)
    fatal: DownloadError | None = None
    error: DownloadError | None = None
    stopping: bool = False  # done or given up: workers leave at their next frame boundary
    last_progress: float = -math.inf

    def notify(self) -> None:
        """Wake everyone waiting for the plan to change; they re-check their conditions."""
        self.changed.set()
        self.changed = trio.Event()
        if not self.setting_up or self.stopping:
            self.gate.set()

    def fail(self, error: DownloadError) -> None:
        if self.fatal is None:
            self.fatal = error
        self.notify()


class _Session:
    """The requester's stream to one peer: opened when first needed, reopened after a failure."""

    def __init__(self, host: IHost, peer: str, read_timeout: float) -> None:
        self._host = host
        self.peer = peer
        self._read_timeout = read_timeout
        self._framed: FramedStream | None = None
        self._next_id = 0
        self.last_used = trio.current_time()

    def next_id(self) -> int:
        request_id = self._next_id
        self._next_id = (self._next_id + 1) % (transfer.MAX_REQUEST_ID + 1)
        return request_id

    async def _stream(self) -> FramedStream:
        if self._framed is not None:
            return self._framed
        try:
            with trio.fail_after(OPEN_TIMEOUT):
                raw = await self._host.new_stream(ID.from_base58(self.peer), [PROTOCOL])
        except trio.TooSlowError:
            raise _Unreachable(f"no stream within {OPEN_TIMEOUT:g} s") from None
        except Exception as exc:  # the swarm raises many unrelated types for a failed dial
            raise _Unreachable(f"{type(exc).__name__}: {exc}") from exc
        self._framed = FramedStream(raw, transfer.MAX_REPLY_FRAME_BYTES)
        return self._framed

    async def send(self, request: Request) -> None:
        framed = await self._stream()
        self.last_used = trio.current_time()
        await framed.write_frame(transfer.encode(request), WRITE_TIMEOUT)

    async def read_reply(self, limit: int) -> Reply:
        """The next reply frame, refused from its header alone if it is over ``limit`` bytes."""
        framed = await self._stream()
        framed.max_frame = limit
        frame = await framed.read_frame_buffer(self._read_timeout)
        self.last_used = trio.current_time()
        return transfer.decode_reply(frame, limit)

    async def ask(self, request: Request) -> Reply:
        await self.send(request)
        return await self.read_reply(transfer.max_reply_bytes(request))

    @property
    def idle_for(self) -> float:
        return trio.current_time() - self.last_used if self._framed is not None else 0.0

    async def drop(self) -> None:
        """Abort the stream (its framing may be lost); the next request opens a new one."""
        framed, self._framed = self._framed, None
        if framed is not None:
            await framed.reset()

    async def close(self) -> None:
        """End the stream politely; bounded, and safe while being cancelled."""
        framed, self._framed = self._framed, None
        if framed is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
            if framed.broken:
                await framed.reset()
            else:
                await framed.close()


class TransferService:
    """Serve documents from a BlobStore and download documents into it (see module docstring)."""

    def __init__(
        self,
        host: IHost,
        *,
        blobs: BlobStore,
        blob_limiter: trio.CapacityLimiter,
        on_invalid: OnInvalid,
        on_progress: OnProgress | None = None,
        max_streams_per_peer: int = MAX_STREAMS_PER_PEER,
        read_timeout: float = READ_TIMEOUT,
        progress_interval: float = PROGRESS_INTERVAL,
        plan_options: Mapping[str, Any] | None = None,
    ) -> None:
        """``plan_options`` are passed to each ``DownloadPlan`` (steal_after, retry_backoff...)."""
        self._host = host
        self._own_id = str(host.get_id())
        self._blobs = blobs
        self._limiter = blob_limiter
        self._on_invalid = on_invalid
        self._on_progress = on_progress
        self._max_streams_per_peer = max_streams_per_peer
        self._read_timeout = read_timeout
        self._progress_interval = progress_interval
        self._plan_options = {"max_requests_per_peer": PIPELINE_DEPTH, **(plan_options or {})}
        self._jobs: dict[bytes, _Job] = {}
        self._serving: Counter[str] = Counter()
        self._manifests: dict[bytes, Manifest] = {}  # a root names one manifest forever
        self.stats = ServeStats()

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Answer ``/p2pshare/blocks/1`` requests from now on."""
        self._host.set_stream_handler(PROTOCOL, self._handle)

    def stop(self) -> None:
        """Stop accepting new streams (streams being served finish their current request)."""
        self._host.remove_stream_handler(PROTOCOL)

    # --- helpers ----------------------------------------------------------------------------------

    async def _blob(self, fn: Callable[..., T], *args: Any, abandon: bool = False) -> T:
        """Blocking blob-store work in a thread, never on the trio thread.

        ``abandon`` only for reads nobody needs once cancelled (libp2p pulls in old trio-stubs
        that lack ``abandon_on_cancel``, hence the untyped alias).
        """
        run_sync: Any = trio.to_thread.run_sync
        result: T = await run_sync(
            partial(fn, *args), limiter=self._limiter, abandon_on_cancel=abandon
        )
        return result

    def _report(self, peer: str, reason: str) -> None:
        logger.info("transfer: %s from %s", reason, peer)
        try:
            self._on_invalid(peer, reason)
        except Exception:
            logger.exception("on_invalid callback failed")

    def _manifest(self, root: bytes) -> Manifest:
        """The manifest of a document we hold (blocking); cached, as a root never changes."""
        manifest = self._manifests.get(root)
        if manifest is None:
            manifest = self._blobs.manifest(root)
            if len(self._manifests) >= 256:
                self._manifests.pop(next(iter(self._manifests)))
            self._manifests[root] = manifest
        return manifest

    # --- serving ----------------------------------------------------------------------------------

    async def _handle(self, stream: INetStream) -> None:
        peer = str(stream.muxed_conn.peer_id)
        framed = FramedStream(stream, transfer.MAX_REQUEST_FRAME_BYTES)
        busy = (
            self._serving[peer] >= self._max_streams_per_peer
            or self._serving.total() >= MAX_SERVE_STREAMS
        )
        self._serving[peer] += 1
        ended = False
        try:
            if busy:
                await self._refuse_busy(framed)
            else:
                await self._serve(framed)
            ended = True
        except _BadFrame as exc:
            self.stats.bad_requests += 1
            logger.debug("transfer: bad frame from %s: %s", peer, exc)
            self._report(peer, REASON_BAD_FRAME)
        except PeerProtocolError as exc:
            self.stats.bad_requests += 1
            logger.debug("transfer: bad request from %s: %s", peer, exc)
            self._report(peer, REASON_BAD_REQUEST)
        except FrameError as exc:  # the stream died, or the peer stopped reading or asking
            logger.debug("transfer: stream from %s ended: %s", peer, exc)
        except Exception:  # never let a bug here take the connection down with it
            logger.exception("transfer: serving %s failed", peer)
        finally:
            self._serving[peer] -= 1
            if self._serving[peer] <= 0:
                del self._serving[peer]
            if not ended:
                await framed.reset()  # shielded and bounded; harmless on a dead stream

    async def _read_request(self, framed: FramedStream, timeout: float) -> Request:
        """The next request: a frame over the request limit is the peer's fault, not a hang-up."""
        framed.max_frame = transfer.MAX_REQUEST_FRAME_BYTES
        try:
            frame = await framed.read_frame(timeout)
        except (FrameTooLarge, MalformedFrame) as exc:
            raise _BadFrame(str(exc)) from None
        return transfer.decode_request(frame)

    async def _reply(self, framed: FramedStream, reply: Reply) -> None:
        # One FramedStream limit serves both directions: replies may be larger than requests.
        framed.max_frame = transfer.MAX_REPLY_FRAME_BYTES
        await framed.write_frame(transfer.encode(reply), WRITE_TIMEOUT)

    async def _reply_chunks(
        self, framed: FramedStream, chunks: list[ChunkFrame], last: Reply | None = None
    ) -> None:
        """Chunk frames (and the response's last frame) in one write: one copy of the data."""
        framed.max_frame = transfer.MAX_REPLY_FRAME_BYTES
        frames: list[tuple[bytes | memoryview, ...]] = [
            transfer.encode_chunk_parts(chunk) for chunk in chunks
        ]
        if last is not None:
            frames.append((transfer.encode(last),))
        await framed.write_frames(frames, WRITE_TIMEOUT)
        self.stats.chunks_sent += len(chunks)
        self.stats.bytes_sent += sum(len(chunk.data) for chunk in chunks)

    async def _refuse_busy(self, framed: FramedStream) -> None:
        self.stats.busy_refusals += 1
        request = await self._read_request(framed, self._read_timeout)
        await self._reply(framed, ErrorReply(request.id, ErrorCode.BUSY))
        await framed.close()

    async def _serve(self, framed: FramedStream) -> None:
        """Answer requests in order until the peer half-closes (or the stream fails)."""
        while True:
            try:
                request = await self._read_request(framed, SERVE_IDLE_TIMEOUT)
            except StreamEnded:
                await framed.close()
                return
            self.stats.requests += 1
            if isinstance(request, HaveRequest):
                reply: Reply = await self._blob(transfer.answer_have, request, self._have_state)
                await self._reply(framed, reply)
            elif isinstance(request, ManifestRequest):
                data = await self._blob(self._manifest_bytes, request.root)
                await self._reply(framed, transfer.answer_manifest(request, data))
            else:
                await self._serve_chunks(framed, request)

    def _have_state(self, root: bytes) -> HaveState:
        """True, False or a bitmap of the chunks we hold and verified (blocking)."""
        if self._blobs.is_complete(root):
            return True
        try:
            present = self._blobs.present_chunks(root)
            if not present:
                return False
            return transfer.make_bitmap(present, self._manifest(root).chunk_count)
        except BlobNotFound:
            return False
        except (BlobError, ManifestError) as exc:
            logger.warning("transfer: cannot tell what we hold of %s: %s", root.hex()[:12], exc)
            return False

    def _manifest_bytes(self, root: bytes) -> bytes | None:
        try:
            return self._manifest(root).encode()
        except BlobNotFound:
            return None
        except (BlobError, ManifestError) as exc:
            logger.warning("transfer: cannot serve manifest %s: %s", root.hex()[:12], exc)
            return None

    def _chunks_plan(self, request: ChunksRequest) -> tuple[Manifest, list[int]] | ErrorReply:
        """Which chunks of ``request`` we can send (blocking), or the error to send instead."""
        have = self._have_state(request.root)
        try:
            manifest = self._manifest(request.root) if have is not False else None
        except (BlobError, ManifestError):  # deleted since have_state looked
            manifest, have = None, False
        count = manifest.chunk_count if manifest is not None else None
        send = transfer.chunks_to_send(request, count, have)
        if isinstance(send, ErrorReply):
            return send
        if manifest is None:
            return ErrorReply(request.id, ErrorCode.NOT_FOUND)
        return manifest, send

    def _read_batch(self, root: bytes, manifest: Manifest, indices: list[int]) -> list[bytes]:
        out = []
        for index in indices:
            offset, length = manifest.chunk_range(index)
            out.append(self._blobs.read(root, offset, length))
        return out

    async def _serve_chunks(self, framed: FramedStream, request: ChunksRequest) -> None:
        planned = await self._blob(self._chunks_plan, request)
        if isinstance(planned, ErrorReply):
            await self._reply(framed, planned)
            return
        manifest, indices = planned
        batches: list[list[int]] = [
            indices[i : i + READ_BATCH_CHUNKS] for i in range(0, len(indices), READ_BATCH_CHUNKS)
        ]
        send, receive = trio.open_memory_channel[tuple[list[int], list[bytes]] | None](1)
        error: FrameError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_ahead, request.root, manifest, batches, send)
            try:
                await self._send_batches(framed, request, len(indices), receive)
            except FrameError as exc:  # raised inside a nursery it would come out as a group
                error = exc
            nursery.cancel_scope.cancel()
        if error is not None:
            raise error

    async def _read_ahead(
        self,
        root: bytes,
        manifest: Manifest,
        batches: list[list[int]],
        send: trio.MemorySendChannel[tuple[list[int], list[bytes]] | None],
    ) -> None:
        """Read the next batch while the previous one is on the wire; None = cannot go on."""
        async with send:
            for batch in batches:
                try:
                    # A read nobody waits for any more is harmless: let cancellation abandon it.
                    data = await self._blob(self._read_batch, root, manifest, batch, abandon=True)
                except (BlobError, ValueError) as exc:  # deleted meanwhile, or damaged
                    logger.warning("transfer: stopped serving %s: %s", root.hex()[:12], exc)
                    await send.send(None)
                    return
                await send.send((batch, data))

    async def _send_batches(
        self,
        framed: FramedStream,
        request: ChunksRequest,
        total: int,
        receive: trio.MemoryReceiveChannel[tuple[list[int], list[bytes]] | None],
    ) -> None:
        sent = 0
        async with receive:
            async for item in receive:
                if item is None:  # chunks already sent still count; the rest are not here
                    await self._reply(framed, ErrorReply(request.id, ErrorCode.NOT_FOUND))
                    return
                chunks = [ChunkFrame(request.id, i, data) for i, data in zip(*item, strict=True)]
                sent += len(chunks)
                # The last batch carries the response's end: one write fewer per request.
                last = transfer.end_of(request) if sent == total else None
                await self._reply_chunks(framed, chunks, last)
                if last is not None:
                    return
        await self._reply(framed, transfer.end_of(request))

    # --- downloading: public API --------------------------------------------------------------

    async def download(
        self,
        root: bytes,
        peers: Sequence[str],
        *,
        size_hint: int | None = None,
        chunk_size: int | None = None,
    ) -> Path:
        """Fetch the document ``root`` from ``peers`` (and any added later); return its path.

        ``size_hint``/``chunk_size`` come from the document's record when known: a manifest
        that disagrees is refused before anything is written. Raises ``DownloadError`` when no
        peer can supply what is missing; the verified part stays for a later call to resume.
        A second call for a root already downloading joins the first.
        """
        if len(root) != transfer.ROOT_BYTES:
            raise ValueError(f"a root is {transfer.ROOT_BYTES} bytes")
        while (running := self._jobs.get(root)) is not None:
            for peer in peers:
                self._add_worker(running, peer)
            await running.finished.wait()
            if running.error is not None:
                raise running.error
        job = _Job(root, size_hint, chunk_size, trio.current_time())
        self._jobs[root] = job
        try:
            return await self._run(job, peers)
        except DownloadError as exc:
            job.error = exc
            raise
        finally:
            del self._jobs[root]
            job.finished.set()
            with trio.CancelScope(shield=True), trio.move_on_after(SYNC_TIMEOUT):
                await self._blob(self._blobs.sync, root)  # a cancelled download resumes exactly

    def add_source(self, root: bytes, peer: str) -> bool:
        """Let ``peer`` contribute to the running download of ``root`` (False: none running)."""
        job = self._jobs.get(root)
        return job is not None and self._add_worker(job, peer)

    def downloading(self) -> list[bytes]:
        """Roots being downloaded now."""
        return list(self._jobs)

    def progress(self, root: bytes) -> DownloadProgress | None:
        """Where the download of ``root`` stands (None: not running, or no manifest yet)."""
        job = self._jobs.get(root)
        return None if job is None else self._snapshot(job)

    # --- downloading: the job -----------------------------------------------------------------

    def _local_state(self, root: bytes) -> Path | Manifest | None:
        """A complete blob's path, a partial download's manifest (resume), or None (blocking)."""
        if self._blobs.is_complete(root):
            return self._blobs.path_of(root)
        if self._blobs.has(root):  # first touch re-verifies what an earlier run wrote
            return self._blobs.manifest(root)
        return None

    async def _run(self, job: _Job, peers: Sequence[str]) -> Path:
        local = await self._blob(self._local_state, job.root)
        if isinstance(local, Path):
            return local
        error: DownloadError | None = None
        async with trio.open_nursery() as nursery:
            job.nursery = nursery
            if local is not None:
                error = await self._begin(job, local)
            if error is None:
                for peer in peers:
                    self._add_worker(job, peer)
                nursery.start_soon(self._open_gate_later, job)
                job.notify()
                error = await self._supervise(job)
                await self._wind_down(job)
            job.stopping = True  # from here on add_source has no nursery to start workers in
            nursery.cancel_scope.cancel()
        if error is not None:
            raise error
        path = await self._blob(self._blobs.finish, job.root)
        self._progress(job, force=True, done=True)
        return path

    async def _wind_down(self, job: _Job) -> None:
        """Let workers finish the frame they are reading and leave by themselves.

        py-libp2p's Noise layer is not cancellation-safe: a task cancelled inside a write, and
        Yamux writes window updates from inside ``read()``, burns a nonce and the peer then fails
        every later message on the whole connection. So workers are asked to stop at a frame
        boundary; only one still busy after ``STOP_GRACE`` (a slow endgame duplicate) is
        cancelled.
        """
        job.stopping = True
        job.notify()
        with trio.move_on_after(STOP_GRACE):
            while job.workers:
                await job.changed.wait()

    async def _open_gate_later(self, job: _Job) -> None:
        await trio.sleep(START_GATE)
        job.gate.set()

    async def _supervise(self, job: _Job) -> DownloadError | None:
        """Wait until the plan is done (None), or nobody can help any more (the error)."""
        while True:
            changed = job.changed
            if job.fatal is not None:
                return job.fatal
            plan = job.plan
            if plan is not None and plan.done:
                return None
            if not job.setting_up:
                if plan is None:
                    return self._no_manifest_error(job)
                if plan.stuck:
                    return self._stuck_error(job, plan)
            await changed.wait()

    def _no_manifest_error(self, job: _Job) -> DownloadError:
        if not job.notes:
            return DownloadError(job.root, "no peer to download it from")
        why = "; ".join(f"{peer[-8:]}: {note}" for peer, note in sorted(job.notes.items()))
        return DownloadError(job.root, f"no peer could provide it ({why})")

    def _stuck_error(self, job: _Job, plan: DownloadPlan[str]) -> DownloadError:
        missing = [i for i in range(plan.chunk_count) if not plan.is_present(i)]
        missing_bytes = sum(plan.chunk_length(i) for i in missing)
        sources = ", ".join(
            f"{peer[-8:]} {stats.status.value} ({stats.chunks_received} chunks, "
            f"{stats.strikes} strikes, {stats.failures} failures)"
            for peer, stats in sorted(plan.peer_stats().items())
        )
        notes = "; ".join(f"{peer[-8:]}: {note}" for peer, note in sorted(job.notes.items()))
        message = (
            f"{len(missing)} of {plan.chunk_count} chunks ({missing_bytes} bytes) are missing "
            f"and no peer can supply them (chunks {_spans(missing)}); sources: "
            f"{sources or 'none'}{'; ' + notes if notes else ''}; the "
            f"{plan.chunk_count - len(missing)} verified chunks are kept for a later resume"
        )
        return DownloadError(job.root, message, missing)

    async def _begin(self, job: _Job, manifest: Manifest) -> DownloadError | None:
        """Check the manifest against the record's hints, open the partial, build the plan."""
        if job.size_hint is not None and manifest.size != job.size_hint:
            return DownloadError(
                job.root, f"its manifest says {manifest.size} bytes, the record {job.size_hint}"
            )
        if job.chunk_size_hint is not None and manifest.chunk_size != job.chunk_size_hint:
            return DownloadError(
                job.root,
                f"its manifest has {manifest.chunk_size}-byte chunks, "
                f"the record {job.chunk_size_hint}",
            )
        try:
            missing = set(await self._blob(self._blobs.start, manifest))
        except (BlobError, OSError) as exc:  # a full or read-only disk, say
            return DownloadError(job.root, f"cannot store it here: {exc}")
        present = [i for i in range(manifest.chunk_count) if i not in missing]
        job.plan = DownloadPlan(manifest.size, manifest.chunk_size, present, **self._plan_options)
        self._manifests.setdefault(job.root, manifest)
        return None

    def _add_worker(self, job: _Job, peer: str) -> bool:
        if job.nursery is None or job.stopping or peer == self._own_id or peer in job.workers:
            return False
        job.workers.add(peer)
        job.setting_up.add(peer)
        job.nursery.start_soon(self._worker, job, peer)
        return True

    def _snapshot(self, job: _Job, done: bool = False) -> DownloadProgress | None:
        plan = job.plan
        if plan is None:
            return None
        progress = plan.progress()
        return DownloadProgress(
            root=job.root,
            size=progress.size,
            chunk_count=progress.chunk_count,
            present_chunks=progress.present_chunks,
            present_bytes=progress.present_bytes,
            sources=plan.peer_stats(),
            elapsed=trio.current_time() - job.started,
            done=done,
        )

    def _progress(self, job: _Job, *, force: bool = False, done: bool = False) -> None:
        if self._on_progress is None:
            return
        now = trio.current_time()
        if not force and now - job.last_progress < self._progress_interval:
            return
        snapshot = self._snapshot(job, done)
        if snapshot is None:
            return
        job.last_progress = now
        try:
            self._on_progress(job.root, snapshot)
        except Exception:
            logger.exception("on_progress callback failed")

    # --- downloading: one worker per peer -----------------------------------------------------

    async def _worker(self, job: _Job, peer: str) -> None:
        session = _Session(self._host, peer, self._read_timeout)
        try:
            joined = await self._join(job, peer, session)
            job.setting_up.discard(peer)
            job.notify()
            if joined:
                await job.gate.wait()
                await self._fetch(job, peer, session)
        except _Stopping:
            pass
        except _Unreachable as exc:
            job.notes[peer] = f"unreachable: {exc}"
        except (FrameError, PeerProtocolError, RequestRefused, ManifestError) as exc:
            job.notes[peer] = f"{type(exc).__name__}: {exc}"
            self._charge(peer, exc)
        finally:
            job.setting_up.discard(peer)
            job.workers.discard(peer)
            if job.plan is not None:
                job.plan.remove_peer(peer)
            await session.close()
            job.notify()

    def _charge(self, peer: str, exc: BaseException) -> None:
        """Count a peer's protocol fault; network failures and refusals are nobody's fault."""
        if isinstance(exc, FrameTooLarge | MalformedFrame):
            self._report(peer, REASON_BAD_FRAME)
        elif isinstance(exc, PeerProtocolError):
            self._report(peer, REASON_BAD_REPLY)
        elif isinstance(exc, ManifestError):
            self._report(peer, REASON_BAD_MANIFEST)

    async def _join(self, job: _Job, peer: str, session: _Session) -> bool:
        """Ask ``have``, fetch the manifest if nobody has yet, add the peer to the plan."""
        state = await self._have(job, peer, session)
        if job.stopping:
            raise _Stopping
        if state is False:
            job.notes[peer] = "does not have it"
            return False
        if job.plan is None:
            async with job.manifest_lock:
                if job.stopping:
                    raise _Stopping
                if job.plan is None and job.fatal is None:
                    manifest = await self._fetch_manifest(job, session)
                    error = await self._begin(job, manifest)
                    if error is not None:
                        job.fail(error)
        if job.plan is None:
            return False
        if isinstance(state, bytes):
            transfer.check_bitmap(state, job.plan.chunk_count)
        if not job.plan.add_peer(peer, state):
            job.notes[peer] = "dropped earlier in this download"
            return False
        return True

    async def _have(self, job: _Job, peer: str, session: _Session) -> HaveState:
        for attempt in range(BUSY_RETRIES):
            request = HaveRequest(session.next_id(), (job.root,))
            try:
                reply = await session.ask(request)
                return transfer.check_have_reply(request, reply)[job.root]
            except RequestRefused as exc:
                await session.drop()
                if exc.code is not ErrorCode.BUSY or attempt == BUSY_RETRIES - 1:
                    raise
            await trio.sleep(1.0 + attempt)  # busy: back off before asking again
        raise AssertionError("unreachable")

    async def _fetch_manifest(self, job: _Job, session: _Session) -> Manifest:
        request = ManifestRequest(session.next_id(), job.root)
        reply = await session.ask(request)
        try:
            data = transfer.check_manifest_reply(request, reply)
        except PeerProtocolError as exc:  # answered, but not with the document's manifest
            raise ManifestError(str(exc)) from None
        # Hashing and re-encoding up to 65,536 hashes is work for a thread, not the event loop.
        return await trio.to_thread.run_sync(decode_manifest, data, job.root)

    async def _fetch(self, job: _Job, peer: str, session: _Session) -> None:
        """Fetch from ``peer`` until the download ends; a failed stream is reopened later."""
        plan = job.plan
        assert plan is not None
        while not plan.done and not job.stopping and _active(plan, peer):
            send, receive = trio.open_memory_channel[list[ChunkFrame] | _Settle](
                VERIFY_QUEUE_BATCHES
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._verify, job, plan, peer, receive)
                async with send:
                    failure = await self._pipeline(job, plan, peer, session, send)
            # The verifier has seen every chunk that arrived and settled every request.
            if isinstance(failure, _Unreachable):
                raise failure

    async def _pipeline(
        self,
        job: _Job,
        plan: DownloadPlan[str],
        peer: str,
        session: _Session,
        verify: trio.MemorySendChannel[list[ChunkFrame] | _Settle],
    ) -> Exception | None:
        """Keep requests outstanding on one stream and pass what arrives to the verifier.

        Chunks go to the verifier ``VERIFY_BATCH_CHUNKS`` at a time (and whatever is left when
        a response ends), so each hop to a hashing thread carries about a megabyte. Returns
        when the download is over for this peer (None) or the stream failed (the failure, after
        telling the verifier to settle everything still outstanding).
        """
        inflight: deque[ChunkResponse] = deque()
        batch: list[ChunkFrame] = []
        depth = max(1, int(self._plan_options["max_requests_per_peer"]))
        try:
            while not plan.done and not job.stopping and _active(plan, peer):
                changed = job.changed
                while len(inflight) < depth:
                    ranges = plan.next_request(peer, trio.current_time())
                    if ranges is None:
                        break
                    request = ChunksRequest(session.next_id(), job.root, tuple(ranges))
                    inflight.append(ChunkResponse(request, plan.size, plan.chunk_size))
                    await session.send(request)
                if not inflight:
                    if session.idle_for > CLIENT_IDLE_CLOSE:
                        await session.close()
                    with trio.move_on_after(IDLE_POLL):
                        await changed.wait()
                    continue
                response = inflight[0]
                limit = transfer.max_reply_bytes(response.request, plan.chunk_size)
                chunk = response.feed(await session.read_reply(limit))
                if chunk is not None:
                    batch.append(chunk)
                    if len(batch) >= VERIFY_BATCH_CHUNKS:
                        await verify.send(batch)
                        batch = []
                    if not _active(plan, peer):
                        raise _Dropped("dropped for sending corrupt chunks")
                else:
                    inflight.popleft()
                    if batch:
                        await verify.send(batch)
                        batch = []
                    await verify.send(_Settle(response))
        except (FrameError, PeerProtocolError, _Unreachable, _Dropped) as exc:
            await session.drop()
            if batch:  # chunks that arrived before the failure still count
                await verify.send(batch)
            await verify.send(_Settle(None, exc))
            return exc
        if inflight:  # the download ended with answers still coming (endgame duplicates)
            await session.drop()
        return None

    def _settle(self, plan: DownloadPlan[str], peer: str, settle: _Settle) -> None:
        """Tell the plan how a request ended, once every chunk it delivered was checked."""
        response, failure = settle.response, settle.failure
        if response is None:  # the stream failed: every request on it did
            logger.debug("transfer: requests to %s failed: %s", peer, failure)
            if failure is not None:
                self._charge(peer, failure)
            plan.request_failed(peer, trio.current_time())
        elif response.error in (ErrorCode.BUSY, ErrorCode.BAD_REQUEST):
            plan.request_failed(peer, trio.current_time(), response.request.ranges)
        else:  # end, or not-found: what it left out, it does not have
            plan.request_done(peer, response.request.ranges)

    async def _verify(
        self,
        job: _Job,
        plan: DownloadPlan[str],
        peer: str,
        receive: trio.MemoryReceiveChannel[list[ChunkFrame] | _Settle],
    ) -> None:
        """Hash and write received chunks in a thread while the next ones arrive.

        Batches that queued up meanwhile go to the thread together: one hop for all of them
        (a hop costs a GIL hand-over each way). A request is settled in arrival order, after
        its chunks.
        """
        async with receive:
            async for first in receive:
                items = [first, *_drain(receive, VERIFY_QUEUE_BATCHES)]
                todo: list[ChunkFrame] = []
                for item in items:
                    if isinstance(item, list):
                        todo.extend(item)
                        continue
                    await self._check_chunks(job, plan, peer, todo)
                    todo = []
                    self._settle(plan, peer, item)
                await self._check_chunks(job, plan, peer, todo)
                self._progress(job)
                job.notify()

    async def _check_chunks(
        self, job: _Job, plan: DownloadPlan[str], peer: str, chunks: list[ChunkFrame]
    ) -> None:
        if job.fatal is not None:
            return  # the download is failing anyway: drain
        todo = []
        for chunk in chunks:
            if plan.is_present(chunk.index):  # an endgame duplicate: no need to hash it
                plan.chunk_received(peer, chunk.index, True)
            else:
                todo.append(chunk)
        if not todo:
            return
        try:
            results = await self._blob(self._write_chunks, job.root, todo)
        except (BlobError, OSError) as exc:  # deleted meanwhile, disk full...
            job.fail(DownloadError(job.root, f"cannot store chunks: {exc}"))
            return
        for chunk, result in zip(todo, results, strict=True):
            ok = result is not ChunkResult.CORRUPT
            plan.chunk_received(peer, chunk.index, ok)
            if not ok:
                self._report(peer, REASON_CORRUPT_CHUNK)

    def _write_chunks(self, root: bytes, chunks: list[ChunkFrame]) -> list[ChunkResult]:
        """Verify and write chunks (blocking); each is hashed before anything is written."""
        return [self._blobs.write_chunk(root, chunk.index, chunk.data) for chunk in chunks]


def _drain(receive: trio.MemoryReceiveChannel[T], limit: int) -> list[T]:
    """Whatever is already queued, up to ``limit`` items, without waiting."""
    out: list[T] = []
    while len(out) < limit:
        try:
            out.append(receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return out


def _active(plan: DownloadPlan[str], peer: str) -> bool:
    stats = plan.peer_stats().get(peer)
    return stats is not None and stats.status is PeerStatus.ACTIVE


def _spans(indices: Iterable[int], limit: int = 8) -> str:
    """``0-3, 7, 9-12`` for humans; long lists are cut with a count of what was left out."""
    ranges = transfer.ranges_of(sorted(indices))
    parts = [f"{a}" if b == a + 1 else f"{a}-{b - 1}" for a, b in ranges[:limit]]
    if len(ranges) > limit:
        parts.append(f"... {len(ranges) - limit} more runs")
    return ", ".join(parts)


__all__ = [
    "PROTOCOL",
    "DownloadError",
    "DownloadProgress",
    "ServeStats",
    "TransferService",
]
