"""Transfer wire messages: exact round trips, strict refusal of anything else, response checks."""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pshare.protocol import canonical
from p2pshare.protocol import limits as L
from p2pshare.protocol import transfer as T
from p2pshare.protocol.transfer import (
    ChunkFrame,
    ChunkResponse,
    ChunksRequest,
    EndFrame,
    ErrorCode,
    ErrorReply,
    HaveReply,
    HaveRequest,
    ManifestReply,
    ManifestRequest,
    PeerProtocolError,
    RequestRefused,
)

ROOT = bytes(range(32))
ROOT2 = b"\xaa" * 32

EXAMPLES: list[T.Message] = [
    HaveRequest(1, (ROOT, ROOT2)),
    ManifestRequest(2, ROOT),
    ChunksRequest(3, ROOT, ((0, 4), (4, 5), (9, 12))),
    HaveReply(1, (False, True, b"\xa0")),
    ManifestReply(2, b"\x93\x00\xcd\x40\x00\x90"),
    ChunkFrame(3, 7, b"x" * 1000),
    EndFrame(3),
    ErrorReply(4, ErrorCode.BUSY),
    ErrorReply(2**32 - 1, ErrorCode.NOT_FOUND),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_its_wire_form(message: T.Message) -> None:
    frame = T.encode(message)
    decode = T.decode_request if isinstance(message, T.Request) else T.decode_reply
    assert decode(frame) == message
    assert T.encode(decode(frame)) == frame


def test_wire_form_is_the_documented_canonical_map() -> None:
    frame = T.encode(ChunksRequest(7, ROOT, ((2, 5),)))
    assert msgpack.unpackb(frame) == {"t": "chunks", "id": 7, "root": ROOT, "ranges": [[2, 5]]}
    assert T.encode(ChunkFrame(1, 0, b"ab")) == canonical.pack(
        {"t": "chunk", "id": 1, "index": 0, "data": b"ab"}
    )


def test_requests_and_replies_are_not_confused() -> None:
    with pytest.raises(PeerProtocolError):
        T.decode_request(T.encode(EndFrame(1)))
    with pytest.raises(PeerProtocolError):
        T.decode_reply(T.encode(ManifestRequest(1, ROOT)))


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_peer_protocol_error_only(frame: bytes) -> None:
    _decode_or_refuse(frame)


def _decode_or_refuse(frame: bytes) -> None:
    """Decoding either refuses with PeerProtocolError or yields a message encoding to ``frame``."""
    for decode in (T.decode_request, T.decode_reply):
        try:
            message = decode(frame)
        except PeerProtocolError:
            continue
        assert T.encode(message) == frame


@settings(max_examples=300)
@given(st.sampled_from(EXAMPLES), st.data())
def test_mutated_valid_frames_decode_or_raise_peer_protocol_error_only(
    message: T.Message, data: st.DataObject
) -> None:
    frame = bytearray(T.encode(message))
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(frame) - 1))
        frame[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    _decode_or_refuse(bytes(frame[:cut]) if data.draw(st.booleans()) else bytes(frame))


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.binary(max_size=40) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


_SHAPES = {
    "have": ["roots"],
    "manifest": ["root"],
    "chunks": ["root", "ranges"],
    "have_reply": ["have"],
    "manifest_reply": ["manifest"],
    "chunk": ["index", "data"],
    "end": [],
    "error": ["code"],
}
_plausible = (
    st.integers(0, 2**32)
    | st.binary(min_size=31, max_size=33)
    | st.lists(st.binary(min_size=32, max_size=32), max_size=3)
    | st.lists(st.lists(st.integers(-1, 2**16 + 1), min_size=1, max_size=3), max_size=3)
    | st.lists(st.booleans() | st.binary(max_size=3) | st.none(), max_size=3)
    | st.sampled_from(["busy", "not-found", "bad-request", "teapot"])
)


@st.composite
def _near_messages(draw: st.DrawFn) -> dict[str, Any]:
    """Maps with a real type and (usually) its exact keys, holding plausible or wrong values."""
    kind = draw(st.sampled_from(sorted(_SHAPES)))
    keys = ["id", *_SHAPES[kind]]
    if draw(st.integers(0, 9)) == 0:
        keys = draw(st.lists(st.sampled_from([*keys, "x"]), unique=True))
    value: dict[str, Any] = {"t": kind}
    for key in keys:
        value[key] = draw(_plausible | _values)
    return value


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from(["t", "id", "roots", "root", "ranges", "have", "index", "data", "code"]),
        _values | st.sampled_from(["have", "chunks", "chunk", "end", "error", "have_reply"]),
    )
    | _near_messages()
)
def test_structured_garbage_maps_raise_peer_protocol_error_only(value: dict[str, Any]) -> None:
    _decode_or_refuse(canonical.pack(value))


