"""Signed records: the immutable unit of everything shared.

Wire form: canonical msgpack ``[1, kind, author, created_ms, community, body, sig]``; the
signature is Ed25519 over ``SIGNATURE_DOMAIN + pack([1, kind, author, created_ms, community,
body])`` and the id is SHA-256 of the whole wire form. We sign exact bytes, store and forward those
bytes unchanged, and refuse any encoding that is not the canonical one, so one record has exactly
one id.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey

from p2pshare.protocol import canonical
from p2pshare.protocol import limits as L
from p2pshare.protocol.communities import DEFAULT_COMMUNITY, is_community
from p2pshare.protocol.keys import PUBLIC_KEY_BYTES
from p2pshare.protocol.licences import allows_redistribution, normalise_licence
from p2pshare.protocol.reasons import Reason, RecordError

SIGNATURE_DOMAIN = b"p2pshare/record/v1\x00"
SIGNATURE_BYTES = 64

PROFILE = "profile"
DOC = "doc"
REC = "rec"
REPOST = "repost"
FOLLOW = "follow"
UNFOLLOW = "unfollow"
RETRACT = "retract"
KINDS = (PROFILE, DOC, REC, REPOST, FOLLOW, UNFOLLOW, RETRACT)
REPOSTABLE_KINDS = frozenset({PROFILE, DOC, REC, REPOST})

SUBJECT_RECORD = "record"
SUBJECT_PEER = "peer"
SUBJECT_URL = "url"
SUBJECT_THING = "thing"
SUBJECT_TYPES = (SUBJECT_RECORD, SUBJECT_PEER, SUBJECT_URL, SUBJECT_THING)


@dataclass(frozen=True, slots=True)
class Record:
    """A decoded, verified record; ``wire`` is the exact signed bytes to store and forward."""

    kind: str
    author: bytes
    created_ms: int
    community: str
    body: Mapping[str, Any]
    sig: bytes
    wire: bytes
    id: bytes
    original: Record | None = field(default=None, compare=False)  # the embedded record of a repost


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def record_id(wire: bytes) -> bytes:
    return hashlib.sha256(wire).digest()


def unsigned_bytes(
    kind: str, author: bytes, created_ms: int, community: str, body: Mapping[str, Any]
) -> bytes:
    return canonical.pack([L.RECORD_VERSION, kind, author, created_ms, community, dict(body)])


def create_record(
    key: SigningKey,
    kind: str,
    body: Mapping[str, Any],
    *,
    community: str = DEFAULT_COMMUNITY,
    created_ms: int | None = None,
) -> Record:
    """Validate ``body`` for ``kind``, sign it with ``key`` and return the verified record."""
    author = bytes(key.verify_key)
    created = now_ms() if created_ms is None else created_ms
    unsigned = unsigned_bytes(kind, author, created, community, body)
    sig = key.sign(SIGNATURE_DOMAIN + unsigned).signature
    wire = canonical.pack([L.RECORD_VERSION, kind, author, created, community, dict(body), sig])
    return decode_record(wire)


def decode_record(
    wire: bytes | bytearray | memoryview, *, now: int | None = None, verify: bool = True
) -> Record:
    """Decode and fully check a record's wire bytes; raise RecordError with a reason if bad.

    ``now`` (ms) enables the clock check: records from more than 10 minutes in the future are
    refused when they arrive from the network, but not when read back from our own store.
    """
    data = wire if type(wire) is bytes else _as_bytes(wire)
    return _decode(data, now=now, verify=verify, depth=0)


def _decode(wire: bytes, *, now: int | None, verify: bool, depth: int) -> Record:
    value = canonical.decode(wire, L.MAX_RECORD_BYTES)
    try:
        return _check_record(value, wire, now=now, verify=verify, depth=depth)
    except RecordError:
        # Refused for a field, an order or a signature: if the bytes are not even canonical
        # msgpack, say that instead, as canonical.unpack would have said first.
        canonical.require_canonical(value, wire)
        raise


def _as_bytes(wire: Any) -> bytes:
    """Other buffers are copied: a Record's wire must be immutable, plain bytes."""
    if isinstance(wire, bytes | bytearray | memoryview):
        return bytes(wire)
    raise RecordError(Reason.MALFORMED, f"a record is bytes, not {type(wire).__name__}")


