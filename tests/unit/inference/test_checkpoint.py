"""The commit protocol with recording fakes: results → rejects and dead letters → offsets, and
what a failure at each step leaves behind."""

from __future__ import annotations

import time

import pytest

from inference.checkpoint import Checkpoint, ResultLookup
from inference.consumer import PolledFrame
from inference.contracts import result_key
from inference.decision import Outcome
from inference.offsets import OffsetTracker
from inference.sinks import DeadLetterIn

from .test_contracts import make_result

P0 = ("frames", 0)


class Sink:
    """Buffers like a real sink; records ``name.flush`` in the shared log; fails on demand."""

    def __init__(self, name: str, log: list[str]):
        self.name, self.log = name, log
        self.buf: list = []
        self.written: list = []
        self.fail = 0  # flushes left that raise

    def setup(self):
        self.log.append(f"{self.name}.setup")

    def add(self, x, *rest):
        self.buf.append(x)

    def flush(self):
        self.log.append(f"{self.name}.flush")
        if self.fail:
            self.fail -= 1
            raise ConnectionError(f"{self.name} down")
        done, self.buf = self.buf, []
        self.written.extend(done)
        return [] if self.name != "rejects" else [f"cmd:{r.item_id}" for r in done]

    def close(self):
        self.log.append(f"{self.name}.close")


@pytest.fixture
def world():
    log: list[str] = []
    tracker = OffsetTracker()
    tracker.assign([P0])

    def complete(ticket):
        log.append(f"complete:{ticket.offset}")
        return tracker.complete(ticket)

    sinks = [Sink(n, log) for n in ("results", "rejects", "dlq")]
    cp = Checkpoint(*sinks, complete=complete, sleep=lambda s: log.append(f"sleep:{s:.1f}"))
    cp.setup()
    log.clear()
    return cp, tracker, log, sinks


def frame(tracker, offset: int) -> PolledFrame:
    t = tracker.add(P0, offset)
    return PolledFrame(ticket=t, topic="frames", partition=0, offset=offset, key=None, value=b"", headers=[],
                       received_at=time.time(), decode_s=0.0)


def result_outcome(tracker, offset: int, decision: bool = True, **kw) -> Outcome:
    r = make_result(frame_id=f"f{offset}", item_id=f"i{offset}", decision=decision)
    return Outcome(frame=frame(tracker, offset), line="L1", camera="cam0", prefix="p", result=r, **kw)


def dead_outcome(tracker, offset: int) -> Outcome:
    d = DeadLetterIn(None, b"", [], "bad", "decode", "frames", 0, offset)
    return Outcome(frame=frame(tracker, offset), line="L1", camera="cam0", dead=d)


def test_flush_order_is_results_then_rejects_and_dead_letters_then_offsets(world):
    cp, tracker, log, (results, rejects, dlq) = world
    cp.add(result_outcome(tracker, 0))
    cp.add(dead_outcome(tracker, 1))
    cp.add(result_outcome(tracker, 2, decision=False))
    report = cp.flush()
    assert log == ["results.flush", "rejects.flush", "dlq.flush", "complete:0", "complete:1", "complete:2"]
    assert tracker.committable() == {P0: 3}
    assert report.sent == ["cmd:i0", "cmd:i2"] and len(report.outcomes) == 3  # the sink filters decisions
    assert [d.offset for d in dlq.written] == [1]


@pytest.mark.parametrize("failing", ["results", "rejects", "dlq"])
def test_a_failing_step_completes_nothing_and_the_retry_resumes_there(world, failing):
    cp, tracker, log, sinks = world
    by_name = {s.name: s for s in sinks}
    by_name[failing].fail = 1
    cp.add(result_outcome(tracker, 0))
    cp.add(dead_outcome(tracker, 1))
    with pytest.raises(ConnectionError):
        cp.flush()
    steps = ["results.flush", "rejects.flush", "dlq.flush"]
    assert log == steps[: steps.index(f"{failing}.flush") + 1]  # stopped at the failing step
    assert tracker.committable() == {} and tracker.in_flight() == 2  # no offset moved
    log.clear()
    cp.flush()
    assert log[-2:] == ["complete:0", "complete:1"] and tracker.committable() == {P0: 2}
    # what an earlier step confirmed is not written twice
    assert len(by_name["results"].written) == 1 and len(by_name["dlq"].written) == 1


