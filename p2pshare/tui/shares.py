"""My shares: what I published (documents, recommendations, reposts); share a file through a
form with a licence picker that says what each licence allows; retract one.

The form checks what it can before asking the node (a path, a title, tag limits) and shows
every refusal inline, so a mistake is fixed in place rather than retyped.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static

from p2pshare.protocol import limits as L
from p2pshare.protocol.communities import DEFAULT_COMMUNITY
from p2pshare.protocol.licences import ALL_RIGHTS_RESERVED, KNOWN_LICENCES, allows_redistribution
from p2pshare.tui import records as R
from p2pshare.tui.base import Refresher, node
from p2pshare.tui.dialogs import Confirm, field
from p2pshare.tui.document import DocumentScreen
from p2pshare.tui.live import Batch
from p2pshare.tui.recordlist import RecordList, View

COMMON_LICENCES = ("CC-BY-4.0", "CC-BY-SA-4.0", "CC0-1.0", ALL_RIGHTS_RESERVED)
MINE_KINDS = ("doc", "rec", "repost")
MINE_LIMIT = 500


def licence_options() -> list[tuple[str, str]]:
    """The picker's entries, common ones first, each saying whether others may republish."""
    rest = sorted(KNOWN_LICENCES - set(COMMON_LICENCES), key=str.lower)
    out = []
    for licence in (*COMMON_LICENCES, *rest):
        note = "others may republish" if allows_redistribution(licence) else "no republishing"
        out.append((f"{licence} — {note}", licence))
    return out


def parse_tags(text: str) -> list[str]:
    """Comma-separated tags, trimmed, duplicates dropped (first spelling kept)."""
    out: list[str] = []
    for tag in text.split(","):
        tag = tag.strip()
        if tag and tag.lower() not in {t.lower() for t in out}:
            out.append(tag)
    return out


def check_share(values: dict[str, str]) -> str | None:
    """What is wrong with the form, in a sentence, or None."""
    if not values["path"]:
        return "Give the path of the file to share."
    if not values["title"]:
        return "Give the document a title."
    if len(values["title"]) > L.MAX_TITLE_CHARS:
        return f"The title is longer than {L.MAX_TITLE_CHARS} characters."
    if len(values["description"]) > L.MAX_DESCRIPTION_CHARS:
        return f"The description is longer than {L.MAX_DESCRIPTION_CHARS} characters."
    tags = parse_tags(values["tags"])
    if len(tags) > L.MAX_TAGS:
        return f"At most {L.MAX_TAGS} tags, please."
    long = [t for t in tags if len(t) > L.MAX_TAG_CHARS]
    if long:
        return f"The tag {R.short(long[0], 20)!r} is longer than {L.MAX_TAG_CHARS} characters."
    return None


class ShareForm(ModalScreen[View | None]):
    """Share a file: path, title, description, tags, licence, community."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="share-form"):
            yield Label("[b]Share a file with your peers[/b]\n")
            yield field(
                "file", Input(placeholder="e.g. ~/guides/wheels.pdf", compact=True, id="path")
            )
            yield field("title", Input(max_length=L.MAX_TITLE_CHARS, compact=True, id="title"))
            yield field(
                "description", Input(placeholder="optional", compact=True, id="description")
            )
            yield field(
                "tags", Input(placeholder="optional, separated by commas", compact=True, id="tags")
            )
            yield field(
                "licence",
                Select(
                    licence_options(),
                    value="CC-BY-4.0",
                    allow_blank=False,
                    compact=True,
                    id="licence",
                ),
            )
            yield Static("", classes="note", id="licence-note")
            yield field("community", Input(value=DEFAULT_COMMUNITY, compact=True, id="community"))
            yield Static("", id="form-error")
            with Horizontal(id="form-buttons"):
                yield Button("Share", variant="primary", compact=True, id="share")
                yield Button("Cancel", compact=True, id="cancel")

    def on_mount(self) -> None:
        self._licence_note()
        self.query_one("#path", Input).focus()

    def _value(self, name: str) -> str:
        return self.query_one(f"#{name}", Input).value.strip()

    def _error(self, text: str) -> None:
        self.query_one("#form-error", Static).update(f"[red]{R.escape(text)}[/red]" if text else "")

    def _licence_note(self) -> None:
        licence = str(self.query_one("#licence", Select).value)
        self.query_one("#licence-note", Static).update(R.licence_sentence(licence))

    def on_select_changed(self, event: Select.Changed) -> None:
        self._licence_note()

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
            return
        await self.submit()

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        await self.submit()

    async def submit(self) -> None:
        values = {name: self._value(name) for name in ("path", "title", "description", "tags")}
        problem = check_share(values)
        if problem:
            self._error(problem)
            return
        params = {
            "path": values["path"],
            "title": values["title"],
            "description": values["description"],
            "tags": parse_tags(values["tags"]),
            "licence": str(self.query_one("#licence", Select).value),
            "community": self._value("community") or DEFAULT_COMMUNITY,
        }
        self.query_one("#form-error", Static).update("Sharing… (hashing a big file takes a moment)")
        result = await node(self).call_node("share", **params)
        if result is None:
            self._error("Not shared: see the message. Fix the form and press Share again.")
            return
        self.dismiss(result)

    def action_cancel(self) -> None:
        self.dismiss(None)


class MySharesScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "app.close_screen", "Back"),
        Binding("a", "share", "Share a file"),
        Binding("x", "retract", "Retract"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Your shares", id="mine-status")
        yield RecordList(id="mine-list", empty="")
        yield Footer()

    @property
    def rows(self) -> RecordList:
        return self.query_one(RecordList)

    def __init__(self) -> None:
        super().__init__()
        self.refresher = Refresher(self, self.reload)  # events may come before the mount

    async def on_mount(self) -> None:
        self.rows.focus()
        await self.reload()

    async def reload(self) -> None:
        result = await node(self).call_node("list", mine=True, limit=MINE_LIMIT)
        if result is None:
            return
        shown = [v for v in result["records"] if v.get("kind") in MINE_KINDS]
        for view in shown:
            view.setdefault("trust", 0)
        self.rows.set_views(shown)
        self.query_one("#mine-status", Static).update(
            f"{len(shown)} shared by you — a shares a file, r recommends, x retracts"
            if shown
            else "You have shared nothing yet — press a to share a file"
        )

    def selected_view(self) -> View | None:
        return self.rows.selected_view()

    def on_record_list_selected(self, event: RecordList.Selected) -> None:
        self.app.push_screen(DocumentScreen(event.view))

    def action_share(self) -> None:
        async def done(result: dict[str, Any] | None) -> None:
            if result:
                self.app.notify(f"Shared {result.get('headline', '')}")
                await self.reload()

        self.app.push_screen(ShareForm(), done)

    def action_retract(self) -> None:
        view = self.selected_view()
        if view is None:
            self.app.notify("Nothing selected.", severity="warning")
            return
        what = R.short(R.title(view), 50)

        async def answered(yes: bool | None) -> None:
            if yes and await node(self).call_node("retract", id=view["id"]) is not None:
                self.app.notify(f"Retracted {what}; peers drop it too")
                await self.reload()

        self.app.push_screen(
            Confirm(
                f"Retract {R.escape(repr(what))}?\n"
                "Peers who hold it drop it; this cannot be undone."
            ),
            answered,
        )

    def apply(self, batch: Batch) -> None:
        me = node(self).my_peer_id
        if batch.dropped or any(v.get("author") == me for v in batch.records):
            self.refresher.request()
