"""Your profile: who you are on the network (peer id, node, data dir), whom you follow and who
follows you, and a form for the profile peers see (name, about, website, location)."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Static

from p2pshare.protocol import limits as L
from p2pshare.tui.base import node
from p2pshare.tui.dialogs import field

FIELDS = (
    ("name", "name", "your display name, e.g. Cycle Works", L.MAX_NAME_CHARS),
    ("about", "about", "what you do, in a line or two", L.MAX_ABOUT_CHARS),
    ("website", "website", "optional, https://…", L.MAX_URL_CHARS),
    ("location", "location", "optional: town or area", L.MAX_LOCATION_CHARS),
)


def identity_text(status: dict[str, Any], me: dict[str, Any], following: int) -> str:
    lines = [
        f"peer id     {status.get('peer_id', '')}",
        f"node        {status.get('node', '')}  (data dir {status.get('data_dir', '?')})",
        f"records     {status.get('records', 0)}, of which {status.get('documents', 0)} documents",
        f"you follow  {following} people   ·   your own records: {me.get('records', 0)}",
    ]
    return "\n".join(lines)


class ProfileScreen(Screen[None]):
    BINDINGS = [Binding("escape", "app.close_screen", "Back")]

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="profile"):
            yield Static("Asking the node…", id="identity", markup=False)
            yield Label("\n[b]Your profile, as peers see it[/b]\n")
            for name, label, placeholder, limit in FIELDS:
                entry = Input(
                    placeholder=placeholder, max_length=limit, compact=True, id=f"profile-{name}"
                )
                yield field(label, entry)
            yield Static("", id="profile-error")
            with Horizontal(id="form-buttons"):
                yield Button("Publish profile", variant="primary", compact=True, id="publish")
        yield Footer()

    async def on_mount(self) -> None:
        self.query_one("#profile-name", Input).focus()
        status = await node(self).call_node("status")
        if status is None:
            return
        people = await node(self).call_node("people", keys=[status["peer_id"]], following=True)
        listed = people["people"] if people is not None else []
        me: dict[str, Any] = next((p for p in listed if p.get("me")), {})
        following = sum(1 for p in listed if p.get("following"))
        self.query_one("#identity", Static).update(identity_text(status, me, following))
        profile = me.get("profile") or {}
        for name, *_ in FIELDS:
            self.query_one(f"#profile-{name}", Input).value = str(profile.get(name, ""))

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        await self.publish()

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        await self.publish()

    async def publish(self) -> None:
        values = {
            name: self.query_one(f"#profile-{name}", Input).value.strip() for name, *_ in FIELDS
        }
        error = self.query_one("#profile-error", Static)
        if not values["name"]:
            error.update("[red]A display name is needed: peers see you by it.[/red]")
            return
        website = values["website"]
        if website and not website.startswith(("http://", "https://")):
            error.update("[red]The website must start with http:// or https://[/red]")
            return
        if await node(self).call_node("profile", **values) is not None:
            error.update("Published: peers see the new profile as it spreads.")
            self.app.notify(f"Your profile is published as {values['name']}")
