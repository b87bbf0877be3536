"""The p2pshare command, run as a real process against a real data dir."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import CliResult, CliRunner


def _ok(result: CliResult) -> CliResult:
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    return result


def _fails_cleanly(result: CliResult, needle: str) -> None:
    assert result.code != 0
    assert "Traceback" not in result.err
    lines = [ln for ln in result.err.splitlines() if ln.strip()]
    assert len(lines) == 1, result.err
    assert needle in lines[0], lines[0]


@pytest.fixture
def home(run_cli: CliRunner, tmp_path: Path) -> Path:
    _ok(run_cli("init", "--name", "Bike Shop"))
    return tmp_path / "home"


@pytest.fixture
def guide(tmp_path: Path) -> Path:
    path = tmp_path / "repair-guide.pdf"
    path.write_bytes(os.urandom(700_000))
    return path


def _json_lines(result: CliResult) -> list[dict[str, object]]:
    return [json.loads(line) for line in result.out.splitlines() if line.strip()]


def test_every_command_has_help(run_cli: CliRunner) -> None:
    commands = [
        "init",
        "id",
        "profile",
        "share",
        "recommend",
        "repost",
        "follow",
        "unfollow",
        "block",
        "unblock",
        "list",
        "show",
        "search",
        "retract",
        "export",
        "import",
    ]
    for command in commands:
        result = _ok(run_cli(command, "--help"))
        assert "usage: p2pshare " + command in result.out
    assert "export" in _ok(run_cli("identity", "--help")).out
    _ok(run_cli("identity", "export", "--help"))


def test_init_creates_identity_and_id_prints_it(run_cli: CliRunner, home: Path) -> None:
    assert (home / "identity.key").stat().st_mode & 0o077 == 0
    ident = json.loads(_ok(run_cli("id", "--json")).out)
    assert ident["peer_id"].startswith("12D3KooW")
    assert len(bytes.fromhex(ident["public_key"])) == 32
    _fails_cleanly(run_cli("init"), "already has an identity")


def test_commands_before_init_say_how_to_start(run_cli: CliRunner) -> None:
    _fails_cleanly(run_cli("list"), "p2pshare init")


def test_share_list_show_search_round_trip(run_cli: CliRunner, home: Path, guide: Path) -> None:
    shared = _ok(
        run_cli(
            "share",
            str(guide),
            "--title",
            "Wheel truing guide",
            "--description",
            "How to true a bicycle wheel at home",
            "--tag",
            "bikes",
            "--tag",
            "repair",
            "--licence",
            "cc-by-4.0",
            "--community",
            "Bike Repair",
        )
    )
    assert "Wheel truing guide" in shared.out
    docs = _json_lines(_ok(run_cli("list", "--kind", "doc", "--json")))
    assert len(docs) == 1
    doc = docs[0]
    assert {"id", "kind", "author", "created_ms", "community", "body", "root"} <= set(doc)
    assert doc["community"] == "bike-repair"
    assert doc["body"]["licence"] == "CC-BY-4.0"  # type: ignore[index]
    shown = _json_lines(_ok(run_cli("show", str(doc["id"])[:8], "--json")))[0]
    assert shown["id"] == doc["id"]
    found = _json_lines(_ok(run_cli("search", "truing", "--json")))
    assert [r["id"] for r in found] == [doc["id"]]
    assert _ok(run_cli("search", "nonexistentword")).out == ""
    human = _ok(run_cli("show", str(doc["id"]))).out
    assert "document:    complete" in human


def test_same_file_shared_twice_is_one_blob(run_cli: CliRunner, home: Path, guide: Path) -> None:
    _ok(run_cli("share", str(guide), "--title", "One"))
    _ok(run_cli("share", str(guide), "--title", "Two"))
    roots = {d["root"] for d in _json_lines(_ok(run_cli("list", "--kind", "doc", "--json")))}
    assert len(roots) == 1
    blobs = [p for p in (home / "blobs").rglob("*") if p.is_file() and len(p.name) == 64]
    assert len(blobs) == 1


def test_recommend_repost_follow_retract(run_cli: CliRunner, home: Path, guide: Path) -> None:
    _ok(run_cli("share", str(guide), "--title", "Open guide", "--licence", "CC0-1.0"))
    doc_id = _json_lines(run_cli("list", "--kind", "doc", "--json"))[0]["id"]
    _ok(run_cli("recommend", str(doc_id), "--text", "Clear and useful", "--rating", "5"))
    _ok(run_cli("recommend", "https://example.org/shop", "--text", "Friendly bakery"))
    recs = _json_lines(run_cli("list", "--kind", "rec", "--json"))
    assert {r["body"]["subject_type"] for r in recs} == {"record", "url"}  # type: ignore[index]
    _ok(run_cli("repost", str(doc_id), "--note", "worth a read"))
    repost = _json_lines(run_cli("list", "--kind", "repost", "--json"))[0]
    assert repost["original"]["id"] == doc_id  # type: ignore[index]
    other = "12D3KooWPRbMvP45QaKLVxhG285gcov5FvY75eGwYnWKgm25C6qB"
    _ok(run_cli("follow", other))
    _ok(run_cli("unfollow", other))
    _ok(run_cli("retract", str(doc_id)))
    _fails_cleanly(run_cli("show", str(doc_id)), "no record")
    blobs = [p for p in (home / "blobs").rglob("*") if p.is_file() and len(p.name) == 64]
    assert len(blobs) == 1, "a retracted own pinned file keeps its blob"


def test_all_rights_reserved_cannot_be_reposted(
    run_cli: CliRunner, home: Path, guide: Path
) -> None:
    _ok(run_cli("share", str(guide), "--title", "Price list"))
    doc_id = _json_lines(run_cli("list", "--kind", "doc", "--json"))[0]["id"]
    _fails_cleanly(run_cli("repost", str(doc_id)), "does not allow republishing")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["share", "/nonexistent/file.pdf", "--title", "x"], "no such file"),
        (["share", "{guide}", "--title", "x", "--licence", "WTFPL-9"], "unknown licence"),
        (["share", "{guide}", "--title", "x", "--community", "bad/name"], "community"),
        (["recommend", "zzzz", "--text", "x"], "no record"),
        (["recommend", "!!", "--text", "x"], "not a record id"),
        (["recommend", "https://x.org", "--text", "x", "--rating", "9"], "rating"),
        (["follow", "not-a-key"], "not a peer key"),
        (["show", "aaaaaaaa"], "no record"),
        (["import", "/nonexistent/bundle.tar"], "does not exist"),
    ],
)
def test_bad_input_is_one_clear_line(
    run_cli: CliRunner, home: Path, guide: Path, args: list[str], needle: str
) -> None:
    before = run_cli("list", "--limit", "0", "--json").out
    _fails_cleanly(run_cli(*[a.replace("{guide}", str(guide)) for a in args]), needle)
    assert run_cli("list", "--limit", "0", "--json").out == before


def test_unreadable_file_is_refused(run_cli: CliRunner, home: Path, guide: Path) -> None:
    if os.geteuid() == 0:
        # root reads anything; make the path a directory instead, which no one can share
        _fails_cleanly(run_cli("share", str(guide.parent), "--title", "x"), "not a readable file")
        return
    guide.chmod(0)
    _fails_cleanly(run_cli("share", str(guide), "--title", "x"), "cannot read")


def test_world_readable_key_is_refused(run_cli: CliRunner, home: Path) -> None:
    (home / "identity.key").chmod(0o644)
    _fails_cleanly(run_cli("id"), "chmod 600")


def test_identity_export_import_moves_to_a_new_machine(
    run_cli: CliRunner, home: Path, tmp_path: Path
) -> None:
    backup = tmp_path / "backup.key"
    _ok(run_cli("identity", "export", str(backup)))
    assert backup.stat().st_mode & 0o077 == 0
    new_home = tmp_path / "new-machine"
    _ok(run_cli("identity", "import", str(backup), data_dir=new_home))
    assert run_cli("id", data_dir=new_home).out == run_cli("id").out
    _fails_cleanly(run_cli("identity", "export", str(backup)), "already exists")
