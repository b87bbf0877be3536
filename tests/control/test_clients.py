"""The blocking and asyncio control clients against a real control server on a real socket.

The blocking client runs in worker threads of the trio test; for the asyncio client the trio
server runs in a thread of its own and the test drives asyncio.run.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from p2pshare.control.aio_client import AsyncControlClient
from p2pshare.control.client import ControlClient
from p2pshare.control.errors import (
    ConnectionClosed,
    ControlError,
    ControlTimeout,
    NodeNotRunning,
    VersionMismatch,
)
from p2pshare.control.server import ControlServer, Handler
from p2pshare.protocol.control_wire import PROTOCOL_VERSION, ErrorCode, Event, hello_params

WAIT = 10.0  # seconds any single wait may take before the test fails


class Gate:
    """A handler that blocks until opened; lives in the server's trio run."""

    def __init__(self) -> None:
        self.opened = trio.Event()

    async def __call__(self, params: dict[str, Any]) -> Any:
        await self.opened.wait()
        return "gate"


def make_server(gate: Gate) -> ControlServer:
    async def echo(params: dict[str, Any]) -> Any:
        return params

    async def crash(params: dict[str, Any]) -> Any:
        raise RuntimeError("kaboom")

    async def missing(params: dict[str, Any]) -> Any:
        raise ControlError(ErrorCode.NOT_FOUND, "no such record")

    handlers: dict[str, Handler] = {"echo": echo, "crash": crash, "missing": missing, "slow": gate}
    return ControlServer(handlers, lambda: {"peer_id": "peer-test"})


@pytest.fixture
def sock_path() -> Iterator[Path]:
    """A socket path well under the 108-byte limit (pytest's tmp_path can be too long)."""
    root = Path(tempfile.mkdtemp(prefix="p2c-", dir="/tmp"))
    yield root / "run" / "control.sock"
    shutil.rmtree(root, ignore_errors=True)


# --- blocking client, server in the test's trio run -------------------------------------------


@pytest.fixture
async def gate() -> Gate:
    return Gate()


@pytest.fixture
async def server(nursery: trio.Nursery, sock_path: Path, gate: Gate) -> ControlServer:
    server = make_server(gate)
    await nursery.start(server.serve_unix, sock_path)
    return server


async def connect(path: Path, **options: Any) -> ControlClient:
    return await trio.to_thread.run_sync(
        lambda: ControlClient.connect(path, timeout=WAIT, **options)
    )


async def test_blocking_client_says_hello_and_calls(server: ControlServer, sock_path: Path) -> None:
    with await connect(sock_path) as client:
        assert client.server_info["peer_id"] == "peer-test"
        assert client.server_info["version"] == PROTOCOL_VERSION
        result = await trio.to_thread.run_sync(lambda: client.call("echo", a=1, b=b"\x01"))
        assert result == {"a": 1, "b": b"\x01"}


async def test_blocking_client_raises_the_nodes_errors_and_stays_usable(
    server: ControlServer, sock_path: Path
) -> None:
    client = await connect(sock_path)
    with pytest.raises(ControlError) as missing:
        await trio.to_thread.run_sync(client.call, "missing")
    assert (missing.value.code, missing.value.message) == ("not-found", "no such record")
    with pytest.raises(ControlError) as crash:
        await trio.to_thread.run_sync(client.call, "crash")
    assert crash.value.code == ErrorCode.INTERNAL
    with pytest.raises(ControlError) as unknown:
        await trio.to_thread.run_sync(client.call, "nope")
    assert unknown.value.code == ErrorCode.UNKNOWN_METHOD
    assert await trio.to_thread.run_sync(client.call, "echo") == {}
    client.close()


async def test_blocking_client_reports_no_node_clearly(sock_path: Path) -> None:
    with pytest.raises(NodeNotRunning, match="start one with: p2pshare node"):
        ControlClient.connect(sock_path, timeout=WAIT)
    sock_path.parent.mkdir(mode=0o700)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(sock_path))  # a socket file nobody listens on
    dead.close()
    with pytest.raises(NodeNotRunning, match="no node for /data"):
        ControlClient.connect(sock_path, timeout=WAIT, not_running="no node for /data")


async def test_events_that_arrive_during_a_call_are_kept_for_later(
    server: ControlServer, sock_path: Path
) -> None:
    client = await connect(sock_path)
    assert await trio.to_thread.run_sync(client.subscribe) == {"events": "*"}
    for i in range(3):
        server.publish("record-added", {"n": i})
    await trio.testing.wait_all_tasks_blocked()  # the events are on the wire before the call
    assert await trio.to_thread.run_sync(lambda: client.call("echo", x=1)) == {"x": 1}
    events = await trio.to_thread.run_sync(lambda: list(client.events(idle_timeout=0.2)))
    assert events == [Event("record-added", {"n": i}) for i in range(3)]
    client.close()


