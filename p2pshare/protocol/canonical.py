"""Canonical msgpack: the one byte form every value has, so signatures cover exact bytes.

Canonical means: maps with str keys in sorted order, minimal-width ints and lengths, str as UTF-8
``str`` family, bytes as ``bin`` family, no floats, no ext types, no trailing bytes. We check by
decoding and re-encoding and comparing, which is the simplest rule another implementation can follow.
"""

from __future__ import annotations

from typing import Any

import msgpack

from p2pshare.protocol.reasons import Reason, RecordError

Value = None | bool | int | str | bytes | list["Value"] | dict[str, "Value"]

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def _forbid_ext(code: int, data: bytes) -> Any:
    raise RecordError(Reason.FORBIDDEN_TYPE, f"msgpack ext type {code} is not allowed")


def _sort_maps(value: Any, depth: int) -> Any:
    """Return ``value`` with every map's keys sorted; reject what a canonical value may not hold."""
    if depth > 32:
        raise RecordError(Reason.MALFORMED, "value nested too deeply")
    if isinstance(value, dict):
        out = {}
        for key in sorted(value):
            if not isinstance(key, str):
                raise RecordError(Reason.FORBIDDEN_TYPE, "map keys must be strings")
            out[key] = _sort_maps(value[key], depth + 1)
        return out
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
    return msgpack.packb(_sort_maps(value, 0), use_bin_type=True)


def unpack(data: bytes, max_bytes: int) -> Any:
    """Decode ``data`` and insist it is the canonical encoding of what it decodes to."""
    if len(data) > max_bytes:
        raise RecordError(Reason.TOO_LARGE, f"{len(data)} bytes is over the {max_bytes}-byte limit")
    try:
        value = msgpack.unpackb(
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
        raise RecordError(Reason.MALFORMED, f"not valid msgpack: {exc}") from exc
    if pack(value) != data:  # pack() also refuses floats and non-str keys
        raise RecordError(Reason.NON_CANONICAL, "not the canonical encoding")
    return value

