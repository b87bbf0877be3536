"""Invite codes survive copy and paste, and a mistyped one is caught before any dial."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pshare.protocol.invites import Invite, InviteError, decode_invite, encode_invite

addrs = st.lists(
    st.builds(
        lambda a, b, port: f"/ip4/10.{a}.{b}.1/tcp/{port}",
        st.integers(0, 255),
        st.integers(0, 255),
        st.integers(1, 65535),
    ),
    min_size=1,
    max_size=8,
)
communities = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


@settings(max_examples=200)
@given(key=st.binary(min_size=32, max_size=32), addrs=addrs, community=communities)
def test_round_trip(key: bytes, addrs: list[str], community: str) -> None:
    invite = Invite(key, tuple(addrs), community)
    code = encode_invite(invite)
    assert code.startswith("p2ps1") and code.isalnum()
    assert decode_invite(code) == invite
    assert decode_invite(f"  {code.upper()}\n") == invite


@settings(max_examples=200)
@given(
    key=st.binary(min_size=32, max_size=32),
    addrs=addrs,
    position=st.integers(min_value=5),
    data=st.data(),
)
def test_any_single_typo_is_caught(
    key: bytes, addrs: list[str], position: int, data: st.DataObject
) -> None:
    code = encode_invite(Invite(key, tuple(addrs), "public"))
    i = position % len(code)
    if i < 5:
        i = 5
    replacement = data.draw(st.sampled_from("abcdefghijklmnopqrstuvwxyz234567"))
    if replacement == code[i]:
        return
    typo = code[:i] + replacement + code[i + 1 :]
    with pytest.raises(InviteError):
        decode_invite(typo)


@given(st.text(max_size=200))
def test_arbitrary_text_is_refused_with_invite_error_only(text: str) -> None:
    with contextlib.suppress(InviteError):
        decode_invite(text)


def test_dial_addrs_carry_the_peer_id() -> None:
    invite = Invite(b"\x01" * 32, ("/ip4/127.0.0.1/tcp/4011",), "bakers")
    (addr,) = invite.dial_addrs()
    assert addr.startswith("/ip4/127.0.0.1/tcp/4011/p2p/12D3KooW")
