"""Library operations with JSON-shaped parameters and results.

The node serves these over its control socket, and the CLI calls them directly when no node runs,
so "share", "list" or "retract" have one implementation whichever way they are reached. Methods
run on a worker thread in the node (SQLite and hashing block).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from p2pshare.node.bundles import export_bundle, import_bundle
from p2pshare.node.library import Library, LibraryError, name_in
from p2pshare.node.store import STRANGER, trust_distances
from p2pshare.protocol.keys import peer_id_from_public_key
from p2pshare.protocol.records import DOC, REC, SUBJECT_RECORD, Record, root_original
from p2pshare.protocol.views import headline, jsonable, record_to_json

Published = Callable[[Record], None]
MAX_PAGE = 500  # records in one answer, so that a frame stays under the control frame limit


def _str(params: dict[str, Any], name: str, default: str | None = None) -> str:
    value = params.get(name, default)
    if not isinstance(value, str):
        raise LibraryError(f"{name} must be text")
    return value


def _opt_str(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is not None and not isinstance(value, str):
        raise LibraryError(f"{name} must be text")
    return value


def _str_list(params: dict[str, Any], name: str) -> list[str]:
    value = params.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LibraryError(f"{name} must be a list of text")
    return value


def _opt_int(params: dict[str, Any], name: str) -> int | None:
    value = params.get(name)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise LibraryError(f"{name} must be a whole number")
    return value


class LibraryApi:
    """``call(method, params)`` -> JSON-shaped result; raises LibraryError for user mistakes."""

    def __init__(self, library: Library, on_published: Published | None = None) -> None:
        self.library = library
        self._on_published = on_published or (lambda record: None)
        self.methods: dict[str, Callable[[dict[str, Any]], Any]] = {
            "profile": self.profile,
            "share": self.share,
            "recommend": self.recommend,
            "repost": self.repost,
            "follow": self.follow,
            "unfollow": self.unfollow,
            "block": self.block,
            "unblock": self.unblock,
            "list": self.list,
            "feed": self.feed,
            "vouches": self.vouches,
            "people": self.people,
            "show": self.show,
            "search": self.search,
            "retract": self.retract,
            "export": self.export,
            "import": self.import_bundle,
            "counts": self.counts,
            "save": self.save,
        }

    def call(self, method: str, params: dict[str, Any]) -> Any:
        return self.methods[method](params)

    # --- views ------------------------------------------------------------------------------

    def view(self, record: Record) -> dict[str, Any]:
        """What a client needs to show a record without asking again."""
        lib = self.library
        out = record_to_json(record)
        out["author_name"] = lib.display_name(record.author)
        out["headline"] = headline(record)
        if record.kind == REC and record.body["subject_type"] == SUBJECT_RECORD:
            subject = lib.store.get(record.body["subject"])
            if subject is not None:  # what a recommendation is about, in words
                out["subject_title"] = headline(root_original(subject))
        source = root_original(record)
        if source.kind == DOC:
            out["document"] = lib.describe_document(record)
            path = lib.export_path(record)
            out["path"] = str(path) if path else None
        return out

    def _published(self, record: Record) -> dict[str, Any]:
        self._on_published(record)
        return self.view(record)

    # --- publishing -------------------------------------------------------------------------

    def profile(self, p: dict[str, Any]) -> dict[str, Any]:
        record = self.library.set_profile(
            _str(p, "name"),
            about=_str(p, "about", ""),
            website=_str(p, "website", ""),
            location=_str(p, "location", ""),
        )
        return self._published(record)

    def share(self, p: dict[str, Any]) -> dict[str, Any]:
        path = Path(_str(p, "path")).expanduser()
        if not path.exists():
            raise LibraryError(f"{path}: no such file")
        record = self.library.share(
            path,
            title=_str(p, "title"),
            description=_str(p, "description", ""),
            tags=_str_list(p, "tags"),
            licence=_str(p, "licence", "all-rights-reserved"),
            community=_str(p, "community", "public"),
            authors=_str_list(p, "authors"),
        )
        return self._published(record)

    def recommend(self, p: dict[str, Any]) -> dict[str, Any]:
        rating = _opt_int(p, "rating")
        if rating is not None and not 1 <= rating <= 5:
            raise LibraryError("the rating must be from 1 to 5")
        record = self.library.recommend(
            _str(p, "target"),
            text=_str(p, "text"),
            rating=rating,
            tags=_str_list(p, "tags"),
            community=_opt_str(p, "community"),
        )
        return self._published(record)

    def repost(self, p: dict[str, Any]) -> dict[str, Any]:
        record = self.library.repost(
            _str(p, "id"), note=_str(p, "note", ""), community=_opt_str(p, "community")
        )
        return self._published(record)

    def follow(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._published(self.library.follow(_str(p, "key")))

    def unfollow(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._published(self.library.unfollow(_str(p, "key")))

    def retract(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._published(self.library.retract(_str(p, "id")))

    def block(self, p: dict[str, Any]) -> dict[str, Any]:
        removed = self.library.block(_str(p, "key"))
        return {"removed": removed}

    def unblock(self, p: dict[str, Any]) -> dict[str, Any]:
        self.library.unblock(_str(p, "key"))
        return {}

    # --- reading ----------------------------------------------------------------------------

    def list(self, p: dict[str, Any]) -> dict[str, Any]:
        limit = _opt_int(p, "limit")
        mine = p.get("mine") is True  # only my own records ("My shares")
        records = self.library.store.list_records(
            kind=_opt_str(p, "kind"),
            community=_opt_str(p, "community"),
            author=self.library.identity.public_key if mine else None,
            limit=limit or None,
            offset=_opt_int(p, "offset") or 0,
        )
        return {"records": [self.view(r) for r in records], "total": self.library.store.count()}

    def feed(self, p: dict[str, Any]) -> dict[str, Any]:
        """What neighbours share, nearest in trust first (see ``Store.feed``), a page at a time.

        Params: ``limit``, ``offset``, ``snapshot`` (from an earlier page: page the same
        snapshot), ``count`` (false: skip counting the whole feed; ``total`` is then None).
        Each view carries ``trust`` (0 me, 1 followed, 2 two hops, 3 others) and
        ``recommended_by``: how many people I follow recommend what it is about
        (``recommended_by_me``: whether I do).
        """
        lib = self.library
        me = lib.identity.public_key
        limit = min(_opt_int(p, "limit") or 100, MAX_PAGE)
        page = lib.store.feed(
            me,
            limit=limit,
            offset=_opt_int(p, "offset") or 0,
            upto=_opt_int(p, "snapshot"),
            count=p.get("count") is not False,
        )
        followed = lib.store.following(me) - {me}
        about = {record.id: {record.id, root_original(record).id} for record, _ in page.items}
        vouched = lib.store.vouchers(followed | {me}, set().union(*about.values()))
        views = []
        for record, distance in page.items:
            view = self.view(record)
            view["trust"] = distance
            vouchers = set().union(*(vouched.get(s, ()) for s in about[record.id]))
            view["recommended_by"] = len(vouchers - {me})
            view["recommended_by_me"] = me in vouchers
            views.append(view)
        return {"records": views, "total": page.total, "snapshot": page.snapshot}

    def vouches(self, p: dict[str, Any]) -> dict[str, Any]:
        """Who vouches for a record: recommendations of it by me, whom I follow and whom they
        follow (nearest first), and every repost of it we hold (each with its chain)."""
        lib = self.library
        record = root_original(lib.find(_str(p, "id")))
        distance = trust_distances(lib.store.trust_tiers(lib.identity.public_key))
        recs = lib.store.recommenders(distance, [record.id]).get(record.id, [])
        recs.sort(key=lambda r: distance[r.author])
        reposts = lib.store.reposts_of(record.id)
        out: dict[str, list[dict[str, Any]]] = {"recommended_by": [], "reposted_by": []}
        for key, records in (("recommended_by", recs), ("reposted_by", reposts)):
            for found in records[:MAX_PAGE]:
                view = self.view(found)
                view["trust"] = distance.get(found.author, STRANGER)
                out[key].append(view)
        return out

    def people(self, p: dict[str, Any]) -> dict[str, Any]:
        """What I know of people: name, profile, trust, follow and block state, record count.

        ``keys``: peer ids to describe (e.g. the connected peers); ``following`` / ``blocked``:
        true adds everyone I follow / have blocked.
        """
        lib = self.library
        store = lib.store
        me = lib.identity.public_key
        tiers = store.trust_tiers(me)
        distance = trust_distances(tiers)
        keys = {lib.parse_key(k) for k in _str_list(p, "keys")}
        if p.get("following") is True:
            keys |= tiers[1]
        blocked = set(store.blocked())
        if p.get("blocked") is True:
            keys |= blocked
        followers = store.followers(me)
        people = []
        for key in sorted(keys, key=peer_id_from_public_key):
            profile = store.profile(key) or {}
            people.append(
                {
                    "peer_id": peer_id_from_public_key(key),
                    "name": name_in(profile, key),
                    "profile": jsonable(profile),
                    "me": key == me,
                    "trust": distance.get(key, STRANGER),
                    "following": key in tiers[1],
                    "follows_me": key in followers,
                    "blocked": key in blocked,
                    "records": store.count_by_author(key),
                }
            )
        return {"people": people}

    def show(self, p: dict[str, Any]) -> dict[str, Any]:
        return self.view(self.library.find(_str(p, "id")))

    def search(self, p: dict[str, Any]) -> dict[str, Any]:
        records = self.library.store.search(_str(p, "query"), limit=_opt_int(p, "limit") or 50)
        return {"records": [self.view(r) for r in records]}

    def counts(self, p: dict[str, Any]) -> dict[str, Any]:
        store = self.library.store
        return {"records": store.count(), "documents": store.count("doc")}

    def save(self, p: dict[str, Any]) -> dict[str, Any]:
        """Where a complete document is, or a copy of it at ``out`` (a file or a directory)."""
        lib = self.library
        record = lib.find(_str(p, "id"))
        source = root_original(record)
        if source.kind != DOC:
            raise LibraryError(f"{record.kind} records have no document to save")
        root = source.body["root"]
        if not lib.blobs.is_complete(root):
            raise LibraryError("the document is not downloaded yet; get it with: p2pshare get ID")
        out = _opt_str(p, "out")
        if out is None:
            return {"path": str(lib.blobs.path_of(root))}
        destination = Path(out).expanduser()
        if destination.is_dir():
            destination = destination / source.body["filename"]
        if destination.exists():
            raise LibraryError(f"{destination} already exists; choose another name")
        return {"path": str(lib.blobs.export(root, destination))}

    # --- bundles ----------------------------------------------------------------------------

    def export(self, p: dict[str, Any]) -> dict[str, Any]:
        ids = _str_list(p, "ids")
        lib = self.library
        records = [lib.find(i) for i in ids] if ids else lib.store.list_records()
        out = Path(_str(p, "out")).expanduser()
        if out.is_dir():
            raise LibraryError(
                f"{out} is a directory; give a file name such as {out / 'shares.p2pb'}"
            )
        n_records, n_blobs = export_bundle(lib, out, records)
        return {"records": n_records, "documents": n_blobs, "out": str(out)}

    def import_bundle(self, p: dict[str, Any]) -> dict[str, Any]:
        report = import_bundle(self.library, Path(_str(p, "file")).expanduser())
        return {
            "added": report.records_added,
            "duplicates": report.duplicates,
            "documents": report.blobs_added,
            "rejected": {reason.value: n for reason, n in report.rejected.items()},
        }


def identity_view(library: Library) -> dict[str, Any]:
    key = library.identity.public_key
    return {"peer_id": peer_id_from_public_key(key), "public_key": key.hex()}
