"""The local library: identity + record store + blob store, and the operations on them.

The CLI uses it directly when no node runs, and the node uses the same object, so "share a file" or
"apply a retract" has exactly one implementation.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from p2pshare.node.blobs import BlobStore
from p2pshare.node.config import Config, load_config
from p2pshare.node.datadir import DataDir, DataDirLock
from p2pshare.node.identity import Identity, load_key_file
from p2pshare.node.store import IngestResult, Store
from p2pshare.protocol import limits as L
from p2pshare.protocol.communities import DEFAULT_COMMUNITY, normalise_community
from p2pshare.protocol.keys import (
    KeyFormatError,
    format_id,
    is_id_prefix,
    parse_id,
    parse_public_key,
    peer_id_from_public_key,
    short_id,
)
from p2pshare.protocol.licences import ALL_RIGHTS_RESERVED, allows_redistribution, normalise_licence
from p2pshare.protocol.reasons import RecordError
from p2pshare.protocol.records import (
    DOC,
    FOLLOW,
    PROFILE,
    REC,
    REPOST,
    RETRACT,
    SUBJECT_PEER,
    SUBJECT_RECORD,
    SUBJECT_THING,
    SUBJECT_URL,
    UNFOLLOW,
    Record,
    create_record,
    root_original,
)


class LibraryError(Exception):
    """A user-facing failure: the message is one sentence that says what to do."""


class Library:
    """Open with :meth:`open`; holds the data-dir lock until :meth:`close`."""

    def __init__(
        self,
        data_dir: DataDir,
        identity: Identity,
        store: Store,
        blobs: BlobStore,
        lock: DataDirLock,
    ) -> None:
        self.data_dir = data_dir
        self.identity = identity
        self.store = store
        self.blobs = blobs
        self._lock = lock

    @classmethod
    def open(cls, data_dir: DataDir) -> Library:
        if not data_dir.identity.exists():
            raise LibraryError(
                f"{data_dir.root} has no identity yet; create one with: p2pshare init --name NAME"
            )
        lock = DataDirLock(data_dir)
        lock.acquire()
        try:
            identity = load_key_file(data_dir.identity)
            store = Store.open(data_dir.store)
            blobs = BlobStore(data_dir.blobs)
        except BaseException:
            lock.release()
            raise
        return cls(data_dir, identity, store, blobs, lock)

    def close(self) -> None:
        try:
            self.blobs.close()
            self.store.close()
        finally:
            self._lock.release()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def config(self) -> Config:
        return load_config(self.data_dir.config)

    # --- ingesting and publishing ---------------------------------------------------------

    def ingest(self, records: Iterable[Record]) -> IngestResult:
        """Store records and drop blobs nothing refers to any more (retracts, blocks)."""
        result = self.store.ingest(records)
        self._drop_blobs(result.orphaned_roots)
        return result

    def _drop_blobs(self, roots: Iterable[bytes]) -> None:
        for root in roots:
            self.blobs.delete(root)

    def publish(
        self, kind: str, body: Mapping[str, Any], community: str = DEFAULT_COMMUNITY
    ) -> Record:
        """Sign a new record of ours, store it, and return it."""
        try:
            record = create_record(
                self.identity.signing_key, kind, body, community=normalise_community(community)
            )
        except (RecordError, ValueError) as exc:
            raise LibraryError(str(exc)) from exc
        result = self.ingest([record])
        if result.rejected:
            reason = next(iter(result.rejected))
            raise LibraryError(f"the store refused the new {kind} record ({reason.value})")
        return record

    def set_profile(self, name: str, **fields: str) -> Record:
        body = {"name": name, **{k: v for k, v in fields.items() if v}}
        return self.publish(PROFILE, body)

    def share(
        self,
        path: Path,
        *,
        title: str,
        description: str = "",
        tags: Sequence[str] = (),
        licence: str = ALL_RIGHTS_RESERVED,
        community: str = DEFAULT_COMMUNITY,
        authors: Sequence[str] = (),
    ) -> Record:
        """Add a file to the blob store (one root per content) and publish its ``doc`` record."""
        canonical_licence = normalise_licence(licence)
        if canonical_licence is None:
            raise LibraryError(
                f"unknown licence id {licence!r}; use an SPDX id such as CC-BY-4.0, "
                f"or {ALL_RIGHTS_RESERVED}"
            )
        if not path.is_file():
            raise LibraryError(f"{path} is not a readable file")
        try:
            manifest = self.blobs.add_file(path)
        except OSError as exc:
            raise LibraryError(f"cannot read {path}: {exc.strerror or exc}") from exc
        self.store.add_document(manifest.root, manifest.size, manifest.chunk_size, pinned=True)
        self.store.set_document_state(manifest.root, "complete")
        body: dict[str, Any] = {
            "title": title,
            "licence": canonical_licence,
            "mime": mimetypes.guess_type(path.name)[0] or "application/octet-stream",
            "filename": _plain_filename(path.name),
            "size": manifest.size,
            "root": manifest.root,
            "chunk_size": manifest.chunk_size,
        }
        if description:
            body["description"] = description
        if tags:
            body["tags"] = list(tags)
        if authors:
            body["authors"] = list(authors)
        return self.publish(DOC, body, community)

    def recommend(
        self,
        target: str,
        *,
        text: str,
        rating: int | None = None,
        tags: Sequence[str] = (),
        community: str | None = None,
    ) -> Record:
        subject_type, subject, target_record = self._parse_subject(target)
        body: dict[str, Any] = {"subject_type": subject_type, "subject": subject, "text": text}
        if rating is not None:
            body["rating"] = rating
        if tags:
            body["tags"] = list(tags)
        if community is None:
            community = target_record.community if target_record else DEFAULT_COMMUNITY
        return self.publish(REC, body, community)

    def _parse_subject(self, target: str) -> tuple[str, bytes | str, Record | None]:
        target = target.strip()
        if target.startswith(("http://", "https://")):
            return SUBJECT_URL, target, None
        if target.startswith("thing:"):
            return SUBJECT_THING, target.removeprefix("thing:").strip(), None
        try:
            return SUBJECT_PEER, parse_public_key(target), None
        except KeyFormatError:
            pass
        if is_id_prefix(target) or len(target) == 64:
            record = self.find(target)
            return SUBJECT_RECORD, record.id, record
        raise LibraryError(
            f"{target!r} is not a record id, a peer key or a URL "
            "(for anything else, write thing:WHAT)"
        )

    def repost(self, ident: str, *, note: str = "", community: str | None = None) -> Record:
        original = self.find(ident)
        source = root_original(original)
        if source.kind == DOC and not allows_redistribution(source.body["licence"]):
            raise LibraryError(
                f"{source.body['title']!r} is licensed {source.body['licence']}, which does not "
                "allow republishing; recommend it instead"
            )
        body: dict[str, Any] = {"original": original.wire}
        if note:
            body["note"] = note
        return self.publish(REPOST, body, community or original.community)

    def follow(self, key: str) -> Record:
        return self.publish(FOLLOW, {"target": self.parse_key(key)})

    def unfollow(self, key: str) -> Record:
        return self.publish(UNFOLLOW, {"target": self.parse_key(key)})

    def block(self, key: str) -> int:
        """Block locally: purge the author's records and refuse them from now on."""
        author = self.parse_key(key)
        if author == self.identity.public_key:
            raise LibraryError("you cannot block yourself")
        before = self.store.count()
        self._drop_blobs(self.store.block(author))
        return before - self.store.count()

    def unblock(self, key: str) -> None:
        self.store.unblock(self.parse_key(key))

    def retract(self, ident: str) -> Record:
        target = self.find(ident)
        if target.author != self.identity.public_key:
            raise LibraryError("you can only retract your own records")
        return self.publish(RETRACT, {"target": target.id}, target.community)

    @staticmethod
    def parse_key(text: str) -> bytes:
        """A peer id or hex public key from a person, or a LibraryError saying what is wrong."""
        try:
            return parse_public_key(text)
        except KeyFormatError as exc:
            raise LibraryError(str(exc)) from None

    # --- reading ----------------------------------------------------------------------------

    def find(self, ident: str) -> Record:
        """A record by full id (base32 or hex) or by a unique base32 prefix of at least 4 chars."""
        text = ident.strip().lower()
        try:
            record = self.store.get(parse_id(text))
        except KeyFormatError:
            record = None
            if len(text) < 4 or not is_id_prefix(text):
                raise LibraryError(f"{ident!r} is not a record id") from None
            matches = self.store.resolve_prefix(text)
            if len(matches) > 1:
                shown = ", ".join(short_id(m) for m in matches[:5])
                raise LibraryError(
                    f"{ident!r} matches several records ({shown}); give more of it"
                ) from None
            if matches:
                record = self.store.get(matches[0])
        if record is None:
            raise LibraryError(f"no record {ident!r} in this store")
        return record

    def display_name(self, author: bytes) -> str:
        return name_in(self.store.profile(author), author)

    def describe_document(self, record: Record) -> str:
        root = root_original(record).body["root"]
        doc = self.store.document(root)
        return doc["state"] if doc else "missing"

    def export_path(self, record: Record) -> Path | None:
        root = root_original(record).body["root"]
        return self.blobs.path_of(root) if self.blobs.is_complete(root) else None

    def record_id_text(self, record: Record) -> str:
        return format_id(record.id)


def _plain_filename(name: str) -> str:
    """The file's name as peers will see it: no control characters, within the limit."""
    cleaned = "".join(c if c >= " " and c != "\x7f" else "_" for c in name)
    return cleaned[: L.MAX_FILENAME_CHARS]


def name_in(profile: dict[str, Any] | None, author: bytes) -> str:
    """The profile's name, else the end of the peer id (what people see for an author)."""
    if profile and profile.get("name"):
        return str(profile["name"])
    return peer_id_from_public_key(author)[-8:]
