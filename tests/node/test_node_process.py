"""The headless node as a real process: control socket, CLI through it, clean shutdown."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Callable
from pathlib import Path

from tests.nodeproc import NodeProcess, wait_for

MakeNode = Callable[[str], NodeProcess]


def test_cli_goes_through_the_running_node_and_sigterm_stops_it(
    node_factory: MakeNode, tmp_path: Path
) -> None:
    node = node_factory("bakery")
    node.start()
    sock = node.home / "run" / "control.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    status = node.json("status")
    assert status["peer_id"].startswith("12D3KooW")
    assert status["listen"][0].startswith("/ip4/127.0.0.1/tcp/")
    assert status["communities"] == ["public"]
    doc = tmp_path / "menu.md"
    doc.write_text("# Winter menu\n")
    node.ok("share", str(doc), "--title", "Winter menu", "--licence", "CC-BY-4.0")
    listed = node.ok("list", "--kind", "doc")
    assert "Winter menu" in listed
    code, seconds = node.stop(signal.SIGTERM)
    assert code == 0
    assert seconds < 5.0
    assert not sock.exists()
    assert "Winter menu" in node.ok("list")  # the store is usable without the node


def test_second_node_on_the_same_data_dir_is_refused(node_factory: MakeNode) -> None:
    node = node_factory("one")
    node.start()
    second = node.cli("node", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", timeout=60)
    assert second.returncode != 0
    assert "another p2pshare process" in second.stderr
    assert "Traceback" not in second.stderr
    node.stop(signal.SIGINT)


def test_network_commands_without_a_node_say_how_to_start_one(node_factory: MakeNode) -> None:
    node = node_factory("idle")
    for args in (["status"], ["peers"], ["invite"], ["connect", "/ip4/127.0.0.1/tcp/1/p2p/x"]):
        result = node.cli(*args)
        assert result.returncode != 0
        assert "p2pshare node" in result.stderr
        assert "Traceback" not in result.stderr


def test_two_nodes_connect_and_gossip_a_share_end_to_end(
    node_factory: MakeNode, tmp_path: Path
) -> None:
    a, b = node_factory("alice"), node_factory("bob")
    a.start()
    b.start()
    b.ok("connect", a.address())
    wait_for(lambda: a.json("status")["connected_peers"] == 1, what="A to see B")
    guide = tmp_path / "guide.pdf"
    guide.write_bytes(os.urandom(300_000))
    a.ok("share", str(guide), "--title", "Bread guide", "--licence", "CC0-1.0")
    wait_for(lambda: "Bread guide" in b.ok("list", "--kind", "doc"), what="the record on B")
    a.stop()
    b.stop()


def test_invite_code_connects_and_joins(node_factory: MakeNode) -> None:
    a, b = node_factory("host"), node_factory("guest")
    a.start()
    b.start()
    code = a.ok("invite", "--community", "bakers").strip()
    assert code.startswith("p2ps1")
    joined = b.ok("join", code)
    assert "bakers" in joined
    assert "bakers" in b.json("status")["communities"]
    bad = b.cli("join", code[:-3] + "zzz")
    assert bad.returncode != 0 and "invite code" in bad.stderr
    a.stop()
    b.stop()
