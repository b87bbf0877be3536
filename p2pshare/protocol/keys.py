"""Public keys, libp2p peer ids and record ids as people see and type them.

An Ed25519 public key *is* a libp2p peer id: the identity multihash of the protobuf-encoded key,
written in base58btc (``12D3KooW…``). Record ids are SHA-256 digests, shown in lowercase base32.
"""

from __future__ import annotations

import base64
import binascii

PUBLIC_KEY_BYTES = 32
ID_BYTES = 32
SHORT_ID_CHARS = 13  # 65 bits: plenty to tell records apart in one store
_PEER_ID_PREFIX = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])  # identity mh, len 36, Ed25519 pb
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


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
    raw = b58decode(peer_id)
    if len(raw) != len(_PEER_ID_PREFIX) + PUBLIC_KEY_BYTES or not raw.startswith(_PEER_ID_PREFIX):
        raise KeyFormatError(f"{peer_id!r} is not the peer id of an Ed25519 key")
    return raw[len(_PEER_ID_PREFIX) :]


def parse_public_key(text: str) -> bytes:
    """Accept a peer id (``12D3KooW…``) or a 64-digit hex public key."""
    text = text.strip()
    if len(text) == 2 * PUBLIC_KEY_BYTES:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        return public_key_from_peer_id(text)
    except KeyFormatError:
        raise KeyFormatError(
            f"{text!r} is not a peer key: give a peer id (12D3KooW…) or a 64-digit hex key"
        ) from None


def format_id(record_id: bytes) -> str:
    """Full record id: 52 lowercase base32 characters, no padding."""
    return base64.b32encode(record_id).decode("ascii").rstrip("=").lower()


def short_id(record_id: bytes) -> str:
    return format_id(record_id)[:SHORT_ID_CHARS]


def parse_id(text: str) -> bytes:
    """Parse a full record id (base32, or 64 hex digits)."""
    text = text.strip().lower()
    if len(text) == 2 * ID_BYTES:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    if len(text) == 52:
        try:
            return base64.b32decode(text.upper() + "====")
        except (binascii.Error, ValueError):
            pass
    raise KeyFormatError(f"{text!r} is not a full record id")


def is_id_prefix(text: str) -> bool:
    """Could ``text`` be the start of a base32 record id?"""
    alphabet = set("abcdefghijklmnopqrstuvwxyz234567")
    return 0 < len(text) <= 52 and set(text.lower()) <= alphabet
