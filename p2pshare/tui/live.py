"""Coalescing the node's pushed events into batches the screens apply a few times a second.

A node can push thousands of ``record-added`` events a second (a sync catching up); redrawing
for each froze Textual for seconds (notes/tui.md). ``EventBuffer.add`` only records what
changed, in O(1) memory per kind of change; the app calls ``take`` at most FLUSH_PER_S times a
second and hands the batch to the screens.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from p2pshare.protocol.control_wire import EVENT_DROPPED

FLUSH_PER_S = 10  # screen updates a second from events, at most
KEPT_RECORDS = 200  # newest record views kept per batch (the count covers the rest)


@dataclass
class Batch:
    """What the node said since the last batch."""

    records: list[dict[str, Any]] = field(default_factory=list)  # newest last, at most KEPT
    record_count: int = 0
    dropped: bool = False  # the connection dropped events: anything may have changed
    transfers: dict[str, dict[str, Any]] = field(default_factory=dict)  # root -> latest
    finished: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # done / failed
    peers: dict[str, bool] = field(default_factory=dict)  # peer id -> connected now
    communities: bool = False


class EventBuffer:
    """Pushed events in, one ``Batch`` out per screen update."""

    def __init__(self) -> None:
        self._batch = Batch()
        self._records: deque[dict[str, Any]] = deque(maxlen=KEPT_RECORDS)
        self._empty = True

    def add(self, name: str, data: Any) -> None:
        batch = self._batch
        if name == "record-added" and isinstance(data, dict):
            self._records.append(data)
            batch.record_count += 1
        elif name == EVENT_DROPPED:
            batch.dropped = True
        elif name == "transfer-progress" and isinstance(data, dict) and "root" in data:
            batch.transfers[str(data["root"])] = data
        elif name in ("transfer-done", "transfer-failed") and isinstance(data, dict):
            batch.finished.append((name, data))
        elif name in ("peer-up", "peer-down") and isinstance(data, dict):
            batch.peers[str(data.get("peer_id", ""))] = name == "peer-up"
        elif name in ("community-joined", "community-left"):
            batch.communities = True
        else:
            return  # an event no screen shows
        self._empty = False

    def take(self) -> Batch | None:
        """Everything since the last call, or None if nothing happened."""
        if self._empty:
            return None
        batch, self._batch = self._batch, Batch()
        batch.records = list(self._records)
        self._records.clear()
        self._empty = True
        return batch
