"""The TUI's pure pieces: wording, coalescing, column layout, form checks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from rich.cells import cell_len

from p2pshare.protocol.licences import KNOWN_LICENCES
from p2pshare.tui import records as R
from p2pshare.tui.live import KEPT_RECORDS, EventBuffer
from p2pshare.tui.peers import merge, state
from p2pshare.tui.recordlist import COLUMNS, MIN_TITLE, cells, layout, line_text
from p2pshare.tui.shares import check_share, licence_options, parse_tags
from p2pshare.tui.transfers import progress_text
from tests.tui.fake import ANNA, BEN, ME, doc_view, rec_view


def test_every_known_licence_has_a_sentence_and_the_picker_says_if_it_allows_republishing() -> None:
    for licence in KNOWN_LICENCES:
        assert R.licence_sentence(licence).endswith(".")
    options = dict((value, label) for label, value in licence_options())
    assert set(options) == KNOWN_LICENCES
    assert options["all-rights-reserved"].endswith("no republishing")
    assert options["CC-BY-4.0"].endswith("others may republish")
    assert "not for commercial use" in R.licence_sentence("CC-BY-NC-SA-4.0")
    assert "unchanged" in R.licence_sentence("CC-BY-ND-4.0")


def test_republish_refusal_names_the_licence_and_offers_recommending() -> None:
    refusal = R.republish_refusal(doc_view(0, licence="all-rights-reserved"))
    assert refusal is not None
    assert "'Repair guide 0' is licensed all-rights-reserved" in refusal
    assert "recommend it instead" in refusal
    assert R.republish_refusal(doc_view(0)) is None
    assert R.republish_refusal(rec_view("hi")) is None  # not a document: the node decides
    repost = {"kind": "repost", "original": doc_view(0, licence="all-rights-reserved")}
    assert R.republish_refusal(repost) is not None  # a repost carries the original's licence


def test_chain_text_credits_everyone_who_passed_it_on() -> None:
    original = doc_view(0)
    once = {"kind": "repost", "author_name": "Ben", "created_ms": 0, "original": original}
    twice = {
        "kind": "repost",
        "author_name": "Carl",
        "created_ms": 0,
        "original": once,
        "body": {"note": "[red]sneaky markup[/red]"},
    }
    text = R.chain_text(twice)
    assert text.index("reposted by Carl") < text.index("reposted by Ben")
    assert text.index("reposted by Ben") < text.index("published by Anna's Bikes")
    assert r"\[red]" in text  # peers' text is never markup
    assert "nobody passed it on" in R.chain_text(original)


def test_vouches_text_lists_recommenders_nearest_first_and_reposters() -> None:
    recs = [{**rec_view("solid"), "trust": 1}, {**rec_view("ok", rating=None), "trust": 2}]
    text = R.vouches_text({"recommended_by": recs, "reposted_by": [doc_view(0)] * 12})
    assert "Recommended by 2" in text
    assert "Ben's Books (followed) ****: solid" in text
    assert "Ben's Books (2 hops): ok" in text
    assert "Republished by 12" in text and "and 2 more" in text
    assert "Nobody you follow" in R.vouches_text({"recommended_by": [], "reposted_by": []})


def test_the_recommended_by_cell_counts_people_you_follow_and_says_you() -> None:
    assert R.vouched({"recommended_by": 0}) == ""
    assert R.vouched({"recommended_by": 2}) == "2 you follow"
    assert R.vouched({"recommended_by": 0, "recommended_by_me": True}) == "you"
    assert R.vouched({"recommended_by": 3, "recommended_by_me": True}) == "you + 3"


def test_titles_say_what_a_line_is_about() -> None:
    assert R.title(doc_view(3)) == "Repair guide 3"
    assert R.title(rec_view("Lovely")) == "https://example.org ****: Lovely"
    repost = {"kind": "repost", "original": doc_view(3)}
    assert R.title(repost) == "Repair guide 3 (by Anna's Bikes)"
    assert R.age(1_000_000, now_s=1_000 + 3 * 86400) == "3d"
    assert R.age(0, now_s=400 * 86400) == "1y"


def test_the_buffer_coalesces_a_flood_into_one_batch_of_bounded_size() -> None:
    buffer = EventBuffer()
    assert buffer.take() is None
    for i in range(10_000):
        buffer.add("record-added", {"id": str(i)})
        buffer.add("transfer-progress", {"root": "r", "percent": i / 100})
    buffer.add("peer-up", {"peer_id": ANNA})
    buffer.add("peer-down", {"peer_id": ANNA})
    buffer.add("transfer-done", {"root": "r"})
    buffer.add("community-left", {"community": "x"})
    buffer.add("dropped", {"count": 3})
    batch = buffer.take()
    assert batch is not None
    assert batch.record_count == 10_000 and len(batch.records) == KEPT_RECORDS
    assert batch.records[-1]["id"] == "9999"
    assert batch.transfers == {"r": {"root": "r", "percent": 99.99}}  # only the latest
    assert batch.peers == {ANNA: False} and batch.finished == [("transfer-done", {"root": "r"})]
    assert batch.communities and batch.dropped
    assert buffer.take() is None


def test_events_no_screen_shows_make_no_batch() -> None:
    buffer = EventBuffer()
    buffer.add("something-new", {"x": 1})
    buffer.add("record-added", "not a view")
    assert buffer.take() is None


@given(st.integers(min_value=20, max_value=400))
def test_columns_fit_from_70_cells_and_the_title_keeps_room(width: int) -> None:
    widths = layout(width)
    used = sum(w for _, w in widths) + len(widths) - 1
    keys = [c.key for c, _ in widths]
    assert "title" in keys and "what" in keys
    if width >= 70:
        assert used <= width and dict((c.key, w) for c, w in widths)["title"] >= MIN_TITLE
    line = line_text(cells(doc_view(0)), widths)
    assert cell_len(line) == used


def test_wide_screens_show_every_column_narrow_ones_drop_the_least_needed() -> None:
    assert [c.key for c, _ in layout(120)] == [c.key for c in COLUMNS]
    narrow = [c.key for c, _ in layout(90)]
    assert "community" not in narrow and "licence" in narrow and "vouched" in narrow


def test_wide_characters_and_newlines_do_not_break_a_line() -> None:
    view = doc_view(0)
    view["headline"] = "Fahrrad 自転車の修理\nzweite Zeile " * 4
    widths = layout(120)
    line = line_text(cells(view), widths)
    assert "\n" not in line and cell_len(line) == sum(w for _, w in widths) + len(widths) - 1


def test_people_merge_network_and_trust_views_and_order_them() -> None:
    peers = [
        {"peer_id": BEN, "connected": False},
        {"peer_id": ANNA, "connected": True},
    ]
    people = [
        {"peer_id": ANNA, "name": "Anna", "trust": 1},
        {"peer_id": ME, "name": "Me", "me": True, "trust": 0},
        {"peer_id": "12D3KooWX", "name": "X", "blocked": True, "trust": 3},
    ]
    merged = merge(peers, people)
    assert [p["peer_id"] for p in merged] == [ANNA, BEN, "12D3KooWX"]  # me left out
    assert [state(p) for p in merged] == ["connected", "remembered", "blocked"]


def test_share_form_checks() -> None:
    good = {"path": "/a.pdf", "title": "A", "description": "", "tags": ""}
    assert check_share(good) is None
    assert check_share({**good, "path": ""}) == "Give the path of the file to share."
    assert "longer than 256" in str(check_share({**good, "title": "x" * 257}))
    assert "longer than 64" in str(check_share({**good, "tags": "a, " + "b" * 65}))
    assert parse_tags(" bikes, Repair ,,bikes, BIKES ") == ["bikes", "Repair"]


def test_progress_text_says_amount_speed_and_sources() -> None:
    info = {"size": 2_000_000, "present_bytes": 500_000, "rate": 1_500_000, "sources": 1}
    assert progress_text(info) == "500.0 KB of 2.0 MB  1.5 MB/s  from 1 peer"
    assert progress_text({**info, "state": "done"}) == "done  2.0 MB"
    assert progress_text({"state": "failed", "error": "gone"}) == "failed: gone"
