"""The main screens at a fixed size, compared with the text in ``snapshots/``.

Text (not SVG) so that a colour tweak in a Textual minor release does not fail the suite, while a
moved column, a lost label or a changed layout does. After an intended change, regenerate with
``P2PSHARE_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/tui/test_snapshots.py`` and review
the diff.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from p2pshare.tui import records
from p2pshare.tui.app import P2PShareApp
from tests.tui.fake import FakeClient, doc_view

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


def views() -> list[dict[str, Any]]:
    out = [doc_view(0), doc_view(1, licence="all-rights-reserved"), doc_view(2, licence="CC0-1.0")]
    for view in out:
        view["trust"] = 1  # Anna is followed
    out.append(
        {
            "id": "rec0001" + "b" * 20,
            "kind": "rec",
            "author": "12D3KooWBen",
            "author_name": "Ben's Books",
            "created_ms": 1_789_990_000_000,
            "community": "public",
            "headline": "url https://example.org ****: A friendly repair café",
            "body": {"text": "A friendly repair café", "rating": 4},
        }
    )
    return out


Steps = Callable[[Any, P2PShareApp], Coroutine[Any, Any, None]]


def snapshot(name: str, steps: Steps, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records.time, "time", lambda: NOW_S)

    async def run() -> None:
        client = FakeClient(views())

        async def connect() -> FakeClient:
            return client

        app = P2PShareApp(connect)  # type: ignore[arg-type]
        async with app.run_test(size=SIZE) as pilot:
            for _ in range(200):
                if app.feed.table.row_count == 4:
                    break
                await pilot.pause(0.02)
            await steps(pilot, app)
            await pilot.pause(0.1)
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
    await pilot.pause(0.2)


async def _transfers(pilot: Any, app: P2PShareApp) -> None:
    app.transfers["r"] = {"title": "Repair guide 0", "percent": 42.0, "rate": 2.5e6, "sources": 2}
    await pilot.press("t")


def test_feed_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot("feed", _nothing, monkeypatch)


def test_document_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot("document", _document, monkeypatch)


def test_help_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot("help", _help, monkeypatch)


def test_search_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot("search", _search, monkeypatch)


def test_transfers_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot("transfers", _transfers, monkeypatch)


async def _share_form(pilot: Any, app: P2PShareApp) -> None:
    await pilot.press("m")
    await pilot.pause(0.2)
    await pilot.press("a")


def test_share_form(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot("share_form", _share_form, monkeypatch)
