"""Multi-peer download planning: every chunk accepted exactly once, from peers that have it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pshare.protocol import transfer as T
from p2pshare.protocol.download_plan import DownloadPlan, Outcome, PeerStatus

CHUNK = 10


def _indices(ranges: list[T.Range] | None) -> list[int]:
    assert ranges is not None
    return [i for start, end in ranges for i in range(start, end)]


def _plan(chunks: int, **kwargs: object) -> DownloadPlan[str]:
    return DownloadPlan(chunks * CHUNK, CHUNK, **kwargs)  # type: ignore[arg-type]


# --- simulated swarm ----------------------------------------------------------------------------


@dataclass
class SimPeer:
    name: str
    has: set[int]
    bad: set[int] = field(default_factory=set)  # chunks it corrupts
    omits: set[int] = field(default_factory=set)  # claims them, leaves them out of responses
    fail_rate: float = 0.0  # chance a response breaks off (reset) instead of ending
    vanish_after: int | None = None  # responses served before it disconnects


@dataclass
class Swarm:
    chunks: int
    last_len: int
    present: set[int]
    peers: list[SimPeer]


@st.composite
def swarms(draw: st.DrawFn) -> Swarm:
    """Stable honest peers whose union covers every chunk, plus bad, flaky and vanishing ones."""
    chunks = draw(st.integers(1, 60))
    present = draw(st.sets(st.integers(0, chunks - 1), max_size=chunks))
    stable_count = draw(st.integers(1, 4))
    stable: list[set[int]] = [set() for _ in range(stable_count)]
    for i in range(chunks):
        owners = draw(st.sets(st.integers(0, stable_count - 1), min_size=1))
        for owner in owners:
            stable[owner].add(i)
    peers = [SimPeer(f"good{n}", has) for n, has in enumerate(stable)]
    for n in range(draw(st.integers(0, 4))):
        has = draw(st.sets(st.integers(0, chunks - 1), min_size=1))
        peers.append(
            SimPeer(
                f"odd{n}",
                has,
                bad=draw(st.sets(st.sampled_from(sorted(has)))),
                omits=draw(st.sets(st.sampled_from(sorted(has)))),
                fail_rate=draw(st.sampled_from([0.0, 0.3, 0.9])),
                vanish_after=draw(st.none() | st.integers(0, 5)),
            )
        )
    order = draw(st.permutations(peers))
    return Swarm(chunks, draw(st.integers(1, CHUNK)), present, list(order))


def _have(peer: SimPeer, chunks: int) -> T.HaveState:
    if len(peer.has) == chunks:
        return True
    return T.make_bitmap(peer.has, chunks)


@dataclass
class RunResult:
    plan: DownloadPlan[str]
    accepted: dict[int, str]
    rejected: list[tuple[str, int]]
    requests: list[tuple[str, list[int]]]
    steps: int


def run_swarm(swarm: Swarm, rng: random.Random, max_steps: int = 20_000) -> RunResult:
    """Drive the plan as a node would, checking every promise it makes along the way."""
    size = (swarm.chunks - 1) * CHUNK + swarm.last_len
    plan: DownloadPlan[str] = DownloadPlan(
        size, CHUNK, swarm.present, max_chunks_per_request=8, steal_after=5.0
    )
    by_name = {p.name: p for p in swarm.peers}
    for peer in swarm.peers:
        assert plan.add_peer(peer.name, _have(peer, swarm.chunks))
    outstanding: dict[str, list[int]] = {}
    served: dict[str, int] = {}
    accepted: dict[int, str] = {}
    rejected: list[tuple[str, int]] = []
    requests: list[tuple[str, list[int]]] = []
    now = 0.0
    for step in range(max_steps):
        for peer in rng.sample(swarm.peers, len(swarm.peers)):
            if peer.name in outstanding:
                continue
            ranges = plan.next_request(peer.name, now)
            if ranges is None:
                continue
            asked = _indices(ranges)
            assert len(asked) <= 8 and len(ranges) <= T.MAX_RANGES_PER_REQUEST
            assert asked == sorted(set(asked))
            for i in asked:
                assert i in peer.has, "asked a peer for a chunk it does not have"
                assert i not in swarm.present, "re-fetched a chunk that was already present"
                assert i not in accepted, "re-fetched a chunk already accepted"
                assert (peer.name, i) not in rejected, "asked again for a chunk it corrupted"
            outstanding[peer.name] = asked
            requests.append((peer.name, asked))
        if not outstanding:
            if plan.done or plan.stuck:
                return RunResult(plan, accepted, rejected, requests, step)
            now += 1.0  # everyone is backing off: let time pass
            continue
        name = rng.choice(sorted(outstanding))
        _serve(plan, by_name[name], outstanding, served, accepted, rejected, rng, now)
        now += rng.choice([0.0, 0.5, 2.0, 6.0])
    raise AssertionError(f"no end after {max_steps} steps")


def _serve(
    plan: DownloadPlan[str],
    peer: SimPeer,
    outstanding: dict[str, list[int]],
    served: dict[str, int],
    accepted: dict[int, str],
    rejected: list[tuple[str, int]],
    rng: random.Random,
    now: float,
) -> None:
    """Deliver part of ``peer``'s outstanding request, then go on later, end, fail or vanish."""
    asked = outstanding[peer.name]
    deliverable = [i for i in asked if i not in peer.omits]
    log = (accepted, rejected)
    _deliver(plan, peer, deliverable[: rng.randint(0, len(deliverable))], asked, log)
    if any(i not in peer.omits for i in asked) and rng.random() < 0.5:
        return  # a slow peer: the response continues later
    del outstanding[peer.name]
    served[peer.name] = served.get(peer.name, 0) + 1
    if peer.vanish_after is not None and served[peer.name] > peer.vanish_after:
        plan.remove_peer(peer.name)
    elif rng.random() < peer.fail_rate:
        plan.request_failed(peer.name, now)  # reset midway: EOF without `end`
    else:  # a clean `end`: everything it does not omit has been sent
        _deliver(plan, peer, [i for i in asked if i not in peer.omits], asked, log)
        plan.request_done(peer.name)


