"""The store's record-checking processes do not outlive a node that was killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import multiprocessing, sys, time
    from pathlib import Path
    from p2pshare.node.store import Store

    if __name__ == "__main__":
        store = Store.open(Path(sys.argv[1]), decode_workers=2)
        store.start_workers()
        for child in multiprocessing.active_children():
            print(child.pid, flush=True)
        print("ready", flush=True)
        time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_workers_exit_when_their_node_is_killed_with_sigkill(tmp_path: Path) -> None:
    script = tmp_path / "node_like.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "store.sqlite")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    watchdog = threading.Timer(60, proc.kill)  # a script that hangs ends the read loop below
    watchdog.start()
    try:
        pids: list[int] = []
        for line in proc.stdout:
            if line.strip() == "ready":
                break
            pids.append(int(line))
        assert len(pids) == 2, pids
        assert all(_alive(pid) for pid in pids)
    finally:
        watchdog.cancel()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids), "workers outlived their parent"
