"""Peers we have met, so that a restart or a dropped link does not lose them.

A node's links come from bootstrap entries, mDNS, invites and peers that dialled us; without a
memory each restart would need all of those again. The book keeps, per peer id, the addresses it
can be dialled at, when we last saw it, how often dialling it has failed in a row and when to try
next. It lives in ``peers.json`` in the data dir (written atomically, mode 0600: who we talk to is
private) and holds at most ``MAX_PEERS`` entries, dropping the least recently seen.

Retries back off exponentially with jitter (``BASE_BACKOFF`` doubling up to ``MAX_BACKOFF``), so a
peer that is gone for good costs one dial every few minutes and a crowd of peers that lost the
same bootstrap node do not all redial it in the same second.

Times are wall-clock milliseconds (they must survive a restart); the clock is injectable so tests
can move time without sleeping. The book does no I/O except ``load`` and ``save``, which block:
from trio, call them through ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from libp2p.peer.id import ID

logger = logging.getLogger(__name__)

FILE_NAME = "peers.json"
FORMAT_VERSION = 1
MAX_PEERS = 500
MAX_ADDRS_PER_PEER = 8
MAX_ADDR_CHARS = 256
BASE_BACKOFF = 2.0  # seconds before the first retry
MAX_BACKOFF = 600.0  # a peer that is gone for good: one dial per ten minutes
JITTER = 0.2  # a delay is drawn from [(1 - JITTER) * d, d]: always growing, never in lockstep
FORGET_AFTER = 30 * 24 * 3600.0  # unreachable and unseen this long: dropped
MAX_FILE_BYTES = 4 * 1024 * 1024  # 500 peers take ~150 KB; anything far larger is not ours

Clock = Callable[[], float]


@dataclass
class PeerEntry:
    """One remembered peer. ``addrs`` are transport multiaddrs without ``/p2p/<id>``, best first."""

    peer_id: str
    addrs: list[str] = field(default_factory=list)
    last_seen_ms: int = 0  # last time we were connected or heard it announce itself
    failures: int = 0  # failed dials in a row since the last connection
    next_attempt_ms: int = 0  # do not dial before this

    def dial_addrs(self) -> list[str]:
        """The addresses with the ``/p2p/<peer id>`` suffix libp2p needs to dial."""
        return [f"{addr}/p2p/{self.peer_id}" for addr in self.addrs]


def is_peer_id(text: str) -> bool:
    """A base58 libp2p peer id: an identity multihash of a key (``12D3KooW…``, Ed25519) or a
    SHA-256 one (``Qm…``, larger keys). py-libp2p's parser takes any base58 text."""
    if not isinstance(text, str) or not 40 <= len(text) <= 60:
        return False
    try:
        raw = ID.from_base58(text).to_bytes()
    except Exception:  # the base58 decoder raises several unrelated types
        return False
    if raw[:1] == b"\x00":  # identity multihash: code, length (< 128: one varint byte), key
        return len(raw) >= 2 and raw[1] < 0x80 and len(raw) == 2 + raw[1]
    return raw[:2] == b"\x12\x20" and len(raw) == 34


def clean_addrs(addrs: Iterable[str]) -> list[str]:
    """Distinct, plausible transport addresses, ``/p2p/...`` suffixes removed, order kept."""
    out: list[str] = []
    for addr in addrs:
        if not isinstance(addr, str):
            continue
        addr = addr.split("/p2p/", 1)[0]
        if addr.startswith("/") and len(addr) <= MAX_ADDR_CHARS and addr not in out:
            out.append(addr)
    return out