def _frame(**fields: Any) -> bytes:
    return canonical.pack(fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"t": "have", "id": 1, "roots": []},
        {"t": "have", "id": 1, "roots": [ROOT] * 2},
        {"t": "have", "id": 1, "roots": [b"\x01" * 31]},
        {"t": "have", "id": 1, "roots": [bytes([i]) * 32 for i in range(T.MAX_HAVE_ROOTS + 1)]},
        {"t": "have", "id": -1, "roots": [ROOT]},
        {"t": "have", "id": 2**32, "roots": [ROOT]},
        {"t": "have", "id": True, "roots": [ROOT]},
        {"t": "have", "id": 1, "roots": [ROOT], "extra": 1},
        {"t": "have", "roots": [ROOT]},
        {"t": "manifest", "id": 1, "root": "x" * 32},
        {"t": "chunks", "id": 1, "root": ROOT, "ranges": []},
        {"t": "chunks", "id": 1, "root": ROOT, "ranges": [[3, 3]]},
        {"t": "chunks", "id": 1, "root": ROOT, "ranges": [[4, 2]]},
        {"t": "chunks", "id": 1, "root": ROOT, "ranges": [[5, 8], [0, 2]]},
        {"t": "chunks", "id": 1, "root": ROOT, "ranges": [[0, 4], [3, 6]]},
        {"t": "chunks", "id": 1, "root": ROOT, "ranges": [[-1, 2]]},
        {"t": "chunks", "id": 1, "root": ROOT, "ranges": [[0, T.MAX_CHUNK_COUNT + 1]]},
        {"t": "chunks", "id": 1, "root": ROOT, "ranges": [[0, T.MAX_CHUNKS_PER_REQUEST + 1]]},
        {"t": "chunks", "id": 1, "root": ROOT, "ranges": [[0, 1, 2]]},
        {"t": "chunks", "id": 1, "root": ROOT, "ranges": [[False, True]]},
        {
            "t": "chunks",
            "id": 1,
            "root": ROOT,
            "ranges": [[2 * i, 2 * i + 1] for i in range(T.MAX_RANGES_PER_REQUEST + 1)],
        },
        {"t": "nope", "id": 1},
        {"t": 1, "id": 1},
    ],
)
def test_invalid_requests_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(PeerProtocolError):
        T.decode_request(canonical.pack(fields))


@pytest.mark.parametrize(
    "fields",
    [
        {"t": "have_reply", "id": 1, "have": []},
        {"t": "have_reply", "id": 1, "have": [b""]},
        {"t": "have_reply", "id": 1, "have": [None]},
        {"t": "have_reply", "id": 1, "have": [1]},
        {"t": "have_reply", "id": 1, "have": [b"\xff" * (T.MAX_BITMAP_BYTES + 1)]},
        {"t": "manifest_reply", "id": 1, "manifest": b""},
        {"t": "manifest_reply", "id": 1, "manifest": "text"},
        {"t": "chunk", "id": 1, "index": 0, "data": b""},
        {"t": "chunk", "id": 1, "index": T.MAX_CHUNK_COUNT, "data": b"x"},
        {"t": "chunk", "id": 1, "index": -1, "data": b"x"},
        {"t": "chunk", "id": 1, "data": b"x"},
        {"t": "chunk", "id": 1, "index": 0, "data": "x"},
        {"t": "end", "id": 1, "index": 0},
        {"t": "error", "id": 1, "code": "teapot"},
        {"t": "error", "id": 1, "code": 404},
    ],
)
def test_invalid_replies_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(PeerProtocolError):
        T.decode_reply(canonical.pack(fields))


