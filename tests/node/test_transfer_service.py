"""Documents over ``/p2pshare/blocks/1`` between real hosts on 127.0.0.1 and real blob stores.

Seeders that misbehave are real hosts too: blob stores that corrupt or hold back chunk reads,
and raw stream handlers that break the protocol on purpose.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID

from p2pshare.node import transfer_service as ts
from p2pshare.node.blobs import BlobStore, ChunkResult
from p2pshare.node.streams import FramedStream, FrameError, encode_uvarint
from p2pshare.node.transfer_service import (
    PROTOCOL,
    REASON_BAD_FRAME,
    REASON_BAD_REPLY,
    REASON_BAD_REQUEST,
    REASON_CORRUPT_CHUNK,
    DownloadError,
    DownloadProgress,
    TransferService,
)
from p2pshare.protocol import limits as L
from p2pshare.protocol import transfer
from p2pshare.protocol.documents import Buffer, Manifest, manifest_of
from p2pshare.protocol.download_plan import PeerStatus
from p2pshare.protocol.transfer import (
    ChunkFrame,
    ChunksRequest,
    ErrorCode,
    ErrorReply,
    HaveReply,
    HaveRequest,
    ManifestReply,
    ManifestRequest,
)
from tests.netfixtures import Net, Peer, wait_until

CHUNK = L.CHUNK_SIZE
DOC_BYTES = 16 * CHUNK + 12_345  # 17 chunks, the last one short
CHUNKS = 17
DEADLINE = 30.0  # per download: generous for a loaded 2-core machine


# --- blob stores that misbehave on purpose ---------------------------------------------------


class Gate:
    """How many chunk reads a serving peer may complete; the rest block until ``open``."""

    def __init__(self, permits: int = 0) -> None:
        self._permits = threading.Semaphore(permits)

    def wait(self) -> None:
        self._permits.acquire()

    def open(self) -> None:
        self._permits.release(10_000)


class GatedBlobStore(BlobStore):
    gate = Gate()

    def read(self, root: bytes, offset: int, length: int) -> bytes:
        self.gate.wait()
        return super().read(root, offset, length)


class CorruptingBlobStore(BlobStore):
    corrupt: frozenset[int] = frozenset()

    def read(self, root: bytes, offset: int, length: int) -> bytes:
        data = super().read(root, offset, length)
        if offset // CHUNK in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return data


class CountingBlobStore(BlobStore):
    """Records every chunk a download hands to ``write_chunk``: what was fetched."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.written: list[int] = []

    def write_chunk(self, root: bytes, index: int, data: Buffer) -> ChunkResult:
        self.written.append(index)
        return super().write_chunk(root, index, data)


# --- fixtures ----------------------------------------------------------------------------------


@dataclass
class Side:
    """A host with its blob store and transfer service, and what its callbacks saw."""

    peer: Peer
    blobs: BlobStore
    service: TransferService
    invalid: list[tuple[str, str]] = field(default_factory=list)
    progress: list[DownloadProgress] = field(default_factory=list)
    on_invalid_extra: Callable[[str, str], object] | None = None

    @property
    def peer_id(self) -> str:
        return self.peer.peer_id


@dataclass
class Swarm:
    net: Net
    tmp: Path
    document: Path
    data: bytes
    stores: list[BlobStore] = field(default_factory=list)

    async def side(
        self,
        name: str,
        store: type[BlobStore] = BlobStore,
        *,
        seed: bool = False,
        max_streams_per_peer: int = 4,
        plan_options: dict[str, object] | None = None,
    ) -> Side:
        blobs = store(self.tmp / name, hash_workers=1)
        self.stores.append(blobs)
        if seed:
            blobs.add_file(self.document)
        peer = await self.net.peer()
        side: Side

        def on_invalid(peer_id: str, reason: str) -> None:
            side.invalid.append((peer_id, reason))
            if side.on_invalid_extra is not None:
                side.on_invalid_extra(peer_id, reason)

        service = TransferService(
            peer.host,
            blobs=blobs,
            blob_limiter=trio.CapacityLimiter(2),
            on_invalid=on_invalid,
            on_progress=lambda root, progress: side.progress.append(progress),
            max_streams_per_peer=max_streams_per_peer,
            progress_interval=0.0,
            plan_options=plan_options,
        )
        side = Side(peer, blobs, service)
        service.start()
        return side

    @property
    def manifest(self) -> Manifest:
        return manifest_of(self.data)


