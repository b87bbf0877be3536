"""Records: one canonical signed byte form per record; everything else refused with a reason.

The rejections tested here are signed correctly over the exact bytes (``signed_wire``), so each
test proves the named rule refuses them, not the signature check.
"""

from __future__ import annotations

import hashlib
import itertools
import pickle
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_sign_open

from p2pshare.protocol import canonical
from p2pshare.protocol import limits as L
from p2pshare.protocol.licences import ALL_RIGHTS_RESERVED, KNOWN_LICENCES
from p2pshare.protocol.reasons import Reason, RecordError
from p2pshare.protocol.records import (
    BODY_FIELDS,
    DOC,
    FOLLOW,
    KINDS,
    PROFILE,
    REC,
    REPOST,
    RETRACT,
    SIGNATURE_DOMAIN,
    SUBJECT_PEER,
    SUBJECT_RECORD,
    SUBJECT_URL,
    UNFOLLOW,
    Record,
    check_retract,
    create_record,
    decode_record,
    record_id,
    repost_chain,
    root_original,
    unsigned_bytes,
)
from tests.protocol.strategies import (
    CREATED,
    EXAMPLE_BODIES,
    KEYS,
    Ext,
    Float,
    Pairs,
    Raw,
    RecordInput,
    Wide,
    encode,
    example_original,
    fields_of,
    mutations,
    nodes,
    record_inputs,
    records,
    replace,
    signed_wire,
    signing_keys,
    wide_forms,
)

KEY = KEYS[0]
AUTHOR = bytes(KEY.verify_key)


_EXAMPLE: Any = object()


def _fields(base: str, body: Any = _EXAMPLE, /, **top: Any) -> list[Any]:
    """[version, kind, author, created_ms, community, body] for an example record of kind
    ``base``, with ``body`` and any top-level field (``kind=...`` too) replaced."""
    values = {
        "version": 1,
        "kind": base,
        "author": AUTHOR,
        "created_ms": CREATED,
        "community": "public",
        "body": dict(EXAMPLE_BODIES[base]) if body is _EXAMPLE else body,
    }
    values.update(top)
    return list(values.values())


def _body(kind: str, **changes: Any) -> dict[str, Any]:
    """The example body of ``kind`` with fields changed; a value of ``...`` removes the field."""
    body = dict(EXAMPLE_BODIES[kind])
    for name, value in changes.items():
        if value is ...:
            body.pop(name, None)
        else:
            body[name] = value
    return body


def _key_of(record: Record) -> Any:
    return next(key for key in KEYS if bytes(key.verify_key) == record.author)


def _refusal(wire: bytes, **kwargs: Any) -> Reason:
    with pytest.raises(RecordError) as caught:
        decode_record(wire, **kwargs)
    return caught.value.reason


def _signature_holds(wire: bytes) -> bool:
    """Whether the signature verifies over the bytes a decoder slices out (whatever else)."""
    value = msgpack.unpackb(wire, raw=False, strict_map_key=False)
    author, sig = value[2], value[6]
    try:
        crypto_sign_open(sig + SIGNATURE_DOMAIN + b"\x96" + wire[1:-66], author)
    except Exception:
        return False
    return True


# --- the wire form is the one in DESIGN.md ---------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(records())
def test_wire_id_and_signature_follow_the_spec(record: Record) -> None:
    """Rebuilt with plain msgpack and another Ed25519 library, not our code."""
    body = dict(sorted(record.body.items()))
    head = [1, record.kind, record.author, record.created_ms, record.community, body]
    unsigned = msgpack.packb(head, use_bin_type=True)
    assert record.wire == msgpack.packb([*head, record.sig], use_bin_type=True)
    assert record.id == hashlib.sha256(record.wire).digest() == record_id(record.wire)
    Ed25519PublicKey.from_public_bytes(record.author).verify(
        record.sig, b"p2pshare/record/v1\x00" + unsigned
    )
    assert (
        unsigned_bytes(record.kind, record.author, record.created_ms, record.community, record.body)
        == unsigned
    )


@settings(max_examples=200, deadline=None)
@given(record_inputs())
def test_encode_decode_encode_is_identical(item: RecordInput) -> None:
    record = item.make()
    again = decode_record(record.wire)
    assert again == record and again.wire == record.wire
    assert canonical.pack([*fields_of(again), again.sig]) == record.wire
    assert item.make().wire == record.wire  # signing is deterministic: one input, one id
    assert (record.kind, record.author, record.community) == (
        item.kind,
        bytes(item.key.verify_key),
        item.community,
    )
    assert dict(record.body) == item.body


def test_every_kind_is_covered_by_the_examples() -> None:
    assert set(EXAMPLE_BODIES) == set(KINDS) == set(BODY_FIELDS)
    for kind in KINDS:
        assert create_record(KEY, kind, EXAMPLE_BODIES[kind]).kind == kind


def test_body_keys_are_signed_in_sorted_order_whatever_the_input_order() -> None:
    body = EXAMPLE_BODIES[DOC]
    backwards = dict(reversed(list(body.items())))
    assert create_record(KEY, DOC, backwards, created_ms=CREATED) == create_record(
        KEY, DOC, body, created_ms=CREATED
    )


