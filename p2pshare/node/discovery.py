"""Finding peers and staying connected to them: the reconnect loop and LAN discovery by mDNS.

``Reconnector`` keeps a node linked: it dials the bootstrap peers from config and the remembered
peers of the ``PeerBook`` whose retry time has come, learns every connection however it was made
(our dials, inbound, mDNS), remembers the addresses each peer announced (identify), and tells the
node about each new and lost link (``peer_connected`` starts sync). Dead peers are retried with
exponential backoff; a peer that restarts is reached again within one backoff step although
py-libp2p refuses to dial a peer for 60 s after a failed dial (``host.connect`` lifts that).

``Mdns`` announces this node on the LAN and reports the peers it hears of; it never dials by
itself (``on_peer`` is normally ``Reconnector.discovered``). It uses zeroconf directly rather than
py-libp2p's mDNS module, which announces wildcard addresses as they are (``/ip4/0.0.0.0/...``, our
default listen address, dials the dialler itself), has one process-wide callback for every
instance, and clears peerstore addresses of peers that are still connected.

Lifecycle, inside the host's lifetime::

    book = await trio.to_thread.run_sync(PeerBook.load, data_dir.root / "peers.json")
    reconnector = Reconnector(host, book, bootstrap=config.bootstrap,
                              peer_connected=node.peer_connected)
    await nursery.start(reconnector.run)
    if config.mdns:
        mdns = Mdns(peer_id_of(host), transport_addrs(host), reconnector.discovered)
        await nursery.start(mdns.run)
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import ifaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream, INotifee
from libp2p.peer.id import ID
from multiaddr import Multiaddr
from zeroconf import (
    InterfaceChoice,
    IPVersion,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)

from p2pshare.node.host import LOW_WATERMARK, ConnectError, connect, is_connected
from p2pshare.node.peerbook import (
    MAX_ADDRS_PER_PEER,
    PeerBook,
    clean_addrs,
    is_peer_id,
    write_atomic,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

# trio.TaskStatus: see p2pshare.node.gossip for why it is Any here.
TaskStatusAny = Any

# --- Reconnector settings ----------------------------------------------------------------------
# Remembered peers are dialled only while we have fewer links than this: above it the host's
# pruner would trim what we dial. Bootstrap peers are dialled whatever the count.
TARGET_PEERS = LOW_WATERMARK
MAX_CONCURRENT_DIALS = 4  # a dead address can take the whole dial timeout
DIAL_TIMEOUT = 10.0  # per address
POLL_INTERVAL = 1.0  # connection events also wake the loop; this is the fallback
SAVE_INTERVAL = 10.0  # peers.json is written at most this often, and at exit
SAVE_TIMEOUT = 5.0
# A link that lasted this long proves the peer reachable and clears its failures; one that ends
# sooner counts as a failed dial (a peer that accepts and hangs up must back off too).
STABLE_LINK = 30.0

# --- mDNS settings -----------------------------------------------------------------------------
# Our own service type, not libp2p's ``_p2p._udp``: on a LAN with IPFS nodes we would otherwise
# dial every one of them, and they share none of our protocols. TXT records follow the libp2p
# mDNS spec (``dnsaddr=<multiaddr>/p2p/<peer id>``, one string per address).
SERVICE_TYPE = "_p2pshare._udp.local."
RESOLVE_TIMEOUT_MS = 3000
MAX_PENDING_NAMES = 64  # announcements waiting to be resolved; beyond it they are dropped
MAX_RESOLVING = 4
MDNS_CLOSE_TIMEOUT = 5.0
TXT_KEY = b"dnsaddr"
MAX_TXT_STRING = 255

PeerCallback = Callable[[str], None]
DiscoveryCallback = Callable[[str, list[str]], None]


def _ignore_peer(peer_id: str) -> None:
    return None


# --- addresses ---------------------------------------------------------------------------------


def split_peer_addr(addr: str) -> tuple[str, str]:
    """``/ip4/1.2.3.4/tcp/4011/p2p/<id>`` → (peer id, transport address); ValueError if not."""
    transport, sep, peer_id = addr.rpartition("/p2p/")
    if not sep or not transport or not is_peer_id(peer_id):
        raise ValueError(f"{addr!r} is not a peer address ending in /p2p/<peer id>")
    try:
        Multiaddr(transport)
    except Exception as exc:  # multiaddr raises several unrelated types for bad text
        raise ValueError(f"{addr!r} is not a multiaddr") from exc
    return peer_id, transport


def _ip_of(addr: str) -> tuple[str, str] | None:
    """(protocol, ip) of an ``/ip4/...`` or ``/ip6/...`` address."""
    parts = addr.split("/")
    if len(parts) > 2 and parts[1] in ("ip4", "ip6"):
        return parts[1], parts[2]
    return None


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def _is_wildcard(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_unspecified
    except ValueError:
        return False


def dialable_addrs(announced: Iterable[str], remote_ip: str | None) -> list[str]:
    """The addresses a peer announced that we could dial it at later.

    A peer listening on ``0.0.0.0`` announces exactly that; the IP it reached us from, with the
    announced port, is the useful form. Loopback addresses announced by a peer that is not on
    our loopback would reach ourselves or a stranger, so they are dropped.
    """
    remote_version = _ip_version(remote_ip)
    out: list[str] = []
    for addr in clean_addrs(announced):
        ip = _ip_of(addr)
        if ip is None:
            if "/tcp/" in addr:  # /dns4/... and the like: kept as announced
                out.append(addr)
            continue
        proto, value = ip
        if _is_wildcard(value):
            if remote_ip is None or remote_version != proto:
                continue
            addr = addr.replace(f"/{proto}/{value}/", f"/{proto}/{remote_ip}/", 1)
        elif _is_loopback(value) and not (remote_ip and _is_loopback(remote_ip)):
            continue
        if "/tcp/" in addr and addr not in out:
            out.append(addr)
    return out[:MAX_ADDRS_PER_PEER]


def _ip_version(ip: str | None) -> str | None:
    if ip is None:
        return None
    try:
        return "ip4" if ipaddress.ip_address(ip).version == 4 else "ip6"
    except ValueError:
        return None


def local_ips() -> list[str]:
    """This machine's interface addresses, IPv4 then IPv6 (no link-local IPv6: it needs a
    zone, which multiaddrs cannot carry)."""
    v4: list[str] = []
    v6: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if ip.is_IPv4 and isinstance(ip.ip, str):
                v4.append(ip.ip)
            elif isinstance(ip.ip, tuple) and not ipaddress.ip_address(ip.ip[0]).is_link_local:
                v6.append(ip.ip[0])
    return list(dict.fromkeys(v4 + v6))


def expand_wildcards(listen_addrs: Iterable[str], ips: Sequence[str]) -> list[str]:
    """Listen addresses as others can dial them: ``0.0.0.0``/``::`` become each interface IP.

    Loopback addresses are dropped when any other address exists (a LAN peer cannot use them);
    when they are all there is, they stay, for peers on the same machine.
    """
    expanded: list[str] = []
    for addr in clean_addrs(listen_addrs):
        ip = _ip_of(addr)
        if ip is None:
            expanded.append(addr)
            continue
        proto, value = ip
        if not _is_wildcard(value):
            expanded.append(addr)
            continue
        for local in ips:
            if _ip_version(local) == proto:
                expanded.append(addr.replace(f"/{proto}/{value}/", f"/{proto}/{local}/", 1))
    expanded = list(dict.fromkeys(expanded))
    outside = [a for a in expanded if not _is_loopback_addr(a)]
    return (outside or expanded)[:MAX_ADDRS_PER_PEER]


def _is_loopback_addr(addr: str) -> bool:
    ip = _ip_of(addr)
    return ip is not None and _is_loopback(ip[1])


def transport_addrs(host: IHost) -> list[str]:
    """What the host is bound to, without ``/p2p/<id>`` (wildcards still wildcards)."""
    return [str(addr) for addr in host.get_transport_addrs()]


# --- mDNS TXT records --------------------------------------------------------------------------


def encode_txt(peer_id: str, addrs: Sequence[str]) -> bytes:
    """Raw TXT rdata: one ``dnsaddr=<addr>/p2p/<id>`` string per address (libp2p mDNS spec)."""
    out = bytearray()
    for addr in addrs[:MAX_ADDRS_PER_PEER]:
        entry = TXT_KEY + b"=" + f"{addr}/p2p/{peer_id}".encode()
        if len(entry) <= MAX_TXT_STRING:
            out += bytes([len(entry)]) + entry
    return bytes(out)


def parse_txt(text: bytes) -> tuple[str | None, list[str]]:
    """(peer id, transport addresses) from TXT rdata; addresses of another peer id are ignored.

    Accepts ``dnsaddr=`` repeated (the spec, go-libp2p) and ``dnsaddr2=``... (py-libp2p).
    """
    peer_id: str | None = None
    addrs: list[str] = []
    i = 0
    while i < len(text):
        length = text[i]
        if i + 1 + length > len(text):
            break  # truncated
        entry, i = text[i + 1 : i + 1 + length], i + 1 + length
        key, sep, value = entry.partition(b"=")
        if not sep or not key.startswith(TXT_KEY):
            continue
        try:
            pid, addr = split_peer_addr(value.decode())
        except (UnicodeDecodeError, ValueError):
            continue
        if peer_id is None:
            peer_id = pid
        if pid == peer_id and addr not in addrs:
            addrs.append(addr)
    return peer_id, addrs[:MAX_ADDRS_PER_PEER]


# --- the reconnect loop ------------------------------------------------------------------------


class _WakeOnConnection(INotifee):
    """Wakes the loop at once when a connection opens or closes (instead of at the next poll)."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    async def opened_stream(self, network: Any, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: Any, stream: INetStream) -> None:
        return None

    async def connected(self, network: Any, conn: INetConn) -> None:
        self._wake()

    async def disconnected(self, network: Any, conn: INetConn) -> None:
        self._wake()

    async def listen(self, network: Any, multiaddr: Multiaddr) -> None:
        return None

    async def listen_close(self, network: Any, multiaddr: Multiaddr) -> None:
        return None


