"""The sync session, sans IO: message encoding, strict decoding, records frames, the two ends of a
fetch, and whole sessions (reconciliation + both fetch phases) driven in memory, frame by frame."""

from __future__ import annotations

import functools
import hashlib
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from p2pshare.protocol import canonical, sync
from p2pshare.protocol import limits as L
from p2pshare.protocol import sync_session as S
from p2pshare.protocol.records import REC, Record, create_record, decode_record
from p2pshare.protocol.sync import Reconciler, Role, SortedSyncSet, SyncProtocolError
from tests.protocol.strategies import (
    Pairs,
    Wide,
    communities,
    encode,
    mutations,
    nodes,
    replace,
    wide_forms,
)

T0 = 1_700_000_000_000
COMMUNITY = "public"
FRAME_LIMIT = S.MAX_FRAME_BYTES
CONTROL_LIMIT = S.MAX_CONTROL_FRAME_BYTES


def _id(n: int) -> bytes:
    return hashlib.sha256(n.to_bytes(8, "big")).digest()


def _wire(n: int, size: int) -> bytes:
    """Opaque wire bytes of exactly ``size`` bytes, distinct per ``n`` (record_frames and the
    Records limits never look inside)."""
    head = n.to_bytes(8, "big")
    return (head * (size // 8 + 1))[:size]


# --- real records ---------------------------------------------------------------------------------

POOL_PUBLIC = 400
POOL_OTHER = 12


@functools.cache
def _pool() -> tuple[tuple[Record, ...], tuple[Record, ...]]:
    """Signed records in "public" (several share a created_ms) and a few in "bikes"."""
    key = SigningKey(b"\x07" * 32)

    def make(n: int, community: str) -> Record:
        body = {"subject_type": "thing", "subject": f"shop {n}", "text": f"recommended #{n}"}
        return create_record(key, REC, body, community=community, created_ms=T0 + n // 3)

    public = tuple(make(n, COMMUNITY) for n in range(POOL_PUBLIC))
    other = tuple(make(POOL_PUBLIC + n, "bikes") for n in range(POOL_OTHER))
    return public, other


def _public() -> tuple[Record, ...]:
    return _pool()[0]


def _bikes() -> tuple[Record, ...]:
    return _pool()[1]


# --- message strategies ---------------------------------------------------------------------------

_ids32 = st.binary(min_size=32, max_size=32)
_many_ids = st.integers(1, S.MAX_GET_IDS).map(lambda n: tuple(_id(i) for i in range(n)))
_get_ids = st.one_of(st.lists(_ids32, min_size=1, max_size=20, unique=True).map(tuple), _many_ids)
# up to 15 wires of at most MAX_RECORD_BYTES always fit one frame's payload
_wire_sizes = st.lists(
    st.one_of(st.integers(1, 300), st.sampled_from([254, 255, 256, 65_535, L.MAX_RECORD_BYTES])),
    max_size=15,
)

opens = st.builds(S.Open, communities, st.one_of(st.just(1), st.integers(0, 2**32 - 1)))
recons = st.one_of(
    st.binary(max_size=200), st.just(bytes(sync.MAX_MESSAGE_BYTES)), st.just(b"")
).map(S.Recon)
gets = _get_ids.map(S.Get)
records_messages = st.builds(
    lambda sizes, end: S.Records(tuple(_wire(i, n) for i, n in enumerate(sizes)), end),
    _wire_sizes,
    st.booleans(),
)
dones = st.just(S.Done())
errors = st.sampled_from(list(S.ErrorCode)).map(S.Error)
messages = st.one_of(opens, recons, gets, records_messages, dones, errors)
# the same, with records frames small enough to mutate and re-spell quickly
small_messages = st.one_of(
    opens,
    st.binary(max_size=200).map(S.Recon),
    gets,
    st.builds(
        lambda sizes, end: S.Records(tuple(_wire(i, n) for i, n in enumerate(sizes)), end),
        st.lists(st.integers(1, 300), max_size=6),
        st.booleans(),
    ),
    dones,
    errors,
)

TYPE_KEYS = {
    "open": {"v", "community"},
    "recon": {"m"},
    "get": {"ids"},
    "records": {"wires", "end"},
    "done": set(),
    "error": {"code"},
}


def _fields(message: S.Message) -> dict[str, Any]:
    """The message's map, as a peer would see it on the wire."""
    fields: dict[str, Any] = canonical.unpack(S.encode(message), FRAME_LIMIT)
    return fields


def _decodes_or_refuses(frame: bytes, limit: int = FRAME_LIMIT) -> S.Message | None:
    """decode() may only return a message or raise a SyncProtocolError; a message it accepts
    re-encodes to exactly the frame (so everything accepted was canonical)."""
    try:
        message = S.decode(frame, limit)
    except SyncProtocolError as error:
        assert len(str(error)) <= 200, "refusals end up in the log: they quote peers briefly"
        return None
    assert S.encode(message) == frame
    return message


# --- encode / decode ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_every_message_type_survives_an_encode_decode_round_trip(message: S.Message) -> None:
    frame = S.encode(message)
    decoded = S.decode(frame)
    assert decoded == message
    assert type(decoded) is type(message)
    assert S.encode(decoded) == frame
    assert len(frame) <= S.MAX_FRAME_BYTES
    if not isinstance(message, S.Records):
        assert len(frame) <= S.MAX_CONTROL_FRAME_BYTES


@pytest.mark.parametrize(
    "message",
    [
        S.Open(COMMUNITY),
        S.Recon(bytes(sync.MAX_MESSAGE_BYTES)),
        S.Get(tuple(_id(i) for i in range(S.MAX_GET_IDS))),
        S.Done(),
        *(S.Error(code) for code in S.ErrorCode),
    ],
    ids=lambda m: type(m).__name__,
)
def test_every_message_but_records_fits_the_control_frame_limit(message: S.Message) -> None:
    frame = S.encode(message)
    assert len(frame) <= S.MAX_CONTROL_FRAME_BYTES
    assert S.decode(frame, S.MAX_CONTROL_FRAME_BYTES) == message


def test_a_records_frame_filled_to_both_limits_fits_the_frame_limit() -> None:
    by_bytes = S.Records(tuple(_wire(i, 65_533) for i in range(16)), True)  # exactly 1 MiB
    by_count = S.Records(tuple(_wire(i, 8) for i in range(S.MAX_RECORDS_PER_FRAME)), False)
    for message in (by_bytes, by_count):
        frame = S.encode(message)
        assert len(frame) <= S.MAX_FRAME_BYTES
        assert S.decode(frame) == message


def test_the_spec_wire_forms_are_exact() -> None:
    rid = _id(1)
    assert S.encode(S.Open("public")) == canonical.pack(
        {"t": "open", "v": 1, "community": "public"}
    )
    assert S.encode(S.Get((rid,))) == canonical.pack({"t": "get", "ids": rid})
    assert S.encode(S.Records((b"ab",), True)) == canonical.pack(
        {"t": "records", "wires": [b"ab"], "end": True}
    )
    assert S.encode(S.Done()) == b"\x81\xa1t\xa4done"
    assert S.encode(S.Error(S.ErrorCode.NOT_MEMBER)) == canonical.pack(
        {"t": "error", "code": "not-member"}
    )


@settings(max_examples=100, deadline=None)
@given(messages)
def test_a_frame_over_the_readers_limit_is_refused(message: S.Message) -> None:
    frame = S.encode(message)
    with pytest.raises(S.BadMessage):
        S.decode(frame, len(frame) - 1)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_decode_to_a_message_or_raise_only_sync_protocol_error(data: bytes) -> None:
    _decodes_or_refuses(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_corrupted_frames_decode_to_a_message_or_raise_only_sync_protocol_error(
    data: st.DataObject,
) -> None:
    frame = S.encode(data.draw(small_messages))
    _decodes_or_refuses(data.draw(mutations(frame)))


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([0, 1, 2, 2**32 - 1, 2**32, -1]),
    st.text(max_size=20),
    st.sampled_from(["public", "Public", "a" * 65, "busy", "not-member", "bad-version", "nope"]),
    st.binary(max_size=70),
    _ids32,
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
_key_names = sorted({"t", "x", *(k for keys in TYPE_KEYS.values() for k in keys)})
_plausible: dict[str, st.SearchStrategy[Any]] = {
    "v": st.integers(-2, 2**33),
    "community": st.one_of(communities, st.text(max_size=70)),
    "m": st.one_of(st.binary(max_size=80), st.just(bytes(sync.MAX_MESSAGE_BYTES + 1))),
    "ids": st.one_of(st.lists(_ids32, max_size=4).map(b"".join), st.binary(max_size=70)),
    "wires": st.lists(st.one_of(st.binary(max_size=40), _scalars), max_size=4),
    "end": st.booleans(),
    "code": st.one_of(st.sampled_from([c.value for c in S.ErrorCode]), st.text(max_size=12)),
}


@st.composite
def _message_like(draw: st.DrawFn) -> Any:
    """Maps shaped like messages: mostly the right keys, values often right, sometimes not."""
    real = st.sampled_from(sorted(TYPE_KEYS))
    kind = draw(st.one_of(real, real, real, st.sampled_from(["Open", "records "]), _scalars))
    fields: dict[str, Any] = {"t": kind} if draw(st.integers(0, 19)) != 7 else {}
    for key in sorted(TYPE_KEYS.get(kind, set()) if isinstance(kind, str) else set()):
        if draw(st.integers(0, 19)) != 7:  # now and then a key is missing
            fields[key] = draw(st.one_of(_plausible[key], _plausible[key], _values))
    if draw(st.integers(0, 9)) == 7:  # now and then one too many
        fields[draw(st.sampled_from(_key_names))] = draw(_values)
    return fields


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.one_of(_values, _message_like()), canonical_form=st.booleans())
def test_arbitrary_msgpack_decodes_to_a_message_or_raises_only_sync_protocol_error(
    value: Any, canonical_form: bool
) -> None:
    frame = canonical.pack(value) if canonical_form else msgpack.packb(value, use_bin_type=True)
    _decodes_or_refuses(frame)


@pytest.mark.parametrize("where", ["t", "code", "community"])
@pytest.mark.parametrize("big", ["x" * 60_000, b"\xff" * 60_000, [b"x"] * 20_000])
def test_a_refusal_quotes_a_huge_value_from_the_peer_only_briefly(where: str, big: Any) -> None:
    fields = {
        "t": {"t": big},
        "code": {"t": "error", "code": big},
        "community": {"t": "open", "v": 1, "community": big},
    }[where]
    frame = canonical.pack(fields)
    with pytest.raises(S.BadMessage) as refused:
        S.decode(frame)
    assert len(str(refused.value)) <= 100


def test_decode_refuses_what_is_not_bytes() -> None:
    with pytest.raises(S.BadMessage):
        S.decode(bytearray(S.encode(S.Done())))  # type: ignore[arg-type]


# --- non-canonical frames, extra and missing keys -------------------------------------------------


@st.composite
def _non_canonical_spellings(draw: st.DrawFn) -> bytes:
    """A valid message's map written a second way: one node wider than needed, keys out of
    order, a key repeated, bytes as str, or something after the value."""
    message = draw(small_messages)
    fields = _fields(message)
    how = draw(st.sampled_from(["wide", "order", "repeat", "str-for-bin", "trailing"]))
    if how == "wide":
        spots = [(path, wide) for path, node in nodes(fields) for wide in wide_forms(node)]
        path, wide = draw(st.sampled_from(spots))
        return encode(replace(fields, path, wide))
    pairs = sorted(fields.items())
    if how == "order" and len(pairs) > 1:
        return encode(Pairs(tuple(reversed(pairs))))
    if how == "repeat" or how == "order":
        return encode(Pairs((*pairs, pairs[-1])))
    if how == "str-for-bin" and any(isinstance(v, bytes | list) and v for _, v in pairs):
        old_spec: bytes = msgpack.packb(dict(pairs), use_bin_type=False)  # bytes as raw str
        return old_spec
    return S.encode(message) + draw(st.sampled_from([b"\x00", b"\xc0", S.encode(S.Done())]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_non_canonical_spellings())
def test_a_non_canonical_spelling_of_a_valid_message_is_refused(frame: bytes) -> None:
    with pytest.raises(S.BadMessage):
        S.decode(frame)


def test_a_wide_int_in_an_open_is_refused() -> None:
    assert S.decode(encode({"t": "open", "v": 1, "community": COMMUNITY})) == S.Open(COMMUNITY)
    frame = encode({"t": "open", "v": Wide(1, 4), "community": COMMUNITY})
    with pytest.raises(S.BadMessage, match="undecodable"):
        S.decode(frame)


@settings(max_examples=200, deadline=None)
@given(
    message=small_messages,
    key=st.one_of(st.sampled_from(_key_names), st.text(min_size=1, max_size=5)),
    value=_scalars,
)
def test_a_message_with_an_extra_key_is_refused(message: S.Message, key: str, value: Any) -> None:
    fields = _fields(message)
    assume(key not in fields)
    with pytest.raises(S.BadMessage, match="exactly the keys"):
        S.decode(canonical.pack({**fields, key: value}))


@settings(max_examples=200, deadline=None)
@given(message=small_messages, data=st.data())
def test_a_message_missing_a_key_is_refused(message: S.Message, data: st.DataObject) -> None:
    fields = _fields(message)
    key = data.draw(st.sampled_from(sorted(fields)))
    del fields[key]
    with pytest.raises(S.BadMessage):
        S.decode(canonical.pack(fields))


@pytest.mark.parametrize(
    "fields",
    [
        {"t": "hello"},
        {"t": b"done"},
        {"t": 1},
        {"t": "open", "v": True, "community": COMMUNITY},
        {"t": "open", "v": -1, "community": COMMUNITY},
        {"t": "open", "v": 2**32, "community": COMMUNITY},
        {"t": "open", "v": 1, "community": "Public"},
        {"t": "open", "v": 1, "community": "bike repair"},
        {"t": "open", "v": 1, "community": "a" * 65},
        {"t": "open", "v": 1, "community": b"public"},
        {"t": "recon", "m": "text"},
        {"t": "recon", "m": bytes(sync.MAX_MESSAGE_BYTES + 1)},
        {"t": "get", "ids": b""},
        {"t": "get", "ids": bytes(31)},
        {"t": "get", "ids": bytes(33)},
        {"t": "get", "ids": _id(1) + _id(1)},
        {"t": "get", "ids": b"".join(_id(i) for i in range(S.MAX_GET_IDS + 1))},
        {"t": "get", "ids": [_id(1)]},
        {"t": "records", "wires": b"x", "end": True},
        {"t": "records", "wires": ["x"], "end": True},
        {"t": "records", "wires": [b""], "end": True},
        {"t": "records", "wires": [bytes(L.MAX_RECORD_BYTES + 1)], "end": True},
        {"t": "records", "wires": [b"x"], "end": 1},
        {"t": "records", "wires": [b"x"], "end": None},
        {"t": "records", "wires": [b"x"] * (S.MAX_RECORDS_PER_FRAME + 1), "end": True},
        {"t": "records", "wires": [bytes(65_533)] * 16 + [b"x"], "end": True},  # payload + 3
        {"t": "error", "code": "tired"},
        {"t": "error", "code": 1},
        {"t": "done", "x": None},
        [{"t": "done"}],
        "done",
    ],
    ids=lambda f: repr(f)[:60],
)
def test_malformed_messages_are_refused(fields: Any) -> None:
    with pytest.raises(S.BadMessage):
        S.decode(canonical.pack(fields))


def test_a_message_of_another_type_than_expected_is_a_bad_message() -> None:
    assert S.expect(S.Done(), S.Get, S.Done) == S.Done()
    with pytest.raises(S.BadMessage, match="expected get or done, got records"):
        S.expect(S.Records((), True), S.Get, S.Done)


def test_each_refusal_charges_the_peer_with_its_own_reason() -> None:
    reasons = {
        S.violation_reason(error("x"))
        for error in (S.BadMessage, S.UnwantedRecord, S.WrongCommunity, S.UnwantedRequest)
    }
    assert len(reasons) == 4
    assert S.violation_reason(SyncProtocolError("from the reconciler")) == S.BadMessage.reason


# --- records frames -------------------------------------------------------------------------------


def _check_frames(wires: list[bytes], frames: list[S.Records]) -> None:
    assert frames, "always at least one frame"
    assert [f.end for f in frames] == [False] * (len(frames) - 1) + [True]
    assert [w for f in frames for w in f.wires] == wires  # all of them, in order
    for index, frame in enumerate(frames):
        payload = sum(len(msgpack.packb(w, use_bin_type=True)) for w in frame.wires)
        assert payload <= S.MAX_RECORDS_PAYLOAD
        assert len(frame.wires) <= S.MAX_RECORDS_PER_FRAME
        assert len(S.encode(frame)) <= S.MAX_FRAME_BYTES
        if index < len(frames) - 1:  # as few frames as the limits allow: the next wire did not fit
            assert frame.wires
            following = frames[index + 1].wires[0]
            fuller = payload + len(msgpack.packb(following, use_bin_type=True))
            assert fuller > S.MAX_RECORDS_PAYLOAD or len(frame.wires) == S.MAX_RECORDS_PER_FRAME


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.integers(1, 400),
            st.integers(20_000, L.MAX_RECORD_BYTES),
            st.sampled_from([255, 256, 65_533, 65_535, 65_536]),
        ),
        max_size=60,
    )
)
def test_record_frames_keep_the_payload_limit_and_end_exactly_once(sizes: list[int]) -> None:
    wires = [_wire(i, n) for i, n in enumerate(sizes)]
    _check_frames(wires, list(S.record_frames(wires)))


def test_record_frames_split_at_the_per_frame_record_count() -> None:
    count = 2 * S.MAX_RECORDS_PER_FRAME + 5
    wires = [_wire(i, 8) for i in range(count)]
    frames = list(S.record_frames(wires))
    assert [len(f.wires) for f in frames] == [S.MAX_RECORDS_PER_FRAME] * 2 + [5]
    _check_frames(wires, frames)


def test_record_frames_fill_the_payload_exactly_before_starting_a_new_frame() -> None:
    wires = [_wire(i, 65_533) for i in range(33)]  # 16 of them make exactly 1 MiB with headers
    frames = list(S.record_frames(wires))
    assert [len(f.wires) for f in frames] == [16, 16, 1]
    _check_frames(wires, frames)


@pytest.mark.parametrize("wires", [[], iter([])], ids=["list", "iterator"])
def test_nothing_to_send_is_one_empty_final_frame(wires: Iterable[bytes]) -> None:
    assert list(S.record_frames(wires)) == [S.Records((), True)]


def test_record_frames_consume_an_iterator_lazily() -> None:
    produced: list[int] = []

    def wires() -> Iterable[bytes]:
        for i in range(3 * 16):
            produced.append(i)
            yield _wire(i, 65_533)

    frames = S.record_frames(wires())
    next(frames)
    assert len(produced) == 17  # the 17th wire is what closed the first frame


# --- the fetcher ----------------------------------------------------------------------------------


def _answer(get: S.Get, store: dict[bytes, bytes], split: int = 1 << 30) -> list[S.Records]:
    """Frames answering ``get`` from ``store`` (ids it lacks left out), ``split`` wires a frame."""
    wires = [store[i] for i in get.ids if i in store]
    chunks = [wires[i : i + split] for i in range(0, len(wires), split)] or [[]]
    return [S.Records(tuple(c), i == len(chunks) - 1) for i, c in enumerate(chunks)]


def _store(records: Iterable[Record]) -> dict[bytes, bytes]:
    return {r.id: r.wire for r in records}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    want=st.sets(st.integers(0, POOL_PUBLIC - 1), max_size=150),
    max_get_ids=st.sampled_from([1, 2, 7, 64, S.MAX_GET_IDS]),
    pipeline=st.integers(1, 4),
    split=st.sampled_from([1, 3, 1 << 30]),
)
def test_pipelined_gets_are_answered_in_order_and_every_wanted_record_arrives_once(
    want: set[int], max_get_ids: int, pipeline: int, split: int
) -> None:
    records = [_public()[i] for i in sorted(want)]
    store = _store(records)
    fetcher = S.Fetcher(store.keys(), COMMUNITY, max_get_ids=max_get_ids)
    outstanding: deque[S.Get] = deque()
    asked: list[bytes] = []
    received: list[bytes] = []
    while not fetcher.finished:
        while fetcher.outstanding < pipeline and (get := fetcher.next_get()) is not None:
            assert 1 <= len(get.ids) <= max_get_ids
            assert list(get.ids) == sorted(get.ids)
            outstanding.append(get)
            asked.extend(get.ids)
        assert fetcher.outstanding == len(outstanding) <= pipeline
        for frame in _answer(outstanding.popleft(), store, split):
            received.extend(fetcher.accept(frame))
    assert sorted(asked) == sorted(store) and len(asked) == len(set(asked))
    assert received == [store[i] for i in asked]  # in request order, each once
    assert (fetcher.received, fetcher.missing) == (len(store), 0)
    assert fetcher.next_get() is None


