"""One record in full: metadata, licence and what it allows, who recommends it, how it reached
us (the repost chain), and its document's state; the app's keys download, open, save,
recommend and republish it.

It opens at once with the view it was given, then asks the node for the current document
state (``show``) and who vouches for it (``vouches``).
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from p2pshare.protocol.keys import KeyFormatError, parse_id
from p2pshare.tui import records as R
from p2pshare.tui.base import Refresher, node
from p2pshare.tui.live import Batch

View = dict[str, Any]


class DocumentScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "app.close_screen", "Back"),
        Binding("s", "app.save", "Save a copy"),
        Binding("o", "app.open", "Open"),
        Binding("a", "about", "What it is about", show=False),
    ]

    def __init__(self, view: View) -> None:
        super().__init__()
        self.view = view
        self.refresher = Refresher(self, self.refresh_from_node)

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="document"):
            yield Static(R.details(self.view), id="details")
            yield Static("", id="doc-actions")
            yield Static(self._chain(), id="chain")
            yield Static(R.vouches_text(None), id="vouches")
        yield Footer()

    def on_mount(self) -> None:
        self._show_actions()
        self.refresher.request()

    def selected_view(self) -> View | None:
        return self.view

    def _chain(self) -> str:
        return "[b]How it reached you[/b]\n" + R.chain_text(self.view) + "\n"

    def _show_actions(self) -> None:
        hints = []
        if R.is_document(self.view):
            state = self.view.get("document")
            hints.append("s saves a copy, o opens it" if state == "complete" else "d downloads it")
        hints.append("r recommends it")
        refusal = R.republish_refusal(self.view)
        hints.append("p republishes it" if refusal is None else "it cannot be republished")
        hints.append("f follows the author, b blocks them")
        if (self.view.get("body") or {}).get("subject_type") == "record":
            hints.append("a opens what it recommends")
        self.query_one("#doc-actions", Static).update("[dim]" + "; ".join(hints) + "[/dim]\n")

    async def refresh_from_node(self) -> None:
        fresh = await node(self).call_node("show", id=self.view["id"])
        if fresh is not None:
            fresh.setdefault("trust", self.view.get("trust", 3))
            self.refresh_view(fresh)
        vouches = await node(self).call_node("vouches", id=self.view["id"])
        self.query_one("#vouches", Static).update(
            R.vouches_text(vouches) if vouches is not None else ""
        )

    def refresh_view(self, view: View) -> None:
        self.view = view
        self.query_one("#details", Static).update(R.details(view))
        self.query_one("#chain", Static).update(self._chain())
        self._show_actions()

    def apply(self, batch: Batch) -> None:
        """A download of this document finished, or someone vouched for it: show it."""
        root = R.source(self.view).get("root")
        touched = any(data.get("root") == root for _, data in batch.finished) if root else False
        ident = str(R.source(self.view).get("id"))
        for rec in batch.records:
            body = rec.get("body") or {}
            if rec.get("kind") == "repost" and R.source(rec).get("id") == ident:
                touched = True
            if body.get("subject_type") == "record" and body.get("subject") == _hex(ident):
                touched = True
        if touched or batch.dropped:
            self.refresher.request()

    async def action_about(self) -> None:
        body = self.view.get("body") or {}
        if body.get("subject_type") != "record":
            self.app.notify("This record does not recommend another record.", severity="warning")
            return
        subject = await node(self).call_node("show", id=str(body["subject"]))
        if subject is not None:
            self.app.push_screen(DocumentScreen(subject))


def _hex(record_id: str) -> str | None:
    """A record id as a recommendation's body holds it (hex)."""
    try:
        return parse_id(record_id).hex()
    except KeyFormatError:
        return None
