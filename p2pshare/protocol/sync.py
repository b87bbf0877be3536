"""Record sync ``/p2pshare/sync/1``: range-based set reconciliation over ``(created_ms, id)``.

Two peers that share a community find which record ids one has and the other lacks, with traffic
that grows with the *difference*, not with the set: two peers already in sync exchange one
fingerprint and an empty reply (about 40 bytes). The scheme is Negentropy's (NIP-77, the range-based
set reconciliation of Meyer/Willow): both sides sort their items by ``(created_ms, id)``, compare a
fingerprint of a range, and where fingerprints differ either split the range or list the ids in it.
This module is the sans-IO state machine (``Reconciler``); it never touches a socket or a database:
the local set is reached through the small ``SyncSet`` interface.

Items and bounds. An item is ``(created_ms, id)``, ``id`` a 32-byte record id, ordered as tuples
(bytes compare lexicographically). A *bound* is ``(ts, prefix)``, ``prefix`` 0..32 bytes, ordered
the same way, so ``(ts, b"")`` sorts below every item at ``ts``; ``None`` is the bound +infinity.
A range ``[lower, upper)`` holds the items ``lower <= item < upper``.

Fingerprint of a range (identical to Negentropy's, so its implementations can be reused)::

    fp = SHA-256( sum_le || varint(count) )[:16]

``sum_le`` is the sum of the ids, each read as a little-endian 256-bit integer, modulo 2**256,
written back as 32 little-endian bytes; ``varint`` is Negentropy's: base-128 digits, most
significant first, the high bit set on every byte but the last (0 is one zero byte). Why a sum and
not XOR: XOR is linear over GF(2), so anyone who can mint ~256 records can solve for a set of ids
whose XOR hides another set (Gaussian elimination); forging a collision of sums mod 2**256 is a
subset-sum / generalised-birthday problem, far harder, and the hash over sum and count hides the
algebra from the wire. Addition is also invertible, so a sorted set with prefix sums answers any
range's fingerprint in O(log n). 16 bytes leave a 2**-128 chance of an accidental match.

Message (one frame, canonical msgpack as ``canonical.py`` defines it, at most MAX_MESSAGE_BYTES =
65,536 bytes; a sender may choose a lower limit but must accept up to this)::

    {"r": [range, ...], "v": 1}

``v`` is the version (only 1 exists). ``r`` lists at most MAX_RANGES_PER_MESSAGE ranges in
ascending order; the first range's lower bound is ``(0, b"")``, each later range's lower bound is
the previous range's upper bound, and everything from the last upper bound to +infinity is
implicitly *skip* (so ``"r": []`` means "nothing left to do"). A range is an array whose first
element is its mode::

    [0, delta, prefix]                      skip: nothing to do here
    [1, delta, prefix, fp]                  fingerprint: the sender's 16-byte fp of its items here
    [2, delta, prefix, ids, stamps]         id list: ALL the sender's items in this range
    [3, delta, prefix, ids, bits]           id reply: answers the sender's id list for the range
                                            that starts at this range's lower bound

``delta``/``prefix`` give the upper bound: ``ts`` = previous upper bound's ts (0 for the first
range) + ``delta`` (a uint, the result at most MAX_CREATED_MS), ``prefix`` = 0..32 bytes; or
``delta = nil`` with ``prefix = b""`` for +infinity, allowed only in the last range. Upper bounds
strictly increase. Two skips are never adjacent and the last range is never a skip.

``ids`` is one ``bin`` holding 32-byte ids back to back (distinct, so a multiple of 32 bytes).
``stamps`` (id lists only) is an array of one uint per id giving its ``created_ms``: the first
relative to the range's lower bound's ts, each next one relative to the one before; the items
``(created_ms, id)`` must strictly ascend and lie inside the range. They let the receiver look
each listed item up instead of reading its whole range. An id reply's ids carry no timestamps:
they are only ever fetched. ``bits`` is a bitmap over the items of the id list being answered,
in that list's order: bit ``0x80 >> (i % 8)`` of byte ``i // 8`` set means "I lack your id i";
exactly ``ceil(n / 8)`` bytes, padding bits zero. At most MAX_IDS_PER_MESSAGE ids in one message
(the frame size implies it).

Exchange. The initiator sends ``[1, nil, b"", fp]``, its fingerprint of everything (or the id
list ``[2, nil, b"", b"", []]`` if it has nothing). Then the sides alternate; for each range of a
received message, in order, the receiver answers:

* skip -> skip.
* fingerprint -> skip if its own fingerprint of the range is equal; otherwise, if it holds at most
  its id-list threshold (ID_LIST_THRESHOLD, 8) items there, an id list of them, else its
  fingerprints of BRANCHING (8) sub-ranges holding nearly equal numbers of its items.
* id list -> an id reply over the same lower bound: ``ids`` = its ids in the range that are not in
  the list, ``bits`` = which listed ids it lacks. Both sides now know the range's difference.
  If the ids do not fit the frame, the reply's upper bound is cut short (still above the lower
  bound) and reconciliation of the rest continues as below.
* id reply -> learn from it (no output of its own beyond skip).

When the answer would not fit the frame, the receiver stops answering at that point and sends its
fingerprint of everything from there to +infinity (Negentropy does the same), continuing to read
the remaining id replies. A message is *final* when it holds no fingerprint and no id list: its
sender is done after sending it, its receiver is done after reading it (and sends nothing).
An id list must be answered in the very next message, by an id reply starting at its lower bound
or by a fingerprint range covering that bound (the reopened remainder); being skipped, or an id
reply that answers no id list of the previous message, is an error.

An id (a hash over its record) has exactly one ``created_ms``; local sets must not break that.

Results: ``want_ids`` (the peer has them, we lack them: fetch them) and ``offer_ids`` (we have them,
the peer lacks them: it will ask, or we may push). Both sides learn both. The peer's claims are
claims: fetched records must still be checked, and their community too.

Limits: a peer cannot cause more than ``max_rounds`` (MAX_ROUNDS) messages, each at most 64 KiB,
with at most MAX_RANGES_PER_MESSAGE ranges and MAX_IDS_PER_MESSAGE ids. With a SortedSyncSet,
answering one message costs O(log n) per range and listed id plus the ids it sends.
Anything malformed raises ``SyncProtocolError``: drop the stream and count it against the peer.
The sync stream must tell the responder which community it is about before the first message.
"""

