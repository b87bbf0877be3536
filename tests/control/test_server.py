"""The control server on a real unix socket, spoken to frame by frame by a raw trio client."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from p2pshare.control.errors import ControlError, ControlServerError, NodeAlreadyRunning
from p2pshare.control.server import ControlServer, Handler, peer_uid, require_param
from p2pshare.protocol.control_wire import (
    HEADER,
    PROTOCOL_VERSION,
    ErrorCode,
    FrameDecoder,
    encode_frame,
    hello_params,
)

WAIT = 10  # seconds any single wait may take before the test fails


class Gate:
    """A handler that blocks until the test opens it, counting who is inside."""

    def __init__(self) -> None:
        self.entered = 0
        self.opened = trio.Event()

    async def __call__(self, params: dict[str, Any]) -> Any:
        self.entered += 1
        await self.opened.wait()
        return "gate"


def make_server(gate: Gate | None = None, **options: Any) -> ControlServer:
    async def echo(params: dict[str, Any]) -> Any:
        return params

    async def crash(params: dict[str, Any]) -> Any:
        raise RuntimeError("kaboom")

    async def missing(params: dict[str, Any]) -> Any:
        raise ControlError(ErrorCode.NOT_FOUND, "no such record")

    async def typed(params: dict[str, Any]) -> Any:
        return require_param(params, "n", int) * 2

    async def unsendable(params: dict[str, Any]) -> Any:
        return {"x": object()}

    handlers: dict[str, Handler] = {
        "echo": echo,
        "crash": crash,
        "missing": missing,
        "typed": typed,
        "unsendable": unsendable,
        "slow": gate or Gate(),
    }
    return ControlServer(handlers, lambda: {"peer_id": "peer-test", "node": "test"}, **options)


class RawClient:
    """Speaks frames directly, so tests can send what a real client never would."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder()
        self.pending: list[dict[str, Any]] = []
        self.next_id = 1

    @classmethod
    async def open(cls, path: Path, *, hello: bool = True) -> RawClient:
        client = cls(await trio.open_unix_socket(str(path)))
        if hello:
            response = await client.call("hello", **hello_params("test"))
            assert "result" in response, response
        return client

    async def send(self, message: dict[str, Any]) -> None:
        await self.stream.send_all(encode_frame(message))

    async def request(self, method: str, **params: Any) -> int:
        request_id = self.next_id
        self.next_id += 1
        await self.send({"id": request_id, "method": method, "params": params})
        return request_id

    async def recv(self) -> dict[str, Any]:
        with trio.fail_after(WAIT):
            while not self.pending:
                data = await self.stream.receive_some(65536)
                assert data, "the server closed the connection"
                self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        request_id = await self.request(method, **params)
        response = await self.recv()
        assert response.get("id") == request_id, response
        return response

    async def closed(self) -> bool:
        """Whether the server closes the connection (after any frames still in flight)."""
        with trio.fail_after(WAIT):
            try:
                while data := await self.stream.receive_some(65536):
                    self.pending.extend(self.decoder.feed(data))
            except trio.BrokenResourceError:  # ECONNRESET: it closed with our bytes unread
                pass
        return True

    async def aclose(self) -> None:
        await self.stream.aclose()


@pytest.fixture
def sock_path() -> Iterator[Path]:
    """A socket path well under the 108-byte limit (pytest's tmp_path can be too long)."""
    root = Path(tempfile.mkdtemp(prefix="p2c-", dir="/tmp"))
    yield root / "run" / "control.sock"
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def gate() -> Gate:
    return Gate()


@pytest.fixture
async def server(
    nursery: trio.Nursery, sock_path: Path, gate: Gate
) -> AsyncIterator[ControlServer]:
    server = make_server(gate)
    await nursery.start(server.serve_unix, sock_path)
    yield server
    gate.opened.set()
    server.close()


# --- hello ------------------------------------------------------------------------------------


async def test_hello_reports_protocol_version_and_node_info(
    server: ControlServer, sock_path: Path
) -> None:
    client = await RawClient.open(sock_path, hello=False)
    response = await client.call("hello", version=PROTOCOL_VERSION, client="test")
    result = response["result"]
    assert result["version"] == PROTOCOL_VERSION
    assert result["peer_id"] == "peer-test"
    assert "echo" in result["methods"]
    assert "subscribe" in result["methods"]


async def test_requests_before_hello_are_refused(server: ControlServer, sock_path: Path) -> None:
    client = await RawClient.open(sock_path, hello=False)
    response = await client.call("echo", a=1)
    assert response["error"]["code"] == ErrorCode.HELLO_REQUIRED
    await client.call("hello", **hello_params("late"))
    assert (await client.call("echo", a=1))["result"] == {"a": 1}


