"""The ``p2pshare`` command: one argparse parser, one small function per subcommand.

Every failure a user can cause ends as one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from p2pshare import __version__
from p2pshare.control.client import ControlClient
from p2pshare.control.errors import ControlConnectionError, ControlError, NodeNotRunning
from p2pshare.node.config import Config, ConfigError, write_config
from p2pshare.node.datadir import DataDir, DataDirError, DataDirLock, resolve_data_dir
from p2pshare.node.identity import (
    Identity,
    IdentityError,
    load_key_file,
    write_key_file,
)
from p2pshare.node.library import Library, LibraryError
from p2pshare.protocol.bundles import BundleError
from p2pshare.protocol.communities import normalise_community
from p2pshare.protocol.keys import SHORT_ID_CHARS
from p2pshare.protocol.records import KINDS
from p2pshare.protocol.views import size_text

EXIT_ERROR = 1
EXIT_USAGE = 2


class UserError(Exception):
    """Raised by a command for a mistake the user can fix; main() prints it as one line."""


_USER_ERRORS: tuple[type[Exception], ...] = (
    UserError,
    LibraryError,
    IdentityError,
    DataDirError,
    ConfigError,
    BundleError,
    ControlConnectionError,
)


def _store_error() -> type[Exception]:
    from p2pshare.node.store import StoreError

    return StoreError


# --- backends: the running node, or the library directly ------------------------------------

NEEDS_NODE = "this needs a running node for {root}; start one with: p2pshare node"


class Backend:
    """Calls a library/node method by name with JSON-shaped params and result."""

    remote = False

    def call(self, method: str, **params: Any) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        pass


class LocalBackend(Backend):
    """No node runs: act on the data dir directly (holding its lock)."""

    def __init__(self, data_dir: DataDir) -> None:
        from p2pshare.node.api import LibraryApi

        self.data_dir = data_dir
        self.library = Library.open(data_dir)
        self.api = LibraryApi(self.library)

    def call(self, method: str, **params: Any) -> Any:
        if method not in self.api.methods:
            raise UserError(NEEDS_NODE.format(root=self.data_dir.root))
        return self.api.call(method, params)

    def close(self) -> None:
        self.library.close()


class RemoteBackend(Backend):
    """A node runs: every command goes through its control socket."""

    remote = True

    def __init__(self, client: ControlClient) -> None:
        self.client = client

    def call(self, method: str, **params: Any) -> Any:
        try:
            return self.client.request(method, params, timeout=CALL_TIMEOUT)
        except ControlError as exc:
            raise UserError(exc.message) from None

    def close(self) -> None:
        self.client.close()


CALL_TIMEOUT = 600.0  # sharing a 200 MB file hashes and copies it before answering


def open_backend(data_dir: DataDir, *, needs_node: bool) -> Backend:
    try:
        client = ControlClient.connect(data_dir.control_socket, timeout=10.0)
    except NodeNotRunning:
        if needs_node:
            raise UserError(NEEDS_NODE.format(root=data_dir.root)) from None
        return LocalBackend(data_dir)
    return RemoteBackend(client)


# --- output helpers ---------------------------------------------------------------------------


def _out(line: str = "") -> None:
    print(line, flush=False)


def _when(created_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(created_ms / 1000))


def _short(record_id: str) -> str:
    return record_id[:SHORT_ID_CHARS]


def _summary_line(view: dict[str, Any]) -> str:
    name = str(view.get("author_name", ""))[:16]
    text = str(view.get("headline", "")).replace("\n", " ")
    if len(text) > 70:
        text = text[:69] + "…"
    return f"{_short(view['id'])}  {view['kind']:<8} {view['community']:<12} {name:<16} {text}"


def _print_records(views: Iterable[dict[str, Any]], as_json: bool) -> int:
    count = 0
    for view in views:
        count += 1
        if as_json:
            _out(json.dumps(view, ensure_ascii=False))
        else:
            _out(_summary_line(view))
    return count


# --- commands that need no node and no store ----------------------------------------------


def cmd_init(args: argparse.Namespace, data_dir: DataDir) -> int:
    if data_dir.identity.exists():
        ident = load_key_file(data_dir.identity)
        raise UserError(
            f"{data_dir.root} already has an identity ({ident.peer_id}); "
            "use --data-dir for a second one"
        )
    data_dir.ensure()
    with DataDirLock(data_dir):
        identity = Identity.generate()
        write_key_file(data_dir.identity, identity)
        if not data_dir.config.exists():
            write_config(data_dir.config, Config(name=args.name or ""))
    with Library.open(data_dir) as lib:
        if args.name:
            lib.set_profile(args.name)
    _out(f"Created identity {identity.peer_id}")
    _out(f"Data dir: {data_dir.root}")
    if not args.name:
        _out("Tip: set a display name with: p2pshare profile --name NAME")
    return 0


def cmd_id(args: argparse.Namespace, data_dir: DataDir) -> int:
    identity = load_key_file(data_dir.identity)
    if args.json:
        _out(json.dumps({"peer_id": identity.peer_id, "public_key": identity.public_key.hex()}))
    else:
        _out(f"peer id:    {identity.peer_id}")
        _out(f"public key: {identity.public_key.hex()}")
    return 0


def cmd_identity_export(args: argparse.Namespace, data_dir: DataDir) -> int:
    identity = load_key_file(data_dir.identity)
    write_key_file(Path(args.file), identity, overwrite=False)
    _out(f"Exported identity {identity.peer_id} to {args.file}")
    _out("Keep this file secret: anyone who has it can sign as you.")
    return 0


def cmd_identity_import(args: argparse.Namespace, data_dir: DataDir) -> int:
    identity = load_key_file(Path(args.file), check_mode=False)
    data_dir.ensure()
    with DataDirLock(data_dir):
        if data_dir.identity.exists() and not args.force:
            current = load_key_file(data_dir.identity, check_mode=False)
            if current.public_key == identity.public_key:
                _out(f"{data_dir.root} already uses identity {identity.peer_id}")
                return 0
            raise UserError(
                f"{data_dir.root} already has identity {current.peer_id}; export it first, "
                "then import with --force to replace it"
            )
        write_key_file(data_dir.identity, identity, overwrite=True)
        if not data_dir.config.exists():
            write_config(data_dir.config, Config())
    _out(f"Imported identity {identity.peer_id} into {data_dir.root}")
    return 0


def cmd_node(args: argparse.Namespace, data_dir: DataDir) -> int:
    from p2pshare.node.config import load_config
    from p2pshare.node.runner import configure_logging, run_node
    from p2pshare.node.service import NodeOptions

    if not data_dir.identity.exists():
        raise UserError(
            f"{data_dir.root} has no identity yet; create one with: p2pshare init --name NAME"
        )
    options = NodeOptions.from_config(
        load_config(data_dir.config),
        listen=args.listen or None,
        mdns=False if args.no_mdns else None,
        gossip=False if args.no_gossip else None,
        communities=args.community or None,
    )
    configure_logging(data_dir, foreground=True, verbose=args.verbose)
    run_node(data_dir, options)
    return 0


def cmd_tui(args: argparse.Namespace, data_dir: DataDir) -> int:
    from p2pshare.tui.launch import Launch, init_argv, node_argv, remote_argv, run

    log_file = data_dir.root / "tui.log"  # lines are dropped while the data dir does not exist
    if args.remote:
        return run(Launch(remote=remote_argv(args.remote)), log_file=log_file)
    if args.attach:
        return run(Launch(socket=Path(args.attach).expanduser()), log_file=log_file)
    first_run = not data_dir.identity.exists()
    if first_run and not sys.stdin.isatty():
        raise UserError(
            f"{data_dir.root} has no identity yet; create one with: p2pshare init --name NAME"
        )
    launch = Launch(
        socket=data_dir.control_socket,
        node_argv=node_argv(data_dir.root),
        init_argv=init_argv(data_dir.root),
        keep_running=args.keep_running,
    )
    return run(launch, first_run=first_run, log_file=log_file)


def cmd_control_stdio(args: argparse.Namespace, data_dir: DataDir) -> int:
    import trio

    from p2pshare.control.server import relay_stdio

    trio.run(relay_stdio, data_dir.control_socket)
    return 0


# --- commands through a backend -------------------------------------------------------------


def cmd_profile(args: argparse.Namespace, b: Backend) -> int:
    view = b.call(
        "profile",
        name=args.name,
        about=args.about or "",
        website=args.website or "",
        location=args.location or "",
    )
    _out(f"Published profile {_short(view['id'])}: {args.name}")
    return 0


def cmd_share(args: argparse.Namespace, b: Backend) -> int:
    path = Path(args.file).expanduser()
    if not path.exists():
        raise UserError(f"{path}: no such file")
    view = b.call(
        "share",
        path=str(path.resolve()),
        title=args.title,
        description=args.description or "",
        tags=args.tag or [],
        licence=args.licence,
        community=args.community,
        authors=args.author or [],
    )
    body = view["body"]
    _out(
        f"Shared {_short(view['id'])} {body['title']!r} "
        f"({size_text(body['size'])}, {body['licence']}, community {view['community']})"
    )
    _out(f"id:   {view['id']}")
    _out(f"root: {view['root']}")
    return 0


def cmd_recommend(args: argparse.Namespace, b: Backend) -> int:
    if args.rating is not None and not 1 <= args.rating <= 5:
        raise UserError("--rating must be from 1 to 5")
    view = b.call(
        "recommend",
        target=args.target,
        text=args.text,
        rating=args.rating,
        tags=args.tag or [],
        community=args.community,
    )
    _out(f"Recommended: {_short(view['id'])} {view['headline']}")
    return 0


def cmd_repost(args: argparse.Namespace, b: Backend) -> int:
    view = b.call("repost", id=args.id, note=args.note or "", community=args.community)
    _out(f"Reposted as {_short(view['id'])}: {view['headline']}")
    return 0


def cmd_follow(args: argparse.Namespace, b: Backend) -> int:
    view = b.call("follow", key=args.key)
    _out(f"Following {view['headline']}")
    return 0


def cmd_unfollow(args: argparse.Namespace, b: Backend) -> int:
    view = b.call("unfollow", key=args.key)
    _out(f"No longer following {view['headline']}")
    return 0


def cmd_block(args: argparse.Namespace, b: Backend) -> int:
    result = b.call("block", key=args.key)
    _out(f"Blocked {args.key}; removed {result['removed']} of their records")
    return 0


def cmd_unblock(args: argparse.Namespace, b: Backend) -> int:
    b.call("unblock", key=args.key)
    _out(f"Unblocked {args.key}")
    return 0


def cmd_list(args: argparse.Namespace, b: Backend) -> int:
    community = normalise_community(args.community) if args.community else None
    limit = args.limit or None
    result = b.call("list", kind=args.kind, community=community, limit=limit)
    shown = _print_records(result["records"], args.json)
    if not args.json and limit and shown == limit and result["total"] > shown:
        print(f"(showing the newest {shown}; use --limit 0 for all)", file=sys.stderr)
    if not args.json and shown == 0:
        print("no records yet", file=sys.stderr)
    return 0


def cmd_search(args: argparse.Namespace, b: Backend) -> int:
    result = b.call("search", query=args.query, limit=args.limit)
    shown = _print_records(result["records"], args.json)
    if shown == 0 and not args.json:
        print(f"nothing matches {args.query!r}", file=sys.stderr)
    return 0


def _field(label: str, value: object) -> None:
    _out(f"{label + ':':<13}{value}")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def cmd_show(args: argparse.Namespace, b: Backend) -> int:
    view = b.call("show", id=args.id)
    if args.json:
        _out(json.dumps(view, ensure_ascii=False))
        return 0
    _field("id", view["id"])
    _field("kind", view["kind"])
    _field("author", f"{view['author_name']} ({view['author']})")
    _field("created", _when(view["created_ms"]))
    _field("community", view["community"])
    for key, value in view["body"].items():
        if key != "original":
            _field(key, ", ".join(str(v) for v in value) if isinstance(value, list) else value)
    link = view.get("original")
    if link:
        _out("chain:")
        while link:
            _out(f"  {_short(link['id'])} {link['kind']:<7} by {link['author'][-8:]}")
            link = link.get("original")
    if "document" in view:
        _field("document", view["document"])
        if view.get("path"):
            _field("stored at", view["path"])
    return 0


def cmd_retract(args: argparse.Namespace, b: Backend) -> int:
    view = b.call("retract", id=args.id)
    _out(f"Retracted {view['headline']} (retract record {_short(view['id'])})")
    return 0


def cmd_export(args: argparse.Namespace, b: Backend) -> int:
    out = Path(args.out).expanduser().resolve()
    result = b.call("export", out=str(out), ids=args.ids)
    _out(
        f"Wrote {_plural(result['records'], 'record')} and "
        f"{_plural(result['documents'], 'document')} to {out}"
    )
    return 0


def cmd_import(args: argparse.Namespace, b: Backend) -> int:
    path = Path(args.file).expanduser().resolve()
    result = b.call("import", file=str(path))
    _out(
        f"Imported {_plural(result['added'], 'new record')} ({result['duplicates']} already "
        f"here) and {_plural(result['documents'], 'document')} from {args.file}"
    )
    for reason, count in sorted(result["rejected"].items()):
        _out(f"  skipped {count} ({reason})")
    return 0


def _progress_line(data: dict[str, Any], width: int = 30) -> str:
    size = max(1, int(data.get("size", 0)))
    have = int(data.get("present_bytes", 0))
    filled = int(width * have / size)
    rate = float(data.get("rate", 0.0))
    sources = int(data.get("sources", 0))
    return (
        f"\r[{'#' * filled}{'.' * (width - filled)}] {100 * have / size:5.1f}%  "
        f"{size_text(have)} of {size_text(size)}  {rate / 1e6:6.1f} MB/s  "
        f"from {_plural(sources, 'peer')}"
    )


def cmd_get(args: argparse.Namespace, b: Backend) -> int:
    """Download a document through the node, showing progress; then copy it to -o if asked."""
    assert isinstance(b, RemoteBackend)
    client = b.client
    client.subscribe(["transfer-progress", "transfer-done", "transfer-failed"])
    started = b.call("get", id=args.id)
    root = started["root"]
    if started["state"] != "complete":
        show_bar = sys.stderr.isatty() or args.progress
        while True:
            event = client.next_event(timeout=GET_IDLE_TIMEOUT)
            if event is None:
                raise UserError(
                    f"no progress for {GET_IDLE_TIMEOUT:.0f} s; the download continues in the "
                    "node — check it with: p2pshare status"
                )
            data = event.data if isinstance(event.data, dict) else {}
            if data.get("root") != root:
                continue
            if event.event == "transfer-progress" and show_bar:
                print(_progress_line(data), end="", file=sys.stderr, flush=True)
            elif event.event == "transfer-failed":
                if show_bar:
                    print(file=sys.stderr)
                raise UserError(f"download failed: {data.get('error', 'unknown error')}")
            elif event.event == "transfer-done":
                if show_bar:
                    print(
                        _progress_line({**data, "present_bytes": data.get("size", 0)}),
                        file=sys.stderr,
                    )
                break
    result = b.call(
        "save", id=args.id, out=str(Path(args.out).expanduser().resolve()) if args.out else None
    )
    _out(f"Saved {started['title']!r} to {result['path']}")
    return 0


GET_IDLE_TIMEOUT = 120.0


def cmd_status(args: argparse.Namespace, b: Backend) -> int:
    status = b.call("status")
    if args.json:
        _out(json.dumps(status))
        return 0
    _out(f"peer id:     {status['peer_id']}")
    _out(f"node:        {status['node']} (pid {status['pid']}, up {status['uptime_s']:.0f} s)")
    _out("listening:   " + ("\n             ".join(status["listen"]) or "-"))
    _out(f"peers:       {status['connected_peers']} connected")
    _out(f"communities: {', '.join(status['communities']) or '-'}")
    _out(f"records:     {status['records']} ({status['documents']} documents)")
    sync = status.get("sync") or {}
    if sync:
        _out(
            f"sync:        {sync['sessions']} sessions, {sync['records_received']} records in, "
            f"{sync['records_sent']} out"
        )
    transfers = status.get("transfers") or []
    _out(f"transfers:   {len(transfers)} active")
    for t in transfers:
        _out(f"  {t['title'][:40]:<40} {t['percent']:5.1f}%  from {t['sources']} peers")
    return 0


def cmd_peers(args: argparse.Namespace, b: Backend) -> int:
    peers = b.call("peers")["peers"]
    if args.json:
        for peer in peers:
            _out(json.dumps(peer))
        return 0
    for peer in peers:
        state = "connected" if peer.get("connected") else "known"
        _out(f"{peer['peer_id']}  {state}")
    if not peers:
        print("no peers connected; add one with: p2pshare connect MULTIADDR", file=sys.stderr)
    return 0


def cmd_connect(args: argparse.Namespace, b: Backend) -> int:
    result = b.call("connect", addr=args.addr)
    _out(f"Connected to {result['peer_id']}")
    return 0


def cmd_invite(args: argparse.Namespace, b: Backend) -> int:
    _out(b.call("invite", community=args.community)["code"])
    return 0


def cmd_join(args: argparse.Namespace, b: Backend) -> int:
    text = args.code_or_community
    if text.lower().startswith("p2ps1"):
        result = b.call("join", code=text)
        _out(f"Connected to {result['peer_id']} and joined {result['community']}")
    else:
        result = b.call("join", community=text)
        _out(f"Joined {result['community']}")
    return 0


def cmd_leave(args: argparse.Namespace, b: Backend) -> int:
    result = b.call("leave", community=args.community)
    _out(f"Left {result['community']}")
    return 0


# --- parser -----------------------------------------------------------------------------------

Handler = Callable[[argparse.Namespace, Any], int]
DATA_DIR = "data-dir"  # handler takes the DataDir itself
LIBRARY = "library"  # handler takes a Backend: the node if one runs, else the library
NODE = "node"  # handler takes a Backend that must be a running node


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="p2pshare",
        description="Share documents and signed recommendations with peers you choose.",
    )
    parser.add_argument("--version", action="version", version=f"p2pshare {__version__}")
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="data directory (default: $P2PSHARE_HOME or the platform's user data dir)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, handler: Handler, help_text: str, *, needs: str = LIBRARY) -> Any:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler, needs=needs)
        return p

    p = add("init", cmd_init, "create an identity and data dir", needs=DATA_DIR)
    p.add_argument("--name", help="your display name, published in your profile")

    p = add("id", cmd_id, "print your peer id and public key", needs=DATA_DIR)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser(
        "identity",
        help="back up or move your identity key",
        description="Back up or move your identity key.",
    )
    isub = p.add_subparsers(
        dest="identity_command", metavar="ACTION", parser_class=_Parser, required=True
    )
    q = isub.add_parser("export", help="write your identity key to FILE (keep it secret)")
    q.add_argument("file", metavar="FILE")
    q.set_defaults(handler=cmd_identity_export, needs=DATA_DIR)
    q = isub.add_parser("import", help="use the identity key in FILE for this data dir")
    q.add_argument("file", metavar="FILE")
    q.add_argument("--force", action="store_true", help="replace an existing identity")
    q.set_defaults(handler=cmd_identity_import, needs=DATA_DIR)

    p = add("node", cmd_node, "run the node in the foreground (Ctrl-C stops it)", needs=DATA_DIR)
    p.add_argument(
        "--listen",
        action="append",
        metavar="MULTIADDR",
        help="address to listen on, e.g. /ip4/0.0.0.0/tcp/4011 (repeatable; "
        "default from config.toml)",
    )
    p.add_argument(
        "--community",
        action="append",
        metavar="C",
        help="community to join (repeatable; default from config.toml)",
    )
    p.add_argument("--no-mdns", action="store_true", help="do not look for peers on the LAN")
    p.add_argument(
        "--no-gossip", action="store_true", help="no live gossip; records arrive by sync only"
    )
    p.add_argument("--verbose", "-v", action="store_true", help="log debug messages")

    add(
        "control-stdio",
        cmd_control_stdio,
        "relay the node's control API over stdin/stdout (for p2pshare tui --remote)",
        needs=DATA_DIR,
    )

    p = add(
        "tui",
        cmd_tui,
        "open the terminal UI (the default): on this data dir's node, starting one if none runs",
        needs=DATA_DIR,
    )
    p.add_argument("--attach", metavar="SOCKET", help="use the node on this control socket")
    p.add_argument("--remote", metavar="HOST", help="use the node on HOST, over ssh")
    p.add_argument(
        "--keep-running", action="store_true", help="leave a node started by the TUI running"
    )

    p = add("profile", cmd_profile, "publish your profile (display name and more)")
    p.add_argument("--name", required=True)
    p.add_argument("--about")
    p.add_argument("--website")
    p.add_argument("--location")

    p = add("share", cmd_share, "share a file with your peers")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--title", required=True)
    p.add_argument("--description")
    p.add_argument("--tag", action="append", metavar="TAG", help="a tag (repeatable)")
    p.add_argument("--author", action="append", metavar="NAME", help="an author (repeatable)")
    p.add_argument(
        "--licence",
        "--license",
        default="all-rights-reserved",
        metavar="SPDX",
        help="SPDX licence id such as CC-BY-4.0 (default: all-rights-reserved)",
    )
    p.add_argument("--community", default="public", metavar="C")

    p = add("recommend", cmd_recommend, "publish a signed recommendation")
    p.add_argument(
        "target", metavar="TARGET", help="a record id, a peer key, a URL, or thing:ANYTHING"
    )
    p.add_argument("--text", required=True)
    p.add_argument("--rating", type=int, metavar="1-5")
    p.add_argument("--tag", action="append", metavar="TAG")
    p.add_argument("--community", metavar="C", help="default: the target's community, else public")

    p = add("repost", cmd_repost, "republish someone's record, keeping their signature")
    p.add_argument("id", metavar="ID")
    p.add_argument("--note")
    p.add_argument("--community", metavar="C")

    for name, handler, text in (
        ("follow", cmd_follow, "follow a peer (public)"),
        ("unfollow", cmd_unfollow, "stop following a peer (public)"),
        ("block", cmd_block, "block a peer locally: drop and refuse their records"),
        ("unblock", cmd_unblock, "lift a block"),
    ):
        p = add(name, handler, text)
        p.add_argument("key", metavar="KEY", help="peer id (12D3KooW…) or hex public key")

    p = add("list", cmd_list, "list records, newest first")
    p.add_argument("--kind", choices=KINDS)
    p.add_argument("--community", metavar="C")
    p.add_argument("--limit", type=int, default=100, help="how many (0 = all; default 100)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = add("show", cmd_show, "show one record in full")
    p.add_argument("id", metavar="ID", help="record id or a unique prefix of it")
    p.add_argument("--json", action="store_true")

    p = add("search", cmd_search, "full-text search of titles, descriptions, tags and texts")
    p.add_argument("query", metavar="QUERY")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")

    p = add("retract", cmd_retract, "withdraw one of your records from the network")
    p.add_argument("id", metavar="ID")

    p = add("export", cmd_export, "write a signed offline bundle of records and documents")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("ids", nargs="*", metavar="ID", help="records to export (default: all)")

    p = add("import", cmd_import, "import an offline bundle (everything is verified first)")
    p.add_argument("file", metavar="FILE")

    p = add("get", cmd_get, "download a document from peers (shows progress)", needs=NODE)
    p.add_argument("id", metavar="ID", help="the document's record id (or a repost of it)")
    p.add_argument("-o", "--out", metavar="PATH", help="also copy it here (file or directory)")
    p.add_argument("--progress", action="store_true", help="draw progress even when not a tty")

    p = add("status", cmd_status, "what the running node is doing", needs=NODE)
    p.add_argument("--json", action="store_true")
    p = add("peers", cmd_peers, "peers the node is connected to", needs=NODE)
    p.add_argument("--json", action="store_true")
    p = add("connect", cmd_connect, "connect to a peer", needs=NODE)
    p.add_argument(
        "addr", metavar="MULTIADDR", help="e.g. /ip4/192.168.1.20/tcp/4011/p2p/12D3KooW…"
    )
    p = add("invite", cmd_invite, "print a one-line invite code for a community", needs=NODE)
    p.add_argument("--community", metavar="C")
    p = add("join", cmd_join, "join a community, or use an invite code", needs=NODE)
    p.add_argument("code_or_community", metavar="CODE|COMMUNITY")
    p = add("leave", cmd_leave, "leave a community", needs=NODE)
    p.add_argument("community", metavar="COMMUNITY")
    return parser


def _fail(message: str) -> int:
    print(f"p2pshare: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # plain ``p2pshare`` opens the terminal UI
        args = parser.parse_args([*(sys.argv[1:] if argv is None else argv), "tui"])
    errors = (*_USER_ERRORS, _store_error())
    try:
        data_dir = resolve_data_dir(args.data_dir)
        if args.needs == DATA_DIR:
            return int(args.handler(args, data_dir))
        backend = open_backend(data_dir, needs_node=args.needs == NODE)
        try:
            return int(args.handler(args, backend))
        finally:
            backend.close()
    except errors as exc:
        return _fail(str(exc))
    except ValueError as exc:  # e.g. a community name that is not a slug
        return _fail(str(exc))
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{exc.strerror or exc}")
    except KeyboardInterrupt:
        return 130