def _deliver(
    plan: DownloadPlan[str],
    peer: SimPeer,
    indices: list[int],
    asked: list[int],
    log: tuple[dict[int, str], list[tuple[str, int]]],
) -> None:
    accepted, rejected = log
    for index in indices:
        asked.remove(index)
        ok = index not in peer.bad
        outcome = plan.chunk_received(peer.name, index, ok)
        if outcome is Outcome.ACCEPTED:
            assert ok
            assert index not in accepted, f"chunk {index} accepted twice"
            accepted[index] = peer.name
        elif outcome is Outcome.REJECTED:
            assert not ok
            rejected.append((peer.name, index))
        elif outcome is Outcome.DUPLICATE:
            assert index in accepted
        else:  # the peer was dropped midway: the rest of its response is ignored
            assert plan.peer_stats()[peer.name].status is PeerStatus.DROPPED


@settings(max_examples=150, deadline=None)
@given(swarms(), st.integers(0, 2**32))
def test_download_completes_with_every_chunk_accepted_exactly_once(swarm: Swarm, seed: int) -> None:
    result = run_swarm(swarm, random.Random(seed))
    plan = result.plan
    assert plan.done and not plan.stuck
    needed = set(range(swarm.chunks)) - swarm.present
    assert set(result.accepted) == needed
    good = {p.name for p in swarm.peers if not p.bad}
    for index, source in result.accepted.items():
        peer = next(p for p in swarm.peers if p.name == source)
        assert index not in peer.bad
    for name, index in result.rejected:  # a bad chunk was fetched again, from someone else
        assert result.accepted[index] != name
    progress = plan.progress()
    assert progress.present_chunks == swarm.chunks
    assert progress.present_bytes == plan.size and progress.fraction == 1.0
    stats = plan.peer_stats()
    assert sum(s.bytes_received for s in stats.values()) == sum(
        plan.chunk_length(i) for i in needed
    )
    assert all(stats[name].strikes == 0 for name in good)
    assert plan.present_bitmap() == T.make_bitmap(range(swarm.chunks), swarm.chunks)