@pytest.fixture
def swarm(net: Net, tmp_path: Path) -> Iterator[Swarm]:
    data = random.Random(7).randbytes(DOC_BYTES)
    document = tmp_path / "paper.pdf"
    document.write_bytes(data)
    swarm = Swarm(net, tmp_path, document, data)
    yield swarm
    GatedBlobStore.gate.open()  # never leave a serving thread blocked
    for blobs in swarm.stores:
        blobs.close()


@pytest.fixture(autouse=True)
def fresh_gate() -> None:
    GatedBlobStore.gate = Gate()


async def connect(downloader: Side, *seeders: Side) -> list[str]:
    for seeder in seeders:
        await downloader.peer.connect(seeder.peer)
    return [seeder.peer_id for seeder in seeders]


async def download(side: Side, root: bytes, peers: list[str]) -> Path:
    with trio.fail_after(DEADLINE):
        return await side.service.download(root, peers, size_hint=DOC_BYTES, chunk_size=CHUNK)


def contributed(side: Side, root: bytes, peer: str) -> int:
    progress = side.service.progress(root)
    stats = progress.sources.get(peer) if progress else None
    return stats.chunks_received if stats else 0


# --- downloads -----------------------------------------------------------------------------------


async def test_a_document_downloads_byte_identical_from_one_peer(swarm: Swarm) -> None:
    seeder = await swarm.side("seeder", seed=True)
    leecher = await swarm.side("leecher")
    root = swarm.manifest.root

    path = await download(leecher, root, await connect(leecher, seeder))

    assert path.read_bytes() == swarm.data
    assert leecher.blobs.is_complete(root) and leecher.blobs.verify(root)
    final = leecher.progress[-1]
    assert final.done and final.present_bytes == DOC_BYTES
    assert final.sources[seeder.peer_id].chunks_received == CHUNKS
    assert seeder.service.stats.chunks_sent == CHUNKS
    assert leecher.invalid == [] and seeder.invalid == []


async def test_three_peers_serve_one_download_in_parallel(swarm: Swarm) -> None:
    seeders = [await swarm.side(f"seeder{i}", seed=True) for i in range(3)]
    leecher = await swarm.side("leecher")
    root = swarm.manifest.root

    path = await download(leecher, root, await connect(leecher, *seeders))

    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(swarm.data).digest()
    sources = leecher.progress[-1].sources
    assert sum(stats.bytes_received for stats in sources.values()) == DOC_BYTES
    assert sum(1 for stats in sources.values() if stats.chunks_received) >= 2
    assert sum(s.service.stats.chunks_sent for s in seeders) == CHUNKS


async def test_corrupt_chunks_are_refetched_from_an_honest_peer_and_charged(
    swarm: Swarm,
) -> None:
    CorruptingBlobStore.corrupt = frozenset({0, 5})
    liar = await swarm.side("liar", CorruptingBlobStore, seed=True)
    honest = await swarm.side("honest", seed=True)
    leecher = await swarm.side("leecher")
    root = swarm.manifest.root
    await connect(leecher, liar, honest)
    # The honest peer "connects" only once the liar has been caught, so the liar is asked first.
    leecher.on_invalid_extra = lambda peer, reason: leecher.service.add_source(root, honest.peer_id)

    path = await download(leecher, root, [liar.peer_id])

    assert path.read_bytes() == swarm.data
    assert leecher.invalid == [(liar.peer_id, REASON_CORRUPT_CHUNK)] * 2
    sources = leecher.progress[-1].sources
    assert sources[liar.peer_id].strikes == 2
    assert sources[liar.peer_id].chunks_received == CHUNKS - 2
    assert sources[honest.peer_id].chunks_received == 2


