"""Public keys, libp2p peer ids and record ids as people see and type them.

An Ed25519 public key *is* a libp2p peer id: the identity multihash of the protobuf-encoded key,
written in base58btc (``12D3KooW…``). Record ids are SHA-256 digests, shown in lowercase base32.
"""

from __future__ import annotations

import base64

PUBLIC_KEY_BYTES = 32
ID_BYTES = 32
SHORT_ID_CHARS = 13  # 65 bits: plenty to tell records apart in one store
_PEER_ID_PREFIX = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])  # identity mh, len 36, Ed25519 pb
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_B32_DIGITS = frozenset("abcdefghijklmnopqrstuvwxyz234567")
FULL_ID_CHARS = 52  # base32 of 32 bytes, unpadded
MAX_PEER_ID_CHARS = 64  # an Ed25519 peer id is 52 characters; longer text is refused unparsed


class KeyFormatError(ValueError):
    """Text that should name a key or record does not."""


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, rem = divmod(n, 58)
        out.append(_B58[rem])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    n = 0
    for char in text:
        if char not in _B58_INDEX:
            raise KeyFormatError(f"{char!r} is not a base58 character")
        n = n * 58 + _B58_INDEX[char]
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + body


def peer_id_from_public_key(public_key: bytes) -> str:
    """The libp2p peer id (base58btc) of an Ed25519 public key."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise KeyFormatError("an Ed25519 public key has 32 bytes")
    return b58encode(_PEER_ID_PREFIX + public_key)


def public_key_from_peer_id(peer_id: str) -> bytes:
    """The Ed25519 public key a libp2p peer id (``12D3KooW…``) embeds."""
    if len(peer_id) > MAX_PEER_ID_CHARS:  # base58 decoding is quadratic in the length
        raise KeyFormatError("too long to be a peer id")
    raw = b58decode(peer_id)
    if len(raw) != len(_PEER_ID_PREFIX) + PUBLIC_KEY_BYTES or not raw.startswith(_PEER_ID_PREFIX):
        raise KeyFormatError(f"{peer_id[:80]!r} is not the peer id of an Ed25519 key")
    return raw[len(_PEER_ID_PREFIX) :]


def parse_public_key(text: str) -> bytes:
    """Accept a peer id (``12D3KooW…``) or a 64-digit hex public key."""
    text = text.strip()
    if _is_hex(text, PUBLIC_KEY_BYTES):
        return bytes.fromhex(text)
    try:
        return public_key_from_peer_id(text)
    except KeyFormatError:
        raise KeyFormatError(
            f"{text[:80]!r} is not a peer key: give a peer id (12D3KooW…) or a 64-digit hex key"
        ) from None


def format_id(record_id: bytes) -> str:
    """Full record id: 52 lowercase base32 characters, no padding."""
    return base64.b32encode(record_id).decode("ascii").rstrip("=").lower()


def short_id(record_id: bytes) -> str:
    return format_id(record_id)[:SHORT_ID_CHARS]


def parse_id(text: str) -> bytes:
    """Parse a full record id (base32 as ``format_id`` writes it, or 64 hex digits).

    Only the one base32 spelling of each id is accepted (the last digit's unused bits are zero),
    so two different texts never name the same record.
    """
    text = text.strip().lower()
    if _is_hex(text, ID_BYTES):
        return bytes.fromhex(text)
    if len(text) == FULL_ID_CHARS and set(text) <= _B32_DIGITS:
        raw = base64.b32decode(text.upper() + "====")
        if format_id(raw) == text:
            return raw
    raise KeyFormatError(f"{text[:80]!r} is not a full record id")


def _is_hex(text: str, n_bytes: int) -> bool:
    """Exactly ``n_bytes`` as hex digits (``bytes.fromhex`` alone would also skip spaces)."""
    return len(text) == 2 * n_bytes and set(text) <= _HEX_DIGITS


def is_id_prefix(text: str) -> bool:
    """Could ``text`` be the start of a base32 record id?"""
    return 0 < len(text) <= FULL_ID_CHARS and set(text.lower()) <= _B32_DIGITS
