"""The session around record reconciliation on ``/p2pshare/sync/1``: what goes on one stream.

``sync.py`` is the reconciliation state machine (which ids each side lacks); this module is
everything else on the stream: which community a session is about, carrying the reconciliation
messages, fetching the missing records in batches, and ending. Sans-IO: the node moves the
frames; everything a peer sends is checked here.

Framing. Each message is one frame: an unsigned LEB128 varint (libp2p msgio) giving the length,
then that many bytes of *canonical* msgpack (``canonical.py``: sorted map keys, minimal ints,
``bin`` for bytes, nothing trailing) holding one map with exactly the keys listed, no others.
No frame exceeds MAX_FRAME_BYTES (1 MiB + 64); a declared length above it is refused unread.
One session syncs one community; a stream carries one session.

Messages (``t`` names the type)::

    {"t": "open", "v": 1, "community": slug}
        Initiator, first frame. ``v`` is the session version (only 1 exists); ``community`` a
        normalised community slug (``communities.is_community``; normalising it again must not
        change it).
    {"t": "recon", "m": bin}
        One reconciliation message of ``sync.py`` (at most sync.MAX_MESSAGE_BYTES bytes; its own
        checks happen in ``Reconciler.receive``).
    {"t": "get", "ids": bin}
        A request for records: 1..MAX_GET_IDS distinct 32-byte record ids back to back. Only ids
        the reconciliation found the asker lacks and the answerer has may be asked for, each
        at most once per session.
    {"t": "records", "wires": [bin, ...], "end": bool}
        Records answering the oldest unanswered ``get``, each the exact stored wire bytes
        (1..limits.MAX_RECORD_BYTES), whose SHA-256 (the record id) is one of that get's ids and
        whose community (field 4 of the record array) is the session's. The sum over ``wires`` of
        each wire's length plus its bin header is at most MAX_RECORDS_PAYLOAD (1 MiB); at most
        MAX_RECORDS_PER_FRAME wires. ``end`` = true on the last frame of the answer; every
        other frame holds at least one wire. An answer may leave ids out (records deleted since
        the reconciliation): never an error.
    {"t": "done"}
        The sender asks for nothing more, and every record it fetched has been through its
        ingest (stored or refused): the peer can rely on that once it reads ``done``.
    {"t": "error", "code": code}
        The responder refuses the session; only ever its first frame. Codes: ``not-member``
        (it is not in that community), ``busy`` (too many sessions, or one with us for that
        community is already running), ``bad-version``.

Exchange::

    initiator                               responder
    open, recon                  ------>
                                 <------    recon | error
    recon ... alternating until the reconciliation is done (sync.py: a final message)
    get ... (pipelined), done    ------>    (phase 1: the initiator pulls what it lacks)
                                 <------    records ... (each get: frames up to end = true)
                                 <------    get ... (pipelined), done
    records ...                  ------>    (phase 2: the responder pulls what it lacks)
    both half-close

Both sides learn both differences in one reconciliation, so one session brings each side what it
lacks. Each side *pulls* (rather than the other pushing) so that every record a node receives is
one it asked for, it paces its own ingest (the next ``get`` goes out when it can take more) and
the same code serves both phases. The responder starts phase 2 only after reading the initiator's
``done``, so the two directions never interleave on the stream.

Anything malformed, out of order, unrequested or from another community raises
SyncProtocolError (subclasses say which): reset the stream and count it against the peer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgpack

from p2pshare.protocol import canonical, sync
from p2pshare.protocol import limits as L
from p2pshare.protocol.communities import is_community
from p2pshare.protocol.reasons import RecordError
from p2pshare.protocol.records import record_id
from p2pshare.protocol.sync import ID_BYTES, SyncProtocolError

PROTOCOL_ID = sync.PROTOCOL_ID
SESSION_VERSION = 1
MAX_GET_IDS = 1024  # 32 KiB of ids per request
MAX_RECORDS_PAYLOAD = 1024 * 1024  # wires (with their bin headers) in one records frame
MAX_RECORDS_PER_FRAME = 8192  # bounds the list a decoder walks; ~128 bytes a record at least
FRAME_OVERHEAD = 64  # map header, keys, type, list header, end flag: well under this
MAX_FRAME_BYTES = MAX_RECORDS_PAYLOAD + FRAME_OVERHEAD
MAX_CONTROL_FRAME_BYTES = sync.MAX_MESSAGE_BYTES + FRAME_OVERHEAD  # every frame but records
_WIRE_COMMUNITY_INDEX = 4  # [version, kind, author, created_ms, community, body, sig]
_RECORD_FIELDS = 7


class ErrorCode(StrEnum):
    """Why a responder refused a session; the value is the wire string."""

    NOT_MEMBER = "not-member"
    BUSY = "busy"
    BAD_VERSION = "bad-version"


class BadMessage(SyncProtocolError):
    """A frame that is not a message of this protocol, or one sent out of turn."""

    reason = "sync-bad-message"


class UnwantedRecord(SyncProtocolError):
    """A record whose id was not asked for (or was already delivered)."""

    reason = "sync-unwanted-record"


class WrongCommunity(SyncProtocolError):
    """A record that is not in the session's community (or not a record at all)."""

    reason = "sync-wrong-community"