def test_a_fetcher_with_nothing_to_want_is_finished_at_once() -> None:
    fetcher = S.Fetcher([], COMMUNITY)
    assert fetcher.finished
    assert fetcher.next_get() is None


@pytest.mark.parametrize("max_get_ids", [0, -1, S.MAX_GET_IDS + 1])
def test_a_fetcher_refuses_a_request_size_outside_the_protocol(max_get_ids: int) -> None:
    with pytest.raises(ValueError):
        S.Fetcher([_id(1)], COMMUNITY, max_get_ids=max_get_ids)


def _fetcher_with(requests: Sequence[Sequence[Record]]) -> tuple[S.Fetcher, list[S.Get]]:
    """A fetcher with one outstanding get per group of records, in that order."""
    size = max(len(g) for g in requests)
    want = [r.id for group in requests for r in group]
    fetcher = S.Fetcher(want, COMMUNITY, max_get_ids=size)
    gets = [g for _ in requests if (g := fetcher.next_get()) is not None]
    for group, get in zip(requests, gets, strict=True):
        assert set(get.ids) == {r.id for r in group}, "ids are handed out in ascending order"
    return fetcher, gets


def _by_id(records: Iterable[Record]) -> list[Record]:
    return sorted(records, key=lambda r: r.id)


def test_records_with_no_request_outstanding_are_unwanted() -> None:
    record = _public()[0]
    fetcher = S.Fetcher([record.id], COMMUNITY)
    with pytest.raises(S.UnwantedRecord, match="no request outstanding"):
        fetcher.accept(S.Records((record.wire,), True))
    with pytest.raises(S.UnwantedRecord):
        fetcher.accept(S.Records((), True))  # even an empty answer answers nothing


