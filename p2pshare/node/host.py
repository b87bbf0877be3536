"""The libp2p host of a node: our identity, Noise only, Yamux, TCP, sized for a small node.

py-libp2p's defaults are wrong for us in ways that were measured (see notes/py-libp2p.md):
``new_host()`` also offers plaintext, secio and TLS (a plaintext dialer was accepted), waits a
fixed 250 ms per dial unless one connection per peer is allowed, aims for ~200 connections with an
auto-connector that dials any peer it ever heard of, blocks a peer for 60 s after one failed dial,
and lets its logger write to stderr. Everything here exists to pin those choices down in one place.

Lifecycle: ``async with open_host(identity, ["/ip4/0.0.0.0/tcp/4001"]) as host:`` listens, and
on exit closes every connection and listener within ``shutdown_timeout`` seconds, even when the
surrounding scope is being cancelled.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.peer.peerstore import PeerStore
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.secure_session import SecureSession
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.transport.tcp.tcp import TCP
from multiaddr import Multiaddr

from p2pshare.node.fast_noise import WRITE_SHIELD_TIMEOUT, FastNoiseTransport
from p2pshare.node.identity import Identity

logger = logging.getLogger(__name__)

LIBP2P_LOGGER = "libp2p"
LOOPBACK_LISTEN_ADDR = "/ip4/127.0.0.1/tcp/0"

# A small node: a few dozen peers, never hundreds. Pruning starts above HIGH and trims to LOW.
MAX_CONNECTIONS = 64
HIGH_WATERMARK = 48
LOW_WATERMARK = 32
DIAL_TIMEOUT = 10.0  # library-side bound per dial attempt; connect() adds its own overall bound
CONNECT_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 5.0


class ListenError(Exception):
    """An address could not be bound (in use, not ours, or not TCP)."""


class ConnectError(Exception):
    """A peer could not be reached; the message says which address and why."""


def configure_libp2p_logging(handler: logging.Handler | None, level: int = logging.WARNING) -> None:
    """Send py-libp2p's log records to ``handler`` only (``None`` silences them).

    ``import libp2p`` leaves its logger with no handler and propagation off, so Python's
    last-resort handler prints its warnings straight to stderr, i.e. into the TUI's terminal.
    Setting LIBP2P_DEBUG also installs a stderr handler; we replace that too.
    """
    lib_logger = logging.getLogger(LIBP2P_LOGGER)
    for name, child in list(logging.root.manager.loggerDict.items()):
        # Some modules pin their own level (the auto-connector logs every check at INFO).
        if name.startswith(LIBP2P_LOGGER + ".") and isinstance(child, logging.Logger):
            child.setLevel(logging.NOTSET)
    for old in list(lib_logger.handlers):
        lib_logger.removeHandler(old)
    if handler is not None and not any(
        isinstance(f, _StreamFailureFilter) for f in handler.filters
    ):
        handler.addFilter(_StreamFailureFilter())
    lib_logger.addHandler(handler if handler is not None else logging.NullHandler())
    lib_logger.setLevel(level)
    lib_logger.propagate = False


class _StreamFailureFilter(logging.Filter):
    """Drops py-libp2p's nine-line ERROR for each stream it could not open (a peer without our
    protocol, a peer that left mid-negotiation): the caller gets StreamFailure and our code logs
    what it means in one line, so on a long-running node these only buried the real errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name == "libp2p.host.basic_host"
            and str(record.msg).startswith("Failed to open stream to peer")
        )


def connection_config() -> ConnectionConfig:
    """Connection limits chosen for a home server or laptop.

    ``max_connections_per_peer=1`` removes the swarm's fixed 250 ms "happy eyeballs" wait per
    dial (measured: 250 ms -> 5-9 ms) and keeps one Yamux session per peer.
    """
    return ConnectionConfig(
        max_connections=MAX_CONNECTIONS,
        high_watermark=HIGH_WATERMARK,
        low_watermark=LOW_WATERMARK,
        min_connections=0,
        max_connections_per_peer=1,
        dial_timeout=DIAL_TIMEOUT,
    )


