"""Record views (the node's JSON) as the short texts the screens show. Pure functions, so the
wording is tested without a terminal."""

from __future__ import annotations

import textwrap
import time
from typing import Any

from p2pshare.protocol.licences import ALL_RIGHTS_RESERVED, allows_redistribution, licence_terms
from p2pshare.protocol.views import size_text

KIND_LABELS = {
    "doc": "document",
    "rec": "recommend",
    "repost": "repost",
    "profile": "profile",
    "follow": "follows",
    "unfollow": "unfollows",
    "retract": "retracts",
}
NO_LICENCE = "-"
TRUST_LABELS = {0: "you", 1: "followed", 2: "2 hops", 3: ""}
LABEL_WIDTH = 12
DETAIL_WIDTH = 88  # the document screen's text wraps here (readable, and fits 100 columns)
TRUST_WORDS = {
    0: "you",
    1: "someone you follow",
    2: "followed by someone you follow",
    3: "not followed by you or anyone you follow",
}


def source(view: dict[str, Any]) -> dict[str, Any]:
    """The record a repost carries, followed to the first one (what it is about), else the
    record itself."""
    while isinstance(view.get("original"), dict):
        view = view["original"]
    return view


def chain(view: dict[str, Any]) -> list[dict[str, Any]]:
    """The record and every record it embeds, outermost first: who passed it on, in order."""
    out = [view]
    while isinstance(out[-1].get("original"), dict):
        out.append(out[-1]["original"])
    return out


def licence(view: dict[str, Any]) -> str:
    body = source(view).get("body") or {}
    value = body.get("licence")
    return str(value) if value else NO_LICENCE


def licence_cell(view: dict[str, Any]) -> str:
    text = licence(view)
    return "all rights rsvd" if text == ALL_RIGHTS_RESERVED else text


def licence_sentence(licence_id: str, *, named: bool = True) -> str:
    """``licence_terms``, starting with the licence's id when ``named``."""
    said = licence_terms(licence_id)
    if not named or licence_id == ALL_RIGHTS_RESERVED:
        return said
    return f"{licence_id}: {said[0].lower()}{said[1:]}"


def republish_refusal(view: dict[str, Any]) -> str | None:
    """Why this record may not be republished, or None if it may (the node checks again)."""
    src = source(view)
    if src.get("kind") != "doc":
        return None
    licence_id = licence(view)
    if allows_redistribution(licence_id):
        return None
    title = (src.get("body") or {}).get("title", "this document")
    return (
        f"{title!r} is licensed {licence_id}, which does not allow republishing; "
        "press r to recommend it instead."
    )


def author(view: dict[str, Any]) -> str:
    name = view.get("author_name")
    return str(name) if name else short(str(view.get("author", "")))


def short(text: str, width: int = 12) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def short_peer(peer_id: str) -> str:
    """A peer id people can tell apart at a glance: its start and its end."""
    return f"{peer_id[:8]}…{peer_id[-6:]}"