@settings(max_examples=100, deadline=None)
@given(swarms(), st.integers(0, 2**32), st.data())
def test_a_chunk_no_peer_has_leaves_the_plan_stuck_not_spinning(
    swarm: Swarm, seed: int, data: st.DataObject
) -> None:
    needed = sorted(set(range(swarm.chunks)) - swarm.present)
    if not needed:
        swarm.present.discard(0)
        needed = [0]
    lost = data.draw(st.sampled_from(needed))
    for peer in swarm.peers:
        peer.has.discard(lost)
    swarm.peers = [p for p in swarm.peers if p.has]
    result = run_swarm(swarm, random.Random(seed))
    assert result.plan.stuck and not result.plan.done
    assert lost in result.plan.unavailable()
    assert lost not in result.accepted


# --- focused behaviour --------------------------------------------------------------------------


def test_three_full_peers_get_three_different_ranges_at_once() -> None:
    plan = _plan(100)
    for name in ("a", "b", "c"):
        plan.add_peer(name, True)
    asked = [set(_indices(plan.next_request(name, 0.0))) for name in ("a", "b", "c")]
    assert all(asked)
    assert not (asked[0] & asked[1] or asked[0] & asked[2] or asked[1] & asked[2])
    assert plan.in_flight_count() == sum(len(a) for a in asked)


def test_small_documents_are_still_split_across_peers() -> None:
    plan = _plan(4)
    for name in ("a", "b", "c"):
        plan.add_peer(name, True)
    asked = [_indices(plan.next_request(name, 0.0)) for name in ("a", "b", "c")]
    assert all(asked)
    assert sorted(i for a in asked for i in a) == [0, 1, 2, 3]


def test_a_busy_peer_gets_no_second_request() -> None:
    plan = _plan(100)
    plan.add_peer("a", True)
    assert plan.next_request("a", 0.0)
    assert plan.next_request("a", 0.0) is None
    assert plan.next_request("unknown", 0.0) is None


def test_requests_respect_the_per_request_caps() -> None:
    plan = _plan(1000, max_chunks_per_request=16, max_ranges_per_request=2)
    plan.add_peer("a", T.make_bitmap(range(0, 1000, 2), 1000))  # every other chunk
    ranges = plan.next_request("a", 0.0)
    assert ranges is not None and len(ranges) <= 2
    assert all(i % 2 == 0 for i in _indices(ranges))


def test_rare_chunks_are_fetched_first() -> None:
    plan = _plan(20, max_chunks_per_request=4)
    plan.add_peer("everyone", True)
    plan.add_peer("partial", T.make_bitmap(range(10), 20))
    first = _indices(plan.next_request("everyone", 0.0))
    assert min(first) >= 10  # chunks 10..19 only "everyone" has


def test_already_present_chunks_are_never_requested() -> None:
    present = {0, 1, 2, 5, 9}
    plan = DownloadPlan[str](10 * CHUNK, CHUNK, present, max_chunks_per_request=32)
    plan.add_peer("a", True)
    assert set(_indices(plan.next_request("a", 0.0))) == set(range(10)) - present
    assert plan.progress().present_chunks == len(present)
    with pytest.raises(ValueError):
        DownloadPlan[str](10 * CHUNK, CHUNK, {10})


def test_a_bad_chunk_is_refetched_elsewhere_and_never_asked_of_its_sender_again() -> None:
    plan = _plan(6, max_chunks_per_request=6)
    plan.add_peer("bad", True)
    first = _indices(plan.next_request("bad", 0.0))
    assert first == list(range(6))
    assert plan.chunk_received("bad", 0, ok=False) is Outcome.REJECTED
    for i in range(1, 6):
        assert plan.chunk_received("bad", i, ok=True) is Outcome.ACCEPTED
    plan.request_done("bad")
    assert not plan.is_present(0)
    assert plan.next_request("bad", 1.0) is None  # banned for chunk 0, and nothing else is missing
    assert plan.stuck and plan.unavailable() == [0]
    plan.add_peer("good", True)
    assert _indices(plan.next_request("good", 1.0)) == [0]
    assert plan.chunk_received("good", 0, ok=True) is Outcome.ACCEPTED
    assert plan.done
    stats = plan.peer_stats()
    assert stats["bad"].strikes == 1 and stats["bad"].bytes_received == 5 * CHUNK
    assert stats["good"].bytes_received == CHUNK


