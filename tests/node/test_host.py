"""The node's libp2p host: Noise only, real bound addresses, bounded dials and clean shutdown."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.transport.tcp.tcp import TCP
from multiaddr import Multiaddr

from p2pshare.node.host import (
    LIBP2P_LOGGER,
    LOOPBACK_LISTEN_ADDR,
    ConnectError,
    ListenError,
    configure_libp2p_logging,
    connect,
    listen_addrs,
    open_host,
    peer_id_of,
)
from p2pshare.node.identity import Identity
from tests.netfixtures import Net, wait_until

FAST_DIALS = ConnectionConfig(max_connections_per_peer=1)


@asynccontextmanager
async def running(host: IHost, listen: list[str]) -> AsyncIterator[IHost]:
    """Run a host built directly with py-libp2p (a foreign or misconfigured peer)."""
    async with host.run(listen_addrs=[Multiaddr(a) for a in listen]):
        try:
            yield host
        finally:
            with trio.move_on_after(5):
                await host.close()


def plaintext_only_host() -> IHost:
    key_pair = create_new_key_pair()
    return new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(key_pair)},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        transports=[TCP()],
        connection_config=FAST_DIALS,
    )


async def test_host_reports_its_bound_loopback_address_with_its_peer_id() -> None:
    identity = Identity.generate()
    async with open_host(identity, [LOOPBACK_LISTEN_ADDR]) as host:
        addrs = listen_addrs(host)
        assert peer_id_of(host) == identity.peer_id
        assert len(addrs) == 1
        _, ip4, ip, tcp, port, p2p, peer_id = addrs[0].split("/")
        assert (ip4, ip, tcp, p2p, peer_id) == ("ip4", "127.0.0.1", "tcp", "p2p", identity.peer_id)
        assert int(port) > 0


async def test_two_hosts_connect_both_ways_and_connect_returns_the_peer_id(net: Net) -> None:
    a, b = await net.peers(2)
    with trio.fail_after(10):
        assert await connect(a.host, b.addr, timeout=5) == b.peer_id
    await wait_until(lambda: b.is_connected(a), what="b to see a")
    assert a.is_connected(b)


async def test_a_plaintext_only_dialer_is_refused(net: Net) -> None:
    ours = await net.peer()
    async with running(plaintext_only_host(), []) as dialer:
        with trio.fail_after(10), pytest.raises(Exception):  # noqa: B017 - any refusal will do
            await dialer.connect(info_from_p2p_addr(Multiaddr(ours.addr)))
        assert not dialer.get_network().get_connections(
            info_from_p2p_addr(Multiaddr(ours.addr)).peer_id
        )
    assert ours.host.get_connected_peers() == []


async def test_the_plaintext_dialer_does_reach_a_default_libp2p_host() -> None:
    """Control for the refusal test: the dialer works, and the library default accepts it."""
    default = new_host(connection_config=FAST_DIALS)  # offers Noise, TLS, secio *and* plaintext
    async with (
        running(default, [LOOPBACK_LISTEN_ADDR]),
        running(plaintext_only_host(), []) as dialer,
    ):
        target = info_from_p2p_addr(default.get_addrs()[0])
        with trio.fail_after(10):
            await dialer.connect(target)
        assert dialer.get_network().get_connections(target.peer_id)


async def test_connecting_to_a_dead_address_fails_with_a_sentence_within_the_timeout(
    net: Net,
) -> None:
    a = await net.peer()
    with trio.socket.socket() as sock:  # a port that is surely closed: bound, never listening
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        nobody = Identity.generate().peer_id
        with trio.fail_after(10), pytest.raises(ConnectError, match="cannot connect"):
            await connect(a.host, f"/ip4/127.0.0.1/tcp/{port}/p2p/{nobody}", timeout=5)


@pytest.mark.parametrize(
    "addr",
    ["/ip4/127.0.0.1/tcp/4001", "not an address", "/ip4/127.0.0.1/tcp/4001/p2p/xyz"],
)
async def test_an_address_without_a_valid_peer_id_is_refused_before_dialing(
    net: Net, addr: str
) -> None:
    a = await net.peer()
    with pytest.raises(ConnectError, match="peer address"):
        await connect(a.host, addr, timeout=5)


async def test_connecting_to_ourselves_is_refused(net: Net) -> None:
    a = await net.peer()
    with pytest.raises(ConnectError, match="own address"):
        await connect(a.host, a.addr, timeout=5)


async def test_a_restarted_peer_is_reachable_at_once_despite_the_failed_dial_block(
    net: Net,
) -> None:
    a, b = await net.peers(2)
    port = b.addr.split("/")[4]
    await a.connect(b)
    await b.stop()
    await wait_until(lambda: not a.is_connected(b), what="a to notice b is gone")
    with pytest.raises(ConnectError):
        await connect(a.host, b.addr, timeout=5)
    # The swarm now refuses to even try b for 60 s (this is what connect() must undo).
    with pytest.raises(Exception, match="negative cache"):
        await a.host.get_network().dial_peer(info_from_p2p_addr(Multiaddr(b.addr)).peer_id)

    restarted = await net.peer(b.identity, listen=f"/ip4/127.0.0.1/tcp/{port}")
    assert restarted.addr == b.addr
    with trio.fail_after(10):
        assert await connect(a.host, restarted.addr, timeout=5) == b.peer_id


async def test_a_second_host_on_a_port_in_use_is_refused(net: Net) -> None:
    """py-libp2p binds with SO_REUSEPORT: without our check both would 'listen' on it."""
    a = await net.peer()
    port = a.addr.split("/")[4]
    with pytest.raises(ListenError, match="in use"):
        async with open_host(Identity.generate(), [f"/ip4/127.0.0.1/tcp/{port}"]):
            pass  # pragma: no cover - must not get here


@pytest.mark.parametrize(
    ("addr", "complaint"),
    [
        ("/ip4/127.0.0.1/udp/0/quic-v1", "only TCP"),
        ("/dns4/localhost/tcp/0", "only TCP"),
        ("localhost:4001", "not a multiaddr"),
    ],
)
async def test_listen_addresses_other_than_tcp_on_an_ip_are_refused(
    addr: str, complaint: str
) -> None:
    with pytest.raises(ListenError, match=complaint):
        async with open_host(Identity.generate(), [addr]):
            pass  # pragma: no cover - must not get here


async def test_stopping_a_host_closes_its_connections_and_its_listener(net: Net) -> None:
    a, b = await net.peers(2)
    port = int(b.addr.split("/")[4])
    await a.connect(b)
    await b.stop()
    await wait_until(lambda: not a.is_connected(b), what="a to see b disconnect")
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_a_cancelled_caller_still_closes_the_host_and_frees_its_port() -> None:
    port = 0
    with trio.move_on_after(10) as outer:
        async with open_host(Identity.generate()) as host:
            port = int(listen_addrs(host)[0].split("/")[4])
            outer.cancel()
            await trio.sleep_forever()
    assert outer.cancelled_caught
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_an_error_in_the_body_propagates_after_the_host_is_closed() -> None:
    with pytest.raises(ZeroDivisionError):
        async with open_host(Identity.generate()):
            _ = 1 / 0


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def restore_libp2p_logging() -> Iterator[None]:
    lib_logger = logging.getLogger(LIBP2P_LOGGER)
    saved = (list(lib_logger.handlers), lib_logger.level, lib_logger.propagate)
    yield
    lib_logger.handlers[:] = saved[0]
    lib_logger.setLevel(saved[1])
    lib_logger.propagate = saved[2]


def test_libp2p_logs_go_to_our_handler_and_never_to_stderr(
    restore_libp2p_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = ListHandler()
    configure_libp2p_logging(handler, logging.WARNING)
    logging.getLogger("libp2p.network.swarm").warning("swarm trouble")
    logging.getLogger("libp2p.network.auto_connector").info("chatty state line")
    assert [r.getMessage() for r in handler.records] == ["swarm trouble"]
    assert capsys.readouterr().err == ""


def test_libp2p_stream_open_failures_stay_out_of_the_log(restore_libp2p_logging: None) -> None:
    handler = ListHandler()
    configure_libp2p_logging(handler, logging.WARNING)
    host_logger = logging.getLogger("libp2p.host.basic_host")
    host_logger.error("Failed to open stream to peer QmX:\n  Error: protocol not supported")
    host_logger.error("something else broke")
    assert [r.getMessage() for r in handler.records] == ["something else broke"]


def test_libp2p_logs_can_be_silenced(
    restore_libp2p_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_libp2p_logging(None)
    logging.getLogger("libp2p.network.swarm").error("nobody hears this")
    assert capsys.readouterr().err == ""