from __future__ import annotations

import hashlib
import itertools
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, Protocol

import msgpack

from p2pshare.protocol import canonical
from p2pshare.protocol import limits as L
from p2pshare.protocol.reasons import RecordError

PROTOCOL_ID = "/p2pshare/sync/1"
VERSION = 1
ID_BYTES = 32
FINGERPRINT_BYTES = 16
MAX_PREFIX_BYTES = ID_BYTES
MAX_MESSAGE_BYTES = 64 * 1024
MIN_FRAME_LIMIT = 4096  # room for any single split or id list, so every message makes progress
MAX_RANGES_PER_MESSAGE = 4096
MAX_IDS_PER_MESSAGE = MAX_MESSAGE_BYTES // ID_BYTES
MAX_ROUNDS = 1024  # messages received per reconciliation; ~2M missing ids at 64 KiB a message
# Measured (100k vs 100k, 100 differences): 16/32 (Negentropy's) 126 KB in 10 messages, 16/16
# 96 KB in 7, 8/8 71 KB in 8, 4/4 62 KB in 11. Either side may pick its own; these are ours.
BRANCHING = 8  # sub-ranges a mismatched range is split into
ID_LIST_THRESHOLD = 8  # at most this many items in a mismatched range: list them instead
SCAN_PAGE = 4096  # items read from the SyncSet at once, so a huge range never sits in memory

_MOD = 2**256

Item = tuple[int, bytes]  # (created_ms, id)
Bound = tuple[int, bytes]  # (ts, id prefix); None stands for +infinity where a bound may be open
MIN_BOUND: Bound = (0, b"")


class SyncProtocolError(ValueError):
    """The peer sent something this protocol does not allow: drop the stream, score the peer."""


class SyncStateError(RuntimeError):
    """The caller drove the state machine out of order (a bug on our side, not the peer's)."""


class Role(StrEnum):
    """Who opened the stream; the protocol is otherwise symmetric."""

    INITIATOR = "initiator"
    RESPONDER = "responder"


class Mode(IntEnum):
    """A range's mode; the value is the wire integer."""

    SKIP = 0
    FINGERPRINT = 1
    ID_LIST = 2
    ID_REPLY = 3


# --- fingerprints and bounds ----------------------------------------------------------------------