async def test_a_timed_out_call_raises_and_its_late_answer_is_ignored(
    server: ControlServer, sock_path: Path, gate: Gate
) -> None:
    client = await connect(sock_path)
    with pytest.raises(ControlTimeout):
        await trio.to_thread.run_sync(lambda: client.request("slow", timeout=0.2))
    gate.opened.set()
    assert await trio.to_thread.run_sync(lambda: client.call("echo", after=True)) == {"after": True}
    client.close()


async def test_version_mismatch_is_its_own_error(server: ControlServer, sock_path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(sock_path))
    client = ControlClient(sock, timeout=WAIT)
    with pytest.raises(VersionMismatch, match="version"):
        await trio.to_thread.run_sync(
            client.request, "hello", hello_params("old", version=PROTOCOL_VERSION + 1)
        )
    with pytest.raises(ConnectionClosed):
        await trio.to_thread.run_sync(client.call, "echo")
    client.close()


async def test_blocking_client_sees_the_node_go_away(
    server: ControlServer, sock_path: Path
) -> None:
    client = await connect(sock_path)
    server.close()
    with pytest.raises(ConnectionClosed):
        await trio.to_thread.run_sync(client.call, "echo")
    with pytest.raises(ConnectionClosed):  # and stays closed
        await trio.to_thread.run_sync(client.call, "echo")


# --- asyncio client, server in a thread -------------------------------------------------------


@dataclass
class ThreadedServer:
    server: ControlServer
    gate: Gate
    token: trio.lowlevel.TrioToken
    path: Path

    def publish(self, event: str, data: Any) -> None:
        trio.from_thread.run_sync(self.server.publish, event, data, trio_token=self.token)

    def open_gate(self) -> None:
        trio.from_thread.run_sync(self.gate.opened.set, trio_token=self.token)

    def close(self) -> None:
        trio.from_thread.run_sync(self.server.close, trio_token=self.token)


@pytest.fixture
def threaded(sock_path: Path) -> Iterator[ThreadedServer]:
    gate = Gate()
    server = make_server(gate)
    started: queue.Queue[tuple[trio.lowlevel.TrioToken, trio.CancelScope] | BaseException] = (
        queue.Queue()
    )

    async def main() -> None:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve_unix, sock_path)
                started.put((trio.lowlevel.current_trio_token(), nursery.cancel_scope))
        except BaseException as exc:
            started.put(exc)
            raise

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    got = started.get(timeout=WAIT)
    assert not isinstance(got, BaseException), got
    token, scope = got
    yield ThreadedServer(server, gate, token, sock_path)
    with contextlib.suppress(trio.RunFinishedError):  # a test may have closed the server
        trio.from_thread.run_sync(gate.opened.set, trio_token=token)
        trio.from_thread.run_sync(scope.cancel, trio_token=token)
    thread.join(WAIT)
    assert not thread.is_alive()


def run_async(coro: Any) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(30):
            return await coro

    return asyncio.run(bounded())


def test_async_client_says_hello_calls_and_raises_the_nodes_errors(
    threaded: ThreadedServer,
) -> None:
    async def main() -> None:
        async with await AsyncControlClient.connect(threaded.path, timeout=WAIT) as client:
            assert client.server_info["peer_id"] == "peer-test"
            assert await client.call("echo", a=[1, 2]) == {"a": [1, 2]}
            with pytest.raises(ControlError) as missing:
                await client.call("missing")
            assert missing.value.code == "not-found"
            with pytest.raises(ControlError) as crash:
                await client.call("crash")
            assert crash.value.code == ErrorCode.INTERNAL
            assert await client.call("echo") == {}

    run_async(main())


def test_async_calls_run_concurrently(threaded: ThreadedServer) -> None:
    async def main() -> None:
        async with await AsyncControlClient.connect(threaded.path, timeout=WAIT) as client:
            slow = asyncio.create_task(client.call("slow"))
            assert await client.call("echo", fast=1) == {"fast": 1}
            assert not slow.done()
            await asyncio.to_thread(threaded.open_gate)
            assert await slow == "gate"

    run_async(main())


