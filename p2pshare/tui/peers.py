"""People: peers connected now, peers the node remembers, whom you follow and whom you blocked,
with names from their profiles. Follow, unfollow, block and unblock act on the selected one.
Peers coming and going update the list live."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from p2pshare.tui import records as R
from p2pshare.tui.base import Refresher, node
from p2pshare.tui.live import Batch

Person = dict[str, Any]


def merge(peers: list[dict[str, Any]], people: list[Person]) -> list[Person]:
    """One row per person: the network's view (connected, remembered) and the trust view."""
    rows: dict[str, Person] = {}
    for peer in peers:
        rows[peer["peer_id"]] = {"connected": bool(peer.get("connected")), "known": True, **peer}
    for person in people:
        rows[person["peer_id"]] = {**rows.get(person["peer_id"], {}), **person}
    order = sorted(
        rows.values(),
        key=lambda p: (
            bool(p.get("me")),
            not p.get("connected"),
            int(p.get("trust", 3)),
            str(p.get("name", "")).lower(),
        ),
    )
    return [p for p in order if not p.get("me")]


def state(person: Person) -> str:
    if person.get("blocked"):
        return "blocked"
    if person.get("connected"):
        return "connected"
    return "remembered" if person.get("known") else "not seen"


class PeersScreen(Screen[None]):
    RECORD_ACTIONS = frozenset({"recommend"})  # the app's other record keys: not on people
    BINDINGS = [
        Binding("escape", "app.close_screen", "Back"),
        Binding("f", "follow", "Follow"),
        Binding("x", "unfollow", "Unfollow"),
        Binding("b", "block", "Block"),
        Binding("k", "unblock", "Unblock"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.people: list[Person] = []
        self.refresher = Refresher(self, self.reload)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Asking the node…", id="peers-status")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="peers-table")
        yield Footer()

    async def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("name", "peer id", "network", "trust", "follows you", "records")
        await self.reload()
        table.focus()

    async def reload(self) -> None:
        peers = await node(self).call_node("peers")
        network = peers["peers"] if peers is not None else []
        keys = [p["peer_id"] for p in network]
        people = await node(self).call_node("people", keys=keys, following=True, blocked=True)
        self.people = merge(network, people["people"] if people is not None else [])
        self._fill()

    def _fill(self) -> None:
        table = self.query_one(DataTable)
        where = table.cursor_row
        table.clear()
        for person in self.people:
            table.add_row(
                Text(R.short(str(person.get("name") or ""), 24)),
                str(person["peer_id"]),
                state(person),
                R.TRUST_LABELS.get(int(person.get("trust", 3)), "") or "-",
                "yes" if person.get("follows_me") else "",
                str(person.get("records", "")),
                key=str(person["peer_id"]),
            )
        if self.people:
            table.move_cursor(row=min(where, len(self.people) - 1))
        connected = sum(1 for p in self.people if p.get("connected"))
        self.query_one("#peers-status", Static).update(
            f"{connected} connected, {len(self.people)} in all — f follow, x unfollow,"
            " b block, k unblock, r recommend"
            if self.people
            else "No peers yet: press c to join with an invite code, or g for communities."
        )

    def selected(self) -> Person | None:
        table = self.query_one(DataTable)
        if not self.people or table.cursor_row >= len(self.people):
            return None
        return self.people[table.cursor_row]

    def selected_view(self) -> dict[str, Any] | None:
        """A peer as the app's record keys see it: recommending it vouches for the peer."""
        person = self.selected()
        if person is None:
            return None
        return {
            "kind": "peer",
            "id": person["peer_id"],
            "author": person["peer_id"],
            "author_name": person.get("name"),
            "headline": person.get("name") or person["peer_id"],
        }

    async def _act(self, method: str, done: str) -> None:
        person = self.selected()
        if person is None:
            self.app.notify("Select a peer first.", severity="warning")
            return
        if await node(self).call_node(method, key=person["peer_id"]) is not None:
            self.app.notify(f"{done} {person.get('name') or person['peer_id']}")
            await self.reload()

    async def action_follow(self) -> None:
        await self._act("follow", "Following")

    async def action_unfollow(self) -> None:
        await self._act("unfollow", "No longer following")

    async def action_block(self) -> None:
        await self._act("block", "Blocked")

    async def action_unblock(self) -> None:
        await self._act("unblock", "Unblocked")

    def apply(self, batch: Batch) -> None:
        if batch.peers or batch.dropped:
            self.refresher.request()