@pytest.mark.parametrize(
    ("misbehaviour", "reason"),
    [("oversized-frame", REASON_BAD_FRAME), ("unrequested-chunk", REASON_BAD_REPLY)],
)
async def test_a_broken_reply_is_rejected_charged_and_fetched_elsewhere(
    swarm: Swarm, misbehaviour: str, reason: str
) -> None:
    rogue = await swarm.side("rogue")
    honest = await swarm.side("honest", seed=True)
    leecher = await swarm.side("leecher")
    manifest = swarm.manifest
    serve_badly(rogue.peer, manifest, misbehaviour)
    await connect(leecher, rogue, honest)
    leecher.on_invalid_extra = lambda peer, why: leecher.service.add_source(
        manifest.root, honest.peer_id
    )

    path = await download(leecher, manifest.root, [rogue.peer_id])

    assert path.read_bytes() == swarm.data
    assert (rogue.peer_id, reason) in leecher.invalid
    assert {peer for peer, _ in leecher.invalid} == {rogue.peer_id}
    sources = leecher.progress[-1].sources
    assert sources[rogue.peer_id].chunks_received == 0
    assert sources[rogue.peer_id].failures >= 1
    assert sources[honest.peer_id].chunks_received == CHUNKS


async def test_a_peer_that_vanishes_mid_transfer_leaves_the_rest_to_others(
    swarm: Swarm,
) -> None:
    GatedBlobStore.gate = Gate(permits=4)  # one read batch, then its reads block
    leaving = await swarm.side("leaving", GatedBlobStore, seed=True)
    staying = await swarm.side("staying", seed=True)
    leecher = await swarm.side("leecher")
    root = swarm.manifest.root
    peers = await connect(leecher, leaving, staying)

    async with trio.open_nursery() as nursery:
        result: list[Path] = []

        async def run() -> None:
            result.append(await download(leecher, root, peers))

        nursery.start_soon(run)
        await wait_until(lambda: contributed(leecher, root, leaving.peer_id) == 4, what="4 chunks")
        await leaving.peer.stop()

    assert result[0].read_bytes() == swarm.data
    sources = leecher.progress[-1].sources
    assert sources[leaving.peer_id].chunks_received == 4
    assert sources[leaving.peer_id].failures >= 1 or (
        sources[leaving.peer_id].status is PeerStatus.GONE
    )
    assert sources[staying.peer_id].chunks_received == CHUNKS - 4


async def test_a_cancelled_download_resumes_fetching_only_missing_chunks(swarm: Swarm) -> None:
    GatedBlobStore.gate = Gate(permits=4)
    seeder = await swarm.side("seeder", GatedBlobStore, seed=True)
    first = await swarm.side("leecher")
    root = swarm.manifest.root
    peers = await connect(first, seeder)

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first.service.download, root, peers)
            await wait_until(lambda: contributed(first, root, seeder.peer_id) == 4, what="4")
            nursery.cancel_scope.cancel()
    first.blobs.close()  # as a node shutting down would

    # A restarted node: a new store over the same directory, a new service on a new host.
    blobs = CountingBlobStore(swarm.tmp / "leecher", hash_workers=1)
    swarm.stores.append(blobs)
    missing = blobs.missing_chunks(root)
    assert len(missing) == CHUNKS - 4
    GatedBlobStore.gate.open()
    second = await swarm.side("second")
    second.service = TransferService(
        second.peer.host,
        blobs=blobs,
        blob_limiter=trio.CapacityLimiter(2),
        on_invalid=lambda peer, reason: second.invalid.append((peer, reason)),
    )

    path = await download(second, root, await connect(second, seeder))

    assert path.read_bytes() == swarm.data
    assert sorted(blobs.written) == missing  # each missing chunk once, nothing verified again


