"""Control-wire framing, envelopes and the drop queue, with no I/O."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pshare.protocol.control_wire import (
    HEADER,
    MAX_CONTROL_DEPTH,
    MAX_CONTROL_FRAME,
    ControlProtocolError,
    DropQueue,
    ErrorCode,
    ErrorInfo,
    Event,
    FrameDecoder,
    Request,
    Response,
    encode_frame,
    error_response,
    parse_request,
    parse_server_message,
)

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
messages = st.dictionaries(st.text(max_size=8), values, max_size=5)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _frame_raw(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


@settings(max_examples=100)
@given(msgs=st.lists(messages, min_size=1, max_size=5), data=st.data())
def test_any_split_of_a_frame_stream_decodes_to_the_same_messages(
    msgs: list[dict[str, Any]], data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(m) for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = FrameDecoder()
    out: list[dict[str, Any]] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out.extend(decoder.feed(stream[start:end]))
    assert out == msgs
    assert decoder.buffered == 0


@settings(max_examples=300)
@given(blob=st.binary(max_size=200), chunk=st.integers(1, 50))
def test_arbitrary_bytes_give_messages_or_a_protocol_error_never_another_exception(
    blob: bytes, chunk: int
) -> None:
    decoder = FrameDecoder(max_frame=1024)
    try:
        for i in range(0, len(blob), chunk):
            for message in decoder.feed(blob[i : i + chunk]):
                assert isinstance(message, dict)
    except ControlProtocolError:
        pass


@settings(max_examples=200)
@given(body=st.binary(max_size=64))
def test_arbitrary_frame_bodies_give_a_map_or_a_protocol_error(body: bytes) -> None:
    try:
        (message,) = FrameDecoder().feed(_frame_raw(body))
    except ControlProtocolError:
        return
    assert isinstance(message, dict)


def test_oversized_length_is_refused_from_the_header_alone() -> None:
    decoder = FrameDecoder(max_frame=100)
    with pytest.raises(ControlProtocolError, match="exceeds"):
        decoder.feed(HEADER.pack(101))
    assert decoder.buffered == 0


def test_default_limit_allows_exactly_max_control_frame() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(HEADER.pack(MAX_CONTROL_FRAME)) == []  # waits for the body
    with pytest.raises(ControlProtocolError):
        FrameDecoder().feed(HEADER.pack(MAX_CONTROL_FRAME + 1))


def test_a_failed_decoder_refuses_further_input() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ControlProtocolError):
        decoder.feed(_frame_raw(b"\xc1"))
    with pytest.raises(ControlProtocolError, match="already failed"):
        decoder.feed(encode_frame({"id": 1}))


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (msgpack.packb([1, 2]), "not a map"),
        (msgpack.packb(3), "not a map"),
        (b"", "not valid msgpack"),
        (b"\xc1", "not valid msgpack"),
        (msgpack.packb({"a": 1}) + b"\x00", "not valid msgpack"),
        (msgpack.packb({1: "int key"}), "not valid msgpack"),
        (msgpack.packb({"t": msgpack.ExtType(5, b"x")}), "ext type"),
        (msgpack.packb({"t": msgpack.Timestamp(1, 0)}), "Timestamp"),
        (msgpack.packb({"a": _nested(MAX_CONTROL_DEPTH)}), "deeper"),
    ],
)
def test_bad_frame_bodies_are_protocol_errors(body: bytes, why: str) -> None:
    with pytest.raises(ControlProtocolError, match=why) as info:
        FrameDecoder().feed(_frame_raw(body))
    assert info.value.code == ErrorCode.PROTOCOL_ERROR


@pytest.mark.parametrize(
    "message",
    [
        {1: "int key"},
        {"x": object()},
        {"x": 2**64},
        {"x": msgpack.Timestamp(1, 0)},
        {"x": {"y": set()}},
    ],
)
def test_encode_refuses_what_the_other_side_could_not_decode(message: dict[Any, Any]) -> None:
    with pytest.raises(ControlProtocolError):
        encode_frame(message)


def test_encode_refuses_non_maps_and_oversized_messages() -> None:
    with pytest.raises(ControlProtocolError, match="map"):
        encode_frame([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ControlProtocolError, match="exceeds"):
        encode_frame({"blob": b"x" * 200}, max_frame=100)


def test_nesting_at_the_limit_round_trips() -> None:
    message = {"v": _nested(MAX_CONTROL_DEPTH - 1)}
    assert FrameDecoder().feed(encode_frame(message)) == [message]


def test_frame_is_big_endian_length_then_msgpack_map() -> None:
    frame = encode_frame({"id": 1, "result": b"\x00"})
    body = msgpack.packb({"id": 1, "result": b"\x00"}, use_bin_type=True)
    assert frame == len(body).to_bytes(4, "big") + body


# --- envelopes --------------------------------------------------------------------------------


def test_request_round_trips_through_the_wire_form() -> None:
    request = Request(7, "get", {"id": "abc"})
    assert parse_request(request.to_wire()) == request
    assert parse_request({"id": "x1", "method": "status"}) == Request("x1", "status", {})


@pytest.mark.parametrize(
    ("message", "code", "request_id"),
    [
        ({"method": "status"}, ErrorCode.BAD_REQUEST, None),
        ({"id": True, "method": "status"}, ErrorCode.BAD_REQUEST, None),
        ({"id": [1], "method": "status"}, ErrorCode.BAD_REQUEST, None),
        ({"id": 3}, ErrorCode.BAD_REQUEST, 3),
        ({"id": 3, "method": ""}, ErrorCode.BAD_REQUEST, 3),
        ({"id": 4, "method": "get", "params": [1]}, ErrorCode.INVALID_PARAMS, 4),
    ],
)
def test_invalid_requests_name_the_code_and_keep_a_usable_id(
    message: dict[str, Any], code: ErrorCode, request_id: Any
) -> None:
    with pytest.raises(ControlProtocolError) as info:
        parse_request(message)
    assert info.value.code == code
    assert info.value.request_id == request_id


def test_server_messages_parse_to_responses_errors_and_events() -> None:
    ok = Response(1, {"n": 1})
    err = error_response(2, ErrorCode.NOT_FOUND, "no such record")
    ev = Event("peer-up", {"peer": "abc"})
    assert parse_server_message(ok.to_wire()) == ok
    assert parse_server_message(err.to_wire()) == Response(
        2, error=ErrorInfo("not-found", "no such record")
    )
    assert parse_server_message(ev.to_wire()) == ev
    assert parse_server_message({"id": 3, "result": None}) == Response(3, None)


@pytest.mark.parametrize(
    "message",
    [{}, {"id": 1}, {"id": 1, "error": "x"}, {"id": 1, "error": {"code": 5}}, {"event": 3}],
)
def test_malformed_server_messages_are_protocol_errors(message: dict[str, Any]) -> None:
    with pytest.raises(ControlProtocolError):
        parse_server_message(message)


def test_error_messages_are_cut_to_a_bounded_length() -> None:
    response = error_response(1, ErrorCode.INTERNAL, "x" * 5000)
    assert response.error is not None
    assert len(response.error.message) <= 1000


# --- drop queue -------------------------------------------------------------------------------


def _queue(capacity: int) -> DropQueue[Any]:
    return DropQueue(capacity, lambda n: ("dropped", n))


def _drain(queue: DropQueue[Any]) -> list[Any]:
    out = []
    while (item := queue.pop()) is not None:
        out.append(item)
    return out


def test_drop_queue_counts_overflow_and_marks_it_where_the_events_were_lost() -> None:
    queue = _queue(3)
    assert [queue.put(i) for i in range(5)] == [True, True, True, False, False]
    assert queue.pop() == 0  # space frees
    assert queue.put(5)
    assert _drain(queue) == [1, 2, ("dropped", 2), 5]
    assert queue.dropped_total == 2


def test_drop_queue_reports_drops_when_it_runs_empty_without_new_events() -> None:
    queue = _queue(2)
    for i in range(4):
        queue.put(i)
    assert _drain(queue) == [0, 1, ("dropped", 2)]
    assert not queue.has_output


@settings(max_examples=200)
@given(ops=st.lists(st.booleans(), max_size=60), capacity=st.integers(1, 5))
def test_drop_queue_accounts_for_every_item_and_stays_bounded(
    ops: list[bool], capacity: int
) -> None:
    queue = _queue(capacity)
    put = delivered = 0
    for is_put in ops:
        if is_put:
            queue.put(put)
            put += 1
        else:
            item = queue.pop()
            if isinstance(item, tuple):
                delivered += item[1]
            elif item is not None:
                delivered += 1
        assert len(queue) <= capacity + 1
    for item in _drain(queue):
        delivered += item[1] if isinstance(item, tuple) else 1
    assert delivered == put