def _make_secure_writes_atomic() -> None:
    """Noise burns a nonce before it writes; a write cancelled in between kills the connection.

    py-libp2p encrypts (advancing the nonce) and then awaits the socket send, which checks for
    cancellation first. A task cancelled there (a read timeout: Yamux sends window updates from
    inside ``read``) drops the message and the peer fails to decrypt everything after it, so
    one timeout could kill a whole connection, gossip included. Measured: 6 of 12 runs broke
    without this, 0 of 12 with it. The write is shielded, bounded by its own deadline.
    """
    original = SecureSession.write
    if getattr(original, "_p2pshare_shielded", False):
        return

    async def write(self: SecureSession, data: bytes) -> None:
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + WRITE_SHIELD_TIMEOUT
            await original(self, data)

    write._p2pshare_shielded = True  # type: ignore[attr-defined]
    SecureSession.write = write  # type: ignore[method-assign]


def build_host(identity: Identity, *, fast_transport: bool = True) -> IHost:
    """A host that is not listening yet; prefer ``open_host``, which also runs and closes it.

    ``fast_transport``: Noise sessions carried on by ``fast_noise.FastNoiseSession`` (the same
    wire format, less CPU per byte); False keeps py-libp2p's own session (benchmarks and
    interop tests). Yamux stays py-libp2p's: 0.8's muxer negotiation builds its own ``Yamux``
    for /yamux/1.0.0 whatever class ``muxer_opt`` names, so a faster one cannot be passed in.
    """
    # py-libp2p's Yamux sends a window update on every read unless told otherwise (go-yamux waits
    # for half the window): 33 -> 6 update frames per gossip message. Read at call time.
    os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")
    _make_secure_writes_atomic()
    key_pair = create_new_key_pair(identity.seed)
    # The Noise static key only protects the session; the identity key signs it in the
    # handshake, so a fresh one per start is correct and nothing secret is written anywhere.
    transport = FastNoiseTransport if fast_transport else NoiseTransport
    noise = transport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},  # Noise only: never plaintext, secio or TLS
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},  # Yamux only: no Mplex fallback
        transports=[TCP()],  # QUIC lost tail bytes and ran at ~5 MB/s in our tests
        peerstore_opt=PeerStore(),  # in memory: the persistent one stores our key in plaintext
        connection_config=connection_config(),
    )


@asynccontextmanager
async def open_host(
    identity: Identity,
    listen_addrs: Sequence[str] = (LOOPBACK_LISTEN_ADDR,),
    *,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
    fast_transport: bool = True,
) -> AsyncIterator[IHost]:
    """Run a listening host for the duration of the block; see ``listen_addrs(host)``.

    Teardown is bounded: connections and listeners are closed in a shielded scope limited to
    ``shutdown_timeout`` seconds, so a cancelled caller still releases its sockets and a stuck
    peer cannot hold shutdown forever.
    """
    addrs = _parse_listen_addrs(listen_addrs)
    _check_ports_free(addrs)
    host = build_host(identity, fast_transport=fast_transport)
    body_error: BaseException | None = None
    try:
        with trio.CancelScope() as teardown:
            async with host.run(listen_addrs=addrs):
                try:
                    await _stop_auto_connector(host)
                    _check_listening(host, addrs)
                    yield host
                except BaseException as exc:
                    body_error = exc
                    raise
                finally:
                    teardown.deadline = trio.current_time() + shutdown_timeout
                    with trio.CancelScope(shield=True) as closing:
                        closing.deadline = teardown.deadline
                        await host.close()
    except BaseExceptionGroup as group:
        # py-libp2p's nested nurseries wrap the caller's own exception in three groups.
        if body_error is None or not only_wraps(group, body_error):
            raise
    else:
        if teardown.cancelled_caught:
            logger.warning("libp2p host shutdown took over %.1f s; abandoned", shutdown_timeout)
        if body_error is None or isinstance(body_error, trio.Cancelled):
            return
    raise body_error


def only_wraps(group: BaseExceptionGroup[BaseException], body_error: BaseException) -> bool:
    """True if ``group`` holds nothing but ``body_error`` (or its own leaves), however nested.

    A context manager that runs a nursery sees its caller's exception come back wrapped in
    groups; it re-raises the caller's exception as it was when the wrapping added nothing.
    """
    return {id(leaf) for leaf in _leaves(group)} <= {id(leaf) for leaf in _leaves(body_error)}


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


async def _stop_auto_connector(host: IHost) -> None:
    """We choose whom to dial (followed peers, communities, invites): not the library.

    The swarm's auto-connector otherwise dials any peer whose address reached the peerstore
    (identify, gossip sender records) until it reaches the middle of the watermarks, and it
    would redial a peer we just disconnected for misbehaving.
    """
    network: Any = host.get_network()
    auto_connector = getattr(network, "auto_connector", None)
    if auto_connector is not None:
        await auto_connector.stop()


