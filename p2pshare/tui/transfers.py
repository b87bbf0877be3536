"""Downloads: one line each with a progress bar, speed and the number of peers sending.

The app keeps ``transfers`` (root -> the latest progress the node pushed); this screen starts
from the node's ``status`` (downloads begun before the TUI was) and updates rows in place.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Header, ProgressBar, Static

from p2pshare.protocol.views import size_text
from p2pshare.tui import records as R
from p2pshare.tui.base import node
from p2pshare.tui.live import Batch


def progress_text(info: dict[str, Any]) -> str:
    state = info.get("state") or "downloading"
    size = int(info.get("size") or 0)
    done = int(info.get("present_bytes") or 0)
    amount = f"{size_text(done)} of {size_text(size)}" if size else ""
    if state == "done":
        return f"done  {size_text(size)}" if size else "done"
    if state == "failed":
        return f"failed: {info.get('error', '')}"
    rate = f"{size_text(int(info.get('rate') or 0))}/s"
    sources = int(info.get("sources") or 0)
    peers = f"from {sources} peer{'s' if sources != 1 else ''}"
    return "  ".join(x for x in (amount, rate, peers) if x)


class TransferRow(Widget):
    DEFAULT_CSS = """
    TransferRow { height: 2; }
    TransferRow Horizontal { height: 1; }
    TransferRow .title { width: 1fr; }
    TransferRow ProgressBar { width: 48; }
    TransferRow .detail { width: 1fr; color: $text-muted; }
    """

    def __init__(self, root: str, info: dict[str, Any]) -> None:
        super().__init__(id=f"transfer-{root[:16]}")
        self.root = root
        self.info = info

    def compose(self) -> ComposeResult:
        yield Static(R.short(str(self.info.get("title", "")), 80), classes="title", markup=False)
        with Horizontal():
            yield ProgressBar(total=100, show_eta=False)
            yield Static("", classes="detail", markup=False)

    def on_mount(self) -> None:
        self.show(self.info)

    def show(self, info: dict[str, Any]) -> None:
        self.info = info
        bars = self.query(ProgressBar)
        if not bars:  # not composed yet: on_mount shows the latest
            return
        done = info.get("state") == "done"
        bars.first().update(progress=100.0 if done else float(info.get("percent") or 0.0))
        self.query_one(".detail", Static).update(progress_text(info))


class TransfersScreen(Screen[None]):
    BINDINGS = [Binding("escape", "app.close_screen", "Back")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="transfers-status")
        yield VerticalScroll(id="transfers")
        yield Footer()

    async def on_mount(self) -> None:
        self.update_rows()
        status = await node(self).call_node("status")
        if status is not None:
            for info in status.get("transfers") or []:
                node(self).transfers.setdefault(str(info["root"]), {}).update(info)
            self.update_rows()

    def update_rows(self) -> None:
        transfers = node(self).transfers
        box = self.query_one("#transfers", VerticalScroll)
        rows = {row.root: row for row in box.query(TransferRow)}
        for root, info in transfers.items():
            if root in rows:
                rows[root].show(info)
            else:
                box.mount(TransferRow(root, info))
        active = sum(1 for i in transfers.values() if not i.get("state"))
        self.query_one("#transfers-status", Static).update(
            f"{active} downloading, {len(transfers) - active} finished"
            if transfers
            else "No downloads. Press d on a document to download it."
        )

    def apply(self, batch: Batch) -> None:
        if batch.transfers or batch.finished:
            self.update_rows()
