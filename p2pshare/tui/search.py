"""Full-text search over titles, descriptions, tags, recommendation texts and names (the node's
FTS index). Results come as you type (the last word matches as a prefix) and on enter."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Header, Input, Static

from p2pshare.tui.base import node
from p2pshare.tui.document import DocumentScreen
from p2pshare.tui.recordlist import RecordList, View

RESULTS = 200
TYPING_PAUSE_S = 0.3  # search once typing pauses this long


class SearchScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "app.close_screen", "Back"),
        Binding("slash", "focus_query", "New search", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._timer: Timer | None = None
        self._searched = ""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="search titles, descriptions, tags, recommendations", id="query")
        yield Static(
            "Type words to find; enter goes to the results.", id="search-status", markup=False
        )
        yield RecordList(id="search-list", empty="")
        yield Footer()

    @property
    def results(self) -> RecordList:
        return self.query_one(RecordList)

    def selected_view(self) -> View | None:
        return self.results.selected_view()

    def action_focus_query(self) -> None:
        self.query_one("#query", Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(TYPING_PAUSE_S, self._search_now)

    async def _search_now(self) -> None:
        await self.search(self.query_one("#query", Input).value)

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        if self._timer is not None:
            self._timer.stop()
        await self.search(event.value)
        if self.results.total:
            self.results.focus()

    async def search(self, text: str) -> None:
        query = text.strip()
        if query == self._searched:
            return
        self._searched = query
        status = self.query_one("#search-status", Static)
        if not query:
            self.results.set_views([])
            status.update("Type words to find; enter goes to the results.")
            return
        result = await node(self).call_node("search", query=query, limit=RESULTS)
        if result is None:
            self._searched = ""
            return
        found = result["records"]
        self.results.set_views(found)
        if not found:
            status.update(f"Nothing found for {query!r}.")
        else:
            many = f" (the best {RESULTS})" if len(found) >= RESULTS else ""
            status.update(f"{len(found)} found for {query!r}{many}; enter opens one.")

    def on_record_list_selected(self, event: RecordList.Selected) -> None:
        self.app.push_screen(DocumentScreen(event.view))
