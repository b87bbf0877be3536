"""The feed and the document screen against a fake node: paging, the record keys, live events
and errors as sentences."""

from __future__ import annotations

from typing import Any

import pytest
from textual.widgets import Input, Static

from p2pshare.control.errors import ControlConnectionError, ControlError, NodeNotRunning
from p2pshare.tui import app as app_module
from p2pshare.tui.app import P2PShareApp
from p2pshare.tui.dialogs import Confirm, TextPrompt
from p2pshare.tui.document import DocumentScreen
from p2pshare.tui.recordlist import PAGE
from p2pshare.tui.transfers import TransfersScreen
from tests.tui.fake import ANNA, ME, FakeClient, doc_view, rec_view
from tests.tui.helpers import (
    SIZE,
    feed_total,
    make_app,
    noticed,
    notices,
    on_asyncio,
    started,
    until,
)


def status_text(app: P2PShareApp) -> str:
    return str(app.feed.query_one("#status", Static).render())


def details(app: P2PShareApp) -> str:
    """The screen's texts, with wrapped lines joined again."""
    return " ".join(" ".join(str(s.render()).split()) for s in app.screen.query(Static))


@on_asyncio
async def test_the_feed_opens_on_the_first_page_and_fetches_more_as_the_cursor_moves() -> None:
    client = FakeClient([doc_view(i) for i in range(PAGE * 3 + 10)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        assert feed_total(app) == PAGE * 3 + 10
        assert app.feed.rows.view_at(0)["headline"] == "Repair guide 0"  # type: ignore[index]
        assert "310 records" in status_text(app)
        first = client.called("feed")[0]
        assert first == {"limit": PAGE, "offset": 0}
        for _ in range(PAGE - 20):
            await pilot.press("down")
        await until(lambda: app.feed.rows.view_at(PAGE + 5), pilot, "the second page")
        later = client.called("feed")[1]
        assert later == {"limit": PAGE, "offset": PAGE, "snapshot": PAGE * 3 + 10, "count": False}
        assert app.feed.selected_view()["headline"] == f"Repair guide {PAGE - 20}"  # type: ignore[index]


@on_asyncio
async def test_end_jumps_to_the_last_record_without_fetching_the_pages_between() -> None:
    client = FakeClient([doc_view(i) for i in range(PAGE * 20)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("end")
        last = PAGE * 20 - 1
        await until(lambda: app.feed.selected_view() is not None, pilot, "the last page")
        assert app.feed.selected_view()["headline"] == f"Repair guide {last}"  # type: ignore[index]
        offsets = {c["offset"] for c in client.called("feed")}
        assert len(offsets) <= 4  # the first page and the few around the end, not all 20
        await pilot.press("home")
        assert app.feed.selected_view()["headline"] == "Repair guide 0"  # type: ignore[index]


@on_asyncio
async def test_each_line_shows_author_community_licence_trust_and_who_recommends() -> None:
    view = doc_view(0, licence="CC-BY-SA-4.0")
    view["recommended_by"] = 3
    app = make_app(FakeClient([view]))
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.feed.loaded, pilot, "the feed")
        line = app.feed.rows.render_line(1).text
        for text in ("Repair guide 0", "Anna's Bikes", "followed", "bikes", "CC-BY-SA-4.0"):
            assert text in line
        assert "3 you follow" in line
        assert "recommended by" in app.feed.rows.render_line(0).text


@on_asyncio
async def test_enter_opens_the_document_with_licence_vouches_and_repost_chain() -> None:
    original = doc_view(0, licence="CC-BY-NC-4.0")
    repost = {
        **doc_view(1),
        "id": "repost1" + "c" * 20,
        "kind": "repost",
        "author": "12D3KooWCarl",
        "author_name": "Carl",
        "original": original,
        "body": {"note": "worth a read"},
    }
    client = FakeClient([repost, original])
    client.vouch_data[repost["id"]] = {
        "recommended_by": [{**rec_view("Clear and tested"), "trust": 1}],
        "reposted_by": [repost],
    }
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, DocumentScreen), pilot, "the document")
        await until(lambda: "Recommended by 1" in details(app), pilot, "who vouches")
        text = details(app)
        assert "CC-BY-NC-4.0" in text and "not for commercial use" in text
        assert "guide-0.pdf" in text and "not downloaded" in text
        assert "reposted by Carl" in text and "worth a read" in text
        assert "published by Anna's Bikes" in text
        assert "Ben's Books (followed) ****: Clear and tested" in text
        assert client.called("show") == [{"id": repost["id"]}]
        await pilot.press("escape")
        assert app.screen is app.feed


@on_asyncio
async def test_republishing_a_document_whose_licence_forbids_it_is_refused_with_why() -> None:
    client = FakeClient([doc_view(0, licence="all-rights-reserved")])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("p")
        await until(lambda: notices(app), pilot, "a notice")
        assert "licensed all-rights-reserved, which does not allow republishing" in notices(app)[-1]
        assert "recommend it instead" in notices(app)[-1]
        assert not client.called("repost")


@on_asyncio
async def test_a_licence_unknown_here_is_refused_too() -> None:
    client = FakeClient([doc_view(0, licence="WTFPL")])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("p")
        await until(lambda: notices(app), pilot, "a notice")
        assert "does not allow republishing" in notices(app)[-1]


@on_asyncio
async def test_the_nodes_own_refusal_is_shown_as_it_says_it() -> None:
    client = FakeClient([doc_view(0)])

    def refuse(**_: Any) -> Any:
        raise ControlError("refused", "the store refused the new repost record (blocked)")

    client._repost = refuse  # type: ignore[method-assign]
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("p")
        await until(lambda: noticed(app, "the store refused the new repost"), pilot, "notice")


@on_asyncio
async def test_republishing_an_open_licence_document_reposts_it() -> None:
    client = FakeClient([doc_view(0)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("p")
        await until(lambda: client.called("repost"), pilot, "the repost")
        assert client.called("repost") == [{"id": doc_view(0)["id"]}]
        await until(lambda: noticed(app, "Republished Repair guide 0 to bikes"), pilot, "notice")


@on_asyncio
async def test_recommend_asks_why_and_sends_it() -> None:
    client = FakeClient([doc_view(0)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("r")
        await until(lambda: isinstance(app.screen, TextPrompt), pilot, "the prompt")
        await pilot.press("enter")  # empty: refused inline, the prompt stays
        assert isinstance(app.screen, TextPrompt)
        await pilot.press(*"Great guide", "enter")
        await until(lambda: client.called("recommend"), pilot, "the recommendation")
        assert client.called("recommend") == [{"target": doc_view(0)["id"], "text": "Great guide"}]
        await until(lambda: noticed(app, "Recommended Repair guide 0"), pilot, "the notice")


@on_asyncio
async def test_escape_cancels_a_recommendation() -> None:
    client = FakeClient([doc_view(0)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("r")
        await until(lambda: isinstance(app.screen, TextPrompt), pilot, "the prompt")
        await pilot.press(*"meh", "escape")
        await until(lambda: app.screen is app.feed, pilot, "back to the feed")
        assert not client.called("recommend")


@on_asyncio
async def test_download_then_progress_and_done_events_on_the_transfers_screen() -> None:
    client = FakeClient([doc_view(0)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("d")
        await until(lambda: client.called("get"), pilot, "the download")
        await until(lambda: noticed(app, "Downloading Repair guide 0"), pilot, "the notice")
        await pilot.press("t")
        await until(lambda: isinstance(app.screen, TransfersScreen), pilot, "transfers")
        root = doc_view(0)["root"]
        client.push(
            "transfer-progress",
            {
                "root": root,
                "title": "Repair guide 0",
                "percent": 40.0,
                "rate": 2e6,
                "sources": 2,
                "size": 3_000_000,
                "present_bytes": 1_200_000,
            },
        )
        await until(lambda: "from 2 peers" in details(app), pilot, "the progress line")
        assert "2.0 MB/s" in details(app) and "1.2 MB of 3.0 MB" in details(app)
        client.push("transfer-done", {"root": root, "path": "/x", "size": 3_000_000})
        await until(lambda: app.transfers[root].get("state") == "done", pilot, "done")
        await until(lambda: noticed(app, "Downloaded Repair guide 0"), pilot, "the notice")
        await until(lambda: "0 downloading, 1 finished" in details(app), pilot, "the summary")


@on_asyncio
async def test_a_failed_download_is_a_notice_with_the_reason() -> None:
    client = FakeClient([doc_view(0)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("d")
        await until(lambda: client.called("get"), pilot, "the download")
        client.push("transfer-failed", {"root": doc_view(0)["root"], "error": "no peer has it"})
        await until(lambda: noticed(app, "failed: no peer has it"), pilot, "the notice")


@on_asyncio
async def test_only_documents_download() -> None:
    client = FakeClient([rec_view("Nice café")])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("d")
        await until(lambda: noticed(app, "Only documents can be downloaded"), pilot, "notice")
        assert not client.called("get")


@on_asyncio
async def test_follow_reloads_the_feed_and_block_asks_then_drops_their_records() -> None:
    client = FakeClient([doc_view(0), doc_view(1, author="12D3KooWSpam", trust=3)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("f")
        await until(lambda: client.called("follow"), pilot, "follow")
        assert client.called("follow") == [{"key": ANNA}]
        await until(lambda: len(client.called("feed")) == 2, pilot, "the feed reloaded")
        await pilot.press("down", "b")
        await until(lambda: isinstance(app.screen, Confirm), pilot, "the question")
        await pilot.press("y")
        await until(lambda: client.called("block"), pilot, "block")
        assert client.called("block") == [{"key": "12D3KooWSpam"}]
        await until(lambda: feed_total(app) == 1, pilot, "the feed without the blocked author")
        await until(lambda: noticed(app, "1 records dropped"), pilot, "the notice")


@on_asyncio
async def test_answering_no_blocks_nobody() -> None:
    client = FakeClient([doc_view(0)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("b")
        await until(lambda: isinstance(app.screen, Confirm), pilot, "the question")
        await pilot.press("n")
        await until(lambda: app.screen is app.feed, pilot, "back")
        assert not client.called("block")


@on_asyncio
async def test_following_yourself_is_refused_here() -> None:
    client = FakeClient([doc_view(0, author=ME, trust=0)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("f")
        await until(lambda: noticed(app, "That is you"), pilot, "the notice")
        assert not client.called("follow")


@on_asyncio
async def test_a_burst_of_new_records_is_coalesced_into_a_few_feed_updates() -> None:
    client = FakeClient([doc_view(i) for i in range(5)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        before = len(client.called("feed"))
        burst = [doc_view(1000 + i) for i in range(3000)]
        client.views = burst + client.views
        for view in burst:
            client.push("record-added", view)
        await until(lambda: feed_total(app) == 3005, pilot, "the new records")
        assert len(client.called("feed")) - before <= 5  # not one reload per record


@on_asyncio
async def test_a_steady_stream_of_records_still_updates_a_slow_feed() -> None:
    """Each reload takes longer than the gap between events: reloads must not starve."""
    client = FakeClient([doc_view(i) for i in range(5)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        client.delays["feed"] = 0.25
        seen = []
        for i in range(30):
            client.views.insert(0, doc_view(1000 + i))
            client.push("record-added", client.views[0])
            await pilot.pause(0.05)
            seen.append(feed_total(app))
        assert max(seen) > 5  # the feed grew while the stream went on
        await until(lambda: feed_total(app) == 35, pilot, "every record in the end")


@on_asyncio
async def test_new_records_while_scrolled_down_are_counted_and_n_shows_them() -> None:
    client = FakeClient([doc_view(i) for i in range(50)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("down", "down", "down")
        client.views.insert(0, doc_view(999))
        client.push("record-added", doc_view(999))
        await until(lambda: "1 new" in status_text(app), pilot, "the new-records count")
        assert status_text(app).endswith("  ·  1 new — press n to show them")  # no markup
        assert app.feed.rows.cursor == 3 and feed_total(app) == 50
        await pilot.press("n")
        await until(lambda: feed_total(app) == 51, pilot, "the new record shown")
        assert app.feed.rows.cursor == 0 and "new" not in status_text(app)


@on_asyncio
async def test_dropped_events_reload_the_feed_at_the_top() -> None:
    client = FakeClient([doc_view(0)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        client.views.insert(0, doc_view(7))
        client.push("dropped", {"count": 500})
        await until(lambda: feed_total(app) == 2, pilot, "a reload")


@on_asyncio
async def test_peers_coming_and_going_show_in_the_status_line() -> None:
    client = FakeClient([doc_view(0)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await until(lambda: "1 peer connected" in status_text(app), pilot, "one peer")
        client.push("peer-up", {"peer_id": "12D3KooWBen"})
        await until(lambda: "2 peers connected" in status_text(app), pilot, "two peers")
        client.push("peer-down", {"peer_id": ANNA})
        client.push("peer-down", {"peer_id": "12D3KooWBen"})
        await until(lambda: "no peers connected" in status_text(app), pilot, "none")


@on_asyncio
async def test_an_unreachable_node_is_a_sentence_on_screen() -> None:
    async def connect() -> FakeClient:
        raise NodeNotRunning("no node is running on /tmp/x.sock; start one with: p2pshare node")

    app = P2PShareApp(connect)  # type: ignore[arg-type]
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: "Cannot reach the node" in status_text(app), pilot, "status")
        assert noticed(app, "start one with: p2pshare node")
        await pilot.press("d")  # nothing selected and no node: a warning, no crash
        await until(lambda: noticed(app, "Select a record first"), pilot, "a notice")
        await pilot.press("slash")  # a screen that calls the node: still no traceback
        await pilot.press(*"x", "enter")
        await until(lambda: noticed(app, "Not connected"), pilot, "a notice")


@on_asyncio
async def test_a_node_that_goes_away_is_reported_and_calls_say_so() -> None:
    client = FakeClient([doc_view(0)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        client.vanish()
        await until(lambda: "Lost the node" in status_text(app), pilot, "the status")

        async def gone(method: str, /, **params: Any) -> Any:
            raise ControlConnectionError("the node closed the connection")

        client.call = gone  # type: ignore[method-assign]
        await pilot.press("d")
        await until(lambda: noticed(app, "The node is unreachable"), pilot, "the notice")


@on_asyncio
async def test_saving_a_document_not_yet_downloaded_explains_what_to_do() -> None:
    app = make_app(FakeClient([doc_view(0)]))
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.feed.loaded, pilot, "the feed")
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, DocumentScreen), pilot, "the document")
        await pilot.press("s")
        await until(lambda: noticed(app, "not downloaded yet"), pilot, "a notice")


@on_asyncio
async def test_save_and_open_a_downloaded_document() -> None:
    view = doc_view(0)
    view["document"] = "complete"
    client = FakeClient([view])
    opened: list[list[str]] = []

    class Popen:
        def __init__(self, argv: list[str], **_: Any) -> None:
            opened.append(argv)

    patch = pytest.MonkeyPatch()
    patch.setattr(app_module.subprocess, "Popen", Popen)
    try:
        app = make_app(client)
        async with app.run_test(size=SIZE) as pilot:
            await started(app, client, pilot)
            await pilot.press("s")
            await until(lambda: noticed(app, "Saved a copy at"), pilot, "saved")
            assert client.called("save")[0]["out"]  # a directory: ~/Downloads or ~
            await pilot.press("o")
            await until(lambda: opened, pilot, "the opener")
            assert opened[0][-1] == "/blobs/guide-0.pdf"
    finally:
        patch.undo()


@on_asyncio
async def test_a_recommendation_of_a_record_opens_what_it_recommends() -> None:
    guide = doc_view(0)
    rec = rec_view("Best guide")
    rec["body"] = {"subject_type": "record", "subject": guide["id"], "text": "Best guide"}
    rec["subject_title"] = "Repair guide 0"
    client = FakeClient([rec, guide])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        assert "Repair guide 0: Best guide" in app.feed.rows.render_line(1).text
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, DocumentScreen), pilot, "the rec")
        await pilot.press("a")
        await until(
            lambda: isinstance(app.screen, DocumentScreen) and app.screen.view["kind"] == "doc",
            pilot,
            "the recommended document",
        )


@on_asyncio
async def test_join_with_an_invite_code_and_show_one() -> None:
    client = FakeClient([doc_view(0)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("c")
        await until(lambda: isinstance(app.screen, TextPrompt), pilot, "the join prompt")
        await pilot.press(*"nonsense", "enter")
        await until(lambda: noticed(app, "not an invite code"), pilot, "the error")
        await pilot.press("c")
        await until(lambda: isinstance(app.screen, TextPrompt), pilot, "the join prompt")
        app.screen.query_one(Input).value = "p2ps1abc"
        await pilot.press("enter")
        await until(lambda: noticed(app, "Joined bikes"), pilot, "joined")
        await pilot.press("i")
        await until(lambda: app.screen.query("#invite-code"), pilot, "the invite")
        assert app.screen.query_one("#invite-code", Input).value == "p2ps1invitecodeforpublic"
        await pilot.press("escape")
        assert app.screen is app.feed


@on_asyncio
async def test_peer_text_that_looks_like_markup_is_shown_as_written() -> None:
    hostile = "[/b] Tricks [red]and[/] \\"
    view = doc_view(0)
    view["headline"] = view["body"]["title"] = hostile
    view["body"]["description"] = "[link=x]click[/link] \\"
    view["author_name"] = "[bold]Eve[/"
    client = FakeClient([view])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("p")
        await until(lambda: noticed(app, f"Republished {hostile}"), pilot, "the repost notice")
        await pilot.press("d")
        await until(lambda: noticed(app, "t shows the progress"), pilot, "the download notice")
        await pilot.press("f")
        await until(lambda: noticed(app, "Following [bold]Eve[/"), pilot, "the follow notice")
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, DocumentScreen), pilot, "the document")
        await until(lambda: "[link=x]click[/link]" in details(app), pilot, "the description")
        assert hostile.strip() in details(app)
        await pilot.pause(0.1)  # let the notifications draw
        assert app.is_running


@on_asyncio
async def test_markup_like_names_and_titles_survive_prompts_peers_and_transfers() -> None:
    view = doc_view(0)
    view["headline"] = view["body"]["title"] = "Guide [/i] \\"
    view["author_name"] = "[bold]Eve[/"
    client = FakeClient([view])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, client, pilot)
        await pilot.press("r")
        await until(lambda: isinstance(app.screen, TextPrompt), pilot, "the prompt")
        assert "Guide [/i]" in details(app)
        await pilot.press("escape")
        await pilot.press("b")
        await until(lambda: isinstance(app.screen, Confirm), pilot, "the question")
        assert "Block [bold]Eve[/?" in details(app)
        await pilot.press("n")
        await pilot.press("d")
        await until(lambda: noticed(app, "t shows the progress"), pilot, "the download")
        await pilot.press("t")
        await until(lambda: isinstance(app.screen, TransfersScreen), pilot, "transfers")
        await until(lambda: "Guide [/i]" in details(app), pilot, "the transfer's title")
        await pilot.pause(0.1)
        assert app.is_running
