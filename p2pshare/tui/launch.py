"""Find the node, or start one, and connect the app to it.

``p2pshare`` / ``p2pshare tui``: the data dir's node if one answers, else a child ``p2pshare
node`` whose output goes to its own node.log (never onto the TUI's screen), stopped when the TUI
exits unless ``--keep-running``. ``--attach SOCKET``: that node only. ``--remote HOST``: ``ssh
HOST p2pshare control-stdio``, the same protocol over ssh. First run (no identity): the app asks
for a display name and this runs ``p2pshare init --name NAME`` (the TUI never imports the node).
The app paints at once and connects in the background, so a node that takes seconds to start
never delays the first screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from p2pshare.control.aio_client import AsyncControlClient
from p2pshare.control.errors import ControlConnectionError, NodeNotRunning
from p2pshare.tui.client import NodeClient

NODE_START_TIMEOUT = 60.0
NODE_STOP_TIMEOUT = 8.0
INIT_TIMEOUT = 60.0
LOG_BYTES = 1_000_000  # tui.log is rotated at this size (one old file kept)


class LaunchError(Exception):
    """Start-up failed; the message says why, for people."""


@dataclass
class Launch:
    """How to reach a node. Exactly one of ``socket`` and ``remote`` is set."""

    socket: Path | None = None
    remote: Sequence[str] = ()  # argv of a command speaking the control protocol on stdio
    node_argv: Sequence[str] = ()  # argv that starts a node when none answers on ``socket``
    init_argv: Sequence[str] = ()  # argv that creates the identity (the name is appended)
    keep_running: bool = False
    child: asyncio.subprocess.Process | None = field(default=None, init=False)

    async def connect(self) -> NodeClient:
        if self.remote:
            return await AsyncControlClient.connect_command(list(self.remote))
        assert self.socket is not None
        try:
            return await AsyncControlClient.connect(self.socket)
        except NodeNotRunning:
            if not self.node_argv:
                raise
        return await self._start_node()

    async def create_identity(self, name: str) -> None:
        """Run ``p2pshare init --name NAME`` for this data dir."""
        process = await asyncio.create_subprocess_exec(
            *self.init_argv,
            name,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            _, err = await asyncio.wait_for(process.communicate(), INIT_TIMEOUT)
        except TimeoutError:
            process.kill()
            raise LaunchError("creating the identity took too long; try: p2pshare init") from None
        if process.returncode != 0:
            message = err.decode(errors="replace").strip().removeprefix("p2pshare: error: ")
            raise LaunchError(message or f"p2pshare init failed (exit {process.returncode})")

    async def _start_node(self) -> NodeClient:
        assert self.socket is not None
        self.child = await asyncio.create_subprocess_exec(
            *self.node_argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # the node logs to node.log in its data dir
            stderr=subprocess.DEVNULL,
            # Same session as the TUI: if the terminal closes, the node gets SIGHUP and stops
            # cleanly too (Ctrl-C is a key to Textual's raw-mode terminal, not a signal) --
            # unless it is to keep running: then it is detached from the terminal.
            start_new_session=self.keep_running,
        )
        deadline = time.monotonic() + NODE_START_TIMEOUT
        while True:
            if self.child.returncode is not None:
                raise ControlConnectionError(
                    f"the node stopped at start-up (exit {self.child.returncode}); "
                    f"see node.log in the data dir, or run: p2pshare node"
                )
            try:
                return await AsyncControlClient.connect(self.socket)
            except NodeNotRunning:
                if time.monotonic() > deadline:
                    raise ControlConnectionError(
                        f"the node did not open {self.socket} in {NODE_START_TIMEOUT:g} s"
                    ) from None
                await asyncio.sleep(0.05)

    async def disconnect(self, client: NodeClient) -> None:
        """Close the connection; stop the node we started, unless asked to keep it."""
        child = self.child
        if child is not None and child.returncode is None and not self.keep_running:
            try:
                await client.call("shutdown")
            except Exception:  # it may be gone already: stop it the hard way
                child.terminate()
            try:
                await asyncio.wait_for(child.wait(), NODE_STOP_TIMEOUT)
            except TimeoutError:
                child.kill()
        await client.close()


def cli_argv(data_dir: Path, *args: str) -> list[str]:
    """``p2pshare --data-dir DIR ARGS…`` with this same Python."""
    return [sys.executable, "-m", "p2pshare", "--data-dir", str(data_dir), *args]


def node_argv(data_dir: Path) -> list[str]:
    return cli_argv(data_dir, "node")


def init_argv(data_dir: Path) -> list[str]:
    return cli_argv(data_dir, "init", "--name")


def remote_argv(host: str) -> list[str]:
    return ["ssh", "-T", "-o", "BatchMode=yes", host, "p2pshare", "control-stdio"]


class _QuietFileHandler(logging.handlers.RotatingFileHandler):
    """A log file that never complains on stderr (which would draw over the screen)."""

    def emit(self, record: logging.LogRecord) -> None:
        # No data dir yet (first run), disk full: the line is lost, never the screen.
        with contextlib.suppress(OSError):
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def route_logging(log_file: Path | None) -> None:
    """Library and client logs go to ``log_file`` (or nowhere), never to the terminal."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if log_file is None:
        root.addHandler(logging.NullHandler())
    else:
        to_file = _QuietFileHandler(
            log_file, maxBytes=LOG_BYTES, backupCount=1, delay=True, encoding="utf-8"
        )
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(to_file)
    root.setLevel(logging.INFO)
    logging.lastResort = None


def run(launch: Launch, *, first_run: bool = False, log_file: Path | None = None) -> int:
    """Run the TUI until the person quits."""
    route_logging(log_file)
    from p2pshare.tui.app import P2PShareApp

    create = launch.create_identity if first_run else None
    app = P2PShareApp(launch.connect, launch.disconnect, create_identity=create)
    app.run()
    return 0