def _check_record(value: Any, wire: bytes, *, now: int | None, verify: bool, depth: int) -> Record:
    """Every rule but the generic canonical type walk, which this makes redundant.

    Once the fields and body have passed their checks, every value in the record has an allowed
    type (int, str, bytes, a list of str, one map with str keys) and nesting is 3 deep, so
    ``canonical.pack(value)`` would equal ``msgpack.packb(value)`` whenever the body's keys are
    in sorted order. Checking that order and comparing the plain re-pack is therefore the same
    canonical check as ``canonical.unpack``, without its walk over every value (over 40% of the
    cost of a decode without the signature check). Messages never show untrusted values whole
    (their repr could recurse 1000 levels deep).
    """
    if not isinstance(value, list) or len(value) != 7:
        raise RecordError(Reason.MALFORMED, "a record is a list of 7 items")
    version, kind, author, created_ms, community, body, sig = value
    if version != L.RECORD_VERSION or not isinstance(version, int) or isinstance(version, bool):
        raise RecordError(Reason.BAD_VERSION, f"record version {_show(version)} is not supported")
    if not isinstance(kind, str) or kind not in KINDS:
        raise RecordError(Reason.BAD_KIND, f"unknown record kind {_show(kind)}")
    if not isinstance(author, bytes) or len(author) != PUBLIC_KEY_BYTES:
        raise RecordError(Reason.BAD_AUTHOR, "author must be a 32-byte Ed25519 public key")
    if (
        not isinstance(created_ms, int)
        or isinstance(created_ms, bool)
        or not 0 <= created_ms <= L.MAX_CREATED_MS
    ):
        raise RecordError(Reason.BAD_TIMESTAMP, "created_ms must be a non-negative integer")
    if now is not None and created_ms > now + L.MAX_FUTURE_SKEW_MS:
        raise RecordError(Reason.FROM_FUTURE, "record is dated more than 10 minutes ahead")
    if not isinstance(community, str) or not is_community(community):
        raise RecordError(Reason.BAD_COMMUNITY, "community must be a lower-case slug")
    if not isinstance(body, dict):
        raise RecordError(Reason.BAD_BODY, "body must be a map")
    if not isinstance(sig, bytes) or len(sig) != SIGNATURE_BYTES:
        raise RecordError(Reason.BAD_SIGNATURE, "signature must be 64 bytes")
    original = _check_body(kind, body, now=now, verify=verify, depth=depth)
    keys = list(body)  # all str: _check_body refused any key not in BODY_FIELDS
    if keys != sorted(keys) or msgpack.packb(value, use_bin_type=True) != wire:
        raise RecordError(Reason.NON_CANONICAL, "not the canonical encoding")
    if verify:
        # The wire is canonical, so it is fixarray(7) + fields + bin8(64) sig, and the signed
        # bytes are fixarray(6) followed by the same field bytes.
        unsigned = b"\x96" + wire[1 : -(SIGNATURE_BYTES + 2)]
        try:
            crypto_sign_open(sig + SIGNATURE_DOMAIN + unsigned, author)
        except (BadSignatureError, CryptoError, ValueError):
            raise RecordError(Reason.BAD_SIGNATURE, "signature does not verify") from None
    return Record(kind, author, created_ms, community, body, sig, wire, record_id(wire), original)


def _show(value: Any) -> str:
    """A short, safe rendering of an untrusted value for an error message."""
    if isinstance(value, str | bytes | int):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"of type {type(value).__name__}"


# --- bodies ---------------------------------------------------------------------------------

Check = Callable[[str, Any], None]


def _text(max_chars: int, *, empty_ok: bool = True) -> Check:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, str):
            raise RecordError(Reason.BAD_BODY, f"{name} must be text")
        if len(value) > max_chars:
            raise RecordError(Reason.FIELD_TOO_LONG, f"{name} is over {max_chars} characters")
        if not empty_ok and not value.strip():
            raise RecordError(Reason.BAD_BODY, f"{name} must not be empty")

    return check


def _key32(name: str, value: Any) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise RecordError(Reason.BAD_BODY, f"{name} must be 32 bytes")


def _int_range(low: int, high: int) -> Check:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise RecordError(Reason.BAD_BODY, f"{name} must be an integer from {low} to {high}")

    return check


def _text_list(max_items: int, max_chars: int, reason: Reason) -> Check:
    item = _text(max_chars, empty_ok=False)

    def check(name: str, value: Any) -> None:
        if not isinstance(value, list):
            raise RecordError(Reason.BAD_BODY, f"{name} must be a list")
        if len(value) > max_items:
            raise RecordError(reason, f"{name} has more than {max_items} items")
        for entry in value:
            item(name, entry)

    return check


def _licence(name: str, value: Any) -> None:
    if not isinstance(value, str) or normalise_licence(value) != value:
        raise RecordError(Reason.BAD_LICENCE, f"unknown licence id {_show(value)}")


_FILENAME_FORBIDDEN = frozenset("/\\\x7f")


def _filename(name: str, value: Any) -> None:
    _text(L.MAX_FILENAME_CHARS, empty_ok=False)(name, value)
    # A peer's filename becomes a path on disk when the document is saved into a directory.
    if value in (".", "..") or any(c in _FILENAME_FORBIDDEN or c < " " for c in value):
        raise RecordError(
            Reason.BAD_BODY, "filename must be a plain name: no directories or control characters"
        )


def _chunk_size(name: str, value: Any) -> None:
    _int_range(L.MIN_CHUNK_SIZE, L.MAX_CHUNK_SIZE)(name, value)
    if value & (value - 1):
        raise RecordError(Reason.BAD_BODY, "chunk_size must be a power of two")


def _subject_type(name: str, value: Any) -> None:
    if value not in SUBJECT_TYPES:
        raise RecordError(
            Reason.BAD_BODY, f"subject_type must be one of {', '.join(SUBJECT_TYPES)}"
        )


