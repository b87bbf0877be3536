"""Length-prefixed frames over real libp2p streams: limits, truncation, resets and timeouts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2pshare.node.streams import (
    FramedStream,
    FrameTimeout,
    FrameTooLarge,
    FrameTruncated,
    MalformedFrame,
    StreamBroken,
    StreamEnded,
    decode_header,
    encode_uvarint,
)
from tests.netfixtures import Net, Peer

PROTO = TProtocol("/p2pshare/test-frames/1")
LIMIT = 512 * 1024
BIG = 300 * 1024  # more than one 256 KiB chunk, spans many Yamux frames

Handler = Callable[[INetStream], Awaitable[None]]


async def serve(peer: Peer, handler: Handler) -> None:
    peer.host.set_stream_handler(PROTO, handler)


async def open_framed(client: Peer, server: Peer, max_frame: int = LIMIT) -> FramedStream:
    with trio.fail_after(10):
        stream = await client.host.new_stream(ID.from_base58(server.peer_id), [PROTO])
    return FramedStream(stream, max_frame)


@pytest.fixture
async def pair(net: Net) -> tuple[Peer, Peer]:
    client, server = await net.peers(2)
    await client.connect(server)
    return client, server


# --- the varint header, without a network ------------------------------------------------


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=2**40))
def test_every_length_round_trips_through_a_minimal_varint(length: int) -> None:
    header = encode_uvarint(length)
    assert decode_header(header + b"body", max_frame=2**40) == (length, len(header))
    assert decode_header(header[:-1], max_frame=2**40) is None


def test_known_varints_match_msgio() -> None:
    assert encode_uvarint(0) == b"\x00"
    assert encode_uvarint(127) == b"\x7f"
    assert encode_uvarint(128) == b"\x80\x01"
    assert encode_uvarint(262144) == b"\x80\x80\x10"


def test_a_non_minimal_varint_is_malformed() -> None:
    with pytest.raises(MalformedFrame):
        decode_header(b"\x81\x00", max_frame=LIMIT)


def test_an_oversized_length_is_refused_from_the_header_alone() -> None:
    with pytest.raises(FrameTooLarge):
        decode_header(encode_uvarint(LIMIT + 1), max_frame=LIMIT)
    # A header longer than the limit's own encoding is refused before it even ends.
    with pytest.raises(FrameTooLarge):
        decode_header(b"\xff\xff\xff\xff", max_frame=LIMIT)


# --- over real hosts ---------------------------------------------------------------------


async def test_frames_of_every_size_round_trip_in_both_directions(pair: tuple[Peer, Peer]) -> None:
    client, server = pair
    sizes = [0, 1, 127, 128, 16_383, 16_384, 65_536, BIG, LIMIT]

    async def echo(stream: INetStream) -> None:
        framed = FramedStream(stream, LIMIT)
        for _ in sizes:
            await framed.write_frame(await framed.read_frame(timeout=10))
        await framed.close()

    await serve(server, echo)
    framed = await open_framed(client, server)
    for size in sizes:
        body = bytes(range(256)) * (size // 256) + bytes(size % 256)
        await framed.write_frame(body)
        assert await framed.read_frame(timeout=10) == body
    with pytest.raises(StreamEnded):
        await framed.read_frame(timeout=10)


async def test_frames_written_in_one_burst_are_read_one_by_one(pair: tuple[Peer, Peer]) -> None:
    client, server = pair
    frames = [b"a", b"", b"bc" * 300, b"d"]

    async def burst(stream: INetStream) -> None:
        await stream.write(b"".join(encode_uvarint(len(f)) + f for f in frames))
        await stream.close()

    await serve(server, burst)
    framed = await open_framed(client, server)
    assert [await framed.read_frame(timeout=10) for _ in frames] == frames


async def test_an_oversized_frame_is_refused_the_stream_reset_and_the_host_keeps_serving(
    pair: tuple[Peer, Peer],
) -> None:
    client, server = pair
    outcomes: trio.MemorySendChannel[BaseException | bytes]
    outcomes, results = trio.open_memory_channel(10)

    async def strict(stream: INetStream) -> None:
        framed = FramedStream(stream, max_frame=1024)
        try:
            await outcomes.send(await framed.read_frame(timeout=10))
        except Exception as exc:
            await outcomes.send(exc)

    await serve(server, strict)
    stream = await client.host.new_stream(ID.from_base58(server.peer_id), [PROTO])
    # Only the header: the refusal must not wait for (or read) a body.
    await stream.write(encode_uvarint(1025))
    with trio.fail_after(10):
        refused = await results.receive()
    assert isinstance(refused, FrameTooLarge)
    assert (refused.declared, refused.limit) == (1025, 1024)
    with trio.fail_after(10), pytest.raises(Exception):  # noqa: B017 - reset or EOF, both end it
        while True:  # the server reset the stream: our reads end instead of waiting
            if not await stream.read(100):
                raise EOFError

    good = await open_framed(client, server)
    await good.write_frame(b"still serving")
    with trio.fail_after(10):
        assert await results.receive() == b"still serving"


async def test_eof_in_the_middle_of_a_frame_is_truncation_not_completion(
    pair: tuple[Peer, Peer],
) -> None:
    client, server = pair

    async def half_frame(stream: INetStream) -> None:
        await stream.write(encode_uvarint(100) + b"x" * 10)
        await stream.close()

    await serve(server, half_frame)
    framed = await open_framed(client, server)
    with pytest.raises(FrameTruncated):
        await framed.read_frame(timeout=10)
    assert framed.broken
    with pytest.raises(StreamBroken):
        await framed.read_frame(timeout=10)


class ReadSignal:
    """A stream wrapper that tells the test once ``threshold`` bytes have been read from it."""

    def __init__(self, stream: INetStream, threshold: int) -> None:
        self.stream = stream
        self.threshold = threshold
        self.count = 0
        self.reached = trio.Event()

    async def read(self, n: int | None = None) -> bytes:
        data = await self.stream.read(n)
        self.count += len(data)
        if self.count >= self.threshold:
            self.reached.set()
        return data

    async def write(self, data: bytes) -> None:
        await self.stream.write(data)

    async def close(self) -> None:
        await self.stream.close()

    async def reset(self) -> None:
        await self.stream.reset()


async def test_a_reset_in_the_middle_of_a_frame_is_truncation(pair: tuple[Peer, Peer]) -> None:
    client, server = pair
    partial = encode_uvarint(BIG) + b"x" * 1000
    client_has_it: list[ReadSignal] = []
    wrapped = trio.Event()

    async def reset_mid_frame(stream: INetStream) -> None:
        await stream.write(partial)
        with trio.fail_after(10):  # Yamux drops unread data on reset: let the client read first
            await wrapped.wait()
            await client_has_it[0].reached.wait()
        await stream.reset()

    await serve(server, reset_mid_frame)
    with trio.fail_after(10):
        raw = await client.host.new_stream(ID.from_base58(server.peer_id), [PROTO])
    signal = ReadSignal(raw, threshold=len(partial))
    client_has_it.append(signal)
    wrapped.set()
    framed = FramedStream(signal, LIMIT)  # type: ignore[arg-type]
    with pytest.raises(FrameTruncated):
        await framed.read_frame(timeout=10)


async def test_a_half_closed_peer_ends_the_reads_but_still_gets_our_reply(
    pair: tuple[Peer, Peer],
) -> None:
    client, server = pair

    async def reply_after_end(stream: INetStream) -> None:
        framed = FramedStream(stream, LIMIT)
        request = await framed.read_frame(timeout=10)
        with pytest.raises(StreamEnded):
            await framed.read_frame(timeout=10)
        await framed.write_frame(request[::-1])
        await framed.close()

    await serve(server, reply_after_end)
    framed = await open_framed(client, server)
    await framed.write_frame(b"ping")
    await framed.close()
    assert await framed.read_frame(timeout=10) == b"gnip"


async def test_a_frozen_peer_makes_the_read_time_out_and_resets_the_stream(
    pair: tuple[Peer, Peer],
) -> None:
    client, server = pair
    release = trio.Event()

    async def frozen(stream: INetStream) -> None:
        await stream.write(encode_uvarint(50) + b"partial")
        with trio.move_on_after(30):
            await release.wait()

    await serve(server, frozen)
    framed = await open_framed(client, server)
    with trio.fail_after(10), pytest.raises(FrameTimeout):
        await framed.read_frame(timeout=0.3)
    assert framed.broken
    release.set()


async def test_a_frame_over_our_own_limit_is_not_sent(pair: tuple[Peer, Peer]) -> None:
    client, server = pair
    received: list[bytes] = []

    async def collect(stream: INetStream) -> None:
        framed = FramedStream(stream, LIMIT)
        received.append(await framed.read_frame(timeout=10))

    await serve(server, collect)
    framed = await open_framed(client, server, max_frame=10)
    with pytest.raises(FrameTooLarge):
        await framed.write_frame(b"x" * 11)
    assert not framed.broken
    await framed.write_frame(b"x" * 10)
    with trio.fail_after(10):
        while not received:
            await trio.sleep(0.005)
    assert received == [b"x" * 10]


async def test_writing_to_a_reset_stream_raises_stream_broken(pair: tuple[Peer, Peer]) -> None:
    client, server = pair

    async def slam(stream: INetStream) -> None:
        await FramedStream(stream, LIMIT).read_frame(timeout=10)  # negotiation is over by now
        await stream.reset()

    await serve(server, slam)
    framed = await open_framed(client, server)
    await framed.write_frame(b"hello")
    with pytest.raises(StreamEnded):  # a reset between frames reads as the end of the stream
        await framed.read_frame(timeout=10)
    with trio.fail_after(10), pytest.raises(StreamBroken):
        while True:  # the swarm may take a moment to mark the stream reset on our side
            await framed.write_frame(b"x" * 1000)
            await trio.sleep(0.01)


async def test_a_read_cancelled_between_frames_leaves_the_stream_usable(
    pair: tuple[Peer, Peer],
) -> None:
    client, server = pair
    go = trio.Event()

    async def late(stream: INetStream) -> None:
        await go.wait()
        await FramedStream(stream, LIMIT).write_frame(b"worth the wait")

    await serve(server, late)
    framed = await open_framed(client, server)
    with trio.move_on_after(0.05) as idle:
        await framed.read_frame(timeout=10)
    assert idle.cancelled_caught
    assert not framed.broken
    go.set()
    assert await framed.read_frame(timeout=10) == b"worth the wait"


async def test_a_read_cancelled_in_the_middle_of_a_frame_spoils_the_stream(
    pair: tuple[Peer, Peer],
) -> None:
    client, server = pair
    partial = encode_uvarint(BIG) + b"x" * 1000
    release = trio.Event()

    async def stall(stream: INetStream) -> None:
        await stream.write(partial)
        with trio.move_on_after(30):
            await release.wait()

    await serve(server, stall)
    with trio.fail_after(10):
        raw = await client.host.new_stream(ID.from_base58(server.peer_id), [PROTO])
    signal = ReadSignal(raw, threshold=len(partial))
    framed = FramedStream(signal, LIMIT)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:

        async def cancel_once_read() -> None:
            await signal.reached.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(cancel_once_read)
        await framed.read_frame(timeout=10)
    assert framed.broken
    with pytest.raises(StreamBroken):
        await framed.read_frame(timeout=10)
    release.set()


# --- several frames per write, and frames read into their own buffer -------------------------


class _RecordingStream:
    """Stands in for a libp2p stream: keeps every write (no network needed)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.writes.append(data)


