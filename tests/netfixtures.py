"""Real libp2p hosts on 127.0.0.1:0, in-process, for tests that need a network.

Register with ``pytest_plugins = ["tests.netfixtures"]`` in tests/conftest.py; then a test asks
for the ``net`` fixture::

    async def test_something(net: Net) -> None:
        a, b = await net.peers(2)
        await a.connect(b)

Every host is torn down at the end of the test within a bounded time (``open_host`` closes in a
shielded scope limited to a few seconds), so a wedged py-libp2p task cannot hang the suite.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import trio
from libp2p.abc import IHost

from p2pshare.node.host import (
    LOOPBACK_LISTEN_ADDR,
    connect,
    is_connected,
    listen_addrs,
    open_host,
)
from p2pshare.node.identity import Identity

WAIT_TIMEOUT = 10.0  # generous for a loaded 2-core machine; conditions usually hold in ms
POLL_INTERVAL = 0.005


@dataclass
class Peer:
    """A running host and what tests need to reach it."""

    identity: Identity
    host: IHost
    addrs: list[str]  # as bound at start, so still known after stop()
    _scope: trio.CancelScope
    _stopped: trio.Event

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    @property
    def addr(self) -> str:
        """The first bound address, ``/ip4/127.0.0.1/tcp/<port>/p2p/<peer id>``."""
        return self.addrs[0]

    async def connect(self, other: Peer, timeout: float = WAIT_TIMEOUT) -> None:
        await connect(self.host, other.addr, timeout=timeout)

    def is_connected(self, other: Peer) -> bool:
        return is_connected(self.host, other.peer_id)

    async def stop(self, timeout: float = WAIT_TIMEOUT) -> None:
        """Shut this host down now (as a crash or restart would) and wait until it is closed."""
        self._scope.cancel()
        with trio.fail_after(timeout):
            await self._stopped.wait()


@dataclass
class Net:
    """Starts hosts on demand in the fixture's nursery; all are closed when the test ends.

    Hosts run in tasks of the fixture, not of the test: pytest-trio runs fixtures and the test
    in different tasks, and a host's nurseries must be entered and left by the same task.
    """

    nursery: trio.Nursery
    started: list[Peer] = field(default_factory=list)

    async def peer(self, identity: Identity | None = None, listen: str | None = None) -> Peer:
        identity = identity or Identity.generate()
        addrs = [listen] if listen else [LOOPBACK_LISTEN_ADDR]
        peer: Peer = await self.nursery.start(_run_host, identity, addrs)
        self.started.append(peer)
        return peer

    async def peers(self, count: int) -> list[Peer]:
        return [await self.peer() for _ in range(count)]

    async def line(self, count: int) -> list[Peer]:
        """``count`` peers connected in a line: 0-1, 1-2, ...; each link confirmed both ways."""
        nodes = await self.peers(count)
        for left, right in itertools.pairwise(nodes):
            await left.connect(right)
            await wait_until(partial(right.is_connected, left), what="both ends of a link")
        return nodes


async def _run_host(
    identity: Identity,
    addrs: list[str],
    task_status: Any = trio.TASK_STATUS_IGNORED,  # trio.TaskStatus: see p2pshare.node.gossip
) -> None:
    stopped = trio.Event()
    try:
        with trio.CancelScope() as scope:
            async with open_host(identity, addrs) as host:
                task_status.started(Peer(identity, host, listen_addrs(host), scope, stopped))
                await trio.sleep_forever()
    finally:
        stopped.set()


async def wait_until(
    condition: Callable[[], object], timeout: float = WAIT_TIMEOUT, what: str = ""
) -> None:
    """Poll ``condition`` until it holds; fail the test with ``what`` after ``timeout`` s."""
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(POLL_INTERVAL)
        return
    pytest.fail(f"timed out after {timeout:g} s waiting for {what or condition}")


async def within(awaitable: Awaitable[object], timeout: float = WAIT_TIMEOUT) -> object:
    """Await with a deadline that fails the test instead of hanging it."""
    with trio.fail_after(timeout):
        return await awaitable


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    async with trio.open_nursery() as nursery:
        yield Net(nursery)
        nursery.cancel_scope.cancel()  # each host then closes itself, bounded by open_host
