"""An in-memory stand-in for a node's control client: the TUI unit tests' only fake.

It answers the methods the app calls with the same shapes the node's control API returns, keeps
a log of calls, and lets a test push events as the node would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

from p2pshare.control.errors import ConnectionClosed, ControlError
from p2pshare.protocol.control_wire import ErrorCode, Event

ME = "12D3KooWMe"
REDISTRIBUTABLE = {"CC-BY-4.0", "CC0-1.0", "CC-BY-SA-4.0"}


def doc_view(i: int, licence: str = "CC-BY-4.0", author: str = "12D3KooWAnna") -> dict[str, Any]:
    return {
        "id": f"doc{i:04d}" + "a" * 20,
        "kind": "doc",
        "author": author,
        "author_name": "Anna's Bikes",
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
        "document": "not downloaded",
    }


class FakeClient:
    def __init__(self, views: Iterable[dict[str, Any]] = ()) -> None:
        self.views = list(views)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.subscribed = asyncio.Event()
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self.closed = False
        self.communities = {"public", "bikes"}
        self.name = ""

    # --- the NodeClient shape -------------------------------------------------------------

    async def call(self, method: str, /, **params: Any) -> Any:
        self.calls.append((method, params))
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
        raise ControlError(ErrorCode.NOT_FOUND, f"no record {ident}")

    def _status(self) -> dict[str, Any]:
        return {
            "peer_id": ME,
            "connected_peers": 2,
            "records": len(self.views),
            "communities": sorted(self.communities),
        }

    def _share(self, path: str, title: str, licence: str, **params: Any) -> dict[str, Any]:
        if not path.endswith(".pdf"):
            raise ControlError(ErrorCode.REFUSED, f"{path}: no such file")
        view = doc_view(len(self.views), licence=licence, author=ME)
        view.update(headline=title, shared_params={"path": path, **params})
        self.views.insert(0, view)
        return view

    def _retract(self, id: str) -> dict[str, Any]:
        self.views = [v for v in self.views if v["id"] != id]
        return {"id": "retract" + id, "kind": "retract", "headline": id}

    def _profile(self, name: str, **_: Any) -> dict[str, Any]:
        self.name = name
        return {"id": "profile", "kind": "profile", "headline": name}

    def _leave(self, community: str) -> dict[str, Any]:
        self.communities.discard(community)
        return {"community": community}

    def _list(
        self, limit: int | None = None, offset: int = 0, mine: bool = False, **_: Any
    ) -> dict[str, Any]:
        views = [v for v in self.views if v["author"] == ME] if mine else self.views
        chosen = views[offset : offset + limit if limit else None]
        return {"records": chosen, "total": len(views)}

    def _feed(self, limit: int = 100, offset: int = 0) -> dict[str, Any]:
        return self._list(limit=limit, offset=offset)

    def _search(self, query: str, limit: int = 50) -> dict[str, Any]:
        words = query.lower().split()
        found = [v for v in self.views if all(w in v["headline"].lower() for w in words)]
        return {"records": found[:limit]}

    def _repost(self, id: str, **_: Any) -> dict[str, Any]:
        view = self._find(id)
        licence = view["body"].get("licence")
        if view["kind"] == "doc" and licence not in REDISTRIBUTABLE:
            raise ControlError(
                ErrorCode.REFUSED,
                f"{view['body']['title']!r} is licensed {licence}, which does not allow "
                "republishing; recommend it instead",
            )
        return {**view, "id": "repost" + id, "kind": "repost", "original": view}

    def _recommend(self, target: str, text: str, **_: Any) -> dict[str, Any]:
        return {"id": "rec" + target, "kind": "rec", "headline": text}

    def _get(self, id: str) -> dict[str, Any]:
        view = self._find(id)
        return {"root": view["root"], "title": view["body"]["title"], "state": "downloading"}

    def _follow(self, key: str) -> dict[str, Any]:
        return {"headline": key}

    def _block(self, key: str) -> dict[str, Any]:
        before = len(self.views)
        self.views = [v for v in self.views if v["author"] != key]
        return {"removed": before - len(self.views)}

    def _peers(self) -> dict[str, Any]:
        return {"peers": [{"peer_id": "12D3KooWAnna", "connected": True, "invalid": 0}]}

    def _invite(self, **_: Any) -> dict[str, Any]:
        return {"code": "p2ps1invitecode"}

    def _join(self, code: str | None = None, community: str | None = None) -> dict[str, Any]:
        if community is not None:
            self.communities.add(community)
            return {"community": community}
        assert code is not None
        if not code.startswith("p2ps1"):
            raise ControlError(ErrorCode.INVALID_PARAMS, "that is not an invite code")
        return {"peer_id": "12D3KooWAnna", "community": "bikes"}

    def _save(self, id: str, out: str | None = None) -> dict[str, Any]:
        raise ControlError(
            ErrorCode.REFUSED, "the document is not downloaded yet; get it with: p2pshare get ID"
        )