class UnwantedRequest(SyncProtocolError):
    """A ``get`` for an id the reconciliation did not find the asker lacking, or asked twice."""

    reason = "sync-unwanted-request"


def violation_reason(error: SyncProtocolError) -> str:
    """The reason string to charge a peer with (reconciler errors are bad messages)."""
    return getattr(error, "reason", BadMessage.reason)


# --- messages -------------------------------------------------------------------------------------


_show = sync.show_value


def _check_ids(ids: Sequence[bytes], error: type[SyncProtocolError]) -> None:
    if not 1 <= len(ids) <= MAX_GET_IDS:
        raise error(f"a get asks for 1..{MAX_GET_IDS} ids, not {len(ids)}")
    if any(not isinstance(i, bytes) or len(i) != ID_BYTES for i in ids):
        raise error(f"record ids are {ID_BYTES} bytes")
    if len(set(ids)) != len(ids):
        raise error("a get names an id twice")


def _bin_size(data: bytes) -> int:
    """Bytes ``data`` takes as a msgpack bin: header plus payload."""
    size = len(data)
    return size + (2 if size < 2**8 else 3 if size < 2**16 else 5)


@dataclass(frozen=True, slots=True)
class Open:
    community: str
    version: int = SESSION_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.community, str) or not is_community(self.community):
            raise BadMessage(f"{_show(self.community)} is not a normalised community slug")
        if not isinstance(self.version, int) or isinstance(self.version, bool):
            raise BadMessage("the session version is an integer")
        if not 0 <= self.version < 2**32:
            raise BadMessage("the session version is a uint32")


@dataclass(frozen=True, slots=True)
class Recon:
    message: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.message, bytes) or len(self.message) > sync.MAX_MESSAGE_BYTES:
            raise BadMessage(f"a reconciliation message is bin of <= {sync.MAX_MESSAGE_BYTES}")


@dataclass(frozen=True, slots=True)
class Get:
    ids: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_ids(self.ids, BadMessage)


@dataclass(frozen=True, slots=True)
class Records:
    wires: tuple[bytes, ...]
    end: bool

    def __post_init__(self) -> None:
        if not isinstance(self.end, bool):
            raise BadMessage("end is a bool")
        if len(self.wires) > MAX_RECORDS_PER_FRAME:
            raise BadMessage(f"at most {MAX_RECORDS_PER_FRAME} records in one frame")
        total = 0
        for wire in self.wires:
            if not isinstance(wire, bytes) or not 1 <= len(wire) <= L.MAX_RECORD_BYTES:
                raise BadMessage(f"a record is bin of 1..{L.MAX_RECORD_BYTES} bytes")
            total += _bin_size(wire)
        if total > MAX_RECORDS_PAYLOAD:
            raise BadMessage(f"records of {total} bytes in one frame, over {MAX_RECORDS_PAYLOAD}")


