"""Offline bundles: everything verified on import, nothing stored when anything is wrong."""

from __future__ import annotations

import dataclasses
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from p2pshare.node.bundles import export_bundle, import_bundle
from p2pshare.node.library import Library
from p2pshare.protocol.bundles import (
    MANIFEST_MEMBER,
    SIGNATURE_MEMBER,
    BundleError,
    blob_member,
    encode_manifest,
)
from p2pshare.protocol.records import now_ms

MakeLibrary = Callable[..., Library]


@pytest.fixture
def source(make_library: MakeLibrary, tmp_path: Path) -> Library:
    lib = make_library("source")
    lib.set_profile("Bakery")
    doc = tmp_path / "menu.pdf"
    doc.write_bytes(os.urandom(600_000))
    shared = lib.share(doc, title="Winter menu", licence="CC-BY-4.0", tags=["bread"])
    assert shared.kind == "doc"
    lib.recommend("https://example.org", text="nice")
    return lib


def _snapshot(lib: Library) -> tuple[list[bytes], list[Path]]:
    ids = [r.id for r in lib.store.list_records()]
    files = sorted(p for p in lib.data_dir.root.rglob("*") if p.is_file() and "blobs" in p.parts)
    return ids, files


def _rewrite(bundle: Path, out: Path, change: Callable[[str, bytes], tuple[str, bytes]]) -> None:
    with tarfile.open(bundle) as src, tarfile.open(out, "w") as dst:
        for info in src.getmembers():
            fh = src.extractfile(info)
            assert fh is not None
            name, data = change(info.name, fh.read())
            new = tarfile.TarInfo(name)
            new.size = len(data)
            dst.addfile(new, io.BytesIO(data))


def test_round_trip_brings_records_and_documents(
    source: Library, make_library: MakeLibrary, tmp_path: Path
) -> None:
    bundle = tmp_path / "stick.p2pb"
    n_records, n_blobs = export_bundle(source, bundle, source.store.list_records())
    assert (n_records, n_blobs) == (3, 1)
    target = make_library("target")
    report = import_bundle(target, bundle)
    assert report.records_added == 3 and report.blobs_added == 1
    assert {r.id for r in target.store.list_records()} == {
        r.id for r in source.store.list_records()
    }
    doc = target.store.list_records(kind="doc")[0]
    root = doc.body["root"]
    assert target.blobs.path_of(root).read_bytes() == source.blobs.path_of(root).read_bytes()
    again = import_bundle(target, bundle)
    assert again.records_added == 0 and again.duplicates == 3


def _expect_refusal(target: Library, bundle: Path, needle: str) -> None:
    before = _snapshot(target)
    with pytest.raises(BundleError, match=needle):
        import_bundle(target, bundle)
    assert _snapshot(target) == before
    leftovers = [p for p in target.data_dir.root.iterdir() if p.name.startswith(".import-")]
    assert leftovers == []


def test_tampered_manifest_is_refused(
    source: Library, make_library: MakeLibrary, tmp_path: Path
) -> None:
    bundle, bad = tmp_path / "ok.p2pb", tmp_path / "bad.p2pb"
    export_bundle(source, bundle, source.store.list_records())

    def flip(name: str, data: bytes) -> tuple[str, bytes]:
        if name == MANIFEST_MEMBER:
            i = data.index(b"Winter")
            data = data[:i] + b"W1nter" + data[i + 6 :]
        return name, data

    _rewrite(bundle, bad, flip)
    _expect_refusal(make_library("target"), bad, "signature does not verify")


