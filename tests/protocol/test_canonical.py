"""Canonical msgpack: one byte form per value; every other spelling, and every bad input, refused
with a RecordError and a reason, never another exception."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from p2pshare.protocol import canonical
from p2pshare.protocol.reasons import Reason, RecordError
from tests.protocol.strategies import Ext, Float, Pairs, Wide, encode, nodes, replace, wide_forms

LIMIT = 1 << 20

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.sampled_from(["x" * 31, "x" * 32, "x" * 255, "x" * 256, b"y" * 255, b"y" * 256]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=30,
)
# values with at least one node a wider spelling can replace
widenable = values.filter(lambda v: any(wide_forms(node) for _, node in nodes(v)))


def _is_key(path: tuple[Any, ...]) -> bool:
    return bool(path) and isinstance(path[-1], tuple) and path[-1][0] == "key"


def _reason(data: bytes) -> Reason:
    with pytest.raises(RecordError) as caught:
        canonical.unpack(data, LIMIT)
    return caught.value.reason


# --- the canonical form ----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(values)
def test_pack_unpack_pack_is_identical(value: Any) -> None:
    data = canonical.pack(value)
    decoded = canonical.unpack(data, LIMIT)
    assert decoded == value
    assert canonical.pack(decoded) == data


@settings(max_examples=200, deadline=None)
@given(values)
def test_canonical_form_is_plain_msgpack_with_sorted_keys(value: Any) -> None:
    """The spec written with our independent writer: minimal headers, keys in sorted order."""
    assert canonical.pack(value) == encode(value)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=6), st.integers(0, 9), min_size=2, max_size=8))
def test_key_order_of_the_input_does_not_matter(mapping: dict[str, int]) -> None:
    reversed_order = dict(reversed(list(mapping.items())))
    assert canonical.pack(reversed_order) == canonical.pack(mapping)
    keys = list(canonical.unpack(canonical.pack(reversed_order), LIMIT))
    assert keys == sorted(mapping)


def test_tuples_pack_as_lists() -> None:
    assert canonical.pack((1, "a")) == canonical.pack([1, "a"])


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param(1.5, Reason.FORBIDDEN_TYPE, id="float"),
        pytest.param({"a": [0.0]}, Reason.FORBIDDEN_TYPE, id="nested-float"),
        pytest.param({b"k": 1}, Reason.FORBIDDEN_TYPE, id="bin-key"),
        pytest.param({1: 1}, Reason.FORBIDDEN_TYPE, id="int-key"),
        # str and bytes keys together cannot even be sorted: still a RecordError
        pytest.param({"a": 1, b"b": 2}, Reason.FORBIDDEN_TYPE, id="mixed-keys"),
        pytest.param(2**64, Reason.FORBIDDEN_TYPE, id="int-too-big"),
        pytest.param(-(2**63) - 1, Reason.FORBIDDEN_TYPE, id="int-too-small"),
        pytest.param(bytearray(b"x"), Reason.FORBIDDEN_TYPE, id="bytearray"),
        pytest.param({1, 2}, Reason.FORBIDDEN_TYPE, id="set"),
        pytest.param("\udc80", Reason.MALFORMED, id="lone-surrogate"),
    ],
)
def test_pack_refuses_what_has_no_canonical_form(value: Any, reason: Reason) -> None:
    with pytest.raises(RecordError) as caught:
        canonical.pack(value)
    assert caught.value.reason is reason


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_is_limited() -> None:
    data = canonical.pack(_nested(canonical.MAX_DEPTH))
    assert canonical.unpack(data, LIMIT) == _nested(canonical.MAX_DEPTH)
    with pytest.raises(RecordError) as caught:
        canonical.pack(_nested(canonical.MAX_DEPTH + 1))
    assert caught.value.reason is Reason.MALFORMED
    assert _reason(b"\x91" * (canonical.MAX_DEPTH + 1) + b"\x00") is Reason.MALFORMED


@pytest.mark.parametrize("depth", [100, 999, 1024, 1025, 5000, 60_000])
def test_deep_nesting_is_refused_without_recursion_errors(depth: int) -> None:
    assert _reason(b"\x91" * depth + b"\x00") is Reason.MALFORMED
    assert _reason(b"\x81\xa1a" * depth + b"\x00") is Reason.MALFORMED


# --- every other spelling is refused ---------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(widenable, st.data())
def test_any_wider_int_or_length_header_is_refused(value: Any, data: st.DataObject) -> None:
    candidates = [(path, node) for path, node in nodes(value) if wide_forms(node)]
    path, node = data.draw(st.sampled_from(candidates), label="node")
    wide = data.draw(st.sampled_from(wide_forms(node)), label="form")
    written = encode(replace(value, path, wide))
    assert msgpack.unpackb(written, raw=False) == value  # same value, other bytes
    assert _reason(written) is Reason.NON_CANONICAL


@pytest.mark.parametrize(
    ("written", "meaning"),
    [
        (b"\xcd\x00\x05", 5),  # uint16 for a fixint
        (b"\xcc\x05", 5),
        (b"\xce\x00\x00\x00\x05", 5),
        (b"\xcf\x00\x00\x00\x00\x00\x00\x00\x05", 5),  # uint64 for a small value
        (b"\xd0\x05", 5),  # int8 for a positive fixint
        (b"\xd3\xff\xff\xff\xff\xff\xff\xff\xff", -1),  # int64 for a negative fixint
        (b"\xcd\x00\xc8", 200),  # uint16 where uint8 fits
        (b"\xd1\xff\x80", -128),  # int16 where int8 fits
        (b"\xd9\x01a", "a"),  # str8 for a fixstr
        (b"\xda\x00\x01a", "a"),
        (b"\xdb\x00\x00\x00\x01a", "a"),
        (b"\xc5\x00\x01a", b"a"),  # bin16 where bin8 fits
        (b"\xdc\x00\x01\x00", [0]),  # array16 for a fixarray
        (b"\xdd\x00\x00\x00\x00", []),
        (b"\xde\x00\x01\xa1a\x00", {"a": 0}),  # map16 for a fixmap
        (b"\xdf\x00\x00\x00\x00", {}),
        (b"\x82\xa1b\x00\xa1a\x00", {"a": 0, "b": 0}),  # keys out of order
        (b"\x82\xa1a\x00\xa1a\x00", {"a": 0}),  # duplicate key, same value
        (b"\x82\xa1a\x00\xa1a\x01", {"a": 1}),  # duplicate key, last one wins in msgpack
        (b"\x82\xa1b\x00\xa2ab\x00", {"ab": 0, "b": 0}),  # keys sorted by length, not text
    ],
)
def test_known_non_canonical_spellings_are_refused(written: bytes, meaning: Any) -> None:
    assert msgpack.unpackb(written, raw=False) == meaning
    assert _reason(written) is Reason.NON_CANONICAL
    assert canonical.pack(meaning) != written


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=5), st.integers(0, 3), min_size=2, max_size=6))
def test_unsorted_map_keys_are_refused(mapping: dict[str, int]) -> None:
    pairs = tuple(sorted(mapping.items(), reverse=True))
    assert _reason(encode(Pairs(pairs))) is Reason.NON_CANONICAL


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(st.text(max_size=5), st.integers(0, 3), min_size=1, max_size=6),
    st.data(),
)
def test_duplicate_map_keys_are_refused(mapping: dict[str, int], data: st.DataObject) -> None:
    pairs = sorted(mapping.items())
    at = data.draw(st.integers(0, len(pairs) - 1))
    again = (pairs[at][0], data.draw(st.integers(0, 3)))
    written = encode(Pairs((*pairs[: at + 1], again, *pairs[at + 1 :])))
    assert _reason(written) is Reason.NON_CANONICAL


@settings(max_examples=200, deadline=None)
@given(values, st.data(), st.floats(width=32), st.booleans())
def test_floats_are_refused_anywhere(
    value: Any, data: st.DataObject, number: float, single: bool
) -> None:
    path, _ = data.draw(st.sampled_from(nodes(value)))
    assume(not _is_key(path))  # a float key is refused too, but as MALFORMED
    written = encode(replace(value, path, Float(number, single)))
    assert _reason(written) is Reason.FORBIDDEN_TYPE


@settings(max_examples=200, deadline=None)
@given(values, st.data(), st.integers(-128, 127), st.binary(max_size=20))
def test_ext_types_are_refused_anywhere(
    value: Any, data: st.DataObject, code: int, payload: bytes
) -> None:
    path, _ = data.draw(st.sampled_from(nodes(value)))
    assume(not _is_key(path))
    written = encode(replace(value, path, Ext(code, payload)))
    assert _reason(written) is Reason.FORBIDDEN_TYPE


@pytest.mark.parametrize("size", [4, 8, 12])
def test_valid_timestamps_are_refused_too(size: int) -> None:
    """msgpack decodes ext -1 (timestamp) itself, without asking our ext hook."""
    assert _reason(encode(Ext(-1, b"\x00" * size))) is Reason.FORBIDDEN_TYPE


@settings(max_examples=150, deadline=None)
@given(values, st.binary(min_size=1, max_size=10))
def test_trailing_bytes_are_refused(value: Any, extra: bytes) -> None:
    assert _reason(canonical.pack(value) + extra) is Reason.TRAILING_BYTES


@settings(max_examples=150, deadline=None)
@given(values.filter(lambda v: len(canonical.pack(v)) > 1), st.data())
def test_truncated_input_is_refused(value: Any, data: st.DataObject) -> None:
    written = canonical.pack(value)
    cut = data.draw(st.integers(0, len(written) - 1))
    assert _reason(written[:cut]) is Reason.MALFORMED


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        (b"", Reason.MALFORMED),
        (b"\xc1", Reason.MALFORMED),  # the one reserved byte
        (b"\xa2\xff\xfe", Reason.MALFORMED),  # invalid UTF-8
        (b"\xa3\xed\xa0\x80", Reason.MALFORMED),  # an encoded surrogate is invalid UTF-8
        (b"\xa2\xc0\x80", Reason.MALFORMED),  # overlong NUL
        (b"\x81\xc4\x01k\x00", Reason.FORBIDDEN_TYPE),  # a bin map key
        (b"\x82\xa1a\x00\xc4\x01b\x00", Reason.FORBIDDEN_TYPE),  # str and bin keys mixed
        (b"\x82\xc4\x01b\x00\xa1a\x00", Reason.FORBIDDEN_TYPE),
        (b"\x81\x00\x00", Reason.MALFORMED),  # an int map key
        (b"\x81\x90\x00", Reason.MALFORMED),  # a list map key
        (b"\x81\x80\x00", Reason.MALFORMED),  # a map map key
        (b"\x81\xc0\x00", Reason.MALFORMED),  # a nil map key
        (b"\xdd\xff\xff\xff\xff", Reason.MALFORMED),  # array32 claiming 4 G items
        (b"\xdf\xff\xff\xff\xff", Reason.MALFORMED),  # map32 claiming 4 G pairs
        (b"\xdb\xff\xff\xff\xff", Reason.MALFORMED),  # str32 claiming 4 GB
        (b"\xc6\xff\xff\xff\xff", Reason.MALFORMED),  # bin32 claiming 4 GB
        (b"\x91\xc6\xff\xff\xff\xffabc", Reason.MALFORMED),
        (b"\xd4\xff\x00", Reason.FORBIDDEN_TYPE),  # a timestamp of a bad length
        (b"\xca\x00\x00\x00\x00", Reason.FORBIDDEN_TYPE),
        (b"\xcb" + b"\x00" * 8, Reason.FORBIDDEN_TYPE),
        (b"\xc7\x00\x05", Reason.FORBIDDEN_TYPE),  # ext8 of length 0
    ],
)
def test_malformed_input_has_a_reason(written: bytes, reason: Reason) -> None:
    assert _reason(written) is reason


def test_size_limit_is_checked_before_decoding() -> None:
    data = canonical.pack(b"x" * 100)
    assert canonical.unpack(data, len(data)) == b"x" * 100
    with pytest.raises(RecordError) as caught:
        canonical.unpack(data, len(data) - 1)
    assert caught.value.reason is Reason.TOO_LARGE


def test_decode_alone_skips_only_the_canonical_check() -> None:
    written = encode(Wide(5, 2))
    assert canonical.decode(written, LIMIT) == 5
    with pytest.raises(RecordError) as caught:
        canonical.require_canonical(5, written)
    assert caught.value.reason is Reason.NON_CANONICAL
    canonical.require_canonical(5, b"\x05")
    with pytest.raises(RecordError) as caught:
        canonical.decode(b"\x05\x05", LIMIT)
    assert caught.value.reason is Reason.TRAILING_BYTES


# --- fuzz ------------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_record_error(data: bytes) -> None:
    _refused_or_canonical(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list(range(0x80, 0x100))) | st.integers(0, 255), max_size=60))
def test_header_heavy_bytes_raise_only_record_error(raw: list[int]) -> None:
    """Bytes drawn mostly from header codes reach deeper into the decoder than random bytes."""
    _refused_or_canonical(bytes(raw))


def _refused_or_canonical(data: bytes) -> None:
    """Only RecordError escapes, and what is accepted is its own canonical form."""
    try:
        value = canonical.unpack(data, LIMIT)
    except RecordError:
        return
    assert canonical.pack(value) == data