def test_oversized_chunk_data_is_refused() -> None:
    frame = _frame(t="chunk", id=1, index=0, data=b"x" * (L.MAX_CHUNK_SIZE + 1))
    with pytest.raises(PeerProtocolError):
        T.decode_reply(frame)


def test_frames_over_the_read_limit_are_refused_before_decoding() -> None:
    request = ChunksRequest(1, ROOT, ((0, 1),))
    limit = T.max_reply_bytes(request, chunk_size=L.CHUNK_SIZE)
    fits = T.encode(ChunkFrame(1, 0, b"x" * L.CHUNK_SIZE))
    assert len(fits) <= limit
    assert T.decode_reply(fits, limit) == ChunkFrame(1, 0, b"x" * L.CHUNK_SIZE)
    too_big = T.encode(ChunkFrame(1, 0, b"x" * (L.CHUNK_SIZE + T.FRAME_OVERHEAD)))
    with pytest.raises(PeerProtocolError):
        T.decode_reply(too_big, limit)
    with pytest.raises(PeerProtocolError):
        T.decode_request(b"\xc4" + b"\x00" * T.MAX_REQUEST_FRAME_BYTES)


def test_largest_legal_messages_fit_their_frame_limits() -> None:
    roots = tuple(i.to_bytes(32, "big") for i in range(T.MAX_HAVE_ROOTS))
    have = HaveRequest(2**32 - 1, roots)
    assert len(T.encode(have)) <= T.MAX_REQUEST_FRAME_BYTES
    ranges = tuple((2 * i, 2 * i + 1) for i in range(T.MAX_RANGES_PER_REQUEST))
    assert len(T.encode(ChunksRequest(2**32 - 1, ROOT, ranges))) <= T.MAX_REQUEST_FRAME_BYTES
    reply = HaveReply(2**32 - 1, (b"\xff" * T.MAX_BITMAP_BYTES,) * T.MAX_HAVE_ROOTS)
    assert len(T.encode(reply)) <= T.max_reply_bytes(have)
    chunk = ChunkFrame(2**32 - 1, T.MAX_CHUNK_COUNT - 1, b"x" * L.MAX_CHUNK_SIZE)
    assert len(T.encode(chunk)) <= T.MAX_REPLY_FRAME_BYTES
    manifest = ManifestReply(2**32 - 1, b"m" * T.MAX_MANIFEST_BYTES)
    assert len(T.encode(manifest)) <= T.max_reply_bytes(ManifestRequest(1, ROOT))


def test_non_canonical_and_trailing_bytes_are_refused() -> None:
    good = T.encode(EndFrame(1))
    with pytest.raises(PeerProtocolError):
        T.decode_reply(good + b"\x00")
    unsorted = msgpack.packb({"t": "end", "id": 1})  # keys not in sorted order
    assert unsorted != good
    with pytest.raises(PeerProtocolError):
        T.decode_reply(unsorted)


# --- bitmaps ----------------------------------------------------------------------------------


@settings(max_examples=200)
@given(
    st.integers(0, 300).flatmap(
        lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1)) if n else st.just(set()))
    )
)
def test_bitmap_round_trips_indices(case: tuple[int, set[int]]) -> None:
    count, indices = case
    bitmap = T.make_bitmap(indices, count)
    assert len(bitmap) == (count + 7) // 8
    assert T.bitmap_indices(bitmap, count) == sorted(indices)
    assert T.bitmap_count(bitmap) == len(indices)
    assert all(T.bitmap_has(bitmap, i) == (i in indices) for i in range(count + 8))