async def test_a_stuck_download_says_what_is_missing_and_keeps_its_partial(
    swarm: Swarm,
) -> None:
    manifest = swarm.manifest
    partial = await swarm.side("partial")
    partial.blobs.start(manifest)
    for index in range(10):  # a peer that is itself halfway through the document
        offset, length = manifest.chunk_range(index)
        partial.blobs.write_chunk(manifest.root, index, swarm.data[offset : offset + length])
    full = await swarm.side("full", seed=True)
    leecher = await swarm.side("leecher")
    await connect(leecher, partial, full)

    with pytest.raises(DownloadError) as caught:
        await download(leecher, manifest.root, [partial.peer_id])

    assert caught.value.missing == tuple(range(10, CHUNKS))
    assert "7 of 17 chunks" in str(caught.value) and "10-16" in str(caught.value)
    assert leecher.blobs.present_chunks(manifest.root) == frozenset(range(10))

    path = await download(leecher, manifest.root, [partial.peer_id, full.peer_id])

    assert path.read_bytes() == swarm.data
    sources = leecher.progress[-1].sources
    assert sources[full.peer_id].chunks_received == CHUNKS - 10
    assert sources[partial.peer_id].chunks_received == 0


async def test_two_requests_for_one_document_share_one_download(swarm: Swarm) -> None:
    seeder = await swarm.side("seeder", seed=True)
    leecher = await swarm.side("leecher")
    root = swarm.manifest.root
    peers = await connect(leecher, seeder)
    paths: list[Path] = []

    async def fetch() -> None:
        paths.append(await download(leecher, root, peers))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetch)
        nursery.start_soon(fetch)

    assert len(paths) == 2 and paths[0] == paths[1]
    assert paths[0].read_bytes() == swarm.data
    assert seeder.service.stats.chunks_sent == CHUNKS  # fetched once, not twice


async def test_a_document_nobody_has_fails_with_a_clear_error(swarm: Swarm) -> None:
    empty = await swarm.side("empty")
    leecher = await swarm.side("leecher")

    with pytest.raises(DownloadError, match=r"no peer could provide it.*does not have it"):
        await download(leecher, swarm.manifest.root, await connect(leecher, empty))
    assert not leecher.blobs.has(swarm.manifest.root)


async def test_a_manifest_that_contradicts_the_record_is_refused_before_writing(
    swarm: Swarm,
) -> None:
    seeder = await swarm.side("seeder", seed=True)
    leecher = await swarm.side("leecher")
    peers = await connect(leecher, seeder)

    with trio.fail_after(DEADLINE), pytest.raises(DownloadError, match="the record 999"):
        await leecher.service.download(swarm.manifest.root, peers, size_hint=999)
    assert not leecher.blobs.has(swarm.manifest.root)


# --- serving --------------------------------------------------------------------------------------


async def open_blocks(client: Side, server: Side) -> FramedStream:
    with trio.fail_after(10):
        stream = await client.peer.host.new_stream(ID.from_base58(server.peer_id), [PROTOCOL])
    return FramedStream(stream, transfer.MAX_REPLY_FRAME_BYTES)


async def ask(framed: FramedStream, request: transfer.Request) -> transfer.Reply:
    await framed.write_frame(transfer.encode(request))
    return transfer.decode_reply(await framed.read_frame(10))


async def test_a_peer_past_its_stream_limit_is_told_busy(swarm: Swarm) -> None:
    server = await swarm.side("server", seed=True, max_streams_per_peer=1)
    client = await swarm.side("client")
    await connect(client, server)
    root = swarm.manifest.root

    first = await open_blocks(client, server)
    assert await ask(first, HaveRequest(1, (root,))) == HaveReply(1, (True,))
    second = await open_blocks(client, server)
    assert await ask(second, HaveRequest(2, (root,))) == ErrorReply(2, ErrorCode.BUSY)
    await first.close()
    await second.close()
    assert server.service.stats.busy_refusals == 1