def _bytes(name: str, value: Any) -> None:
    if not isinstance(value, bytes):
        raise RecordError(Reason.BAD_BODY, f"{name} must be bytes")


_TAGS = _text_list(L.MAX_TAGS, L.MAX_TAG_CHARS, Reason.TOO_MANY_TAGS)

# kind -> field -> (check, required)
BODY_FIELDS: dict[str, dict[str, tuple[Check, bool]]] = {
    PROFILE: {
        "name": (_text(L.MAX_NAME_CHARS, empty_ok=False), True),
        "about": (_text(L.MAX_ABOUT_CHARS), False),
        "website": (_text(L.MAX_URL_CHARS), False),
        "location": (_text(L.MAX_LOCATION_CHARS), False),
    },
    DOC: {
        "title": (_text(L.MAX_TITLE_CHARS, empty_ok=False), True),
        "authors": (_text_list(L.MAX_AUTHORS, L.MAX_AUTHOR_CHARS, Reason.BAD_BODY), False),
        "description": (_text(L.MAX_DESCRIPTION_CHARS), False),
        "tags": (_TAGS, False),
        "licence": (_licence, True),
        "mime": (_text(L.MAX_MIME_CHARS, empty_ok=False), True),
        "filename": (_filename, True),
        "size": (_int_range(0, L.MAX_DOC_SIZE), True),
        "root": (_key32, True),
        "chunk_size": (_chunk_size, True),
    },
    REC: {
        "subject_type": (_subject_type, True),
        "subject": (lambda name, value: None, True),  # checked with subject_type below
        "rating": (_int_range(1, 5), False),
        "text": (_text(L.MAX_REC_TEXT_CHARS), True),
        "tags": (_TAGS, False),
    },
    REPOST: {
        "original": (_bytes, True),
        "note": (_text(L.MAX_NOTE_CHARS), False),
    },
    FOLLOW: {"target": (_key32, True)},
    UNFOLLOW: {"target": (_key32, True)},
    RETRACT: {"target": (_key32, True)},
}


def _check_body(
    kind: str, body: dict[str, Any], *, now: int | None, verify: bool, depth: int
) -> Record | None:
    fields = BODY_FIELDS[kind]
    for name in body:
        if name not in fields:
            raise RecordError(Reason.UNKNOWN_FIELD, f"{kind} records have no field {_show(name)}")
    for name, (check, required) in fields.items():
        if name in body:
            check(name, body[name])
        elif required:
            raise RecordError(Reason.MISSING_FIELD, f"{kind} records need a {name!r} field")
    if kind == REC:
        _check_subject(body["subject_type"], body["subject"])
    if kind == REPOST:
        return _check_repost(body["original"], now=now, verify=verify, depth=depth)
    return None


def _check_subject(subject_type: str, subject: Any) -> None:
    if subject_type in (SUBJECT_RECORD, SUBJECT_PEER):
        _key32("subject", subject)
    elif subject_type == SUBJECT_URL:
        _text(L.MAX_URL_CHARS, empty_ok=False)("subject", subject)
        if not subject.startswith(("http://", "https://")):
            raise RecordError(Reason.BAD_BODY, "a URL subject must start with http:// or https://")
    else:
        _text(L.MAX_SUBJECT_TEXT_CHARS, empty_ok=False)("subject", subject)


def _check_repost(original_wire: bytes, *, now: int | None, verify: bool, depth: int) -> Record:
    if depth >= L.MAX_REPOST_DEPTH:
        raise RecordError(Reason.BAD_REPOST, "reposts nested too deeply")
    try:
        original = _decode(original_wire, now=now, verify=verify, depth=depth + 1)
    except RecordError as exc:
        # A repost of a repost of an all-rights-reserved document fails for the same reason.
        reason = (
            Reason.LICENCE_FORBIDS if exc.reason is Reason.LICENCE_FORBIDS else Reason.BAD_REPOST
        )
        raise RecordError(reason, f"embedded record is invalid: {exc}") from exc
    if original.kind not in REPOSTABLE_KINDS:
        raise RecordError(Reason.BAD_REPOST, f"{original.kind} records cannot be reposted")
    source = root_original(original)
    if source.kind == DOC and not allows_redistribution(source.body["licence"]):
        raise RecordError(
            Reason.LICENCE_FORBIDS,
            f"the document's licence ({source.body['licence']}) does not allow republishing",
        )
    return original


def root_original(record: Record) -> Record:
    """Follow a chain of reposts back to the record first published."""
    while record.original is not None:
        record = record.original
    return record


def repost_chain(record: Record) -> list[Record]:
    """The record and every record it embeds, outermost first: who passed it on, in order."""
    chain = [record]
    while chain[-1].original is not None:
        chain.append(chain[-1].original)  # type: ignore[arg-type]
    return chain


def check_retract(retract: Record, target: Record) -> None:
    """A retract only takes effect on a record by the same author."""
    if retract.kind != RETRACT or retract.body["target"] != target.id:
        raise RecordError(Reason.BAD_BODY, "this retract does not name that record")
    if retract.author != target.author:
        raise RecordError(Reason.NOT_AUTHOR, "only a record's author can retract it")