@dataclass(frozen=True, slots=True)
class Done:
    pass


@dataclass(frozen=True, slots=True)
class Error:
    code: ErrorCode

    def __post_init__(self) -> None:
        if not isinstance(self.code, ErrorCode):
            raise BadMessage(f"unknown error code {_show(self.code)}")


Message = Open | Recon | Get | Records | Done | Error


def _fields(message: Message) -> dict[str, Any]:
    match message:
        case Open(community=community, version=version):
            return {"t": "open", "v": version, "community": community}
        case Recon(message=data):
            return {"t": "recon", "m": data}
        case Get(ids=ids):
            return {"t": "get", "ids": b"".join(ids)}
        case Records(wires=wires, end=end):
            return {"t": "records", "wires": list(wires), "end": end}
        case Done():
            return {"t": "done"}
        case Error(code=code):
            return {"t": "error", "code": code.value}
    raise TypeError(f"not a sync session message: {message!r}")


def encode(message: Message) -> bytes:
    """The frame body (without the varint length) for ``message``."""
    return canonical.pack(_fields(message))


def _split_ids(value: object) -> tuple[bytes, ...]:
    if not isinstance(value, bytes) or len(value) % ID_BYTES:
        raise BadMessage(f"ids are bin of whole {ID_BYTES}-byte ids")
    return tuple(value[i : i + ID_BYTES] for i in range(0, len(value), ID_BYTES))


def _wires(value: object) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise BadMessage("wires is a list")
    return tuple(value)


def _error_code(value: object) -> ErrorCode:
    if isinstance(value, str) and value in ErrorCode.__members__.values():
        return ErrorCode(value)
    raise BadMessage(f"unknown error code {_show(value)}")


_SHAPES: dict[str, tuple[frozenset[str], Callable[[dict[str, Any]], Message]]] = {
    "open": (frozenset({"v", "community"}), lambda v: Open(v["community"], v["v"])),
    "recon": (frozenset({"m"}), lambda v: Recon(v["m"])),
    "get": (frozenset({"ids"}), lambda v: Get(_split_ids(v["ids"]))),
    "records": (frozenset({"wires", "end"}), lambda v: Records(_wires(v["wires"]), v["end"])),
    "done": (frozenset(), lambda v: Done()),
    "error": (frozenset({"code"}), lambda v: Error(_error_code(v["code"]))),
}


def decode(frame: bytes, max_bytes: int = MAX_FRAME_BYTES) -> Message:
    """Parse and check one frame body; anything else raises BadMessage."""
    if not isinstance(frame, bytes):
        raise BadMessage("a frame is bytes")
    try:
        value = canonical.unpack(frame, min(max_bytes, MAX_FRAME_BYTES))
    except RecordError as exc:
        raise BadMessage(f"undecodable frame: {exc}") from None
    if not isinstance(value, dict):
        raise BadMessage("a frame holds a map")
    kind = value.get("t")
    if not isinstance(kind, str) or kind not in _SHAPES:
        raise BadMessage(f"unknown message type {_show(kind)}")
    keys, build = _SHAPES[kind]
    if set(value) != keys | {"t"}:
        raise BadMessage(f"{kind} has exactly the keys {sorted(keys | {'t'})}")
    return build(value)


def expect(message: Message, *types: type[Any]) -> Any:
    """``message`` if it is one of ``types`` (what may come next), else BadMessage."""
    if not isinstance(message, types):
        allowed = " or ".join(t.__name__.lower() for t in types)
        raise BadMessage(f"expected {allowed}, got {type(message).__name__.lower()}")
    return message


# --- records frames -------------------------------------------------------------------------------


