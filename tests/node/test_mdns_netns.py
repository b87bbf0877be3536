"""Two node processes find each other by mDNS and connect, on a LAN made for the test.

mDNS binds every interface and multicasts to the whole network, so it never runs on the real
one: the test creates two network namespaces joined by a veth pair (a two-host LAN of its own),
runs one node process in each with ``ip netns exec``, and deletes both namespaces at the end.
Each node listens on 0.0.0.0, so this also checks that wildcard addresses are announced as the
interface address the other side can dial.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import pytest

DEADLINE = 45.0  # discovery took 1-5 s when measured; generous for a loaded 2-core machine
SUBNET = "10.213.77"

NODE_SCRIPT = r"""
import json, sys, trio
from p2pshare.node.discovery import Mdns, Reconnector, transport_addrs
from p2pshare.node.host import configure_libp2p_logging, open_host
from p2pshare.node.identity import Identity
from p2pshare.node.peerbook import PeerBook

def say(**event):
    print(json.dumps(event), flush=True)

async def main():
    configure_libp2p_logging(None)
    identity = Identity.generate()
    async with open_host(identity, ["/ip4/0.0.0.0/tcp/4011"]) as host, trio.open_nursery() as n:
        reconnector = Reconnector(
            host, PeerBook(None), peer_connected=lambda p: say(event="connected", peer_id=p)
        )
        await n.start(reconnector.run)

        def on_peer(peer_id, addrs):
            say(event="discovered", peer_id=peer_id, addrs=addrs)
            reconnector.discovered(peer_id, addrs)

        mdns = Mdns(identity.peer_id, transport_addrs(host), on_peer)
        await n.start(mdns.run)
        say(event="ready", peer_id=identity.peer_id, announced=mdns.announced, mdns=mdns.running)
        with trio.move_on_after(float(sys.argv[1])):
            await trio.wrap_file(sys.stdin).read()  # until the test closes our stdin
        n.cancel_scope.cancel()

trio.run(main)
"""


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15, check=False)


def must(*args: str) -> None:
    result = ip(*args)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclass
class Lan:
    namespaces: list[str]
    addresses: list[str]


@pytest.fixture
def lan() -> Iterator[Lan]:
    """Two namespaces joined by a veth pair; removed again whatever happens."""
    tag = f"{os.getpid() % 100000}"
    names = [f"p2ps-{tag}-a", f"p2ps-{tag}-b"]
    links = [f"p2psa{tag}", f"p2psb{tag}"]  # interface names: at most 15 characters
    addresses = [f"{SUBNET}.1", f"{SUBNET}.2"]
    probe = ip("netns", "add", names[0])
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.strip()}")
    try:
        must("netns", "add", names[1])
        must("link", "add", links[0], "type", "veth", "peer", "name", links[1])
        for ns, link, address in zip(names, links, addresses, strict=True):
            must("link", "set", link, "netns", ns)
            must("-n", ns, "addr", "add", f"{address}/24", "dev", link)
            must("-n", ns, "link", "set", link, "up")
            must("-n", ns, "link", "set", "lo", "up")
        yield Lan(names, addresses)
    finally:
        for ns in names:
            ip("netns", "del", ns)  # takes its end of the veth pair with it
        ip("link", "del", links[0])  # in case setup failed before the move


@dataclass
class NodeProcess:
    proc: subprocess.Popen[str]
    events: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    seen: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, namespace: str) -> NodeProcess:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", NODE_SCRIPT, str(DEADLINE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        node = cls(proc)
        assert proc.stdout is not None
        threading.Thread(target=node._read, args=(proc.stdout,), daemon=True).start()
        return node

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                self.events.put(json.loads(line))
            except json.JSONDecodeError:
                self.events.put({"event": "noise", "line": line})

    def wait_for(self, deadline: float, event: str, peer_id: str | None = None) -> dict[str, Any]:
        """The first event of that kind (about that peer), waiting at most until ``deadline``."""
        while True:
            for item in self.seen:
                if item["event"] == event and peer_id in (None, item.get("peer_id")):
                    return item
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.proc.poll() is not None and self.events.empty()):
                pytest.fail(f"no {event!r} event; saw {self.seen}; stderr: {self.stop()}")
            try:
                self.seen.append(self.events.get(timeout=min(remaining, 1.0)))
            except queue.Empty:
                continue

    def stop(self) -> str:
        """Close stdin (the node's cue to exit), wait, kill if it lingers; return its stderr."""
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        return self.proc.stderr.read() if self.proc.stderr else ""


def test_two_nodes_find_each_other_by_mdns_and_connect(lan: Lan) -> None:
    nodes = [NodeProcess.start(ns) for ns in lan.namespaces]
    try:
        deadline = time.monotonic() + DEADLINE
        ready = [node.wait_for(deadline, "ready") for node in nodes]
        assert all(r["mdns"] for r in ready), ready
        ids = [r["peer_id"] for r in ready]
        for own, address in zip(ready, lan.addresses, strict=True):
            assert own["announced"] == [f"/ip4/{address}/tcp/4011"]  # 0.0.0.0 made dialable

        for node, other, other_address in zip(
            nodes, reversed(ids), reversed(lan.addresses), strict=True
        ):
            found = node.wait_for(deadline, "discovered", other)
            assert found["addrs"] == [f"/ip4/{other_address}/tcp/4011"]
        for node, other in zip(nodes, reversed(ids), strict=True):
            node.wait_for(deadline, "connected", other)
    finally:
        for node in nodes:
            node.stop()