async def test_write_frames_sends_every_frame_in_one_write_as_separate_frames() -> None:
    stream = _RecordingStream()
    framed = FramedStream(stream, LIMIT)  # type: ignore[arg-type]
    frames = [(b"head", memoryview(b"-body-"), b"tail"), (b"",), (bytes(BIG),)]
    await framed.write_frames(frames)
    (written,) = stream.writes
    expected = b"".join(encode_uvarint(len(b"".join(p))) + b"".join(p) for p in frames)
    assert written == expected


async def test_write_frames_sends_nothing_if_any_frame_is_over_the_limit() -> None:
    stream = _RecordingStream()
    framed = FramedStream(stream, 1024)  # type: ignore[arg-type]
    with pytest.raises(FrameTooLarge):
        await framed.write_frames([(b"ok",), (bytes(600), bytes(600))])
    assert stream.writes == []
    await framed.write_frame(b"still usable")  # a refused frame does not spoil the stream
    assert stream.writes == [encode_uvarint(12) + b"still usable"]


async def test_frames_written_together_are_read_back_one_by_one_into_own_buffers(
    pair: tuple[Peer, Peer],
) -> None:
    client, server = pair
    frames = [b"x" * BIG, b"", b"small", bytes(range(256)) * 1000]

    async def burst(stream: INetStream) -> None:
        framed = FramedStream(stream, LIMIT)
        await framed.write_frames([(frame[:7], frame[7:]) for frame in frames])
        await framed.close()

    await serve(server, burst)
    framed = await open_framed(client, server)
    bodies = [await framed.read_frame_buffer(timeout=10) for _ in frames]
    assert [bytes(body) for body in bodies] == frames
    big = bodies[0]
    assert isinstance(big, bytearray)  # read straight into it: no copy on the way out
    big[0] = 0  # the caller's own buffer: nothing else holds it
    with pytest.raises(StreamEnded):
        await framed.read_frame(timeout=10)