def test_a_peer_is_dropped_after_too_many_strikes() -> None:
    plan = _plan(10, max_strikes=2, max_chunks_per_request=10)
    plan.add_peer("bad", True)
    plan.next_request("bad", 0.0)
    assert plan.chunk_received("bad", 0, ok=False) is Outcome.REJECTED
    assert plan.chunk_received("bad", 1, ok=False) is Outcome.REJECTED
    assert plan.peer_stats()["bad"].status is PeerStatus.DROPPED
    assert plan.chunk_received("bad", 2, ok=True) is Outcome.UNEXPECTED
    assert plan.in_flight_count() == 0 and plan.missing_count() == 10
    assert not plan.add_peer("bad", True)
    assert plan.next_request("bad", 1.0) is None


def test_a_vanished_peer_returns_its_chunks_to_missing() -> None:
    plan = _plan(10, max_chunks_per_request=10)
    plan.add_peer("a", True)
    plan.add_peer("b", T.make_bitmap([0, 1, 2], 10))
    asked = _indices(plan.next_request("a", 0.0))
    got = asked[0]
    plan.chunk_received("a", got, ok=True)
    plan.remove_peer("a")
    assert plan.missing_count() == 9 and plan.in_flight_count() == 0
    assert plan.peer_stats()["a"].status is PeerStatus.GONE
    assert plan.unavailable() == [i for i in range(3, 10) if i != got]
    assert plan.add_peer("a", True)  # it came back
    assert got not in _indices(plan.next_request("a", 1.0))


def test_a_failed_request_puts_chunks_back_and_backs_the_peer_off() -> None:
    plan = _plan(10, max_chunks_per_request=10, retry_backoff=2.0, max_failures=2)
    plan.add_peer("a", True)
    plan.next_request("a", 0.0)
    plan.request_failed("a", 0.0)
    assert plan.missing_count() == 10
    assert plan.next_request("a", 1.0) is None  # backing off
    assert not plan.stuck  # it will be asked again
    assert plan.next_request("a", 2.0)
    plan.request_failed("a", 2.0)
    assert plan.peer_stats()["a"].status is PeerStatus.DROPPED
    assert plan.stuck


def test_chunks_left_out_of_a_finished_response_are_not_asked_again() -> None:
    plan = _plan(4, max_chunks_per_request=4)
    plan.add_peer("liar", True)
    plan.next_request("liar", 0.0)
    for i in (0, 1, 3):
        plan.chunk_received("liar", i, ok=True)
    plan.request_done("liar")
    assert plan.next_request("liar", 1.0) is None
    assert plan.unavailable() == [2]
    plan.add_peer("honest", T.make_bitmap([2], 4))
    assert _indices(plan.next_request("honest", 1.0)) == [2]


def test_endgame_duplicates_slow_chunks_and_first_good_copy_wins() -> None:
    plan = _plan(4, max_chunks_per_request=4, steal_after=10.0)
    plan.add_peer("slow", True)
    assert _indices(plan.next_request("slow", 0.0)) == [0, 1, 2, 3]
    plan.add_peer("fast", True)
    assert plan.next_request("fast", 5.0) is None  # not slow for long enough yet
    assert _indices(plan.next_request("fast", 10.0)) == [0, 1, 2, 3]
    assert plan.chunk_received("fast", 0, ok=True) is Outcome.ACCEPTED
    assert plan.chunk_received("slow", 0, ok=True) is Outcome.DUPLICATE
    assert plan.chunk_received("slow", 1, ok=True) is Outcome.ACCEPTED
    assert plan.chunk_received("fast", 1, ok=True) is Outcome.DUPLICATE
    plan.request_failed("slow", 11.0)
    assert plan.in_flight_count() == 2  # 2 and 3 are still coming from "fast"
    plan.chunk_received("fast", 2, ok=True)
    plan.chunk_received("fast", 3, ok=True)
    plan.request_done("fast")
    assert plan.done
    assert plan.peer_stats()["slow"].duplicates == 1