def test_tampered_blob_is_refused(
    source: Library, make_library: MakeLibrary, tmp_path: Path
) -> None:
    bundle, bad = tmp_path / "ok.p2pb", tmp_path / "bad.p2pb"
    export_bundle(source, bundle, source.store.list_records())

    def flip(name: str, data: bytes) -> tuple[str, bytes]:
        if "/blobs/" in name:
            data = data[:1000] + bytes([data[1000] ^ 1]) + data[1001:]
        return name, data

    _rewrite(bundle, bad, flip)
    _expect_refusal(make_library("target"), bad, "does not match its hash")


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_bundle_is_refused(
    source: Library, make_library: MakeLibrary, tmp_path: Path, keep: float
) -> None:
    bundle = tmp_path / "ok.p2pb"
    export_bundle(source, bundle, source.store.list_records())
    data = bundle.read_bytes()
    bad = tmp_path / "cut.p2pb"
    bad.write_bytes(data[: int(len(data) * keep)])
    _expect_refusal(make_library("target"), bad, "damaged|truncated|not a p2pshare bundle")


@pytest.mark.parametrize(
    "evil_name",
    ["../evil", "/etc/evil", "p2pshare-bundle/../../evil", "p2pshare-bundle/blobs/../../evil"],
)
def test_path_escapes_are_refused_and_nothing_is_written(
    source: Library, make_library: MakeLibrary, tmp_path: Path, evil_name: str
) -> None:
    bundle, bad = tmp_path / "ok.p2pb", tmp_path / "bad.p2pb"
    export_bundle(source, bundle, source.store.list_records())
    with tarfile.open(bundle) as src, tarfile.open(bad, "w") as dst:
        for info in src.getmembers():
            dst.addfile(info, src.extractfile(info))
        evil = tarfile.TarInfo(evil_name)
        evil.size = 4
        dst.addfile(evil, io.BytesIO(b"evil"))
    target = make_library("target")
    _expect_refusal(target, bad, "unexpected file")
    assert not list(tmp_path.rglob("evil"))
    assert not Path("/etc/evil").exists()


def test_symlink_member_is_refused(
    source: Library, make_library: MakeLibrary, tmp_path: Path
) -> None:
    bundle, bad = tmp_path / "ok.p2pb", tmp_path / "bad.p2pb"
    export_bundle(source, bundle, source.store.list_records())
    with tarfile.open(bundle) as src, tarfile.open(bad, "w") as dst:
        for info in src.getmembers():
            if info.name == SIGNATURE_MEMBER:
                link = tarfile.TarInfo(SIGNATURE_MEMBER)
                link.type = tarfile.SYMTYPE
                link.linkname = "/etc/passwd"
                dst.addfile(link)
            else:
                dst.addfile(info, src.extractfile(info))
    _expect_refusal(make_library("target"), bad, "not a regular file")


def test_forged_record_inside_a_validly_signed_bundle_is_refused(
    source: Library, make_library: MakeLibrary, tmp_path: Path
) -> None:
    records = source.store.list_records()
    doc = next(r for r in records if r.kind == "doc")
    forged_wire = doc.wire.replace(b"Winter menu", b"Summer menu")
    forged = dataclasses.replace(doc, wire=forged_wire)
    manifest, signature = encode_manifest(source.identity.signing_key, now_ms(), [forged], {})
    bad = tmp_path / "forged.p2pb"
    with tarfile.open(bad, "w") as tar:
        for name, data in ((MANIFEST_MEMBER, manifest), (SIGNATURE_MEMBER, signature)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    _expect_refusal(make_library("target"), bad, "invalid")


def test_blob_not_described_by_any_document_is_refused(
    source: Library, make_library: MakeLibrary, tmp_path: Path
) -> None:
    rec = next(r for r in source.store.list_records() if r.kind == "rec")
    junk = os.urandom(1000)
    root = source.blobs.hash_file(_write(tmp_path / "junk", junk)).root
    manifest, signature = encode_manifest(
        source.identity.signing_key, now_ms(), [rec], {root: len(junk)}
    )
    bad = tmp_path / "junk.p2pb"
    with tarfile.open(bad, "w") as tar:
        for name, data in (
            (MANIFEST_MEMBER, manifest),
            (SIGNATURE_MEMBER, signature),
            (blob_member(root), junk),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    _expect_refusal(make_library("target"), bad, "not described")


def test_not_a_bundle_is_refused(make_library: MakeLibrary, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    _expect_refusal(make_library("target"), bad, "not a p2pshare bundle")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