def test_bitmap_bit_order_is_most_significant_first() -> None:
    assert T.make_bitmap([0], 10) == b"\x80\x00"
    assert T.make_bitmap([9], 10) == b"\x00\x40"


def test_bitmaps_of_wrong_length_or_with_padding_bits_are_refused() -> None:
    with pytest.raises(PeerProtocolError):
        T.check_bitmap(b"\xff", 9)
    with pytest.raises(PeerProtocolError):
        T.check_bitmap(b"\xff\x00\x00", 9)
    with pytest.raises(PeerProtocolError):
        T.check_bitmap(b"\xff\x40", 9)  # bit for chunk 9 in a 9-chunk document
    T.check_bitmap(b"\xff\x80", 9)


# --- responder ---------------------------------------------------------------------------------


def test_responder_sends_requested_chunks_it_has_in_order() -> None:
    request = ChunksRequest(5, ROOT, ((0, 3), (6, 8)))
    have = T.make_bitmap([1, 2, 3, 7], 10)
    assert T.chunks_to_send(request, 10, have) == [1, 2, 7]
    assert T.chunks_to_send(request, 10, True) == [0, 1, 2, 6, 7]


def test_responder_refuses_unknown_documents_and_ranges_past_the_end() -> None:
    request = ChunksRequest(5, ROOT, ((0, 3), (6, 9)))
    assert T.chunks_to_send(request, None, False) == ErrorReply(5, ErrorCode.NOT_FOUND)
    assert T.chunks_to_send(request, 10, False) == ErrorReply(5, ErrorCode.NOT_FOUND)
    assert T.chunks_to_send(request, 8, True) == ErrorReply(5, ErrorCode.BAD_REQUEST)
    assert T.answer_manifest(ManifestRequest(2, ROOT), None) == ErrorReply(2, ErrorCode.NOT_FOUND)


def test_have_is_answered_per_root_in_order() -> None:
    held: dict[bytes, T.HaveState] = {ROOT: True}
    reply = T.answer_have(HaveRequest(9, (ROOT2, ROOT)), lambda r: held.get(r, False))
    assert reply == HaveReply(9, (False, True))


# --- requester-side checks ------------------------------------------------------------------


def test_have_reply_must_match_the_request() -> None:
    request = HaveRequest(1, (ROOT, ROOT2))
    assert T.check_have_reply(request, HaveReply(1, (True, b"\x80"))) == {
        ROOT: True,
        ROOT2: b"\x80",
    }
    with pytest.raises(PeerProtocolError):
        T.check_have_reply(request, HaveReply(1, (True,)))
    with pytest.raises(PeerProtocolError):
        T.check_have_reply(request, HaveReply(2, (True, True)))
    with pytest.raises(PeerProtocolError):
        T.check_have_reply(request, EndFrame(1))
    with pytest.raises(RequestRefused) as refused:
        T.check_have_reply(request, ErrorReply(1, ErrorCode.BUSY))
    assert refused.value.code is ErrorCode.BUSY


def test_manifest_reply_must_hash_to_the_root() -> None:
    manifest = canonical.pack([10, L.CHUNK_SIZE, [b"h" * 32]])
    root = hashlib.sha256(manifest).digest()
    request = ManifestRequest(3, root)
    assert T.check_manifest_reply(request, ManifestReply(3, manifest)) == manifest
    with pytest.raises(PeerProtocolError):
        T.check_manifest_reply(request, ManifestReply(3, manifest + b"\x00"))
    with pytest.raises(RequestRefused):
        T.check_manifest_reply(request, ErrorReply(3, ErrorCode.NOT_FOUND))


