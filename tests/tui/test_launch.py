"""Start-up without a screen: creating the identity, starting and stopping a real node, errors
that become sentences, logs that stay off the terminal."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from p2pshare.control.client import ControlClient
from p2pshare.control.errors import ControlConnectionError, NodeNotRunning
from p2pshare.tui.launch import (
    Launch,
    LaunchError,
    cli_argv,
    init_argv,
    node_argv,
    route_logging,
)
from tests.conftest import CliRunner
from tests.nodeproc import NodeProcess, wait_for


def _loopback(home: Path) -> None:
    config = home / "config.toml"
    text = config.read_text().replace("/ip4/0.0.0.0/tcp/4011", "/ip4/127.0.0.1/tcp/0")
    config.write_text(text.replace("mdns = true", "mdns = false"))


def test_create_identity_runs_init_and_says_why_it_fails(tmp_path: Path) -> None:
    home = tmp_path / "home"
    launch = Launch(socket=home / "control.sock", init_argv=init_argv(home))
    asyncio.run(launch.create_identity("Cycle Works"))
    assert (home / "identity.key").exists()
    with pytest.raises(LaunchError, match="already has an identity"):
        asyncio.run(launch.create_identity("Again"))


def test_a_node_that_dies_at_start_up_is_a_sentence(tmp_path: Path) -> None:
    launch = Launch(
        socket=tmp_path / "control.sock",
        node_argv=[sys.executable, "-c", "raise SystemExit(3)"],
    )
    with pytest.raises(ControlConnectionError, match=r"stopped at start-up \(exit 3\)"):
        asyncio.run(launch.connect())


def test_attaching_where_no_node_runs_says_so(tmp_path: Path) -> None:
    with pytest.raises(NodeNotRunning):
        asyncio.run(Launch(socket=tmp_path / "nobody.sock").connect())


def test_a_node_the_tui_starts_stops_with_it_unless_kept_running(tmp_path: Path) -> None:
    me = NodeProcess(tmp_path / "me")
    me.init("Me")
    _loopback(me.home)
    socket = me.home / "run" / "control.sock"

    async def session(keep: bool) -> int | None:
        launch = Launch(socket=socket, node_argv=node_argv(me.home), keep_running=keep)
        client = await launch.connect()
        status = await client.call("status")
        assert status["records"] >= 1  # the profile init published
        await launch.disconnect(client)
        assert launch.child is not None
        return launch.child.returncode

    assert asyncio.run(session(keep=False)) == 0  # stopped, cleanly
    assert not socket.exists() or me.cli("status").returncode != 0
    assert asyncio.run(session(keep=True)) is None  # still running
    try:
        assert me.cli("status").returncode == 0

        async def remote() -> dict[str, Any]:
            # --remote HOST runs ``ssh HOST p2pshare control-stdio``; here without the ssh.
            launch = Launch(remote=cli_argv(me.home, "control-stdio"))
            client = await launch.connect()
            try:
                return dict(await client.call("status"))
            finally:
                await launch.disconnect(client)

        assert asyncio.run(remote())["peer_id"] == me.json("id")["peer_id"]
    finally:
        with ControlClient.connect(socket, timeout=10) as client:
            client.call("shutdown")
        wait_for(lambda: me.cli("status").returncode != 0, timeout=60, what="the node to stop")


def test_logs_go_to_the_file_never_to_the_terminal(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.lastResort)
    try:
        route_logging(tmp_path / "tui.log")
        logging.getLogger("p2pshare.control.aio_client").warning("peer misbehaved")
        route_logging(tmp_path / "missing-dir" / "tui.log")  # cannot open: still silent
        logging.getLogger("p2pshare.x").error("oops")
        route_logging(None)
        logging.getLogger("p2pshare.y").error("nowhere")
    finally:
        for handler in list(root.handlers):
            handler.close()
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        logging.lastResort = saved[2]
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert "peer misbehaved" in (tmp_path / "tui.log").read_text()


def test_without_an_identity_and_no_terminal_the_tui_says_how_to_make_one(
    run_cli: CliRunner,
) -> None:
    result = run_cli("tui")
    assert result.code == 1
    assert "no identity yet; create one with: p2pshare init --name NAME" in result.err
    assert "Traceback" not in result.err
