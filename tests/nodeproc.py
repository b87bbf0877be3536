"""Real ``p2pshare node`` processes for end-to-end tests, driven through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from p2pshare.control.client import ControlClient
from p2pshare.control.errors import ControlConnectionError

READY_TIMEOUT = 60.0


@dataclass
class NodeProcess:
    home: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "P2PSHARE_HOME": str(self.home)}

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "p2pshare", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )

    def ok(self, *args: str) -> str:
        result = self.cli(*args)
        assert result.returncode == 0, f"{args}: {result.stderr}"
        assert "Traceback" not in result.stderr
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def jsonl(self, *args: str) -> list[Any]:
        """One JSON object per output line (``list --json``, ``search --json``)."""
        return [json.loads(line) for line in self.ok(*args, "--json").splitlines() if line]

    def init(self, name: str) -> None:
        self.ok("init", "--name", name)

    def start(self, *args: str) -> None:
        log = open(self.home / "stdout.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "p2pshare",
                "node",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--no-mdns",
                *self.extra_args,
                *args,
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        socket_path = self.home / "run" / "control.sock"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited with {self.proc.returncode}: {self.log()}")
            try:
                with ControlClient.connect(socket_path, timeout=5):
                    return
            except ControlConnectionError:
                time.sleep(0.1)
        raise AssertionError(f"node not ready in {READY_TIMEOUT} s: {self.log()}")

    def log(self) -> str:
        path = self.home / "stdout.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def address(self) -> str:
        status = self.json("status")
        return str(status["listen"][0])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, float]:
        """Send ``sig``; return (exit code, seconds it took to exit)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"node did not stop within {timeout} s: {self.log()}") from None
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Callable[[str], NodeProcess]]:
    nodes: list[NodeProcess] = []

    def make(name: str) -> NodeProcess:
        node = NodeProcess(tmp_path / name)
        node.init(name)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.kill()
