"""Where a node keeps its files, and the lock that keeps one process per data dir."""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

ENV_HOME = "P2PSHARE_HOME"


class DataDirError(Exception):
    """The data dir cannot be used; the message says what to do."""


@dataclass(frozen=True)
class DataDir:
    """Named paths inside one data dir, so no module builds them by hand."""

    root: Path

    @property
    def identity(self) -> Path:
        return self.root / "identity.key"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def store(self) -> Path:
        return self.root / "store.sqlite"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def peers(self) -> Path:
        return self.root / "peers.json"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def log(self) -> Path:
        return self.root / "node.log"

    @property
    def control_dir(self) -> Path:
        return self.root / "run"

    @property
    def control_socket(self) -> Path:
        return self.control_dir / "control.sock"

    def ensure(self) -> None:
        """Create the data dir, readable by its owner only."""
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise DataDirError(f"cannot create data dir {self.root}: {exc.strerror}") from exc


def resolve_data_dir(explicit: str | os.PathLike[str] | None = None) -> DataDir:
    """``--data-dir``, else ``$P2PSHARE_HOME``, else the platform's user data dir."""
    if explicit:
        return DataDir(Path(explicit).expanduser().resolve())
    env = os.environ.get(ENV_HOME)
    if env:
        return DataDir(Path(env).expanduser().resolve())
    return DataDir(Path(platformdirs.user_data_dir("p2pshare", appauthor=False)))


class DataDirLock:
    """An exclusive ``flock`` on ``DIR/lock``; the kernel drops it if the process dies."""

    def __init__(self, data_dir: DataDir) -> None:
        self._data_dir = data_dir
        self._fd: int | None = None

    def acquire(self) -> None:
        self._data_dir.ensure()
        path = self._data_dir.lock
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                who = f" (pid {holder})" if holder else ""
                raise DataDirError(
                    f"another p2pshare process{who} is using {self._data_dir.root}; stop it first, "
                    "or use a different --data-dir"
                ) from None
            raise DataDirError(f"cannot lock {path}: {exc.strerror}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None
