"""Benchmark: how fast a record reaches the whole gossip network, and what it costs in CPU.

Runs ``--nodes`` real libp2p hosts in this one process on 127.0.0.1, each running our ``Gossip``
(p2pshare/node/gossip.py, with its deliberate GossipSub settings) in one community. Each node
dials ``--links`` others chosen by a seeded RNG (redrawn until the graph is connected), and the
bench waits until every link is in both ends' mesh. It then publishes ``--messages`` signed
``rec`` records (~400 bytes, made before timing), one every ``--interval`` seconds, each from a
random node, and for each one records when every other node's ``on_record`` saw it.

Reported, as JSON lines ``{"name", "value", "unit", "target", "pass", ...}``:
- latency to the LAST node to receive a message (the time the whole network has it): p50, p95,
  max. Target p50 <= 100 ms.
- CPU per node per message: process CPU time (``time.process_time``) over the publish phase
  (first publish until every node has every message, or the drain timeout), divided by nodes x
  messages. Target <= 3 ms. The CPU of the same number of idle nodes over an equally long
  window (heartbeats only) is measured first and reported beside it, so the per-message part
  can be told apart from the fixed cost.
- delivery: messages x receivers that arrived; anything below 100% is a loss.

All nodes share one Python thread, so every hop's work queues behind every other node's: the
latency is an upper bound for separate machines, and the CPU figure is what counts.

``--profile FILE`` runs the publish phase under cProfile and writes the 40 most expensive
functions (by own time) to FILE.

Run: ``.venv/bin/python bench/gossip.py [--nodes 20] [--links 3] [--messages 50]
[--interval 0.1] [--seed 1] [--profile prof.txt]``
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import statistics
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import benchlib
import trio
from benchlib import WORDS
from libp2p.abc import IHost

from p2pshare.node.gossip import Gossip, open_gossip
from p2pshare.node.host import configure_libp2p_logging, connect, listen_addrs, open_host
from p2pshare.node.identity import Identity
from p2pshare.protocol.records import REC, Record, create_record

TARGET_P50_MS = 100.0
TARGET_CPU_MS = 3.0
COMMUNITY = "public"
MESH_TIMEOUT = 30.0
DRAIN_TIMEOUT = 10.0
IDLE_WINDOW = 3.0


@dataclass
class Inbox:
    received: dict[bytes, float] = field(default_factory=dict)  # record id -> perf_counter

    def on_record(self, record: Record, peer_id: str) -> None:
        self.received.setdefault(record.id, time.perf_counter())


@dataclass
class BenchNode:
    index: int
    identity: Identity
    host: IHost
    gossip: Gossip
    inbox: Inbox

    @property
    def received(self) -> dict[bytes, float]:
        return self.inbox.received


def emit(name: str, value: float, unit: str, target: float | None = None, **extra: Any) -> None:
    """A figure; with a ``target``, a ceiling it passes at or below."""
    if target is not None:
        extra = {"target": target, "pass": value <= target, **extra}
    benchlib.emit(name, value, unit, **extra)


def random_graph(nodes: int, links: int, rng: random.Random) -> set[tuple[int, int]]:
    """Each node picks ``links`` distinct others; redrawn until the graph is connected."""
    while True:
        edges: set[tuple[int, int]] = set()
        for a in range(nodes):
            for b in rng.sample([n for n in range(nodes) if n != a], links):
                edges.add((min(a, b), max(a, b)))
        if _connected(nodes, edges):
            return edges


def _connected(nodes: int, edges: set[tuple[int, int]]) -> bool:
    neighbours: dict[int, set[int]] = {n: set() for n in range(nodes)}
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    seen, todo = {0}, [0]
    while todo:
        for n in neighbours[todo.pop()] - seen:
            seen.add(n)
            todo.append(n)
    return len(seen) == nodes


def make_records(count: int, authors: list[Identity], rng: random.Random) -> list[Record]:
    """Signed ``rec`` records of realistic size, one author per record (not timed)."""
    records = []
    for i in range(count):
        text = " ".join(rng.choice(WORDS) for _ in range(60))
        body = {
            "subject_type": "url",
            "subject": f"https://example.org/item/{i}",
            "rating": rng.randint(1, 5),
            "text": text,
            "tags": rng.sample(WORDS, 3),
        }
        records.append(create_record(authors[i].signing_key, REC, body, community=COMMUNITY))
    return records


async def wait_for_mesh(nodes: list[BenchNode], edges: set[tuple[int, int]]) -> float:
    started = trio.current_time()
    with trio.fail_after(MESH_TIMEOUT):
        for a, b in sorted(edges):
            for x, y in ((a, b), (b, a)):
                peer = nodes[y].identity.peer_id
                await nodes[x].gossip.wait_for_mesh(COMMUNITY, peer, timeout=MESH_TIMEOUT)
    return trio.current_time() - started


async def publish_phase(
    nodes: list[BenchNode], records: list[Record], publishers: list[int], interval: float
) -> tuple[dict[bytes, float], float]:
    """Publish at a steady rate; return publish times and the wall time until fully drained."""
    sent: dict[bytes, float] = {}
    started = trio.current_time()
    for i, (record, origin) in enumerate(zip(records, publishers, strict=True)):
        await trio.sleep_until(started + i * interval)
        sent[record.id] = time.perf_counter()
        await nodes[origin].gossip.publish(record)
    expected = {(n.index, r.id) for n in nodes for r, o in zip(records, publishers, strict=True)}
    expected -= {(o, r.id) for r, o in zip(records, publishers, strict=True)}
    with trio.move_on_after(DRAIN_TIMEOUT):
        while any(rid not in nodes[n].received for n, rid in expected):
            await trio.sleep(0.01)
    return sent, trio.current_time() - started


async def measure_idle(seconds: float) -> float:
    """Process CPU seconds spent while the network idles (heartbeats, keep-alives)."""
    cpu = time.process_time()
    await trio.sleep(seconds)
    return time.process_time() - cpu


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def run(args: argparse.Namespace) -> int:
    configure_libp2p_logging(None)
    rng = random.Random(args.seed)
    identities = [Identity.generate() for _ in range(args.nodes)]
    edges = random_graph(args.nodes, args.links, rng)
    publishers = [rng.randrange(args.nodes) for _ in range(args.messages)]
    records = make_records(args.messages, [identities[p] for p in publishers], rng)

    async with AsyncExitStack() as stack:
        nodes: list[BenchNode] = []
        for index, identity in enumerate(identities):
            host = await stack.enter_async_context(open_host(identity))
            inbox = Inbox()
            gossip = await stack.enter_async_context(open_gossip(host, inbox.on_record))
            await gossip.join(COMMUNITY)
            nodes.append(BenchNode(index, identity, host, gossip, inbox))
        for a, b in sorted(edges):
            await connect(nodes[a].host, listen_addrs(nodes[b].host)[0])
        mesh_s = await wait_for_mesh(nodes, edges)
        emit("setup", mesh_s * 1000, "ms", nodes=args.nodes, links=len(edges), what="mesh ready")

        idle_cpu = await measure_idle(IDLE_WINDOW)

        profiler = cProfile.Profile() if args.profile else None
        cpu_before = time.process_time()
        if profiler:
            profiler.enable()
        sent, wall = await publish_phase(nodes, records, publishers, args.interval)
        if profiler:
            profiler.disable()
        cpu = time.process_time() - cpu_before

        report(nodes, records, publishers, sent, cpu, wall, idle_cpu, args)
        if profiler:
            write_profile(profiler, args.profile)
    return 0


def report(
    nodes: list[BenchNode],
    records: list[Record],
    publishers: list[int],
    sent: dict[bytes, float],
    cpu: float,
    wall: float,
    idle_cpu: float,
    args: argparse.Namespace,
) -> None:
    last_ms: list[float] = []
    arrived = total = 0
    for record, origin in zip(records, publishers, strict=True):
        times = [n.received.get(record.id) for n in nodes if n.index != origin]
        total += len(times)
        got = [t for t in times if t is not None]
        arrived += len(got)
        if len(got) == len(times):
            last_ms.append((max(got) - sent[record.id]) * 1000)
    node_messages = args.nodes * args.messages
    cpu_ms = cpu * 1000 / node_messages
    idle_ms = idle_cpu / IDLE_WINDOW * wall * 1000 / node_messages  # same window length
    common = {"nodes": args.nodes, "messages": args.messages, "rate_per_s": 1 / args.interval}
    if last_ms:
        emit("gossip_last_node_p50", statistics.median(last_ms), "ms", TARGET_P50_MS, **common)
        emit("gossip_last_node_p95", percentile(last_ms, 0.95), "ms", **common)
        emit("gossip_last_node_max", max(last_ms), "ms", **common)
    emit("gossip_delivery", 100.0 * arrived / max(total, 1), "%", arrived=arrived, of=total)
    emit("gossip_cpu_per_node_message", cpu_ms, "ms", TARGET_CPU_MS, cpu_s=round(cpu, 3),
         wall_s=round(wall, 3), **common)  # fmt: skip
    emit("gossip_idle_cpu_same_window", idle_ms, "ms per node-message",
         note="heartbeats etc. of idle nodes over an equally long window")  # fmt: skip
    emit("gossip_cpu_per_node_message_above_idle", cpu_ms - idle_ms, "ms")


def write_profile(profiler: cProfile.Profile, path: str) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(40)
    with open(path, "w", encoding="utf-8") as file:
        file.write(out.getvalue())
    print(f"profile written to {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--links", type=int, default=3)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", metavar="FILE")
    args = parser.parse_args(argv)
    return int(trio.run(run, args))


if __name__ == "__main__":
    sys.exit(main())
