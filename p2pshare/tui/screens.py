"""The screens. Each asks the app (``self.app``) for node calls; none holds a connection itself.

Screens that show a record expose ``selected_view()`` so the app's keys (recommend, republish,
download, follow, block) act on whatever record is in front of the person.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Input, ProgressBar, Static

from p2pshare.protocol.views import size_text
from p2pshare.tui import records as R

FEED_COLUMNS = ("what", "title", "by", "trust", "community", "licence", "age")
PAGE = 200  # records fetched per page of the feed
PREFETCH_ROWS = 40  # fetch the next page when the cursor is this close to the end


class RecordTable(DataTable[str]):
    """Record views as rows, keyed by record id (the feed's and the search results')."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.views: dict[str, dict[str, Any]] = {}

    def on_mount(self) -> None:
        self.add_columns(*FEED_COLUMNS)

    def append(self, views: list[dict[str, Any]]) -> None:
        for view in views:
            key = str(view["id"])
            if key in self.views:
                continue
            self.views[key] = view
            self.add_row(*R.feed_row(view), key=key)

    def replace(self, views: list[dict[str, Any]]) -> None:
        self.clear()
        self.views.clear()
        self.append(views)

    def selected_view(self) -> dict[str, Any] | None:
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return self.views.get(str(key))


class FeedScreen(Screen[None]):
    """Nearest in trust first, then newest; paged from the node; new records come in live
    (coalesced by the app)."""

    def __init__(self) -> None:
        super().__init__(id="feed")
        self.loaded = 0
        self.total = 0
        self.exhausted = False
        self.pending_new = 0
        self._loading = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Connecting to the node…", id="status")
        yield RecordTable(id="feed-table")
        yield Footer()

    @property
    def table(self) -> RecordTable:
        return self.query_one(RecordTable)

    def selected_view(self) -> dict[str, Any] | None:
        return self.table.selected_view()

    def set_status(self, text: str) -> None:
        self.query_one("#status", Static).update(text)

    async def reload(self) -> None:
        self.loaded, self.exhausted, self.pending_new = 0, False, 0
        result = await self.app.call_node("feed", limit=PAGE, offset=0)  # type: ignore[attr-defined]
        if result is None:
            return
        self.table.replace(result["records"])
        self.loaded = len(result["records"])
        self.total = int(result.get("total", self.loaded))
        self.exhausted = self.loaded < PAGE
        self._show_count()

    async def load_more(self) -> None:
        if self._loading or self.exhausted:
            return
        self._loading = True
        try:
            result = await self.app.call_node("feed", limit=PAGE, offset=self.loaded)  # type: ignore[attr-defined]
            if result is None:
                return
            self.table.append(result["records"])
            self.loaded += len(result["records"])
            self.exhausted = len(result["records"]) < PAGE
            self._show_count()
        finally:
            self._loading = False

    def _show_count(self) -> None:
        new = f" — {self.pending_new} new, press n to show" if self.pending_new else ""
        self.set_status(f"{self.total} records{new}")

    def records_arrived(self, views: list[dict[str, Any]]) -> None:
        """New records: straight in at the top if the person is at the top, else counted."""
        self.total += len(views)
        if self.table.cursor_row == 0 and self.loaded <= PAGE:
            self.run_worker(self.reload(), group="feed", exclusive=True, exit_on_error=False)
        else:
            self.pending_new += len(views)
            self._show_count()

    async def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.cursor_row >= self.table.row_count - PREFETCH_ROWS:
            self.run_worker(self.load_more(), group="feed", exit_on_error=False)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        view = self.table.views.get(str(event.row_key.value))
        if view is not None:
            self.app.push_screen(DocumentScreen(view))


