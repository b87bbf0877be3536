"""The feed: what neighbours share, nearest in trust first, then newest, from the node's
``feed`` method a page at a time into a virtual list.

Pages come from one snapshot of the store (the first page's ``snapshot``), so records that
arrive while the person scrolls neither shift nor repeat lines; they are counted ("3 new — n
shows them") and shown at once when the person is at the top.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from p2pshare.tui.base import Refresher, node
from p2pshare.tui.document import DocumentScreen
from p2pshare.tui.live import Batch
from p2pshare.tui.recordlist import PAGE, RecordList, View

EMPTY = "Nothing shared yet. Join a community (c, g) or share a file (m, then a)."


class FeedScreen(Screen[None]):
    def __init__(self) -> None:
        super().__init__(id="feed")
        self.snapshot: int | None = None
        self.pending_new = 0
        self.loaded = False
        self._peers = ""
        self.refresher = Refresher(self, self.reload)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Connecting to the node…", id="status", markup=False)
        yield RecordList(self._fetch, id="feed-list", empty="")
        yield Footer()

    @property
    def rows(self) -> RecordList:
        return self.query_one(RecordList)

    def selected_view(self) -> View | None:
        return self.rows.selected_view()

    def set_status(self, text: str) -> None:
        self.query_one("#status", Static).update(text)

    async def reload(self, *, keep_cursor: bool = False) -> None:
        """A fresh snapshot from the top (new records included)."""
        result = await node(self).call_node("feed", limit=PAGE, offset=0)
        if result is None:
            return
        self.snapshot = result.get("snapshot")
        self.pending_new = 0
        self.loaded = True
        self.rows.empty = EMPTY
        self.rows.reset(int(result.get("total") or 0), result["records"], keep_cursor=keep_cursor)
        self.show_status()

    async def _fetch(self, offset: int, limit: int) -> list[View] | None:
        result = await node(self).call_node(
            "feed", limit=limit, offset=offset, snapshot=self.snapshot, count=False
        )
        return None if result is None else list(result["records"])

    def show_status(self, peers: str | None = None) -> None:
        if peers is not None:
            self._peers = peers
        total = self.rows.total
        parts = [f"{total:,} records" if total != 1 else "1 record"]
        if self._peers:
            parts.append(self._peers)
        if self.pending_new:
            parts.append(f"{self.pending_new:,} new — press n to show them")
        self.set_status("  ·  ".join(parts))

    def at_top(self) -> bool:
        return self.rows.cursor == 0 and round(self.rows.scroll_y) == 0

    def apply(self, batch: Batch) -> None:
        """New records: straight in when the person is at the top, else counted."""
        if not (batch.record_count or batch.dropped) or not self.loaded:
            return
        if self.at_top():
            self.refresher.request()
        else:
            self.pending_new += batch.record_count
            self.show_status()

    def on_record_list_selected(self, event: RecordList.Selected) -> None:
        self.app.push_screen(DocumentScreen(event.view))

    def on_screen_resume(self, event: Any) -> None:
        self.rows.focus()
