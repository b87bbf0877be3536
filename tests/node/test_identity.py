"""The identity key file: private from its first byte, refused when others could read it."""

import os
import stat
from pathlib import Path

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from p2pshare.node.identity import (
    Identity,
    IdentityError,
    load_key_file,
    write_key_file,
)


def test_written_key_is_owner_only_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    identity = Identity.generate()
    write_key_file(path, identity)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key_file(path).seed == identity.seed


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_group_or_world_readable_key_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "identity.key"
    write_key_file(path, Identity.generate())
    os.chmod(path, mode)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_key_file(path)


def test_existing_identity_is_never_overwritten_silently(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    first = Identity.generate()
    write_key_file(path, first)
    with pytest.raises(IdentityError, match="already exists"):
        write_key_file(path, Identity.generate())
    assert load_key_file(path).seed == first.seed


@pytest.mark.parametrize(
    "content",
    [b"", b"hello\n", b"p2pshare-identity-v1\nnot base64!\n", b"p2pshare-identity-v1\nAAAA\n"],
)
def test_damaged_key_file_gives_a_sentence(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "identity.key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(IdentityError):
        load_key_file(path)


def test_missing_key_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="p2pshare init"):
        load_key_file(tmp_path / "identity.key")


def test_identity_is_the_libp2p_peer_id(tmp_path: Path) -> None:
    identity = Identity.generate()
    key_pair = create_new_key_pair(identity.seed)
    assert ID.from_pubkey(key_pair.public_key).to_base58() == identity.peer_id
