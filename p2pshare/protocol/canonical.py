"""Canonical msgpack: the one byte form every value has, so signatures cover exact bytes.

Canonical means: maps with str keys in sorted order (no duplicates), minimal-width ints and
lengths, str as UTF-8 ``str`` family, bytes as ``bin`` family, no floats, no ext types, no trailing
bytes, at most ``MAX_DEPTH`` levels of nesting. We check by decoding and re-encoding and comparing,
which is the simplest rule another implementation can follow: any second spelling of a value
(a wider int, a longer length header, another key order, a repeated key) re-encodes differently.

``unpack`` is the whole check. ``decode`` and ``require_canonical`` are its two halves, for a
caller (records.py) that proves the value's types itself and may then skip the type walk.
"""

from __future__ import annotations

from typing import Any, NoReturn

import msgpack

from p2pshare.protocol.reasons import Reason, RecordError

Value = None | bool | int | str | bytes | list["Value"] | dict[str, "Value"]

MAX_DEPTH = 32  # lists/maps inside lists/maps; far beyond any message we define
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def _forbid_ext(code: int, data: bytes) -> NoReturn:
    raise RecordError(Reason.FORBIDDEN_TYPE, f"msgpack ext type {code} is not allowed")


def _sort_maps(value: Any, depth: int) -> Any:
    """Return ``value`` with every map's keys sorted; reject what a canonical value may not hold."""
    if depth > MAX_DEPTH:
        raise RecordError(Reason.MALFORMED, "value nested too deeply")
    if isinstance(value, dict):
        # Check every key before sorting: sorting str and bytes keys together raises TypeError.
        for key in value:
            if not isinstance(key, str):
                raise RecordError(Reason.FORBIDDEN_TYPE, "map keys must be strings")
        return {key: _sort_maps(value[key], depth + 1) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [_sort_maps(item, depth + 1) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | bytes):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise RecordError(Reason.FORBIDDEN_TYPE, "integer out of 64-bit range")
        return value
    raise RecordError(Reason.FORBIDDEN_TYPE, f"{type(value).__name__} values are not allowed")


def pack(value: Any) -> bytes:
    """Encode ``value`` canonically (sorted map keys, minimal ints, bin for bytes)."""
    sorted_value = _sort_maps(value, 0)
    try:
        return msgpack.packb(sorted_value, use_bin_type=True)  # type: ignore[no-any-return]
    except UnicodeEncodeError as exc:  # a str holding lone surrogates has no UTF-8 form
        raise RecordError(Reason.MALFORMED, "text is not valid Unicode") from exc


def decode(data: bytes, max_bytes: int) -> Any:
    """Decode one msgpack value from ``data`` WITHOUT the canonical check (see ``unpack``).

    Refuses oversize input, ext types, trailing bytes, invalid UTF-8 and nesting past msgpack's
    own stack limit; every failure is a RecordError. Lengths are bounded by ``len(data)`` (the
    msgpack default), so a header claiming a huge length cannot make us allocate.
    """
    if len(data) > max_bytes:
        raise RecordError(Reason.TOO_LARGE, f"{len(data)} bytes is over the {max_bytes}-byte limit")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_forbid_ext,
        )
    except msgpack.ExtraData as exc:
        raise RecordError(Reason.TRAILING_BYTES, "bytes follow the encoded value") from exc
    except RecordError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # msgpack decodes ext type -1 (timestamp) itself, before ext_hook; a bad one lands here.
        reason = Reason.FORBIDDEN_TYPE if "timestamp" in str(exc) else Reason.MALFORMED
        raise RecordError(reason, f"not valid msgpack: {exc}") from exc


def require_canonical(value: Any, data: bytes) -> None:
    """Raise unless ``data`` is exactly the canonical encoding of ``value`` (decoded from it)."""
    if pack(value) != data:  # pack() also refuses floats, ext values, non-str keys, deep nesting
        raise RecordError(Reason.NON_CANONICAL, "not the canonical encoding")


def unpack(data: bytes, max_bytes: int) -> Any:
    """Decode ``data`` and insist it is the canonical encoding of what it decodes to."""
    value = decode(data, max_bytes)
    require_canonical(value, data)
    return value
