"""Hypothesis strategies for valid records of every kind, and a msgpack writer for invalid ones.

Reusable by any test that needs records: ``record_inputs()`` gives what ``create_record`` takes
(so a test can sign again), ``records()`` signed records, ``bodies(kind)`` valid bodies.
``EXAMPLE_BODIES`` holds one fixed valid body per kind for table tests. ``signed_wire`` signs
arbitrary (even invalid) fields so a test can prove a rejection is for the field, not the
signature; ``encode`` writes msgpack with deliberately non-canonical parts (``Wide``, ``Pairs``,
``Float``, ``Ext``, ``Raw``) for the canonical-form tests.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack
from hypothesis import strategies as st
from nacl.signing import SigningKey

from p2pshare.protocol import canonical
from p2pshare.protocol import limits as L
from p2pshare.protocol.licences import KNOWN_LICENCES, allows_redistribution
from p2pshare.protocol.records import (
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
    SUBJECT_THING,
    SUBJECT_URL,
    UNFOLLOW,
    Record,
    create_record,
)

# A few fixed keys: signing is cheap, key generation from seeds is deterministic and shrinks well.
KEYS = tuple(SigningKey(bytes([i + 1]) * 32) for i in range(4))
CREATED = 1_700_000_000_000
REDISTRIBUTABLE = sorted(lic for lic in KNOWN_LICENCES if allows_redistribution(lic))

# --- text ------------------------------------------------------------------------------------

_CHARS = st.characters(codec="utf-8")  # any code point UTF-8 can encode (no lone surrogates)


def text(max_chars: int, *, nonempty: bool = False) -> st.SearchStrategy[str]:
    """Text within a limit: mostly short, sometimes exactly at the limit (often 4-byte chars)."""
    short = st.text(_CHARS, min_size=1 if nonempty else 0, max_size=min(max_chars, 40))
    full = st.sampled_from(["x", "é", "€", "𝄞"]).map(lambda c: c * max_chars)
    strategy = st.one_of(short, short, short, full)
    return strategy.filter(lambda t: bool(t.strip())) if nonempty else strategy


def tag_lists(max_items: int = L.MAX_TAGS, max_chars: int = L.MAX_TAG_CHARS) -> Any:
    return st.lists(text(max_chars, nonempty=True), max_size=max_items)


_FILENAME_CHARS = st.characters(
    codec="utf-8",
    exclude_categories=("Cc",),  # type: ignore[arg-type]
    exclude_characters="/\\\x7f",
)
filenames = st.text(_FILENAME_CHARS, min_size=1, max_size=60).filter(
    lambda t: bool(t.strip()) and t not in (".", "..")
)
communities = st.one_of(
    st.just("public"),
    st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?\Z"),
    st.just("a" * L.MAX_COMMUNITY_CHARS),
)
keys32 = st.binary(min_size=32, max_size=32)
signing_keys = st.sampled_from(KEYS)
timestamps = st.integers(0, L.MAX_CREATED_MS)

# --- bodies ----------------------------------------------------------------------------------


def profile_bodies() -> Any:
    return st.fixed_dictionaries(
        {"name": text(L.MAX_NAME_CHARS, nonempty=True)},
        optional={
            "about": text(L.MAX_ABOUT_CHARS),
            "website": text(L.MAX_URL_CHARS),
            "location": text(L.MAX_LOCATION_CHARS),
        },
    )


def doc_bodies(licences: Sequence[str] = sorted(KNOWN_LICENCES)) -> Any:
    return st.fixed_dictionaries(
        {
            "title": text(L.MAX_TITLE_CHARS, nonempty=True),
            "licence": st.sampled_from(licences),
            "mime": text(L.MAX_MIME_CHARS, nonempty=True),
            "filename": filenames,
            "size": st.integers(0, L.MAX_DOC_SIZE),
            "root": keys32,
            "chunk_size": st.sampled_from(
                [2**n for n in range(14, 23) if L.MIN_CHUNK_SIZE <= 2**n <= L.MAX_CHUNK_SIZE]
            ),
        },
        optional={
            "authors": tag_lists(L.MAX_AUTHORS, L.MAX_AUTHOR_CHARS),
            "description": text(L.MAX_DESCRIPTION_CHARS),
            "tags": tag_lists(),
        },
    )


def _subjects() -> Any:
    return st.one_of(
        st.tuples(st.sampled_from([SUBJECT_RECORD, SUBJECT_PEER]), keys32),
        st.tuples(
            st.just(SUBJECT_URL),
            st.tuples(st.sampled_from(["http://", "https://"]), text(40)).map("".join),
        ),
        st.tuples(st.just(SUBJECT_THING), text(L.MAX_SUBJECT_TEXT_CHARS, nonempty=True)),
    )


def rec_bodies() -> Any:
    def build(subject: tuple[str, Any], rest: dict[str, Any]) -> dict[str, Any]:
        return {"subject_type": subject[0], "subject": subject[1], **rest}

    rest = st.fixed_dictionaries(
        {"text": text(L.MAX_REC_TEXT_CHARS)},
        optional={"rating": st.integers(1, 5), "tags": tag_lists()},
    )
    return st.builds(build, _subjects(), rest)


def target_bodies() -> Any:
    return st.fixed_dictionaries({"target": keys32})


def repost_bodies(max_depth: int = 2) -> Any:
    """Reposts of anything repostable, themselves reposts up to ``max_depth`` levels."""
    return (
        repostable_records(max_depth - 1)
        .flatmap(
            lambda original: st.fixed_dictionaries(
                {"original": st.just(original.wire)}, optional={"note": text(L.MAX_NOTE_CHARS)}
            )
        )
        .filter(lambda body: body_fits(REPOST, body))
    )


def bodies(kind: str, *, repost_depth: int = 2) -> Any:
    """Valid bodies of ``kind``."""
    if kind == PROFILE:
        return profile_bodies()
    if kind == DOC:
        return doc_bodies()
    if kind == REC:
        return rec_bodies()
    if kind == REPOST:
        return repost_bodies(repost_depth)
    return target_bodies()


# --- records ---------------------------------------------------------------------------------


class RecordInput(NamedTuple):
    """What ``create_record`` takes; ``make()`` signs it (Ed25519 is deterministic)."""

    key: SigningKey
    kind: str
    body: dict[str, Any]
    community: str
    created_ms: int

    def make(self) -> Record:
        return create_record(
            self.key, self.kind, self.body, community=self.community, created_ms=self.created_ms
        )


def _fits(item: RecordInput) -> bool:
    return body_fits(item.kind, item.body, item.community, item.created_ms)


def body_fits(kind: str, body: dict[str, Any], community: str = "public", created: int = 0) -> bool:
    """Maximal fields can add up past the wire limit (reposts of big docs); those are invalid."""
    wire = canonical.pack([1, kind, bytes(32), created, community, body, bytes(64)])
    return len(wire) <= L.MAX_RECORD_BYTES


def record_inputs(kinds: Sequence[str] = KINDS, *, repost_depth: int = 2) -> Any:
    kind_strategy = st.sampled_from(list(kinds))
    return kind_strategy.flatmap(
        lambda kind: st.builds(
            RecordInput,
            signing_keys,
            st.just(kind),
            bodies(kind, repost_depth=repost_depth),
            communities,
            timestamps,
        )
    ).filter(_fits)


def records(kinds: Sequence[str] = KINDS, *, repost_depth: int = 2) -> Any:
    """Valid signed records of the given kinds (reposts nest up to ``repost_depth``)."""
    return record_inputs(kinds, repost_depth=repost_depth).map(lambda item: item.make())


def repostable_records(max_depth: int) -> Any:
    """Records a repost may embed: profiles, recs, redistributable docs, shallower reposts."""
    plain = st.one_of(
        st.builds(_plain, st.just(PROFILE), profile_bodies()),
        st.builds(_plain, st.just(REC), rec_bodies()),
        st.builds(_plain, st.just(DOC), doc_bodies(REDISTRIBUTABLE)),
    )
    if max_depth <= 0:
        return plain
    return st.one_of(plain, repost_bodies(max_depth).map(lambda b: _plain(REPOST, b)))


def _plain(kind: str, body: dict[str, Any]) -> Record:
    return create_record(KEYS[-1], kind, body, created_ms=CREATED)


# --- one fixed valid body per kind, for table tests ------------------------------------------

EXAMPLE_DOC_BODY: dict[str, Any] = {
    "title": "Sourdough guide",
    "authors": ["The Bakery"],
    "description": "How we bake.",
    "tags": ["bread"],
    "licence": "CC-BY-4.0",
    "mime": "application/pdf",
    "filename": "sourdough.pdf",
    "size": 123_456,
    "root": b"\x11" * 32,
    "chunk_size": L.CHUNK_SIZE,
}


def example_original() -> Record:
    return create_record(KEYS[1], DOC, EXAMPLE_DOC_BODY, created_ms=CREATED)


EXAMPLE_BODIES: dict[str, dict[str, Any]] = {
    PROFILE: {
        "name": "Bike shop",
        "about": "We fix bikes.",
        "website": "https://bikes.example",
        "location": "Market Street 3",
    },
    DOC: EXAMPLE_DOC_BODY,
    REC: {
        "subject_type": SUBJECT_THING,
        "subject": "Rye flour",
        "rating": 5,
        "text": "Great.",
        "tags": ["flour"],
    },
    REPOST: {"original": example_original().wire, "note": "worth a read"},
    FOLLOW: {"target": b"\x22" * 32},
    UNFOLLOW: {"target": b"\x22" * 32},
    RETRACT: {"target": b"\x33" * 32},
}


# --- signing arbitrary fields ----------------------------------------------------------------


def signed_wire(
    key: SigningKey,
    fields: Sequence[Any],
    *,
    encoder: Callable[[Any], bytes] | None = None,
) -> bytes:
    """Wire bytes for ``[*fields, sig]`` with a signature that verifies over the exact bytes.

    ``fields`` = [version, kind, author, created_ms, community, body], any values at all; the
    signature covers ``SIGNATURE_DOMAIN + encode(fields)`` as a decoder slices it from the wire,
    so whatever refuses the result, it is not the signature.
    """
    write = encoder or encode
    unsigned = write(list(fields))
    sig = key.sign(SIGNATURE_DOMAIN + unsigned).signature
    return write([*fields, sig])


def fields_of(record: Record) -> list[Any]:
    return [1, record.kind, record.author, record.created_ms, record.community, dict(record.body)]


# --- a msgpack writer that can be wrong on purpose -------------------------------------------


@dataclass(frozen=True)
class Wide:
    """An int, str, bytes, list or dict written with a ``width``-byte int/length field."""

    value: Any
    width: int
    signed: bool = False  # ints: use the int8..int64 family even for non-negative values


@dataclass(frozen=True)
class Pairs:
    """A map written with exactly these pairs in this order (unsorted, or repeating a key)."""

    pairs: tuple[tuple[Any, Any], ...]


@dataclass(frozen=True)
class Float:
    value: float
    single: bool = False


@dataclass(frozen=True)
class Ext:
    code: int
    data: bytes


@dataclass(frozen=True)
class Raw:
    """Bytes written as they are (e.g. a hand-made header)."""

    data: bytes


_UINT = {1: (0xCC, ">B"), 2: (0xCD, ">H"), 4: (0xCE, ">I"), 8: (0xCF, ">Q")}
_SINT = {1: (0xD0, ">b"), 2: (0xD1, ">h"), 4: (0xD2, ">i"), 8: (0xD3, ">q")}
_STR = {1: (0xD9, ">B"), 2: (0xDA, ">H"), 4: (0xDB, ">I")}
_BIN = {1: (0xC4, ">B"), 2: (0xC5, ">H"), 4: (0xC6, ">I")}
_ARRAY = {2: (0xDC, ">H"), 4: (0xDD, ">I")}
_MAP = {2: (0xDE, ">H"), 4: (0xDF, ">I")}


def encode(value: Any) -> bytes:
    """msgpack for ``value``: canonical, except where a wrapper above says otherwise."""
    if isinstance(value, Raw):
        return value.data
    if isinstance(value, Wide):
        return _wide(value)
    if isinstance(value, Pairs):
        return _map_header(len(value.pairs)) + _pairs(value.pairs)
    if isinstance(value, Float):
        if value.single:
            return b"\xca" + struct.pack(">f", value.value)
        return b"\xcb" + struct.pack(">d", value.value)
    if isinstance(value, Ext):
        return _ext(value)
    if isinstance(value, list | tuple):
        return _array_header(len(value)) + b"".join(encode(item) for item in value)
    if isinstance(value, dict):
        ordered = sorted(value.items(), key=lambda kv: _key_bytes(kv[0]))
        return _map_header(len(value)) + _pairs(tuple(ordered))
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _ext(ext: Ext) -> bytes:
    n, code = len(ext.data), struct.pack(">b", ext.code)
    fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
    if n in fixed:
        return bytes([fixed[n]]) + code + ext.data
    if n < 2**8:
        return b"\xc7" + struct.pack(">B", n) + code + ext.data
    if n < 2**16:
        return b"\xc8" + struct.pack(">H", n) + code + ext.data
    return b"\xc9" + struct.pack(">I", n) + code + ext.data


def _key_bytes(key: Any) -> bytes:
    return key.encode() if isinstance(key, str) else encode(key)


def _pairs(pairs: tuple[tuple[Any, Any], ...]) -> bytes:
    return b"".join(encode(k) + encode(v) for k, v in pairs)


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 2**16:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


def _map_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x80 | n])
    if n < 2**16:
        return b"\xde" + struct.pack(">H", n)
    return b"\xdf" + struct.pack(">I", n)


def _wide(wide: Wide) -> bytes:
    value, width = wide.value, wide.width
    if isinstance(value, bool):
        raise TypeError("bools have no wide form")
    if isinstance(value, int):
        code, fmt = (_SINT if wide.signed or value < 0 else _UINT)[width]
        return bytes([code]) + struct.pack(fmt, value)
    if isinstance(value, str):
        data = value.encode()
        code, fmt = _STR[width]
        return bytes([code]) + struct.pack(fmt, len(data)) + data
    if isinstance(value, bytes):
        code, fmt = _BIN[width]
        return bytes([code]) + struct.pack(fmt, len(value)) + value
    if isinstance(value, list):
        code, fmt = _ARRAY[width]
        return bytes([code]) + struct.pack(fmt, len(value)) + b"".join(encode(v) for v in value)
    if isinstance(value, dict):
        code, fmt = _MAP[width]
        ordered = tuple(sorted(value.items()))
        return bytes([code]) + struct.pack(fmt, len(value)) + _pairs(ordered)
    raise TypeError(f"no wide form for {type(value).__name__}")


def wide_forms(value: Any) -> list[Wide]:
    """Every wider-than-needed spelling of ``value`` (empty for None and bools)."""
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, int):
        candidates = [Wide(value, w) for w in (1, 2, 4, 8)] + [
            Wide(value, w, signed=True) for w in (1, 2, 4, 8)
        ]
    elif isinstance(value, str | bytes):
        candidates = [Wide(value, w) for w in (1, 2, 4)]
    elif isinstance(value, list | dict):
        candidates = [Wide(value, w) for w in (2, 4)]
    else:
        return []
    canonical_form = encode(value)
    out = []
    for candidate in candidates:
        try:
            written = _wide(candidate)
        except struct.error:  # does not fit that width
            continue
        if written != canonical_form:
            out.append(candidate)
    return out


# --- paths into a value, to change one node --------------------------------------------------

Path = tuple[Any, ...]  # list indexes and ("key", k) / ("value", k) steps


def nodes(value: Any, path: Path = ()) -> list[tuple[Path, Any]]:
    """Every node of a list/dict tree with its path, the root first."""
    out: list[tuple[Path, Any]] = [(path, value)]
    if isinstance(value, list):
        for i, item in enumerate(value):
            out.extend(nodes(item, (*path, i)))
    elif isinstance(value, dict):
        for key, item in value.items():
            out.append(((*path, ("key", key)), key))
            out.extend(nodes(item, (*path, ("value", key))))
    return out


def replace(value: Any, path: Path, new: Any) -> Any:
    """A copy of ``value`` with the node at ``path`` replaced by ``new`` (maps become Pairs if a
    key is replaced, to keep their order and allow any key)."""
    if not path:
        return new
    step, rest = path[0], path[1:]
    if isinstance(value, list):
        copy = list(value)
        copy[step] = replace(value[step], rest, new)
        return copy
    role, key = step
    ordered = sorted(value.items())
    if role == "key":
        pairs = tuple((new if k == key else k, v) for k, v in ordered)
        return Pairs(pairs)
    return {k: (replace(v, rest, new) if k == key else v) for k, v in ordered}


# --- changing bytes ----------------------------------------------------------------------------


def mutations(wire: bytes) -> Any:
    """``wire`` with one change: a bit flipped, a byte replaced, bytes inserted or deleted, or
    the end cut off. The result always differs from ``wire``."""
    n = len(wire)

    def flip(at: int, bit: int) -> bytes:
        return wire[:at] + bytes([wire[at] ^ (1 << bit)]) + wire[at + 1 :]

    def set_byte(at: int, value: int) -> bytes:
        return wire[:at] + bytes([value]) + wire[at + 1 :]

    return st.one_of(
        st.builds(flip, st.integers(0, n - 1), st.integers(0, 7)),
        st.builds(set_byte, st.integers(0, n - 1), st.integers(0, 255)),
        st.builds(
            lambda at, extra: wire[:at] + extra + wire[at:],
            st.integers(0, n),
            st.binary(min_size=1, max_size=8),
        ),
        st.builds(
            lambda at, k: wire[:at] + wire[at + k :], st.integers(0, n - 1), st.integers(1, 8)
        ),
        st.builds(lambda k: wire[:k], st.integers(0, n - 1)),
    ).filter(lambda mutated: mutated != wire)
