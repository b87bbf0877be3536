"""How records look outside the wire: JSON for scripts, one-line summaries for people."""

from __future__ import annotations

from typing import Any

from p2pshare.protocol.keys import format_id, peer_id_from_public_key, short_id
from p2pshare.protocol.records import DOC, REC, REPOST, Record, root_original


def jsonable(value: Any) -> Any:
    """Bytes become hex; everything else in a body is already JSON-shaped."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def record_to_json(record: Record) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": format_id(record.id),
        "kind": record.kind,
        "author": peer_id_from_public_key(record.author),
        "created_ms": record.created_ms,
        "community": record.community,
        "body": jsonable(dict(record.body)),
    }
    source = root_original(record)
    if source.kind == DOC:
        out["root"] = source.body["root"].hex()
    if record.original is not None:
        out["original"] = record_to_json(record.original)
    return out


def headline(record: Record) -> str:
    """The few words that tell a person what a record is about."""
    body = record.body
    if record.kind == DOC:
        return str(body["title"])
    if record.kind == REC:
        subject = body["subject"]
        shown = short_id(subject) if isinstance(subject, bytes) else str(subject)
        rating = f" {'*' * body['rating']}" if "rating" in body else ""
        return f"{body['subject_type']} {shown}{rating}: {body['text']}"
    if record.kind == REPOST and record.original is not None:
        return f"reposts {short_id(record.original.id)}: {headline(record.original)}"
    if record.kind == "profile":
        return str(body["name"])
    if "target" in body:
        target = body["target"]
        return peer_id_from_public_key(target) if record.kind != "retract" else short_id(target)
    return ""


def size_text(size: int) -> str:
    """A byte count as people read it: 512 B, 3.0 MB (powers of 1000, as disks are sold)."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"
