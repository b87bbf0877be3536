"""Real node processes with gossip off: records made while a peer was away arrive by sync."""

from __future__ import annotations

from collections.abc import Callable

from p2pshare.control.client import ControlClient
from tests.nodeproc import NodeProcess, wait_for

MakeNode = Callable[[str], NodeProcess]
OFFLINE_RECORDS = 500


def _count(node: NodeProcess) -> int:
    return int(node.json("status")["records"])


def _publish(node: NodeProcess, n: int, prefix: str) -> None:
    """``n`` recommendations made through the node's control socket, as the CLI would."""
    with ControlClient.connect(node.home / "run" / "control.sock", timeout=30) as client:
        for i in range(n):
            client.call("recommend", target="https://example.org/" + prefix, text=f"{prefix} {i}")


def test_records_made_while_a_node_was_offline_arrive_by_sync_after_it_restarts(
    node_factory: MakeNode,
) -> None:
    a, c = node_factory("a"), node_factory("c")
    a.start("--no-gossip")
    c.start("--no-gossip")
    _publish(a, 5, "before")
    c.ok("connect", a.address())
    a_records = _count(a)
    wait_for(lambda: _count(c) >= a_records, timeout=60, what="C's first catch-up by sync")

    c.stop()
    _publish(a, OFFLINE_RECORDS, "while C was away")
    a_records = _count(a)
    assert a_records >= OFFLINE_RECORDS + 5

    # C remembers A (peers.json) and redials it on start: no connect command this time.
    c.start("--no-gossip")
    wait_for(lambda: _count(c) >= a_records, timeout=90, what="C to catch up by sync alone")
    a_list = {r["id"] for r in a.jsonl("list", "--kind", "rec", "--limit", "0")}
    c_list = {r["id"] for r in c.jsonl("list", "--kind", "rec", "--limit", "0")}
    assert a_list <= c_list
    status = c.json("status")
    assert status["gossip"] is False
    assert status["sync"]["records_received"] >= OFFLINE_RECORDS
    assert status["invalid_received"] == 0
    for node in (a, c):
        code, _ = node.stop()
        assert code == 0
