"""The app against a fake node: every screen opens, every key does what it says, errors are
sentences, and live events land without a refresh."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from textual.widgets import Button, DataTable, Input, Select, Static

from p2pshare.control.errors import NodeNotRunning
from p2pshare.tui.app import P2PShareApp
from p2pshare.tui.forms import CommunitiesScreen, MySharesScreen, ShareForm
from p2pshare.tui.screens import (
    PAGE,
    DocumentScreen,
    HelpScreen,
    PeersScreen,
    SearchScreen,
    TextPrompt,
    TransfersScreen,
)
from tests.tui.fake import FakeClient, doc_view

SIZE = (120, 40)
TEST_TIMEOUT = 60.0
Test = Callable[[], Coroutine[Any, Any, None]]


def on_asyncio(test: Test) -> Callable[[], None]:
    """Textual runs on asyncio, the suite on trio (trio_mode): run this test in asyncio.run."""

    def run() -> None:
        asyncio.run(asyncio.wait_for(test(), TEST_TIMEOUT))

    run.__name__, run.__doc__ = test.__name__, test.__doc__
    return run


def make_app(client: FakeClient) -> P2PShareApp:
    async def connect() -> FakeClient:
        return client

    return P2PShareApp(connect)  # type: ignore[arg-type]


async def until(condition: Callable[[], Any], pilot: Any, what: str, tries: int = 200) -> None:
    """Let the app run until ``condition`` holds (bounded: 200 pauses)."""
    for _ in range(tries):
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def feed_rows(app: P2PShareApp) -> int:
    return app.feed.table.row_count


def notices(app: P2PShareApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


@on_asyncio
async def test_the_feed_shows_the_newest_page_and_pages_in_more_as_you_scroll() -> None:
    client = FakeClient([doc_view(i) for i in range(PAGE * 2 + 10)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: feed_rows(app) == PAGE, pilot, "the first page")
        assert "Repair guide 0" in str(app.feed.table.get_row_at(0))
        for _ in range(PAGE - 30):
            await pilot.press("down")
        await until(lambda: feed_rows(app) == 2 * PAGE, pilot, "the second page")
        assert client.called("feed")[1] == {"limit": PAGE, "offset": PAGE}


@on_asyncio
async def test_enter_opens_the_document_with_its_licence_and_escape_goes_back() -> None:
    app = make_app(FakeClient([doc_view(0, licence="CC-BY-SA-4.0")]))
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: feed_rows(app) == 1, pilot, "the feed")
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, DocumentScreen), pilot, "the document")
        text = str(app.screen.query_one("#details", Static).render())
        assert "CC-BY-SA-4.0" in text and "guide-0.pdf" in text
        await pilot.press("escape")
        assert app.screen is app.feed


@on_asyncio
async def test_republishing_a_document_whose_licence_forbids_it_says_why() -> None:
    client = FakeClient([doc_view(0, licence="all-rights-reserved")])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: feed_rows(app) == 1, pilot, "the feed")
        await pilot.press("p")
        await until(lambda: notices(app), pilot, "a notice")
        assert "does not allow republishing" in notices(app)[-1]


@on_asyncio
async def test_republishing_an_open_licence_document_reposts_it() -> None:
    client = FakeClient([doc_view(0)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: feed_rows(app) == 1, pilot, "the feed")
        await pilot.press("p")
        await until(lambda: client.called("repost"), pilot, "the repost")
        assert client.called("repost") == [{"id": doc_view(0)["id"]}]
        await until(lambda: notices(app), pilot, "a notice")
        assert notices(app)[-1].startswith("Republished")


@on_asyncio
async def test_recommend_asks_for_the_text_and_sends_it() -> None:
    client = FakeClient([doc_view(0)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: feed_rows(app) == 1, pilot, "the feed")
        await pilot.press("r")
        await until(lambda: isinstance(app.screen, TextPrompt), pilot, "the prompt")
        await pilot.press("enter")  # empty: refused inline, the prompt stays
        assert isinstance(app.screen, TextPrompt)
        await pilot.press(*"Great guide")
        await pilot.press("enter")
        await until(lambda: client.called("recommend"), pilot, "the recommendation")
        assert client.called("recommend") == [{"target": doc_view(0)["id"], "text": "Great guide"}]


@on_asyncio
async def test_download_starts_and_progress_events_show_on_the_transfers_screen() -> None:
    client = FakeClient([doc_view(0)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: feed_rows(app) == 1, pilot, "the feed")
        await pilot.press("d")
        await until(lambda: client.called("get"), pilot, "the download")
        await pilot.press("t")
        await until(lambda: isinstance(app.screen, TransfersScreen), pilot, "transfers")
        root = doc_view(0)["root"]
        client.push(
            "transfer-progress",
            {"root": root, "title": "Repair guide 0", "percent": 40.0, "rate": 2e6, "sources": 2},
        )
        await until(lambda: app.transfers[root].get("percent") == 40.0, pilot, "progress")
        await until(
            lambda: "from 2 peers" in " ".join(str(s.render()) for s in app.screen.query(Static)),
            pilot,
            "the progress line",
        )
        client.push("transfer-done", {"root": root, "path": "/x", "size": 3})
        await until(lambda: app.transfers[root]["state"] == "done", pilot, "done")


@on_asyncio
async def test_follow_and_block_act_on_the_author_and_block_clears_their_records() -> None:
    client = FakeClient([doc_view(0), doc_view(1, author="12D3KooWSpam")])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: feed_rows(app) == 2, pilot, "the feed")
        await pilot.press("f")
        await until(lambda: client.called("follow"), pilot, "follow")
        assert client.called("follow") == [{"key": "12D3KooWAnna"}]
        await pilot.press("down", "b")
        await until(lambda: client.called("block"), pilot, "block")
        assert client.called("block") == [{"key": "12D3KooWSpam"}]
        await until(lambda: feed_rows(app) == 1, pilot, "the feed without the blocked author")


@on_asyncio
async def test_search_finds_by_text_and_opens_a_result() -> None:
    client = FakeClient([doc_view(i) for i in range(30)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: feed_rows(app) == 30, pilot, "the feed")
        await pilot.press("slash")
        await until(lambda: isinstance(app.screen, SearchScreen), pilot, "search")
        await pilot.press(*"guide 12", "enter")
        table = app.screen.query_one("#search-table", DataTable)
        await until(lambda: table.row_count == 1, pilot, "one result")
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, DocumentScreen), pilot, "the result")
        assert app.screen.view["headline"] == "Repair guide 12"  # type: ignore[attr-defined]


@on_asyncio
async def test_a_burst_of_new_records_is_coalesced_into_a_few_feed_updates() -> None:
    client = FakeClient([doc_view(i) for i in range(5)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: feed_rows(app) == 5, pilot, "the feed")
        await until(client.subscribed.is_set, pilot, "the subscription")
        lists_before = len(client.called("feed"))
        burst = [doc_view(1000 + i) for i in range(3000)]
        client.views = burst + client.views
        for view in burst:
            client.push("record-added", view)
        await until(lambda: feed_rows(app) == PAGE, pilot, "the new records")
        assert len(client.called("feed")) - lists_before <= 5  # not one reload per record


@on_asyncio
async def test_new_records_while_scrolled_down_are_counted_not_jumped_to() -> None:
    client = FakeClient([doc_view(i) for i in range(50)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: feed_rows(app) == 50, pilot, "the feed")
        await until(client.subscribed.is_set, pilot, "the subscription")
        await pilot.press("down", "down", "down")
        client.push("record-added", doc_view(999))
        status = app.feed.query_one("#status", Static)
        await until(lambda: "1 new" in str(status.render()), pilot, "the new-records count")
        assert app.feed.table.cursor_row == 3


@on_asyncio
async def test_help_peers_invite_and_join_screens() -> None:
    client = FakeClient([doc_view(0)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: feed_rows(app) == 1, pilot, "the feed")
        await pilot.press("question_mark")
        await until(lambda: isinstance(app.screen, HelpScreen), pilot, "help")
        await pilot.press("escape", "e")
        await until(lambda: isinstance(app.screen, PeersScreen), pilot, "peers")
        await pilot.press("escape", "i")
        await until(lambda: any("p2ps1invitecode" in n for n in notices(app)), pilot, "invite")
        await pilot.press("c")
        await until(lambda: isinstance(app.screen, TextPrompt), pilot, "the join prompt")
        await pilot.press(*"nonsense", "enter")
        await until(lambda: any("not an invite code" in n for n in notices(app)), pilot, "error")
        await pilot.press("c")
        await until(lambda: isinstance(app.screen, TextPrompt), pilot, "the join prompt")
        app.screen.query_one(Input).value = "p2ps1abc"
        await pilot.press("enter")
        await until(lambda: any("Joined bikes" in n for n in notices(app)), pilot, "joined")


@on_asyncio
async def test_an_unreachable_node_is_a_sentence_on_screen() -> None:
    async def connect() -> FakeClient:
        raise NodeNotRunning("no node is running on /tmp/x.sock; start one with: p2pshare node")

    app = P2PShareApp(connect)  # type: ignore[arg-type]
    async with app.run_test(size=SIZE) as pilot:
        status = app.feed.query_one("#status", Static)
        await until(lambda: "Cannot reach the node" in str(status.render()), pilot, "status")
        await pilot.press("d")  # nothing selected and no node: a warning, no crash
        await until(lambda: notices(app), pilot, "a notice")


@on_asyncio
async def test_a_node_that_goes_away_is_reported() -> None:
    client = FakeClient([doc_view(0)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(client.subscribed.is_set, pilot, "the subscription")
        client.vanish()
        status = app.feed.query_one("#status", Static)
        await until(lambda: "Lost the node" in str(status.render()), pilot, "the status")


@on_asyncio
async def test_saving_a_document_not_yet_downloaded_explains_what_to_do() -> None:
    app = make_app(FakeClient([doc_view(0)]))
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: feed_rows(app) == 1, pilot, "the feed")
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, DocumentScreen), pilot, "the document")
        await pilot.press("s")
        await until(lambda: notices(app), pilot, "a notice")
        assert "not downloaded yet" in notices(app)[-1]


def test_fake_answers_like_the_node() -> None:
    """The fake's list shape is the control API's (records + total)."""
    result = asyncio.run(FakeClient([doc_view(0)]).call("list", limit=5, offset=0))
    assert set(result) == {"records", "total"}


@on_asyncio
async def test_sharing_a_file_through_the_form_with_a_licence_picked() -> None:
    client = FakeClient([doc_view(0)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: feed_rows(app) == 1, pilot, "the feed")
        await pilot.press("m")
        await until(lambda: isinstance(app.screen, MySharesScreen), pilot, "my shares")
        status = app.screen.query_one("#mine-status", Static)
        await until(lambda: "shared nothing yet" in str(status.render()), pilot, "empty")
        await pilot.press("a")
        await until(lambda: isinstance(app.screen, ShareForm), pilot, "the form")
        form = app.screen
        form.query_one("#path", Input).value = "~/wheels.pdf"
        app.screen.query_one("#share", Button).press()
        error = form.query_one("#form-error", Static)
        await until(lambda: "title" in str(error.render()), pilot, "the missing-title error")
        assert not client.called("share")
        form.query_one("#title", Input).value = "Wheel guide"
        form.query_one("#tags", Input).value = "bikes, repair"
        form.query_one("#licence", Select).value = "CC0-1.0"
        app.screen.query_one("#share", Button).press()
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
        table = app.screen.query_one("#mine-table", DataTable)
        await until(lambda: table.row_count == 1, pilot, "the new share listed")
        await pilot.press("x")
        await until(lambda: client.called("retract"), pilot, "the retract")
        await until(lambda: table.row_count == 0, pilot, "the share gone")


@on_asyncio
async def test_a_share_the_node_refuses_keeps_the_form_open_with_the_reason() -> None:
    client = FakeClient([])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(client.subscribed.is_set, pilot, "the connection")
        await pilot.press("m")
        await until(lambda: isinstance(app.screen, MySharesScreen), pilot, "my shares")
        await pilot.press("a")
        await until(lambda: isinstance(app.screen, ShareForm), pilot, "the form")
        app.screen.query_one("#path", Input).value = "/nope.txt"
        app.screen.query_one("#title", Input).value = "Nope"
        app.screen.query_one("#share", Button).press()
        await until(lambda: any("no such file" in n for n in notices(app)), pilot, "the reason")
        assert isinstance(app.screen, ShareForm)


@on_asyncio
async def test_communities_join_and_leave_and_profile_name() -> None:
    client = FakeClient([])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(client.subscribed.is_set, pilot, "the connection")
        await pilot.press("g")
        await until(lambda: isinstance(app.screen, CommunitiesScreen), pilot, "communities")
        table = app.screen.query_one(DataTable)
        await until(lambda: table.row_count == 2, pilot, "two communities")
        await pilot.press("j")
        await until(lambda: isinstance(app.screen, TextPrompt), pilot, "the prompt")
        await pilot.press(*"bakers", "enter")
        await until(lambda: table.row_count == 3, pilot, "joined")
        await pilot.press("l")  # the first row: bakers
        await until(lambda: table.row_count == 2, pilot, "left")
        assert client.called("leave") == [{"community": "bakers"}]
        await pilot.press("escape", "u")
        await until(lambda: isinstance(app.screen, TextPrompt), pilot, "the name prompt")
        await pilot.press(*"Cycle Works", "enter")
        await until(lambda: client.name == "Cycle Works", pilot, "the new name")
