"""An in-memory stand-in for a node's control client: the TUI unit tests' only fake.

It answers the methods the app calls with the shapes the node's control API returns (see
p2pshare/node/api.py and service.py), keeps a log of calls, and lets a test push events as the
node would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

from p2pshare.control.errors import ConnectionClosed, ControlError
from p2pshare.protocol.control_wire import ErrorCode, Event
from p2pshare.protocol.licences import allows_redistribution

ME = "12D3KooWMe"
ANNA = "12D3KooWAnna"
BEN = "12D3KooWBen"


def doc_view(
    i: int, licence: str = "CC-BY-4.0", author: str = ANNA, trust: int = 1
) -> dict[str, Any]:
    return {
        "id": f"doc{i:04d}" + "a" * 20,
        "kind": "doc",
        "author": author,
        "author_name": "Anna's Bikes" if author == ANNA else author[-4:],
        "created_ms": 1_790_000_000_000 - i * 1000,
        "community": "bikes",
        "headline": f"Repair guide {i}",
        "body": {
            "title": f"Repair guide {i}",
            "licence": licence,
            "filename": f"guide-{i}.pdf",
            "size": 3_000_000,
            "tags": ["repair"],
            "description": "How to fix a puncture.",
        },
        "root": f"{i:064x}",
        "document": "missing",
        "trust": trust,
        "recommended_by": 0,
    }


def rec_view(text: str, author: str = BEN, rating: int | None = 4) -> dict[str, Any]:
    body: dict[str, Any] = {"subject_type": "url", "subject": "https://example.org", "text": text}
    if rating:
        body["rating"] = rating
    return {
        "id": "rec" + text.replace(" ", "")[:10] + "b" * 20,
        "kind": "rec",
        "author": author,
        "author_name": "Ben's Books",
        "created_ms": 1_789_990_000_000,
        "community": "public",
        "headline": f"url https://example.org: {text}",
        "body": body,
        "trust": 3,
    }


class FakeClient:
    def __init__(self, views: Iterable[dict[str, Any]] = ()) -> None:
        self.views = list(views)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.subscribed = asyncio.Event()
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self.closed = False
        self.communities = {"public", "bikes"}
        self.profile: dict[str, Any] = {"name": "Me"}
        self.network = [{"peer_id": ANNA, "connected": True, "addrs": [], "invalid": 0}]
        self.following = {ANNA}
        self.blocked: set[str] = set()
        self.vouch_data: dict[str, dict[str, Any]] = {}
        self.transfers: list[dict[str, Any]] = []
        self.delays: dict[str, float] = {}  # method -> seconds the node takes to answer

    # --- the NodeClient shape -------------------------------------------------------------

    async def call(self, method: str, /, **params: Any) -> Any:
        self.calls.append((method, params))
        if method in self.delays:
            await asyncio.sleep(self.delays[method])
        handler = getattr(self, "_" + method, None)
        if handler is None:
            raise ControlError(ErrorCode.UNKNOWN_METHOD, f"unknown method {method}")
        return handler(**params)

    async def subscribe(self, events: Iterable[str] | None = None) -> Any:
        self.subscribed.set()
        return {}

    async def events(self) -> AsyncIterator[Event]:
        while True:
            event = await self._events.get()
            if event is None:
                raise ConnectionClosed("the node closed the connection")
            yield event

    async def close(self) -> None:
        self.closed = True

    # --- test controls ----------------------------------------------------------------------

    def push(self, name: str, data: Any) -> None:
        self._events.put_nowait(Event(name, data))

    def vanish(self) -> None:
        self._events.put_nowait(None)

    def called(self, method: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == method]

    # --- methods ----------------------------------------------------------------------------

    def _find(self, ident: str) -> dict[str, Any]:
        for view in self.views:
            if view["id"] == ident:
                return view
        raise ControlError(ErrorCode.REFUSED, f"no record {ident!r} in this store")

    def _status(self) -> dict[str, Any]:
        return {
            "peer_id": ME,
            "node": "p2pshare 0.1.0",
            "connected_peers": sum(1 for p in self.network if p["connected"]),
            "records": len(self.views),
            "documents": sum(1 for v in self.views if v["kind"] == "doc"),
            "communities": sorted(self.communities),
            "transfers": self.transfers,
            "data_dir": "/home/me/.local/share/p2pshare",
        }

    def _share(self, path: str, title: str, licence: str, **params: Any) -> dict[str, Any]:
        if not path.endswith(".pdf"):
            raise ControlError(ErrorCode.REFUSED, f"{path}: no such file")
        view = doc_view(len(self.views), licence=licence, author=ME, trust=0)
        view.update(headline=title, shared_params={"path": path, **params})
        view["body"]["title"] = title
        self.views.insert(0, view)
        return view

    def _retract(self, id: str) -> dict[str, Any]:
        self.views = [v for v in self.views if v["id"] != id]
        return {"id": "retract" + id, "kind": "retract", "headline": id}

    def _profile(self, name: str, **fields: Any) -> dict[str, Any]:
        self.profile = {"name": name, **fields}
        return {"id": "profile", "kind": "profile", "headline": name}

    def _leave(self, community: str) -> dict[str, Any]:
        self.communities.discard(community)
        return {"community": community}

    def _list(
        self, limit: int | None = None, offset: int = 0, mine: bool = False, **_: Any
    ) -> dict[str, Any]:
        views = [v for v in self.views if v["author"] == ME] if mine else self.views
        chosen = views[offset : offset + limit if limit else None]
        return {"records": chosen, "total": len(self.views)}

    def _feed(
        self, limit: int = 100, offset: int = 0, snapshot: int | None = None, count: bool = True
    ) -> dict[str, Any]:
        chosen = self.views[offset : offset + limit]
        return {
            "records": chosen,
            "total": len(self.views) if count else None,
            "snapshot": snapshot or len(self.views),
        }

    def _show(self, id: str) -> dict[str, Any]:
        return dict(self._find(id))

    def _vouches(self, id: str) -> dict[str, Any]:
        return self.vouch_data.get(id, {"recommended_by": [], "reposted_by": []})

    def _search(self, query: str, limit: int = 50) -> dict[str, Any]:
        words = query.lower().split()
        found = [v for v in self.views if all(w in v["headline"].lower() for w in words)]
        return {"records": found[:limit]}

    def _repost(self, id: str, **_: Any) -> dict[str, Any]:
        view = self._find(id)
        licence = view["body"].get("licence")
        if view["kind"] == "doc" and not allows_redistribution(licence):
            raise ControlError(ErrorCode.REFUSED, "the node refuses: licence")
        return {**view, "id": "repost" + id, "kind": "repost", "original": view, "author": ME}

    def _recommend(self, target: str, text: str, **_: Any) -> dict[str, Any]:
        return {"id": "rec" + target, "kind": "rec", "headline": text}

    def _get(self, id: str) -> dict[str, Any]:
        view = self._find(id)
        state = "complete" if view["document"] == "complete" else "downloading"
        return {"root": view["root"], "title": view["body"]["title"], "size": 3, "state": state}

    def _follow(self, key: str) -> dict[str, Any]:
        self.following.add(key)
        return {"headline": key}

    def _unfollow(self, key: str) -> dict[str, Any]:
        self.following.discard(key)
        return {"headline": key}

    def _block(self, key: str) -> dict[str, Any]:
        before = len(self.views)
        self.views = [v for v in self.views if v["author"] != key]
        self.blocked.add(key)
        return {"removed": before - len(self.views)}

    def _unblock(self, key: str) -> dict[str, Any]:
        self.blocked.discard(key)
        return {}

    def _peers(self) -> dict[str, Any]:
        return {"peers": self.network}

    def _people(
        self, keys: list[str] | None = None, following: bool = False, blocked: bool = False
    ) -> dict[str, Any]:
        wanted = set(keys or [])
        if following:
            wanted |= self.following
        if blocked:
            wanted |= self.blocked
        names = {ANNA: "Anna's Bikes", BEN: "Ben's Books", ME: self.profile["name"]}
        people = []
        for key in sorted(wanted):
            people.append(
                {
                    "peer_id": key,
                    "name": names.get(key, key[-4:]),
                    "profile": self.profile if key == ME else {"name": names.get(key, "")},
                    "me": key == ME,
                    "trust": 0 if key == ME else 1 if key in self.following else 3,
                    "following": key in self.following,
                    "follows_me": key == ANNA,
                    "blocked": key in self.blocked,
                    "records": sum(1 for v in self.views if v["author"] == key),
                }
            )
        return {"people": people}

    def _invite(self, community: str | None = None) -> dict[str, Any]:
        return {"code": f"p2ps1invitecodefor{community or 'public'}"}

    def _join(self, code: str | None = None, community: str | None = None) -> dict[str, Any]:
        if community is not None:
            self.communities.add(community)
            return {"community": community}
        assert code is not None
        if not code.startswith("p2ps1"):
            raise ControlError(ErrorCode.INVALID_PARAMS, "that is not an invite code")
        return {"peer_id": ANNA, "community": "bikes"}

    def _save(self, id: str, out: str | None = None) -> dict[str, Any]:
        view = self._find(id)
        if view["document"] != "complete":
            raise ControlError(
                ErrorCode.REFUSED,
                "the document is not downloaded yet; get it with: p2pshare get ID",
            )
        name = view["body"]["filename"]
        return {"path": f"{out}/{name}" if out else f"/blobs/{name}"}