SIZE = 3 * 1000 + 10  # four chunks of 1000 bytes, the last one 10 bytes
CHUNK = 1000


def _response(*ranges: tuple[int, int]) -> ChunkResponse:
    return ChunkResponse(ChunksRequest(8, ROOT, tuple(ranges)), SIZE, CHUNK)


def test_chunk_response_accepts_a_proper_response() -> None:
    response = _response((0, 1), (2, 4))
    assert response.feed(ChunkFrame(8, 0, b"a" * CHUNK)) == ChunkFrame(8, 0, b"a" * CHUNK)
    assert response.feed(ChunkFrame(8, 3, b"d" * 10)) is not None
    assert response.unreceived() == [2]
    assert response.feed(EndFrame(8)) is None
    assert response.done and response.error is None
    assert response.received == [0, 3]


def test_chunk_response_catches_unrequested_chunks() -> None:
    response = _response((0, 1), (2, 3))
    with pytest.raises(PeerProtocolError, match="not requested"):
        response.feed(ChunkFrame(8, 1, b"b" * CHUNK))


def test_chunk_response_catches_duplicate_chunks() -> None:
    response = _response((0, 3))
    response.feed(ChunkFrame(8, 1, b"b" * CHUNK))
    with pytest.raises(PeerProtocolError, match="twice"):
        response.feed(ChunkFrame(8, 1, b"b" * CHUNK))


def test_chunk_response_catches_out_of_order_chunks() -> None:
    response = _response((0, 3))
    response.feed(ChunkFrame(8, 2, b"c" * CHUNK))
    with pytest.raises(PeerProtocolError, match="ascending"):
        response.feed(ChunkFrame(8, 1, b"b" * CHUNK))


@pytest.mark.parametrize(("index", "length"), [(0, CHUNK - 1), (1, CHUNK + 1), (3, CHUNK), (3, 9)])
def test_chunk_response_checks_every_chunk_length(index: int, length: int) -> None:
    response = _response((0, 4))
    with pytest.raises(PeerProtocolError, match="bytes"):
        response.feed(ChunkFrame(8, index, b"x" * length))


def test_chunk_response_refuses_foreign_ids_and_frames_after_the_end() -> None:
    response = _response((0, 2))
    with pytest.raises(PeerProtocolError):
        response.feed(ChunkFrame(9, 0, b"a" * CHUNK))
    with pytest.raises(PeerProtocolError):
        response.feed(HaveReply(8, (True,)))
    response.feed(EndFrame(8))
    with pytest.raises(PeerProtocolError, match="after the end"):
        response.feed(ChunkFrame(8, 1, b"b" * CHUNK))


def test_an_error_ends_the_response_and_keeps_what_arrived() -> None:
    response = _response((0, 3))
    response.feed(ChunkFrame(8, 0, b"a" * CHUNK))
    assert response.feed(ErrorReply(8, ErrorCode.BUSY)) is None
    assert response.done and response.error is ErrorCode.BUSY
    assert response.received == [0]
    assert response.unreceived() == [1, 2]


def test_an_unfinished_response_is_not_done() -> None:
    response = _response((0, 2))
    response.feed(ChunkFrame(8, 0, b"a" * CHUNK))
    response.feed(ChunkFrame(8, 1, b"b" * CHUNK))
    assert not response.done  # every chunk came, but without `end` EOF is still a failure


def test_ranges_of_collapses_runs() -> None:
    assert T.ranges_of([0, 1, 2, 5, 7, 8]) == [(0, 3), (5, 6), (7, 9)]
    assert T.ranges_of([]) == []


def test_chunk_length_of_last_and_full_chunks() -> None:
    assert T.chunk_length(0, SIZE, CHUNK) == CHUNK
    assert T.chunk_length(3, SIZE, CHUNK) == 10
    assert T.chunk_length(1, 2 * CHUNK, CHUNK) == CHUNK
    with pytest.raises(ValueError):
        T.chunk_length(4, SIZE, CHUNK)


