"""Reason codes for rejected input: every rejection names one, and nodes count them."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a record (or other peer input) was refused; the value is stable and shown to people."""

    TOO_LARGE = "too-large"
    MALFORMED = "malformed"
    NON_CANONICAL = "non-canonical"
    TRAILING_BYTES = "trailing-bytes"
    FORBIDDEN_TYPE = "forbidden-type"
    BAD_VERSION = "bad-version"
    BAD_KIND = "bad-kind"
    BAD_AUTHOR = "bad-author"
    BAD_TIMESTAMP = "bad-timestamp"
    FROM_FUTURE = "from-future"
    BAD_COMMUNITY = "bad-community"
    BAD_BODY = "bad-body"
    MISSING_FIELD = "missing-field"
    UNKNOWN_FIELD = "unknown-field"
    FIELD_TOO_LONG = "field-too-long"
    TOO_MANY_TAGS = "too-many-tags"
    BAD_LICENCE = "bad-licence"
    BAD_SIGNATURE = "bad-signature"
    BAD_REPOST = "bad-repost"
    LICENCE_FORBIDS = "licence-forbids"
    NOT_AUTHOR = "not-author"
    BLOCKED = "blocked"
    RETRACTED = "retracted"


class RecordError(ValueError):
    """A record was refused; ``reason`` is the counted code, the message is for people."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[type[RecordError], tuple[Reason, str]]:
        # Default exception pickling calls cls(*args) with the message only; worker processes
        # (the store's checking pool) must be able to send a RecordError back whole.
        return (type(self), (self.reason, self.args[0]))

    def __str__(self) -> str:
        return f"{self.args[0]} ({self.reason.value})"