async def test_wrong_protocol_version_is_refused_and_closed(
    server: ControlServer, sock_path: Path
) -> None:
    client = await RawClient.open(sock_path, hello=False)
    response = await client.call("hello", version=PROTOCOL_VERSION + 1, client="future")
    assert response["error"]["code"] == ErrorCode.VERSION_MISMATCH
    assert f"version {PROTOCOL_VERSION}" in response["error"]["message"]
    assert await client.closed()


# --- requests ---------------------------------------------------------------------------------


async def test_call_returns_the_handler_result(server: ControlServer, sock_path: Path) -> None:
    client = await RawClient.open(sock_path)
    response = await client.call("echo", text="héllo", blob=b"\x00\xff", n=[1, 2])
    assert response["result"] == {"text": "héllo", "blob": b"\x00\xff", "n": [1, 2]}


async def test_unknown_method_is_an_error(server: ControlServer, sock_path: Path) -> None:
    client = await RawClient.open(sock_path)
    response = await client.call("no-such-method")
    assert response["error"]["code"] == ErrorCode.UNKNOWN_METHOD


async def test_control_error_from_a_handler_keeps_its_code_and_message(
    server: ControlServer, sock_path: Path
) -> None:
    client = await RawClient.open(sock_path)
    response = await client.call("missing")
    assert response["error"] == {"code": "not-found", "message": "no such record"}
    bad = await client.call("typed", n="two")
    assert bad["error"]["code"] == ErrorCode.INVALID_PARAMS
    assert (await client.call("typed", n=2))["result"] == 4


async def test_handler_crash_is_an_internal_error_and_the_connection_stays_up(
    server: ControlServer, sock_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = await RawClient.open(sock_path)
    response = await client.call("crash")
    assert response["error"]["code"] == ErrorCode.INTERNAL
    assert "kaboom" in response["error"]["message"]
    assert any(r.exc_info and "kaboom" in str(r.exc_info[1]) for r in caplog.records)
    assert (await client.call("echo", still="up"))["result"] == {"still": "up"}


async def test_unsendable_result_is_an_internal_error_not_a_broken_stream(
    server: ControlServer, sock_path: Path
) -> None:
    client = await RawClient.open(sock_path)
    response = await client.call("unsendable")
    assert response["error"]["code"] == ErrorCode.INTERNAL
    assert (await client.call("echo"))["result"] == {}


async def test_bad_envelope_gets_bad_request_and_the_connection_stays_up(
    server: ControlServer, sock_path: Path
) -> None:
    client = await RawClient.open(sock_path)
    await client.send({"id": 9, "params": {}})
    response = await client.recv()
    assert response["id"] == 9
    assert response["error"]["code"] == ErrorCode.BAD_REQUEST
    assert (await client.call("echo"))["result"] == {}


async def test_slow_request_does_not_hold_up_a_later_one(
    server: ControlServer, sock_path: Path, gate: Gate
) -> None:
    client = await RawClient.open(sock_path)
    slow_id = await client.request("slow")
    fast = await client.call("echo", fast=True)
    assert fast["result"] == {"fast": True}
    gate.opened.set()
    assert await client.recv() == {"id": slow_id, "result": "gate"}


async def test_requests_in_flight_per_client_are_bounded(
    nursery: trio.Nursery, sock_path: Path
) -> None:
    gate = Gate()
    server = make_server(gate, max_in_flight=2)
    await nursery.start(server.serve_unix, sock_path)
    client = await RawClient.open(sock_path)
    for _ in range(3):
        await client.request("slow")
    await trio.testing.wait_all_tasks_blocked()
    assert gate.entered == 2  # the third waits, unread, until a slot frees
    gate.opened.set()
    answers = [await client.recv() for _ in range(3)]
    assert [a["result"] for a in answers] == ["gate"] * 3
    assert gate.entered == 3
    server.close()


async def test_in_flight_answers_are_sent_after_the_client_half_closes(
    nursery: trio.Nursery,
) -> None:
    gate = Gate()
    server = make_server(gate)
    ours, theirs = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, theirs)
    client = RawClient(ours)
    await client.call("hello", **hello_params("test"))
    slow_id = await client.request("slow")
    await ours.send_eof()
    await trio.testing.wait_all_tasks_blocked()
    gate.opened.set()
    assert await client.recv() == {"id": slow_id, "result": "gate"}
    assert await client.closed()


