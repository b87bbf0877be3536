"""Running the app against the fake node in Pilot tests: start it, wait for conditions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from textual.pilot import Pilot

from p2pshare.tui.app import P2PShareApp
from p2pshare.tui.dialogs import CreateIdentity
from tests.tui.fake import FakeClient

SIZE = (120, 40)
TEST_TIMEOUT = 90.0
Test = Callable[[], Coroutine[Any, Any, None]]


def on_asyncio(test: Test) -> Callable[[], None]:
    """Textual runs on asyncio, the suite on trio (trio_mode): run this test in asyncio.run."""

    def run() -> None:
        asyncio.run(asyncio.wait_for(test(), TEST_TIMEOUT))

    run.__name__, run.__doc__ = test.__name__, test.__doc__
    return run


def make_app(client: FakeClient, create_identity: CreateIdentity | None = None) -> P2PShareApp:
    async def connect() -> FakeClient:
        return client

    return P2PShareApp(connect, create_identity=create_identity)  # type: ignore[arg-type]


async def until(
    condition: Callable[[], Any], pilot: Pilot[Any], what: str, tries: int = 500
) -> None:
    """Let the app run until ``condition`` holds (bounded: ``tries`` short pauses)."""
    for _ in range(tries):
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def notices(app: P2PShareApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


def noticed(app: P2PShareApp, text: str) -> bool:
    return any(text in n for n in notices(app))


def feed_total(app: P2PShareApp) -> int:
    return app.feed.rows.total if app.feed.loaded else -1


async def started(app: P2PShareApp, client: FakeClient, pilot: Pilot[Any]) -> None:
    """The feed has its first page and the app listens for events."""
    await until(lambda: app.feed.loaded, pilot, "the first page of the feed")
    await until(client.subscribed.is_set, pilot, "the event subscription")
