"""Peer ids and record ids as people see and type them; checked against libp2p's own code."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import Ed25519PublicKey as Libp2pEd25519PublicKey
from libp2p.crypto.ed25519 import create_new_key_pair as ed25519_key_pair
from libp2p.crypto.secp256k1 import create_new_key_pair as secp256k1_key_pair
from libp2p.peer.id import ID

from p2pshare.protocol.keys import (
    ID_BYTES,
    PUBLIC_KEY_BYTES,
    SHORT_ID_CHARS,
    KeyFormatError,
    b58decode,
    b58encode,
    format_id,
    is_id_prefix,
    parse_id,
    parse_public_key,
    peer_id_from_public_key,
    public_key_from_peer_id,
    short_id,
)

seeds = st.binary(min_size=32, max_size=32)
ids = st.binary(min_size=ID_BYTES, max_size=ID_BYTES)


# --- peer ids --------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(seeds)
def test_peer_id_is_the_one_libp2p_computes(seed: bytes) -> None:
    public = ed25519_key_pair(seed).public_key
    raw = public.to_bytes()
    ours = peer_id_from_public_key(raw)
    assert ours == ID.from_pubkey(public).to_base58()
    assert ours.startswith("12D3KooW")
    assert public_key_from_peer_id(ours) == raw
    extracted = ID.from_base58(ours).extract_public_key()
    assert isinstance(extracted, Libp2pEd25519PublicKey) and extracted.to_bytes() == raw


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=PUBLIC_KEY_BYTES, max_size=PUBLIC_KEY_BYTES))
def test_peer_id_round_trips_for_any_32_bytes(raw: bytes) -> None:
    peer_id = peer_id_from_public_key(raw)
    assert public_key_from_peer_id(peer_id) == raw
    assert parse_public_key(peer_id) == raw
    assert parse_public_key(f"  {peer_id}\n") == raw


def test_a_peer_id_of_another_key_type_is_refused() -> None:
    peer_id = ID.from_pubkey(secp256k1_key_pair().public_key).to_base58()
    with pytest.raises(KeyFormatError):
        public_key_from_peer_id(peer_id)
    with pytest.raises(KeyFormatError):
        parse_public_key(peer_id)


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_only_32_byte_keys_have_a_peer_id(size: int) -> None:
    with pytest.raises(KeyFormatError):
        peer_id_from_public_key(b"k" * size)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_base58_round_trips_with_leading_zeros(data: bytes) -> None:
    assert b58decode(b58encode(data)) == data
    assert b58encode(b"\x00\x00" + data).startswith("11")


# --- parsing what people type ----------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=PUBLIC_KEY_BYTES, max_size=PUBLIC_KEY_BYTES))
def test_a_hex_key_is_accepted_in_either_case(raw: bytes) -> None:
    assert parse_public_key(raw.hex()) == raw
    assert parse_public_key(raw.hex().upper()) == raw
    assert parse_public_key(f"\t{raw.hex()} ") == raw


def _peer_id() -> str:
    return peer_id_from_public_key(bytes(range(32)))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "hello",
        "12D3KooW",
        "0" * 63,
        "0" * 65,
        "g" * 64,  # 64 characters, not hex
        "00" * 15 + "  " + "00" * 16,  # bytes.fromhex skips the spaces: 31 bytes
        "00 " * 21 + "0",
        "0x" + "00" * 31,
        "Qm" + "1" * 44,  # a CIDv0-looking string
        "1" * 52,
        "12D3KooW" + "0" * 44,  # '0' is not base58
        "12D3KooW" + "l" * 44,  # 'l' is not base58
        "12D3KooW" + "z" * 5000,  # long: refused before base58 decoding
        "2" * 52,
    ],
)
def test_garbage_is_not_a_key(text: str) -> None:
    with pytest.raises(KeyFormatError):
        parse_public_key(text)


def test_a_truncated_or_extended_peer_id_is_refused() -> None:
    peer_id = _peer_id()
    for bad in (peer_id[:-1], peer_id + "1", peer_id + "z", peer_id[1:]):
        with pytest.raises(KeyFormatError):
            parse_public_key(bad)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_is_a_key_in_its_own_spelling_or_refused(text: str) -> None:
    try:
        raw = parse_public_key(text)
    except KeyFormatError:
        return
    assert len(raw) == PUBLIC_KEY_BYTES
    typed = text.strip()
    assert typed.lower() == raw.hex() or typed == peer_id_from_public_key(raw)


# --- record ids ------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(ids)
def test_record_id_base32_round_trip(raw: bytes) -> None:
    text = format_id(raw)
    assert len(text) == 52 and text == text.lower() and "=" not in text
    assert text == base64.b32encode(raw).decode().rstrip("=").lower()
    assert parse_id(text) == raw
    assert parse_id(text.upper()) == raw
    assert parse_id(f" {text}\n") == raw
    assert parse_id(raw.hex()) == raw
    assert short_id(raw) == text[:SHORT_ID_CHARS]
    assert is_id_prefix(short_id(raw)) and is_id_prefix(text)


@settings(max_examples=100, deadline=None)
@given(ids, st.integers(1, 15))
def test_only_one_base32_spelling_of_an_id_is_accepted(raw: bytes, unused_bits: int) -> None:
    """The last base32 digit carries 4 unused bits; setting them must not give the same id."""
    text = format_id(raw)
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    last = alphabet[alphabet.index(text[-1]) | unused_bits]
    if last != text[-1]:
        with pytest.raises(KeyFormatError):
            parse_id(text[:-1] + last)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a" * 51,
        "a" * 53,
        "a" * 51 + "1",  # '1' is not base32
        "a" * 51 + "b",  # unused bits set
        "0" * 63,
        "z" * 64,
        "00" * 15 + "  " + "00" * 16,  # would be 31 bytes
        "é" * 52,
    ],
)
def test_garbage_is_not_a_record_id(text: str) -> None:
    with pytest.raises(KeyFormatError):
        parse_id(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("abc", True), ("ABC", True), ("a1", False), ("", False), ("a" * 52, True), ("a" * 53, False)],
)
def test_id_prefixes(text: str, expected: bool) -> None:
    assert is_id_prefix(text) is expected
