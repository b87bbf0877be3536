"""The Node: one process that owns a data dir and wires library, host, gossip and control API.

Everything blocking (SQLite, hashing, file copies) runs on one worker thread at a time through
``self.blocking``, so the trio thread only moves bytes and never stalls the network.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

from p2pshare import __version__
from p2pshare.control.errors import ControlError
from p2pshare.control.server import ControlServer
from p2pshare.node.api import LibraryApi, identity_view
from p2pshare.node.config import Config, ConfigError, load_config, write_config
from p2pshare.node.discovery import Mdns, Reconnector, expand_wildcards, local_ips, transport_addrs
from p2pshare.node.gossip import PEER_FAULT_REASONS, Gossip, GossipError
from p2pshare.node.host import ConnectError, connect, listen_addrs, open_host
from p2pshare.node.library import Library, LibraryError
from p2pshare.node.peerbook import PeerBook
from p2pshare.node.store import IngestResult
from p2pshare.node.sync_service import SYNC_INTERVAL, SyncService, store_from_peer
from p2pshare.node.transfer_service import DownloadError, DownloadProgress, TransferService
from p2pshare.protocol.bundles import BundleError
from p2pshare.protocol.communities import normalise_community
from p2pshare.protocol.control_wire import ErrorCode
from p2pshare.protocol.invites import Invite, InviteError, decode_invite, encode_invite
from p2pshare.protocol.reasons import Reason
from p2pshare.protocol.records import DOC, Record, now_ms, root_original

logger = logging.getLogger(__name__)
T = TypeVar("T")

EVENTS = (
    "record-added",
    "peer-up",
    "peer-down",
    "transfer-progress",
    "transfer-done",
    "transfer-failed",
    "community-joined",
    "community-left",
)
INVALID_THRESHOLD = 20  # invalid items from one peer before we hang up on it
BAN_SECONDS = 600.0  # and we do not dial it again for this long


@dataclass
class NodeOptions:
    listen: Sequence[str]
    communities: Sequence[str] = ("public",)
    bootstrap: Sequence[str] = ()
    gossip: bool = True
    mdns: bool = True
    fetch: str = "followed"
    sync_interval: float = SYNC_INTERVAL

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> NodeOptions:
        options = cls(
            listen=config.listen,
            communities=config.communities,
            bootstrap=config.bootstrap,
            mdns=config.mdns,
            fetch=config.fetch,
        )
        for key, value in overrides.items():
            if value is not None:
                setattr(options, key, value)
        return options


@dataclass
class NodeCounters:
    invalid_by_peer: Counter[str] = field(default_factory=Counter)
    invalid_by_reason: Counter[str] = field(default_factory=Counter)
    gossip_received: int = 0


class Node:
    """Run with ``await nursery.start(node.run)``; ``node.host`` etc. exist while it runs."""

    def __init__(self, library: Library, options: NodeOptions) -> None:
        self.library = library
        self.options = options
        self.started_ms = now_ms()
        self.counters = NodeCounters()
        self.store_limiter = trio.CapacityLimiter(1)
        self.blob_limiter = trio.CapacityLimiter(2)  # chunk reads/writes, apart from SQLite
        self.api = LibraryApi(library, on_published=self._published_from_thread)
        self.control = ControlServer(self._handlers(), self._hello_info, event_names=EVENTS)
        self.host: IHost | None = None
        self.gossip: Gossip | None = None
        self.transfer: TransferService | None = None
        self.sync: SyncService | None = None
        self.reconnector: Reconnector | None = None
        self._titles: dict[bytes, str] = {}
        self.communities: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self.ready = trio.Event()
        self._stop = trio.Event()

    def stop(self) -> None:
        """Ask ``run`` to return (used by signal handlers and the ``shutdown`` method)."""
        self._stop.set()

    # --- running ------------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._token = trio.lowlevel.current_trio_token()
        identity = self.library.identity
        # Signature-checking processes for big sync batches: started now, not on first use.
        await self.blocking(self.library.store.start_workers)
        async with open_host(identity, self.options.listen) as host, trio.open_nursery() as nursery:
            self.host, self._nursery = host, nursery
            try:
                if self.options.gossip:
                    self.gossip = Gossip(
                        host,
                        on_record=self._on_gossip_record,
                        policy=self._policy,
                        on_invalid=self.report_invalid,
                        max_strikes=INVALID_THRESHOLD,  # the same count as report_invalid's
                        ban_seconds=BAN_SECONDS,
                    )
                    await nursery.start(self.gossip.run)
                self.transfer = TransferService(
                    host,
                    blobs=self.library.blobs,
                    blob_limiter=self.blob_limiter,
                    on_invalid=self.report_invalid,
                    on_progress=self._on_progress,
                )
                self.transfer.start()
                self.sync = SyncService(
                    host,
                    communities=lambda: self.communities,
                    store=self.library.store,
                    store_limiter=self.store_limiter,
                    ingest=self.ingest_wires,
                    on_invalid=self.report_invalid,
                    interval=self.options.sync_interval,
                )
                await nursery.start(self.sync.run)
                for community in self.options.communities:
                    await self.join(community)
                await nursery.start(
                    partial(self.control.serve_unix, self.library.data_dir.control_socket)
                )
                book = await self.blocking(PeerBook.load, self.library.data_dir.peers)
                self.reconnector = Reconnector(
                    host,
                    book,
                    bootstrap=self.options.bootstrap,
                    peer_connected=self._peer_up,
                    peer_disconnected=self._peer_down,
                )
                await nursery.start(self.reconnector.run)
                if self.options.mdns:
                    mdns = Mdns(
                        identity.peer_id, transport_addrs(host), self.reconnector.discovered
                    )
                    await nursery.start(mdns.run)
                logger.info(
                    "node %s listening on %s", identity.peer_id, ", ".join(listen_addrs(host))
                )
                self.ready.set()
                task_status.started(self)
                await self._stop.wait()
            finally:
                self.control.close()
                nursery.cancel_scope.cancel()
                if self.transfer is not None:
                    self.transfer.stop()
                self.host = self.gossip = self._nursery = self.transfer = self.sync = None

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run store/blob work on the one worker thread allowed to touch them."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.store_limiter)

    # --- records --------------------------------------------------------------------------------

    def _policy(self, record: Record) -> Reason | None:
        return Reason.BLOCKED if self.library.store.is_blocked(record.author) else None

    async def _on_gossip_record(self, record: Record, peer_id: str) -> None:
        self.counters.gossip_received += 1
        await self.ingest_records([record])

    async def ingest_records(self, records: Sequence[Record]) -> IngestResult:
        result = await self.blocking(self.library.ingest, list(records))
        await self._announce(result)
        return result

    async def ingest_wires(self, wires: Sequence[bytes], peer_id: str) -> IngestResult:
        """Records from a peer (sync): decoded, verified and stored; bad ones charged to it."""
        store, limiter = self.library.store, self.store_limiter
        result = await store_from_peer(store, limiter, wires, peer_id, self.report_invalid)
        self._drop_orphans(result)
        await self._announce(result)
        return result

    def _drop_orphans(self, result: IngestResult) -> None:
        for root in result.orphaned_roots:
            self.library.blobs.delete(root)

    async def _announce(self, result: IngestResult) -> None:
        if not result.added:
            return
        views = await self.blocking(lambda: [self.api.view(r) for r in result.added])
        for view in views:
            self.control.publish("record-added", view)
        wanted = await self.blocking(self._to_fetch, result.added)
        for source in wanted:
            self.start_download(source)

    def _to_fetch(self, records: Sequence[Record]) -> list[Record]:
        """Documents the fetch policy says to download by themselves (config ``fetch``)."""
        policy = self.options.fetch
        if policy == "none":
            return []
        me = self.library.identity.public_key
        followed = self.library.store.following(me) | {me}
        out = []
        for record in records:
            source = root_original(record)
            if source.kind != DOC or self.library.blobs.is_complete(source.body["root"]):
                continue
            if policy == "all" or record.author in followed or source.author in followed:
                out.append(source)
        return out

    def _published_from_thread(self, record: Record) -> None:
        """Called on the worker thread when we made a record: gossip it from the trio side."""
        if self._token is None:
            return
        trio.from_thread.run_sync(self._published, record, trio_token=self._token)

    def _published(self, record: Record) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._gossip_quietly, record)
            self._nursery.start_soon(self._announce_one, record)

    async def _announce_one(self, record: Record) -> None:
        view = await self.blocking(self.api.view, record)
        self.control.publish("record-added", view)

    async def _gossip_quietly(self, record: Record) -> None:
        if record.community not in self.communities:
            await self.join(record.community)  # we publish there, so we are part of it
        if self.gossip is None:
            return
        try:
            await self.gossip.publish(record)
        except GossipError as exc:
            logger.warning("could not gossip %s: %s", record.kind, exc)

    def report_invalid(self, peer_id: str, reason: Reason | str) -> None:
        """Count a peer's invalid input; past the threshold of faults, hang up on it.

        Policy refusals (a blocked author, a newer record kind) are counted but are no fault of
        the peer that passed them on; protocol faults from sync or transfer (plain strings such
        as ``corrupt-chunk``) and broken records are.
        """
        reason_text = reason.value if isinstance(reason, Reason) else str(reason)
        self.counters.invalid_by_reason[reason_text] += 1
        logger.info("invalid input from %s: %s", peer_id, reason_text)
        if isinstance(reason, Reason) and reason not in PEER_FAULT_REASONS:
            return
        self.counters.invalid_by_peer[peer_id] += 1
        if self.counters.invalid_by_peer[peer_id] == INVALID_THRESHOLD and self._nursery:
            logger.warning("disconnecting %s: %d invalid items", peer_id, INVALID_THRESHOLD)
            if self.reconnector is not None:
                self.reconnector.hold(peer_id, BAN_SECONDS)
            self._nursery.start_soon(self._disconnect, peer_id)

    async def _disconnect(self, peer_id: str) -> None:
        if self.host is not None:
            await self.host.disconnect(ID.from_base58(peer_id))

    # --- communities and peers ----------------------------------------------------------------

    async def join(self, community: str) -> str:
        slug = normalise_community(community)
        if self.gossip is not None:
            await self.gossip.join(slug)
        if slug not in self.communities:
            self.communities.add(slug)
            self.control.publish("community-joined", {"community": slug})
            await self.blocking(self._remember_communities)
            if self.sync is not None:  # what the community said before we joined
                for peer in self.connected_peers():
                    self.sync.request_sync(peer)
        return slug

    async def leave(self, community: str) -> str:
        slug = normalise_community(community)
        if self.gossip is not None:
            await self.gossip.leave(slug)
        if slug in self.communities:
            self.communities.discard(slug)
            self.control.publish("community-left", {"community": slug})
            await self.blocking(self._remember_communities)
        return slug

    def _remember_communities(self) -> None:
        """Joins and leaves outlive a restart: they are written to config.toml."""
        path = self.library.data_dir.config
        try:
            config = load_config(path)
            if set(config.communities) != self.communities:
                config.communities = sorted(self.communities)
                write_config(path, config)
        except (ConfigError, OSError) as exc:
            logger.warning("could not save communities to %s: %s", path, exc)

    async def connect(self, addr: str) -> str:
        if self.host is None:
            raise ControlError(ErrorCode.UNAVAILABLE, "the node is not running")
        try:
            return await connect(self.host, addr)
        except ConnectError as exc:
            raise ControlError(ErrorCode.UNAVAILABLE, str(exc)) from None

    def connected_peers(self) -> list[str]:
        if self.host is None:
            return []
        return sorted(str(p) for p in self.host.get_connected_peers())

    def _peer_up(self, peer_id: str) -> None:
        self.control.publish("peer-up", {"peer_id": peer_id})
        self.peer_connected(peer_id)

    def _peer_down(self, peer_id: str) -> None:
        self.control.publish("peer-down", {"peer_id": peer_id})

    def peer_connected(self, peer_id: str) -> None:
        """A new peer: sync records with it; it may have what we are downloading, or what an
        interrupted download needs."""
        if self.sync is not None:
            self.sync.peer_connected(peer_id)
        if self.transfer is None or self._nursery is None:
            return
        for root in self.transfer.downloading():
            self.transfer.add_source(root, peer_id)
        self._nursery.start_soon(self._resume_partials)

    async def _resume_partials(self) -> None:
        """Downloads cut short (a restart, no peer at the time) start again when peers appear."""
        if self.transfer is None:
            return
        running = set(self.transfer.downloading())
        partial_roots = await self.blocking(self.library.blobs.partial_roots)
        for root in partial_roots:
            if root in running:
                continue
            records = await self.blocking(self.library.store.doc_records, root)
            if records:
                self.start_download(root_original(records[0]))

    # --- documents ----------------------------------------------------------------------------

    def start_download(self, doc: Record) -> bool:
        """Download a ``doc`` record's document in the background; False if already running."""
        root = doc.body["root"]
        if self.transfer is None or self._nursery is None or root in self.transfer.downloading():
            return False
        self._titles[root] = doc.body["title"]
        self._nursery.start_soon(self._download, doc)
        return True

    async def _download(self, doc: Record) -> None:
        assert self.transfer is not None
        body = doc.body
        root: bytes = body["root"]
        store = self.library.store

        def mark(state: str) -> None:
            if store.document(root) is None:
                store.add_document(root, body["size"], body["chunk_size"], pinned=False)
            store.set_document_state(root, state)

        peers = [p for p in self.connected_peers()]
        try:
            await self.blocking(mark, "partial")
            if not peers:
                raise DownloadError(root, "no peer is connected; it resumes when one connects")
            path = await self.transfer.download(
                root, peers, size_hint=body["size"], chunk_size=body["chunk_size"]
            )
        except DownloadError as exc:
            logger.warning("download of %s stopped: %s", body["title"], exc)
            self.control.publish("transfer-failed", {"root": root.hex(), "error": str(exc)})
            return
        await self.blocking(mark, "complete")
        logger.info("downloaded %s (%d bytes)", body["title"], body["size"])
        self.control.publish(
            "transfer-done", {"root": root.hex(), "path": str(path), "size": body["size"]}
        )

    def _on_progress(self, root: bytes, progress: DownloadProgress) -> None:
        self.control.publish("transfer-progress", self._progress_view(progress))

    def _progress_view(self, progress: DownloadProgress) -> dict[str, Any]:
        received = sum(s.bytes_received for s in progress.sources.values())
        return {
            "root": progress.root.hex(),
            "title": self._titles.get(progress.root, progress.root.hex()[:12]),
            "size": progress.size,
            "present_bytes": progress.present_bytes,
            "present_chunks": progress.present_chunks,
            "chunk_count": progress.chunk_count,
            "percent": round(100 * progress.fraction, 1),
            "rate": received / progress.elapsed if progress.elapsed > 0 else 0.0,
            "sources": sum(1 for s in progress.sources.values() if s.chunks_received),
        }

    def transfers(self) -> list[dict[str, Any]]:
        if self.transfer is None:
            return []
        out = []
        for root in self.transfer.downloading():
            progress = self.transfer.progress(root)
            if progress is not None:
                out.append(self._progress_view(progress))
        return out

    async def invite(self, community: str | None) -> str:
        if self.host is None:
            raise ControlError(ErrorCode.UNAVAILABLE, "the node is not running")
        slug = normalise_community(community or next(iter(sorted(self.communities)), "public"))
        await self.join(slug)  # inviting people into a community we are not in would strand them
        addrs = [a.rsplit("/p2p/", 1)[0] for a in listen_addrs(self.host)]
        addrs = [a for a in _shareable(addrs)][:8]
        return encode_invite(Invite(self.library.identity.public_key, tuple(addrs), slug))

    async def accept_invite(self, code: str) -> dict[str, Any]:
        try:
            invite = decode_invite(code)
        except InviteError as exc:
            raise ControlError(ErrorCode.INVALID_PARAMS, str(exc)) from None
        errors = []
        for addr in invite.dial_addrs():
            try:
                peer = await self.connect(addr)
                break
            except ControlError as exc:
                errors.append(str(exc))
        else:
            raise ControlError(
                ErrorCode.UNAVAILABLE,
                f"could not reach the inviting peer: {'; '.join(errors) or 'no addresses'}",
            )
        await self.join(invite.community)
        return {"peer_id": peer, "community": invite.community}

    # --- control API --------------------------------------------------------------------------

    def _hello_info(self) -> dict[str, Any]:
        return {"node": f"p2pshare {__version__}", **identity_view(self.library)}

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            name: partial(self._library_call, name) for name in self.api.methods
        }
        handlers.update(
            {
                "id": self._h_id,
                "status": self._h_status,
                "peers": self._h_peers,
                "connect": self._h_connect,
                "join": self._h_join,
                "leave": self._h_leave,
                "invite": self._h_invite,
                "shutdown": self._h_shutdown,
                "get": self._h_get,
            }
        )
        return handlers

    async def _library_call(self, method: str, params: dict[str, Any]) -> Any:
        try:
            return await self.blocking(self.api.call, method, params)
        except LibraryError as exc:
            raise ControlError(ErrorCode.REFUSED, str(exc)) from None
        except BundleError as exc:
            raise ControlError(ErrorCode.INVALID_PARAMS, str(exc)) from None
        except ValueError as exc:
            raise ControlError(ErrorCode.INVALID_PARAMS, str(exc)) from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise ControlError(ErrorCode.REFUSED, f"{where}{exc.strerror or exc}") from None

    async def _h_id(self, params: dict[str, Any]) -> dict[str, Any]:
        return identity_view(self.library)

    async def _h_status(self, params: dict[str, Any]) -> dict[str, Any]:
        counts = await self.blocking(self.api.counts, {})
        return {
            **identity_view(self.library),
            "node": f"p2pshare {__version__}",
            "pid": os.getpid(),
            "uptime_s": round((now_ms() - self.started_ms) / 1000, 1),
            "listen": listen_addrs(self.host) if self.host else [],
            "connected_peers": len(self.connected_peers()),
            "communities": sorted(self.communities),
            "gossip": self.gossip is not None,
            "records": counts["records"],
            "documents": counts["documents"],
            "transfers": self.transfers(),
            "sync": self._sync_view(),
            "invalid_received": sum(self.counters.invalid_by_peer.values()),
            "data_dir": str(self.library.data_dir.root),
        }

    def _sync_view(self) -> dict[str, int]:
        if self.sync is None:
            return {}
        c = self.sync.counters
        return {
            "sessions": c.completed,
            "failed": c.failed,
            "records_received": c.records_received,
            "records_sent": c.records_sent,
        }

    async def _h_peers(self, params: dict[str, Any]) -> dict[str, Any]:
        connected = set(self.connected_peers())
        known = {e.peer_id: e for e in self.reconnector.book.entries()} if self.reconnector else {}
        peers = []
        for peer in sorted(connected | set(known)):
            entry = known.get(peer)
            peers.append(
                {
                    "peer_id": peer,
                    "connected": peer in connected,
                    "addrs": list(entry.addrs) if entry else [],
                    "last_seen_ms": entry.last_seen_ms if entry else None,
                    "invalid": self.counters.invalid_by_peer.get(peer, 0),
                }
            )
        return {"peers": peers}

    async def _h_connect(self, params: dict[str, Any]) -> dict[str, Any]:
        addr = params.get("addr")
        if not isinstance(addr, str):
            raise ControlError(
                ErrorCode.INVALID_PARAMS, "give a multiaddr ending in /p2p/<peer id>"
            )
        return {"peer_id": await self.connect(addr)}

    async def _h_join(self, params: dict[str, Any]) -> dict[str, Any]:
        code, community = params.get("code"), params.get("community")
        if isinstance(code, str):
            return await self.accept_invite(code)
        if isinstance(community, str):
            return {"community": await self._checked(self.join, community)}
        raise ControlError(ErrorCode.INVALID_PARAMS, "give an invite code or a community name")

    async def _h_leave(self, params: dict[str, Any]) -> dict[str, Any]:
        community = params.get("community")
        if not isinstance(community, str):
            raise ControlError(ErrorCode.INVALID_PARAMS, "give a community name")
        return {"community": await self._checked(self.leave, community)}

    async def _checked(self, fn: Callable[[str], Any], community: str) -> Any:
        try:
            return await fn(community)
        except ValueError as exc:
            raise ControlError(ErrorCode.INVALID_PARAMS, str(exc)) from None

    async def _h_invite(self, params: dict[str, Any]) -> dict[str, Any]:
        community = params.get("community")
        try:
            code = await self.invite(community if isinstance(community, str) else None)
        except ValueError as exc:
            raise ControlError(ErrorCode.INVALID_PARAMS, str(exc)) from None
        return {"code": code}

    async def _h_get(self, params: dict[str, Any]) -> dict[str, Any]:
        ident = params.get("id")
        if not isinstance(ident, str):
            raise ControlError(ErrorCode.INVALID_PARAMS, "give the document's record id")
        try:
            record = await self.blocking(self.library.find, ident)
        except LibraryError as exc:
            raise ControlError(ErrorCode.NOT_FOUND, str(exc)) from None
        doc = root_original(record)
        if doc.kind != DOC:
            raise ControlError(ErrorCode.INVALID_PARAMS, f"{record.kind} records have no document")
        root = doc.body["root"]
        view = {"root": root.hex(), "title": doc.body["title"], "size": doc.body["size"]}
        if await self.blocking(self.library.blobs.is_complete, root):
            return {**view, "state": "complete"}
        if not self.connected_peers():
            raise ControlError(
                ErrorCode.UNAVAILABLE,
                "no peer is connected; connect to one (p2pshare connect / join) and try again",
            )
        self.start_download(doc)
        return {**view, "state": "downloading"}

    async def _h_shutdown(self, params: dict[str, Any]) -> dict[str, Any]:
        if self._nursery is not None:
            self._nursery.start_soon(self._stop_soon)
        return {"stopping": True}

    async def _stop_soon(self) -> None:
        await trio.sleep(0.05)  # let the answer leave before the socket closes
        self.stop()


def _shareable(addrs: Sequence[str]) -> list[str]:
    """Listen addresses a peer elsewhere could dial: wildcards expanded to this host's IPs."""
    return list(expand_wildcards(addrs, local_ips()))
