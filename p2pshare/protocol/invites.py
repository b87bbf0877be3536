"""One-line invite codes: who to dial and which community to join, safe to paste anywhere.

Format: ``p2ps1`` + lowercase base32 (no padding) of canonical msgpack
``[1, public_key32, [multiaddr text, ...], community]`` + a 4-character checksum (the first 20
bits of SHA-256 of the payload, base32), so a mistyped code is caught before any dial.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from p2pshare.protocol import canonical
from p2pshare.protocol.communities import is_community
from p2pshare.protocol.keys import PUBLIC_KEY_BYTES, peer_id_from_public_key
from p2pshare.protocol.reasons import RecordError

PREFIX = "p2ps1"
VERSION = 1
MAX_ADDRS = 8
MAX_ADDR_CHARS = 256
MAX_INVITE_BYTES = 4096
_CHECK_CHARS = 4


class InviteError(ValueError):
    """The text is not a valid invite code; the message says why."""


@dataclass(frozen=True)
class Invite:
    public_key: bytes
    addrs: tuple[str, ...]
    community: str

    @property
    def peer_id(self) -> str:
        return peer_id_from_public_key(self.public_key)

    def dial_addrs(self) -> list[str]:
        """Addresses with the ``/p2p/<peer id>`` suffix libp2p needs to dial."""
        suffix = f"/p2p/{self.peer_id}"
        return [a if a.endswith(suffix) else a + suffix for a in self.addrs]


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _checksum(payload: bytes) -> str:
    return _b32(hashlib.sha256(payload).digest())[:_CHECK_CHARS]


def encode_invite(invite: Invite) -> str:
    if len(invite.addrs) > MAX_ADDRS:
        raise InviteError(f"an invite carries at most {MAX_ADDRS} addresses")
    payload = canonical.pack([VERSION, invite.public_key, list(invite.addrs), invite.community])
    return PREFIX + _b32(payload) + _checksum(payload)


def decode_invite(text: str) -> Invite:
    code = "".join(text.split()).lower()
    if not code.startswith(PREFIX) or len(code) <= len(PREFIX) + _CHECK_CHARS:
        raise InviteError("not an invite code: it should start with p2ps1")
    body, check = code[len(PREFIX) : -_CHECK_CHARS], code[-_CHECK_CHARS:]
    try:
        payload = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        raise InviteError("the invite code is damaged (not base32); copy it again") from None
    if _b32(payload) != body:  # the last digit's spare bits must be zero: one spelling per code
        raise InviteError("the invite code is mistyped or incomplete; copy it again")
    if _checksum(payload) != check:
        raise InviteError("the invite code is mistyped or incomplete; copy it again")
    try:
        value = canonical.unpack(payload, MAX_INVITE_BYTES)
    except RecordError:
        raise InviteError("the invite code is damaged") from None
    if not isinstance(value, list) or len(value) != 4 or value[0] != VERSION:
        raise InviteError("this invite code is from a newer p2pshare; update to use it")
    _, key, addrs, community = value
    if not isinstance(key, bytes) or len(key) != PUBLIC_KEY_BYTES:
        raise InviteError("the invite code names no valid peer")
    if (
        not isinstance(addrs, list)
        or not addrs
        or len(addrs) > MAX_ADDRS
        or not all(
            isinstance(a, str) and a.startswith("/") and len(a) <= MAX_ADDR_CHARS for a in addrs
        )
    ):
        raise InviteError("the invite code has no usable addresses")
    if not isinstance(community, str) or not is_community(community):
        raise InviteError("the invite code names no valid community")
    return Invite(key, tuple(addrs), community)
