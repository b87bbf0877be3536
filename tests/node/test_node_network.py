"""Several real node processes on 127.0.0.1: records travel, documents follow, crashes resume."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.nodeproc import NodeProcess, wait_for

MakeNode = Callable[[str], NodeProcess]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ids(node: NodeProcess, kind: str) -> list[str]:
    out = node.ok("list", "--kind", kind, "--json", "--limit", "0")
    return [line.split('"id": "', 1)[1].split('"', 1)[0] for line in out.splitlines() if line]


def test_line_a_b_c_records_and_document_reach_c(node_factory: MakeNode, tmp_path: Path) -> None:
    a, b, c = node_factory("a"), node_factory("b"), node_factory("c")
    for node in (a, b, c):
        node.start()
    b.ok("connect", a.address())
    c.ok("connect", b.address())
    a_id = a.json("id")["peer_id"]
    b.ok("follow", a_id)  # B fetches A's documents by itself (fetch = "followed")
    guide = tmp_path / "guide.pdf"
    guide.write_bytes(os.urandom(3_000_000))
    a.ok("share", str(guide), "--title", "Line guide", "--licence", "CC-BY-4.0")
    doc_id = _ids(a, "doc")[0]
    a.ok("recommend", doc_id, "--text", "Worth reading")
    wait_for(lambda: doc_id in _ids(c, "doc"), what="the doc record on C")
    wait_for(lambda: _ids(c, "rec"), what="the recommendation on C")
    wait_for(
        lambda: b.json("show", doc_id).get("document") == "complete",
        timeout=60,
        what="B to fetch the document",
    )
    out = tmp_path / "copy.pdf"
    got = c.cli("get", doc_id, "-o", str(out), timeout=120)
    assert got.returncode == 0, got.stderr
    assert "Traceback" not in got.stderr
    assert _sha(out) == _sha(guide)
    for node in (a, b, c):
        node.stop()


def test_node_killed_mid_download_resumes_after_restart(
    node_factory: MakeNode, tmp_path: Path
) -> None:
    a, c = node_factory("seed"), node_factory("leech")
    a.start()
    c.start()
    c.ok("connect", a.address())
    big = tmp_path / "catalogue.pdf"
    big.write_bytes(os.urandom(150 * 1024 * 1024))
    a.ok("share", str(big), "--title", "Big catalogue", "--licence", "CC0-1.0")
    doc_id = _ids(a, "doc")[0]
    wait_for(lambda: doc_id in _ids(c, "doc"), what="the doc record on C")
    root = a.json("show", doc_id)["root"]
    getter = subprocess.Popen(
        [sys.executable, "-m", "p2pshare", "get", doc_id],
        env=c.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    have = c.home / "blobs" / "partial" / f"{root}.have"
    wait_for(
        lambda: have.exists() and any(have.read_bytes()),
        timeout=60,
        what="some verified chunks on C",
    )
    c.stop(signal.SIGKILL)
    getter.wait(timeout=30)
    assert not (c.home / "blobs" / root[:2] / root).exists(), "killed too late: already complete"
    c.start()
    c.ok("connect", a.address())
    wait_for(
        lambda: c.json("show", doc_id).get("document") == "complete",
        timeout=120,
        what="the resumed download to finish",
    )
    stored = Path(c.json("show", doc_id)["path"])
    assert _sha(stored) == _sha(big)
    a.stop()
    c.stop()
