"""The control methods behind the TUI's feed, document and peers screens, on a real library."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from p2pshare.node.api import LibraryApi
from p2pshare.node.library import Library, LibraryError
from p2pshare.protocol.keys import peer_id_from_public_key
from p2pshare.protocol.records import create_record
from tests.node.test_store import BOB, CAROL, pub

MakeLibrary = Callable[..., Library]


def peer(key: object) -> str:
    return peer_id_from_public_key(pub(key))  # type: ignore[arg-type]


@pytest.fixture
def api(make_library: MakeLibrary) -> LibraryApi:
    return LibraryApi(make_library("me"))


def share(api: LibraryApi, tmp_path: Path, title: str, licence: str = "CC-BY-4.0") -> str:
    path = tmp_path / f"{title}.md"
    path.write_text(f"# {title}\n")
    return str(api.call("share", {"path": str(path), "title": title, "licence": licence})["id"])


def test_feed_views_carry_trust_and_how_many_people_i_follow_recommend_them(
    api: LibraryApi, tmp_path: Path
) -> None:
    guide = share(api, tmp_path, "Wheel guide")
    record = api.library.find(guide)
    bob_rec = create_record(
        BOB, "rec", {"subject_type": "record", "subject": record.id, "text": "yes"}
    )
    carol_rec = create_record(
        CAROL, "rec", {"subject_type": "record", "subject": record.id, "text": "yes"}
    )
    api.library.ingest([bob_rec, carol_rec])
    api.call("follow", {"key": peer(BOB)})  # Carol is not followed: her vouch is not counted

    page = api.call("feed", {"limit": 10})

    by_id = {v["id"]: v for v in page["records"]}
    assert by_id[guide]["trust"] == 0 and by_id[guide]["recommended_by"] == 1
    assert by_id[guide]["recommended_by_me"] is False
    api.call("recommend", {"target": guide, "text": "mine, and good"})
    again = {v["id"]: v for v in api.call("feed", {"limit": 10})["records"]}
    assert again[guide]["recommended_by"] == 1 and again[guide]["recommended_by_me"] is True
    assert page["total"] == 3 and isinstance(page["snapshot"], int)
    later = api.call(
        "feed", {"limit": 10, "offset": 1, "snapshot": page["snapshot"], "count": False}
    )
    assert later["total"] is None and len(later["records"]) == 2


def test_vouches_lists_trusted_recommendations_and_every_repost(
    api: LibraryApi, tmp_path: Path
) -> None:
    guide = share(api, tmp_path, "Wheel guide")
    record = api.library.find(guide)
    api.call("recommend", {"target": guide, "text": "my own guide, tested"})
    repost = create_record(BOB, "repost", {"original": record.wire})
    stranger_rec = create_record(
        CAROL, "rec", {"subject_type": "record", "subject": record.id, "text": "who am I"}
    )
    api.library.ingest([repost, stranger_rec])

    vouches = api.call("vouches", {"id": guide})

    assert [v["body"]["text"] for v in vouches["recommended_by"]] == ["my own guide, tested"]
    assert vouches["recommended_by"][0]["trust"] == 0
    assert [v["author"] for v in vouches["reposted_by"]] == [peer(BOB)]
    assert vouches["reposted_by"][0]["original"]["id"] == guide


def test_people_describes_peers_and_lists_follows_and_blocks(api: LibraryApi) -> None:
    api.library.ingest([create_record(BOB, "profile", {"name": "Bob's Bikes", "about": "hi"})])
    api.call("follow", {"key": peer(BOB)})
    api.call("block", {"key": peer(CAROL)})
    me = peer_id_from_public_key(api.library.identity.public_key)

    people = api.call("people", {"keys": [me], "following": True, "blocked": True})["people"]

    by_id = {p["peer_id"]: p for p in people}
    assert set(by_id) == {me, peer(BOB), peer(CAROL)}
    assert by_id[peer(BOB)]["name"] == "Bob's Bikes"
    assert by_id[peer(BOB)]["profile"]["about"] == "hi"
    assert by_id[peer(BOB)]["following"] and by_id[peer(BOB)]["trust"] == 1
    assert by_id[peer(BOB)]["records"] == 1
    assert by_id[peer(CAROL)]["blocked"] and not by_id[peer(CAROL)]["following"]
    assert by_id[me]["me"] and by_id[me]["trust"] == 0


def test_people_refuses_a_key_that_is_not_one(api: LibraryApi) -> None:
    with pytest.raises(LibraryError):
        api.call("people", {"keys": ["nonsense"]})
