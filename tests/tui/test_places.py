"""Every other screen against a fake node: search, peers, communities, transfers, my shares and
the share form, profile, first-run welcome, help and the command palette."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.widgets import Button, DataTable, Input, Select, Static

from p2pshare.node.api import LibraryApi
from p2pshare.node.library import Library
from p2pshare.protocol.keys import peer_id_from_public_key
from p2pshare.tui.communities import CommunitiesScreen, InviteScreen
from p2pshare.tui.dialogs import Confirm, HelpScreen, TextPrompt, WelcomeScreen
from p2pshare.tui.document import DocumentScreen
from p2pshare.tui.peers import PeersScreen
from p2pshare.tui.profile import ProfileScreen
from p2pshare.tui.search import SearchScreen
from p2pshare.tui.shares import MySharesScreen, ShareForm
from p2pshare.tui.transfers import TransfersScreen
from tests.tui.fake import ANNA, BEN, ME, FakeClient, doc_view
from tests.tui.helpers import SIZE, make_app, noticed, on_asyncio, started, until


def texts(app: Any) -> str:
    return " ".join(str(s.render()) for s in app.screen.query(Static))


@on_asyncio
async def test_search_finds_as_you_type_and_enter_opens_a_result() -> None:
    client = FakeClient([doc_view(i) for i in range(30)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("slash")
        await until(lambda: isinstance(app.screen, SearchScreen), pilot, "search")
        screen = app.screen
        assert isinstance(screen, SearchScreen)
        await pilot.press(*"guide 12")
        await until(lambda: screen.results.total == 1, pilot, "a result while typing")
        await pilot.press("enter")  # to the results
        await until(lambda: screen.results.has_focus, pilot, "the results focused")
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, DocumentScreen), pilot, "the result")
        assert app.screen.view["headline"] == "Repair guide 12"  # type: ignore[attr-defined]
        await pilot.press("escape")
        assert app.screen is screen
        await pilot.press("slash")
        await pilot.press(*"zzz", "enter")
        await until(lambda: "Nothing found for" in texts(app), pilot, "nothing found")
        assert "Nothing found for 'zzz'" in texts(
            app
        )  # / selects the old words: typing replaces them


@on_asyncio
async def test_record_keys_work_on_search_results() -> None:
    client = FakeClient([doc_view(i) for i in range(3)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("slash", *"guide 2", "enter")
        await until(lambda: client.called("search"), pilot, "a search")
        screen = app.screen
        assert isinstance(screen, SearchScreen)
        await until(lambda: screen.results.has_focus, pilot, "the results")
        await pilot.press("p")
        await until(lambda: client.called("repost"), pilot, "the repost")
        assert client.called("repost") == [{"id": doc_view(2)["id"]}]


@on_asyncio
async def test_peers_lists_connected_followed_and_blocked_and_acts_on_them() -> None:
    client = FakeClient([doc_view(0)])
    client.network.append({"peer_id": BEN, "connected": False, "addrs": [], "invalid": 0})
    client.blocked.add("12D3KooWSpam")
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("e")
        await until(lambda: isinstance(app.screen, PeersScreen), pilot, "peers")
        screen = app.screen
        assert isinstance(screen, PeersScreen)
        await until(lambda: len(screen.people) == 3, pilot, "three people")
        table = screen.query_one(DataTable)
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert rows[0][:5] == ["Anna's Bikes", ANNA, "connected", "followed", "yes"]
        assert rows[1][2:4] == ["remembered", "-"] and rows[1][0] == "Ben's Books"
        assert rows[2][2] == "blocked"
        assert "1 connected, 3 in all" in texts(app)

        await pilot.press("down", "f")  # Ben
        await until(lambda: client.called("follow") == [{"key": BEN}], pilot, "follow Ben")
        await until(lambda: noticed(app, "Following Ben's Books"), pilot, "notice")
        await pilot.press("x")
        await until(lambda: client.called("unfollow") == [{"key": BEN}], pilot, "unfollow")
        await pilot.press("b")
        await until(lambda: client.called("block") == [{"key": BEN}], pilot, "block")
        await pilot.press("k")
        await until(lambda: client.called("unblock"), pilot, "unblock")
        await pilot.press("r")  # recommend a peer: vouch for them
        await until(lambda: isinstance(app.screen, TextPrompt), pilot, "the prompt")
        await pilot.press(*"Fixes bikes well", "enter")
        await until(lambda: client.called("recommend"), pilot, "the recommendation")
        assert client.called("recommend")[0]["target"] in (ANNA, BEN, "12D3KooWSpam")


@on_asyncio
async def test_a_peer_connecting_updates_the_peers_screen_live() -> None:
    client = FakeClient([])
    client.following = set()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("e")
        await until(lambda: isinstance(app.screen, PeersScreen), pilot, "peers")
        screen = app.screen
        assert isinstance(screen, PeersScreen)
        await until(lambda: len(screen.people) == 1, pilot, "Anna")
        client.network.append({"peer_id": BEN, "connected": True, "addrs": [], "invalid": 0})
        client.push("peer-up", {"peer_id": BEN})
        await until(lambda: len(screen.people) == 2, pilot, "Ben, live")


@on_asyncio
async def test_no_peers_says_how_to_find_some() -> None:
    client = FakeClient([])
    client.network, client.following = [], set()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("e")
        await until(lambda: "No peers yet" in texts(app), pilot, "the hint")
        await pilot.press("f")
        await until(lambda: noticed(app, "Select a peer first"), pilot, "the warning")


@on_asyncio
async def test_communities_join_leave_and_invite_for_the_selected_one() -> None:
    client = FakeClient([])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("g")
        await until(lambda: isinstance(app.screen, CommunitiesScreen), pilot, "communities")
        table = app.screen.query_one(DataTable)
        await until(lambda: table.row_count == 2, pilot, "two communities")
        await pilot.press("j")
        await until(lambda: isinstance(app.screen, TextPrompt), pilot, "the prompt")
        await pilot.press(*"bakers", "enter")
        await until(lambda: table.row_count == 3, pilot, "joined")
        assert client.called("join") == [{"community": "bakers"}]
        await pilot.press("i")  # the first row: bakers
        await until(lambda: isinstance(app.screen, InviteScreen), pilot, "the invite")
        code = app.screen.query_one("#invite-code", Input).value
        assert code == "p2ps1invitecodeforbakers"
        await pilot.press("escape", "l")
        await until(lambda: table.row_count == 2, pilot, "left")
        assert client.called("leave") == [{"community": "bakers"}]


@on_asyncio
async def test_a_community_joined_elsewhere_appears_live() -> None:
    client = FakeClient([])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("g")
        await until(lambda: isinstance(app.screen, CommunitiesScreen), pilot, "communities")
        table = app.screen.query_one(DataTable)
        await until(lambda: table.row_count == 2, pilot, "two")
        client.communities.add("repair-cafe")
        client.push("community-joined", {"community": "repair-cafe"})
        await until(lambda: table.row_count == 3, pilot, "three, live")


@on_asyncio
async def test_transfers_begun_before_the_tui_come_from_the_nodes_status() -> None:
    client = FakeClient([])
    client.transfers = [
        {"root": "ab" * 32, "title": "Big catalogue", "percent": 75.0, "rate": 1e6, "sources": 3}
    ]
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("t")
        await until(lambda: isinstance(app.screen, TransfersScreen), pilot, "transfers")
        await until(lambda: "Big catalogue" in texts(app), pilot, "the transfer")
        assert "from 3 peers" in texts(app) and "1 downloading" in texts(app)


@on_asyncio
async def test_no_transfers_says_how_to_start_one() -> None:
    client = FakeClient([])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("t")
        await until(lambda: "No downloads. Press d" in texts(app), pilot, "the hint")


@on_asyncio
async def test_sharing_a_file_through_the_form_then_retracting_it() -> None:
    client = FakeClient([doc_view(0)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("m")
        await until(lambda: isinstance(app.screen, MySharesScreen), pilot, "my shares")
        await until(lambda: "shared nothing yet" in texts(app), pilot, "empty")
        await pilot.press("a")
        await until(lambda: isinstance(app.screen, ShareForm), pilot, "the form")
        form = app.screen
        form.query_one("#path", Input).value = "~/wheels.pdf"
        form.query_one("#share", Button).press()
        await until(lambda: "Give the document a title" in texts(app), pilot, "title error")
        form.query_one("#title", Input).value = "Wheel guide"
        form.query_one("#tags", Input).value = "bikes, repair, Bikes"
        form.query_one("#licence", Select).value = "all-rights-reserved"
        await until(lambda: "not republish" in texts(app), pilot, "the licence sentence")
        form.query_one("#licence", Select).value = "CC0-1.0"
        await until(lambda: "CC0-1.0: anyone may republish" in texts(app), pilot, "sentence")
        assert not client.called("share")
        form.query_one("#share", Button).press()
        await until(lambda: client.called("share"), pilot, "the share")
        assert client.called("share")[0] == {
            "path": "~/wheels.pdf",
            "title": "Wheel guide",
            "description": "",
            "tags": ["bikes", "repair"],
            "licence": "CC0-1.0",
            "community": "public",
        }
        await until(lambda: isinstance(app.screen, MySharesScreen), pilot, "back to my shares")
        shares = app.screen
        assert isinstance(shares, MySharesScreen)
        await until(lambda: shares.rows.total == 1, pilot, "the new share listed")
        await pilot.press("x")
        await until(lambda: isinstance(app.screen, Confirm), pilot, "are you sure")
        await pilot.press("y")
        await until(lambda: client.called("retract"), pilot, "the retract")
        await until(lambda: shares.rows.total == 0, pilot, "the share gone")


@on_asyncio
async def test_a_share_the_node_refuses_keeps_the_form_open_with_the_reason() -> None:
    client = FakeClient([])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("m")
        await until(lambda: isinstance(app.screen, MySharesScreen), pilot, "my shares")
        await pilot.press("a")
        await until(lambda: isinstance(app.screen, ShareForm), pilot, "the form")
        app.screen.query_one("#path", Input).value = "/nope.txt"
        app.screen.query_one("#title", Input).value = "Nope"
        app.screen.query_one("#share", Button).press()
        await until(lambda: noticed(app, "no such file"), pilot, "the reason")
        assert isinstance(app.screen, ShareForm)
        assert "Not shared" in texts(app)
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, MySharesScreen), pilot, "cancelled")


@on_asyncio
async def test_too_many_tags_are_refused_before_asking_the_node() -> None:
    client = FakeClient([])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("m")
        await until(lambda: isinstance(app.screen, MySharesScreen), pilot, "my shares")
        await pilot.press("a")
        await until(lambda: isinstance(app.screen, ShareForm), pilot, "the form")
        app.screen.query_one("#path", Input).value = "/a.pdf"
        app.screen.query_one("#title", Input).value = "A"
        app.screen.query_one("#tags", Input).value = ",".join(f"t{i}" for i in range(40))
        app.screen.query_one("#share", Button).press()
        await until(lambda: "At most 32 tags" in texts(app), pilot, "the error")
        assert not client.called("share")


@on_asyncio
async def test_profile_shows_who_you_are_and_publishes_changes() -> None:
    client = FakeClient([doc_view(0, author=ME, trust=0)])
    client.profile = {"name": "Me", "about": "Bikes and bread"}
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("u")
        await until(lambda: isinstance(app.screen, ProfileScreen), pilot, "the profile")
        screen = app.screen
        await until(lambda: ME in texts(app), pilot, "the peer id")
        assert "you follow  1 people" in texts(app)
        assert screen.query_one("#profile-about", Input).value == "Bikes and bread"
        screen.query_one("#profile-name", Input).value = "Cycle Works"
        screen.query_one("#profile-website", Input).value = "example.org"
        screen.query_one("#publish", Button).press()
        await until(lambda: "must start with http" in texts(app), pilot, "the website error")
        screen.query_one("#profile-website", Input).value = "https://example.org"
        screen.query_one("#publish", Button).press()
        await until(lambda: client.profile.get("name") == "Cycle Works", pilot, "published")
        assert client.profile == {
            "name": "Cycle Works",
            "about": "Bikes and bread",
            "website": "https://example.org",
            "location": "",
        }
        screen.query_one("#profile-name", Input).value = ""
        screen.query_one("#publish", Button).press()
        await until(lambda: "A display name is needed" in texts(app), pilot, "the name error")


@on_asyncio
async def test_first_run_asks_for_a_name_creates_the_identity_then_connects() -> None:
    client = FakeClient([])
    names: list[str] = []

    async def create(name: str) -> None:
        if name == "bad":
            raise RuntimeError("that name was refused")
        names.append(name)

    app = make_app(client, create_identity=create)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: isinstance(app.screen, WelcomeScreen), pilot, "the welcome")
        assert not client.calls  # nothing asked of a node before the identity exists
        await pilot.press("enter")
        await until(lambda: "Type a name" in texts(app), pilot, "the empty-name hint")
        await pilot.press(*"bad", "enter")
        await until(lambda: "that name was refused" in texts(app), pilot, "the error")
        app.screen.query_one(Input).value = "Cycle Works"
        await pilot.press("enter")
        await started(app, client, pilot)
        assert names == ["Cycle Works"]


@on_asyncio
async def test_help_lists_the_keys_and_the_palette_offers_every_action() -> None:
    client = FakeClient([doc_view(0)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("question_mark")
        await until(lambda: isinstance(app.screen, HelpScreen), pilot, "help")
        for word in ("recommend", "republish", "download", "follow", "block", "search", "quit"):
            assert word in texts(app)
        await pilot.press("escape")
        commands = {c.title for c in app.get_system_commands(app.screen)}
        for title in ("Recommend", "Republish", "Download", "Follow", "Block", "Search"):
            assert title in commands
        assert "Quit" in commands  # Textual's own
        footer_keys = {b.key for b in app.BINDINGS if getattr(b, "show", True)}  # type: ignore[union-attr]
        assert {"r", "p", "d", "f", "b", "slash", "q", "question_mark"} <= footer_keys


@on_asyncio
async def test_sections_replace_each_other_and_escape_returns_to_the_feed() -> None:
    client = FakeClient([doc_view(0)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        for key in ("e", "g", "t", "m", "u", "slash"):
            await pilot.press(key) if key != "slash" else await pilot.press("escape", "slash")
        await until(lambda: isinstance(app.screen, SearchScreen), pilot, "search")
        assert len(app.screen_stack) <= 3
        await pilot.press("escape")
        await until(lambda: app.screen is app.feed, pilot, "the feed")
        await pilot.press("escape")  # nothing below the feed: stays
        assert app.screen is app.feed


@on_asyncio
async def test_ctrl_r_reloads_the_screen_in_front() -> None:
    client = FakeClient([doc_view(0)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("ctrl+r")
        await until(lambda: len(client.called("feed")) == 2, pilot, "a reload")
        assert client.called("people") == []
        await pilot.press("e")
        await until(lambda: client.called("people"), pilot, "peers")
        await pilot.press("ctrl+r")
        await until(lambda: len(client.called("people")) == 2, pilot, "peers again")


def test_fake_answers_like_the_node(make_library: Callable[..., Library], tmp_path: Path) -> None:
    """The fake's answers have the shapes of the real control API's (a real library here)."""
    import asyncio

    api = LibraryApi(make_library("me"))
    guide = tmp_path / "guide.md"
    guide.write_text("# Guide\n")
    api.call("share", {"path": str(guide), "title": "Guide", "licence": "CC-BY-4.0"})
    me = peer_id_from_public_key(api.library.identity.public_key)
    real_feed = api.call("feed", {"limit": 5})
    real_person = api.call("people", {"keys": [me]})["people"][0]

    client = FakeClient([doc_view(0)])
    feed = asyncio.run(client.call("feed", limit=5, offset=0))
    people = asyncio.run(client.call("people", keys=[ANNA]))["people"][0]
    assert set(feed) == set(real_feed) == {"records", "total", "snapshot"}
    assert set(people) == set(real_person)
    assert set(feed["records"][0]) <= set(real_feed["records"][0])  # nothing the node lacks