def test_no_third_copy_beyond_the_holder_limit() -> None:
    plan = _plan(2, max_chunks_per_request=2, steal_after=1.0, max_holders=2)
    for name in ("a", "b", "c"):
        plan.add_peer(name, True)
    assert plan.next_request("a", 0.0) == [(0, 1)]
    assert plan.next_request("b", 0.0) == [(1, 2)]
    assert plan.next_request("c", 0.0) is None
    assert plan.next_request("c", 5.0) == [(0, 2)]
    plan.add_peer("d", True)
    assert plan.next_request("d", 50.0) is None


def test_updating_a_peers_holdings_opens_new_chunks() -> None:
    plan = _plan(4, max_chunks_per_request=4)
    plan.add_peer("a", T.make_bitmap([0], 4))
    assert _indices(plan.next_request("a", 0.0)) == [0]
    plan.chunk_received("a", 0, ok=True)
    plan.request_done("a")
    assert plan.next_request("a", 0.0) is None
    plan.add_peer("a", T.make_bitmap([0, 1, 2, 3], 4))
    assert _indices(plan.next_request("a", 0.0)) == [1, 2, 3]


def test_a_malformed_bitmap_is_refused() -> None:
    plan = _plan(9)
    with pytest.raises(T.PeerProtocolError):
        plan.add_peer("a", b"\xff")


def test_progress_counts_the_short_last_chunk() -> None:
    plan = DownloadPlan[str](25, CHUNK)
    plan.add_peer("a", True)
    plan.next_request("a", 0.0)
    plan.chunk_received("a", 2, ok=True)
    progress = plan.progress()
    assert (progress.present_chunks, progress.present_bytes, progress.size) == (1, 5, 25)
    assert progress.fraction == pytest.approx(0.2)


def test_an_empty_document_is_done_at_once() -> None:
    plan = DownloadPlan[str](0, CHUNK)
    plan.add_peer("a", True)
    assert plan.done and not plan.stuck and plan.next_request("a", 0.0) is None


def test_the_largest_document_still_splits_work_across_peers() -> None:
    plan = DownloadPlan[str](T.MAX_CHUNK_COUNT * CHUNK, CHUNK)
    for name in ("a", "b", "c"):
        plan.add_peer(name, True)
    rare = T.MAX_CHUNK_COUNT - 1
    plan.add_peer("d", T.make_bitmap([rare], T.MAX_CHUNK_COUNT))
    asked = [set(_indices(plan.next_request(name, 0.0))) for name in ("a", "b", "c", "d")]
    assert all(asked) and sum(len(a) for a in asked) == len(set().union(*asked))
    assert asked[3] == {rare}
    with pytest.raises(ValueError):
        DownloadPlan[str]((T.MAX_CHUNK_COUNT + 1) * CHUNK, CHUNK)


def test_unavailable_chunks_show_early_but_stuck_waits_for_in_flight_work() -> None:
    plan = _plan(2)
    plan.add_peer("a", T.make_bitmap([0], 2))
    assert plan.next_request("a", 0.0) == [(0, 1)]
    assert plan.unavailable() == [1]
    assert not plan.stuck  # chunk 0 is still coming
    plan.chunk_received("a", 0, ok=True)
    plan.request_done("a")
    assert plan.stuck and plan.progress().present_chunks == 1


# --- several requests outstanding per peer (pipelining) ------------------------------------------


def test_a_peer_may_have_as_many_requests_outstanding_as_allowed() -> None:
    plan = _plan(20, max_requests_per_peer=2, max_chunks_per_request=4)
    plan.add_peer("a", True)
    first, second = plan.next_request("a", 0.0), plan.next_request("a", 0.0)
    assert _indices(first) == [0, 1, 2, 3] and _indices(second) == [4, 5, 6, 7]
    assert plan.next_request("a", 0.0) is None  # two outstanding: the limit
    assert plan.peer_stats()["a"].in_flight == 8


