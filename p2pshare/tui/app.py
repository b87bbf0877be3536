"""The p2pshare app: the feed first, keys for what people do with a record, live events.

The app holds one ``NodeClient``, got from ``connect`` (the launcher finds or starts a node; a
test hands a fake). Every node call goes through ``call_node``, which turns errors into a
notification: the person reads a sentence, never a traceback. Pushed events go into an
``EventBuffer`` and reach the screens as one batch at most FLUSH_PER_S times a second, so a
burst of thousands of records cannot freeze the screen.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from p2pshare.control.errors import ControlConnectionError, ControlError
from p2pshare.protocol import limits as L
from p2pshare.tui import records as R
from p2pshare.tui.client import NodeClient
from p2pshare.tui.communities import CommunitiesScreen, InviteScreen
from p2pshare.tui.dialogs import Confirm, CreateIdentity, HelpScreen, TextPrompt, WelcomeScreen
from p2pshare.tui.feed import FeedScreen
from p2pshare.tui.live import FLUSH_PER_S, Batch, EventBuffer
from p2pshare.tui.peers import PeersScreen
from p2pshare.tui.profile import ProfileScreen
from p2pshare.tui.search import SearchScreen
from p2pshare.tui.shares import MySharesScreen
from p2pshare.tui.transfers import TransfersScreen

Connect = Callable[[], Awaitable[NodeClient]]
Disconnect = Callable[[NodeClient], Awaitable[None]]
TRUST_METHODS = ("follow", "unfollow", "block", "unblock")  # they reorder the feed
# Keys acting on the selected record: offered where a screen has ``selected_view`` (and, if it
# says so in ``RECORD_ACTIONS``, only those), hidden from the footer elsewhere.
RECORD_ACTIONS = frozenset(
    {"recommend", "republish", "download", "save", "open", "follow", "block"}
)
SECTIONS = (SearchScreen, PeersScreen, CommunitiesScreen, TransfersScreen, MySharesScreen)

CSS = """
#status, #search-status, #mine-status, #peers-status, #communities-status, #transfers-status {
    height: 1; padding: 0 1; background: $boost;
}
.dialog {
    width: 84; height: auto; max-height: 90%; padding: 1 2;
    border: round $accent; background: $panel;
}
TextPrompt, Confirm, HelpScreen, ShareForm, WelcomeScreen, InviteScreen { align: center middle; }
#document, #profile { padding: 1 2; }
#form-buttons { height: 1; margin-top: 1; }
#form-buttons Button { margin-right: 2; }
.field { height: 1; margin-bottom: 1; }
.field Label { width: 14; }
.field Input, .field Select { width: 1fr; }
.note { margin: 0 0 1 14; color: $text-muted; }
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
        Binding("m", "my_shares", "My shares"),
        Binding("s", "save", "Save a copy", show=False),
        Binding("o", "open", "Open the document", show=False),
        Binding("e", "peers", "Peers", show=False),
        Binding("g", "communities", "Communities", show=False),
        Binding("t", "transfers", "Transfers", show=False),
        Binding("u", "profile", "Your profile", show=False),
        Binding("c", "join", "Join with an invite code", show=False),
        Binding("i", "invite", "Show an invite code", show=False),
        Binding("n", "show_new", "Show new records", show=False),
        Binding("ctrl+r", "reload", "Reload", show=False),
    ]

    def __init__(
        self,
        connect: Connect,
        disconnect: Disconnect | None = None,
        *,
        create_identity: CreateIdentity | None = None,
    ) -> None:
        super().__init__()
        self._connect = connect
        self._disconnect = disconnect
        self._create_identity = create_identity
        self.client: NodeClient | None = None
        self.feed = FeedScreen()
        self.events_in = EventBuffer()
        self.transfers: dict[str, dict[str, Any]] = {}
        self.connected: set[str] = set()
        self._me = ""

    @property
    def my_peer_id(self) -> str:
        return self._me

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Notices carry titles, names and errors from peers: plain text unless asked."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    # --- start-up and events ------------------------------------------------------------------

    async def on_mount(self) -> None:
        await self.push_screen(self.feed)
        self.feed.rows.focus()
        self.run_worker(self._start(), group="start", exit_on_error=False)
        self.set_interval(1 / FLUSH_PER_S, self._flush_events)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A bug in a background task becomes a notice (and the app goes on), not a traceback."""
        if event.state is WorkerState.ERROR:
            error = event.worker.error
            self.notify(f"Something went wrong: {error!r}", severity="error", timeout=20)

    async def _start(self) -> None:
        if self._create_identity is not None:
            self.feed.set_status("Welcome! Choose your display name.")
            await self.push_screen(WelcomeScreen(self._create_identity), wait_for_dismiss=True)
            self.feed.set_status("Starting your node…")
        try:
            self.client = await self._connect()
        except (ControlConnectionError, ControlError, OSError) as exc:
            self.feed.set_status(f"Cannot reach the node: {exc}")
            self.notify(str(exc), title="Node unreachable", severity="error", timeout=30)
            return
        status = await self.call_node("status")
        if status is not None:
            self._me = str(status.get("peer_id", ""))
            self.sub_title = R.short_peer(self._me)
        peers = await self.call_node("peers")
        if peers is not None:
            self.connected = {p["peer_id"] for p in peers["peers"] if p.get("connected")}
        await self.feed.reload()
        self.feed.show_status(self._peers_text())
        self.run_worker(self._consume_events(), group="events", exit_on_error=False)

    def _peers_text(self) -> str:
        n = len(self.connected)
        return "no peers connected" if not n else f"{n} peer{'s' if n != 1 else ''} connected"

    async def _consume_events(self) -> None:
        assert self.client is not None
        try:
            await self.client.subscribe()
            async for event in self.client.events():
                self.events_in.add(event.event, event.data)
        except ControlConnectionError as exc:
            self.feed.set_status(f"Lost the node: {exc}")
            self.notify(f"Lost the connection to the node: {exc}", severity="error", timeout=30)

    def _flush_events(self) -> None:
        """Apply what the node pushed since the last flush: app state, the feed, the screen
        in front."""
        batch = self.events_in.take()
        if batch is None:
            return
        self._apply(batch)
        self.feed.apply(batch)
        screen = self.screen
        apply = getattr(screen, "apply", None)
        if screen is not self.feed and callable(apply):
            apply(batch)

    def _apply(self, batch: Batch) -> None:
        for root, progress in batch.transfers.items():
            entry = self.transfers.setdefault(root, {})
            if not entry.get("state"):
                entry.update(progress)
        for name, data in batch.finished:
            root = str(data.get("root", ""))
            entry = self.transfers.setdefault(root, {"title": root[:12]})
            entry.update(data)
            title = entry.get("title") or "the document"
            if name == "transfer-done":
                entry.update(state="done", percent=100.0)
                self.notify(f"Downloaded {title}; s saves a copy, o opens it")
            else:
                entry["state"] = "failed"
                self.notify(
                    f"Download of {title} failed: {data.get('error', '')}", severity="error"
                )
        if batch.peers:
            for peer, up in batch.peers.items():
                (self.connected.add if up else self.connected.discard)(peer)
            self.feed.show_status(self._peers_text())

    async def call_node(self, method: str, /, **params: Any) -> Any:
        """The node's answer, or None after telling the person what went wrong."""
        if self.client is None:
            self.notify("Not connected to a node yet.", severity="warning")
            return None
        try:
            result = await self.client.call(method, **params)
        except ControlError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return None
        except ControlConnectionError as exc:
            self.notify(f"The node is unreachable: {exc}", severity="error", timeout=10)
            return None
        if method in TRUST_METHODS and self.feed.loaded:
            self.feed.refresher.request()  # the ranking changed
        return result

    async def on_unmount(self) -> None:
        if self.client is not None and self._disconnect is not None:
            await self._disconnect(self.client)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return _offered(action, self.screen)

    # --- the record in front of the person ----------------------------------------------------

    def _selected(self) -> dict[str, Any] | None:
        pick = getattr(self.screen, "selected_view", None)
        view = pick() if callable(pick) else None
        if view is None:
            self.notify("Select a record first.", severity="warning")
        return view

    def _record(self) -> dict[str, Any] | None:
        view = self._selected()
        if view is not None and view.get("kind") == "peer":
            self.notify("That is a peer, not a record.", severity="warning")
            return None
        return view

    def action_recommend(self) -> None:
        view = self._selected()
        if view is None:
            return
        what = R.short(R.title(view), 60)

        async def done(text: str | None) -> None:
            if text and await self.call_node("recommend", target=view["id"], text=text):
                self.notify(f"Recommended {what}")

        self.push_screen(
            TextPrompt(
                f"Recommend [b]{R.escape(what)}[/b]: say why you vouch for it",
                "e.g. clear, tested, saved me an afternoon",
                max_length=L.MAX_REC_TEXT_CHARS,
            ),
            done,
        )

    async def action_republish(self) -> None:
        view = self._record()
        if view is None:
            return
        refusal = R.republish_refusal(view)
        if refusal is not None:
            self.notify(refusal, title="Not republished", severity="error", timeout=15)
            return
        result = await self.call_node("repost", id=view["id"])
        if result is not None:
            where = result.get("community", "")
            self.notify(f"Republished {R.short(R.title(view), 50)} to {where}")

    async def action_download(self) -> None:
        view = self._record()
        if view is None:
            return
        if not R.is_document(view):
            self.notify("Only documents can be downloaded.", severity="warning")
            return
        result = await self.call_node("get", id=view["id"])
        if result is None:
            return
        if result.get("state") == "complete":
            self.notify(f"{result.get('title', 'It')} is downloaded already; s saves a copy.")
            return
        self.transfers[str(result["root"])] = {
            "title": result.get("title", ""),
            "size": result.get("size", 0),
            "percent": 0.0,
        }
        self.notify(f"Downloading {result.get('title', '')}; t shows the progress.")

    async def action_save(self) -> None:
        view = self._record()
        if view is None:
            return
        downloads = Path.home() / "Downloads"
        out = downloads if downloads.is_dir() else Path.home()
        result = await self.call_node("save", id=view["id"], out=str(out))
        if result is not None:
            self.notify(f"Saved a copy at {result['path']}")

    async def action_open(self) -> None:
        view = self._record()
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
                start_new_session=True,
            )
        except OSError:
            self.notify(
                f"No program to open files here; the file is at {result['path']}",
                severity="warning",
            )
        else:
            self.notify(f"Opening {result['path']}")

    def _author(self) -> tuple[str, str] | None:
        view = self._selected()
        if view is None:
            return None
        key = str(view.get("author", ""))
        if key == self._me:
            self.notify("That is you.", severity="warning")
            return None
        return key, R.author(view)

    async def action_follow(self) -> None:
        who = self._author()
        if who is not None and await self.call_node("follow", key=who[0]) is not None:
            self.notify(f"Following {who[1]}: their shares now rank near the top")

    def action_block(self) -> None:
        who = self._author()
        if who is None:
            return

        async def answered(yes: bool | None) -> None:
            if yes and (result := await self.call_node("block", key=who[0])) is not None:
                self.notify(f"Blocked {who[1]}; {result.get('removed', 0)} records dropped")

        self.push_screen(
            Confirm(
                f"Block {R.escape(who[1])}?\nTheir records are dropped from this node and refused"
                " from now on (unblock in peers, e)."
            ),
            answered,
        )

    # --- places -------------------------------------------------------------------------------

    def _open(self, screen: Screen[Any]) -> None:
        """Sections replace each other above the feed rather than piling up."""
        while len(self.screen_stack) > 2 and isinstance(self.screen, (*SECTIONS, ProfileScreen)):
            self.pop_screen()
        self.push_screen(screen)

    def action_close_screen(self) -> None:
        if len(self.screen_stack) > 2:
            self.pop_screen()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_search(self) -> None:
        self._open(SearchScreen())

    def action_my_shares(self) -> None:
        self._open(MySharesScreen())

    def action_communities(self) -> None:
        self._open(CommunitiesScreen())

    def action_profile(self) -> None:
        self._open(ProfileScreen())

    def action_transfers(self) -> None:
        self._open(TransfersScreen())

    def action_peers(self) -> None:
        self._open(PeersScreen())

    async def action_show_new(self) -> None:
        await self.feed.reload()

    async def action_reload(self) -> None:
        reload = getattr(self.screen, "reload", None)
        if callable(reload):
            await reload()
        self.notify("Reloaded", timeout=2)

    async def action_invite(self) -> None:
        result = await self.call_node("invite")
        if result is not None:
            self.push_screen(InviteScreen(None, result["code"]))

    def action_join(self) -> None:
        async def done(code: str | None) -> None:
            if not code:
                return
            result = await self.call_node("join", code=code)
            if result is not None:
                peer = str(result.get("peer_id", ""))
                self.notify(f"Joined {result.get('community')} with {R.short_peer(peer)}")

        self.push_screen(TextPrompt("Join with an invite code", "p2ps1…"), done)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)
            if binding.action in ("quit", "help") or not _offered(binding.action, screen):
                continue
            yield SystemCommand(
                binding.description,
                f"key {binding.key}",
                lambda action=binding.action: self.run_action(action),
            )


def _offered(action: str, screen: Screen[Any]) -> bool:
    """Whether a key makes sense on ``screen`` (record keys need a record in front)."""
    if action not in RECORD_ACTIONS:
        return True
    allowed = getattr(screen, "RECORD_ACTIONS", None)
    if allowed is not None:
        return action in allowed
    return hasattr(screen, "selected_view")
