"""Writing and reading offline bundles (format in ``p2pshare.protocol.bundles``).

Import is all-or-nothing for anything wrong with the bundle itself: every record, blob and member
name is checked before the first byte reaches the store.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from p2pshare.node.library import Library
from p2pshare.protocol.bundles import (
    MANIFEST_MEMBER,
    SIGNATURE_MEMBER,
    BundleError,
    blob_member,
    decode_manifest,
    encode_manifest,
    parse_blob_member,
)
from p2pshare.protocol.reasons import Reason
from p2pshare.protocol.records import DOC, Record, now_ms, root_original

_COPY_BUFFER = 1024 * 1024


@dataclass
class ImportReport:
    records_added: int = 0
    duplicates: int = 0
    blobs_added: int = 0
    rejected: Counter[Reason] = field(default_factory=Counter)


def _doc_roots(records: Sequence[Record]) -> dict[bytes, int]:
    roots = {}
    for record in records:
        source = root_original(record)
        if source.kind == DOC:
            roots[source.body["root"]] = source.body["size"]
    return roots


def export_bundle(library: Library, out: Path, records: Sequence[Record]) -> tuple[int, int]:
    """Write ``records`` and the complete blobs they describe; return (records, blobs) written."""
    blobs = {
        root: size for root, size in _doc_roots(records).items() if library.blobs.is_complete(root)
    }
    manifest, signature = encode_manifest(
        library.identity.signing_key, now_ms(), list(records), blobs
    )
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, MANIFEST_MEMBER, manifest)
            _add_bytes(tar, SIGNATURE_MEMBER, signature)
            for root in blobs:
                path = library.blobs.path_of(root)
                info = tar.gettarinfo(str(path), arcname=blob_member(root))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return len(records), len(blobs)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def import_bundle(library: Library, path: Path) -> ImportReport:
    try:
        tar = tarfile.open(path, "r:")  # noqa: SIM115 - closed by the `with tar` below
    except FileNotFoundError:
        raise BundleError(f"{path} does not exist") from None
    except PermissionError:
        raise BundleError(f"cannot read {path}: permission denied") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"{path} is not a p2pshare bundle ({exc})") from None
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=library.data_dir.root))
    try:
        with tar:
            return _import(library, tar, staging)
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{path} is damaged or truncated ({exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _import(library: Library, tar: tarfile.TarFile, staging: Path) -> ImportReport:
    members = _checked_members(tar)
    manifest = decode_manifest(
        _read_member(tar, members, MANIFEST_MEMBER),
        _read_member(tar, members, SIGNATURE_MEMBER),
        now=now_ms(),
    )
    described = _doc_roots(manifest.records)
    present = {root for name in members if (root := parse_blob_member(name)) is not None}
    if present != set(manifest.blobs):
        raise BundleError("the bundle's blobs do not match its manifest")
    for root, size in manifest.blobs.items():
        if described.get(root) != size:
            raise BundleError(
                f"blob {root.hex()[:12]} is not described by a document in the bundle"
            )

    staged = {
        root: _stage_blob(library, tar, members[blob_member(root)], root, staging)
        for root in manifest.blobs
    }

    report = ImportReport()
    added_roots = []
    try:
        for root, staged_path in staged.items():
            if not library.blobs.is_complete(root):
                library.blobs.add_file(staged_path)
                added_roots.append(root)
            if library.store.document(root) is None:
                chunk_size = library.blobs.manifest(root).chunk_size
                library.store.add_document(root, manifest.blobs[root], chunk_size, pinned=False)
            library.store.set_document_state(root, "complete")
        result = library.ingest(manifest.records)
    except BaseException:
        for root in added_roots:
            library.blobs.delete(root)
        raise
    report.records_added = len(result.added)
    report.duplicates = result.duplicates
    report.rejected = result.rejected
    report.blobs_added = len(added_roots)
    return report


def _checked_members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """Every member must be a regular file with one of the names the format allows."""
    members: dict[str, tarfile.TarInfo] = {}
    for info in tar.getmembers():
        name = info.name
        allowed = name in (MANIFEST_MEMBER, SIGNATURE_MEMBER) or parse_blob_member(name) is not None
        if not allowed:
            raise BundleError(f"the bundle holds an unexpected file {name[:80]!r}; refusing it")
        if not info.isreg():
            raise BundleError(f"{name!r} in the bundle is not a regular file; refusing it")
        if name in members:
            raise BundleError(f"{name!r} appears twice in the bundle")
        members[name] = info
    for required in (MANIFEST_MEMBER, SIGNATURE_MEMBER):
        if required not in members:
            raise BundleError(f"the bundle has no {required.rsplit('/', 1)[-1]}")
    return members


def _read_member(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str) -> bytes:
    fh = tar.extractfile(members[name])
    if fh is None:
        raise BundleError(f"cannot read {name!r} from the bundle")
    data = fh.read()
    if len(data) != members[name].size:
        raise BundleError(f"{name!r} in the bundle is truncated")
    return data


def _stage_blob(
    library: Library, tar: tarfile.TarFile, info: tarfile.TarInfo, root: bytes, staging: Path
) -> Path:
    """Copy one blob out of the tar and check it hashes to the root it claims."""
    fh = tar.extractfile(info)
    if fh is None:
        raise BundleError(f"cannot read blob {root.hex()[:12]} from the bundle")
    target = staging / root.hex()
    with open(target, "wb") as out:
        copied = 0
        while chunk := fh.read(_COPY_BUFFER):
            out.write(chunk)
            copied += len(chunk)
    if copied != info.size:
        raise BundleError(f"blob {root.hex()[:12]} in the bundle is truncated")
    if library.blobs.hash_file(target).root != root:
        raise BundleError(f"blob {root.hex()[:12]} in the bundle does not match its hash")
    return target