class PeerBook:
    """Remembered peers with reconnect schedules; not thread-safe (use it from one thread)."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        max_peers: int = MAX_PEERS,
        base_backoff: float = BASE_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        clock: Clock = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.path = path  # None: in memory only
        self.max_peers = max_peers
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self.clock = clock
        self._rng = rng or random.Random()
        self._peers: dict[str, PeerEntry] = {}
        self.dirty = False  # changed since the last save

    # --- reading ---------------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._peers

    def get(self, peer_id: str) -> PeerEntry | None:
        return self._peers.get(peer_id)

    def entries(self) -> list[PeerEntry]:
        """All entries, most recently seen first."""
        return sorted(self._peers.values(), key=lambda e: e.last_seen_ms, reverse=True)

    def due(self, now_ms: int | None = None) -> list[PeerEntry]:
        """Peers whose next attempt has come, soonest first, that have an address to dial."""
        now = self.now_ms() if now_ms is None else now_ms
        ready = [e for e in self._peers.values() if e.addrs and e.next_attempt_ms <= now]
        return sorted(ready, key=lambda e: (e.next_attempt_ms, -e.last_seen_ms))

    def backoff(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failed dials in a row (jittered, capped)."""
        if failures <= 0:
            return 0.0
        ceiling = min(self.max_backoff, self.base_backoff * 2.0 ** min(failures - 1, 62))
        return ceiling * (1.0 - JITTER * self._rng.random())

    # --- changes ---------------------------------------------------------------------------

    def learn(self, peer_id: str, addrs: Sequence[str]) -> PeerEntry | None:
        """Addresses heard of (bootstrap, mDNS, an invite): merged in, first; a new peer is due
        at once. A known peer keeps its failure count and schedule."""
        if not is_peer_id(peer_id):
            return None
        now = self.now_ms()
        entry = self._peers.get(peer_id)
        if entry is None:
            entry = PeerEntry(peer_id, next_attempt_ms=now)
            self._insert(entry)
        self._merge(entry, clean_addrs(addrs), front=True)  # a fresh announcement beats old
        entry.last_seen_ms = max(entry.last_seen_ms, now)
        self.dirty = True
        return entry

    def seen(self, peer_id: str, addrs: Sequence[str] = ()) -> PeerEntry | None:
        """We are connected to it; ``addrs`` (known good) go first.

        Failures are not cleared yet: a peer that accepts and at once hangs up must keep
        backing off. ``stable`` clears them once a link has lasted.
        """
        entry = self.learn(peer_id, ())
        if entry is None:
            return None
        self._merge(entry, clean_addrs(addrs), front=True)
        entry.next_attempt_ms = entry.last_seen_ms
        return entry

    def stable(self, peer_id: str) -> None:
        """A link to it has lasted: it is reachable, its failures are forgiven."""
        entry = self._peers.get(peer_id)
        if entry is not None and entry.failures:
            entry.failures = 0
            self.dirty = True

    def update_addrs(self, peer_id: str, addrs: Sequence[str]) -> bool:
        """Add addresses a connected peer announced; True if anything changed."""
        entry = self._peers.get(peer_id)
        if entry is None:
            return False
        before = list(entry.addrs)
        self._merge(entry, clean_addrs(addrs), front=False)
        changed = entry.addrs != before
        self.dirty = self.dirty or changed
        return changed

    def disconnected(self, peer_id: str, *, stable: bool) -> float:
        """The link dropped: schedule a redial; returns the delay in seconds.

        After a link that lasted (``stable``), the first backoff step: the peer is probably
        restarting. After a short one, the next step of the failure backoff, as for a dial
        that failed: a peer that keeps hanging up on us is not redialled every few seconds.
        """
        entry = self._peers.get(peer_id)
        if entry is None:
            return 0.0
        now = self.now_ms()
        entry.last_seen_ms = now
        if stable:
            entry.failures = 0
            delay = self._jittered(self.base_backoff)
        else:
            entry.failures += 1
            delay = self.backoff(entry.failures)
        entry.next_attempt_ms = now + int(delay * 1000)
        self.dirty = True
        return delay

    def failed(self, peer_id: str) -> float:
        """A dial failed: count it and schedule the next one; returns the delay in seconds."""
        entry = self._peers.get(peer_id)
        if entry is None:
            return 0.0
        entry.failures += 1
        delay = self.backoff(entry.failures)
        entry.next_attempt_ms = self.now_ms() + int(delay * 1000)
        self.dirty = True
        return delay

    def defer(self, peer_id: str, seconds: float) -> None:
        """Do not dial this peer for ``seconds`` (we hung up on it on purpose)."""
        entry = self._peers.get(peer_id)
        if entry is None:
            return
        entry.next_attempt_ms = max(entry.next_attempt_ms, self.now_ms() + int(seconds * 1000))
        self.dirty = True

    def forget(self, peer_id: str) -> None:
        if self._peers.pop(peer_id, None) is not None:
            self.dirty = True

    def prune(self) -> int:
        """Drop peers that failed every dial and were not seen for ``FORGET_AFTER``."""
        limit = self.now_ms() - int(FORGET_AFTER * 1000)
        stale = [p for p, e in self._peers.items() if e.failures and e.last_seen_ms < limit]
        for peer_id in stale:
            del self._peers[peer_id]
        self.dirty = self.dirty or bool(stale)
        return len(stale)

    def _jittered(self, seconds: float) -> float:
        return seconds * (1.0 - JITTER * self._rng.random())

    def _merge(self, entry: PeerEntry, addrs: list[str], *, front: bool) -> None:
        if front:
            merged = addrs + [a for a in entry.addrs if a not in addrs]
        else:
            merged = entry.addrs + [a for a in addrs if a not in entry.addrs]
        entry.addrs = merged[:MAX_ADDRS_PER_PEER]

    def _insert(self, entry: PeerEntry) -> None:
        """Add an entry, evicting the least recently seen beyond ``max_peers``."""
        while len(self._peers) >= self.max_peers:
            oldest = min(self._peers.values(), key=lambda e: e.last_seen_ms)
            del self._peers[oldest.peer_id]
        self._peers[entry.peer_id] = entry

    # --- persistence -----------------------------------------------------------------------

    def dumps(self) -> bytes:
        """The file's content; cheap enough to call on the trio thread (~1 ms for 500)."""
        peers = [asdict(e) for e in self.entries()]
        return json.dumps({"version": FORMAT_VERSION, "peers": peers}, indent=0).encode()

    def save(self) -> None:
        """Write the book atomically (blocking); a no-op for an in-memory book."""
        if self.path is None:
            return
        data = self.dumps()
        self.dirty = False
        write_atomic(self.path, data)

    @classmethod
    def load(cls, path: Path, **options: Any) -> PeerBook:
        """The book saved at ``path``; empty if there is none or it is unreadable.

        A damaged file costs us our remembered peers, not the node: it is logged and replaced
        at the next save.
        """
        book = cls(path, **options)
        try:
            with path.open("rb") as file:
                raw = file.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return book
        except OSError as exc:
            logger.warning("cannot read %s: %s; starting with no remembered peers", path, exc)
            return book
        try:
            if len(raw) > MAX_FILE_BYTES:
                raise ValueError("file too large")
            entries = _parse(json.loads(raw))
        except (ValueError, UnicodeDecodeError) as exc:
            logger.warning("ignoring damaged %s: %s", path, exc)
            return book
        for entry in sorted(entries, key=lambda e: e.last_seen_ms, reverse=True):
            if entry.peer_id not in book._peers and len(book._peers) < book.max_peers:
                book._peers[entry.peer_id] = entry
        return book


def _parse(data: Any) -> list[PeerEntry]:
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        raise ValueError("not a version 1 peer book")
    peers = data.get("peers")
    if not isinstance(peers, list):
        raise ValueError("no peer list")
    entries = [_parse_entry(item) for item in peers]
    return [e for e in entries if e is not None]


def _parse_entry(item: Any) -> PeerEntry | None:
    """One entry, or None if it is not one we could have written (skipped, not fatal)."""
    if not isinstance(item, dict):
        return None
    peer_id, addrs = item.get("peer_id"), item.get("addrs")
    if not isinstance(peer_id, str) or not is_peer_id(peer_id) or not isinstance(addrs, list):
        return None
    numbers: list[int] = []
    for key in ("last_seen_ms", "failures", "next_attempt_ms"):
        value = item.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return None
        numbers.append(value)
    last_seen, failures, next_attempt = numbers
    return PeerEntry(
        peer_id, clean_addrs(addrs)[:MAX_ADDRS_PER_PEER], last_seen, failures, next_attempt
    )


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: readers see the old file or the new one, never a part."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:  # mkstemp creates it 0600
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where we can
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