# --- the chunk frame's fast path: the same bytes, the same verdicts ------------------------------


def _slow_decode(frame: bytes) -> T.Reply | str:
    """What the general decoder (msgpack + canonical re-encoding) says about ``frame``."""
    try:
        message = T._decode(frame, T.MAX_REPLY_FRAME_BYTES)
    except T.PeerProtocolError:
        return "refused"
    assert not isinstance(message, T.HaveRequest | T.ManifestRequest | T.ChunksRequest)
    return message


def _fast_or_refused(frame: bytes) -> T.Reply | str:
    try:
        return T.decode_reply(bytearray(frame))
    except T.PeerProtocolError:
        return "refused"


@settings(max_examples=300)
@given(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.integers(min_value=0, max_value=T.MAX_CHUNK_COUNT - 1),
    st.sampled_from([1, 2, 255, 256, 65_535, 65_536, 70_000]),
)
def test_chunk_frames_are_built_as_canonical_pack_builds_them(
    request_id: int, index: int, size: int
) -> None:
    frame = ChunkFrame(request_id, index, bytes([index % 251]) * size)
    expected = canonical.pack({"t": "chunk", "id": request_id, "index": index, "data": frame.data})
    assert b"".join(T.encode_chunk_parts(frame)) == expected == T.encode(frame)
    decoded = T.decode_reply(bytearray(expected))
    assert isinstance(decoded, ChunkFrame) and isinstance(decoded.data, memoryview)
    assert decoded == frame and T.encode(decoded) == expected


def _respell(frame: bytes, data_len: int, header: bytes) -> bytes:
    """``frame`` with its data's bin header replaced by ``header`` (same length value)."""
    old = T._bin_header(data_len)
    assert frame[6 : 6 + len(old)] == old
    return frame[:6] + header + frame[6 + len(old) :]


def test_non_canonical_chunk_frames_get_the_general_paths_verdict() -> None:
    good = T.encode(ChunkFrame(300, 2, b"z" * 200))
    variants = [
        _respell(good, 200, b"\xc5\x00\xc8"),  # bin16 header for 200 bytes
        _respell(good, 200, b"\xc6\x00\x00\x00\xc8"),  # bin32 header for 200 bytes
        good.replace(b"\xa2id\xcd\x01\x2c", b"\xa2id\xce\x00\x00\x01\x2c"),  # wide id
        good.replace(b"\xa5index\x02", b"\xa5index\xcc\x02"),  # wide index
        good.replace(b"\xa5chunk", b"\xa5chunq"),  # another type name
        good[:-1],  # truncated tail
        good + b"\x00",  # trailing byte
        b"\x85" + good[1:] + b"\xa1x\x00",  # an extra key (in key order, after "t")
    ]
    assert isinstance(_fast_or_refused(good), ChunkFrame)
    for frame in variants:
        assert _fast_or_refused(frame) == _slow_decode(frame) == "refused", frame[:16]


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=40), st.integers(min_value=0, max_value=60))
def test_mutated_chunk_frames_decode_as_the_general_path_decides(
    noise: bytes, position: int
) -> None:
    good = T.encode(ChunkFrame(70_000, 513, b"q" * 300))
    position = min(position, len(good))
    for frame in (good[:position] + noise + good[position:], good[:position] + noise):
        fast = _fast_or_refused(frame)
        slow = _slow_decode(frame)
        assert fast == slow


def test_chunk_data_must_be_a_flat_byte_buffer() -> None:
    ChunkFrame(1, 0, memoryview(b"abc"))
    with pytest.raises(T.PeerProtocolError):
        ChunkFrame(1, 0, memoryview(bytearray(8)).cast("I"))
    with pytest.raises(T.PeerProtocolError):
        ChunkFrame(1, 0, bytearray(b"abc"))  # type: ignore[arg-type]