# --- broken input -----------------------------------------------------------------------------


async def test_garbage_bytes_get_an_error_frame_and_close_and_the_server_carries_on(
    server: ControlServer, sock_path: Path
) -> None:
    client = await RawClient.open(sock_path)
    await client.stream.send_all(HEADER.pack(3) + b"\xc1\xc1\xc1")
    response = await client.recv()
    assert response["id"] is None
    assert response["error"]["code"] == ErrorCode.PROTOCOL_ERROR
    assert await client.closed()
    other = await RawClient.open(sock_path)
    assert (await other.call("echo", ok=1))["result"] == {"ok": 1}


async def test_non_map_frame_is_refused_and_closed(server: ControlServer, sock_path: Path) -> None:
    client = await RawClient.open(sock_path)
    await client.stream.send_all(HEADER.pack(1) + b"\x90")  # an empty array
    response = await client.recv()
    assert response["error"]["code"] == ErrorCode.PROTOCOL_ERROR
    assert await client.closed()


async def test_oversized_frame_length_closes_without_waiting_for_the_body(
    server: ControlServer, sock_path: Path
) -> None:
    client = await RawClient.open(sock_path)
    await client.stream.send_all(HEADER.pack(server.max_frame + 1))  # and no body at all
    response = await client.recv()
    assert response["error"]["code"] == ErrorCode.PROTOCOL_ERROR
    assert "exceeds" in response["error"]["message"]
    assert await client.closed()
    assert (await (await RawClient.open(sock_path)).call("echo"))["result"] == {}


# --- events -----------------------------------------------------------------------------------


async def test_events_fan_out_to_each_subscribed_client(
    server: ControlServer, sock_path: Path
) -> None:
    everything = await RawClient.open(sock_path)
    records_only = await RawClient.open(sock_path)
    never = await RawClient.open(sock_path)
    assert (await everything.call("subscribe", events="*"))["result"] == {"events": "*"}
    assert (await records_only.call("subscribe", events=["record-added"]))["result"] == {
        "events": ["record-added"]
    }
    server.publish("peer-up", {"peer": "p1"})
    server.publish("record-added", {"id": "r1"})
    assert await everything.recv() == {"event": "peer-up", "data": {"peer": "p1"}}
    assert await everything.recv() == {"event": "record-added", "data": {"id": "r1"}}
    assert await records_only.recv() == {"event": "record-added", "data": {"id": "r1"}}
    # the next frame each gets is the answer to a new call, not a missed event
    assert "result" in await records_only.call("echo")
    assert "result" in await never.call("echo")


async def test_subscribe_to_an_unknown_event_name_is_invalid_params(
    nursery: trio.Nursery, sock_path: Path
) -> None:
    server = make_server(event_names=["record-added"])
    await nursery.start(server.serve_unix, sock_path)
    client = await RawClient.open(sock_path)
    response = await client.call("subscribe", events=["record-addded"])
    assert response["error"]["code"] == ErrorCode.INVALID_PARAMS
    with pytest.raises(ValueError):
        server.publish("record-addded", {})
    server.close()


async def test_stuck_client_never_blocks_publish_and_is_told_how_many_it_lost(
    nursery: trio.Nursery, sock_path: Path
) -> None:
    server = make_server(queue_size=50)
    await nursery.start(server.serve_unix, sock_path)
    stuck = await RawClient.open(sock_path)
    await stuck.call("subscribe", events="*")
    total = 10_000
    payload = b"x" * 1024
    for i in range(total):
        server.publish("transfer-progress", {"n": i, "pad": payload})
        if i % 500 == 0:
            await trio.testing.wait_all_tasks_blocked()  # let the pump fill the socket buffers
    dropped_at_server = server.dropped_events()
    assert dropped_at_server > total // 2
    # the node still serves others while this client reads nothing
    assert "result" in await (await RawClient.open(sock_path)).call("echo")

    received: list[int] = []
    dropped = 0
    while len(received) + dropped < total:
        message = await stuck.recv()
        if message["event"] == "dropped":
            dropped += message["data"]["count"]
        else:
            received.append(message["data"]["n"])
    assert dropped == dropped_at_server
    assert received == sorted(received)  # order is kept
    assert "result" in await stuck.call("echo")


# --- the socket -------------------------------------------------------------------------------