class DocumentScreen(Screen[None]):
    """One record in full: metadata, licence, the original of a repost, what you can do."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("s", "app.save", "Save copy"),
        Binding("o", "app.open", "Open"),
    ]

    def __init__(self, view: dict[str, Any]) -> None:
        super().__init__()
        self.view = view

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll():
            yield Static(R.details(self.view), id="details")
        yield Footer()

    def selected_view(self) -> dict[str, Any] | None:
        return self.view

    def refresh_view(self, view: dict[str, Any]) -> None:
        self.view = view
        self.query_one("#details", Static).update(R.details(view))


class SearchScreen(Screen[None]):
    """Full-text search over titles, descriptions, tags and recommendation texts."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="search titles, descriptions, tags, recommendations", id="query")
        yield Static("", id="search-status")
        yield RecordTable(id="search-table")
        yield Footer()

    def selected_view(self) -> dict[str, Any] | None:
        return self.query_one(RecordTable).selected_view()

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        query = event.value.strip()
        if not query:
            return
        result = await self.app.call_node("search", query=query, limit=200)  # type: ignore[attr-defined]
        if result is None:
            return
        table = self.query_one(RecordTable)
        table.replace(result["records"])
        found = len(result["records"])
        self.query_one("#search-status", Static).update(
            f"{found} found for {query!r}" if found else f"nothing found for {query!r}"
        )
        if found:
            table.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        view = self.query_one(RecordTable).views.get(str(event.row_key.value))
        if view is not None:
            self.app.push_screen(DocumentScreen(view))


class TransfersScreen(Screen[None]):
    """Downloads in progress: a bar each, with speed and sources."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, transfers: dict[str, dict[str, Any]]) -> None:
        super().__init__()
        self.transfers = transfers

    def compose(self) -> ComposeResult:
        yield Header()
        yield Vertical(id="transfers")
        yield Footer()

    def on_mount(self) -> None:
        self.update_transfers()

    def update_transfers(self) -> None:
        box = self.query_one("#transfers", Vertical)
        box.remove_children()
        if not self.transfers:
            box.mount(Static("No downloads. Press d on a document to download it."))
            return
        for info in self.transfers.values():
            bar = ProgressBar(total=100, show_eta=False)
            bar.progress = float(info.get("percent", 0.0))
            rate = size_text(int(info.get("rate", 0)))
            box.mount(
                Static(
                    f"{info.get('title', '')}  {rate}/s from {info.get('sources', 0)} peers"
                    f"  {info.get('state', '')}"
                )
            )
            box.mount(bar)


class PeersScreen(Screen[None]):
    """Connected and remembered peers."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, peers: list[dict[str, Any]]) -> None:
        super().__init__()
        self.peers = peers

    def compose(self) -> ComposeResult:
        yield Header()
        table: DataTable[str] = DataTable(cursor_type="row", id="peers-table")
        yield table
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("peer", "state", "invalid")
        for peer in self.peers:
            state = "connected" if peer.get("connected") else "known"
            table.add_row(peer["peer_id"], state, str(peer.get("invalid", 0)), key=peer["peer_id"])
        if not self.peers:
            table.add_row("no peers yet: press c to join with an invite code", "", "")


class TextPrompt(ModalScreen[str | None]):
    """One line of input (a recommendation's text, an invite code, a display name)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, placeholder: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt"):
            yield Static(self.title_text)
            yield Input(placeholder=self.placeholder)
            yield Static("", id="prompt-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if not value:
            self.query_one("#prompt-error", Static).update("Type something, or press Escape.")
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)


HELP = """[b]Keys[/b]

  enter  open the record under the cursor
  /      search            r  recommend        p  republish
  d      download          s  save a copy      f  follow the author
  b      block the author  t  transfers        e  peers
  c      join with an invite code              i  show an invite code
  m      my shares (share a file, retract)     g  communities
  u      your display name n  show new records ctrl+p  all commands
  ?      this help         escape  back        q  quit

Republishing keeps the author's signature, and is refused when the licence
does not allow passing the document on.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Close"),
        Binding("question_mark", "app.pop_screen", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static(HELP)
