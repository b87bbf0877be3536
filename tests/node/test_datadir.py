"""One process per data dir, and the order in which the data dir is chosen."""

import subprocess
import sys
from pathlib import Path

import pytest

from p2pshare.node.datadir import DataDir, DataDirError, DataDirLock, resolve_data_dir


def test_explicit_dir_beats_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2PSHARE_HOME", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "flag").root == tmp_path / "flag"
    assert resolve_data_dir(None).root == tmp_path / "env"


def test_platform_dir_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("P2PSHARE_HOME", raising=False)
    assert resolve_data_dir(None).root.name == "p2pshare"


def test_second_process_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    data_dir = DataDir(tmp_path / "data")
    with DataDirLock(data_dir):
        probe = (
            "import sys\n"
            "from p2pshare.node.datadir import DataDir, DataDirLock, DataDirError\n"
            "from pathlib import Path\n"
            f"try:\n    DataDirLock(DataDir(Path({str(data_dir.root)!r}))).acquire()\n"
            "except DataDirError as e:\n    print(e); sys.exit(3)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 3
    assert "another p2pshare process" in result.stdout
    assert "pid" in result.stdout


def test_lock_is_released_for_the_next_user(tmp_path: Path) -> None:
    data_dir = DataDir(tmp_path / "data")
    with DataDirLock(data_dir):
        pass
    with DataDirLock(data_dir):
        pass


def test_second_lock_in_one_process_is_refused(tmp_path: Path) -> None:
    data_dir = DataDir(tmp_path / "data")
    with DataDirLock(data_dir), pytest.raises(DataDirError):
        DataDirLock(data_dir).acquire()


def test_data_dir_is_private(tmp_path: Path) -> None:
    data_dir = DataDir(tmp_path / "data")
    data_dir.ensure()
    assert data_dir.root.stat().st_mode & 0o077 == 0