async def test_a_partial_download_serves_only_its_verified_chunks(swarm: Swarm) -> None:
    manifest = swarm.manifest
    server = await swarm.side("server")
    server.blobs.start(manifest)
    for index in (0, 3):
        offset, length = manifest.chunk_range(index)
        server.blobs.write_chunk(manifest.root, index, swarm.data[offset : offset + length])
    client = await swarm.side("client")
    await connect(client, server)
    framed = await open_blocks(client, server)

    have = await ask(framed, HaveRequest(1, (manifest.root,)))
    assert have == HaveReply(1, (transfer.make_bitmap([0, 3], CHUNKS),))
    await framed.write_frame(transfer.encode(ChunksRequest(2, manifest.root, ((0, 5),))))
    replies = [transfer.decode_reply(await framed.read_frame(10)) for _ in range(3)]
    assert [(r.index, len(r.data)) for r in replies[:2] if isinstance(r, ChunkFrame)] == [
        (0, CHUNK),
        (3, CHUNK),
    ]
    assert replies[2] == transfer.EndFrame(2)
    await framed.close()


async def test_an_undecodable_request_is_charged_and_the_stream_reset(swarm: Swarm) -> None:
    server = await swarm.side("server", seed=True)
    client = await swarm.side("client")
    await connect(client, server)
    framed = await open_blocks(client, server)

    await framed.write_frame(b"\x81\xa1t\xa4nope")
    with pytest.raises(FrameError):
        await framed.read_frame(10)
    await wait_until(lambda: server.invalid, what="the bad request to be charged")
    assert server.invalid == [(client.peer_id, REASON_BAD_REQUEST)]


# --- a raw server that breaks the protocol ----------------------------------------------------


def serve_badly(peer: Peer, manifest: Manifest, misbehaviour: str) -> None:
    """Answer have/manifest correctly, then break every chunks response as ``misbehaviour``."""

    def broken_reply(request: ChunksRequest) -> bytes:
        if misbehaviour == "oversized-frame":  # declares a 4 MiB frame for a 256 KiB chunk
            return encode_uvarint(L.MAX_CHUNK_SIZE) + bytes(1024)
        body = transfer.encode(ChunkFrame(request.id, max(request.indices()) + 1, b"x"))
        return encode_uvarint(len(body)) + body

    async def handler(stream: INetStream) -> None:
        framed = FramedStream(stream, transfer.MAX_REQUEST_FRAME_BYTES)
        try:
            while True:
                request = transfer.decode_request(await framed.read_frame(10))
                if isinstance(request, HaveRequest):
                    reply: transfer.Reply = HaveReply(request.id, (True,) * len(request.roots))
                elif isinstance(request, ManifestRequest):
                    reply = ManifestReply(request.id, manifest.encode())
                else:
                    await stream.write(broken_reply(request))
                    continue
                await framed.write_frame(transfer.encode(reply))
        except FrameError:
            return

    peer.host.set_stream_handler(PROTOCOL, handler)


async def test_a_second_request_is_already_waiting_while_the_first_is_served(
    swarm: Swarm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests outstanding per peer: the seeder has the next one before it answers."""
    sent: list[ChunksRequest] = []
    original_send = ts._Session.send

    async def recording_send(session: ts._Session, request: transfer.Request) -> None:
        if isinstance(request, ChunksRequest):
            sent.append(request)
        await original_send(session, request)

    monkeypatch.setattr(ts._Session, "send", recording_send)
    GatedBlobStore.gate = Gate(permits=0)  # no chunk read completes until the gate opens
    seeder = await swarm.side("seeder", GatedBlobStore, seed=True)
    leecher = await swarm.side("leecher", plan_options={"max_chunks_per_request": 3})
    root = swarm.manifest.root
    peers = await connect(leecher, seeder)
    done: list[Path] = []

    async def fetch() -> None:
        done.append(await download(leecher, root, peers))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetch)
        await wait_until(lambda: len(sent) >= 2, what="a second request")
        await trio.sleep(0.2)
        assert len(sent) == 2  # never more than two outstanding
        assert seeder.service.stats.chunks_sent == 0  # both sent before any answer came
        GatedBlobStore.gate.open()
    assert done[0].read_bytes() == swarm.data
    assert len(sent) == -(-CHUNKS // 3)  # every chunk asked for once, three at a time
    assert leecher.invalid == [] and seeder.invalid == []
