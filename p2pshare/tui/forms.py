"""Screens where people make things: share a file, their own shares, communities.

Forms check what they can before calling the node (a title, a licence) and show the node's
refusals inline; nothing here raises into the app.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Select, Static

from p2pshare.protocol.licences import ALL_RIGHTS_RESERVED, KNOWN_LICENCES, allows_redistribution
from p2pshare.tui.screens import RecordTable

COMMON_LICENCES = ("CC-BY-4.0", "CC-BY-SA-4.0", "CC0-1.0", ALL_RIGHTS_RESERVED)


def licence_options() -> list[tuple[str, str]]:
    """The picker's entries, common ones first, each saying whether others may republish."""
    rest = sorted(KNOWN_LICENCES - set(COMMON_LICENCES))
    out = []
    for licence in (*COMMON_LICENCES, *rest):
        note = "others may republish" if allows_redistribution(licence) else "no republishing"
        out.append((f"{licence} — {note}", licence))
    return out


class ShareForm(ModalScreen[dict[str, Any] | None]):
    """Share a file: path, title, description, tags, licence, community."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="share-form"):
            yield Label("Share a file with your peers")
            yield Input(placeholder="path of the file, e.g. ~/guides/wheels.pdf", id="path")
            yield Input(placeholder="title", id="title")
            yield Input(placeholder="description (optional)", id="description")
            yield Input(placeholder="tags, separated by commas (optional)", id="tags")
            yield Select(licence_options(), value="CC-BY-4.0", allow_blank=False, id="licence")
            yield Input(value="public", placeholder="community", id="community")
            yield Static("", id="form-error")
            with Horizontal():
                yield Button("Share", variant="primary", id="share")
                yield Button("Cancel", id="cancel")

    def _value(self, name: str) -> str:
        return self.query_one(f"#{name}", Input).value.strip()

    def _error(self, text: str) -> None:
        self.query_one("#form-error", Static).update(f"[red]{text}[/red]")

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
            return
        await self.submit()

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        await self.submit()

    async def submit(self) -> None:
        if not self._value("path"):
            self._error("Give the path of the file to share.")
            return
        if not self._value("title"):
            self._error("Give the document a title.")
            return
        params = {
            "path": self._value("path"),
            "title": self._value("title"),
            "description": self._value("description"),
            "tags": [t.strip() for t in self._value("tags").split(",") if t.strip()],
            "licence": str(self.query_one("#licence", Select).value),
            "community": self._value("community") or "public",
        }
        self._error("")
        self.query_one("#form-error", Static).update("Sharing… (hashing a big file takes a moment)")
        result = await self.app.call_node("share", **params)  # type: ignore[attr-defined]
        if result is None:
            self._error("Not shared; see the message above. Fix the form and try again.")
            return
        self.dismiss(result)

    def action_cancel(self) -> None:
        self.dismiss(None)


class MySharesScreen(Screen[None]):
    """What I published: share a new file, retract one."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("a", "share", "Share a file"),
        Binding("x", "retract", "Retract"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Your shares", id="mine-status")
        yield RecordTable(id="mine-table")
        yield Footer()

    async def on_mount(self) -> None:
        await self.reload()

    async def reload(self) -> None:
        result = await self.app.call_node("list", mine=True, limit=1000)  # type: ignore[attr-defined]
        if result is None:
            return
        shown = [v for v in result["records"] if v.get("kind") in ("doc", "rec", "repost")]
        self.query_one(RecordTable).replace(shown)
        self.query_one("#mine-status", Static).update(
            f"{len(shown)} shared by you — a shares a file, x retracts"
            if shown
            else "You have shared nothing yet — press a to share a file"
        )

    def selected_view(self) -> dict[str, Any] | None:
        return self.query_one(RecordTable).selected_view()

    def action_share(self) -> None:
        async def done(result: dict[str, Any] | None) -> None:
            if result:
                self.app.notify(f"Shared {result.get('headline', '')}")
                await self.reload()

        self.app.push_screen(ShareForm(), done)

    async def action_retract(self) -> None:
        view = self.selected_view()
        if view is None:
            self.app.notify("Nothing selected.", severity="warning")
            return
        if await self.app.call_node("retract", id=view["id"]):  # type: ignore[attr-defined]
            self.app.notify(f"Retracted {view.get('headline', '')}; peers drop it too")
            await self.reload()


class CommunitiesScreen(Screen[None]):
    """The communities this node is in: join one, leave one, invite someone."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("j", "join_named", "Join"),
        Binding("l", "leave", "Leave"),
        Binding("i", "app.invite", "Invite code"),
        Binding("c", "app.join", "Join with a code"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("j joins a community by name, c with an invite code, l leaves, i invites")
        table: DataTable[str] = DataTable(cursor_type="row", id="communities-table")
        yield table
        yield Footer()

    async def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("community")
        await self.reload()

    async def reload(self) -> None:
        status = await self.app.call_node("status")  # type: ignore[attr-defined]
        if status is None:
            return
        table = self.query_one(DataTable)
        table.clear()
        for community in status.get("communities", []):
            table.add_row(community, key=community)

    def action_join_named(self) -> None:
        from p2pshare.tui.screens import TextPrompt

        async def done(name: str | None) -> None:
            if name and await self.app.call_node("join", community=name):  # type: ignore[attr-defined]
                self.app.notify(f"Joined {name}")
                await self.reload()

        self.app.push_screen(TextPrompt("Join a community", "e.g. bikes"), done)

    async def action_leave(self) -> None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        if key and await self.app.call_node("leave", community=str(key)):  # type: ignore[attr-defined]
            self.app.notify(f"Left {key}")
            await self.reload()