def test_a_record_nobody_asked_for_is_unwanted() -> None:
    asked, stranger = _public()[0], _public()[1]
    fetcher = S.Fetcher([asked.id], COMMUNITY)
    fetcher.next_get()
    with pytest.raises(S.UnwantedRecord, match="not asked for"):
        fetcher.accept(S.Records((asked.wire, stranger.wire), True))


@pytest.mark.parametrize("where", ["same-frame", "next-frame", "next-answer"])
def test_a_record_delivered_twice_is_unwanted(where: str) -> None:
    first, second = _by_id(_public()[:2])
    fetcher = S.Fetcher([first.id, second.id], COMMUNITY, max_get_ids=1)
    fetcher.next_get()
    if where == "same-frame":
        frames = [S.Records((first.wire, first.wire), True)]
    elif where == "next-frame":
        frames = [S.Records((first.wire,), False), S.Records((first.wire,), True)]
    else:
        fetcher.next_get()
        frames = [S.Records((first.wire,), True), S.Records((first.wire,), True)]
    with pytest.raises(S.UnwantedRecord, match="came twice"):
        for frame in frames:
            fetcher.accept(frame)


def test_an_empty_frame_that_is_not_the_last_of_its_answer_is_refused() -> None:
    """Else a peer could keep a session busy with endless empty frames; record_frames never
    sends one, and an empty last frame (nothing found) stays fine."""
    first, second = _by_id(_public()[:2])
    fetcher, _ = _fetcher_with([[first], [second]])
    assert fetcher.accept(S.Records((), True)) == []
    assert fetcher.missing == 1
    with pytest.raises(S.BadMessage, match="must hold records"):
        fetcher.accept(S.Records((), False))


