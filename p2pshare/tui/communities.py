"""Communities this node is in: join one by name or with an invite code, leave one, show an
invite code for one (a line to send to a friend)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from p2pshare.tui.base import Refresher, node
from p2pshare.tui.dialogs import TextPrompt
from p2pshare.tui.live import Batch


class InviteScreen(ModalScreen[None]):
    """An invite code, selectable (and already on the clipboard where the terminal allows)."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Close")]

    def __init__(self, community: str | None, code: str) -> None:
        super().__init__()
        self.community = community
        self.code = code

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            where = f" to {self.community}" if self.community else ""
            yield Static(f"[b]Invite someone{where}[/b]\n")
            yield Static(
                "Send them this line; they press c in p2pshare (or run p2pshare join CODE)."
                " It holds your addresses, so it works while your node runs."
            )
            yield Input(self.code, id="invite-code")
            yield Static("[dim]Copied to the clipboard if your terminal allows. Escape closes.")

    def on_mount(self) -> None:
        self.app.copy_to_clipboard(self.code)


class CommunitiesScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "app.close_screen", "Back"),
        Binding("j", "join_named", "Join"),
        Binding("c", "app.join", "Join with a code"),
        Binding("l", "leave", "Leave"),
        Binding("i", "invite", "Invite"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(
            "j joins a community by name, c with an invite code, l leaves, i shows an invite code",
            id="communities-status",
        )
        yield DataTable(cursor_type="row", id="communities-table")
        yield Footer()

    def __init__(self) -> None:
        super().__init__()
        self.refresher = Refresher(self, self.reload)  # events may come before the mount

    async def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("community")
        await self.reload()
        table.focus()

    async def reload(self) -> None:
        status = await node(self).call_node("status")
        if status is None:
            return
        table = self.query_one(DataTable)
        where = table.cursor_row
        table.clear()
        for community in status.get("communities", []):
            table.add_row(community, key=community)
        if table.row_count:
            table.move_cursor(row=min(where, table.row_count - 1))

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def action_join_named(self) -> None:
        async def done(name: str | None) -> None:
            if name and await node(self).call_node("join", community=name) is not None:
                self.app.notify(f"Joined {name}")
                await self.reload()

        self.app.push_screen(TextPrompt("Join a community by name", "e.g. bike-repair"), done)

    async def action_leave(self) -> None:
        community = self.selected()
        if community is None:
            return
        if await node(self).call_node("leave", community=community) is not None:
            self.app.notify(f"Left {community}")
            await self.reload()

    async def action_invite(self) -> None:
        community = self.selected()
        result = await node(self).call_node("invite", community=community)
        if result is not None:
            self.app.push_screen(InviteScreen(community, result["code"]))

    def apply(self, batch: Batch) -> None:
        if batch.communities or batch.dropped:
            self.refresher.request()