def test_decode_accepts_other_buffers_but_keeps_immutable_bytes() -> None:
    wire = create_record(KEY, PROFILE, EXAMPLE_BODIES[PROFILE]).wire
    buffer = bytearray(wire)
    record = decode_record(buffer)
    buffer[-1] ^= 1
    assert type(record.wire) is bytes and record.wire == wire
    assert decode_record(memoryview(wire)).wire == wire

    class Blob(bytes):
        pass

    assert type(decode_record(Blob(wire)).wire) is bytes
    assert _refusal("not bytes") is Reason.MALFORMED  # type: ignore[arg-type]


def test_record_error_survives_pickling() -> None:
    """Worker processes can send refusals back whole."""
    error = pickle.loads(pickle.dumps(RecordError(Reason.BAD_BODY, "title must be text")))
    assert isinstance(error, RecordError) and error.reason is Reason.BAD_BODY
    assert str(error) == "title must be text (bad-body)"


# --- any change to the bytes is refused ------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(records(), st.data())
def test_any_change_to_a_records_bytes_is_refused(record: Record, data: st.DataObject) -> None:
    mutated = data.draw(mutations(record.wire), label="mutated")
    with pytest.raises(RecordError):
        decode_record(mutated)


@settings(max_examples=300, deadline=None)
@given(records(), st.data())
def test_without_signature_checks_a_change_is_refused_or_is_another_canonical_record(
    record: Record, data: st.DataObject
) -> None:
    """Reading back from our own store skips signatures; the canonical rules still hold, and
    whatever decodes is exactly those bytes with their own id (never the original's)."""
    mutated = data.draw(mutations(record.wire), label="mutated")
    try:
        other = decode_record(mutated, verify=False)
    except RecordError:
        return
    assert other.wire == mutated and other.id == record_id(mutated) != record.id
    assert canonical.pack(canonical.unpack(mutated, L.MAX_RECORD_BYTES)) == mutated


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_record_error(data: bytes) -> None:
    for verify in (True, False):
        try:
            decode_record(data, verify=verify)
        except RecordError:
            continue
        raise AssertionError("random bytes decoded as a record")


_loose = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(),
        st.text(max_size=20),
        st.binary(max_size=40),
        st.sampled_from([*KINDS, "public", AUTHOR, b"\x00" * 64, 1, CREATED]),
    ),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=12) | st.binary(max_size=4), inner, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_loose, min_size=5, max_size=8), st.booleans())
def test_record_shaped_garbage_raises_only_record_error(items: list[Any], sign: bool) -> None:
    """Seven-ish items of any msgpack type, signed or not: closer to a record than random bytes."""
    wire = signed_wire(KEY, items[:6]) if sign else msgpack.packb(items, use_bin_type=True)
    with pytest.raises(RecordError):
        decode_record(wire)


# --- non-canonical encodings are refused -----------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(records(), st.data())
def test_a_wider_int_or_length_header_anywhere_is_refused(
    record: Record, data: st.DataObject
) -> None:
    fields = fields_of(record)
    candidates = [(p, n) for p, n in nodes(fields) if p and wide_forms(n)]
    path, node = data.draw(st.sampled_from(candidates), label="node")
    wide = data.draw(st.sampled_from(wide_forms(node)), label="form")
    wire = signed_wire(_key_of(record), replace(fields, path, wide))
    assert _signature_holds(wire)
    assert _refusal(wire) is Reason.NON_CANONICAL


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rating", Wide(5, 2)),  # 0xcd 0x00 0x05 for 5
        ("rating", Wide(5, 8)),  # uint64 for a small value
        ("rating", Wide(5, 1, signed=True)),
        ("text", Wide("Great.", 1)),
        ("subject", Wide("Rye flour", 2)),
    ],
)
def test_known_non_canonical_body_values_are_refused(field: str, value: Any) -> None:
    wire = signed_wire(KEY, _fields(REC, _body(REC, **{field: value})))
    assert _signature_holds(wire)
    assert _refusal(wire) is Reason.NON_CANONICAL


def test_a_wide_header_on_the_record_or_body_is_refused() -> None:
    sig = b"\x00" * 64
    fields = _fields(FOLLOW)
    assert _refusal(encode(Wide([*fields, sig], 2))) is Reason.NON_CANONICAL
    wire = signed_wire(KEY, _fields(FOLLOW, Wide(EXAMPLE_BODIES[FOLLOW], 2)))
    assert _signature_holds(wire) and _refusal(wire) is Reason.NON_CANONICAL


@settings(max_examples=100, deadline=None)
@given(records([PROFILE, DOC, REC, REPOST]).filter(lambda r: len(r.body) >= 2), st.randoms())
def test_unsorted_body_keys_are_refused(record: Record, rng: Any) -> None:
    pairs = list(record.body.items())
    while pairs == sorted(pairs):
        rng.shuffle(pairs)
    wire = signed_wire(KEY, _fields(REC, Pairs(tuple(pairs)), kind=record.kind))
    assert _signature_holds(wire)
    assert _refusal(wire) is Reason.NON_CANONICAL


@settings(max_examples=100, deadline=None)
@given(records(), st.data())
def test_duplicate_body_keys_are_refused(record: Record, data: st.DataObject) -> None:
    pairs = sorted(record.body.items())
    at = data.draw(st.integers(0, len(pairs) - 1))
    twice = (*pairs[: at + 1], pairs[at], *pairs[at + 1 :])
    wire = signed_wire(KEY, _fields(REC, Pairs(twice), kind=record.kind))
    assert msgpack.unpackb(wire, raw=False)[5] == record.body  # same meaning, other bytes
    assert _refusal(wire) is Reason.NON_CANONICAL


