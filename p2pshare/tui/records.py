"""Record views (the node's JSON) as the short texts the screens show. Pure functions."""

from __future__ import annotations

import time
from typing import Any

from p2pshare.protocol.views import size_text

KIND_LABELS = {
    "doc": "document",
    "rec": "recommends",
    "repost": "reposts",
    "profile": "profile",
    "follow": "follows",
    "unfollow": "unfollows",
    "retract": "retracts",
}
NO_LICENCE = "-"


def source(view: dict[str, Any]) -> dict[str, Any]:
    """The record a repost carries (what it is about), else the record itself."""
    original = view.get("original")
    return original if isinstance(original, dict) else view


def licence(view: dict[str, Any]) -> str:
    body = source(view).get("body") or {}
    value = body.get("licence")
    return str(value) if value else NO_LICENCE


def author(view: dict[str, Any]) -> str:
    name = view.get("author_name")
    return str(name) if name else short(str(view.get("author", "")))


def short(text: str, width: int = 12) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def age(created_ms: int, now_s: float | None = None) -> str:
    seconds = max(0, int((now_s if now_s is not None else time.time()) - created_ms / 1000))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


TRUST_LABELS = {0: "you", 1: "followed", 2: "2 hops"}


def feed_row(view: dict[str, Any], now_s: float | None = None) -> tuple[str, ...]:
    """Cells of one feed line: what, title, who, how near in trust, community, licence, when."""
    return (
        KIND_LABELS.get(str(view.get("kind")), str(view.get("kind"))),
        short(str(view.get("headline", "")), 34),
        short(author(view), 16),
        TRUST_LABELS.get(view.get("trust", 3), ""),
        str(view.get("community", "")),
        licence(view),
        age(int(view.get("created_ms", 0)), now_s),
    )


def is_document(view: dict[str, Any]) -> bool:
    return source(view).get("kind") == "doc"


def details(view: dict[str, Any]) -> str:
    """The document screen's text: everything a person needs to judge a record."""
    src = source(view)
    body = src.get("body") or {}
    lines = [f"[b]{view.get('headline', '')}[/b]", ""]
    lines.append(f"{KIND_LABELS.get(str(view.get('kind')), view.get('kind'))} by {author(view)}")
    lines.append(f"community   {view.get('community', '')}")
    lines.append(f"id          {view.get('id', '')}")
    if src is not view:
        lines.append(f"original    {src.get('id', '')} by {author(src)}")
        note = (view.get("body") or {}).get("note")
        if note:
            lines.append(f"note        {note}")
    if src.get("kind") == "doc":
        lines.append(f"licence     {body.get('licence', NO_LICENCE)}")
        lines.append(
            f"file        {body.get('filename', '')} ({size_text(int(body.get('size', 0)))})"
        )
        if body.get("tags"):
            lines.append(f"tags        {', '.join(body['tags'])}")
        lines.append(f"state       {view.get('document') or 'not downloaded'}")
        if view.get("path"):
            lines.append(f"saved at    {view['path']}")
        if body.get("description"):
            lines += ["", str(body["description"])]
    elif src.get("kind") == "rec":
        if "rating" in body:
            lines.append(f"rating      {'*' * int(body['rating'])}")
        lines += ["", str(body.get("text", ""))]
    return "\n".join(lines)