def test_answers_out_of_request_order_are_unwanted() -> None:
    early, late = _by_id(_public()[:2])
    fetcher, _ = _fetcher_with([[early], [late]])
    with pytest.raises(S.UnwantedRecord):
        fetcher.accept(S.Records((late.wire,), True))  # answers the second get first


def test_a_record_of_another_community_is_refused_even_when_its_id_was_asked_for() -> None:
    stray = _bikes()[0]
    fetcher = S.Fetcher([stray.id], COMMUNITY)  # the peer's reconciliation claimed it
    fetcher.next_get()
    with pytest.raises(S.WrongCommunity, match="not in public"):
        fetcher.accept(S.Records((stray.wire,), True))


@pytest.mark.parametrize(
    "wire",
    [
        b"\xc1 not msgpack",
        msgpack.packb([1, 2, 3]),
        msgpack.packb({"community": COMMUNITY}),
        msgpack.packb([1, "rec", b"a" * 32, T0, b"public", {}, b"s" * 64]),
        msgpack.packb([1, "rec", b"a" * 32, T0, 7, {}, b"s" * 64]),
        msgpack.packb([1, "rec", b"a" * 32, T0, COMMUNITY, {}, b"s"]) + b"\x00",  # trailing
    ],
    ids=["garbage", "short-array", "map", "bin-community", "int-community", "trailing"],
)
def test_something_that_is_not_a_record_is_refused_as_wrong_community(wire: bytes) -> None:
    fetcher = S.Fetcher([hashlib.sha256(wire).digest()], COMMUNITY)
    fetcher.next_get()
    with pytest.raises(S.WrongCommunity):
        fetcher.accept(S.Records((wire,), True))