@settings(max_examples=200, deadline=None)
@given(records(), st.data(), st.floats(width=32), st.booleans())
def test_floats_anywhere_are_refused(
    record: Record, data: st.DataObject, number: float, single: bool
) -> None:
    fields = fields_of(record)
    path, _ = data.draw(st.sampled_from([(p, n) for p, n in nodes(fields) if p]))
    assume(not (isinstance(path[-1], tuple) and path[-1][0] == "key"))
    wire = signed_wire(KEY, replace(fields, path, Float(number, single)))
    assert _refusal(wire) is Reason.FORBIDDEN_TYPE


@pytest.mark.parametrize("single", [True, False], ids=["float32", "float64"])
@pytest.mark.parametrize("field", ["rating", "text", "subject", "subject_type"])
def test_a_float_in_place_of_a_body_value_is_refused(field: str, single: bool) -> None:
    wire = signed_wire(KEY, _fields(REC, _body(REC, **{field: Float(5.0, single)})))
    assert _signature_holds(wire)
    assert _refusal(wire) is Reason.FORBIDDEN_TYPE


@settings(max_examples=200, deadline=None)
@given(records(), st.data(), st.integers(-128, 127), st.binary(max_size=16))
def test_ext_types_anywhere_are_refused(
    record: Record, data: st.DataObject, code: int, payload: bytes
) -> None:
    fields = fields_of(record)
    path, _ = data.draw(st.sampled_from([(p, n) for p, n in nodes(fields) if p]))
    wire = signed_wire(KEY, replace(fields, path, Ext(code, payload)))
    assert _refusal(wire) is Reason.FORBIDDEN_TYPE


@settings(max_examples=100, deadline=None)
@given(records(), st.binary(min_size=1, max_size=16))
def test_trailing_bytes_are_refused(record: Record, extra: bytes) -> None:
    assert _refusal(record.wire + extra) is Reason.TRAILING_BYTES


@pytest.mark.parametrize(
    ("kind", "fields_change", "reason"),
    [
        ("kind as bin", {"kind": b"profile"}, Reason.BAD_KIND),
        ("community as bin", {"community": b"public"}, Reason.BAD_COMMUNITY),
        ("author as str", {"author": "a" * 32}, Reason.BAD_AUTHOR),
        ("version as str", {"version": "1"}, Reason.BAD_VERSION),
        ("created_ms as str", {"created_ms": str(CREATED)}, Reason.BAD_TIMESTAMP),
    ],
)
def test_str_and_bin_are_not_interchangeable_in_the_record(
    kind: str, fields_change: dict[str, Any], reason: Reason
) -> None:
    wire = signed_wire(KEY, _fields(PROFILE, **fields_change))
    assert _refusal(wire) is reason


def test_a_signature_sent_as_str_is_refused() -> None:
    wire = encode([*_fields(PROFILE), "s" * 64])
    assert _refusal(wire) is Reason.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("kind", "field", "value", "reason"),
    [
        (DOC, "title", b"Sourdough guide", Reason.BAD_BODY),
        (DOC, "licence", b"CC-BY-4.0", Reason.BAD_LICENCE),
        (DOC, "tags", [b"bread"], Reason.BAD_BODY),
        (DOC, "filename", b"sourdough.pdf", Reason.BAD_BODY),
        (DOC, "root", "1" * 32, Reason.BAD_BODY),
        (REC, "subject_type", b"thing", Reason.BAD_BODY),
        (REC, "subject", b"Rye flour", Reason.BAD_BODY),
        (REPOST, "original", "text, not bytes", Reason.BAD_BODY),
        (FOLLOW, "target", "2" * 32, Reason.BAD_BODY),
        (RETRACT, "target", "3" * 32, Reason.BAD_BODY),
        (PROFILE, "name", b"Bike shop", Reason.BAD_BODY),
    ],
)
def test_str_and_bin_are_not_interchangeable_in_bodies(
    kind: str, field: str, value: Any, reason: Reason
) -> None:
    wire = signed_wire(KEY, _fields(kind, _body(kind, **{field: value})))
    assert _refusal(wire) is reason


def test_rec_subjects_of_record_and_peer_type_must_be_bytes() -> None:
    for subject_type in (SUBJECT_RECORD, SUBJECT_PEER):
        body = _body(REC, subject_type=subject_type, subject="x" * 32)
        assert _refusal(signed_wire(KEY, _fields(REC, body))) is Reason.BAD_BODY


@pytest.mark.parametrize(
    "key", [Float(1.0), Float(1.0, single=True), 1, None, Raw(b"\x90")], ids=repr
)
def test_a_body_key_msgpack_itself_refuses_is_malformed(key: Any) -> None:
    body = Pairs(((key, "Bike shop"),))
    assert _refusal(signed_wire(KEY, _fields(PROFILE, body))) is Reason.MALFORMED


def test_a_bin_body_key_is_refused_as_a_forbidden_type() -> None:
    body = Pairs(((b"name", "Bike shop"),))
    assert _refusal(signed_wire(KEY, _fields(PROFILE, body))) is Reason.FORBIDDEN_TYPE


# --- nesting and huge headers never escape as other exceptions -------------------------------