def _parse_listen_addrs(texts: Sequence[str]) -> list[Multiaddr]:
    addrs = []
    for text in texts:
        try:
            addr = Multiaddr(text)
        except Exception as exc:  # multiaddr raises several unrelated types for bad text
            raise ListenError(f"{text!r} is not a multiaddr like /ip4/0.0.0.0/tcp/4001") from exc
        names = {proto.name for proto in addr.protocols()}
        if "tcp" not in names or not names & {"ip4", "ip6"}:
            raise ListenError(f"{text}: only TCP on an IP address is supported")
        addrs.append(addr)
    return addrs


def _check_ports_free(addrs: Sequence[Multiaddr]) -> None:
    """Refuse a fixed port that something already listens on.

    py-libp2p binds with SO_REUSEPORT (for hole punching), so a second node of the same user on
    the same port binds "successfully" and the kernel splits inbound connections between the
    two. A plain bind (SO_REUSEADDR only, so TIME_WAIT after a restart is no obstacle) fails
    while any socket listens on the port, which is exactly the check we need.
    """
    for addr in addrs:
        protocols = {proto.name for proto in addr.protocols()}
        port = int(addr.value_for_protocol("tcp"))
        if port == 0:
            continue
        family, ip = (
            (socket.AF_INET6, addr.value_for_protocol("ip6"))
            if "ip6" in protocols
            else (socket.AF_INET, addr.value_for_protocol("ip4"))
        )
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((ip, port))
            except OSError as exc:
                raise ListenError(f"cannot listen on {addr}: {exc.strerror}") from None


def _check_listening(host: IHost, addrs: Sequence[Multiaddr]) -> None:
    """The swarm only logs a failed bind at debug level; a node must say so and stop."""
    network: Any = host.get_network()
    missing = [str(addr) for addr in addrs if str(addr) not in network.listeners]
    if missing:
        raise ListenError(f"cannot listen on {', '.join(missing)} (address in use or not local?)")


def peer_id_of(host: IHost) -> str:
    return str(host.get_id())


def listen_addrs(host: IHost) -> list[str]:
    """The addresses actually bound (port 0 resolved), each ending in ``/p2p/<peer id>``.

    Not what peers observed (``host.get_addrs()`` adds those), and a wildcard stays a
    wildcard: ``/ip4/0.0.0.0/...`` must be expanded to interface addresses before it is shared.
    """
    suffix = f"/p2p/{host.get_id()}"
    return [f"{addr}{suffix}" for addr in host.get_transport_addrs()]


async def connect(host: IHost, addr: str, timeout: float = CONNECT_TIMEOUT) -> str:
    """Dial ``addr`` (which must end in ``/p2p/<peer id>``) and return the peer id.

    An explicit connect always dials for real: the swarm refuses to dial a peer for 60 s after
    one failed attempt (its "negative cache"), which would keep a restarted peer unreachable, so
    we lift that block first. A failure leaves it in place, so incidental ``new_stream`` calls
    to a dead peer fail fast instead of dialing again.
    """
    try:
        info = info_from_p2p_addr(Multiaddr(addr))
    except Exception as exc:  # multiaddr raises several unrelated types for bad text
        raise ConnectError(f"{addr!r} is not a peer address ending in /p2p/<peer id>") from exc
    if info.peer_id == host.get_id():
        raise ConnectError(f"{addr} is this node's own address")
    network: Any = host.get_network()
    network.unblock_peer(info.peer_id)
    if not network.get_connections(info.peer_id):
        # The swarm dials only the first TCP address its peerstore holds: a stale one from
        # before the peer restarted would win over ``addr``.
        host.get_peerstore().clear_addrs(info.peer_id)
    try:
        with trio.fail_after(timeout):
            await host.connect(info)
    except trio.TooSlowError:
        raise ConnectError(f"no connection to {addr} within {timeout:g} s") from None
    except Exception as exc:  # the swarm wraps OS, security and muxer errors differently
        raise ConnectError(f"cannot connect to {addr}: {_root_cause(exc)}") from exc
    return str(info.peer_id)


async def disconnect(host: IHost, peer_id: str) -> None:
    await host.disconnect(ID.from_base58(peer_id))


def is_connected(host: IHost, peer_id: str) -> bool:
    network: Any = host.get_network()
    return bool(network.get_connections(ID.from_base58(peer_id)))


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__
