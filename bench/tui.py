"""Benchmark: how fast the terminal UI paints and scrolls, on a real node it starts.

Runs the real app (P2PShareApp with the real Launch: it starts ``p2pshare node`` as a child on a
temporary data dir and connects over the control socket) headless at 120x40, in this process:

- ``tui_first_paint``: from importing the app module (``tui_import``, included) and creating the
  app to its first screen mounted and drawn (Textual's ``run_test`` returns then); the node is
  still starting in the background at that point, so this is what a person sees first. Target
  <= 1 s. In the big-store run the module is already imported, so its first paint leaves the
  import out. Beside it: the wall time of ``python -m p2pshare --help`` (interpreter + CLI
  imports), the floor under any launch.
- ``tui_feed_ready``: from creating the app until the feed shows the node's first page (node
  start-up, connect, first ``feed`` call included).
- with ``--records`` records in the store (default 100,000 signed recommendations by 16
  authors, two of whom the node's identity follows, made and ingested before timing):
  ``tui_scroll``: ``--lines`` (default 1,000) presses of the down key on the feed's virtual list,
  which fetches 100 records at a time from the node as the cursor nears them; total and per
  line. ``tui_jump_end``: the End key, until the last record of 100k is on screen.
- ``feed_page``: the store's feed query for one page of 100 at a few depths, and with the
  whole-feed count the first page does (the node adds making the views and the socket).

Run: ``.venv/bin/python bench/tui.py [--records 100000] [--lines 1000]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import emit
from sync import generate
from textual.app import App, ComposeResult
from textual.widgets import DataTable, Static

from p2pshare.node.datadir import DataDir
from p2pshare.node.identity import load_key_file
from p2pshare.node.store import Store
from p2pshare.protocol.records import FOLLOW, create_record, decode_record, now_ms
from p2pshare.tui.recordlist import PAGE

TARGET_FIRST_PAINT_S = 1.0
SIZE = (120, 40)
WAIT_S = 120.0


def init_data_dir(root: Path, wires: list[bytes], follows: int = 0) -> DataDir:
    subprocess.run(
        [sys.executable, "-m", "p2pshare", "--data-dir", str(root), "init", "--name", "Bench"],
        check=True,
        capture_output=True,
    )
    config = root / "config.toml"
    text = config.read_text().replace("/ip4/0.0.0.0/tcp/4011", "/ip4/127.0.0.1/tcp/0")
    config.write_text(text.replace("mdns = true", "mdns = false"))
    data_dir = DataDir(root)
    if wires:
        me = load_key_file(data_dir.identity)
        authors = sorted({decode_record(w, verify=False).author for w in wires[:100]})
        mine = [create_record(me.signing_key, FOLLOW, {"target": a}) for a in authors[:follows]]
        with Store.open(data_dir.store) as store:
            store.ingest(mine)
            for start in range(0, len(wires), 5000):
                store.ingest_wire(wires[start : start + 5000], now=now_ms())
    return data_dir


def feed_pages(data_dir: DataDir) -> dict[str, float]:
    """Milliseconds for one page of the feed query at a few depths (best of 3)."""
    me = load_key_file(data_dir.identity).public_key
    out: dict[str, float] = {}
    with Store.open(data_dir.store, decode_workers=0) as store:
        first = store.feed(me, limit=PAGE, offset=0)
        total = first.total or 0
        cases = {"first_counted": (0, True), "offset_1000": (1000, False)}
        cases["offset_20000"] = (20_000, False)
        cases["last"] = (max(0, total - PAGE), False)
        for name, (offset, count) in cases.items():
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                store.feed(me, limit=PAGE, offset=offset, upto=first.snapshot, count=count)
                best = min(best, time.perf_counter() - started)
            out[name] = 1000 * best
    return out


async def run_app(data_dir: DataDir, lines: int) -> dict[str, float]:
    started = time.perf_counter()
    from p2pshare.tui.app import P2PShareApp
    from p2pshare.tui.launch import Launch, node_argv

    imported = time.perf_counter()
    launch = Launch(socket=data_dir.control_socket, node_argv=node_argv(data_dir.root))
    app = P2PShareApp(launch.connect, launch.disconnect)
    out: dict[str, float] = {"import_s": imported - started}
    async with app.run_test(size=SIZE) as pilot:
        out["first_paint_s"] = time.perf_counter() - started
        while not app.feed.loaded:  # the first page has arrived
            if time.perf_counter() - started > WAIT_S:
                status = app.feed.query_one("#status", Static).render()
                raise SystemExit(f"the feed did not load in {WAIT_S:g} s: {status}")
            await pilot.pause(0.01)
        out["feed_ready_s"] = time.perf_counter() - started
        rows = app.feed.rows
        out["feed_total"] = rows.total
        if lines:
            scroll_start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(lines):
                await pilot.press("down")
            await until_shown(pilot, rows, lines)
            out["scroll_s"] = time.perf_counter() - scroll_start
            out["scroll_cpu_s"] = time.process_time() - cpu_start
            out["rows_held"] = len(rows.views())
            jump_start = time.perf_counter()
            await pilot.press("end")
            await until_shown(pilot, rows, rows.total - 1)
            out["jump_end_s"] = time.perf_counter() - jump_start
    return out


async def until_shown(pilot: Any, rows: Any, row: int) -> None:
    """Until the cursor is on ``row`` and that record is loaded (drawn, not "…")."""
    waited = time.perf_counter()
    while rows.cursor != row or rows.view_at(row) is None:
        if time.perf_counter() - waited > WAIT_S:
            raise SystemExit(f"the cursor stopped at {rows.cursor}, wanted {row}")
        await pilot.pause(0.005)


class PlainTable(App[None]):
    """The baseline: a bare DataTable already holding every row, nothing fetched."""

    def __init__(self, rows: int) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        yield DataTable(cursor_type="row")

    def on_mount(self) -> None:
        table: DataTable[str] = self.query_one(DataTable)
        table.add_columns("what", "title", "by", "trust", "community", "licence", "age")
        for i in range(self.rows):
            table.add_row("document", f"Guide number {i}", "Anna", "", "public", "CC0-1.0", "1d")
        table.focus()


async def scroll_plain(lines: int) -> tuple[float, float]:
    """Wall and CPU seconds for ``lines`` down keys on the bare DataTable."""
    app = PlainTable(lines + 50)
    async with app.run_test(size=SIZE) as pilot:
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(lines):
            await pilot.press("down")
        return time.perf_counter() - started, time.process_time() - cpu


def launch_in_tmux(data_dir: DataDir) -> dict[str, float] | None:
    """Wall time from starting ``python -m p2pshare`` in a real terminal (a private tmux
    server) to the first screen, and to the feed; None without tmux."""
    if shutil.which("tmux") is None:
        return None
    name = f"p2ps-bench-{os.getpid()}"
    conf = data_dir.root / "tmux.conf"
    conf.write_text("set -g escape-time 0\n")
    tmux = ["tmux", "-L", name, "-f", str(conf)]
    command = f"env P2PSHARE_HOME={data_dir.root} {sys.executable} -m p2pshare"
    out: dict[str, float] = {}
    started = time.perf_counter()
    subprocess.run([*tmux, "new-session", "-d", "-x", "120", "-y", "40", command], check=True)
    try:
        while "records" not in out:
            screen = subprocess.run(
                [*tmux, "capture-pane", "-p"], capture_output=True, text=True
            ).stdout
            now = time.perf_counter() - started
            if "p2pshare" in screen:
                out.setdefault("paint", now)
            if " records" in screen or " record " in screen:
                out["records"] = now
            if now > WAIT_S:
                raise SystemExit(f"p2pshare did not show the feed in tmux: {screen}")
            time.sleep(0.005)
        subprocess.run([*tmux, "send-keys", "q"], check=True)
        deadline = time.perf_counter() + WAIT_S
        while data_dir.control_socket.exists() and time.perf_counter() < deadline:
            time.sleep(0.05)  # the node the TUI started stops with it
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
    return out


def help_wall_s() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "p2pshare", "--help"], check=True, capture_output=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    emit("cli_help_wall", help_wall_s(), "s", note="python -m p2pshare --help: the floor")

    with tempfile.TemporaryDirectory(prefix="p2pshare-bench-tui-") as tmp:
        empty = init_data_dir(Path(tmp) / "empty", [])
        fresh = asyncio.run(run_app(empty, 0))
        launched = launch_in_tmux(empty)
    if launched is not None:
        emit(
            "tui_launch_to_first_paint",
            launched["paint"],
            "s",
            target=TARGET_FIRST_PAINT_S,
            **{"pass": launched["paint"] <= TARGET_FIRST_PAINT_S},
            note="python -m p2pshare in a 120x40 tmux until the first screen shows (5 ms polls)",
        )
        emit(
            "tui_launch_to_feed",
            launched["records"],
            "s",
            note="same, until the feed from the node it started shows (node start-up included)",
        )
    emit("tui_import", fresh["import_s"], "s")
    emit(
        "tui_first_paint",
        fresh["first_paint_s"],
        "s",
        target=TARGET_FIRST_PAINT_S,
        **{"pass": fresh["first_paint_s"] <= TARGET_FIRST_PAINT_S},
        note="app module imported and app created -> first screen drawn; the node starts behind it",
    )
    emit("tui_feed_ready_empty_store", fresh["feed_ready_s"], "s", note="includes node start")

    made = time.perf_counter()
    wires = generate(args.records, args.seed)
    emit("generate", time.perf_counter() - made, "s", records=args.records)
    with tempfile.TemporaryDirectory(prefix="p2pshare-bench-tui-") as tmp:
        full = init_data_dir(Path(tmp) / "full", wires, follows=2)
        for name, ms in feed_pages(full).items():
            emit(f"feed_page_{name}", ms, "ms", records=args.records, page=PAGE)
        big = asyncio.run(run_app(full, args.lines))
    emit("tui_first_paint_big_store", big["first_paint_s"], "s", records=args.records)
    emit("tui_feed_ready_big_store", big["feed_ready_s"], "s", records=args.records)
    plain, plain_cpu = asyncio.run(scroll_plain(args.lines))
    emit(
        "plain_datatable_scroll",
        plain,
        "s",
        lines=args.lines,
        ms_per_line=round(1000 * plain / args.lines, 2),
        cpu_ms_per_line=round(1000 * plain_cpu / args.lines, 2),
        note="the same key presses on a bare DataTable holding every row: Pilot waits for the"
        " CPU to go idle after each key, so the wall time is mostly the method's floor",
    )
    emit("tui_scroll_vs_plain", big["scroll_s"] / plain, "ratio", lines=args.lines)
    emit(
        "tui_scroll",
        big["scroll_s"],
        "s",
        lines=args.lines,
        ms_per_line=round(1000 * big["scroll_s"] / args.lines, 2),
        rows_held=int(big["rows_held"]),
        records=int(big["feed_total"]),
    )
    emit(
        "tui_scroll_cpu_per_line",
        1000 * big["scroll_cpu_s"] / args.lines,
        "ms",
        lines=args.lines,
        target=1000 / 30,
        **{"pass": 1000 * big["scroll_cpu_s"] / args.lines <= 1000 / 30},
        note="the app's own work per down key (this process's CPU time, Pilot's included);"
        " under 33 ms keeps up with a held-down key's 30 repeats a second",
    )
    emit(
        "tui_jump_end",
        big["jump_end_s"],
        "s",
        records=int(big["feed_total"]),
        note="End key until the last record is drawn: one page fetched from the far end",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
