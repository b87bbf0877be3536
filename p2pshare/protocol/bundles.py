"""Offline bundles: records + blobs on a USB stick, signed by whoever exported them.

A bundle is an uncompressed tar (documents are already compressed, and tar is readable everywhere)
holding exactly these members and nothing else:

    p2pshare-bundle/manifest      canonical msgpack {"v": 1, "exporter": key32, "created_ms": int,
                                    "records": [wire, ...], "blobs": [[root32, size], ...]}
    p2pshare-bundle/signature     Ed25519 by ``exporter`` over BUNDLE_DOMAIN + manifest bytes
    p2pshare-bundle/blobs/<hex>   the bytes of each blob, named by its root in hex

Every record is verified on its own; the signature tells who vouches for the bundle as a whole.
Member names are checked against this exact list, so ``../`` or absolute paths can never be written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

from p2pshare.protocol import canonical
from p2pshare.protocol.reasons import RecordError
from p2pshare.protocol.records import Record, decode_record

BUNDLE_DOMAIN = b"p2pshare/bundle/v1\x00"
BUNDLE_VERSION = 1
PREFIX = "p2pshare-bundle/"
MANIFEST_MEMBER = PREFIX + "manifest"
SIGNATURE_MEMBER = PREFIX + "signature"
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
_BLOB_MEMBER = re.compile(r"^p2pshare-bundle/blobs/([0-9a-f]{64})$")


class BundleError(ValueError):
    """The bundle is damaged, tampered with or not a bundle; nothing of it may be stored."""


@dataclass(frozen=True)
class BundleManifest:
    exporter: bytes
    created_ms: int
    records: tuple[Record, ...]
    blobs: dict[bytes, int]  # root -> size


def blob_member(root: bytes) -> str:
    return f"{PREFIX}blobs/{root.hex()}"


def parse_blob_member(name: str) -> bytes | None:
    match = _BLOB_MEMBER.match(name)
    return bytes.fromhex(match.group(1)) if match else None


def encode_manifest(
    key: SigningKey, created_ms: int, records: list[Record], blobs: dict[bytes, int]
) -> tuple[bytes, bytes]:
    """Return (manifest bytes, signature)."""
    manifest = canonical.pack(
        {
            "v": BUNDLE_VERSION,
            "exporter": bytes(key.verify_key),
            "created_ms": created_ms,
            "records": [r.wire for r in records],
            "blobs": [[root, size] for root, size in sorted(blobs.items())],
        }
    )
    return manifest, key.sign(BUNDLE_DOMAIN + manifest).signature


def decode_manifest(manifest: bytes, signature: bytes, *, now: int | None) -> BundleManifest:
    """Check the bundle signature and every record in it; raise BundleError on the first fault."""
    try:
        value = canonical.unpack(manifest, MAX_MANIFEST_BYTES)
    except RecordError as exc:
        raise BundleError(f"the bundle manifest is damaged: {exc}") from None
    if not isinstance(value, dict) or set(value) != {
        "v",
        "exporter",
        "created_ms",
        "records",
        "blobs",
    }:
        raise BundleError("the bundle manifest has the wrong fields")
    if value["v"] != BUNDLE_VERSION:
        raise BundleError(f"bundle version {value['v']!r} is not supported")
    exporter = value["exporter"]
    if not isinstance(exporter, bytes) or len(exporter) != 32:
        raise BundleError("the bundle names no valid exporter key")
    try:
        VerifyKey(exporter).verify(BUNDLE_DOMAIN + manifest, signature)
    except (BadSignatureError, CryptoError, ValueError, TypeError):
        raise BundleError("the bundle signature does not verify: it was altered") from None
    if not isinstance(value["records"], list) or not isinstance(value["blobs"], list):
        raise BundleError("the bundle manifest has the wrong fields")
    records = []
    for index, wire in enumerate(value["records"]):
        if not isinstance(wire, bytes):
            raise BundleError(f"record {index} in the bundle is not bytes")
        try:
            records.append(decode_record(wire, now=now))
        except RecordError as exc:
            raise BundleError(f"record {index} in the bundle is invalid: {exc}") from None
    blobs: dict[bytes, int] = {}
    for entry in value["blobs"]:
        if (
            not isinstance(entry, list)
            or len(entry) != 2
            or not isinstance(entry[0], bytes)
            or len(entry[0]) != 32
            or not isinstance(entry[1], int)
            or entry[1] < 0
        ):
            raise BundleError("the bundle's blob list is damaged")
        blobs[entry[0]] = entry[1]
    created = value["created_ms"]
    if not isinstance(created, int):
        raise BundleError("the bundle's date is damaged")
    return BundleManifest(exporter, created, tuple(records), blobs)
