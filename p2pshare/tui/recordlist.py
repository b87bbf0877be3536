"""A virtual list of records: one line each, only the visible lines drawn, pages fetched on need.

With 100,000 records a DataTable holding a row per record costs seconds to fill and ~1 ms per
removed row (notes/tui.md). This list knows only how many rows there are; ``render_line`` draws
the few on screen from a cache of pages and asks ``fetch`` for a missing page, showing "…"
until it comes. At most MAX_PAGES pages are kept, the ones nearest the cursor. Lists that are
small and complete (search results, my shares) are given all their views at once instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.cells import set_cell_size
from rich.segment import Segment
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from p2pshare.tui import records as R

View = dict[str, Any]
Fetch = Callable[[int, int], Awaitable[list[View] | None]]
PAGE = 100  # rows per fetch
MAX_PAGES = 40  # pages kept in memory
PREFETCH = 30  # fetch the next page when the cursor comes this close to it
LINE_CACHE = 2000  # drawn lines kept


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    width: int  # 0: takes the room the others leave


COLUMNS = (
    Column("what", "what", 9),
    Column("title", "title", 0),
    Column("by", "by", 16),
    Column("trust", "trust", 8),
    Column("community", "community", 11),
    Column("licence", "licence", 15),
    Column("vouched", "recommended by", 14),
    Column("age", "age", 4),
)
DROP_FIRST = ("community", "age", "trust", "by", "vouched")  # when the title gets too narrow
MIN_TITLE = 24


def layout(width: int, columns: tuple[Column, ...] = COLUMNS) -> list[tuple[Column, int]]:
    """Each shown column with its width, in ``width`` cells (one space between columns)."""
    shown = list(columns)
    for key in (None, *DROP_FIRST):
        shown = [c for c in shown if c.key != key]
        fixed = sum(c.width for c in shown) + len(shown) - 1
        if width - fixed >= MIN_TITLE:
            break
    flex = max(1, width - fixed)
    return [(c, c.width or flex) for c in shown]


def cells(view: View, now_s: float | None = None) -> dict[str, str]:
    """The text of each column for one record."""
    return {
        "what": R.KIND_LABELS.get(str(view.get("kind")), str(view.get("kind"))),
        "title": R.title(view),
        "by": R.author(view),
        "trust": R.TRUST_LABELS.get(int(view.get("trust", 3)), ""),
        "community": str(view.get("community", "")),
        "licence": R.licence_cell(view),
        "vouched": R.vouched(view),
        "age": R.age(int(view.get("created_ms", 0)), now_s),
    }


def line_text(values: dict[str, str], widths: list[tuple[Column, int]]) -> str:
    parts = []
    for column, width in widths:
        text = R.short(values.get(column.key, "").replace("\n", " "), width)
        parts.append(set_cell_size(text, width))
    return " ".join(parts)


class RecordList(ScrollView, can_focus=True):
    """Records as lines under a header line; the cursor line is the selected record."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown,space", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
        Binding("enter", "select", "Open", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "record-list--header",
        "record-list--cursor",
        "record-list--far",
        "record-list--waiting",
    }
    DEFAULT_CSS = """
    RecordList { height: 1fr; background: $surface; }
    RecordList > .record-list--header { text-style: bold; background: $panel; }
    RecordList > .record-list--cursor {
        background: $block-cursor-blurred-background;
        color: $block-cursor-blurred-foreground;
    }
    RecordList:focus > .record-list--cursor {
        background: $block-cursor-background;
        color: $block-cursor-foreground;
        text-style: $block-cursor-text-style;
    }
    RecordList > .record-list--far { color: $text-muted; }
    RecordList > .record-list--waiting { color: $text-disabled; }
    """

    class Selected(Message):
        def __init__(self, record_list: RecordList, view: View) -> None:
            super().__init__()
            self.record_list = record_list
            self.view = view

    def __init__(
        self,
        fetch: Fetch | None = None,
        *,
        empty: str = "Nothing here yet.",
        columns: tuple[Column, ...] = COLUMNS,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.fetch = fetch
        self.empty = empty
        self.columns = columns
        self.total = 0
        self.cursor = 0
        self.pages: dict[int, list[View]] = {}
        self._waiting: set[int] = set()
        self._failed: set[int] = set()
        self._generation = 0
        self._widths: tuple[int, list[tuple[Column, int]]] = (-1, [])
        self._lines: dict[tuple[Any, ...], Strip] = {}  # drawn lines, until the list changes

    # --- contents -----------------------------------------------------------------------------

    def reset(self, total: int, first: list[View], *, keep_cursor: bool = False) -> None:
        """A new list: ``total`` rows, of which the first page is ``first``."""
        self._generation += 1
        self._lines.clear()
        self.total = max(total, len(first))
        self.pages = {0: first[:PAGE]} if first else {}
        for start in range(PAGE, len(first), PAGE):
            self.pages[start // PAGE] = first[start : start + PAGE]
        self._waiting.clear()
        self._failed.clear()
        self.virtual_size = Size(self.size.width, self.total + 1)
        self.move_cursor(self.cursor if keep_cursor else 0, scroll=not keep_cursor)
        if not keep_cursor:
            self.scroll_to(y=0, animate=False, immediate=True)
        self.refresh()

    def set_views(self, views: list[View]) -> None:
        """A complete list (nothing to fetch)."""
        self.reset(len(views), views)

    def view_at(self, row: int) -> View | None:
        page = self.pages.get(row // PAGE)
        if page is None or row % PAGE >= len(page):
            return None
        return page[row % PAGE]

    def selected_view(self) -> View | None:
        return self.view_at(self.cursor) if self.total else None

    def views(self) -> list[View]:
        """The views held now, in order (for tests and small lists)."""
        return [v for _, page in sorted(self.pages.items()) for v in page]

    # --- fetching ----------------------------------------------------------------------------

    def _want(self, page: int) -> None:
        if (
            self.fetch is None
            or page in self.pages
            or page in self._waiting
            or page in self._failed
            or page * PAGE >= self.total
            or page < 0
        ):
            return
        self._waiting.add(page)
        self.run_worker(self._load(page, self._generation), group="pages", exit_on_error=False)

    async def _load(self, page: int, generation: int) -> None:
        assert self.fetch is not None
        try:
            views = await self.fetch(page * PAGE, PAGE)
        except Exception as exc:  # a bug, not the node (call_node says why itself)
            self.app.notify(f"Could not load these records: {exc!r}", severity="error")
            views = None
        if generation != self._generation:
            return  # the list was reset meanwhile: a stale page
        self._waiting.discard(page)
        if views is None:
            self._failed.add(page)  # the app said why; ctrl+r (reload) tries again
        else:
            self.pages[page] = views
            self._evict()
        self.refresh()

    def _evict(self) -> None:
        if len(self.pages) <= MAX_PAGES:
            return
        here = self.cursor // PAGE
        for page in sorted(self.pages, key=lambda p: -abs(p - here))[: len(self.pages) - MAX_PAGES]:
            del self.pages[page]

    # --- cursor ------------------------------------------------------------------------------

    @property
    def visible_rows(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def move_cursor(self, row: int, *, scroll: bool = True) -> None:
        row = max(0, min(row, self.total - 1)) if self.total else 0
        old, self.cursor = self.cursor, row
        top = round(self.scroll_y)
        if scroll and row < top:
            self.scroll_to(y=row, animate=False, immediate=True)  # redraws everything
        elif scroll and row >= top + self.visible_rows:
            self.scroll_to(y=row - self.visible_rows + 1, animate=False, immediate=True)
        else:  # only the two lines whose cursor state changed
            self.refresh_line(old + 1)
            self.refresh_line(row + 1)
        self._want(row // PAGE)
        self._want((row + PREFETCH) // PAGE)
        self._want((row - PREFETCH) // PAGE)

    def action_cursor(self, step: int) -> None:
        self.move_cursor(self.cursor + step)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor + direction * self.visible_rows)

    def action_jump(self, row: int) -> None:
        self.move_cursor(self.total - 1 if row < 0 else row)

    def action_select(self) -> None:
        view = self.selected_view()
        if view is not None:
            self.post_message(self.Selected(self, view))

    async def _on_click(self, event: events.Click) -> None:
        row = round(self.scroll_y) + event.y - 1
        if event.y == 0 or row >= self.total:
            return
        if row == self.cursor and event.chain >= 2:
            self.action_select()
        self.move_cursor(row)

    def _on_focus(self, event: events.Focus) -> None:
        self.refresh()

    def _on_blur(self, event: events.Blur) -> None:
        self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(event.size.width, self.total + 1)

    # --- drawing -----------------------------------------------------------------------------

    def _layout(self) -> list[tuple[Column, int]]:
        width = self.scrollable_content_region.width
        if self._widths[0] != width:
            self._widths = (width, layout(width, self.columns))
        return self._widths[1]

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        widths = self._layout()
        if y == 0:
            headers = {c.key: c.header for c in self.columns}
            style = base + self.get_component_rich_style("record-list--header")
            return Strip([Segment(line_text(headers, widths), style)]).adjust_cell_length(
                width, style
            )
        row = round(self.scroll_y) + y - 1
        if row >= self.total:
            text = self.empty if row == 0 else ""
            style = base + self.get_component_rich_style("record-list--waiting")
            return Strip([Segment(text, style)]).adjust_cell_length(width, base)
        view = self.view_at(row)
        key = (row, self._generation, width, row == self.cursor, self.has_focus, base, id(view))
        cached = self._lines.get(key)
        if cached is not None:
            return cached
        if view is None:
            self._want(row // PAGE)
            failed = row // PAGE in self._failed
            text = "  (not loaded: the node did not answer; ctrl+r reloads)" if failed else "  …"
            style = base + self.get_component_rich_style("record-list--waiting")
        else:
            text = line_text(cells(view), widths)
            style = base
            if int(view.get("trust", 0)) >= 3:
                style += self.get_component_rich_style("record-list--far")
        if row == self.cursor:
            style += self.get_component_rich_style("record-list--cursor")
        strip = Strip([Segment(text, style)]).adjust_cell_length(width, style)
        if view is not None:
            if len(self._lines) >= LINE_CACHE:
                self._lines.clear()
            self._lines[key] = strip
        return strip
