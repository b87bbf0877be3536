"""Fixtures shared across the suite."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from p2pshare.node.datadir import DataDir
from p2pshare.node.identity import Identity, write_key_file

pytest_plugins = ["tests.netfixtures", "tests.nodeproc"]

if TYPE_CHECKING:
    from p2pshare.node.library import Library


@dataclass
class CliResult:
    code: int
    out: str
    err: str


CliRunner = Callable[..., CliResult]


@pytest.fixture
def run_cli(tmp_path: Path) -> CliRunner:
    """Run the real ``p2pshare`` command as a process, on a data dir of its own by default."""
    default_dir = tmp_path / "home"

    def run(*args: str, data_dir: Path | None = None, timeout: float = 120) -> CliResult:
        env = {**os.environ, "P2PSHARE_HOME": str(data_dir or default_dir)}
        proc = subprocess.run(
            [sys.executable, "-m", "p2pshare", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def make_library(tmp_path: Path) -> Iterator[Callable[..., Library]]:
    """Open real libraries (identity + SQLite + blobs) in fresh data dirs; closed at teardown."""
    opened: list[Library] = []

    def make(name: str = "lib") -> Library:
        data_dir = DataDir(tmp_path / name)
        data_dir.ensure()
        write_key_file(data_dir.identity, Identity.generate())
        from p2pshare.node.library import Library

        library = Library.open(data_dir)
        opened.append(library)
        return library

    yield make
    for library in opened:
        library.close()
