"""What the app needs of a node connection: calls, events, closing.

``AsyncControlClient`` has exactly this shape; the Pilot tests pass a fake with the same methods.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any, Protocol

from p2pshare.protocol.control_wire import Event


class NodeClient(Protocol):
    async def call(self, method: str, /, **params: Any) -> Any: ...

    async def subscribe(self, events: Iterable[str] | None = None) -> Any: ...

    def events(self) -> AsyncIterator[Event]: ...

    async def close(self) -> None: ...