_POSITIONS = [
    pytest.param(lambda raw: _fields(PROFILE, version=raw), id="version"),
    pytest.param(lambda raw: _fields(PROFILE, kind=raw), id="kind"),
    pytest.param(lambda raw: _fields(PROFILE, author=raw), id="author"),
    pytest.param(lambda raw: _fields(PROFILE, created_ms=raw), id="created_ms"),
    pytest.param(lambda raw: _fields(PROFILE, community=raw), id="community"),
    pytest.param(lambda raw: _fields(PROFILE, body=raw), id="body"),
    pytest.param(lambda raw: _fields(PROFILE, _body(PROFILE, name=raw)), id="name"),
    pytest.param(lambda raw: _fields(DOC, _body(DOC, tags=raw)), id="tags"),
    pytest.param(lambda raw: _fields(DOC, _body(DOC, tags=["a", raw])), id="tag"),
    pytest.param(lambda raw: _fields(REC, _body(REC, subject_type=raw)), id="subject_type"),
    pytest.param(lambda raw: _fields(DOC, _body(DOC, licence=raw)), id="licence"),
    pytest.param(lambda raw: [*_fields(PROFILE), raw], id="sig"),
]


@pytest.mark.parametrize("depth", [40, 999, 1024, 3000])
@pytest.mark.parametrize("place", _POSITIONS)
def test_deep_nesting_anywhere_is_malformed(place: Any, depth: int) -> None:
    nested = Raw(b"\x91" * depth + b"\x00")
    fields = place(nested)
    wire = encode(fields) if len(fields) == 7 else signed_wire(KEY, fields)
    assert _refusal(wire) is Reason.MALFORMED


@pytest.mark.parametrize("header", [b"\xdd", b"\xdf", b"\xdb", b"\xc6"])
@pytest.mark.parametrize("place", _POSITIONS)
def test_headers_claiming_huge_lengths_are_malformed(place: Any, header: bytes) -> None:
    fields = place(Raw(header + b"\xff\xff\xff\xff"))
    wire = encode(fields) if len(fields) == 7 else encode([*fields, b"\x00" * 64])
    assert _refusal(wire) is Reason.MALFORMED


# --- limits: every rule has its reason -------------------------------------------------------


def _case(base: str, reason: Reason, /, *, body: Any = _EXAMPLE, **top: Any) -> Any:
    return (_fields(base, body, **top), reason)