class Reconnector:
    """Dials bootstrap and remembered peers, notices every link, keeps the ``PeerBook``.

    ``peer_connected(peer_id)`` / ``peer_disconnected(peer_id)`` run on the trio thread once per
    change of a peer's link, however it was made; they must not block (start a task instead).
    """

    def __init__(
        self,
        host: IHost,
        book: PeerBook,
        *,
        bootstrap: Sequence[str] = (),
        peer_connected: PeerCallback = _ignore_peer,
        peer_disconnected: PeerCallback = _ignore_peer,
        target_peers: int = TARGET_PEERS,
        max_dials: int = MAX_CONCURRENT_DIALS,
        dial_timeout: float = DIAL_TIMEOUT,
        poll_interval: float = POLL_INTERVAL,
        save_interval: float = SAVE_INTERVAL,
        stable_link: float = STABLE_LINK,
    ) -> None:
        self.host = host
        self.book = book
        self.peer_connected = peer_connected
        self.peer_disconnected = peer_disconnected
        self.target_peers = target_peers
        self.max_dials = max_dials
        self.dial_timeout = dial_timeout
        self.poll_interval = poll_interval
        self.save_interval = save_interval
        self.stable_link = stable_link
        self.my_id = str(host.get_id())
        self.bootstrap = _parse_bootstrap(bootstrap, self.my_id)
        self.dials = 0  # attempts made (each may try several addresses)
        self.failed_dials = 0
        self._connected: dict[str, float] = {}  # peer id -> trio time the link came up
        self._dialing: set[str] = set()
        self._remote_ip: dict[str, str] = {}
        self._wake = trio.Event()
        self._last_save = 0.0

    @property
    def connected(self) -> frozenset[str]:
        """Peers linked as of the loop's last look."""
        return frozenset(self._connected)

    # --- inputs from elsewhere ------------------------------------------------------------------

    def discovered(self, peer_id: str, addrs: Sequence[str]) -> None:
        """A peer announced itself (mDNS, an invite): remember it and dial it if not linked.

        Fresh addresses make it due now, even if it was backing off: a new announcement is the
        best evidence that it is reachable. The same announcement again changes nothing.
        """
        if peer_id == self.my_id:
            return
        known = self.book.get(peer_id)
        before = set(known.addrs) if known else set()
        entry = self.book.learn(peer_id, addrs)
        if entry is None:
            return
        if not set(clean_addrs(addrs)) <= before:
            entry.next_attempt_ms = min(entry.next_attempt_ms, self.book.now_ms())
        self._poke()

    def hold(self, peer_id: str, seconds: float) -> None:
        """Do not redial ``peer_id`` for ``seconds`` (we disconnected it for misbehaving)."""
        self.book.defer(peer_id, seconds)

    def _poke(self) -> None:
        self._wake.set()

    # --- the loop -------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatusAny = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; ``await nursery.start(reconnector.run)``. Saves the book at exit."""
        network: Any = self.host.get_network()
        notifee = _WakeOnConnection(self._poke)
        network.register_notifee(notifee)
        try:
            async with trio.open_nursery() as nursery:
                for peer_id, addrs in self.bootstrap.items():
                    self.book.learn(peer_id, addrs)
                self.book.prune()
                self._last_save = trio.current_time()
                task_status.started()
                while True:
                    self._wake = trio.Event()
                    self._sync_connections()
                    delay = self._dial_due(nursery)
                    await self._save_if_due()
                    with trio.move_on_after(delay):
                        await self._wake.wait()
        finally:
            network.remove_notifee(notifee)
            self._refresh_connected()  # identify may have finished since each link came up
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + SAVE_TIMEOUT
                await self._save()

    def _sync_connections(self) -> None:
        now = {str(peer) for peer in self.host.get_connected_peers()}
        for peer_id in sorted(now - self._connected.keys()):
            self._note_up(peer_id)
        for peer_id in sorted(self._connected.keys() - now):
            self._note_down(peer_id)

    def _note_up(self, peer_id: str, dialed: str | None = None) -> None:
        if peer_id in self._connected or not is_connected(self.host, peer_id):
            return
        self._connected[peer_id] = trio.current_time()
        remote_ip = self._connection_ip(peer_id)
        if remote_ip is not None:
            self._remote_ip[peer_id] = remote_ip
        announced = self._announced_addrs(peer_id)
        self.book.seen(peer_id, ([dialed] if dialed else []) + announced)
        logger.debug("connected to %s", peer_id)
        _call(self.peer_connected, peer_id)

    def _note_down(self, peer_id: str) -> None:
        lasted = trio.current_time() - self._connected.pop(peer_id)
        announced = self._announced_addrs(peer_id)  # identify may have finished after _note_up
        if peer_id not in self.book:  # evicted while linked: a peer we just had is worth keeping
            self.book.learn(peer_id, announced)
        else:
            self.book.update_addrs(peer_id, announced)
        self.book.disconnected(peer_id, stable=lasted >= self.stable_link)
        self._remote_ip.pop(peer_id, None)
        logger.debug("disconnected from %s", peer_id)
        _call(self.peer_disconnected, peer_id)

    def _dial_due(self, nursery: trio.Nursery) -> float:
        """Start dials that are due; return how long the loop may sleep before the next."""
        now_ms = self.book.now_ms()
        room = len(self._connected) < self.target_peers
        next_ms: int | None = None
        for entry in self.book.entries():
            peer_id = entry.peer_id
            if not entry.addrs or peer_id in self._connected or peer_id in self._dialing:
                continue
            if not room and peer_id not in self.bootstrap:
                continue
            if entry.next_attempt_ms > now_ms:
                due_ms = entry.next_attempt_ms
                next_ms = due_ms if next_ms is None else min(next_ms, due_ms)
                continue
            if len(self._dialing) >= self.max_dials:
                continue  # a finishing dial wakes the loop
            self._dialing.add(peer_id)
            nursery.start_soon(self._dial, peer_id, self._dial_order(peer_id, entry.addrs))
        delay = self.poll_interval
        if next_ms is not None:
            delay = min(delay, max(0.0, (next_ms - now_ms) / 1000))
        return delay

    def _dial_order(self, peer_id: str, addrs: list[str]) -> list[str]:
        boot = self.bootstrap.get(peer_id, [])
        return list(dict.fromkeys(addrs + boot))

    async def _dial(self, peer_id: str, addrs: list[str]) -> None:
        self.dials += 1
        worked: str | None = None
        try:
            for addr in addrs:
                if is_connected(self.host, peer_id):
                    break
                try:
                    await self._dial_one(peer_id, addr)
                except ConnectError as exc:
                    logger.debug("dial %s failed: %s", peer_id, exc)
                    continue
                worked = addr
                break
            if is_connected(self.host, peer_id):  # ours, or it dialled us meanwhile
                self._note_up(peer_id, dialed=worked)
                return
            # Also when the dial "succeeded" but the link is gone already: backing off keeps a
            # peer that hangs up on us from being redialled in a tight loop.
            self.failed_dials += 1
            delay = self.book.failed(peer_id)
            logger.debug("%s unreachable; next try in %.1f s", peer_id, delay)
        finally:
            self._dialing.discard(peer_id)
            self._poke()

    async def _dial_one(self, peer_id: str, addr: str) -> None:
        """Dial exactly ``addr``.

        py-libp2p's swarm dials only the first TCP address its peerstore holds for a peer
        (and skips loopback ones when others exist), whatever address ``host.connect`` was
        given; a stale address from before the peer restarted would make every dial fail.
        So the peerstore is cleared first: what we know lives in the book.
        """
        peer = ID.from_base58(peer_id)
        if not is_connected(self.host, peer_id):
            self.host.get_peerstore().clear_addrs(peer)
        await connect(self.host, f"{addr}/p2p/{peer_id}", timeout=self.dial_timeout)

    # --- addresses --------------------------------------------------------------------------

    def _connection_ip(self, peer_id: str) -> str | None:
        network: Any = self.host.get_network()
        for conn in network.get_connections(ID.from_base58(peer_id)):
            for addr in conn.get_transport_addresses():
                ip = _ip_of(str(addr))
                if ip is not None:
                    return ip[1]
        return None

    def _announced_addrs(self, peer_id: str) -> list[str]:
        try:
            addrs = self.host.get_peerstore().addrs(ID.from_base58(peer_id))
        except Exception:  # PeerStoreError: unknown or expired
            return []
        return dialable_addrs((str(a) for a in addrs), self._remote_ip.get(peer_id))

    # --- persistence ------------------------------------------------------------------------

    async def _save_if_due(self) -> None:
        if trio.current_time() - self._last_save < self.save_interval:
            return
        self._last_save = trio.current_time()
        self._refresh_connected()
        if self.book.dirty:
            await self._save()

    def _refresh_connected(self) -> None:
        """Addresses linked peers announced since their link came up (identify runs after),
        and the failures of peers whose link has lasted forgiven."""
        now = trio.current_time()
        for peer_id, since in self._connected.items():
            self.book.update_addrs(peer_id, self._announced_addrs(peer_id))
            if now - since >= self.stable_link:
                self.book.stable(peer_id)

    async def _save(self) -> None:
        path = self.book.path
        if path is None or not self.book.dirty:
            return
        data = self.book.dumps()  # on this thread: the book is not shared with the worker
        self.book.dirty = False
        try:
            # Not abandoned on cancellation: a write still running after we return could land
            # after (and undo) a later one. It takes about a millisecond.
            await trio.to_thread.run_sync(write_atomic, path, data)
        except OSError as exc:
            self.book.dirty = True
            logger.warning("cannot save remembered peers to %s: %s", path, exc)
        except BaseException:
            self.book.dirty = True
            raise