async def test_socket_is_0600_in_a_0700_directory(server: ControlServer, sock_path: Path) -> None:
    assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
    assert stat.S_IMODE(os.lstat(sock_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(sock_path.parent).st_mode) == 0o700


async def test_a_loose_socket_directory_is_tightened(
    nursery: trio.Nursery, sock_path: Path
) -> None:
    sock_path.parent.mkdir(mode=0o755)
    os.chmod(sock_path.parent, 0o755)
    server = make_server()
    await nursery.start(server.serve_unix, sock_path)
    assert stat.S_IMODE(os.stat(sock_path.parent).st_mode) == 0o700
    server.close()


async def test_a_second_server_on_a_live_socket_is_refused(
    server: ControlServer, sock_path: Path
) -> None:
    with pytest.raises(NodeAlreadyRunning, match="already running"):
        await make_server().serve_unix(sock_path)
    assert "result" in await (await RawClient.open(sock_path)).call("echo")


async def test_a_stale_socket_file_is_replaced(nursery: trio.Nursery, sock_path: Path) -> None:
    sock_path.parent.mkdir(mode=0o700)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(sock_path))  # bound, never listening: what a killed node leaves
    dead.close()
    assert sock_path.exists()
    server = make_server()
    await nursery.start(server.serve_unix, sock_path)
    assert "result" in await (await RawClient.open(sock_path)).call("echo")
    server.close()


async def test_a_file_that_is_not_a_socket_is_left_alone(sock_path: Path) -> None:
    sock_path.parent.mkdir(mode=0o700)
    sock_path.write_text("precious")
    with pytest.raises(ControlServerError, match="not a socket"):
        await make_server().serve_unix(sock_path)
    assert sock_path.read_text() == "precious"


async def test_socket_file_is_removed_when_the_server_stops(sock_path: Path) -> None:
    server = make_server()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_unix, sock_path)
        assert sock_path.exists()
        nursery.cancel_scope.cancel()
    assert not sock_path.exists()


async def test_close_ends_client_connections_promptly(
    server: ControlServer, sock_path: Path
) -> None:
    clients = [await RawClient.open(sock_path) for _ in range(2)]
    await clients[0].request("slow")  # one with a request in flight
    await trio.testing.wait_all_tasks_blocked()
    server.close()
    for client in clients:
        assert await client.closed()
    await trio.testing.wait_all_tasks_blocked()
    assert not sock_path.exists()
    with pytest.raises(OSError):
        await trio.open_unix_socket(str(sock_path))


async def test_handle_stream_serves_any_trio_byte_stream(nursery: trio.Nursery) -> None:
    server = make_server()
    ours, theirs = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, theirs)
    client = RawClient(ours)
    await client.call("hello", **hello_params("memory"))
    assert (await client.call("echo", via="memory"))["result"] == {"via": "memory"}
    await client.aclose()


def test_reserved_method_names_cannot_be_handlers() -> None:
    async def fake(params: dict[str, Any]) -> Any:
        return None

    with pytest.raises(ValueError):
        ControlServer({"hello": fake}, dict)


# --- other users ------------------------------------------------------------------------------


def test_peer_uid_of_a_socketpair_is_our_own_uid() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        assert peer_uid(left) == os.getuid()


_OTHER_USER_CLIENT = """
import os, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(10)
os.setgid(65534)
os.setuid(65534)
try:
    sock.connect(sys.argv[1])
except PermissionError:
    print("permission-denied")
    sys.exit()
try:
    sock.sendall(bytes.fromhex(sys.argv[2]))
    data = sock.recv(65536)
except (BrokenPipeError, ConnectionResetError):
    data = b""
print("answered" if data else "closed")
"""


async def _connect_as_nobody(path: Path) -> str:
    hello = encode_frame({"id": 1, "method": "hello", "params": hello_params("intruder")})
    with trio.fail_after(WAIT):
        result = await trio.run_process(
            [sys.executable, "-c", _OTHER_USER_CLIENT, str(path), hello.hex()],
            capture_stdout=True,
        )
    return result.stdout.decode().strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can run a client as another uid")
async def test_another_uid_is_kept_out_by_the_directory_and_by_peer_credentials(
    server: ControlServer, sock_path: Path
) -> None:
    os.chmod(sock_path.parent.parent, 0o711)  # the tempdir above run/ lets others pass
    assert await _connect_as_nobody(sock_path) == "permission-denied"  # run/ is 0700

    os.chmod(sock_path.parent, 0o711)  # take away both file-mode guards ...
    os.chmod(sock_path, 0o666)
    assert await _connect_as_nobody(sock_path) == "closed"  # ... SO_PEERCRED still refuses
    assert server.refused_peers == 1
    assert "result" in await (await RawClient.open(sock_path)).call("echo")