def test_flush_until_confirmed_retries_with_backoff_and_reports_failing_time(world):
    cp, tracker, log, (results, _, _) = world
    results.fail = 3
    cp.add(result_outcome(tracker, 0))
    cp.flush_until_confirmed()
    assert [e for e in log if e.startswith("sleep")] == ["sleep:0.1", "sleep:0.2", "sleep:0.4"]
    assert cp.failing_since is None and isinstance(cp.last_error, ConnectionError)
    assert tracker.committable() == {P0: 1}


def test_flush_until_confirmed_gives_up_only_when_stopping(world):
    cp, tracker, _, (results, _, _) = world
    results.fail = 100
    cp.add(result_outcome(tracker, 0))
    with pytest.raises(ConnectionError):
        cp.flush_until_confirmed(stopping=lambda: True)
    assert cp.failing_for_s() >= 0 and cp.failing_since is not None


def test_redelivered_frame_is_not_rewritten_but_its_reject_is_re_offered(world):
    cp, tracker, log, (results, rejects, _) = world
    cp.add(result_outcome(tracker, 0, write_result=False))
    cp.flush()
    assert results.written == [] and [r.frame_id for r in rejects.written] == ["f0"]
    assert tracker.committable() == {P0: 1}


def test_replay_without_actuation_writes_no_reject(world):
    cp, tracker, _, (results, rejects, _) = world
    cp.add(result_outcome(tracker, 0, actuate=False))
    cp.flush()
    assert len(results.written) == 1 and rejects.written == []


def test_close_closes_every_sink(world):
    cp, _, log, _ = world
    cp.close()
    assert log == ["results.close", "rejects.close", "dlq.close"]


def test_result_lookup_finds_stored_results_per_namespace_and_survives_redis_down():
    import fakeredis

    server = fakeredis.FakeServer()
    r = fakeredis.FakeRedis(server=server)
    r.hset(result_key("p", "f1"), mapping=make_result(frame_id="f1").to_redis())
    r.hset(result_key("p:replay", "f2"), mapping=make_result(frame_id="f2").to_redis())
    lookup = ResultLookup(lambda: fakeredis.FakeRedis(server=server))
    found = lookup([("p", "f1"), ("p", "f2"), ("p:replay", "f2")])
    assert sorted(found) == [("p", "f1"), ("p:replay", "f2")] and found[("p", "f1")].frame_id == "f1"
    server.connected = False
    assert lookup([("p", "f1")]) == {}  # decided again rather than stalled


def test_a_record_that_cannot_be_judged_goes_to_the_dead_letters_and_is_rejected(world):
    cp, tracker, log, (results, rejects, dlq) = world
    o = dead_outcome(tracker, 0)
    o.result = make_result(frame_id="f0", item_id="i0", decision=True, score=None, failsafe="invalid_input",
                           late_policy="reject")
    cp.add(o)
    report = cp.flush()
    assert len(dlq.written) == 1 and [r.frame_id for r in results.written] == ["f0"]
    assert report.sent == ["cmd:i0"] and tracker.committable() == {P0: 1}


def test_a_kept_model_verdict_decides_actuation_and_counts_as_redelivered(world):
    cp, tracker, log, (results, rejects, dlq) = world
    stored_pass = make_result(frame_id="f0", item_id="i0", decision=False, score=0.1)

    def keep_stored():  # the results sink kept the stored pass instead of the late reject
        results.log.append("results.flush")
        results.buf.clear()
        return {("p", "f0"): stored_pass}

    results.flush = keep_stored
    late = result_outcome(tracker, 0, decision=True)
    late.result = make_result(frame_id="f0", item_id="i0", decision=True, score=None, late=True,
                              late_policy="reject", failsafe="late")
    cp.add(late)
    report = cp.flush()
    assert rejects.written == [stored_pass]  # the reject sink sees the stored pass (no command for it)
    assert report.outcomes[0].result is stored_pass and not report.outcomes[0].write_result
