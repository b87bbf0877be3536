"""The node's Ed25519 identity: one key signs records and is the libp2p peer id.

The key file holds the 32-byte seed as text, mode 0600. We refuse a key that others can read rather
than silently fixing it: the user should learn that their key may have leaked.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey

from p2pshare.protocol.keys import peer_id_from_public_key

HEADER = "p2pshare-identity-v1"


class IdentityError(Exception):
    """The identity cannot be loaded or saved; the message says how to fix it."""


@dataclass(frozen=True)
class Identity:
    signing_key: SigningKey

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def seed(self) -> bytes:
        return bytes(self.signing_key)

    @property
    def peer_id(self) -> str:
        return peer_id_from_public_key(self.public_key)

    @classmethod
    def generate(cls) -> Identity:
        return cls(SigningKey.generate())


def encode_key_file(identity: Identity) -> bytes:
    seed = base64.b64encode(identity.seed).decode("ascii")
    return f"{HEADER}\n{seed}\n# peer id {identity.peer_id}\n".encode()


def decode_key_file(data: bytes, source: Path) -> Identity:
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines()]
    if len(lines) < 2 or lines[0] != HEADER:
        raise IdentityError(f"{source} is not a p2pshare identity file")
    try:
        seed = base64.b64decode(lines[1], validate=True)
    except (binascii.Error, ValueError):
        seed = b""
    if len(seed) != 32:
        raise IdentityError(f"{source} is damaged: the key is not 32 bytes of base64")
    return Identity(SigningKey(seed))


def write_key_file(path: Path, identity: Identity, *, overwrite: bool = False) -> None:
    """Write atomically with mode 0600 from the first byte (never briefly world-readable)."""
    if path.exists() and not overwrite:
        raise IdentityError(f"{path} already exists; refusing to overwrite an identity")
    tmp = path.with_name(path.name + ".tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        fd = os.open(tmp, flags, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, encode_key_file(identity))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        raise IdentityError(f"cannot write {path}: {exc.strerror}") from exc


def load_key_file(path: Path, *, check_mode: bool = True) -> Identity:
    try:
        st = path.stat()
        if check_mode and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise IdentityError(
                f"{path} can be read by other users (mode {stat.S_IMODE(st.st_mode):o}); "
                f"fix it with: chmod 600 {path}"
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise IdentityError(
            f"no identity at {path}; create one with: p2pshare init --name NAME"
        ) from None
    except PermissionError:
        raise IdentityError(f"cannot read {path}: permission denied") from None
    return decode_key_file(data, path)
