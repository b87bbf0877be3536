"""Benchmark: one document end to end over ``/p2pshare/blocks/1``, beside other ways to copy it.

A random file of ``--size-mb`` MiB goes from a seeder process to a downloader process over
127.0.0.1, each process with its own libp2p host and ``BlobStore`` (a small harness: this script
re-runs itself with ``--role ...``; later the real ``p2pshare node`` processes replace it).
Beside it, in the same run and on the same bytes:

- ``libp2p_raw``: the same two hosts, one raw py-libp2p stream (Noise + Yamux), no protocol, no
  chunk hashing: what the library itself allows;
- ``tcp``: two Python processes, plain sockets, with a SHA-256 check and an fsync;
- ``scp`` and ``rsync`` over an ``sshd`` started on 127.0.0.1 with throwaway keys (cipher
  chacha20-poly1305), when ``sshd``/``scp``/``rsync`` are installed; otherwise a JSON line says
  they were skipped and why.

Every copy is checked byte for byte (whole-file SHA-256 against the source) before its time is
reported. Times: ``dial`` (connect + Noise handshake), ``transfer`` (request to a complete,
verified, fsync'd blob), ``end_to_end`` (dial + transfer; for the others: connect to verified
copy). Medians of ``--repeat`` runs. Targets: end to end <= 0.8 s for 200 MiB, dial <= 20 ms.

``--profile DIR`` runs one extra p2pshare download with both processes under ``py-spy record``
(``--py-spy PATH`` if it is not on PATH) and prints where the CPU went (own time per function
and per module) as JSON lines; the raw collapsed stacks stay in DIR.

Output: JSON lines ``{"name", "value", "unit", ...}``; MB/s = 10^6 bytes/s.

Run: ``.venv/bin/python bench/transfer.py [--size-mb 200] [--repeat 3] [--peers p2pshare,tcp,ssh]
[--profile DIR --py-spy PATH]``. scp/rsync need Debian's ``openssh-server`` and ``rsync``; py-spy is
a tool, not a project dependency (e.g. ``python3 -m venv /tmp/spy && /tmp/spy/bin/pip install
py-spy``). Absolute times drift with machine load: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TARGET_END_TO_END_S = 0.8  # for 200 MiB; scaled by size for other sizes
TARGET_DIAL_MS = 20.0
RAW_PROTOCOL = "/p2pshare/bench-raw/1"
BLOCK = 1024 * 1024
PROCESS_TIMEOUT = 300.0
SSH_CIPHER = "chacha20-poly1305@openssh.com"


def _emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as src:
        buffer = bytearray(BLOCK)
        view = memoryview(buffer)
        while got := src.readinto(buffer):
            digest.update(view[:got])
    return digest.hexdigest()


def _make_file(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        left = size
        while left:
            piece = min(left, 16 * BLOCK)
            out.write(os.urandom(piece))
            left -= piece
        os.fsync(out.fileno())


# --- roles run in child processes ----------------------------------------------------------------


def _quiet_libp2p() -> None:
    from p2pshare.node.host import configure_libp2p_logging

    configure_libp2p_logging(None)


async def _seed(args: argparse.Namespace) -> None:
    """Serve one file: add it to a store, listen, print the address, serve until stdin closes."""
    import trio
    from libp2p.custom_types import TProtocol

    from p2pshare.node.blobs import BlobStore
    from p2pshare.node.host import listen_addrs, open_host
    from p2pshare.node.identity import Identity
    from p2pshare.node.transfer_service import TransferService

    _quiet_libp2p()
    blobs = BlobStore(Path(args.data_dir))
    manifest = blobs.add_file(Path(args.file))
    async with open_host(Identity.generate()) as host:
        service = TransferService(
            host, blobs=blobs, blob_limiter=trio.CapacityLimiter(2), on_invalid=print
        )
        service.start()

        async def raw(stream: Any) -> None:  # the library alone: no framing, no hashing
            with open(args.file, "rb", buffering=0) as src:
                while block := src.read(BLOCK):
                    await stream.write(block)
            await stream.close()

        host.set_stream_handler(TProtocol(RAW_PROTOCOL), raw)
        print(json.dumps({"addr": listen_addrs(host)[0], "root": manifest.root.hex()}), flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # the harness closes stdin to stop us
    blobs.close()


async def _fetch(args: argparse.Namespace) -> None:
    """Download the document (or the raw stream) and print the timings as one JSON line."""
    import trio
    from libp2p.custom_types import TProtocol
    from libp2p.network.stream.exceptions import StreamEOF
    from libp2p.peer.id import ID

    from p2pshare.node.blobs import BlobStore
    from p2pshare.node.host import connect, open_host
    from p2pshare.node.identity import Identity
    from p2pshare.node.transfer_service import TransferService

    _quiet_libp2p()
    blobs = BlobStore(Path(args.data_dir))
    async with open_host(Identity.generate()) as host:
        service = TransferService(
            host, blobs=blobs, blob_limiter=trio.CapacityLimiter(2), on_invalid=print
        )
        start, cpu = time.perf_counter(), time.process_time()
        peer = await connect(host, args.addr)
        dialled = time.perf_counter()
        if args.raw:
            out = Path(args.data_dir) / "raw.bin"
            digest = hashlib.sha256()
            stream = await host.new_stream(ID.from_base58(peer), [TProtocol(RAW_PROTOCOL)])
            with open(out, "wb", buffering=0) as sink:
                while True:
                    try:
                        data = await stream.read(BLOCK)
                    except StreamEOF:
                        break
                    if not data:
                        break
                    digest.update(data)
                    sink.write(data)
                os.fsync(sink.fileno())
            path = out
            verified = digest.hexdigest() == args.expect
        else:
            path = await service.download(bytes.fromhex(args.root), [peer])
            verified = True  # every chunk was checked against the manifest before being written
        done = time.perf_counter()
        print(
            json.dumps(
                {
                    "dial_s": dialled - start,
                    "transfer_s": done - dialled,
                    "total_s": done - start,
                    "cpu_s": time.process_time() - cpu,
                    "path": str(path),
                    "verified": verified,
                }
            ),
            flush=True,
        )
    blobs.close()


def _tcp_serve(args: argparse.Namespace) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        print(json.dumps({"port": server.getsockname()[1]}), flush=True)
        conn, _ = server.accept()
        with conn, open(args.file, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            conn.sendall(size.to_bytes(8, "big"))
            conn.sendfile(src)


def _tcp_fetch(args: argparse.Namespace) -> None:
    out = Path(args.data_dir) / "tcp.bin"
    start, cpu = time.perf_counter(), time.process_time()
    with socket.create_connection(("127.0.0.1", args.port)) as conn:
        dialled = time.perf_counter()
        header = b""
        while len(header) < 8:
            header += conn.recv(8 - len(header))
        left = int.from_bytes(header, "big")
        digest = hashlib.sha256()
        buffer = bytearray(4 * BLOCK)
        view = memoryview(buffer)
        with open(out, "wb", buffering=0) as sink:
            while left:
                got = conn.recv_into(buffer, min(len(buffer), left))
                if not got:
                    raise SystemExit("tcp: connection ended early")
                digest.update(view[:got])
                sink.write(view[:got])
                left -= got
            os.fsync(sink.fileno())
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "dial_s": dialled - start,
                "transfer_s": done - dialled,
                "total_s": done - start,
                "cpu_s": time.process_time() - cpu,
                "path": str(out),
                "verified": digest.hexdigest() == args.expect,
            }
        ),
        flush=True,
    )


# --- the harness ---------------------------------------------------------------------------------


def _self(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def _first_line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    while line := proc.stdout.readline():
        if line.startswith("{"):  # py-spy, when profiling, prints lines of its own
            value: dict[str, Any] = json.loads(line)
            return value
    raise RuntimeError(f"child exited without output (code {proc.wait()})")


@contextlib.contextmanager
def _background(command: list[str]) -> Iterator[subprocess.Popen[str]]:
    """A child process we started, stopped (by its own pid) when the block ends."""
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a child process so far, all threads (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run_child(command: list[str]) -> dict[str, Any]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=PROCESS_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{command[2:4]} failed ({done.returncode}): {done.stderr[-2000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    value: dict[str, Any] = json.loads(lines[-1])
    return value


class Results:
    """Per peer: the medians of each timing, after checking every copy byte for byte."""

    def __init__(self, size: int, expect: str) -> None:
        self.size = size
        self.expect = expect
        self.runs: dict[str, list[dict[str, Any]]] = {}

    def add(self, name: str, run: dict[str, Any]) -> None:
        path = Path(run["path"])
        identical = run.get("verified", True) and _sha256_file(path) == self.expect
        if not identical:
            raise RuntimeError(f"{name}: the copy at {path} differs from the source")
        path.unlink()
        self.runs.setdefault(name, []).append(run)

    def median(self, name: str, key: str) -> float | None:
        values = [run[key] for run in self.runs.get(name, []) if key in run]
        return statistics.median(values) if values else None

    def report(self, name: str, note: str = "") -> None:
        total = self.median(name, "total_s")
        if total is None:
            return
        dial = self.median(name, "dial_s")
        transfer = self.median(name, "transfer_s")
        runs = len(self.runs[name])
        extra = {"note": note} if note else {}
        if dial is not None:
            _emit(name=f"{name}.dial", value=round(dial * 1000, 2), unit="ms", runs=runs)
        if transfer is not None:
            _emit(
                name=f"{name}.transfer",
                value=round(transfer, 3),
                unit="s",
                mb_s=round(self.size / transfer / 1e6, 1),
                runs=runs,
            )
        cpu = self.median(name, "cpu_s")
        seed_cpu = self.median(name, "seed_cpu_s")
        if cpu is not None and seed_cpu is not None:
            _emit(
                name=f"{name}.cpu",
                value=round(cpu + seed_cpu, 3),
                unit="s",
                downloader_s=round(cpu, 3),
                seeder_s=round(seed_cpu, 3),
                note="CPU seconds (all threads) while dialling and transferring",
            )
        _emit(
            name=f"{name}.end_to_end",
            value=round(total, 3),
            unit="s",
            mb_s=round(self.size / total / 1e6, 1),
            runs=runs,
            identical=True,
            **extra,
        )


def _p2pshare(work: Path, source: Path, results: Results, repeat: int) -> None:
    with _background(
        _self("--role", "seed", "--data-dir", str(work / "seed"), "--file", str(source))
    ) as seeder:
        ready = _first_line(seeder)
        for run in range(repeat):
            for raw in (False, True):
                data_dir = work / f"fetch-{run}-{int(raw)}"
                command = _self(
                    "--role",
                    "fetch",
                    "--data-dir",
                    str(data_dir),
                    "--addr",
                    ready["addr"],
                    "--root",
                    ready["root"],
                    "--expect",
                    results.expect,
                )
                before = _cpu_seconds(seeder.pid)
                result = _run_child([*command, "--raw"] if raw else command)
                result["seed_cpu_s"] = _cpu_seconds(seeder.pid) - before
                results.add("libp2p_raw" if raw else "p2pshare", result)
                shutil.rmtree(data_dir, ignore_errors=True)


def _tcp(work: Path, source: Path, results: Results, repeat: int) -> None:
    for _ in range(repeat):
        with _background(_self("--role", "tcp-serve", "--file", str(source))) as server:
            port = _first_line(server)["port"]
            before = _cpu_seconds(server.pid)
            result = _run_child(
                _self(
                    "--role",
                    "tcp-fetch",
                    "--port",
                    str(port),
                    "--data-dir",
                    str(work),
                    "--expect",
                    results.expect,
                )
            )
            result["seed_cpu_s"] = _cpu_seconds(server.pid) - before
            results.add("tcp", result)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def _sshd(work: Path) -> Iterator[tuple[list[str], str] | str]:
    """An sshd on 127.0.0.1 with throwaway keys: (ssh options, user) or why it cannot run."""
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
    keygen = shutil.which("ssh-keygen")
    if sshd is None or keygen is None:
        yield "sshd or ssh-keygen is not installed (Debian: apt-get install openssh-server)"
        return
    ssh_dir = work / "ssh"
    ssh_dir.mkdir(mode=0o700)
    for name in ("host_key", "user_key"):
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_dir / name)], check=True
        )
    authorized = ssh_dir / "authorized_keys"
    shutil.copy(ssh_dir / "user_key.pub", authorized)
    authorized.chmod(0o600)
    port = _free_port()
    config = ssh_dir / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {ssh_dir / 'host_key'}\n"
        f"AuthorizedKeysFile {authorized}\nPidFile {ssh_dir / 'sshd.pid'}\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        f"Ciphers {SSH_CIPHER}\nSubsystem sftp internal-sftp\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    proc = subprocess.Popen(
        [sshd, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        if proc.poll() is not None:
            error = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            yield f"sshd did not start: {error.strip()[-300:]}"
            return
        options = [
            "-i",
            str(ssh_dir / "user_key"),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-c",
            SSH_CIPHER,
        ]
        yield ([*options, "-p", str(port)], f"{getpass.getuser()}@127.0.0.1")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _timed_copy(command: list[str], out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, timeout=PROCESS_TIMEOUT)
    digest = _sha256_file(out)  # the check is part of the time, as for the tcp copy
    done = time.perf_counter()
    return {"total_s": done - start, "path": str(out), "sha256": digest}


def _ssh_peers(work: Path, source: Path, results: Results, repeat: int) -> None:
    with _sshd(work) as ready:
        if isinstance(ready, str):
            for name in ("scp", "rsync"):
                _emit(name=f"{name}.end_to_end", skipped=ready)
            return
        ssh_options, login = ready
        scp_options = [("-P" if opt == "-p" else opt) for opt in ssh_options]
        ssh_command = " ".join(["ssh", *ssh_options])
        commands: dict[str, list[str]] = {
            "scp": ["scp", "-q", *scp_options, f"{login}:{source}"],
            "rsync": ["rsync", "-q", "-e", ssh_command, f"{login}:{source}"],
        }
        for name, command in commands.items():
            if shutil.which(name) is None:
                _emit(name=f"{name}.end_to_end", skipped=f"{name} is not installed")
                continue
            for run in range(repeat):
                out = work / f"{name}-{run}.bin"
                try:
                    result = _timed_copy([*command, str(out)], out)
                except subprocess.CalledProcessError as exc:
                    _emit(name=f"{name}.end_to_end", skipped=f"failed: {exc.stderr[-300:]!r}")
                    break
                results.add(name, result)


def _ratios(results: Results, target_s: float) -> None:
    ours = results.median("p2pshare", "total_s")
    if ours is None:
        return
    _emit(
        name="p2pshare.end_to_end_vs_target",
        value=round(ours, 3),
        unit="s",
        target=round(target_s, 3),
        **{"pass": ours <= target_s},
    )
    dial = results.median("p2pshare", "dial_s")
    if dial is not None:
        _emit(
            name="p2pshare.dial_vs_target",
            value=round(dial * 1000, 2),
            unit="ms",
            target=TARGET_DIAL_MS,
            **{"pass": dial * 1000 <= TARGET_DIAL_MS},
        )
    for other in ("libp2p_raw", "tcp", "scp", "rsync"):
        theirs = results.median(other, "total_s")
        if theirs is not None:
            _emit(
                name=f"ratio.p2pshare_vs_{other}",
                value=round(ours / theirs, 2),
                unit="x (end to end time, lower is better for p2pshare)",
            )


# --- profiling -----------------------------------------------------------------------------------


def _profile(work: Path, source: Path, expect: str, out_dir: Path, py_spy: str) -> None:
    """One more download with both processes sampled by py-spy; summarise the CPU by function."""
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_out, fetch_out = out_dir / "seed.txt", out_dir / "fetch.txt"
    spy = [py_spy, "record", "--format", "raw", "--rate", "500", "--nonblocking", "-o"]
    seed = [*spy, str(seed_out), "--", *_self("--role", "seed")]
    seed += ["--data-dir", str(work / "prof-seed"), "--file", str(source)]
    with _background(seed) as seeder:
        ready = _first_line(seeder)
        fetch = [*spy, str(fetch_out), "--", *_self("--role", "fetch")]
        fetch += ["--data-dir", str(work / "prof-fetch"), "--addr", ready["addr"]]
        fetch += ["--root", ready["root"], "--expect", expect]
        done = subprocess.run(fetch, capture_output=True, text=True, timeout=PROCESS_TIMEOUT)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if lines:
            _emit(name="profiled_run.end_to_end", value=round(json.loads(lines[-1])["total_s"], 3))
    for role, path in (("seeder", seed_out), ("downloader", fetch_out)):
        if path.exists():
            _summarise_profile(role, path)


# Frames that mean "waiting", not working: the event loop's epoll wait and idle worker threads.
_IDLE_LEAVES = ("EpollIOManager.get_events", "WorkerThread._work", "Condition.wait", "_worker (")
# Samples spent before or after the transfer: imports, and the seeder adding the file.
_SETUP_FRAMES = ("<frozen importlib", "add_file (p2pshare", "hash_file (p2pshare", "chunk_hashes")
# Layers, most specific first: each busy sample goes to the first one found from the leaf up.
_LAYERS = (
    ("noise cipher (ChaCha20-Poly1305)", "noise/backends"),
    ("noise session (py-libp2p)", "libp2p/security"),
    ("yamux (py-libp2p)", "libp2p/stream_muxer/yamux"),
    ("other py-libp2p (io, swarm, net_stream)", "libp2p/"),
    ("trio sockets (send/recv syscalls)", "trio/_socket.py"),
    ("trio threads (to_thread hops, GIL waits)", "trio/_core/_thread_cache.py"),
    ("trio other (scheduler, sync, channels)", "trio/"),
    ("msgpack + canonical checks (ours)", "p2pshare/protocol/canonical.py"),
    ("hashing + file I/O in threads (ours)", "p2pshare/node/blobs.py"),
    ("chunk checks (ours, sans-IO)", "p2pshare/protocol/"),
    ("FramedStream (ours)", "p2pshare/node/streams.py"),
    ("transfer service (ours)", "p2pshare/node/transfer_service.py"),
)


def _layer_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for label, marker in _LAYERS:
            if marker in frame:
                return label
    return "other"


def _summarise_profile(role: str, path: Path, top: int = 12) -> None:
    """Busy samples only: each attributed to its innermost layer, and own time per function."""
    own: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    idle = setup = busy = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames[-1].startswith(_IDLE_LEAVES):
            idle += count
        elif any(marker in stack for marker in _SETUP_FRAMES):
            setup += count
        else:
            busy += count
            own[frames[-1]] += count
            layers[_layer_of(frames)] += count
    if not busy:
        return
    _emit(name=f"profile.{role}.samples", busy=busy, idle=idle, setup=setup, file=str(path))
    for label, count in layers.most_common():
        _emit(name=f"profile.{role}.layer", layer=label, share=round(count / busy, 3))
    for leaf, count in own.most_common(top):
        _emit(name=f"profile.{role}.own", frame=leaf, share=round(count / busy, 3))


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=int, default=200, help="size of the random file, MiB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per peer (median)")
    parser.add_argument(
        "--peers",
        default="p2pshare,tcp,ssh",
        help="comma-separated subset of p2pshare (with libp2p_raw), tcp, ssh (scp and rsync)",
    )
    parser.add_argument("--profile", type=Path, help="also profile one download into this dir")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    for hidden in ("--data-dir", "--file", "--addr", "--root", "--expect", "--port"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.role in ("seed", "fetch"):
        import trio

        trio.run(_seed if args.role == "seed" else _fetch, args)
        return 0
    if args.role == "tcp-serve":
        _tcp_serve(args)
        return 0
    if args.role == "tcp-fetch":
        _tcp_fetch(args)
        return 0

    size = args.size_mb * 1024 * 1024
    target = TARGET_END_TO_END_S * size / (200 * 1024 * 1024)
    with tempfile.TemporaryDirectory(prefix="p2pshare-bench-") as tmp:
        work = Path(tmp)
        source = work / "random.bin"
        _make_file(source, size)
        results = Results(size, _sha256_file(source))
        _emit(name="setup", size_mib=args.size_mb, cpus=os.cpu_count(), repeat=args.repeat)
        peers = set(args.peers.split(","))
        repeat = max(1, args.repeat)
        for peer, run in (("p2pshare", _p2pshare), ("tcp", _tcp), ("ssh", _ssh_peers)):
            if peer in peers:
                run(work, source, results, repeat)
            else:
                _emit(name=f"{peer}.end_to_end", skipped="not in --peers")
        results.report("p2pshare", "dial + download + per-chunk SHA-256 + fsync")
        results.report("libp2p_raw", "one raw py-libp2p stream, SHA-256, fsync; no protocol")
        results.report("tcp", "python sockets, SHA-256, fsync")
        results.report("scp", "ssh connect + copy + SHA-256 of the copy")
        results.report("rsync", "ssh connect + copy + SHA-256 of the copy")
        _ratios(results, target)
        if args.profile is not None:
            if shutil.which(args.py_spy) is None and not Path(args.py_spy).exists():
                _emit(name="profile", skipped=f"py-spy not found ({args.py_spy})")
            else:
                _profile(work, source, results.expect, args.profile, args.py_spy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