def record_frames(wires: Iterable[bytes]) -> Iterator[Records]:
    """Pack wires into as few ``records`` frames as the limits allow; the last has end = true.

    Always yields at least one frame (an empty one with end = true when there is nothing).
    """
    batch: list[bytes] = []
    size = 0
    for wire in wires:
        cost = _bin_size(wire)
        if batch and (size + cost > MAX_RECORDS_PAYLOAD or len(batch) == MAX_RECORDS_PER_FRAME):
            yield Records(tuple(batch), False)
            batch, size = [], 0
        batch.append(wire)
        size += cost
    yield Records(tuple(batch), True)


def wire_community(wire: bytes) -> str:
    """The community field of a record's wire form; WrongCommunity if it has none.

    Only the envelope is read: the store does the full check (canonical form, signature) later.
    """
    try:
        value = msgpack.unpackb(wire, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise WrongCommunity(f"not a record: {type(exc).__name__}") from None
    if not isinstance(value, list) or len(value) != _RECORD_FIELDS:
        raise WrongCommunity("not a record")
    community = value[_WIRE_COMMUNITY_INDEX]
    if not isinstance(community, str):
        raise WrongCommunity("a record's community is a string")
    return community


# --- the two ends of a fetch ----------------------------------------------------------------------


class Fetcher:
    """The pulling side of a phase: which ids to ask for next, and which records to accept.

    ``next_get`` hands out requests (the caller may keep several outstanding; answers come in
    request order); ``accept`` checks one ``records`` frame against the oldest outstanding
    request and returns the wires to ingest.
    """

    def __init__(
        self, want: Iterable[bytes], community: str, *, max_get_ids: int = MAX_GET_IDS
    ) -> None:
        if not 1 <= max_get_ids <= MAX_GET_IDS:
            raise ValueError(f"max_get_ids must be 1..{MAX_GET_IDS}")
        self._todo = sorted(set(want), reverse=True)  # pop() from the end: ascending order
        self._community = community
        self._max = max_get_ids
        self._outstanding: deque[set[bytes]] = deque()
        self.received = 0
        self.missing = 0  # asked for, left out of the answer

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    @property
    def finished(self) -> bool:
        return not self._todo and not self._outstanding

    def next_get(self) -> Get | None:
        """The next request, or None when every wanted id has been asked for."""
        if not self._todo:
            return None
        count = min(self._max, len(self._todo))
        ids = tuple(self._todo.pop() for _ in range(count))
        self._outstanding.append(set(ids))
        return Get(ids)

    def accept(self, frame: Records) -> list[bytes]:
        """The frame's wires, each asked for by the oldest open request and in our community."""
        if not self._outstanding:
            raise UnwantedRecord("records arrived with no request outstanding")
        if not frame.wires and not frame.end:  # else a peer could stall us with empty frames
            raise BadMessage("a records frame that is not the last must hold records")
        open_ids = self._outstanding[0]
        for wire in frame.wires:
            rid = record_id(wire)
            if rid not in open_ids:
                raise UnwantedRecord(f"record {rid.hex()[:16]} was not asked for (or came twice)")
            open_ids.discard(rid)
            if wire_community(wire) != self._community:
                raise WrongCommunity(f"record {rid.hex()[:16]} is not in {self._community}")
        self.received += len(frame.wires)
        if frame.end:
            self.missing += len(self._outstanding.popleft())
        return list(frame.wires)


class Server:
    """The answering side of a phase: checks each ``get`` against what the peer may ask for."""

    def __init__(self, offer: Iterable[bytes]) -> None:
        self._allowed = set(offer)
        self.asked = 0

    def check(self, request: Get) -> tuple[bytes, ...]:
        """The ids to look up; UnwantedRequest for any id not offered or asked for before."""
        for rid in request.ids:
            if rid not in self._allowed:
                raise UnwantedRequest(f"id {rid.hex()[:16]} was not offered (or asked twice)")
        self._allowed.difference_update(request.ids)
        self.asked += len(request.ids)
        return request.ids
