"""Which chunk to ask which peer for: the pure bookkeeping of one multi-peer download.

The node drives it: ``add_peer`` with what a peer has (its ``have`` state), ``next_request``
whenever a peer can take another request (send ``ChunksRequest(id, root, tuple(ranges))`` and
check the response with ``transfer.ChunkResponse``), ``chunk_received`` for every chunk frame
after hashing it (write the data only on ``Outcome.ACCEPTED``; ``is_present`` lets it skip
hashing duplicates), then: ``request_done`` on ``end`` or ``error not-found`` (chunks left out
are chunks the peer lacks); ``request_failed`` on ``error busy``/``bad-request``, a
PeerProtocolError, EOF, reset or timeout; ``remove_peer`` when it disconnects. With
``max_requests_per_peer`` > 1 a peer may have that many requests outstanding (pipelined on one
stream, so its link never idles between two responses); ``request_done`` and ``request_failed``
then name the request by its ranges, or settle every outstanding request of the peer at once
when given none (a broken stream fails them all, as one failure). Once ``done``, any
outstanding requests can be cancelled. The plan never does I/O and never reads a clock:
time-dependent calls take ``now`` (monotonic seconds). Resume by passing the persisted present
chunks (``present_bitmap()`` -> ``transfer.bitmap_indices``) to the constructor.

Policy, and why:
- Each idle peer gets a few contiguous runs of chunks it has, rarest first (chunks few peers hold
  are fetched while those peers are still around), sized so the missing chunks are shared among
  the idle peers: several peers download in parallel, even for small documents.
- A chunk that fails its hash is discarded, counts as a strike against the sender, and that peer
  is never asked for that chunk again; ``max_strikes`` strikes drop the peer from the download.
- A peer that ends a response without some requested chunks no longer has them (as far as this
  download knows); a failed request puts its chunks back and backs the peer off for a while;
  ``max_failures`` failures in a row drop it.
- Endgame: when an idle peer has nothing missing to fetch, it may duplicate chunks that have been
  in flight elsewhere for ``steal_after`` seconds; the first good copy wins, later ones are
  reported as duplicates and must not be written.
- A missing chunk that no live peer can supply is reported by ``unavailable()``; once nothing is
  in flight and only such chunks remain the plan is ``stuck`` instead of spinning.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Generic, TypeVar

from p2pshare.protocol import transfer
from p2pshare.protocol.transfer import HaveState, Range

P = TypeVar("P", bound=Hashable)

DEFAULT_CHUNKS_PER_REQUEST = 32  # 8 MiB at 256 KiB: long enough to amortise a request round trip
DEFAULT_RANGES_PER_REQUEST = 8
DEFAULT_STEAL_AFTER = 10.0  # seconds a chunk may sit at one peer before another may duplicate it
DEFAULT_MAX_HOLDERS = 2  # peers fetching one chunk at once (endgame duplicates)
DEFAULT_MAX_STRIKES = 3
DEFAULT_MAX_FAILURES = 3
DEFAULT_RETRY_BACKOFF = 1.0  # seconds, times the number of failures in a row
# Rarity is judged among this many candidates (in index order): all of them for documents up to
# 512 MB at 256 KiB chunks, and a bounded amount of Python work per request for larger ones.
_RARITY_WINDOW = 2048
_MISSING_TO_ONE = bytes([1] + [0] * 255)  # bytes.translate table: MISSING (0) -> 1, others -> 0


class Outcome(StrEnum):
    """What the node must do with a received chunk."""

    ACCEPTED = "accepted"  # first good copy: write it
    DUPLICATE = "duplicate"  # good, but already present: discard
    REJECTED = "rejected"  # failed its hash: discard, the peer got a strike
    UNEXPECTED = "unexpected"  # not outstanding at this peer: discard (a protocol error upstream)


class PeerStatus(StrEnum):
    ACTIVE = "active"
    GONE = "gone"  # removed (disconnected); may be added again
    DROPPED = "dropped"  # too many strikes or failures; never used again by this plan


class _Chunk(IntEnum):
    MISSING = 0
    IN_FLIGHT = 1
    PRESENT = 2


@dataclass(frozen=True)
class Progress:
    present_chunks: int
    chunk_count: int
    present_bytes: int
    size: int

    @property
    def fraction(self) -> float:
        return 1.0 if self.size == 0 else self.present_bytes / self.size


@dataclass(frozen=True)
class PeerStats:
    """One row of the UI's "sources" column."""

    status: PeerStatus
    bytes_received: int
    chunks_received: int
    duplicates: int
    strikes: int
    failures: int
    in_flight: int