def test_the_community_is_read_from_the_envelope_without_checking_the_signature() -> None:
    record = _public()[0]
    forged = record.wire[:-1] + bytes([record.wire[-1] ^ 1])  # the store refuses it later
    assert S.wire_community(forged) == COMMUNITY
    assert S.wire_community(_bikes()[0].wire) == "bikes"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    want=st.sets(st.integers(0, POOL_PUBLIC - 1), min_size=1, max_size=100),
    gone=st.sets(st.integers(0, POOL_PUBLIC - 1)),
    max_get_ids=st.sampled_from([1, 5, 32]),
    split=st.sampled_from([1, 4, 1 << 30]),
)
def test_ids_left_out_of_an_answer_are_counted_missing_not_an_error(
    want: set[int], gone: set[int], max_get_ids: int, split: int
) -> None:
    store = {r.id: r.wire for i, r in enumerate(_public()) if i in want and i not in gone}
    fetcher = S.Fetcher([_public()[i].id for i in want], COMMUNITY, max_get_ids=max_get_ids)
    received: list[bytes] = []
    while (get := fetcher.next_get()) is not None:
        for frame in _answer(get, store, split):
            received.extend(fetcher.accept(frame))
    assert fetcher.finished
    assert sorted(received) == sorted(store.values())
    assert fetcher.received == len(store)
    assert fetcher.missing == len(want & gone)


