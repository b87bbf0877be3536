"""Running a node as a process: logging, signals, a bounded shutdown, one node per data dir."""

from __future__ import annotations

import logging
import logging.handlers
import signal
import sys

import trio

from p2pshare.node.datadir import DataDir
from p2pshare.node.host import configure_libp2p_logging
from p2pshare.node.library import Library
from p2pshare.node.service import Node, NodeOptions

logger = logging.getLogger("p2pshare")
SHUTDOWN_GRACE = 4.0  # seconds; the whole stop must fit in 5


def configure_logging(data_dir: DataDir, *, foreground: bool, verbose: bool = False) -> None:
    """Log to ``node.log`` (rotated) and, in the foreground, to stderr; libp2p's logger too."""
    data_dir.ensure()
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    file_handler = logging.handlers.RotatingFileHandler(
        data_dir.log, maxBytes=5_000_000, backupCount=3, encoding="utf-8"
    )
    file_handler.setFormatter(formatter)
    handlers: list[logging.Handler] = [file_handler]
    if foreground:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        handlers.append(stream)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    fan_out = _FanOut(handlers)
    configure_libp2p_logging(fan_out, logging.WARNING)
    zeroconf_logger = logging.getLogger("zeroconf")  # has no handler of its own either
    zeroconf_logger.handlers[:] = [fan_out]
    zeroconf_logger.propagate = False


class _FanOut(logging.Handler):
    def __init__(self, handlers: list[logging.Handler]) -> None:
        super().__init__()
        self._handlers = handlers

    def emit(self, record: logging.LogRecord) -> None:
        for handler in self._handlers:
            handler.handle(record)


async def serve(library: Library, options: NodeOptions) -> None:
    """Run the node until SIGINT/SIGTERM/SIGHUP or a ``shutdown`` request, then stop within 5 s.

    SIGHUP is the terminal closing under a node the TUI started; ``nohup`` (SIGHUP ignored)
    keeps its meaning.
    """
    node = Node(library, options)
    stop_signals = [signal.SIGINT, signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        stop_signals.append(signal.SIGHUP)
    with trio.open_signal_receiver(*stop_signals) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    logger.info("received %s; stopping", signal.Signals(signum).name)
                    node.stop()
                    nursery.cancel_scope.deadline = trio.current_time() + SHUTDOWN_GRACE

            nursery.start_soon(stop_on_signal)
            await node.run()
            nursery.cancel_scope.cancel()
    logger.info("node stopped")


def run_node(data_dir: DataDir, options: NodeOptions) -> None:
    """Blocking entry point for ``p2pshare node``; the caller has checked the identity exists."""
    with Library.open(data_dir) as library:
        trio.run(serve, library, options)
