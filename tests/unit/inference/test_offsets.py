"""The contiguous-watermark tracker: out-of-order completion, gaps, revoke, epochs, threads."""

from __future__ import annotations

import random
import threading

import pytest

from inference.offsets import OffsetTracker

P0, P1 = ("frames", 0), ("frames", 1)


def tracker(*parts):
    t = OffsetTracker()
    t.assign(parts or [P0])
    return t


def test_nothing_polled_nothing_to_commit():
    assert tracker().committable() == {}


def test_in_order_completion_commits_one_past_last():
    t = tracker()
    tickets = [t.add(P0, o) for o in range(5)]
    for tk in tickets:
        assert t.complete(tk)
    assert t.committable() == {P0: 5}


def test_out_of_order_completion_never_skips_an_unfinished_offset():
    t = tracker()
    tk = {o: t.add(P0, o) for o in range(10, 16)}
    for o in (12, 15, 13):
        t.complete(tk[o])
    assert t.committable() == {}  # 10 still in flight: nothing past it
    t.complete(tk[10])
    assert t.committable() == {P0: 11}  # 11 in flight
    t.complete(tk[11])
    assert t.committable() == {P0: 14}  # 12, 13 done; 14 in flight
    t.complete(tk[14])
    assert t.committable() == {P0: 16}


def test_gaps_in_offsets_do_not_block_the_watermark():
    t = tracker()
    a, b = t.add(P0, 3), t.add(P0, 7)  # 4..6 are transaction markers / compacted away
    t.complete(b)
    assert t.committable() == {}
    t.complete(a)
    assert t.committable() == {P0: 8}


def test_committable_only_reports_progress_past_last_commit():
    t = tracker()
    t.complete(t.add(P0, 0))
    assert t.committable() == {P0: 1}
    t.mark_committed({P0: 1})
    assert t.committable() == {}
    tk = t.add(P0, 1)
    assert t.committable() == {}  # in flight
    t.complete(tk)
    assert t.committable() == {P0: 2}


def test_partitions_are_independent():
    t = tracker(P0, P1)
    a = t.add(P0, 0)
    b = t.add(P1, 100)
    t.add(P1, 101)
    t.complete(b)
    assert t.committable() == {P1: 101}
    t.complete(a)
    assert t.committable() == {P0: 1, P1: 101}
    assert t.in_flight() == 1 and t.in_flight([P0]) == 0 and t.in_flight([P1]) == 1


def test_revoke_returns_final_watermark_and_ignores_late_completions():
    t = tracker(P0, P1)
    a, b, c = t.add(P0, 0), t.add(P0, 1), t.add(P0, 2)
    t.complete(a)
    t.complete(c)
    assert t.revoke([P0]) == {P0: 1}  # 1 still in flight: the new owner re-reads 1 and 2
    assert P0 not in t.partitions()
    assert not t.complete(b)  # stale
    assert t.stale_completions == 1
    assert not t.is_current(b)


def test_revoke_without_progress_commits_nothing():
    t = tracker()
    t.complete(t.add(P0, 0))
    t.mark_committed({P0: 1})
    assert t.revoke([P0]) == {}
    assert t.revoke([P0]) == {}  # unknown partition: nothing


def test_reassigned_partition_gets_new_epoch_and_old_tickets_stay_stale():
    t = tracker()
    old = t.add(P0, 5)
    t.revoke([P0])
    t.assign([P0])
    new = t.add(P0, 5)  # redelivered after the rebalance
    assert new.epoch != old.epoch
    assert not t.complete(old)
    assert t.committable() == {}
    assert t.complete(new)
    assert t.committable() == {P0: 6}


def test_assign_keeps_state_of_already_assigned_partitions():
    t = tracker()
    tk = t.add(P0, 0)
    t.assign([P0, P1])  # a rebalance that keeps P0 (cooperative)
    assert t.is_current(tk) and t.complete(tk)
    assert t.committable() == {P0: 1}


def test_add_to_unassigned_partition_raises():
    with pytest.raises(KeyError, match="not assigned"):
        OffsetTracker().add(P0, 0)


def test_polled_again_after_seek_back_is_in_flight_again():
    t = tracker()
    a = t.add(P0, 0)
    b = t.add(P0, 1)
    t.complete(b)
    t.add(P0, 1)  # seek back re-polls 1 while 0 still in flight
    t.complete(a)
    assert t.committable() == {P0: 1}
    assert t.in_flight() == 1


def test_mark_committed_never_moves_backwards():
    t = tracker()
    t.complete(t.add(P0, 0))
    t.complete(t.add(P0, 1))
    t.mark_committed({P0: 2})
    t.mark_committed({P0: 1})
    assert t.committable() == {}


def test_random_completion_order_matches_reference():
    rng = random.Random(7)
    for _ in range(50):
        t = tracker()
        offsets = sorted(rng.sample(range(1000), 40))
        tickets = {o: t.add(P0, o) for o in offsets}
        done: set[int] = set()
        last = offsets[0]
        order = offsets[:]
        rng.shuffle(order)
        for o in order:
            t.complete(tickets[o])
            done.add(o)
            first_open = next((x for x in offsets if x not in done), None)
            expect = first_open if first_open is not None else offsets[-1] + 1
            got = t.committable().get(P0)
            assert got == (None if expect == last else expect)
            if got is not None:
                t.mark_committed({P0: got})
                last = got


def test_threads_complete_while_consumer_adds_and_commits():
    t = tracker()
    n = 4000
    tickets: list = []
    lock = threading.Lock()
    stop = threading.Event()

    def producer():
        for o in range(n):
            tk = t.add(P0, o)
            with lock:
                tickets.append(tk)
        stop.set()

    def completer():
        while not (stop.is_set() and not tickets):
            with lock:
                tk = tickets.pop(random.randrange(len(tickets))) if tickets else None
            if tk is not None:
                t.complete(tk)

    committed = []

    def committer():
        while not (stop.is_set() and t.in_flight() == 0):
            c = t.committable()
            if c:
                committed.append(c[P0])
                t.mark_committed(c)

    threads = [threading.Thread(target=f) for f in (producer, completer, completer, committer)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    c = t.committable()
    final = c.get(P0, committed[-1] if committed else None)
    assert final == n
    assert committed == sorted(committed)


def test_in_flight_bytes_and_oldest_age_follow_completion():
    t = tracker()
    a = t.add(P0, 0, nbytes=100, now=10.0)
    t.add(P0, 1, nbytes=50, now=12.0)
    assert t.in_flight_bytes() == 150 and t.oldest_age_s(now=15.0) == 5.0
    t.complete(a)
    assert t.in_flight_bytes() == 50 and t.oldest_age_s(now=15.0) == 3.0
    assert t.watermarks([P0]) == {P0: 1}


def test_a_commit_reports_how_long_each_covered_offset_waited_with_its_label():
    t = OffsetTracker()
    t.assign([P0])
    tickets = [t.add(P0, off) for off in range(3)]
    t.label(tickets[0], ("L1", "cam0"))
    t.complete(tickets[1])
    t.complete(tickets[0])
    waits = t.mark_committed(t.committable())  # watermark 2: offsets 0 and 1
    assert [tag for tag, _ in waits] == [("L1", "cam0"), None]
    assert all(0.0 <= w < 5.0 for _, w in waits)
    t.complete(tickets[2])
    assert [tag for tag, _ in t.mark_committed(t.committable())] == [None]
    assert t.mark_committed({P0: 3}) == []  # nothing covered twice
