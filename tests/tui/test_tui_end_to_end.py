"""The real ``p2pshare`` in a private tmux server, on a real node it starts, beside a second
real node: a record the second node publishes appears, is downloaded, republished, and the
republish reaches the second node. Every step waits for proof on the screen or in a node."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from p2pshare.control.client import ControlClient
from p2pshare.control.errors import ControlConnectionError, ControlError
from tests.nodeproc import NodeProcess, wait_for

MakeNode = Callable[[str], NodeProcess]
WIDTH, HEIGHT = 140, 40
TIMEOUT = 60.0


class Tmux:
    """One private tmux server (its own socket name and config) running one command."""

    def __init__(self, tmp: Path) -> None:
        self.name = f"p2ps-{uuid.uuid4().hex[:8]}"
        self.conf = tmp / "tmux.conf"
        self.conf.write_text("set -g escape-time 0\nset -g remain-on-exit on\n")

    def _run(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.name, "-f", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def start(self, command: str) -> None:
        self._run("new-session", "-d", "-x", str(WIDTH), "-y", str(HEIGHT), command)

    def screen(self) -> str:
        return self._run("capture-pane", "-p")

    def key(self, key: str) -> None:
        self._run("send-keys", key)

    def type(self, text: str) -> None:
        self._run("send-keys", "-l", text)

    def wait_for(self, text: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared on screen:\n{screen}")
            time.sleep(0.2)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.name, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed on this machine")
    server = Tmux(tmp_path)
    yield server
    server.kill()


LOOPBACK_CONFIG = """\
# The TUI's own node in the end-to-end test: loopback only, no mDNS, downloads only when asked.
name = ""
listen = ["/ip4/127.0.0.1/tcp/0"]
bootstrap = []
communities = ["public"]
fetch = "none"
mdns = false
"""


def test_a_neighbours_document_appears_is_downloaded_and_republished_from_the_tui(
    node_factory: MakeNode, tmux: Tmux, tmp_path: Path
) -> None:
    neighbour = node_factory("neighbour")
    neighbour.start()
    me = NodeProcess(tmp_path / "me")
    me.home.mkdir(mode=0o700)
    (me.home / "config.toml").write_text(LOOPBACK_CONFIG)  # init keeps it

    tmux.start(f"env P2PSHARE_HOME={me.home} {sys.executable} -m p2pshare; sleep 600")
    try:
        # First run: no identity yet, so the TUI asks for a name and creates one.
        tmux.wait_for("Welcome to p2pshare")
        tmux.type("Me at home")
        tmux.key("Enter")
        tmux.wait_for("0 records")  # the feed, from the node the TUI started
        assert me.json("id")["peer_id"]

        me.ok("connect", neighbour.address())
        tmux.wait_for("1 peer connected")  # peer events reach the screen live

        guide = tmp_path / "guide.pdf"
        guide.write_bytes(os.urandom(1_500_000))
        neighbour.ok(
            "share", str(guide), "--title", "Neighbour wheel guide", "--licence", "CC-BY-4.0"
        )
        tmux.wait_for("Neighbour wheel guide")
        # The new record is at the top of the feed, where the cursor is.
        tmux.key("d")
        tmux.wait_for("Downloaded Neighbour wheel guide")
        doc_id = me.jsonl("list", "--kind", "doc", "--limit", "0")[0]["id"]
        assert me.json("show", doc_id)["document"] == "complete"

        tmux.key("p")
        tmux.wait_for("Republished")
        wait_for(
            lambda: neighbour.jsonl("list", "--kind", "repost", "--limit", "0"),
            timeout=TIMEOUT,
            what="the republish to reach the neighbour",
        )
        repost = neighbour.jsonl("list", "--kind", "repost", "--limit", "0")[0]
        assert repost["original"]["id"] == doc_id
        assert repost["author"] == me.json("id")["peer_id"]

        # A document whose licence forbids republishing: refused, with the reason.
        price_list = tmp_path / "prices.pdf"
        price_list.write_bytes(os.urandom(10_000))
        neighbour.ok(
            "share",
            str(price_list),
            "--title",
            "Private price list",
            "--licence",
            "all-rights-reserved",
        )
        tmux.wait_for("Private price list")
        # My repost ranks first (me, then the people I follow, then others, newest first).
        tmux.key("Down")
        tmux.key("Enter")
        tmux.wait_for("it cannot be republished")  # its document screen
        tmux.key("p")
        tmux.wait_for("Not republished")
        assert len(neighbour.jsonl("list", "--kind", "repost", "--limit", "0")) == 1

        tmux.key("q")
        wait_for(
            lambda: not (me.home / "run" / "control.sock").exists() or not _answers(me),
            timeout=TIMEOUT,
            what="the TUI's node to stop with it",
        )
    finally:
        tmux.kill()  # SIGHUP: the TUI's node stops with it; make sure of it anyway
        _shutdown(me)


def _shutdown(node: NodeProcess) -> None:
    try:
        with ControlClient.connect(node.home / "run" / "control.sock", timeout=5) as client:
            client.call("shutdown")
    except (ControlConnectionError, ControlError):
        pass


def _answers(node: NodeProcess) -> bool:
    return node.cli("status").returncode == 0