@dataclass
class _Peer:
    eligible: bytearray  # 1 = has the chunk and we may ask it (not banned, not found lacking)
    status: PeerStatus = PeerStatus.ACTIVE
    banned: set[int] = field(default_factory=set)
    requested: set[int] = field(default_factory=set)  # outstanding, not yet delivered
    outstanding: int = 0  # requests sent and not yet settled
    not_before: float = -math.inf
    failures_in_row: int = 0
    bytes_received: int = 0
    chunks_received: int = 0
    duplicates: int = 0
    strikes: int = 0
    failures: int = 0

    @property
    def live(self) -> bool:
        return self.status is PeerStatus.ACTIVE


class DownloadPlan(Generic[P]):
    """Chunk states (missing / in flight / present) and per-peer knowledge for one document."""

    def __init__(
        self,
        size: int,
        chunk_size: int,
        present: Iterable[int] = (),
        *,
        max_chunks_per_request: int = DEFAULT_CHUNKS_PER_REQUEST,
        max_ranges_per_request: int = DEFAULT_RANGES_PER_REQUEST,
        steal_after: float = DEFAULT_STEAL_AFTER,
        max_holders: int = DEFAULT_MAX_HOLDERS,
        max_strikes: int = DEFAULT_MAX_STRIKES,
        max_failures: int = DEFAULT_MAX_FAILURES,
        retry_backoff: float = DEFAULT_RETRY_BACKOFF,
        max_requests_per_peer: int = 1,
    ) -> None:
        if size < 0 or chunk_size <= 0:
            raise ValueError("size must be >= 0 and chunk_size > 0")
        if not 1 <= max_chunks_per_request <= transfer.MAX_CHUNKS_PER_REQUEST:
            raise ValueError("max_chunks_per_request is outside the protocol's limit")
        if not 1 <= max_ranges_per_request <= transfer.MAX_RANGES_PER_REQUEST:
            raise ValueError("max_ranges_per_request is outside the protocol's limit")
        self.size = size
        self.chunk_size = chunk_size
        self.chunk_count = -(-size // chunk_size)
        if self.chunk_count > transfer.MAX_CHUNK_COUNT:
            raise ValueError(f"{self.chunk_count} chunks is over the protocol's limit")
        self._max_chunks = max_chunks_per_request
        self._max_ranges = max_ranges_per_request
        self._steal_after = steal_after
        self._max_holders = max(1, max_holders)
        self._max_strikes = max_strikes
        self._max_failures = max_failures
        self._retry_backoff = retry_backoff
        if max_requests_per_peer < 1:
            raise ValueError("max_requests_per_peer must be at least 1")
        self._max_requests = max_requests_per_peer
        self._state = bytearray(self.chunk_count)  # _Chunk values
        self._holders: dict[int, dict[P, float]] = {}  # in-flight chunk -> peer -> since
        self._availability = [0] * self.chunk_count  # live peers eligible for each chunk
        self._peers: dict[P, _Peer] = {}
        self._missing = self.chunk_count
        self._present_bytes = 0
        for index in set(present):
            if not 0 <= index < self.chunk_count:
                raise ValueError(f"present chunk {index} is outside the document")
            self._mark_present(index)

    # --- peers ------------------------------------------------------------------------------

    def add_peer(self, peer: P, have: HaveState) -> bool:
        """Add a peer, or update what it has; False (ignored) if it was dropped.

        ``have`` is True (complete), False (nothing) or a bitmap, which must match the document
        (PeerProtocolError otherwise). Chunks it sent bad data for stay banned.
        """
        if isinstance(have, bytes):
            transfer.check_bitmap(have, self.chunk_count)
        state = self._peers.get(peer)
        if state is not None and state.status is PeerStatus.DROPPED:
            return False
        if state is None:
            state = self._peers[peer] = _Peer(eligible=bytearray(self.chunk_count))
        elif state.live:
            self._count_availability(state, -1)
        state.status = PeerStatus.ACTIVE
        state.eligible = self._eligible_from(have, state.banned)
        self._count_availability(state, +1)
        return True

    def remove_peer(self, peer: P) -> None:
        """The peer disconnected: its outstanding chunks go back to missing."""
        state = self._peers.get(peer)
        if state is not None and state.live:
            self._retire(peer, state, PeerStatus.GONE)

    def _eligible_from(self, have: HaveState, banned: set[int]) -> bytearray:
        if have is True:
            eligible = bytearray(b"\x01" * self.chunk_count)
        else:
            eligible = bytearray(self.chunk_count)
            if have is not False:
                for i in transfer.bitmap_indices(have, self.chunk_count):
                    eligible[i] = 1
        for i in banned:
            eligible[i] = 0
        return eligible

    def _count_availability(self, state: _Peer, delta: int) -> None:
        availability = self._availability
        position = state.eligible.find(1)
        while position != -1:
            availability[position] += delta
            position = state.eligible.find(1, position + 1)

    def _retire(self, peer: P, state: _Peer, status: PeerStatus) -> None:
        for index in list(state.requested):
            self._release(peer, state, index)
        state.outstanding = 0
        self._count_availability(state, -1)
        state.status = status

    def _forget(self, state: _Peer, index: int) -> None:
        """This peer may no longer be asked for ``index``."""
        if state.eligible[index]:
            state.eligible[index] = 0
            if state.live:
                self._availability[index] -= 1

    def _release(self, peer: P, state: _Peer, index: int) -> None:
        """``index`` is no longer outstanding at ``peer``; missing again if nobody else has it."""
        state.requested.discard(index)
        holders = self._holders.get(index)
        if holders is None:
            return
        holders.pop(peer, None)
        if not holders:
            del self._holders[index]
            self._state[index] = _Chunk.MISSING
            self._missing += 1

    # --- requests ---------------------------------------------------------------------------

    def next_request(self, peer: P, now: float) -> list[Range] | None:
        """Ranges to ask an idle ``peer`` for (now marked in flight there), or None for nothing.

        None when the peer is unknown, not active, has ``max_requests_per_peer`` requests
        outstanding, is backing off, or has nothing useful. Every range is within the protocol
        limits and the peer's holdings.
        """
        state = self._peers.get(peer)
        if state is None or not state.live or self._busy(state) or now < state.not_before:
            return None
        chosen = self._pick_missing(state, now) or self._pick_stealable(peer, state, now)
        if not chosen:
            return None
        for index in chosen:
            if self._state[index] == _Chunk.MISSING:
                self._state[index] = _Chunk.IN_FLIGHT
                self._missing -= 1
            self._holders.setdefault(index, {})[peer] = now
            state.requested.add(index)
        state.outstanding += 1
        return transfer.ranges_of(sorted(chosen))

    def _busy(self, state: _Peer) -> bool:
        return state.outstanding >= self._max_requests

    def _pick_missing(self, state: _Peer, now: float) -> list[int]:
        """Rarest-first runs of missing chunks this peer has, sharing the work among idle peers."""
        mask = self._candidate_mask(state)
        candidates = _first_set(mask, _RARITY_WINDOW)
        if not candidates:
            return []
        idle = sum(
            1 for p in self._peers.values() if p.live and not self._busy(p) and now >= p.not_before
        )
        budget = min(self._max_chunks, max(1, -(-self._missing // max(1, idle))))
        # Candidates are ascending and the sort is stable: rarest first, then lowest index.
        order = sorted(candidates, key=self._availability.__getitem__)
        return self._runs(order, mask, budget)

    def _candidate_mask(self, state: _Peer) -> bytes:
        """1 for each chunk that is missing and this peer may be asked for (C-speed, no loop)."""
        missing = self._state.translate(_MISSING_TO_ONE)
        both = int.from_bytes(missing, "little") & int.from_bytes(state.eligible, "little")
        return both.to_bytes(self.chunk_count, "little")

    def _pick_stealable(self, peer: P, state: _Peer, now: float) -> list[int]:
        """Endgame: chunks stuck at other peers for ``steal_after`` seconds that this one has."""
        stealable = [
            index
            for index, holders in sorted(self._holders.items())
            if state.eligible[index]
            and peer not in holders
            and len(holders) < self._max_holders
            and now - max(holders.values()) >= self._steal_after
        ]
        mask = bytearray(self.chunk_count)
        for index in stealable:
            mask[index] = 1
        return self._runs(stealable, mask, self._max_chunks)

    def _runs(self, starts: list[int], allowed: bytes | bytearray, budget: int) -> list[int]:
        """Take contiguous runs of chunks set in ``allowed``, starting from ``starts`` in order."""
        taken: list[int] = []
        taken_set: set[int] = set()
        runs = 0
        for start in starts:
            if budget == 0 or runs == self._max_ranges:
                break
            if start in taken_set:
                continue
            index = start
            while budget and index < self.chunk_count and allowed[index] and index not in taken_set:
                taken.append(index)
                taken_set.add(index)
                budget -= 1
                index += 1
            runs += 1
        # A later run may end where an earlier one began; merging such runs only lowers the count.
        return taken

    def chunk_received(self, peer: P, index: int, ok: bool) -> Outcome:
        """Record a chunk frame from ``peer``; ``ok`` says whether it matched its hash."""
        state = self._peers.get(peer)
        if state is None or index not in state.requested:
            return Outcome.UNEXPECTED
        if not ok:
            state.strikes += 1
            state.banned.add(index)
            self._forget(state, index)
            self._release(peer, state, index)
            if state.live and state.strikes >= self._max_strikes:
                self._retire(peer, state, PeerStatus.DROPPED)
            return Outcome.REJECTED
        state.requested.discard(index)
        if self._state[index] == _Chunk.PRESENT:
            state.duplicates += 1
            return Outcome.DUPLICATE
        self._holders.pop(index, None)
        self._mark_present(index)
        state.chunks_received += 1
        state.bytes_received += self.chunk_length(index)
        state.failures_in_row = 0
        return Outcome.ACCEPTED

    def _mark_present(self, index: int) -> None:
        if self._state[index] == _Chunk.MISSING:
            self._missing -= 1
        self._state[index] = _Chunk.PRESENT
        self._present_bytes += self.chunk_length(index)

    def _settling(self, state: _Peer, ranges: Iterable[Range] | None) -> list[int]:
        """The outstanding chunks of one request (``ranges``), or of all (None); one fewer
        request (or none) is outstanding afterwards."""
        if ranges is None:
            state.outstanding = 0
            return list(state.requested)
        state.outstanding = max(0, state.outstanding - 1)
        requested = state.requested
        return [i for start, end in ranges for i in range(start, end) if i in requested]

    def request_done(self, peer: P, ranges: Iterable[Range] | None = None) -> None:
        """The response ended cleanly: requested chunks it left out, the peer does not have.

        ``ranges``: the request's ranges, when the peer has several outstanding; None settles
        every outstanding request of the peer.
        """
        state = self._peers.get(peer)
        if state is None:
            return
        for index in self._settling(state, ranges):
            if self._state[index] != _Chunk.PRESENT:
                self._forget(state, index)
            self._release(peer, state, index)
        state.failures_in_row = 0

    def request_failed(self, peer: P, now: float, ranges: Iterable[Range] | None = None) -> None:
        """The request broke (reset, EOF, timeout, error reply): put its chunks back, back off.

        ``ranges`` as for ``request_done``; either way the call counts as one failure.
        """
        state = self._peers.get(peer)
        if state is None:
            return
        for index in self._settling(state, ranges):
            self._release(peer, state, index)
        if not state.live:
            return
        state.failures += 1
        state.failures_in_row += 1
        if state.failures_in_row >= self._max_failures:
            self._retire(peer, state, PeerStatus.DROPPED)
        else:
            state.not_before = now + self._retry_backoff * state.failures_in_row

    # --- status -----------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._present_count() == self.chunk_count

    def _present_count(self) -> int:
        return self.chunk_count - self._missing - len(self._holders)

    @property
    def stuck(self) -> bool:
        """Nothing in flight, not done, and no live peer can supply any missing chunk."""
        return not self.done and not self._holders and not self._any_available()

    def _any_available(self) -> bool:
        find = self._state.find
        position = find(_Chunk.MISSING)
        while position != -1:
            if self._availability[position]:
                return True
            position = find(_Chunk.MISSING, position + 1)
        return False

    def unavailable(self) -> list[int]:
        """Missing chunks no live peer can be asked for (wait for more peers, or give up)."""
        return [
            i
            for i in range(self.chunk_count)
            if self._state[i] == _Chunk.MISSING and not self._availability[i]
        ]

    def is_present(self, index: int) -> bool:
        return self._state[index] == _Chunk.PRESENT

    def missing_count(self) -> int:
        return self._missing

    def in_flight_count(self) -> int:
        return len(self._holders)

    def chunk_length(self, index: int) -> int:
        return transfer.chunk_length(index, self.size, self.chunk_size)

    def progress(self) -> Progress:
        return Progress(self._present_count(), self.chunk_count, self._present_bytes, self.size)

    def present_bitmap(self) -> bytes:
        """What we hold, to persist for resuming and to answer other peers' ``have``."""
        return transfer.make_bitmap(
            (i for i in range(self.chunk_count) if self._state[i] == _Chunk.PRESENT),
            self.chunk_count,
        )

    def peer_stats(self) -> dict[P, PeerStats]:
        return {
            peer: PeerStats(
                status=s.status,
                bytes_received=s.bytes_received,
                chunks_received=s.chunks_received,
                duplicates=s.duplicates,
                strikes=s.strikes,
                failures=s.failures,
                in_flight=len(s.requested),
            )
            for peer, s in self._peers.items()
        }


def _first_set(mask: bytes, limit: int) -> list[int]:
    """Indices of the first ``limit`` non-zero bytes of ``mask``."""
    out: list[int] = []
    position = mask.find(1)
    while position != -1 and len(out) < limit:
        out.append(position)
        position = mask.find(1, position + 1)
    return out