def age(created_ms: int, now_s: float | None = None) -> str:
    seconds = max(0, int((now_s if now_s is not None else time.time()) - created_ms / 1000))
    for unit, size in (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def when(created_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(created_ms / 1000))


def title(view: dict[str, Any]) -> str:
    """What a line in a list says the record is about."""
    kind = view.get("kind")
    body = view.get("body") or {}
    if kind == "repost":
        src = source(view)
        return f"{title(src)} (by {author(src)})"
    if kind == "rec":
        rating = f" {'*' * int(body['rating'])}" if body.get("rating") else ""
        subject = view.get("subject_title") or _subject(body)
        return f"{subject}{rating}: {body.get('text', '')}"
    return str(view.get("headline") or body.get("title") or "")


def _subject(body: dict[str, Any]) -> str:
    kind = body.get("subject_type")
    subject = str(body.get("subject", ""))
    if kind in ("record", "peer"):
        return f"{kind} {subject[:12]}"
    return subject


def vouched(view: dict[str, Any]) -> str:
    """The "recommended by" cell: N you follow, and you."""
    count = int(view.get("recommended_by") or 0)
    if view.get("recommended_by_me"):
        return f"you + {count}" if count else "you"
    return f"{count} you follow" if count else ""


def is_document(view: dict[str, Any]) -> bool:
    return source(view).get("kind") == "doc"


def document_state(view: dict[str, Any]) -> str:
    state = view.get("document") or "missing"
    return {"missing": "not downloaded", "partial": "partly downloaded"}.get(state, state)


def field(label: str, value: str) -> str:
    """``label`` then ``value``, the value wrapped under itself (peers' text is escaped)."""
    lines = textwrap.wrap(value, DETAIL_WIDTH - LABEL_WIDTH, break_on_hyphens=False) or [""]
    pad = " " * LABEL_WIDTH
    first = label.ljust(LABEL_WIDTH) + escape(lines[0])
    return "\n".join([first, *(pad + escape(line) for line in lines[1:])])


def details(view: dict[str, Any]) -> str:
    """The document screen's main text: everything a person needs to judge a record."""
    src = source(view)
    body = src.get("body") or {}
    kind_label = KIND_LABELS.get(str(src.get("kind")), str(src.get("kind")))
    lines = [f"[b]{escape(title(src))}[/b]", ""]
    lines.append(field(kind_label, f"by {author(src)} ({src.get('author', '')})"))
    lines.append(field("trust", TRUST_WORDS.get(int(view.get("trust", 3)), "")))
    lines.append(field("community", str(src.get("community", ""))))
    lines.append(field("published", when(int(src.get("created_ms", 0)))))
    lines.append(field("id", str(src.get("id", ""))))
    if src.get("kind") == "doc":
        lic = licence(src)
        lines.append(field("licence", f"{lic}. {licence_sentence(lic, named=False)}"))
        size = size_text(int(body.get("size", 0)))
        lines.append(field("file", f"{body.get('filename', '')} ({size})"))
        if body.get("authors"):
            lines.append(field("authors", ", ".join(body["authors"])))
        if body.get("tags"):
            lines.append(field("tags", ", ".join(body["tags"])))
        lines.append(field("state", document_state(view)))
        if view.get("path"):
            lines.append(field("stored at", str(view["path"])))
        if body.get("description"):
            lines += ["", escape(str(body["description"]))]
    elif src.get("kind") == "rec":
        lines.append(field("about", _subject(body)))
        if body.get("rating"):
            lines.append(field("rating", "*" * int(body["rating"])))
        lines += ["", escape(str(body.get("text", "")))]
    return "\n".join(lines)


def chain_text(view: dict[str, Any]) -> str:
    """How the record reached us: each repost, then the original."""
    links = chain(view)
    if len(links) == 1:
        return "Published by its author; nobody passed it on to you."
    lines = []
    for link in links[:-1]:
        note = (link.get("body") or {}).get("note")
        said = f": {escape(str(note))}" if note else ""
        lines.append(f"reposted by {escape(author(link))}, {when(int(link['created_ms']))}{said}")
    original = links[-1]
    lines.append(f"published by {escape(author(original))}, {when(int(original['created_ms']))}")
    return "\n".join(lines)


def vouches_text(vouches: dict[str, Any] | None) -> str:
    """Who recommends and who republished a record (the node's ``vouches`` answer)."""
    if vouches is None:
        return "Asking the node who vouches for it…"
    lines = ["[b]Who vouches for it[/b]"]
    recs = vouches.get("recommended_by") or []
    if recs:
        lines.append(f"Recommended by {len(recs)} (you, whom you follow, whom they follow):")
        for rec in recs:
            body = rec.get("body") or {}
            stars = f" {'*' * int(body['rating'])}" if body.get("rating") else ""
            who = f"{author(rec)} ({TRUST_LABELS.get(int(rec.get('trust', 3))) or 'other'})"
            lines.append(f"  {escape(who)}{stars}: {escape(str(body.get('text', '')))}")
    else:
        lines.append("Nobody you follow, nor anyone they follow, has recommended it yet.")
    reposts = vouches.get("reposted_by") or []
    if reposts:
        names = ", ".join(author(r) for r in reposts[:10])
        more = f" and {len(reposts) - 10} more" if len(reposts) > 10 else ""
        lines.append(f"Republished by {len(reposts)}: {escape(names)}{more}")
    return "\n".join(lines)


def escape(text: str) -> str:
    """Text from peers must never be read as markup. Every ``[`` is escaped (a fragment may
    hold half a tag that the next fragment would close); a trailing backslash would escape the
    tag after it, and Textual's markup has no way to write one there, so it gets a space."""
    text = text.replace("[", "\\[")
    return text + " " if text.endswith("\\") else text