def test_each_pipelined_request_is_settled_on_its_own() -> None:
    plan = _plan(20, max_requests_per_peer=2, max_chunks_per_request=4)
    plan.add_peer("a", True)
    first = plan.next_request("a", 0.0)
    second = plan.next_request("a", 0.0)
    assert first is not None and second is not None
    for index in (0, 1, 3):  # chunk 2 is left out of the first response
        assert plan.chunk_received("a", index, True) is Outcome.ACCEPTED
    plan.request_done("a", first)
    # Only the first request's chunks were settled; the second is still outstanding.
    assert plan.peer_stats()["a"].in_flight == 4
    assert not plan.is_present(2) and 2 in plan.unavailable()  # "a" lacks it after all
    assert _indices(plan.next_request("a", 0.0)) == [8, 9, 10, 11]  # room for one more
    for index in _indices(second):
        plan.chunk_received("a", index, True)
    plan.request_done("a", second)
    assert plan.progress().present_chunks == 7


def test_a_broken_stream_fails_every_outstanding_request_as_one_failure() -> None:
    plan = _plan(20, max_requests_per_peer=2, max_chunks_per_request=4, max_failures=2)
    plan.add_peer("a", True)
    plan.next_request("a", 0.0)
    plan.next_request("a", 0.0)
    plan.chunk_received("a", 0, True)
    plan.request_failed("a", 1.0)  # no ranges: everything outstanding
    stats = plan.peer_stats()["a"]
    assert (stats.status, stats.failures, stats.in_flight) == (PeerStatus.ACTIVE, 1, 0)
    assert plan.missing_count() == 19  # all but chunk 0 are missing again
    assert plan.next_request("a", 1.5) is None  # backing off
    assert _indices(plan.next_request("a", 2.0)) == [1, 2, 3, 4]


def test_a_refused_pipelined_request_puts_back_only_its_own_chunks() -> None:
    plan = _plan(20, max_requests_per_peer=2, max_chunks_per_request=4)
    plan.add_peer("a", True)
    first = plan.next_request("a", 0.0)
    plan.next_request("a", 0.0)
    plan.request_failed("a", 0.0, first)  # error busy for the first request
    assert plan.peer_stats()["a"].in_flight == 4
    assert plan.missing_count() == 16


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=60), st.integers(min_value=0, max_value=2**32))
def test_pipelined_downloads_accept_every_chunk_exactly_once(chunks: int, seed: int) -> None:
    """Peers answer their requests in order, up to three outstanding, some responses break."""
    rng = random.Random(seed)
    plan = _plan(
        chunks,
        max_requests_per_peer=3,
        max_chunks_per_request=3,
        retry_backoff=0.0,
        max_failures=10**6,
    )
    peers = {"a": set(range(chunks)), "b": {i for i in range(chunks) if rng.random() < 0.7}}
    for name, has in peers.items():
        plan.add_peer(name, T.make_bitmap(has, chunks))
    queues: dict[str, list[list[T.Range]]] = {name: [] for name in peers}
    accepted: list[int] = []
    now = 0.0
    for _ in range(10_000):
        if plan.done:
            break
        now += 1.0
        for name in peers:
            while (ranges := plan.next_request(name, now)) is not None:
                queues[name].append(ranges)
        busy = [name for name in peers if queues[name]]
        if not busy:
            assert plan.stuck or plan.unavailable()
            break
        name = rng.choice(busy)
        ranges = queues[name].pop(0)  # answered in order
        if rng.random() < 0.1:  # the stream breaks: every outstanding request fails
            plan.request_failed(name, now)
            queues[name].clear()
            continue
        for index in _indices(ranges):
            if plan.chunk_received(name, index, True) is Outcome.ACCEPTED:
                accepted.append(index)
        plan.request_done(name, ranges)
    assert plan.done
    assert sorted(accepted) == list(range(chunks))