# --- the server -----------------------------------------------------------------------------------


def test_a_server_answers_each_offered_id_once() -> None:
    offered = [_id(i) for i in range(5)]
    server = S.Server(offered)
    assert server.check(S.Get(tuple(offered[:3]))) == tuple(offered[:3])
    assert server.check(S.Get((offered[4],))) == (offered[4],)
    assert server.asked == 4
    with pytest.raises(S.UnwantedRequest, match="asked twice"):
        server.check(S.Get((offered[1],)))


def test_a_server_refuses_an_id_it_did_not_offer_even_among_offered_ones() -> None:
    server = S.Server([_id(1), _id(2)])
    with pytest.raises(S.UnwantedRequest, match="not offered"):
        server.check(S.Get((_id(1), _id(3))))


@settings(max_examples=200, deadline=None)
@given(
    offered=st.sets(st.integers(0, 40), max_size=30),
    requests=st.lists(st.sets(st.integers(0, 40), min_size=1, max_size=8), max_size=8),
)
def test_a_server_refuses_exactly_the_requests_for_ids_not_offered_or_already_asked(
    offered: set[int], requests: list[set[int]]
) -> None:
    server = S.Server(_id(i) for i in offered)
    allowed = set(offered)
    for request in requests:
        get = S.Get(tuple(_id(i) for i in sorted(request)))
        if request <= allowed:
            assert server.check(get) == get.ids
            allowed -= request
        else:
            with pytest.raises(S.UnwantedRequest):
                server.check(get)
            return  # the session ends at the first violation
    assert server.asked == len(offered) - len(allowed)


