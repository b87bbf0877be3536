"""``FastNoiseSession`` speaks the same Noise transport messages as py-libp2p's own session.

Real hosts on 127.0.0.1 (``open_host(fast_transport=...)``): one with the fast session, one with
the stock session, in both dialing directions, and both fast; streams opened from each end echo
payloads around the 65,519-byte Noise message limit and the 64 KiB Yamux frame and far above,
so every framing path is crossed both ways.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF, StreamError
from libp2p.peer.id import ID
from libp2p.security.secure_session import SecureSession

from p2pshare.node.fast_noise import FastNoiseSession
from p2pshare.node.host import connect, listen_addrs, open_host
from p2pshare.node.identity import Identity

ECHO = TProtocol("/p2pshare/test-echo/1")
SIZES = (1, 12, 65_519, 65_520, 131_038, 200_001, 262_145, 1024 * 1024 + 7, 3 * 1024 * 1024)
TIMEOUT = 30.0


async def _echo(stream: INetStream) -> None:
    """Send back everything, then close our side when the peer closes its side."""
    while True:
        try:
            data = await stream.read(1 << 20)
        except StreamEOF:
            break
        if not data:
            break
        await stream.write(data)
    await stream.close()


@asynccontextmanager
async def _host(fast: bool) -> AsyncIterator[tuple[IHost, str]]:
    async with open_host(Identity.generate(), fast_transport=fast) as host:
        host.set_stream_handler(ECHO, _echo)
        yield host, listen_addrs(host)[0]


def _session(host: IHost, peer: str) -> Any:
    network: Any = host.get_network()
    (conn,) = network.get_connections(ID.from_base58(peer))
    return conn.muxed_conn.secured_conn


async def _round_trip(host: IHost, peer: str, payloads: list[bytes]) -> None:
    stream = await host.new_stream(ID.from_base58(peer), [ECHO])
    expected = b"".join(payloads)
    received = bytearray()

    async def reader() -> None:
        while len(received) < len(expected):
            received.extend(await stream.read(1 << 20))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        for payload in payloads:
            await stream.write(payload)
    assert bytes(received) == expected
    await stream.close()


@pytest.mark.parametrize(
    ("dialer_fast", "listener_fast"),
    [(True, False), (False, True), (True, True)],
    ids=["fast-dials-stock", "stock-dials-fast", "fast-dials-fast"],
)
async def test_fast_and_stock_sessions_interoperate_both_ways(
    dialer_fast: bool, listener_fast: bool
) -> None:
    rng = random.Random(5)
    payloads = [rng.randbytes(size) for size in SIZES]
    with trio.fail_after(TIMEOUT):
        async with _host(dialer_fast) as (dialer, _), _host(listener_fast) as (listener, addr):
            listener_id = await connect(dialer, addr)
            dialer_id = str(dialer.get_id())
            dialer_session = _session(dialer, listener_id)
            assert isinstance(dialer_session, SecureSession)
            assert isinstance(dialer_session, FastNoiseSession) is dialer_fast
            # Streams from both ends, concurrently: each session both encrypts and decrypts.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_round_trip, dialer, listener_id, payloads)
                nursery.start_soon(_round_trip, listener, dialer_id, payloads[::-1])
            listener_session = _session(listener, dialer_id)
            assert isinstance(listener_session, FastNoiseSession) is listener_fast


async def test_a_tampered_message_fails_authentication_and_ends_the_connection() -> None:
    """A flipped ciphertext bit fails authentication and the connection is dropped."""
    with trio.fail_after(TIMEOUT):
        async with _host(False) as (stock, _), _host(True) as (fast, addr):
            fast_id = await connect(stock, addr)
            session = _session(stock, fast_id)
            raw = session.conn.read_writer.read_write_closer
            original = raw.write
            tampered = trio.Event()

            async def flip_one_bit(data: bytes) -> None:
                if len(data) > 100 and not tampered.is_set():
                    tampered.set()
                    data = data[:50] + bytes([data[50] ^ 1]) + data[51:]
                await original(data)

            stream = await stock.new_stream(ID.from_base58(fast_id), [ECHO])
            raw.write = flip_one_bit
            with contextlib.suppress(StreamError):  # the fast side may hang up first
                await stream.write(b"x" * 1000)
            await tampered.wait()
            network: Any = fast.get_network()
            while network.get_connections(stock.get_id()):
                await trio.sleep(0.01)