_REFUSALS = {
    "version 0": _case(PROFILE, Reason.BAD_VERSION, version=0),
    "version 2": _case(PROFILE, Reason.BAD_VERSION, version=2),
    "version true": _case(PROFILE, Reason.BAD_VERSION, version=True),
    "version -1": _case(PROFILE, Reason.BAD_VERSION, version=-1),
    "unknown kind": _case(PROFILE, Reason.BAD_KIND, kind="post"),
    "kind upper case": _case(PROFILE, Reason.BAD_KIND, kind="PROFILE"),
    "kind empty": _case(PROFILE, Reason.BAD_KIND, kind=""),
    "kind int": _case(PROFILE, Reason.BAD_KIND, kind=1),
    "author short": _case(PROFILE, Reason.BAD_AUTHOR, author=AUTHOR[:31]),
    "author long": _case(PROFILE, Reason.BAD_AUTHOR, author=AUTHOR + b"\x00"),
    "created negative": _case(PROFILE, Reason.BAD_TIMESTAMP, created_ms=-1),
    "created bool": _case(PROFILE, Reason.BAD_TIMESTAMP, created_ms=True),
    "created huge": _case(PROFILE, Reason.BAD_TIMESTAMP, created_ms=L.MAX_CREATED_MS + 1),
    "created nil": _case(PROFILE, Reason.BAD_TIMESTAMP, created_ms=None),
    "community upper": _case(PROFILE, Reason.BAD_COMMUNITY, community="Bikes"),
    "community dash first": _case(PROFILE, Reason.BAD_COMMUNITY, community="-bikes"),
    "community dash last": _case(PROFILE, Reason.BAD_COMMUNITY, community="bikes-"),
    "community space": _case(PROFILE, Reason.BAD_COMMUNITY, community="bike shop"),
    "community underscore": _case(PROFILE, Reason.BAD_COMMUNITY, community="bike_shop"),
    "community accent": _case(PROFILE, Reason.BAD_COMMUNITY, community="café"),
    "community empty": _case(PROFILE, Reason.BAD_COMMUNITY, community=""),
    "community long": _case(PROFILE, Reason.BAD_COMMUNITY, community="a" * 65),
    "community newline": _case(PROFILE, Reason.BAD_COMMUNITY, community="bikes\n"),
    "body a list": _case(PROFILE, Reason.BAD_BODY, body=[]),
    "body nil": _case(PROFILE, Reason.BAD_BODY, body=None),
    "profile name empty": _case(PROFILE, Reason.BAD_BODY, body=_body(PROFILE, name="")),
    "profile name blank": _case(PROFILE, Reason.BAD_BODY, body=_body(PROFILE, name="  \t")),
    "profile no name": _case(PROFILE, Reason.MISSING_FIELD, body=_body(PROFILE, name=...)),
    "title too long": _case(DOC, Reason.FIELD_TOO_LONG, body=_body(DOC, title="t" * 257)),
    "33 tags": _case(DOC, Reason.TOO_MANY_TAGS, body=_body(DOC, tags=["t"] * 33)),
    "rec 33 tags": _case(REC, Reason.TOO_MANY_TAGS, body=_body(REC, tags=["t"] * 33)),
    "empty tag": _case(DOC, Reason.BAD_BODY, body=_body(DOC, tags=[""])),
    "tags not a list": _case(DOC, Reason.BAD_BODY, body=_body(DOC, tags="bread")),
    "17 authors": _case(DOC, Reason.BAD_BODY, body=_body(DOC, authors=["a"] * 17)),
    "licence unknown": _case(DOC, Reason.BAD_LICENCE, body=_body(DOC, licence="GPL")),
    "licence lower case": _case(DOC, Reason.BAD_LICENCE, body=_body(DOC, licence="mit")),
    "licence padded": _case(DOC, Reason.BAD_LICENCE, body=_body(DOC, licence="MIT ")),
    "licence empty": _case(DOC, Reason.BAD_LICENCE, body=_body(DOC, licence="")),
    "licence int": _case(DOC, Reason.BAD_LICENCE, body=_body(DOC, licence=5)),
    "filename slash": _case(DOC, Reason.BAD_BODY, body=_body(DOC, filename="a/b.pdf")),
    "filename abs": _case(DOC, Reason.BAD_BODY, body=_body(DOC, filename="/etc/passwd")),
    "filename dotdot": _case(DOC, Reason.BAD_BODY, body=_body(DOC, filename="..")),
    "filename up": _case(DOC, Reason.BAD_BODY, body=_body(DOC, filename="../x.pdf")),
    "filename dot": _case(DOC, Reason.BAD_BODY, body=_body(DOC, filename=".")),
    "filename backslash": _case(DOC, Reason.BAD_BODY, body=_body(DOC, filename="a\\b.pdf")),
    "filename nul": _case(DOC, Reason.BAD_BODY, body=_body(DOC, filename="a\x00b")),
    "filename newline": _case(DOC, Reason.BAD_BODY, body=_body(DOC, filename="a\nb.pdf")),
    "filename escape": _case(DOC, Reason.BAD_BODY, body=_body(DOC, filename="\x1b[2Jx")),
    "filename del": _case(DOC, Reason.BAD_BODY, body=_body(DOC, filename="a\x7fb")),
    "filename empty": _case(DOC, Reason.BAD_BODY, body=_body(DOC, filename="")),
    "filename long": _case(DOC, Reason.FIELD_TOO_LONG, body=_body(DOC, filename="f" * 256)),
    "size negative": _case(DOC, Reason.BAD_BODY, body=_body(DOC, size=-1)),
    "size huge": _case(DOC, Reason.BAD_BODY, body=_body(DOC, size=L.MAX_DOC_SIZE + 1)),
    "size bool": _case(DOC, Reason.BAD_BODY, body=_body(DOC, size=False)),
    "root short": _case(DOC, Reason.BAD_BODY, body=_body(DOC, root=b"r" * 31)),
    "chunk odd": _case(DOC, Reason.BAD_BODY, body=_body(DOC, chunk_size=3 * 2**14)),
    "chunk small": _case(DOC, Reason.BAD_BODY, body=_body(DOC, chunk_size=L.MIN_CHUNK_SIZE // 2)),
    "chunk big": _case(DOC, Reason.BAD_BODY, body=_body(DOC, chunk_size=L.MAX_CHUNK_SIZE * 2)),
    "mime blank": _case(DOC, Reason.BAD_BODY, body=_body(DOC, mime=" ")),
    "rating 0": _case(REC, Reason.BAD_BODY, body=_body(REC, rating=0)),
    "rating 6": _case(REC, Reason.BAD_BODY, body=_body(REC, rating=6)),
    "rating bool": _case(REC, Reason.BAD_BODY, body=_body(REC, rating=True)),
    "rating str": _case(REC, Reason.BAD_BODY, body=_body(REC, rating="5")),
    "rating -1": _case(REC, Reason.BAD_BODY, body=_body(REC, rating=-1)),
    "subject type": _case(REC, Reason.BAD_BODY, body=_body(REC, subject_type="book")),
    "subject url scheme": _case(
        REC, Reason.BAD_BODY, body=_body(REC, subject_type=SUBJECT_URL, subject="ftp://x")
    ),
    "subject peer short": _case(
        REC, Reason.BAD_BODY, body=_body(REC, subject_type=SUBJECT_PEER, subject=b"k" * 31)
    ),
    "subject thing blank": _case(REC, Reason.BAD_BODY, body=_body(REC, subject=" ")),
    "rec no text": _case(REC, Reason.MISSING_FIELD, body=_body(REC, text=...)),
    "rec text int": _case(REC, Reason.BAD_BODY, body=_body(REC, text=1)),
    "follow short": _case(FOLLOW, Reason.BAD_BODY, body={"target": b"t" * 31}),
    "unfollow long": _case(UNFOLLOW, Reason.BAD_BODY, body={"target": b"t" * 33}),
    "retract empty": _case(RETRACT, Reason.BAD_BODY, body={"target": b""}),
    "original not a record": _case(REPOST, Reason.BAD_REPOST, body={"original": b"\x93\x01"}),
    "original empty": _case(REPOST, Reason.BAD_REPOST, body={"original": b""}),
    "note int": _case(REPOST, Reason.BAD_BODY, body=_body(REPOST, note=7)),
}


@pytest.mark.parametrize(("fields", "reason"), list(_REFUSALS.values()), ids=list(_REFUSALS))
def test_each_rule_refuses_with_its_reason(fields: list[Any], reason: Reason) -> None:
    assert _refusal(signed_wire(KEY, fields)) is reason


@pytest.mark.parametrize("kind", KINDS)
def test_an_unknown_field_is_refused(kind: str) -> None:
    wire = signed_wire(KEY, _fields(kind, _body(kind, zzz_extra="x")))
    assert _refusal(wire) is Reason.UNKNOWN_FIELD
    wire = signed_wire(KEY, _fields(kind, _body(kind, Title="x")))  # field names are exact
    assert _refusal(wire) is Reason.UNKNOWN_FIELD


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        (kind, name)
        for kind, fields in BODY_FIELDS.items()
        for name, (_, req) in fields.items()
        if req
    ],
)
def test_a_missing_required_field_is_refused(kind: str, field: str) -> None:
    body = _body(kind, **{field: ...})
    if kind == REC and field == "subject_type":
        body["subject"] = "Rye flour"
    assert _refusal(signed_wire(KEY, _fields(kind, body))) is Reason.MISSING_FIELD


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        (k, name)
        for k, fields in BODY_FIELDS.items()
        for name, (_, req) in fields.items()
        if not req
    ],
)
def test_optional_fields_may_be_left_out(kind: str, field: str) -> None:
    assert field in EXAMPLE_BODIES[kind]  # the example carries it, so leaving it out is a change
    record = create_record(KEY, kind, _body(kind, **{field: ...}))
    assert field not in record.body


