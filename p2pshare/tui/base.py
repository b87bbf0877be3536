"""What every screen needs from the app: node calls that never raise, and the live batch.

Screens call ``node(self).call_node(...)``: the answer, or None after the app has told the
person what went wrong in a sentence. A screen that shows live data defines ``apply(batch)``;
the app calls it on the screen in front, at most FLUSH_PER_S times a second.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from textual.dom import DOMNode
from textual.widget import Widget


class NodeApp(Protocol):
    async def call_node(self, method: str, /, **params: Any) -> Any: ...

    @property
    def my_peer_id(self) -> str: ...

    transfers: dict[str, dict[str, Any]]


def node(widget: DOMNode) -> NodeApp:
    return cast(NodeApp, widget.app)


class Refresher:
    """Runs ``reload`` for a widget when asked, never two at once, never starved.

    Asked again while a reload runs, it runs once more after it, with whatever arrived
    meanwhile; cancelling the running one instead (exclusive workers) meant a steady stream of
    events cancelled every reload and the screen never changed.
    """

    def __init__(self, owner: Widget, reload: Callable[[], Awaitable[object]]) -> None:
        self.owner = owner
        self.reload = reload
        self.running = False
        self.again = False

    def request(self) -> None:
        if self.running:
            self.again = True
            return
        self.running = True
        self.owner.run_worker(self._run(), exit_on_error=False)

    async def _run(self) -> None:
        try:
            while True:
                self.again = False
                await self.reload()
                if not self.again:
                    return
        except Exception as exc:  # a bug, not the node (call_node says why itself)
            self.owner.app.notify(f"Could not refresh: {exc!r}", severity="error")
        finally:
            self.running = False