def id_value(record_id: bytes) -> int:
    """The id as the little-endian integer the fingerprint sums."""
    return int.from_bytes(record_id, "little")


def _varint(n: int) -> bytes:
    digits = [n & 0x7F]
    n >>= 7
    while n:
        digits.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(digits))


def fingerprint(count: int, id_sum: int) -> bytes:
    """Negentropy's fingerprint of a range holding ``count`` ids that sum to ``id_sum``."""
    data = (id_sum % _MOD).to_bytes(32, "little") + _varint(count)
    return hashlib.sha256(data).digest()[:FINGERPRINT_BYTES]


def separator(below: Item, item: Item) -> Bound:
    """The shortest bound ``b`` with ``below < b <= item``: what splits two neighbouring items."""
    if below[0] != item[0]:
        return (item[0], b"")
    common = 0
    for a, b in zip(below[1], item[1], strict=False):
        if a != b:
            break
        common += 1
    return (item[0], item[1][: common + 1])


def _after(item: Item) -> Bound:
    """The least bound above ``item``: where a paged scan resumes."""
    return (item[0], item[1] + b"\x00")


# --- the local set --------------------------------------------------------------------------------


class SyncSet(Protocol):
    """What reconciliation needs from the local set; the node backs it with its store.

    Every method takes a range ``[lo, hi)``; ``hi = None`` is +infinity. None of them needs the
    whole set in memory.
    """

    def summary(self, lo: Bound, hi: Bound | None) -> tuple[int, int]:
        """(count, sum of id_value(id) mod 2**256) over the items in the range."""
        ...

    def items(self, lo: Bound, hi: Bound | None, limit: int) -> Sequence[Item]:
        """The first ``limit`` items in the range, ascending."""
        ...

    def split_points(self, lo: Bound, hi: Bound | None, parts: int) -> list[tuple[Item, Item]]:
        """Cut the range's items into ``parts`` runs of nearly equal length (parts <= count).

        One pair per cut, ascending: (last item before the cut, first item after it).
        """
        ...


def _check_item(item: object) -> Item:
    if (
        not isinstance(item, tuple)
        or len(item) != 2
        or not isinstance(item[0], int)
        or isinstance(item[0], bool)
        or not 0 <= item[0] <= L.MAX_CREATED_MS
        or not isinstance(item[1], bytes)
        or len(item[1]) != ID_BYTES
    ):
        raise ValueError(f"a sync item is (created_ms, 32-byte id), not {item!r}")
    return item