def _too_long(limit: int) -> list[tuple[int, bool]]:
    return [(limit, True), (limit + 1, False)]


# (kind, body with "{}" where the text goes, limit)
_TEXT_LIMITS = [
    (PROFILE, "name", L.MAX_NAME_CHARS),
    (PROFILE, "about", L.MAX_ABOUT_CHARS),
    (PROFILE, "website", L.MAX_URL_CHARS),
    (PROFILE, "location", L.MAX_LOCATION_CHARS),
    (DOC, "title", L.MAX_TITLE_CHARS),
    (DOC, "description", L.MAX_DESCRIPTION_CHARS),
    (DOC, "mime", L.MAX_MIME_CHARS),
    (DOC, "filename", L.MAX_FILENAME_CHARS),
    (DOC, "tags", L.MAX_TAG_CHARS),
    (DOC, "authors", L.MAX_AUTHOR_CHARS),
    (REC, "text", L.MAX_REC_TEXT_CHARS),
    (REC, "subject", L.MAX_SUBJECT_TEXT_CHARS),
    (REC, "tags", L.MAX_TAG_CHARS),
    (REPOST, "note", L.MAX_NOTE_CHARS),
]


@pytest.mark.parametrize("char", ["x", "𝄞"], ids=["ascii", "4-byte"])
@pytest.mark.parametrize(("kind", "field", "limit"), _TEXT_LIMITS)
def test_text_limits_count_characters_and_hold_exactly(
    kind: str, field: str, limit: int, char: str
) -> None:
    for length, ok in _too_long(limit):
        value: Any = char * length
        if field in ("tags", "authors"):
            value = [value]
        wire = signed_wire(KEY, _fields(kind, _body(kind, **{field: value})))
        if ok:
            assert decode_record(wire).body[field] == value
        else:
            assert _refusal(wire) is Reason.FIELD_TOO_LONG


def test_url_subject_limit_holds_exactly() -> None:
    for length, ok in _too_long(L.MAX_URL_CHARS):
        url = "https://" + "u" * (length - len("https://"))
        wire = signed_wire(KEY, _fields(REC, _body(REC, subject_type=SUBJECT_URL, subject=url)))
        if ok:
            assert decode_record(wire).body["subject"] == url
        else:
            assert _refusal(wire) is Reason.FIELD_TOO_LONG


@pytest.mark.parametrize(
    ("field", "limit", "reason"),
    [("tags", L.MAX_TAGS, Reason.TOO_MANY_TAGS), ("authors", L.MAX_AUTHORS, Reason.BAD_BODY)],
)
def test_list_limits_hold_exactly(field: str, limit: int, reason: Reason) -> None:
    ok = signed_wire(KEY, _fields(DOC, _body(DOC, **{field: ["a"] * limit})))
    assert len(decode_record(ok).body[field]) == limit
    over = signed_wire(KEY, _fields(DOC, _body(DOC, **{field: ["a"] * (limit + 1)})))
    assert _refusal(over) is reason


@pytest.mark.parametrize(
    ("field", "good", "bad"),
    [
        ("rating", [1, 5], [0, 6]),
        ("size", [0, L.MAX_DOC_SIZE], [-1, L.MAX_DOC_SIZE + 1]),
        ("chunk_size", [L.MIN_CHUNK_SIZE, L.MAX_CHUNK_SIZE], [L.MIN_CHUNK_SIZE - 1]),
    ],
)
def test_int_ranges_hold_exactly(field: str, good: list[int], bad: list[int]) -> None:
    kind = REC if field == "rating" else DOC
    for value in good:
        assert decode_record(signed_wire(KEY, _fields(kind, _body(kind, **{field: value}))))
    for value in bad:
        wire = signed_wire(KEY, _fields(kind, _body(kind, **{field: value})))
        assert _refusal(wire) is Reason.BAD_BODY


@pytest.mark.parametrize("created", [0, L.MAX_CREATED_MS])
def test_timestamp_range_ends_are_accepted(created: int) -> None:
    assert create_record(KEY, PROFILE, EXAMPLE_BODIES[PROFILE], created_ms=created)


@pytest.mark.parametrize("community", ["public", "a", "0", "bike-repair", "a" * 64, "a--b"])
def test_community_slugs_are_accepted(community: str) -> None:
    record = create_record(KEY, PROFILE, EXAMPLE_BODIES[PROFILE], community=community)
    assert record.community == community


