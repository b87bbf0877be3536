"""A whole Node facing a misbehaving peer on every protocol at once, beside an honest one.

The victim and the honest peer are real ``Node`` services (library, SQLite, blobs, gossip, sync,
transfer, control socket) in this process; the misbehaving peer is a real libp2p host that
speaks each protocol its own way: gossip with a forged and a non-canonical record, a sync
stream that opens with an oversized frame, and a seeder whose every chunk is corrupt.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from nacl.signing import SigningKey

from p2pshare.node.blobs import BlobStore
from p2pshare.node.library import Library
from p2pshare.node.service import Node, NodeOptions
from p2pshare.node.streams import encode_uvarint
from p2pshare.node.sync_service import PROTOCOL as SYNC_PROTOCOL
from p2pshare.node.sync_service import REASON_BAD_FRAME
from p2pshare.node.transfer_service import TransferService
from p2pshare.protocol.limits import CHUNK_SIZE
from p2pshare.protocol.records import PROFILE, create_record
from p2pshare.protocol.sync_session import MAX_FRAME_BYTES
from tests.netfixtures import Net, wait_until
from tests.node.test_gossip import TOPIC, forged, non_canonical, unvalidated_pubsub

DEADLINE = 60.0
DOC_BYTES = 12 * CHUNK_SIZE + 1234


class CorruptBlobStore(BlobStore):
    """Serves every chunk with its first byte flipped."""

    def read(self, root: bytes, offset: int, length: int) -> bytes:
        data = super().read(root, offset, length)
        return bytes([data[0] ^ 0xFF]) + data[1:] if data else data


@asynccontextmanager
async def running_node(library: Library) -> AsyncIterator[Node]:
    node = Node(
        library,
        NodeOptions(listen=["/ip4/127.0.0.1/tcp/0"], mdns=False, bootstrap=(), fetch="none"),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        try:
            yield node
        finally:
            node.stop()


def address(node: Node) -> str:
    assert node.host is not None
    return f"{node.host.get_addrs()[0]}"


def invalid(node: Node, peer: str) -> int:
    return node.counters.invalid_by_peer.get(peer, 0)


async def test_nothing_a_misbehaving_peer_sends_is_stored_and_the_download_completes_elsewhere(
    net: Net, make_library: Callable[..., Library], tmp_path: Path
) -> None:
    document = tmp_path / "guide.pdf"
    document.write_bytes(os.urandom(DOC_BYTES))
    victim_lib, honest_lib = make_library("v"), make_library("h")
    doc = honest_lib.share(document, title="Honest guide", licence="CC-BY-4.0")
    root: bytes = doc.body["root"]
    evil = await net.peer()
    evil_blobs = CorruptBlobStore(tmp_path / "evil-blobs", hash_workers=1)
    evil_blobs.add_file(document)
    evil_transfer = TransferService(
        evil.host,
        blobs=evil_blobs,
        blob_limiter=trio.CapacityLimiter(2),
        on_invalid=lambda peer, reason: None,
        on_progress=lambda root, progress: None,
    )
    evil_transfer.start()

    async with running_node(victim_lib) as victim, running_node(honest_lib) as honest:
        assert victim.host is not None and victim.gossip is not None
        victim_id = str(victim.host.get_id())
        await victim.connect(address(honest))
        await wait_until(
            lambda: victim_lib.store.get(doc.id) is not None, DEADLINE, "the doc record by sync"
        )
        records_before = victim_lib.store.count()

        # Gossip: a forged record and a non-canonical one.
        async with unvalidated_pubsub(evil) as pubsub:  # before connecting: pubsub needs that
            await victim.connect(f"{evil.addr}")
            await victim.gossip.wait_for_mesh("public", evil.peer_id, timeout=DEADLINE)
            bad_gossip = [
                forged(create_record(SigningKey.generate(), PROFILE, {"name": "forger"})),
                non_canonical("unsorted"),
            ]
            for wire in bad_gossip:
                await pubsub.publish(TOPIC, wire)
            await wait_until(lambda: invalid(victim, evil.peer_id) >= 2, DEADLINE, "gossip faults")

            # Sync: a frame whose declared length is over the limit.
            with trio.fail_after(DEADLINE):
                stream = await evil.host.new_stream(victim.host.get_id(), [SYNC_PROTOCOL])
                await stream.write(encode_uvarint(MAX_FRAME_BYTES + 1) + b"x" * 64)
            await wait_until(
                lambda: victim.counters.invalid_by_reason[REASON_BAD_FRAME] >= 1,
                DEADLINE,
                "the oversized sync frame to be charged",
            )
            await stream.reset()

            # Transfer: both peers have the document; the misbehaving one corrupts every chunk.
            assert evil.host.get_network().connections.get(victim.host.get_id()) is not None
            assert victim.start_download(doc)
            await wait_until(
                lambda: victim_lib.blobs.is_complete(root), DEADLINE, "the download to complete"
            )

        copy = victim_lib.blobs.path_of(root)
        assert (
            hashlib.sha256(copy.read_bytes()).digest()
            == hashlib.sha256(document.read_bytes()).digest()
        )
        for wire in bad_gossip:
            assert victim_lib.store.get(hashlib.sha256(wire).digest()) is None
        assert victim_lib.store.count() == records_before
        reasons = victim.counters.invalid_by_reason
        assert reasons["corrupt-chunk"] >= 1, dict(reasons)
        assert invalid(victim, evil.peer_id) >= 4
        assert invalid(victim, str(honest.host.get_id()) if honest.host else "") == 0
        assert victim_id not in victim.counters.invalid_by_peer
    evil_blobs.close()