def _parse_bootstrap(addrs: Sequence[str], my_id: str) -> dict[str, list[str]]:
    peers: dict[str, list[str]] = {}
    for addr in addrs:
        try:
            peer_id, transport = split_peer_addr(addr)
        except ValueError as exc:
            logger.warning("ignoring bootstrap entry: %s", exc)
            continue
        if peer_id != my_id:
            peers.setdefault(peer_id, []).append(transport)
    return peers


async def _in_thread(
    fn: Callable[..., T], *args: Any, limiter: trio.CapacityLimiter | None = None
) -> T:
    """Run blocking ``fn`` on a worker thread; on cancellation, stop waiting for it.

    Only for work that is safe to abandon (zeroconf calls with their own timeouts), so
    shutdown stays bounded. (libp2p pulls in an old trio-stubs that lacks ``abandon_on_cancel``.)
    """
    run_sync: Any = trio.to_thread.run_sync
    result: T = await run_sync(fn, *args, limiter=limiter, abandon_on_cancel=True)
    return result


def _call(callback: Callable[[str], None], peer_id: str) -> None:
    try:
        callback(peer_id)
    except Exception:
        logger.exception("peer callback failed for %s", peer_id)


# --- mDNS --------------------------------------------------------------------------------------


class Mdns:
    """Announce this node on the LAN and report peers announcing themselves; never dials.

    ``on_peer(peer_id, addrs)`` runs on the trio thread for each announcement resolved (the
    same peer again when its announcement changes). zeroconf calls us on its own threads; we
    only hop into trio from there. If multicast is unavailable the node runs on without it.
    Binds UDP 5353 on all IPv4 interfaces: tests must run it inside a network namespace.
    """

    def __init__(
        self,
        peer_id: str,
        listen_addrs: Sequence[str],
        on_peer: DiscoveryCallback,
        *,
        service_type: str = SERVICE_TYPE,
        interfaces: Sequence[str] | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.listen_addrs = list(listen_addrs)
        self.on_peer = on_peer
        self.service_type = service_type
        self.interfaces = list(interfaces) if interfaces is not None else None
        # Random instance name (as the libp2p spec asks): the peer id would be a stable tracker.
        self.service_name = f"{secrets.token_hex(16)}.{service_type}"
        self.announced: list[str] = []
        self.running = False
        self._limiter = trio.CapacityLimiter(MAX_RESOLVING)

    async def run(self, *, task_status: TaskStatusAny = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; ``await nursery.start(mdns.run)`` returns once announced."""
        token = trio.lowlevel.current_trio_token()
        send, receive = trio.open_memory_channel[str](MAX_PENDING_NAMES)
        zc: Zeroconf | None = None
        browser: ServiceBrowser | None = None
        try:
            try:
                zc = await trio.to_thread.run_sync(self._start)
                browser = await trio.to_thread.run_sync(self._browse, zc, send, token)
            except Exception as exc:  # OSError, zeroconf's errors: no multicast here
                logger.warning("mDNS unavailable, peers on the LAN will not be found: %s", exc)
                task_status.started()
                return
            self.running = True
            async with trio.open_nursery() as nursery:
                task_status.started()
                pending: set[str] = set()
                async for name in receive:
                    if name not in pending:
                        pending.add(name)
                        nursery.start_soon(self._resolve, zc, name, pending)
        finally:
            self.running = False
            send.close()
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + MDNS_CLOSE_TIMEOUT
                await _in_thread(self._stop, zc, browser)

    def _start(self) -> Zeroconf:
        """Open zeroconf and announce (blocking: probing takes about a second)."""
        ips = local_ips()
        self.announced = expand_wildcards(self.listen_addrs, ips)
        zc = Zeroconf(
            interfaces=self.interfaces if self.interfaces is not None else InterfaceChoice.All,
            ip_version=IPVersion.V4Only,
        )
        try:
            if self.announced:
                zc.register_service(self._service_info(ips))
        except BaseException:
            zc.close()
            raise
        return zc

    def _service_info(self, ips: Sequence[str]) -> ServiceInfo:
        port = next((int(a.split("/tcp/")[1].split("/")[0]) for a in self.announced), 0)
        v4 = [ip for ip in ips if _ip_version(ip) == "ip4" and not _is_loopback(ip)]
        return ServiceInfo(
            self.service_type,
            self.service_name,
            port=port,
            properties=encode_txt(self.peer_id, self.announced),
            server=f"{self.service_name.split('.')[0]}.local.",
            parsed_addresses=v4 or ["127.0.0.1"],
        )

    def _browse(
        self, zc: Zeroconf, send: trio.MemorySendChannel[str], token: trio.lowlevel.TrioToken
    ) -> ServiceBrowser:
        def on_change(
            zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
        ) -> None:
            # On zeroconf's browser thread: only hand the name over to trio.
            if state_change is ServiceStateChange.Removed or name == self.service_name:
                return
            with contextlib.suppress(
                trio.RunFinishedError,  # the node has stopped
                trio.WouldBlock,  # a flood of announcements: drop, the next one will do
                trio.ClosedResourceError,
                trio.BrokenResourceError,
            ):
                trio.from_thread.run_sync(send.send_nowait, name, trio_token=token)

        return ServiceBrowser(zc, self.service_type, handlers=[on_change])

    async def _resolve(self, zc: Zeroconf, name: str, pending: set[str]) -> None:
        try:
            info = await _in_thread(
                zc.get_service_info,
                self.service_type,
                name,
                RESOLVE_TIMEOUT_MS,
                limiter=self._limiter,
            )
        except Exception as exc:
            logger.debug("mDNS: cannot resolve %s: %s", name, exc)
            return
        finally:
            pending.discard(name)
        if info is None or not info.text:
            return
        peer_id, addrs = parse_txt(info.text)
        if peer_id is None or peer_id == self.peer_id or not addrs:
            return
        logger.debug("mDNS: %s at %s", peer_id, ", ".join(addrs))
        try:
            self.on_peer(peer_id, addrs)
        except Exception:
            logger.exception("mDNS on_peer callback failed")

    @staticmethod
    def _stop(zc: Zeroconf | None, browser: ServiceBrowser | None) -> None:
        """Say goodbye (peers drop our entry at once) and release the sockets (blocking)."""
        if browser is not None:
            browser.cancel()
        if zc is not None:
            zc.close()  # unregisters our service first