@pytest.mark.parametrize("licence", sorted(KNOWN_LICENCES))
def test_every_known_licence_is_accepted_in_its_own_spelling(licence: str) -> None:
    assert create_record(KEY, DOC, _body(DOC, licence=licence)).body["licence"] == licence


def test_a_short_signature_is_refused() -> None:
    wire = encode([*_fields(PROFILE), b"s" * 63])
    assert _refusal(wire) is Reason.BAD_SIGNATURE


def test_a_signature_by_another_key_is_refused() -> None:
    fields = _fields(PROFILE, author=bytes(KEYS[1].verify_key))
    assert _refusal(signed_wire(KEY, fields)) is Reason.BAD_SIGNATURE
    assert decode_record(signed_wire(KEY, fields), verify=False).author == fields[2]


def test_a_record_is_a_list_of_seven() -> None:
    sig = b"\x00" * 64
    for value in ([*_fields(PROFILE)], [*_fields(PROFILE), sig, sig], {"a": 1}, 1, "x", None):
        assert _refusal(encode(value)) is Reason.MALFORMED


# --- time and size ---------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    signing_keys,
    st.integers(0, L.MAX_CREATED_MS),
    st.integers(-(10**9), 10**9)
    | st.sampled_from([L.MAX_FUTURE_SKEW_MS, L.MAX_FUTURE_SKEW_MS + 1]),
)
def test_records_from_more_than_ten_minutes_ahead_are_refused_when_now_is_given(
    key: Any, now: int, skew: int
) -> None:
    created = min(max(0, now + skew), L.MAX_CREATED_MS)
    record = create_record(key, PROFILE, EXAMPLE_BODIES[PROFILE], created_ms=created)
    assert decode_record(record.wire) == record  # no clock, no clock check (our own store)
    if created - now > L.MAX_FUTURE_SKEW_MS:
        assert _refusal(record.wire, now=now) is Reason.FROM_FUTURE
    else:
        assert decode_record(record.wire, now=now) == record


def test_future_limit_is_exactly_ten_minutes() -> None:
    assert L.MAX_FUTURE_SKEW_MS == 10 * 60 * 1000
    now = CREATED
    edge = create_record(KEY, PROFILE, EXAMPLE_BODIES[PROFILE], created_ms=now + 600_000)
    assert decode_record(edge.wire, now=now) == edge
    over = create_record(KEY, PROFILE, EXAMPLE_BODIES[PROFILE], created_ms=now + 600_001)
    assert _refusal(over.wire, now=now) is Reason.FROM_FUTURE


def test_a_repost_of_a_record_from_the_future_is_refused_when_now_is_given() -> None:
    original = create_record(KEY, PROFILE, EXAMPLE_BODIES[PROFILE], created_ms=CREATED + 10**9)
    repost = create_record(KEY, REPOST, {"original": original.wire}, created_ms=CREATED)
    assert _refusal(repost.wire, now=CREATED) is Reason.BAD_REPOST


def _big_doc() -> Record:
    body = _body(
        DOC,
        title="𝄞" * L.MAX_TITLE_CHARS,
        mime="𝄞" * L.MAX_MIME_CHARS,
        filename="𝄞" * L.MAX_FILENAME_CHARS,
        description="𝄞" * L.MAX_DESCRIPTION_CHARS,
        authors=["𝄞" * L.MAX_AUTHOR_CHARS] * L.MAX_AUTHORS,
        tags=["𝄞" * L.MAX_TAG_CHARS] * L.MAX_TAGS,
    )
    return create_record(KEY, DOC, body, created_ms=CREATED)


