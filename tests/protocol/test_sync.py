"""Set reconciliation: exact differences, bounded frames, strict refusal of bad input."""

from __future__ import annotations

import bisect
import hashlib
import itertools
import random
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pshare.protocol import canonical
from p2pshare.protocol import limits as L
from p2pshare.protocol import sync as S
from p2pshare.protocol.sync import (
    Bound,
    Item,
    QuerySyncSet,
    Reconciler,
    Role,
    SortedSyncSet,
    SyncProtocolError,
    SyncSet,
    SyncStateError,
)

T0 = 1_700_000_000_000


@st.composite
def _set_pairs(draw: st.DrawFn) -> tuple[list[Item], list[Item]]:
    """Two sets with a random overlap; narrow timestamps and shared id prefixes on demand."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    spread = draw(st.sampled_from([1, 3, 1000, 2**40]))
    shared_prefix = rng.randbytes(draw(st.sampled_from([0, 0, 4, 29])))
    seen: set[bytes] = set()  # an id is a hash over its record, created_ms included: never reused

    def items(n: int) -> list[Item]:
        out: list[Item] = []
        while len(out) < n:
            record_id = shared_prefix + rng.randbytes(32 - len(shared_prefix))
            if record_id not in seen:
                seen.add(record_id)
                out.append((T0 + rng.randrange(spread), record_id))
        return out

    common = items(draw(st.integers(0, 400)))
    only_a = items(draw(st.sampled_from([0, 1, 2, 9, 60, 600])))
    only_b = items(draw(st.sampled_from([0, 1, 2, 9, 60, 600])))
    return common + only_a, common + only_b


class Exchange:
    """Both sides of one reconciliation run to completion in memory, with every message kept."""

    def __init__(self, a: SyncSet, b: SyncSet, **options: Any) -> None:
        self.initiator = Reconciler(a, Role.INITIATOR, **options)
        self.responder = Reconciler(b, Role.RESPONDER, **options)
        self.messages: list[bytes] = [self.initiator.initiate()]
        side = self.responder
        while True:
            reply = side.receive(self.messages[-1])
            if reply is None:
                break
            self.messages.append(reply)
            side = self.initiator if side is self.responder else self.responder
            assert len(self.messages) < 10_000, "reconciliation does not terminate"

    def bytes_each_way(self) -> tuple[int, int]:
        return self.initiator.bytes_sent, self.responder.bytes_sent


def _ids(items: Sequence[Item]) -> set[bytes]:
    return {record_id for _, record_id in items}


def _random_items(rng: random.Random, n: int, spread: int = 10**10) -> list[Item]:
    return [(T0 + rng.randrange(spread), rng.randbytes(32)) for _ in range(n)]


def _assert_exact(run: Exchange, a: Sequence[Item], b: Sequence[Item]) -> None:
    a_ids, b_ids = _ids(a), _ids(b)
    assert run.initiator.done and run.responder.done
    assert run.initiator.want_ids == b_ids - a_ids
    assert run.initiator.offer_ids == a_ids - b_ids
    assert run.responder.want_ids == a_ids - b_ids
    assert run.responder.offer_ids == b_ids - a_ids


# --- convergence ----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pair=_set_pairs(),
    frame_limit=st.sampled_from([S.MIN_FRAME_LIMIT, 16_384, S.MAX_MESSAGE_BYTES]),
    branching=st.sampled_from([2, 8, 32]),
    threshold=st.sampled_from([1, 8, 64]),
)
def test_random_sets_converge_to_their_exact_differences_on_both_sides(
    pair: tuple[list[Item], list[Item]], frame_limit: int, branching: int, threshold: int
) -> None:
    a, b = pair
    run = Exchange(
        SortedSyncSet(a),
        SortedSyncSet(b),
        frame_limit=frame_limit,
        branching=branching,
        id_list_threshold=threshold,
    )
    _assert_exact(run, a, b)
    assert max(len(message) for message in run.messages) <= frame_limit


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), frame_limit=st.sampled_from([S.MIN_FRAME_LIMIT, 65536]))
def test_peers_with_different_parameters_still_converge(seed: int, frame_limit: int) -> None:
    rng = random.Random(seed)
    common = _random_items(rng, rng.randrange(300), spread=rng.choice([2, 10**6]))
    a = common + _random_items(rng, rng.randrange(200))
    b = common + _random_items(rng, rng.randrange(200))
    initiator = Reconciler(SortedSyncSet(a), Role.INITIATOR, branching=2, id_list_threshold=1)
    responder = Reconciler(
        SortedSyncSet(b),
        Role.RESPONDER,
        frame_limit=frame_limit,
        branching=32,
        id_list_threshold=64,
    )
    message: bytes | None = initiator.initiate()
    side = responder
    while message is not None:
        message = side.receive(message)
        side = initiator if side is responder else responder
    assert initiator.want_ids == _ids(b) - _ids(a) == responder.offer_ids
    assert initiator.offer_ids == _ids(a) - _ids(b) == responder.want_ids


@pytest.mark.parametrize(("n_a", "n_b"), [(0, 0), (0, 50), (50, 0), (0, 3000), (3000, 0)])
def test_an_empty_side_learns_everything_the_other_has(n_a: int, n_b: int) -> None:
    rng = random.Random(n_a * 7 + n_b)
    a, b = _random_items(rng, n_a), _random_items(rng, n_b)
    run = Exchange(SortedSyncSet(a), SortedSyncSet(b), frame_limit=S.MIN_FRAME_LIMIT)
    _assert_exact(run, a, b)
    assert max(len(message) for message in run.messages) <= S.MIN_FRAME_LIMIT


def test_a_large_catch_up_is_split_into_frames_of_at_most_the_limit() -> None:
    rng = random.Random(5)
    a = _random_items(rng, 20_000)
    run = Exchange(SortedSyncSet([]), SortedSyncSet(a))
    _assert_exact(run, [], a)
    assert max(len(message) for message in run.messages) <= S.MAX_MESSAGE_BYTES
    # ids travel once each, ~32 bytes apiece: 20,000 ids need at least 10 full frames
    assert 32 * 20_000 < sum(run.bytes_each_way()) < 34 * 20_000
    assert len(run.messages) >= 2 * (32 * 20_000 // S.MAX_MESSAGE_BYTES)


def test_a_reply_too_big_for_the_frame_is_cut_short_and_the_rest_fingerprinted() -> None:
    items = sorted(_random_items(random.Random(6), 5000))
    local = SortedSyncSet(items)
    responder = Reconciler(local, Role.RESPONDER, frame_limit=S.MIN_FRAME_LIMIT)
    reply = responder.receive(canonical.pack({"r": [[2, None, b"", b"", []]], "v": 1}))
    assert reply is not None and len(reply) <= S.MIN_FRAME_LIMIT
    (mode, delta, prefix, ids, bits), (last_mode, *rest) = msgpack.unpackb(reply)["r"]
    cut = (delta, prefix)
    sent = [ids[i : i + 32] for i in range(0, len(ids), 32)]
    assert (mode, bits, last_mode) == (3, b"", 1)
    assert len(sent) > 100 and sent == [i for _, i in items[: len(sent)]]
    assert items[len(sent) - 1] < cut <= items[len(sent)]
    assert rest == [None, b"", S.fingerprint(*local.summary(cut, None))]
    assert responder.offer_ids == set(sent)


class CountingSet(SortedSyncSet):
    """Counts the items handed out, to show how much of the set one answer reads."""

    read = 0

    def items(self, lo: Bound, hi: Bound | None, limit: int) -> Sequence[Item]:
        rows = super().items(lo, hi, limit)
        self.read += len(rows)
        return rows


def test_answering_an_id_list_reads_only_what_the_reply_carries() -> None:
    rng = random.Random(8)
    local = CountingSet(_random_items(rng, 100_000))
    strangers = sorted(_random_items(rng, 5))
    stamps = [strangers[0][0]] + [b[0] - a[0] for a, b in itertools.pairwise(strangers)]
    listed = b"".join(i for _, i in strangers)
    responder = Reconciler(local, Role.RESPONDER)
    reply = responder.receive(canonical.pack({"r": [[2, None, b"", listed, stamps]], "v": 1}))
    assert reply is not None
    assert responder.want_ids == {i for _, i in strangers}
    sent = len(responder.offer_ids)
    assert 1000 < sent < S.MAX_IDS_PER_MESSAGE
    assert local.read <= sent + 10  # not the 100,000 in the range


@settings(max_examples=30, deadline=None)
@given(pair=_set_pairs())
def test_messages_stay_within_the_range_limit_and_still_converge(
    pair: tuple[list[Item], list[Item]],
) -> None:
    a, b = pair
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(S, "MAX_RANGES_PER_MESSAGE", 12)
        run = Exchange(SortedSyncSet(a), SortedSyncSet(b), branching=4, id_list_threshold=1)
        assert max(len(S.decode_message(message)) for message in run.messages) <= 12
    _assert_exact(run, a, b)


def test_items_sharing_one_timestamp_and_long_id_prefixes_converge() -> None:
    rng = random.Random(9)
    prefix = b"\x07" * 30
    common = [(T0, prefix + rng.randbytes(2)) for _ in range(500)]
    a = common + [(T0, prefix + bytes([255, i])) for i in range(40)]
    b = common + [(T0, prefix + bytes([0, i])) for i in range(40)]
    _assert_exact(Exchange(SortedSyncSet(a), SortedSyncSet(b)), a, b)


# --- cost -----------------------------------------------------------------------------------------


def test_identical_sets_settle_in_one_round_trip_of_a_few_dozen_bytes() -> None:
    items = _random_items(random.Random(1), 10_000)
    run = Exchange(SortedSyncSet(items), SortedSyncSet(list(reversed(items))))
    assert len(run.messages) == 2
    sent, replied = run.bytes_each_way()
    assert sent <= 40 and replied <= 10
    assert run.initiator.want_ids == run.initiator.offer_ids == set()


def test_bytes_grow_with_the_difference_not_with_the_set_size() -> None:
    rng = random.Random(2024)
    extra_a, extra_b = _random_items(rng, 5), _random_items(rng, 5)
    small, large = _random_items(rng, 1_000), _random_items(rng, 100_000)

    def cost(base: list[Item], a_extra: list[Item], b_extra: list[Item]) -> int:
        run = Exchange(SortedSyncSet(base + a_extra), SortedSyncSet(base + b_extra))
        _assert_exact(run, base + a_extra, base + b_extra)
        return sum(run.bytes_each_way())

    small_cost = cost(small, extra_a, extra_b)
    large_cost = cost(large, extra_a, extra_b)
    assert large_cost < 3 * small_cost  # 100x the items: about 2x the bytes (a log factor)
    more = _random_items(rng, 90)
    assert cost(large, extra_a + more, extra_b) > 5 * large_cost  # 10x the difference


# --- wire form ------------------------------------------------------------------------------------


def test_opening_message_is_one_fingerprint_over_everything_and_in_sync_reply_is_empty() -> None:
    items = _random_items(random.Random(3), 100)
    local = SortedSyncSet(items)
    first = Reconciler(local, Role.INITIATOR).initiate()
    count, total = local.summary(S.MIN_BOUND, None)
    assert first == canonical.pack({"r": [[1, None, b"", S.fingerprint(count, total)]], "v": 1})
    reply = Reconciler(SortedSyncSet(items), Role.RESPONDER).receive(first)
    assert reply == canonical.pack({"r": [], "v": 1})


def test_small_difference_is_settled_by_an_id_list_and_an_id_reply() -> None:
    x1, x2, x3 = (T0 + 1, b"\x01" * 32), (T0 + 2, b"\x02" * 32), (T0 + 3, b"\x03" * 32)
    initiator = Reconciler(SortedSyncSet([x1, x2]), Role.INITIATOR)
    responder = Reconciler(SortedSyncSet([x2, x3]), Role.RESPONDER)
    id_list = responder.receive(initiator.initiate())
    assert id_list is not None
    # timestamps as deltas: the first from the range's lower bound (0), then from the one before
    assert msgpack.unpackb(id_list) == {"r": [[2, None, b"", x2[1] + x3[1], [T0 + 2, 1]]], "v": 1}
    id_reply = initiator.receive(id_list)
    assert id_reply is not None and initiator.done
    # our x1 is new to them; of their list [x2, x3] we lack x3 (bit 1 = 0x40)
    assert msgpack.unpackb(id_reply) == {"r": [[3, None, b"", x1[1], b"\x40"]], "v": 1}
    assert responder.receive(id_reply) is None and responder.done
    assert initiator.want_ids == responder.offer_ids == {x3[1]}
    assert initiator.offer_ids == responder.want_ids == {x1[1]}


def test_split_bounds_are_timestamp_deltas_with_the_shortest_distinguishing_prefix() -> None:
    items = [(T0 + (i + 1) // 2, bytes([i]) * 32) for i in range(40)]  # 1+2, 3+4, ... share a ts
    responder = Reconciler(SortedSyncSet(items), Role.RESPONDER, branching=4)
    wrong = canonical.pack({"r": [[1, None, b"", b"\x00" * 16]], "v": 1})
    reply = responder.receive(wrong)
    assert reply is not None
    ranges = msgpack.unpackb(reply)["r"]
    # cuts fall between items 9|10, 19|20, 29|30: same timestamp, ids differ in the first byte
    assert [r[:3] for r in ranges] == [
        [1, T0 + 5, b"\x0a"],
        [1, 5, b"\x14"],
        [1, 5, b"\x1e"],
        [1, None, b""],
    ]
    counts = [S.SortedSyncSet(items).summary(lo, hi)[0] for lo, hi in _consecutive(ranges)]
    assert counts == [10, 10, 10, 10]


def _consecutive(ranges: list[list[Any]]) -> list[tuple[Bound, Bound | None]]:
    """The [lower, upper) bounds of decoded wire ranges."""
    spans: list[tuple[Bound, Bound | None]] = []
    lower: Bound = S.MIN_BOUND
    for _mode, delta, prefix, *_ in ranges:
        upper = None if delta is None else (lower[0] + delta, prefix)
        spans.append((lower, upper))
        if upper is not None:
            lower = upper
    return spans


def test_fingerprint_is_negentropys_sum_of_little_endian_ids_and_msb_first_varint_count() -> None:
    assert S.fingerprint(0, 0) == hashlib.sha256(bytes(32) + b"\x00").digest()[:16]
    ids = [b"\xff" * 32, b"\x01" + bytes(31)]  # sums to 2**256: wraps to zero
    local = SortedSyncSet([(1, i) for i in ids])
    assert local.summary(S.MIN_BOUND, None) == (2, 0)
    assert S.fingerprint(2, 0) == hashlib.sha256(bytes(32) + b"\x02").digest()[:16]
    assert (
        S.fingerprint(300, 5) == hashlib.sha256(bytes([5]) + bytes(31) + b"\x82\x2c").digest()[:16]
    )


# --- strict decoding ------------------------------------------------------------------------------

FP = b"\x00" * 16
ID1, ID2 = b"\x11" * 32, b"\x22" * 32

BAD_MESSAGES: dict[str, Any] = {
    "not a map": [1, []],
    "extra key": {"r": [], "v": 1, "x": 0},
    "missing r": {"v": 1},
    "version 2": {"r": [], "v": 2},
    "version true": {"r": [], "v": True},
    "ranges not a list": {"r": b"", "v": 1},
    "range not a list": {"r": [1], "v": 1},
    "unknown mode": {"r": [[4, None, b""]], "v": 1},
    "bool mode": {"r": [[True, None, b"", FP]], "v": 1},
    "skip with payload": {"r": [[0, 5, b"", FP], [1, None, b"", FP]], "v": 1},
    "fingerprint missing": {"r": [[1, None, b""]], "v": 1},
    "short fingerprint": {"r": [[1, None, b"", b"\x00" * 15]], "v": 1},
    "fingerprint as str": {"r": [[1, None, b"", "0" * 16]], "v": 1},
    "trailing skip": {"r": [[1, 5, b"", FP], [0, None, b""]], "v": 1},
    "adjacent skips": {"r": [[0, 5, b""], [0, 6, b""], [1, None, b"", FP]], "v": 1},
    "infinite bound not last": {"r": [[1, None, b"", FP], [1, None, b"", FP]], "v": 1},
    "infinite bound with a prefix": {"r": [[1, None, b"\x01", FP]], "v": 1},
    "empty first range": {"r": [[1, 0, b"", FP]], "v": 1},
    "equal bounds": {"r": [[1, 5, b"\x01", FP], [1, 0, b"\x01", FP]], "v": 1},
    "decreasing bounds": {"r": [[1, 5, b"\x02", FP], [1, 0, b"\x01", FP]], "v": 1},
    "negative delta": {"r": [[1, 5, b"", FP], [1, -1, b"\x09", FP]], "v": 1},
    "bound past MAX_CREATED_MS": {"r": [[1, L.MAX_CREATED_MS + 1, b"", FP]], "v": 1},
    "prefix of 33 bytes": {"r": [[1, 5, b"\x01" * 33, FP]], "v": 1},
    "prefix as str": {"r": [[1, 5, "a", FP]], "v": 1},
    "ids not whole": {"r": [[2, None, b"", b"\x01" * 33, [0]]], "v": 1},
    "id listed twice": {"r": [[2, None, b"", ID1 + ID1, [1, 0]]], "v": 1},
    "id list without stamps": {"r": [[2, None, b"", ID1]], "v": 1},
    "stamps count differs": {"r": [[2, None, b"", ID1, [1, 2]]], "v": 1},
    "negative stamp": {"r": [[2, None, b"", ID1, [-1]]], "v": 1},
    "bool stamp": {"r": [[2, None, b"", ID1, [True]]], "v": 1},
    "stamp past MAX_CREATED_MS": {"r": [[2, None, b"", ID1, [L.MAX_CREATED_MS + 1]]], "v": 1},
    "listed item below its range": {"r": [[1, 10, b"\xff", FP], [2, None, b"", ID1, [0]]], "v": 1},
    "listed item at its upper bound": {"r": [[2, 10, b"", ID1, [10]], [1, None, b"", FP]], "v": 1},
    "listed items descending": {"r": [[2, None, b"", ID2 + ID1, [5, 0]]], "v": 1},
    "id reply answering nothing": {"r": [[3, None, b"", b"", b""]], "v": 1},
    "id reply without bits": {"r": [[3, None, b"", b""]], "v": 1},
    "too many ranges": {
        "r": [[2, 1, b"", b"", []] for _ in range(S.MAX_RANGES_PER_MESSAGE)] + [[1, None, b"", FP]],
        "v": 1,
    },
}


@pytest.mark.parametrize("name", sorted(BAD_MESSAGES))
def test_malformed_messages_are_refused(name: str) -> None:
    responder = Reconciler(SortedSyncSet([(T0, ID1)]), Role.RESPONDER)
    with pytest.raises(SyncProtocolError):
        responder.receive(canonical.pack(BAD_MESSAGES[name]))
    with pytest.raises(SyncStateError):  # a failed reconciliation stays failed
        responder.receive(canonical.pack({"r": [], "v": 1}))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgpack.packb({"v": 1, "r": []}),  # keys out of order: not canonical
        canonical.pack({"r": [], "v": 1}) + b"\x00",
        canonical.pack({"r": [[2, None, b"", b"\x00" * (S.MAX_MESSAGE_BYTES - 32)]], "v": 1}),
    ],
    ids=["empty", "reserved byte", "non-canonical", "trailing byte", "over 64 KiB"],
)
def test_undecodable_or_oversized_messages_are_refused(data: bytes) -> None:
    with pytest.raises(SyncProtocolError):
        Reconciler(SortedSyncSet([]), Role.RESPONDER).receive(data)


def _initiator_awaiting_an_id_reply() -> tuple[Reconciler, list[bytes]]:
    """An initiator that has just sent its 3 ids as an id list for the whole range."""
    ids = [bytes([i]) * 32 for i in (1, 2, 3)]
    initiator = Reconciler(SortedSyncSet([(T0, i) for i in ids]), Role.INITIATOR)
    initiator.initiate()
    mismatch = canonical.pack({"r": [[1, None, b"", b"\xee" * 16]], "v": 1})
    id_list = initiator.receive(mismatch)
    assert msgpack.unpackb(id_list) == {"r": [[2, None, b"", b"".join(ids), [T0, 0, 0]]], "v": 1}
    return initiator, ids


def test_a_valid_id_reply_tells_the_initiator_what_to_fetch_and_offer() -> None:
    initiator, ids = _initiator_awaiting_an_id_reply()
    reply = canonical.pack({"r": [[3, None, b"", ID2, b"\xa0"]], "v": 1})
    assert initiator.receive(reply) is None and initiator.done
    assert initiator.want_ids == {ID2}
    assert initiator.offer_ids == {ids[0], ids[2]}


@pytest.mark.parametrize(
    "ranges",
    [
        [[3, None, b"", b"", b""]],  # bitmap for 0 ids, but 3 were listed
        [[3, None, b"", b"", b"\x00\x00"]],  # bitmap two bytes long
        [[3, None, b"", b"", b"\x10"]],  # padding bit set
        [[3, None, b"", b"\x02" * 32, b"\x00"]],  # offers back an id we listed
        [[0, 5, b""], [3, None, b"", b"", b"\x00"]],  # answers from a lower bound we never used
        [[0, 5, b""], [1, None, b"", FP]],  # our id list was skipped, not answered or reopened
        [],  # final message leaving our id list unanswered
    ],
    ids=["bits short", "bits long", "padding", "echo", "wrong start", "skipped", "final"],
)
def test_an_id_reply_that_does_not_match_our_id_list_is_refused(ranges: list[Any]) -> None:
    initiator, _ = _initiator_awaiting_an_id_reply()
    with pytest.raises(SyncProtocolError):
        initiator.receive(canonical.pack({"r": ranges, "v": 1}))


def test_an_id_list_reopened_by_a_fingerprint_is_forgotten_not_an_error() -> None:
    initiator, _ = _initiator_awaiting_an_id_reply()
    reply = initiator.receive(canonical.pack({"r": [[1, None, b"", FP]], "v": 1}))
    assert reply is not None and not initiator.done


_wire_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 2**64 - 1),
    st.binary(max_size=70),
    st.sampled_from([FP, ID1, ID1 + ID2, b"\xa0", b""]),
)
_ID_POOL = [bytes([i]) * 32 for i in (1, 2, 3, 0x11, 0x22)]
_delta = st.none() | st.integers(0, 3) | st.just(T0)
_prefix = st.sampled_from([b"", b"\x01", b"\x02\x02", b"\x11" * 32])
_id_blob = st.lists(st.sampled_from(_ID_POOL), max_size=3, unique=True).map(b"".join)
_typed_range = st.one_of(
    st.tuples(st.just(0), _delta, _prefix).map(list),
    st.tuples(st.just(1), _delta, _prefix, st.sampled_from([FP, b"\xee" * 16])).map(list),
    st.tuples(st.just(2), _delta, _prefix, _id_blob, st.lists(st.integers(0, 3) | st.just(T0))).map(
        list
    ),
    st.tuples(st.just(3), _delta, _prefix, _id_blob, st.sampled_from([b"", b"\xa0", b"\x00"])).map(
        list
    ),
)
_wire_range = st.one_of(
    _typed_range,
    _typed_range,
    st.builds(
        lambda mode, rest: [mode, *rest], st.integers(-1, 4), st.lists(_wire_value, max_size=5)
    ),
)
_wire_message = st.builds(
    lambda ranges, version, extra: {"r": ranges, "v": version, **extra},
    st.lists(_wire_range, max_size=12),
    st.sampled_from([1, 1, 1, 2]),
    st.sampled_from([{}, {}, {"x": 1}]),
)


def _check_answer(reconciler: Reconciler, data: bytes) -> None:
    try:
        reply = reconciler.receive(data)
    except SyncProtocolError:
        return
    if reply is not None:
        assert len(reply) <= S.MAX_MESSAGE_BYTES
        S.decode_message(reply)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_sync_protocol_error(data: bytes) -> None:
    _check_answer(Reconciler(SortedSyncSet([(T0, ID1)]), Role.RESPONDER), data)


@settings(max_examples=300, deadline=None)
@given(message=_wire_message, waiting=st.booleans())
def test_arbitrary_well_formed_msgpack_raises_only_sync_protocol_error(
    message: dict[str, Any], waiting: bool
) -> None:
    if waiting:
        reconciler, _ = _initiator_awaiting_an_id_reply()
    else:
        reconciler = Reconciler(SortedSyncSet(_random_items(random.Random(1), 50)), Role.RESPONDER)
    _check_answer(reconciler, canonical.pack(message))


# --- limits and states ----------------------------------------------------------------------------


def test_a_peer_that_never_agrees_is_cut_off_after_max_rounds() -> None:
    items = _random_items(random.Random(4), 100)
    responder = Reconciler(SortedSyncSet(items), Role.RESPONDER, max_rounds=3)
    disagree = canonical.pack({"r": [[1, None, b"", FP]], "v": 1})
    for _ in range(3):
        assert responder.receive(disagree) is not None
    with pytest.raises(SyncProtocolError, match="3 messages"):
        responder.receive(disagree)


def test_calls_out_of_order_are_state_errors() -> None:
    local = SortedSyncSet([])
    with pytest.raises(SyncStateError):
        Reconciler(local, Role.RESPONDER).initiate()
    initiator = Reconciler(local, Role.INITIATOR)
    with pytest.raises(SyncStateError):
        initiator.receive(canonical.pack({"r": [], "v": 1}))
    first = initiator.initiate()
    with pytest.raises(SyncStateError):
        initiator.initiate()
    responder = Reconciler(local, Role.RESPONDER)
    final = responder.receive(first)
    assert final is not None and responder.done
    with pytest.raises(SyncStateError):
        responder.receive(first)
    assert initiator.receive(final) is None and initiator.done


@pytest.mark.parametrize(
    "options",
    [
        {"frame_limit": S.MIN_FRAME_LIMIT - 1},
        {"frame_limit": S.MAX_MESSAGE_BYTES + 1},
        {"branching": 1},
        {"id_list_threshold": 0},
        {"max_rounds": 0},
    ],
)
def test_unworkable_options_are_refused(options: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        Reconciler(SortedSyncSet([]), Role.INITIATOR, **options)


@pytest.mark.parametrize("item", [(T0, b"\x00" * 31), (-1, ID1), (True, ID1), [T0, ID1]])
def test_local_items_must_be_timestamp_and_32_byte_id(item: Any) -> None:
    with pytest.raises(ValueError):
        SortedSyncSet([item])


# --- set implementations --------------------------------------------------------------------------


def _brute(items: list[Item], lo: Bound, hi: Bound | None) -> list[Item]:
    return sorted(i for i in set(items) if lo <= i and (hi is None or i < hi))


_bounds = st.tuples(st.integers(0, 6), st.binary(max_size=3))


@settings(max_examples=200, deadline=None)
@given(
    raw=st.lists(st.tuples(st.integers(0, 5), st.binary(min_size=1, max_size=1)), max_size=60),
    lo=_bounds,
    hi=st.none() | _bounds,
    parts=st.integers(2, 9),
)
def test_sorted_set_answers_like_a_brute_force_scan(
    raw: list[tuple[int, bytes]], lo: Bound, hi: Bound | None, parts: int
) -> None:
    items = [(ts, first * 32) for ts, first in raw]
    local = SortedSyncSet(items)
    expected = _brute(items, lo, hi)
    total = sum(S.id_value(i) for _, i in expected) % 2**256
    assert local.summary(lo, hi) == (len(expected), total)
    assert list(local.items(lo, hi, 5)) == expected[:5]
    if len(expected) >= parts:
        cuts = local.split_points(lo, hi, parts)
        ranks = [len(expected) * k // parts for k in range(1, parts)]
        assert cuts == [(expected[r - 1], expected[r]) for r in ranks]


@settings(max_examples=200, deadline=None)
@given(
    stamps=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    common=st.binary(max_size=31),
    tails=st.tuples(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32)),
)
def test_separator_is_the_shortest_bound_between_neighbours(
    stamps: tuple[int, int], common: bytes, tails: tuple[bytes, bytes]
) -> None:
    x, y = ((ts, (common + tail)[:32]) for ts, tail in zip(stamps, tails, strict=True))
    below, above = sorted([x, y])
    if below == above:
        return
    bound = S.separator(below, above)
    assert below < bound <= above
    if below[0] != above[0]:
        assert bound == (above[0], b"")
    else:
        shared = next(i for i, (p, q) in enumerate(zip(below[1], above[1], strict=True)) if p != q)
        assert bound == (above[0], above[1][: shared + 1])


def _store_like(sets: dict[str, list[Item]]) -> Callable[..., list[Item]]:
    """Mimics Store.range_items(community, lo, hi, limit): None bounds are open."""
    ordered = {community: sorted(set(items)) for community, items in sets.items()}

    def range_items(
        community: str, lo: Bound | None, hi: Bound | None, limit: int | None
    ) -> list[Item]:
        rows = ordered[community]
        start = 0 if lo is None else bisect.bisect_left(rows, lo)
        end = len(rows) if hi is None else max(start, bisect.bisect_left(rows, hi))
        return rows[start:end] if limit is None else rows[start : min(end, start + limit)]

    return range_items


@settings(max_examples=40, deadline=None)
@given(pair=_set_pairs(), page=st.integers(1, 50))
def test_a_query_backed_set_reconciles_exactly_like_the_in_memory_one(
    pair: tuple[list[Item], list[Item]], page: int
) -> None:
    a, b = pair
    store = _store_like({"a": a, "b": b})
    expected = Exchange(SortedSyncSet(a), SortedSyncSet(b))
    queried = Exchange(
        QuerySyncSet(partial(store, "a"), page=page), QuerySyncSet(partial(store, "b"), page=page)
    )
    _assert_exact(queried, a, b)
    assert queried.messages == expected.messages