# --- a whole session in memory --------------------------------------------------------------------


@dataclass
class Node:
    """One side: a store (every community) and what it saw."""

    records: dict[bytes, Record]
    ingested: int = 0

    @property
    def wires(self) -> dict[bytes, bytes]:
        return {i: r.wire for i, r in self.records.items()}

    def ids(self, community: str = COMMUNITY) -> set[bytes]:
        return {i for i, r in self.records.items() if r.community == community}

    def snapshot(self, community: str) -> SortedSyncSet:
        return SortedSyncSet(
            (r.created_ms, r.id) for r in self.records.values() if r.community == community
        )

    def ingest(self, wires: Iterable[bytes]) -> None:
        for wire in wires:
            record = decode_record(wire)  # fully checked, signature included
            self.records[record.id] = record
            self.ingested += 1


@dataclass
class Link:
    """The stream between the two sides: frames in flight each way, and bytes counted."""

    to_responder: deque[bytes] = field(default_factory=deque)
    to_initiator: deque[bytes] = field(default_factory=deque)
    sent: dict[str, int] = field(default_factory=lambda: {"initiator": 0, "responder": 0})

    def send(self, sender: str, message: S.Message) -> None:
        frame = S.encode(message)
        limit = FRAME_LIMIT if isinstance(message, S.Records) else CONTROL_LIMIT
        assert len(frame) <= limit
        self.sent[sender] += len(frame)
        (self.to_responder if sender == "initiator" else self.to_initiator).append(frame)

    def receive(self, receiver: str, *types: type[Any]) -> Any:
        queue = self.to_responder if receiver == "responder" else self.to_initiator
        limit = FRAME_LIMIT if S.Records in types else CONTROL_LIMIT
        return S.expect(S.decode(queue.popleft(), limit), *types)

    def pending(self, receiver: str) -> int:
        return len(self.to_responder if receiver == "responder" else self.to_initiator)


def _reconcile(link: Link, a: Node, b: Node, community: str) -> tuple[Reconciler, Reconciler]:
    initiator = Reconciler(a.snapshot(community), Role.INITIATOR)
    link.send("initiator", S.Open(community))
    link.send("initiator", S.Recon(initiator.initiate()))
    assert link.receive("responder", S.Open) == S.Open(community)
    responder = Reconciler(b.snapshot(community), Role.RESPONDER)
    turn, other = ("responder", responder), ("initiator", initiator)
    while True:
        name, reconciler = turn
        reply = reconciler.receive(link.receive(name, S.Recon).message)
        if reply is None:
            break
        link.send(name, S.Recon(reply))
        turn, other = other, turn
    assert initiator.done and responder.done
    assert not link.pending("initiator") and not link.pending("responder")
    return initiator, responder


def _phase(
    link: Link,
    puller: tuple[str, Node, S.Fetcher],
    server: tuple[str, Node, S.Server],
    pipeline: int,
    choose: Callable[[int], int],
    deleted: set[bytes],
) -> None:
    """One side pulls what it lacks; ``choose`` interleaves the two sides' steps."""
    pname, pnode, fetcher = puller
    sname, snode, checker = server
    done_sent = False
    while True:
        while fetcher.outstanding < pipeline and (get := fetcher.next_get()) is not None:
            link.send(pname, get)
        if fetcher.finished and not done_sent:
            link.send(pname, S.Done())
            done_sent = True
        steps = []
        if link.pending(sname):
            steps.append("serve")
        if link.pending(pname):
            steps.append("pull")
        if not steps:
            break
        if steps[choose(len(steps))] == "serve":
            request = link.receive(sname, S.Get, S.Done)
            if isinstance(request, S.Done):
                assert not link.pending(sname)
                continue
            ids = checker.check(request)
            wires = [snode.wires[i] for i in ids if i not in deleted]
            for frame in S.record_frames(wires):
                link.send(sname, frame)
        else:
            pnode.ingest(fetcher.accept(link.receive(pname, S.Records)))
    assert done_sent and fetcher.finished


