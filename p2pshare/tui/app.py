"""The p2pshare app: the feed first, keys for what people do with a record, live events.

The app holds one ``NodeClient``. ``connect`` is given by the launcher (find or start a node)
or by a test (a fake). Every node call goes through ``call_node``, which turns errors into a
notification: the person sees a sentence, never a traceback. Events are buffered and applied
at most FLUSH_PER_S times a second, so a burst of thousands of records cannot freeze the screen.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from p2pshare.control.errors import ControlConnectionError, ControlError
from p2pshare.tui import records as R
from p2pshare.tui.client import NodeClient
from p2pshare.tui.forms import CommunitiesScreen, MySharesScreen
from p2pshare.tui.screens import (
    FeedScreen,
    HelpScreen,
    PeersScreen,
    SearchScreen,
    TextPrompt,
    TransfersScreen,
)

FLUSH_PER_S = 10
Connect = Callable[[], Awaitable[NodeClient]]
Disconnect = Callable[[NodeClient], Awaitable[None]]

CSS = """
#status { height: 1; padding: 0 1; background: $boost; }
#prompt, #help, #share-form {
    width: 80; height: auto; max-height: 90%; padding: 1 2;
    border: round $accent; background: $panel;
}
TextPrompt, HelpScreen, ShareForm { align: center middle; }
#details { padding: 1 2; }
"""


class P2PShareApp(App[None]):
    TITLE = "p2pshare"
    CSS = CSS
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("slash", "search", "Search"),
        Binding("r", "recommend", "Recommend"),
        Binding("p", "republish", "Republish"),
        Binding("d", "download", "Download"),
        Binding("f", "follow", "Follow"),
        Binding("b", "block", "Block"),
        Binding("t", "transfers", "Transfers", show=False),
        Binding("e", "peers", "Peers", show=False),
        Binding("c", "join", "Join", show=False),
        Binding("i", "invite", "Invite", show=False),
        Binding("n", "show_new", "New", show=False),
        Binding("m", "my_shares", "My shares"),
        Binding("g", "communities", "Communities", show=False),
        Binding("u", "profile", "Profile", show=False),
    ]

    def __init__(self, connect: Connect, disconnect: Disconnect | None = None) -> None:
        super().__init__()
        self._connect = connect
        self._disconnect = disconnect
        self.client: NodeClient | None = None
        self.feed = FeedScreen()
        self.transfers: dict[str, dict[str, Any]] = {}
        self._new_records: list[dict[str, Any]] = []
        self._dirty_transfers = False

    # --- start-up and events ------------------------------------------------------------------

    async def on_mount(self) -> None:
        await self.push_screen(self.feed)
        self.run_worker(self._start(), group="start", exit_on_error=False)
        self.set_interval(1 / FLUSH_PER_S, self._apply_events)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A bug in a background task becomes a notice (and the app goes on), not a traceback."""
        if event.state is WorkerState.ERROR:
            error = event.worker.error
            self.notify(f"Something went wrong: {error!r}", severity="error", timeout=20)

    async def _start(self) -> None:
        try:
            self.client = await self._connect()
        except (ControlConnectionError, ControlError, OSError) as exc:
            self.feed.set_status(f"Cannot reach the node: {exc}")
            self.notify(str(exc), title="Node unreachable", severity="error", timeout=30)
            return
        info = await self.call_node("status")
        if info is not None:
            self.sub_title = (
                f"{info.get('peer_id', '')[:16]}…  {info.get('connected_peers', 0)} peers"
            )
        await self.feed.reload()
        self.feed.table.focus()
        self.run_worker(self._consume_events(), group="events", exit_on_error=False)

    async def _consume_events(self) -> None:
        assert self.client is not None
        try:
            await self.client.subscribe()
            async for event in self.client.events():
                self._on_event(event.event, event.data)
        except ControlConnectionError as exc:
            self.feed.set_status(f"Lost the node: {exc}")
            self.notify(f"Lost the connection to the node: {exc}", severity="error", timeout=30)

    def _on_event(self, name: str, data: Any) -> None:
        """Only buffer here; ``_apply_events`` touches widgets."""
        if name == "record-added" and isinstance(data, dict):
            self._new_records.append(data)
        elif name.startswith("transfer-") and isinstance(data, dict) and "root" in data:
            entry = self.transfers.setdefault(data["root"], {"title": data.get("title", "")})
            entry.update(data)
            entry["state"] = {"transfer-done": "done", "transfer-failed": "failed"}.get(name, "")
            if name == "transfer-done":
                entry["percent"] = 100.0
                self.notify(f"Downloaded {entry.get('title') or 'the document'}")
            elif name == "transfer-failed":
                self.notify(f"Download failed: {data.get('error', '')}", severity="error")
            self._dirty_transfers = True

    def _apply_events(self) -> None:
        if self._new_records:
            views, self._new_records = self._new_records, []
            self.feed.records_arrived(views)
        if self._dirty_transfers:
            self._dirty_transfers = False
            if isinstance(self.screen, TransfersScreen):
                self.screen.update_transfers()

    async def call_node(self, method: str, /, **params: Any) -> Any:
        """The node's answer, or None after telling the person what went wrong."""
        if self.client is None:
            self.notify("Not connected to a node yet.", severity="warning")
            return None
        try:
            return await self.client.call(method, **params)
        except ControlError as exc:
            self.notify(str(exc), severity="error", timeout=10)
        except ControlConnectionError as exc:
            self.notify(f"The node is unreachable: {exc}", severity="error", timeout=10)
        return None

    async def on_unmount(self) -> None:
        if self.client is not None and self._disconnect is not None:
            await self._disconnect(self.client)

    # --- the record in front of the person ----------------------------------------------------

    def _selected(self) -> dict[str, Any] | None:
        pick = getattr(self.screen, "selected_view", None)
        view = pick() if callable(pick) else None
        if view is None:
            self.notify("Select a record first.", severity="warning")
        return view

    async def action_recommend(self) -> None:
        view = self._selected()
        if view is None:
            return

        async def done(text: str | None) -> None:
            if text and await self.call_node("recommend", target=view["id"], text=text):
                self.notify(f"Recommended {R.short(str(view.get('headline', '')), 40)}")

        self.push_screen(
            TextPrompt(f"Recommend: {view.get('headline', '')}", "why you vouch for it"), done
        )

    async def action_republish(self) -> None:
        view = self._selected()
        if view is None:
            return
        result = await self.call_node("repost", id=view["id"])
        if result is not None:
            self.notify(f"Republished {R.short(str(view.get('headline', '')), 40)}")

    async def action_download(self) -> None:
        view = self._selected()
        if view is None:
            return
        if not R.is_document(view):
            self.notify("Only documents can be downloaded.", severity="warning")
            return
        result = await self.call_node("get", id=view["id"])
        if result is None:
            return
        if result.get("state") == "complete":
            self.notify(f"{result.get('title', 'It')} is already downloaded; s saves a copy.")
            return
        self.transfers.setdefault(
            result["root"], {"title": result.get("title", ""), "percent": 0.0}
        )
        self.notify(f"Downloading {result.get('title', '')}; t shows progress.")

    async def action_save(self) -> None:
        view = self._selected()
        if view is None:
            return
        out = Path.home() / "Downloads"
        params: dict[str, Any] = {"id": view["id"]}
        if out.is_dir():
            params["out"] = str(out)
        result = await self.call_node("save", **params)
        if result is not None:
            self.notify(f"Saved at {result['path']}")

    async def action_open(self) -> None:
        view = self._selected()
        if view is None:
            return
        result = await self.call_node("save", id=view["id"])
        if result is None:
            return
        opener = "open" if sys.platform == "darwin" else "xdg-open"
        try:
            subprocess.Popen(
                [opener, result["path"]],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except OSError:
            self.notify(
                f"No program to open files here; the file is at {result['path']}",
                severity="warning",
            )

    async def _author_action(self, method: str, verb: str) -> None:
        view = self._selected()
        if view is None:
            return
        author = str(view.get("author", ""))
        result = await self.call_node(method, key=author)
        if result is not None:
            self.notify(f"{verb} {R.author(view)}")
            if method == "block":
                await self.feed.reload()

    async def action_follow(self) -> None:
        await self._author_action("follow", "Following")

    async def action_block(self) -> None:
        await self._author_action("block", "Blocked")

    # --- other screens ------------------------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_search(self) -> None:
        self.push_screen(SearchScreen())

    def action_my_shares(self) -> None:
        self.push_screen(MySharesScreen())

    def action_communities(self) -> None:
        self.push_screen(CommunitiesScreen())

    def action_profile(self) -> None:
        async def done(name: str | None) -> None:
            if name and await self.call_node("profile", name=name):
                self.notify(f"Your display name is now {name}")

        self.push_screen(TextPrompt("Your display name, as peers see it", "e.g. Cycle Works"), done)

    def action_transfers(self) -> None:
        self.push_screen(TransfersScreen(self.transfers))

    async def action_peers(self) -> None:
        result = await self.call_node("peers")
        if result is not None:
            self.push_screen(PeersScreen(result["peers"]))

    async def action_show_new(self) -> None:
        await self.feed.reload()

    async def action_invite(self) -> None:
        result = await self.call_node("invite")
        if result is not None:
            self.copy_to_clipboard(result["code"])
            self.notify(f"Invite code (copied): {result['code']}", timeout=60)

    def action_join(self) -> None:
        async def done(code: str | None) -> None:
            if not code:
                return
            result = await self.call_node("join", code=code)
            if result is not None:
                self.notify(
                    f"Joined {result.get('community')} with {str(result.get('peer_id', ''))[:16]}…"
                )

        self.push_screen(TextPrompt("Join with an invite code", "p2ps1…"), done)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)
            if binding.action in ("quit",):
                continue
            yield SystemCommand(
                binding.description,
                f"key {binding.key}",
                lambda action=binding.action: self.run_action(action),
            )