def _sized_repost(size: int) -> bytes:
    """A correctly signed repost-of-a-repost of a big document, exactly ``size`` bytes long."""
    inner = create_record(
        KEY, REPOST, {"original": _big_doc().wire, "note": "𝄞" * L.MAX_NOTE_CHARS}
    )
    empty = len(signed_wire(KEY, _fields(REPOST, {"original": inner.wire, "note": ""})))
    note_bytes = size - empty - 2  # a note of 256+ bytes has a 3-byte header instead of 1
    note = "𝄞" * (note_bytes // 4) + "x" * (note_bytes % 4)
    wire = signed_wire(KEY, _fields(REPOST, {"original": inner.wire, "note": note}))
    assert len(wire) == size and len(note) <= L.MAX_NOTE_CHARS
    return wire


def test_the_wire_limit_holds_exactly() -> None:
    assert L.MAX_RECORD_BYTES == 64 * 1024
    fits = _sized_repost(L.MAX_RECORD_BYTES)
    assert len(decode_record(fits).wire) == L.MAX_RECORD_BYTES
    too_big = _sized_repost(L.MAX_RECORD_BYTES + 1)
    assert _signature_holds(too_big)
    assert _refusal(too_big) is Reason.TOO_LARGE
    assert _refusal(too_big, verify=False) is Reason.TOO_LARGE


def test_oversize_input_is_refused_before_it_is_decoded() -> None:
    assert _refusal(b"\xc6" + b"\xff" * (L.MAX_RECORD_BYTES + 10)) is Reason.TOO_LARGE


# --- reposts ---------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(records([REPOST], repost_depth=3))
def test_a_repost_embeds_the_original_verified_and_credits_the_chain(record: Record) -> None:
    chain = repost_chain(record)
    assert chain[0] is record and 2 <= len(chain) <= 4
    for outer, inner in itertools.pairwise(chain):
        assert outer.kind == REPOST and outer.body["original"] == inner.wire
        assert inner == decode_record(inner.wire)
    assert root_original(record) is chain[-1] and chain[-1].kind != REPOST


def test_repost_of_repost_gives_the_chain_outermost_first() -> None:
    doc = example_original()
    first = create_record(KEYS[2], REPOST, {"original": doc.wire, "note": "good"})
    second = create_record(KEYS[3], REPOST, {"original": first.wire})
    assert [r.id for r in repost_chain(second)] == [second.id, first.id, doc.id]
    assert [r.author for r in repost_chain(second)] == [
        bytes(KEYS[3].verify_key),
        bytes(KEYS[2].verify_key),
        doc.author,
    ]
    assert root_original(second) == doc and root_original(doc) is doc
    assert repost_chain(doc) == [doc]


@settings(max_examples=150, deadline=None)
@given(records([REPOST], repost_depth=2), st.data())
def test_a_repost_whose_embedded_original_was_changed_is_refused(
    record: Record, data: st.DataObject
) -> None:
    """The reposter signs the changed bytes; the embedded original must still verify itself."""
    tampered = data.draw(mutations(record.body["original"]), label="tampered original")
    body = {**record.body, "original": tampered}
    wire = signed_wire(KEY, _fields(REPOST, body))
    assert _signature_holds(wire)
    assert _refusal(wire) is Reason.BAD_REPOST


def test_a_repost_of_an_original_with_a_forged_signature_is_refused() -> None:
    doc = example_original()
    forged = signed_wire(KEYS[2], fields_of(doc))  # the doc's fields, signed by someone else
    assert _refusal(forged) is Reason.BAD_SIGNATURE
    wire = signed_wire(KEY, _fields(REPOST, {"original": forged}))
    assert _refusal(wire) is Reason.BAD_REPOST


def _all_rights_reserved_doc() -> Record:
    return create_record(KEYS[1], DOC, _body(DOC, licence=ALL_RIGHTS_RESERVED))


def test_a_repost_of_an_all_rights_reserved_document_is_refused() -> None:
    doc = _all_rights_reserved_doc()
    with pytest.raises(RecordError) as caught:
        create_record(KEY, REPOST, {"original": doc.wire})
    assert caught.value.reason is Reason.LICENCE_FORBIDS
    wire = signed_wire(KEY, _fields(REPOST, {"original": doc.wire}))
    assert _refusal(wire) is Reason.LICENCE_FORBIDS
    assert _refusal(wire, verify=False) is Reason.LICENCE_FORBIDS


def test_reposting_a_repost_of_an_all_rights_reserved_document_is_refused_for_the_licence() -> None:
    inner = signed_wire(KEYS[2], _fields(REPOST, {"original": _all_rights_reserved_doc().wire}))
    wire = signed_wire(KEY, _fields(REPOST, {"original": inner}))
    assert _refusal(wire) is Reason.LICENCE_FORBIDS


@pytest.mark.parametrize("kind", [FOLLOW, UNFOLLOW, RETRACT])
def test_follows_unfollows_and_retracts_cannot_be_reposted(kind: str) -> None:
    original = create_record(KEYS[1], kind, EXAMPLE_BODIES[kind])
    wire = signed_wire(KEY, _fields(REPOST, {"original": original.wire}))
    assert _refusal(wire) is Reason.BAD_REPOST


def test_reposts_nest_at_most_max_repost_depth_deep() -> None:
    record = example_original()
    for _ in range(L.MAX_REPOST_DEPTH):
        record = create_record(KEY, REPOST, {"original": record.wire})
    assert len(repost_chain(decode_record(record.wire))) == L.MAX_REPOST_DEPTH + 1
    too_deep = signed_wire(KEY, _fields(REPOST, {"original": record.wire}))
    assert _refusal(too_deep) is Reason.BAD_REPOST
    assert _refusal(too_deep, verify=False) is Reason.BAD_REPOST


def test_a_hand_made_60_level_repost_chain_is_refused() -> None:
    """Signed correctly at every level; refused for its depth, not for anything else."""
    wire = example_original().wire
    for _ in range(60):
        wire = signed_wire(KEY, _fields(REPOST, {"original": wire}))
    assert _refusal(wire) is Reason.BAD_REPOST


# --- retracts --------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(records([PROFILE, DOC, REC, REPOST, FOLLOW], repost_depth=1), signing_keys)
def test_only_the_targets_author_can_retract_it(target: Record, key: Any) -> None:
    retract = create_record(key, RETRACT, {"target": target.id})
    if bytes(key.verify_key) == target.author:
        check_retract(retract, target)
    else:
        with pytest.raises(RecordError) as caught:
            check_retract(retract, target)
        assert caught.value.reason is Reason.NOT_AUTHOR


def test_a_retract_applies_only_to_the_record_it_names() -> None:
    target = create_record(KEY, PROFILE, EXAMPLE_BODIES[PROFILE])
    other = create_record(KEY, PROFILE, _body(PROFILE, name="Other"))
    retract = create_record(KEY, RETRACT, {"target": other.id})
    with pytest.raises(RecordError) as caught:
        check_retract(retract, target)
    assert caught.value.reason is Reason.BAD_BODY
    with pytest.raises(RecordError) as caught:
        check_retract(other, target)  # not a retract at all
    assert caught.value.reason is Reason.BAD_BODY
    check_retract(retract, other)