@st.composite
def _two_sides(draw: st.DrawFn) -> tuple[list[int], list[int], list[int]]:
    """Indices into the public pool: (common, only A, only B), sizes from none to most of it."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    order = list(range(POOL_PUBLIC))
    rng.shuffle(order)
    n_common = draw(st.sampled_from([0, 1, 30, 200]))
    n_a = draw(st.sampled_from([0, 1, 2, 9, 60, 150]))
    n_b = draw(st.sampled_from([0, 1, 2, 9, 60, 150]))
    common = order[:n_common]
    only_a = order[n_common : n_common + n_a]
    only_b = order[n_common + n_a : n_common + n_a + n_b]
    return common, only_a, only_b


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sides=_two_sides(),
    max_get_ids=st.sampled_from([1, 3, 16, S.MAX_GET_IDS]),
    pipeline=st.integers(1, 3),
    schedule=st.randoms(use_true_random=False),
)
def test_a_whole_session_leaves_both_sides_with_the_union_and_nothing_else(
    sides: tuple[list[int], list[int], list[int]],
    max_get_ids: int,
    pipeline: int,
    schedule: random.Random,
) -> None:
    common, only_a, only_b = sides
    pool = _public()
    a = Node({r.id: r for r in (pool[i] for i in common + only_a)})
    b = Node({r.id: r for r in (pool[i] for i in common + only_b)})
    a.records.update((r.id, r) for r in _bikes()[:3])  # another community: never synced here
    union = a.ids() | b.ids()
    link = Link()

    initiator, responder = _reconcile(link, a, b, COMMUNITY)
    assert initiator.want_ids == responder.offer_ids == b.ids() - a.ids()
    assert initiator.offer_ids == responder.want_ids == a.ids() - b.ids()

    a_fetcher = S.Fetcher(initiator.want_ids, COMMUNITY, max_get_ids=max_get_ids)
    b_fetcher = S.Fetcher(responder.want_ids, COMMUNITY, max_get_ids=max_get_ids)
    b_server, a_server = S.Server(responder.offer_ids), S.Server(initiator.offer_ids)
    choose = schedule.randrange
    _phase(link, ("initiator", a, a_fetcher), ("responder", b, b_server), pipeline, choose, set())
    _phase(link, ("responder", b, b_fetcher), ("initiator", a, a_server), pipeline, choose, set())

    assert a.ids() == b.ids() == union
    assert b.ids("bikes") == set()
    assert (a.ingested, b.ingested) == (len(only_b), len(only_a))  # each record moved once
    assert (a_fetcher.missing, b_fetcher.missing) == (0, 0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sides=_two_sides(), data=st.data())
def test_records_deleted_after_the_reconciliation_are_counted_missing_and_the_rest_arrives(
    sides: tuple[list[int], list[int], list[int]], data: st.DataObject
) -> None:
    common, only_a, only_b = sides
    pool = _public()
    a = Node({r.id: r for r in (pool[i] for i in common + only_a)})
    b = Node({r.id: r for r in (pool[i] for i in common + only_b)})
    had = a.ids()
    link = Link()
    initiator, responder = _reconcile(link, a, b, COMMUNITY)
    offered = sorted(responder.offer_ids)
    deleted = set(data.draw(st.sets(st.sampled_from(offered)) if offered else st.just(set())))

    fetcher = S.Fetcher(initiator.want_ids, COMMUNITY, max_get_ids=7)
    server = S.Server(responder.offer_ids)
    _phase(link, ("initiator", a, fetcher), ("responder", b, server), 2, lambda n: 0, deleted)

    assert a.ids() == had | (set(offered) - deleted)
    assert fetcher.missing == len(deleted)
    assert fetcher.received == len(offered) - len(deleted)


def test_peers_in_sync_exchange_only_open_one_reconciliation_round_and_done() -> None:
    pool = _public()
    a = Node({r.id: r for r in pool})
    b = Node({r.id: r for r in pool})
    link = Link()
    initiator, responder = _reconcile(link, a, b, COMMUNITY)
    assert not initiator.want_ids and not initiator.offer_ids
    for puller, server in (("initiator", "responder"), ("responder", "initiator")):
        node = a if puller == "initiator" else b
        fetcher = S.Fetcher(set(), COMMUNITY)
        _phase(link, (puller, node, fetcher), (server, node, S.Server(())), 1, lambda n: 0, set())
    assert initiator.rounds == responder.rounds == 1
    assert max(link.sent.values()) < 100
