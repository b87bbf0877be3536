"""Find the node, or start one, and connect the app to it.

``p2pshare`` / ``p2pshare tui``: the data dir's node if one answers, else a child ``p2pshare
node`` whose output goes to its own node.log (never onto the TUI's screen), stopped when the TUI
exits unless ``--keep-running``. ``--attach SOCKET``: that node only. ``--remote HOST``: ``ssh
HOST p2pshare control-stdio``, the same protocol over ssh. The app paints at once and connects in
the background, so a node that takes seconds to start never delays the first screen.
"""

from __future__ import annotations

import asyncio
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


@dataclass
class Launch:
    """How to reach a node. Exactly one of ``socket`` and ``remote`` is set."""

    socket: Path | None = None
    remote: Sequence[str] = ()  # argv of a command speaking the control protocol on stdio
    node_argv: Sequence[str] = ()  # argv that starts a node when none answers on ``socket``
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

    async def _start_node(self) -> NodeClient:
        assert self.socket is not None
        self.child = await asyncio.create_subprocess_exec(
            *self.node_argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # the node logs to node.log in its data dir
            stderr=subprocess.DEVNULL,
            # Same session as the TUI: if the terminal closes, the node gets SIGHUP and stops
            # cleanly too. (Ctrl-C is a key to Textual's raw-mode terminal, not a signal.)
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
                await asyncio.sleep(0.1)

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


def node_argv(data_dir: Path) -> list[str]:
    """The command that runs a node on ``data_dir`` with this same Python."""
    return [sys.executable, "-m", "p2pshare", "--data-dir", str(data_dir), "node"]


def remote_argv(host: str) -> list[str]:
    return ["ssh", "-T", "-o", "BatchMode=yes", host, "p2pshare", "control-stdio"]


def run(launch: Launch) -> int:
    """Run the TUI until the person quits."""
    from p2pshare.tui.app import P2PShareApp

    app = P2PShareApp(launch.connect, launch.disconnect)
    app.run()
    return 0