def test_async_client_events_through_the_iterator(threaded: ThreadedServer) -> None:
    async def main() -> list[Event]:
        async with await AsyncControlClient.connect(threaded.path, timeout=WAIT) as client:
            await client.subscribe(["peer-up"])
            for i in range(3):
                await asyncio.to_thread(threaded.publish, "peer-down", {"n": i})  # not wanted
                await asyncio.to_thread(threaded.publish, "peer-up", {"n": i})
            got = []
            async for event in client.events():
                got.append(event)
                if len(got) == 3:
                    break
            assert await client.next_event(timeout=0.2) is None
            return got

    assert run_async(main()) == [Event("peer-up", {"n": i}) for i in range(3)]


def test_async_client_events_through_a_callback(threaded: ThreadedServer) -> None:
    async def main() -> list[Event]:
        got: list[Event] = []
        three = asyncio.Event()

        def on_event(event: Event) -> None:
            got.append(event)
            if len(got) == 3:
                three.set()

        client = await AsyncControlClient.connect(threaded.path, timeout=WAIT, on_event=on_event)
        await client.subscribe()
        for i in range(3):
            await asyncio.to_thread(threaded.publish, "record-added", {"n": i})
        async with asyncio.timeout(WAIT):
            await three.wait()
        await client.close()
        return got

    assert run_async(main()) == [Event("record-added", {"n": i}) for i in range(3)]


def test_async_client_reports_no_node_clearly(sock_path: Path) -> None:
    with pytest.raises(NodeNotRunning, match="start one with: p2pshare node"):
        run_async(AsyncControlClient.connect(sock_path, timeout=WAIT))


def test_async_pending_call_fails_when_the_node_goes_away(threaded: ThreadedServer) -> None:
    async def main() -> tuple[str, list[str]]:
        reasons: list[str] = []
        client = await AsyncControlClient.connect(
            threaded.path, timeout=WAIT, on_close=reasons.append
        )
        slow = asyncio.create_task(client.call("slow"))
        await asyncio.to_thread(threaded.close)
        with pytest.raises(ConnectionClosed):
            await slow
        reason = await client.wait_closed()
        with pytest.raises(ConnectionClosed):
            await client.call("echo")
        await client.close()
        return reason, reasons

    reason, reasons = run_async(main())
    assert "the node closed the connection" in reason
    assert reasons == [reason]


# --- over stdio, through a child process ------------------------------------------------------

_STDIO_NODE = """
import trio
from p2pshare.control.server import ControlServer, Handler

async def echo(params):
    print("stray output goes to stderr, not into the protocol")
    return params

async def emit(params):
    server.publish("record-added", params)
    return None

server = ControlServer({"echo": echo, "emit": emit}, lambda: {"peer_id": "stdio-node"})
trio.run(server.serve_stdio)
"""


def test_async_client_over_a_child_running_serve_stdio() -> None:
    async def main() -> tuple[list[Any], int | None]:
        client = await AsyncControlClient.connect_command(
            [sys.executable, "-c", _STDIO_NODE], timeout=WAIT
        )
        assert client.server_info["peer_id"] == "stdio-node"
        answers = [await client.call("echo", over="ssh")]
        await client.subscribe()
        await client.call("emit", n=1)
        answers.append(await client.next_event(timeout=WAIT))
        process = client._process
        await client.close()
        assert process is not None
        return answers, process.returncode

    answers, returncode = run_async(main())
    assert answers == [{"over": "ssh"}, Event("record-added", {"n": 1})]
    assert returncode == 0  # stdin closed -> serve_stdio returned


def test_relay_stdio_joins_a_child_to_a_running_node(threaded: ThreadedServer) -> None:
    script = (
        "import sys, trio\n"
        "from p2pshare.control.server import relay_stdio\n"
        "trio.run(relay_stdio, sys.argv[1])\n"
    )

    async def main() -> Any:
        client = await AsyncControlClient.connect_command(
            [sys.executable, "-c", script, str(threaded.path)], timeout=WAIT
        )
        async with client:
            assert client.server_info["peer_id"] == "peer-test"
            return await client.call("echo", relayed=True)

    assert run_async(main()) == {"relayed": True}


def test_relay_to_a_missing_node_ends_with_a_reason(sock_path: Path) -> None:
    script = (
        "import sys, trio\n"
        "from p2pshare.control.server import relay_stdio\n"
        "trio.run(relay_stdio, sys.argv[1])\n"
    )
    with pytest.raises(ConnectionClosed, match="no node is running"):
        run_async(
            AsyncControlClient.connect_command(
                [sys.executable, "-c", script, str(sock_path)], timeout=WAIT
            )
        )
