"""The main screens at a fixed size, compared with the text in ``snapshots/``.

Our own comparison rather than pytest-textual-snapshot: that plugin pins syrupy 4.8, which
needs pytest < 9, and we run pytest 9. Text (not SVG) so a colour tweak in a Textual minor
release does not fail the suite, while a moved column, a lost label or a changed layout does.
Clock and time zone are fixed. After an intended change, regenerate with
``P2PSHARE_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/tui/test_snapshots.py`` and review
the diff.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual.widgets import Input

from p2pshare.tui import records
from p2pshare.tui.app import P2PShareApp
from tests.tui.fake import ANNA, BEN, FakeClient, doc_view, rec_view
from tests.tui.helpers import started

SIZE = (120, 30)
SNAPSHOTS = Path(__file__).parent / "snapshots"
NOW_S = 1_790_000_400.0  # a fixed "now" for the age column
UPDATE = os.environ.get("P2PSHARE_UPDATE_SNAPSHOTS") == "1"


def screen_text(app: P2PShareApp) -> str:
    """What the terminal shows, as plain text (the same render as ``export_screenshot``)."""
    width, height = app.size
    console = Console(
        width=width, height=height, file=io.StringIO(), force_terminal=True, record=True
    )
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"


def check(name: str, text: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    if UPDATE:
        path.write_text(text)
        return
    assert path.exists(), f"no snapshot {path}; create it with P2PSHARE_UPDATE_SNAPSHOTS=1"
    assert text == path.read_text(), f"{name} differs from {path}:\n{text}"


def client() -> FakeClient:
    views = [
        doc_view(0),
        doc_view(1, licence="all-rights-reserved"),
        doc_view(2, licence="CC0-1.0"),
    ]
    views[0]["recommended_by"] = 2
    rec = rec_view("A friendly repair café")
    views.append(rec)
    repost = {
        **doc_view(3, licence="CC-BY-SA-4.0"),
        "id": "repost3" + "c" * 20,
        "kind": "repost",
        "author": BEN,
        "author_name": "Ben's Books",
        "trust": 2,
        "body": {"note": "Ben says: read this"},
    }
    repost["original"] = doc_view(3, licence="CC-BY-SA-4.0")
    views.insert(1, repost)
    fake = FakeClient(views)
    fake.vouch_data[views[0]["id"]] = {
        "recommended_by": [{**rec_view("Clear and tested"), "trust": 1}],
        "reposted_by": [repost],
    }
    fake.network.append({"peer_id": BEN, "connected": False, "addrs": [], "invalid": 0})
    fake.following = {ANNA}
    return fake


Steps = Callable[[Any, P2PShareApp], Coroutine[Any, Any, None]]


def snapshot(
    name: str, steps: Steps, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int] = SIZE
) -> None:
    monkeypatch.setattr(records.time, "time", lambda: NOW_S)
    monkeypatch.setattr(records.time, "localtime", time.gmtime)

    async def run() -> None:
        fake = client()

        async def connect() -> FakeClient:
            return fake

        app = P2PShareApp(connect)  # type: ignore[arg-type]
        async with app.run_test(size=size) as pilot:
            await started(app, fake, pilot)
            await steps(pilot, app)
            await pilot.pause(0.2)
            await pilot.wait_for_scheduled_animations()
            check(name, screen_text(app))

    asyncio.run(asyncio.wait_for(run(), 60))


async def _nothing(pilot: Any, app: P2PShareApp) -> None:
    pass


async def _document(pilot: Any, app: P2PShareApp) -> None:
    await pilot.press("enter")


async def _help(pilot: Any, app: P2PShareApp) -> None:
    await pilot.press("question_mark")


async def _search(pilot: Any, app: P2PShareApp) -> None:
    await pilot.press("slash", *"guide", "enter")


async def _transfers(pilot: Any, app: P2PShareApp) -> None:
    app.transfers["r"] = {
        "title": "Repair guide 0",
        "percent": 42.0,
        "rate": 2.5e6,
        "sources": 2,
        "size": 3_000_000,
        "present_bytes": 1_260_000,
    }
    app.transfers["s"] = {"title": "Repair guide 2", "state": "done", "size": 3_000_000}
    await pilot.press("t")


async def _share_form(pilot: Any, app: P2PShareApp) -> None:
    await pilot.press("m")
    await pilot.pause(0.2)
    await pilot.press("a")


async def _peers(pilot: Any, app: P2PShareApp) -> None:
    await pilot.press("e")


async def _communities(pilot: Any, app: P2PShareApp) -> None:
    await pilot.press("g")


async def _profile(pilot: Any, app: P2PShareApp) -> None:
    await pilot.press("u")
    await pilot.pause(0.2)
    app.screen.query_one("#profile-name", Input).cursor_blink = False


def test_feed_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot("feed", _nothing, monkeypatch)


def test_feed_screen_narrow(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot("feed_90x24", _nothing, monkeypatch, size=(90, 24))


def test_document_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot("document", _document, monkeypatch)


def test_help_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot("help", _help, monkeypatch)


def test_search_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot("search", _search, monkeypatch)


def test_transfers_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot("transfers", _transfers, monkeypatch)


def test_share_form(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot("share_form", _share_form, monkeypatch)


def test_peers_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot("peers", _peers, monkeypatch)


def test_communities_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot("communities", _communities, monkeypatch)


def test_profile_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot("profile", _profile, monkeypatch)
