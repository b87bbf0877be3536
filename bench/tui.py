"""Benchmark: how fast the terminal UI paints and scrolls, on a real node it starts.

Runs the real app (P2PShareApp with the real Launch: it starts ``p2pshare node`` as a child on a
temporary data dir and connects over the control socket) headless at 120x40, in this process:

- ``tui_first_paint``: from creating the app to its first screen mounted and drawn (Textual's
  ``run_test`` returns then); the node is still starting in the background at that point, so
  this is what a person sees first. Target <= 1 s. Beside it: the import time of the app module
  and the wall time of ``python -m p2pshare --help`` (interpreter + CLI imports), the floor
  under any launch.
- ``tui_feed_ready``: from creating the app until the feed shows the node's first page (node
  start-up, connect, first ``feed`` call included).
- with ``--records`` records in the store (default 100,000, signed, made and ingested before
  timing): ``tui_scroll``: ``--lines`` (default 1,000) presses of the down key, with the feed
  paging in 200 records at a time from the node as the cursor nears the end; total and per line.

Run: ``.venv/bin/python bench/tui.py [--records 100000] [--lines 1000]``
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import emit
from sync import generate
from textual.app import App, ComposeResult
from textual.widgets import DataTable, Static

from p2pshare.node.datadir import DataDir
from p2pshare.node.store import Store
from p2pshare.protocol.records import now_ms

TARGET_FIRST_PAINT_S = 1.0
SIZE = (120, 40)
WAIT_S = 120.0


def init_data_dir(root: Path, wires: list[bytes]) -> DataDir:
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
        with Store.open(data_dir.store) as store:
            for start in range(0, len(wires), 5000):
                store.ingest_wire(wires[start : start + 5000], now=now_ms())
    return data_dir


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
        status = app.feed.query_one("#status", Static)
        while "records" not in str(status.render()):  # the first page has arrived
            if time.perf_counter() - started > WAIT_S:
                raise SystemExit(f"the feed did not load in {WAIT_S:g} s: {status.render()}")
            await pilot.pause(0.01)
        out["feed_ready_s"] = time.perf_counter() - started
        out["first_page_rows"] = app.feed.table.row_count
        if lines:
            scroll_start = time.perf_counter()
            for _ in range(lines):
                await pilot.press("down")
            while app.feed.table.cursor_row < lines:
                if time.perf_counter() - scroll_start > WAIT_S:
                    raise SystemExit(f"the cursor stopped at {app.feed.table.cursor_row}")
                await pilot.pause(0.01)
            out["scroll_s"] = time.perf_counter() - scroll_start
            out["rows_loaded"] = app.feed.table.row_count
    return out


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


async def scroll_plain(lines: int) -> float:
    app = PlainTable(lines + 50)
    async with app.run_test(size=SIZE) as pilot:
        started = time.perf_counter()
        for _ in range(lines):
            await pilot.press("down")
        return time.perf_counter() - started


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
    emit("tui_import", fresh["import_s"], "s")
    emit(
        "tui_first_paint",
        fresh["first_paint_s"],
        "s",
        target=TARGET_FIRST_PAINT_S,
        **{"pass": fresh["first_paint_s"] <= TARGET_FIRST_PAINT_S},
        note="app created -> first screen drawn; the node starts behind it",
    )
    emit("tui_feed_ready_empty_store", fresh["feed_ready_s"], "s", note="includes node start")

    made = time.perf_counter()
    wires = generate(args.records, args.seed)
    emit("generate", time.perf_counter() - made, "s", records=args.records)
    with tempfile.TemporaryDirectory(prefix="p2pshare-bench-tui-") as tmp:
        full = init_data_dir(Path(tmp) / "full", wires)
        big = asyncio.run(run_app(full, args.lines))
    emit("tui_first_paint_big_store", big["first_paint_s"], "s", records=args.records)
    emit("tui_feed_ready_big_store", big["feed_ready_s"], "s", records=args.records)
    plain = asyncio.run(scroll_plain(args.lines))
    emit(
        "plain_datatable_scroll",
        plain,
        "s",
        lines=args.lines,
        ms_per_line=round(1000 * plain / args.lines, 2),
        note="the same key presses on a bare DataTable holding every row: Pilot waits for a"
        " full refresh after each key, so this is the floor of the method",
    )
    emit("tui_scroll_vs_plain", big["scroll_s"] / plain, "ratio", lines=args.lines)
    emit(
        "tui_scroll",
        big["scroll_s"],
        "s",
        lines=args.lines,
        ms_per_line=round(1000 * big["scroll_s"] / args.lines, 2),
        rows_loaded=int(big["rows_loaded"]),
        records=args.records,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