def _cut_ranks(count: int, parts: int) -> list[int]:
    return [count * k // parts for k in range(1, parts)]


class SortedSyncSet:
    """An in-memory snapshot: a sorted list plus prefix sums, so every query is O(log n)."""

    def __init__(self, items: Iterable[Item]) -> None:
        ordered = [_check_item(item) for item in items]
        ordered.sort()  # linear when already sorted, as a store's range query returns them
        self._items: list[Item] = [
            item for index, item in enumerate(ordered) if index == 0 or ordered[index - 1] != item
        ]
        sums = itertools.accumulate((id_value(i) for _, i in self._items), initial=0)
        self._prefix: list[int] = list(sums)

    def __len__(self) -> int:
        return len(self._items)

    def _span(self, lo: Bound, hi: Bound | None) -> tuple[int, int]:
        start = bisect_left(self._items, lo)
        end = len(self._items) if hi is None else bisect_left(self._items, hi)
        return start, max(start, end)

    def summary(self, lo: Bound, hi: Bound | None) -> tuple[int, int]:
        start, end = self._span(lo, hi)
        return end - start, (self._prefix[end] - self._prefix[start]) % _MOD

    def items(self, lo: Bound, hi: Bound | None, limit: int) -> Sequence[Item]:
        start, end = self._span(lo, hi)
        return self._items[start : min(end, start + limit)]

    def split_points(self, lo: Bound, hi: Bound | None, parts: int) -> list[tuple[Item, Item]]:
        start, end = self._span(lo, hi)
        ranks = _cut_ranks(end - start, parts)
        return [(self._items[start + r - 1], self._items[start + r]) for r in ranks]


RangeQuery = Callable[[Bound | None, Bound | None, int | None], Sequence[Item]]


class QuerySyncSet:
    """A SyncSet over a range query such as ``partial(store.range_items, community)``.

    Memory stays at one page; summary and split points read the range (O(range) per call), so
    prefer a ``SortedSyncSet`` snapshot unless the set is too large to hold.
    """

    def __init__(self, range_items: RangeQuery, page: int = SCAN_PAGE) -> None:
        if page < 1:
            raise ValueError("page must be at least 1")
        self._query = range_items
        self._page = page

    def _scan(self, lo: Bound, hi: Bound | None) -> Iterator[Item]:
        while True:
            rows = self._query(lo, hi, self._page)
            yield from rows
            if len(rows) < self._page:
                return
            lo = _after(rows[-1])

    def summary(self, lo: Bound, hi: Bound | None) -> tuple[int, int]:
        count = total = 0
        for _, record_id in self._scan(lo, hi):
            count += 1
            total += id_value(record_id)
        return count, total % _MOD

    def items(self, lo: Bound, hi: Bound | None, limit: int) -> Sequence[Item]:
        return list(self._query(lo, hi, limit))

    def split_points(self, lo: Bound, hi: Bound | None, parts: int) -> list[tuple[Item, Item]]:
        count, _ = self.summary(lo, hi)
        wanted = set(_cut_ranks(count, parts))
        cuts: list[tuple[Item, Item]] = []
        previous: Item | None = None
        for rank, item in enumerate(self._scan(lo, hi)):
            if rank in wanted and previous is not None:
                cuts.append((previous, item))
                if len(cuts) == len(wanted):
                    break
            previous = item
        return cuts


# --- wire form ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Range:
    """One range of a message; its lower bound is implied by the range before it."""

    mode: Mode
    upper: Bound | None
    fingerprint: bytes = b""
    items: tuple[Item, ...] = ()  # an id list's items
    ids: tuple[bytes, ...] = ()  # an id reply's ids
    bits: bytes = b""


def _wire_range(item: Range, base_ts: int) -> list[Any]:
    if item.upper is None:
        head: list[Any] = [int(item.mode), None, b""]
    else:
        head = [int(item.mode), item.upper[0] - base_ts, item.upper[1]]
    if item.mode is Mode.FINGERPRINT:
        return [*head, item.fingerprint]
    if item.mode is Mode.ID_LIST:
        stamps, previous = [], base_ts
        for ts, _ in item.items:
            stamps.append(ts - previous)
            previous = ts
        return [*head, b"".join(i for _, i in item.items), stamps]
    if item.mode is Mode.ID_REPLY:
        return [*head, b"".join(item.ids), item.bits]
    return head


def _wire_size(item: Range, base_ts: int) -> int:
    return len(msgpack.packb(_wire_range(item, base_ts), use_bin_type=True))


def encode_message(ranges: Sequence[Range]) -> bytes:
    """The canonical wire form of a message (no checks: our own ranges are built valid)."""
    wire: list[Any] = []
    base_ts = 0
    for item in ranges:
        wire.append(_wire_range(item, base_ts))
        if item.upper is not None:
            base_ts = item.upper[0]
    return canonical.pack({"r": wire, "v": VERSION})


def _is_uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _bin(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise SyncProtocolError(f"{what} must be bin")
    return value


def _ids(value: object) -> tuple[bytes, ...]:
    blob = _bin(value, "ids")
    if len(blob) % ID_BYTES:
        raise SyncProtocolError(f"ids must be whole {ID_BYTES}-byte ids")
    ids = tuple(blob[i : i + ID_BYTES] for i in range(0, len(blob), ID_BYTES))
    if len(set(ids)) != len(ids):
        raise SyncProtocolError("an id is listed twice")
    return ids


_ARITY = {Mode.SKIP: 3, Mode.FINGERPRINT: 4, Mode.ID_LIST: 5, Mode.ID_REPLY: 5}


def _id_list_items(
    ids: tuple[bytes, ...], stamps: object, lower: Bound, upper: Bound | None
) -> tuple[Item, ...]:
    """Pair ids with their timestamps; each item must lie in its range, in ascending order."""
    if not isinstance(stamps, list) or len(stamps) != len(ids):
        raise SyncProtocolError("an id list has one timestamp delta per id")
    items: list[Item] = []
    ts, previous = lower[0], lower
    for stamp, record_id in zip(stamps, ids, strict=True):
        if not _is_uint(stamp) or ts + stamp > L.MAX_CREATED_MS:
            raise SyncProtocolError("a timestamp delta must be a uint within MAX_CREATED_MS")
        ts += stamp
        item = (ts, record_id)
        if not previous <= item or (upper is not None and not item < upper):
            raise SyncProtocolError("an id list's items must ascend inside their range")
        items.append(item)
        previous = _after(item)
    return tuple(items)


def _decode_range(value: object, previous: Bound) -> Range:
    if not isinstance(value, list) or not value or not _is_uint(value[0]) or value[0] > 3:
        raise SyncProtocolError("a range must be [mode, delta, prefix, ...] with mode 0..3")
    mode = Mode(value[0])
    if len(value) != _ARITY[mode]:
        raise SyncProtocolError(f"a mode {int(mode)} range has {_ARITY[mode]} elements")
    delta, prefix = value[1], _bin(value[2], "bound prefix")
    upper: Bound | None
    if delta is None:
        if prefix:
            raise SyncProtocolError("the infinite bound has an empty prefix")
        upper = None
    elif _is_uint(delta) and previous[0] + delta <= L.MAX_CREATED_MS:
        if len(prefix) > MAX_PREFIX_BYTES:
            raise SyncProtocolError(f"a bound prefix is at most {MAX_PREFIX_BYTES} bytes")
        upper = (previous[0] + delta, prefix)
        if upper <= previous:
            raise SyncProtocolError("range bounds must strictly increase")
    else:
        raise SyncProtocolError("a bound delta must be nil or a uint within MAX_CREATED_MS")
    if mode is Mode.FINGERPRINT:
        fp = _bin(value[3], "fingerprint")
        if len(fp) != FINGERPRINT_BYTES:
            raise SyncProtocolError(f"a fingerprint is {FINGERPRINT_BYTES} bytes")
        return Range(mode, upper, fingerprint=fp)
    if mode is Mode.ID_LIST:
        return Range(mode, upper, items=_id_list_items(_ids(value[3]), value[4], previous, upper))
    if mode is Mode.ID_REPLY:
        return Range(mode, upper, ids=_ids(value[3]), bits=_bin(value[4], "bits"))
    return Range(mode, upper)


def show_value(value: object) -> str:
    """A short rendering of a peer's value for an error message (which ends up in the log)."""
    text = (
        repr(value) if isinstance(value, str | bytes | int) else f"of type {type(value).__name__}"
    )
    return text if len(text) <= 40 else text[:37] + "..."


def decode_message(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> list[Range]:
    """Parse and check a peer's message; anything outside the documented form is refused."""
    try:
        value = canonical.unpack(data, max_bytes)
    except RecordError as exc:
        raise SyncProtocolError(f"not a sync message: {exc}") from exc
    if not isinstance(value, dict) or set(value) != {"r", "v"}:
        raise SyncProtocolError('a sync message is a map with exactly "r" and "v"')
    if value["v"] != VERSION or isinstance(value["v"], bool):
        raise SyncProtocolError(f"unsupported sync version {show_value(value['v'])}")
    wire = value["r"]
    if not isinstance(wire, list) or len(wire) > MAX_RANGES_PER_MESSAGE:
        raise SyncProtocolError(f"r must list at most {MAX_RANGES_PER_MESSAGE} ranges")
    ranges: list[Range] = []
    previous: Bound | None = MIN_BOUND
    for item in wire:
        if previous is None:
            raise SyncProtocolError("only the last range may reach infinity")
        ranges.append(_decode_range(item, previous))
        previous = ranges[-1].upper
    _check_shape(ranges)
    return ranges


def _check_shape(ranges: list[Range]) -> None:
    if ranges and ranges[-1].mode is Mode.SKIP:
        raise SyncProtocolError("the last range must not be a skip")
    for first, second in itertools.pairwise(ranges):
        if first.mode is Mode.SKIP and second.mode is Mode.SKIP:
            raise SyncProtocolError("two skips must be merged into one")
    if sum(len(item.ids) + len(item.items) for item in ranges) > MAX_IDS_PER_MESSAGE:
        raise SyncProtocolError(f"more than {MAX_IDS_PER_MESSAGE} ids in one message")


# --- building a reply within the frame ------------------------------------------------------------

_HEADER_BYTES = 9  # map(2) + "r" + array16 header + "v" + 1
_RESERVE = 96  # one open skip (<= 45 bytes) + the remainder fingerprint (<= 23) + header, rounded
_ID_REPLY_OVERHEAD = 1 + 9 + 2 + MAX_PREFIX_BYTES + 1 + 5 + 3  # array, delta, prefix, mode, bins


@dataclass
class _Pending:
    upper: Bound | None
    ids: tuple[bytes, ...]


class _Output:
    """The ranges of the message being built, kept within the frame limit."""

    def __init__(self, limit: int) -> None:
        self.ranges: list[Range] = []
        self.pending: dict[Bound, _Pending] = {}
        self.cursor: Bound = MIN_BOUND  # upper bound of the last range: the next lower bound
        self.obligations = 0  # fingerprints and id lists: ranges the peer must answer
        self._limit = limit
        self._closed = 0  # wire bytes of every range except a trailing skip
        self._base_ts = 0  # ts of the upper bound before the trailing range

    def _open_skip_size(self) -> int:
        if self.ranges and self.ranges[-1].mode is Mode.SKIP:
            return _wire_size(self.ranges[-1], self._base_ts)
        return 0

    def _slots(self, new: int, reserve: bool) -> bool:
        """Whether ``new`` more ranges fit (and, if ``reserve``, a later skip and remainder)."""
        return len(self.ranges) + new + (2 if reserve else 0) <= MAX_RANGES_PER_MESSAGE

    def room(self, reserve: bool = True) -> int:
        """Bytes free for one more non-skip range, keeping the remainder's share if ``reserve``."""
        if not self._slots(1, reserve):
            return 0
        used = _HEADER_BYTES + self._closed + self._open_skip_size() + (_RESERVE if reserve else 0)
        return self._limit - used

    def skip(self, upper: Bound | None) -> None:
        if self.ranges and self.ranges[-1].mode is Mode.SKIP:
            self.ranges[-1] = Range(Mode.SKIP, upper)
        else:
            self._base_ts = self.cursor[0]
            self.ranges.append(Range(Mode.SKIP, upper))
        if upper is not None:
            self.cursor = upper

    def try_add(self, new: Sequence[Range], reserve: bool = True) -> bool:
        """Append ``new`` (no skips) if it fits, keeping room for the remainder if ``reserve``."""
        if not self._slots(len(new), reserve):
            return False
        size, base_ts = 0, self.cursor[0]
        for item in new:
            size += _wire_size(item, base_ts)
            base_ts = base_ts if item.upper is None else item.upper[0]
        if size > self.room(reserve):
            return False
        self._closed += self._open_skip_size() + size
        for item in new:
            if item.mode is Mode.ID_LIST:
                self.pending[self.cursor] = _Pending(item.upper, tuple(i for _, i in item.items))
            if item.mode in (Mode.FINGERPRINT, Mode.ID_LIST):
                self.obligations += 1
            self._base_ts = self.cursor[0]
            self.ranges.append(item)
            if item.upper is not None:
                self.cursor = item.upper
        return True

    def finish(self) -> bytes:
        if self.ranges and self.ranges[-1].mode is Mode.SKIP:
            self.ranges.pop()
        message = encode_message(self.ranges)
        if len(message) > self._limit:  # the accounting above is meant to make this impossible
            raise AssertionError(f"sync message of {len(message)} bytes over {self._limit}")
        return message


# --- the state machine ----------------------------------------------------------------------------


class _State(StrEnum):
    NEW = "new"
    WAITING = "waiting"
    DONE = "done"
    FAILED = "failed"


def _bits_lacking(ids: Sequence[bytes], found: set[bytes]) -> bytes:
    bits = bytearray((len(ids) + 7) // 8)
    for index, record_id in enumerate(ids):
        if record_id not in found:
            bits[index // 8] |= 0x80 >> (index % 8)
    return bytes(bits)


class Reconciler:
    """One side of one reconciliation, fed whole messages, answering with whole messages.

    Both roles run the same loop; only the initiator first sends ``initiate()``::

        while not r.done:
            reply = r.receive(read_frame())
            if reply is not None:
                write_frame(reply)

    Afterwards ``want_ids`` holds the ids the peer has and we lack, ``offer_ids`` the ids we have
    and the peer lacks. After a SyncProtocolError the ids gathered so far remain (still claims).
    """

    def __init__(
        self,
        local: SyncSet,
        role: Role,
        *,
        frame_limit: int = MAX_MESSAGE_BYTES,
        max_rounds: int = MAX_ROUNDS,
        branching: int = BRANCHING,
        id_list_threshold: int = ID_LIST_THRESHOLD,
    ) -> None:
        if not MIN_FRAME_LIMIT <= frame_limit <= MAX_MESSAGE_BYTES:
            raise ValueError(f"frame_limit must be {MIN_FRAME_LIMIT}..{MAX_MESSAGE_BYTES}")
        if not 2 <= branching <= 32 or not 1 <= id_list_threshold <= 64 or max_rounds < 1:
            raise ValueError("branching must be 2..32, id_list_threshold 1..64, max_rounds >= 1")
        self.role = Role(role)
        self.want_ids: set[bytes] = set()
        self.offer_ids: set[bytes] = set()
        self.rounds = 0  # messages received
        self.bytes_sent = 0
        self.bytes_received = 0
        self._local = local
        self._limit = frame_limit
        self._max_rounds = max_rounds
        self._branching = branching
        self._threshold = id_list_threshold
        self._pending: dict[Bound, _Pending] = {}
        self._state = _State.NEW if self.role is Role.INITIATOR else _State.WAITING

    @property
    def done(self) -> bool:
        """Nothing more will be sent or expected: stop reading the stream."""
        return self._state is _State.DONE

    def initiate(self) -> bytes:
        """The opening message: one fingerprint over everything (an empty id list if empty)."""
        if self._state is not _State.NEW:
            raise SyncStateError("only a new initiator can initiate")
        out = _Output(self._limit)
        count, total = self._local.summary(MIN_BOUND, None)
        if count == 0:
            out.try_add([Range(Mode.ID_LIST, None)])
        else:
            out.try_add([Range(Mode.FINGERPRINT, None, fingerprint=fingerprint(count, total))])
        return self._send(out)

    def receive(self, message: bytes) -> bytes | None:
        """Answer the peer's message; ``None`` means there is nothing to send and we are done."""
        if self._state is not _State.WAITING:
            raise SyncStateError(f"receive() while {self._state.value}")
        self.rounds += 1
        self.bytes_received += len(message)
        try:
            if self.rounds > self._max_rounds:
                raise SyncProtocolError(f"no agreement after {self._max_rounds} messages")
            ranges = decode_message(message)
            out = self._answer(ranges)
        except SyncProtocolError:
            self._state = _State.FAILED
            raise
        if out is None:
            self._state = _State.DONE
            return None
        return self._send(out)

    def _send(self, out: _Output) -> bytes:
        message = out.finish()
        self._pending = out.pending
        self._state = _State.WAITING if out.obligations else _State.DONE
        self.bytes_sent += len(message)
        return message

    def _answer(self, ranges: list[Range]) -> _Output | None:
        pending, self._pending = self._pending, {}
        out = _Output(self._limit)
        stopped = False
        lower = MIN_BOUND
        for item in ranges:
            if item.mode is Mode.ID_REPLY:
                self._learn(lower, item, pending)  # even past a stop: it costs no output
            if stopped:
                pass
            elif item.mode in (Mode.SKIP, Mode.ID_REPLY):
                out.skip(item.upper)
            elif item.mode is Mode.FINGERPRINT:
                stopped = not self._answer_fingerprint(lower, item, out)
            else:
                stopped = not self._answer_id_list(lower, item, out)
            if item.upper is not None:
                lower = item.upper
        _check_unanswered(pending, ranges)
        if not any(item.mode in (Mode.FINGERPRINT, Mode.ID_LIST) for item in ranges):
            return None
        if stopped:  # fits by construction: _RESERVE keeps room for it
            count, total = self._local.summary(out.cursor, None)
            fp = fingerprint(count, total)
            if not out.try_add([Range(Mode.FINGERPRINT, None, fingerprint=fp)], reserve=False):
                raise AssertionError("no room left for the remainder fingerprint")
        return out

    def _learn(self, lower: Bound, item: Range, pending: dict[Bound, _Pending]) -> None:
        """Take in an id reply to one of our id lists."""
        sent = pending.pop(lower, None)
        if sent is None:
            raise SyncProtocolError("an id reply answers no id list of ours")
        if not _below_or_equal(item.upper, sent):
            raise SyncProtocolError("an id reply reaches past the id list it answers")
        if len(item.bits) != (len(sent.ids) + 7) // 8:
            raise SyncProtocolError("an id reply's bitmap does not match the id list")
        padding = len(item.bits) * 8 - len(sent.ids)
        if padding and item.bits[-1] & ((1 << padding) - 1):
            raise SyncProtocolError("an id reply's bitmap has padding bits set")
        if not set(item.ids).isdisjoint(sent.ids):
            raise SyncProtocolError("an id reply offers an id we listed")
        for index, record_id in enumerate(sent.ids):
            if item.bits[index // 8] & (0x80 >> (index % 8)):
                self.offer_ids.add(record_id)
        self.want_ids.update(item.ids)

    def _answer_fingerprint(self, lower: Bound, item: Range, out: _Output) -> bool:
        count, total = self._local.summary(lower, item.upper)
        if fingerprint(count, total) == item.fingerprint:
            out.skip(item.upper)
            return True
        if count <= self._threshold:
            items = tuple(self._local.items(lower, item.upper, count))
            return out.try_add([Range(Mode.ID_LIST, item.upper, items=items)])
        return out.try_add(self._split(lower, item.upper, count))

    def _split(self, lower: Bound, upper: Bound | None, count: int) -> list[Range]:
        parts = min(self._branching, count)
        cuts = self._local.split_points(lower, upper, parts)
        bounds: list[Bound | None] = [separator(a, b) for a, b in cuts]
        bounds.append(upper)
        ranges: list[Range] = []
        part_lower = lower
        for part_upper in bounds:
            count, total = self._local.summary(part_lower, part_upper)
            fp = fingerprint(count, total)
            ranges.append(Range(Mode.FINGERPRINT, part_upper, fingerprint=fp))
            if part_upper is not None:
                part_lower = part_upper
        return ranges

    def _scan(self, lower: Bound, upper: Bound | None, page_size: int) -> Iterator[Item]:
        while True:
            page = self._local.items(lower, upper, page_size)
            yield from page
            if len(page) < page_size:
                return
            lower = _after(page[-1])

    def _has(self, item: Item) -> bool:
        return bool(self._local.items(item, _after(item), 1))

    def _answer_id_list(self, lower: Bound, item: Range, out: _Output) -> bool:
        """Reply with our ids the peer lacks and which of its ids we lack; False if cut short.

        Their items carry timestamps, so each is looked up directly and we only read our own
        items as far as the reply reaches: the work is bounded by the message, not the set.
        """
        room = out.room() - _ID_REPLY_OVERHEAD - (len(item.items) + 7) // 8
        capacity = room // ID_BYTES
        if capacity < 1:
            return False
        found = {record_id for ts, record_id in item.items if self._has((ts, record_id))}
        extra: list[bytes] = []
        cut: Bound | None = None
        previous: Item | None = None
        page_size = min(SCAN_PAGE, capacity + len(found) + 1)  # usually one page is enough
        for mine in self._scan(lower, item.upper, page_size):
            if mine[1] in found:
                pass
            elif len(extra) < capacity:
                extra.append(mine[1])
            else:
                if previous is None:  # capacity >= 1, so the first item always fits
                    raise AssertionError("id reply cut before its first item")
                cut = separator(previous, mine)
                break
            previous = mine
        listed = tuple(record_id for _, record_id in item.items)
        self.want_ids.update(record_id for record_id in listed if record_id not in found)
        self.offer_ids.update(extra)
        upper = item.upper if cut is None else cut
        reply = Range(Mode.ID_REPLY, upper, ids=tuple(extra), bits=_bits_lacking(listed, found))
        if not out.try_add([reply]):
            raise AssertionError("an id reply sized to the room left did not fit")
        return cut is None


def _check_unanswered(pending: dict[Bound, _Pending], ranges: list[Range]) -> None:
    """An id list of ours left without a reply must have been reopened by a fingerprint.

    Otherwise the peer skipped it and that range would silently stay unreconciled.
    """
    starts = sorted(pending)
    index = 0
    for item in ranges:
        while index < len(starts) and (item.upper is None or starts[index] < item.upper):
            if item.mode is not Mode.FINGERPRINT:
                raise SyncProtocolError("an id list of ours was neither answered nor reopened")
            index += 1
    if index < len(starts):
        raise SyncProtocolError("an id list of ours was neither answered nor reopened")


def _below_or_equal(upper: Bound | None, sent: _Pending) -> bool:
    if sent.upper is None:
        return True
    return upper is not None and upper <= sent.upper
