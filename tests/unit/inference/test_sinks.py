"""Sinks against fakeredis (which executes the claim Lua scripts) and a scripted producer: Redis
layout, exactly one reject per item, sends whose outcome is late or failed, dead letters."""

from __future__ import annotations

import fakeredis
import pytest
import redis
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from inference.contracts import RejectCommand, Result, reject_claim_key, result_key, stream_key
from inference.sinks import (
    ClaimBusy,
    DeadLetterIn,
    DeadLetterSink,
    RedisResultSink,
    RejectSink,
    SinkError,
)

from .test_contracts import make_result

NOW = 1_000_000.0


class Fut:
    """A producer future: ``ok``, ``fail`` (done, with an error) or ``pending`` (outcome unknown)."""

    def __init__(self, outcome: str = "ok", exc: BaseException | None = None, on_get=None):
        self.outcome, self.exc, self.on_get = outcome, exc, on_get
        self.is_done = outcome != "pending"

    def get(self, timeout=None):
        if self.on_get is not None:
            self.on_get()
        if self.outcome == "pending":
            raise KafkaTimeoutError("timeout waiting for the future")
        if self.outcome == "fail":
            raise self.exc or KafkaTimeoutError("batch expired")
        return "metadata"


class Producer:
    """Records every send; ``plan[key]`` lists the futures the next sends of that key get."""

    def __init__(self):
        self.sent: list[dict] = []
        self.plan: dict[bytes, list[Fut]] = {}

    def send(self, topic, key=None, value=None, headers=None):
        self.sent.append({"topic": topic, "key": key, "value": value, "headers": headers})
        queue = self.plan.get(key)
        return queue.pop(0) if queue else Fut()


@pytest.fixture
def server():
    return fakeredis.FakeServer()


@pytest.fixture
def r(server):
    return fakeredis.FakeRedis(server=server)


class DeliveredLog:
    """The rejects topic as :class:`~inference.sinks.DeliveredLookup` sees it: ``on_topic`` maps a
    ``command_id`` to where its record is; ``down`` makes the lookup raise (broker unreachable)."""

    def __init__(self, producer: Producer | None = None):
        self.on_topic: dict[str, str] = {}
        self.calls: list[tuple[str, float]] = []
        self.down = False
        self.closed = False

    def __call__(self, cmd: RejectCommand, since: float) -> str | None:
        self.calls.append((cmd.command_id, since))
        if self.down:
            raise ConnectionError("broker unreachable")
        return self.on_topic.get(cmd.command_id)

    def close(self) -> None:
        self.closed = True


def reject_sink(r, producer, now: float = NOW, delivered=None) -> RejectSink:
    s = RejectSink(lambda: r, producer, "rejects.t", "p", claim_ttl_s=3600, delivery_timeout_s=5,
                   takeover_s=20, clock=lambda: now, delivered=delivered)
    s.setup()
    return s


def commands(producer) -> list[RejectCommand]:
    return [RejectCommand.from_kafka(m["value"]) for m in producer.sent]


def claim(r, item: str) -> str | None:
    v = r.get(reject_claim_key("p", "L1", item))
    return v.decode() if v is not None else None


# --- results ------------------------------------------------------------------------------------

def test_result_sink_writes_hash_with_ttl_and_expiring_capped_stream(r):
    sink = RedisResultSink(lambda: r, ttl_s=60, stream_maxlen=2, stream_ttl_s=600)
    sink.setup()
    assert sink.flush() == {}
    for i in range(3):
        sink.add(make_result(frame_id=f"f{i}"), "p")
    sink.add(make_result(frame_id="f9", replay_of="f1"), "p:replay")
    assert sink.flush() == {}  # all written, none kept
    assert all(r.exists(result_key("p", f"f{i}")) for i in range(3))
    assert Result.from_redis(r.hgetall(result_key("p", "f1"))).frame_id == "f1"
    assert 0 < r.ttl(result_key("p", "f1")) <= 60
    assert r.xlen(stream_key("p", "L1")) >= 2 and 0 < r.ttl(stream_key("p", "L1")) <= 600
    assert "mask_png" not in {k.decode() for k in r.xrange(stream_key("p", "L1"))[0][1]}
    assert Result.from_redis(r.hgetall(result_key("p:replay", "f9"))).replay_of == "f1"
    assert not r.exists(result_key("p", "f9"))  # a replay never lands in the live namespace
    r.delete(result_key("p", "f1"))
    assert sink.flush() == {} and not r.exists(result_key("p", "f1"))  # buffer cleared: nothing rewritten


def test_result_sink_keeps_buffer_when_redis_is_down(server, r):
    sink = RedisResultSink(lambda: r, ttl_s=60, stream_maxlen=10, stream_ttl_s=60)
    sink.setup()
    sink.add(make_result(), "p")
    server.connected = False
    with pytest.raises(redis.ConnectionError):
        sink.flush()
    server.connected = True
    assert sink.flush() == {} and r.exists(result_key("p", "f1"))


def test_a_failsafe_result_never_replaces_a_stored_model_verdict(r):
    sink = RedisResultSink(lambda: r, ttl_s=60, stream_maxlen=10, stream_ttl_s=60)
    sink.setup()
    verdict = make_result(frame_id="f1", decision=False, score=0.1)
    sink.add(verdict, "p")
    sink.flush()
    late = make_result(frame_id="f1", decision=True, score=None, late=True, late_policy="reject", failsafe="late")
    sink.add(late, "p")
    kept = sink.flush()  # redelivered after a Redis outage, decided again as late: the pass stands
    assert kept[("p", "f1")].decision is False and kept[("p", "f1")].score == 0.1
    assert Result.from_redis(r.hgetall(result_key("p", "f1"))).failsafe is None
    fresh = make_result(frame_id="f2", decision=True, score=None, failsafe="timeout", late_policy="reject")
    sink.add(fresh, "p")  # nothing stored: a fail-safe result is written
    assert sink.flush() == {} and Result.from_redis(r.hgetall(result_key("p", "f2"))).failsafe == "timeout"
    sink.add(make_result(frame_id="f2", decision=False, score=0.2), "p")  # a model verdict replaces it
    assert sink.flush() == {} and Result.from_redis(r.hgetall(result_key("p", "f2"))).score == 0.2


# --- rejects ------------------------------------------------------------------------------------

def test_only_reject_decisions_become_commands(r):
    prod = Producer()
    s = reject_sink(r, prod)
    s.add(make_result(decision=False))
    assert s.flush() == [] and prod.sent == []


def test_one_command_per_item_within_and_across_batches_and_instances(r):
    prod = Producer()
    s = reject_sink(r, prod)
    s.add(make_result(frame_id="a", item_id="i1", camera_id="cam0"))
    s.add(make_result(frame_id="b", item_id="i1", camera_id="cam1"))  # same item, other camera
    s.add(make_result(frame_id="c", item_id="i2"))
    assert [c.item_id for c in s.flush()] == ["i1", "i2"]
    s.add(make_result(frame_id="d", item_id="i1"))  # a later frame of an already rejected item
    s.add(make_result(frame_id="a", item_id="i1"))  # a redelivery of the first frame
    assert s.flush() == []
    again = reject_sink(r, prod)  # a restarted replica, same Redis
    again.add(make_result(frame_id="a", item_id="i1"))
    assert again.flush() == []
    assert [c.item_id for c in commands(prod)] == ["i1", "i2"]
    assert claim(r, "i1") == "a|sent"
    assert s.suppressed == 3 and again.suppressed == 1


def test_command_is_keyed_by_item_and_carries_a_dedup_id(r):
    prod = Producer()
    s = reject_sink(r, prod)
    s.add(make_result(frame_id="a", item_id="i1"))
    s.flush()
    assert prod.sent[0]["key"] == b"i1"
    cmd = commands(prod)[0]
    assert cmd.command_id == "L1/i1" and cmd.frame_id == "a" and cmd.reason == "defect"


def test_young_pending_claim_is_busy_then_resolves_to_sent(r):
    r.set(reject_claim_key("p", "L1", "i1"), f"x|pending|{NOW - 5:.3f}")  # another sender, 5 s ago
    prod = Producer()
    s = reject_sink(r, prod)
    s.add(make_result(frame_id="a", item_id="i1"))
    with pytest.raises(ClaimBusy, match="item i1 frame a"):
        s.flush()
    assert prod.sent == []
    r.set(reject_claim_key("p", "L1", "i1"), "x|sent")  # that sender finished meanwhile
    assert s.flush() == [] and prod.sent == []


def test_stale_pending_claim_of_another_frame_is_taken_over(r):
    r.set(reject_claim_key("p", "L1", "i9"), f"x|pending|{NOW - 999:.3f}")  # its sender died
    prod = Producer()
    s = reject_sink(r, prod)
    s.add(make_result(frame_id="y", item_id="i9"))
    assert [c.frame_id for c in s.flush()] == ["y"]  # the item is not left unrejected
    assert claim(r, "i9") == "y|sent"


def test_takeover_must_outlast_a_send():
    with pytest.raises(ValueError, match="takeover_s"):
        RejectSink(lambda: None, None, "t", "p", 60, delivery_timeout_s=30, takeover_s=10)


def test_send_with_unknown_outcome_keeps_its_claim_and_is_waited_for_not_resent(r):
    prod = Producer()
    slow = Fut("pending")
    prod.plan[b"i1"] = [slow]
    s = reject_sink(r, prod)
    s.add(make_result(frame_id="a", item_id="i1"))
    with pytest.raises(SinkError, match="not confirmed"):
        s.flush()
    assert claim(r, "i1").startswith("a|pending|")  # never released on a timeout
    # another frame of the item meanwhile: busy behind the claim, no second command
    other = reject_sink(r, prod)
    other.add(make_result(frame_id="b", item_id="i1"))
    with pytest.raises(ClaimBusy):
        other.flush()
    slow.outcome, slow.is_done = "ok", True  # the broker acked the first send after all
    assert [c.frame_id for c in s.flush()] == ["a"]
    assert len(prod.sent) == 1 and claim(r, "i1") == "a|sent"
    assert other.flush() == [] and len(prod.sent) == 1


def test_failed_send_is_resent_under_the_same_claim(r):
    prod = Producer()
    prod.plan[b"i2"] = [Fut("fail")]
    s = reject_sink(r, prod)
    s.add(make_result(frame_id="a", item_id="i1"))
    s.add(make_result(frame_id="b", item_id="i2"))
    with pytest.raises(SinkError, match="item i2 frame b"):
        s.flush()
    assert claim(r, "i1") == "a|sent"
    assert claim(r, "i2").startswith("b|pending|")  # kept (refreshed), not released
    assert [c.item_id for c in s.flush()] == ["i2"]
    cmds = commands(prod)
    assert [c.item_id for c in cmds] == ["i1", "i2", "i2"]
    assert cmds[1].command_id == cmds[2].command_id  # the actuator can de-duplicate a resend
    assert s.resent == 1 and claim(r, "i2") == "b|sent"


def test_failed_sent_mark_is_retried_alone_without_resending(server, r):
    prod = Producer()
    prod.plan[b"i1"] = [Fut("ok", on_get=lambda: setattr(server, "connected", False))]
    s = reject_sink(r, prod)
    s.add(make_result(frame_id="a", item_id="i1"))
    with pytest.raises(redis.ConnectionError):
        s.flush()  # acked by the broker, then Redis went away before the mark
    server.connected = True
    assert claim(r, "i1").startswith("a|pending|")
    assert [c.item_id for c in s.flush()] == ["i1"]
    assert len(prod.sent) == 1 and claim(r, "i1") == "a|sent"


def test_replayed_results_use_the_live_claim_so_an_item_is_rejected_once(r):
    prod = Producer()
    s = reject_sink(r, prod)
    s.add(make_result(frame_id="a", item_id="i1"))
    s.flush()
    s.add(make_result(frame_id="a@run.0", item_id="i1", replay_of="a"))
    assert s.flush() == [] and len(prod.sent) == 1


# --- a command already on the topic (its sender died after the broker stored it) -------------------

def test_taken_over_claim_whose_command_is_on_the_topic_is_marked_sent_without_a_send(r):
    r.set(reject_claim_key("p", "L1", "i1"), f"a|pending|{NOW - 999:.3f}")  # A sent, then died before the mark
    prod, dlog = Producer(), DeliveredLog()
    dlog.on_topic["L1/i1"] = "rejects.t[0]@7"
    s = reject_sink(r, prod, delivered=dlog)
    s.add(make_result(frame_id="b", item_id="i1"))  # another frame of the item, on another replica
    assert [c.item_id for c in s.flush()] == ["i1"]
    assert prod.sent == []
    assert dlog.calls == [("L1/i1", NOW - 999)]  # read from A's claim time
    assert claim(r, "i1") == "b|sent" and s.found_delivered == 1 and s.takeovers == 1
    s.add(make_result(frame_id="c", item_id="i1"))
    assert s.flush() == [] and prod.sent == [] and len(dlog.calls) == 1


def test_taken_over_claim_whose_command_is_not_on_the_topic_is_sent_once(r):
    r.set(reject_claim_key("p", "L1", "i1"), f"a|pending|{NOW - 999:.3f}|{NOW - 1500:.3f}")  # A died before sending
    prod, dlog = Producer(), DeliveredLog()
    s = reject_sink(r, prod, delivered=dlog)
    s.add(make_result(frame_id="b", item_id="i1"))
    assert [c.frame_id for c in s.flush()] == ["b"]
    assert [c.item_id for c in commands(prod)] == ["i1"]
    assert dlog.calls == [("L1/i1", NOW - 1500)]  # from the first claim, not the last takeover
    assert claim(r, "i1") == "b|sent" and s.found_delivered == 0
    s.add(make_result(frame_id="c", item_id="i1"))
    assert s.flush() == [] and len(prod.sent) == 1


def test_fresh_claim_is_sent_without_a_lookup(r):
    prod, dlog = Producer(), DeliveredLog()
    s = reject_sink(r, prod, delivered=dlog)
    s.add(make_result(frame_id="a", item_id="i1"))
    assert [c.item_id for c in s.flush()] == ["i1"] and dlog.calls == [] and len(prod.sent) == 1


def test_failed_lookup_keeps_the_claim_pending_and_sends_nothing_until_it_answers(r):
    r.set(reject_claim_key("p", "L1", "i1"), f"a|pending|{NOW - 999:.3f}")
    prod, dlog = Producer(), DeliveredLog()
    dlog.down = True
    s = reject_sink(r, prod, delivered=dlog)
    s.add(make_result(frame_id="b", item_id="i1"))
    for _ in range(2):
        with pytest.raises(SinkError, match="item i1 frame b.*delivered lookup failed"):
            s.flush()
    assert prod.sent == [] and s.pending == 1 and s.lookup_failures == 2
    assert claim(r, "i1").startswith("b|pending|")  # ours now, kept pending (others see busy)
    other = reject_sink(r, prod, delivered=dlog)
    other.add(make_result(frame_id="c", item_id="i1"))
    with pytest.raises(ClaimBusy):
        other.flush()
    dlog.down = False
    dlog.on_topic["L1/i1"] = "rejects.t[0]@7"  # A's send had reached the broker
    assert [c.item_id for c in s.flush()] == ["i1"]
    assert prod.sent == [] and claim(r, "i1") == "b|sent"
    assert other.flush() == [] and prod.sent == []


def test_claim_taken_over_while_its_lookup_fails_is_left_to_the_new_owner(r):
    r.set(reject_claim_key("p", "L1", "i1"), f"a|pending|{NOW - 999:.3f}")
    prod, dlog = Producer(), DeliveredLog()
    dlog.down = True
    s = reject_sink(r, prod, delivered=dlog)
    s.add(make_result(frame_id="b", item_id="i1"))
    with pytest.raises(SinkError):
        s.flush()
    later = reject_sink(r, prod, now=NOW + 100, delivered=DeliveredLog())  # past takeover_s
    later.add(make_result(frame_id="c", item_id="i1"))
    assert [c.frame_id for c in later.flush()] == ["c"]
    dlog.down = False  # b's lookup answers now: not on the topic, but the claim is no longer b's
    assert s.flush() == []
    assert [c.frame_id for c in commands(prod)] == ["c"] and claim(r, "i1") == "c|sent"


def test_failed_send_found_on_the_topic_is_not_resent(r):
    prod, dlog = Producer(), DeliveredLog()
    prod.plan[b"i1"] = [Fut("fail")]  # delivery timed out in the producer, yet the broker stored it
    s = reject_sink(r, prod, delivered=dlog)
    s.add(make_result(frame_id="a", item_id="i1"))
    with pytest.raises(SinkError, match="item i1 frame a"):
        s.flush()
    dlog.on_topic["L1/i1"] = "rejects.t[0]@3"
    assert [c.item_id for c in s.flush()] == ["i1"]
    assert len(prod.sent) == 1 and s.resent == 0 and s.found_delivered == 1
    assert dlog.calls == [("L1/i1", NOW)] and claim(r, "i1") == "a|sent"


def test_failed_send_not_on_the_topic_is_resent_once(r):
    prod, dlog = Producer(), DeliveredLog()
    prod.plan[b"i1"] = [Fut("fail")]
    s = reject_sink(r, prod, delivered=dlog)
    s.add(make_result(frame_id="a", item_id="i1"))
    with pytest.raises(SinkError):
        s.flush()
    assert [c.item_id for c in s.flush()] == ["i1"]
    assert len(prod.sent) == 2 and s.resent == 1 and len(dlog.calls) == 1 and claim(r, "i1") == "a|sent"


class FakeConsumer:
    """What DeliveredLookup asks of kafka-python's KafkaConsumer, over in-memory partitions."""

    def __init__(self, parts: dict[int, list[tuple[int, bytes, bytes]]]):  # partition -> (ts_ms, key, value)
        self.parts, self.pos, self.paused, self.closed = parts, {}, set(), False

    def partitions_for_topic(self, topic):
        return set(self.parts)

    def assign(self, tps):
        self.tps = list(tps)

    def offsets_for_times(self, stamps, timeout_ms=None):
        from kafka.structs import OffsetAndTimestamp

        out = {}
        for tp, ms in stamps.items():
            at = [i for i, (ts, _, _) in enumerate(self.parts[tp.partition]) if ts >= ms]
            out[tp] = OffsetAndTimestamp(at[0], self.parts[tp.partition][at[0]][0], -1) if at else None
        return out

    def end_offsets(self, tps, timeout_ms=None):
        return {tp: len(self.parts[tp.partition]) for tp in tps}

    def seek(self, tp, offset):
        self.pos[tp] = offset

    def pause(self, *tps):
        self.paused.update(tps)

    def resume(self, *tps):
        self.paused.difference_update(tps)

    def position(self, tp, timeout_ms=None):
        return self.pos[tp]

    def poll(self, timeout_ms=0, max_records=None):
        from types import SimpleNamespace

        out = {}
        for tp, at in self.pos.items():
            recs = self.parts[tp.partition][at:at + 2]  # two records per poll
            if tp not in self.paused and recs:
                out[tp] = [SimpleNamespace(offset=at + i, timestamp=ts, key=k, value=v)
                           for i, (ts, k, v) in enumerate(recs)]
                self.pos[tp] = at + len(recs)
        return out

    def close(self, autocommit=True):
        self.closed = True


def _cmd_value(item: str, line: str = "L1") -> bytes:
    return RejectCommand.from_result(make_result(item_id=item, line_id=line)).to_kafka()[1]


def test_delivered_lookup_reads_from_the_claim_time_and_matches_key_and_command_id():
    from inference.sinks import DeliveredLookup

    t0 = 1_000_000_000  # ms
    parts = {
        0: [(t0 - 60_000, b"i1", _cmd_value("i1")),  # before since - margin: not read
            (t0 + 1, b"i2", _cmd_value("i2")), (t0 + 2, b"i1", _cmd_value("i1", line="L2")),
            (t0 + 3, b"i1", b"not json")],
        1: [(t0 + 5, b"i3", _cmd_value("i3")), (t0 + 6, b"i1", _cmd_value("i1"))],
    }
    fake = FakeConsumer(parts)
    look = DeliveredLookup({}, "rejects.t", margin_s=10, consumer_factory=lambda: fake)
    cmd = RejectCommand.from_result(make_result(item_id="i1"))
    assert look(cmd, t0 / 1000) == "rejects.t[1]@1"
    parts[1].pop()  # not there: every partition read to its end
    assert look(cmd, t0 / 1000) is None
    assert look(cmd, t0 / 1000 - 55) == "rejects.t[0]@0"  # an earlier claim: the older record counts
    look.close()
    assert fake.closed


def test_delivered_lookup_that_cannot_finish_raises_and_drops_its_consumer():
    from inference.sinks import DeliveredLookup

    fake = FakeConsumer({0: [(i, b"x", b"{}") for i in range(50)]})
    made = []
    look = DeliveredLookup({}, "rejects.t", margin_s=0, max_records=10,
                           consumer_factory=lambda: made.append(fake) or fake)
    with pytest.raises(SinkError, match="not finished after"):
        look(RejectCommand.from_result(make_result(item_id="i1")), 0.0)
    assert fake.closed
    fake.closed, look._max_records = False, 1000
    assert look(RejectCommand.from_result(make_result(item_id="i1")), 0.0) is None
    assert len(made) == 2  # a fresh consumer after the failed lookup


def test_close_closes_the_lookup(r):
    dlog = DeliveredLog()
    s = reject_sink(r, Producer(), delivered=dlog)
    s.close()
    assert dlog.closed


# --- dead letters --------------------------------------------------------------------------------

def dead(offset: int = 17, key: bytes = b"cam0") -> DeadLetterIn:
    return DeadLetterIn(key=key, value=b"garbage", headers=[("frame_id", b"f9")], reason="value: bad",
                        stage="decode", topic="frames", partition=3, offset=offset)


def test_dead_letters_carry_reason_and_coordinates():
    from ingest.dlq import parse_dead_letter

    prod = Producer()
    s = DeadLetterSink(prod, "dlq.t")
    s.add(dead())
    assert s.flush() == 1
    m = prod.sent[0]
    assert m["topic"] == "dlq.t" and m["key"] == b"cam0" and m["value"] == b"garbage"
    dl = parse_dead_letter(m["value"], m["headers"], key=m["key"])
    assert (dl.reason, dl.stage, dl.topic, dl.partition, dl.offset) == ("value: bad", "decode", "frames", 3, 17)
    assert dl.headers == [("frame_id", b"f9")] and dl.frame_id == "f9"


def test_unacknowledged_dead_letter_raises_and_only_it_is_retried():
    prod = Producer()
    prod.plan[b"bad"] = [Fut("fail")]
    s = DeadLetterSink(prod, "dlq.t")
    s.add(dead(1, b"good"))
    s.add(dead(2, b"bad"))
    with pytest.raises(SinkError, match=r"frames\[3\]@2"):
        s.flush()
    assert s.flush() == 1
    assert [m["key"] for m in prod.sent] == [b"good", b"bad", b"bad"]


def test_dead_letter_refused_as_too_large_is_sent_without_its_value():
    from ingest.dlq import parse_dead_letter

    prod = Producer()
    prod.plan[b"cam0"] = [Fut("fail", MessageSizeTooLargeError("too big"))]
    s = DeadLetterSink(prod, "dlq.t")
    s.add(dead())
    with pytest.raises(SinkError):
        s.flush()
    assert s.flush() == 1
    m = prod.sent[-1]
    dl = parse_dead_letter(m["value"], m["headers"], key=m["key"])
    assert dl.value == b"" and "original record dropped" in dl.reason and dl.offset == 17


class RaisingProducer(Producer):
    """``send()`` itself raises for the first ``n`` calls (kafka-python: no topic metadata within
    max_block_ms raises KafkaTimeoutError synchronously)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def send(self, topic, key=None, value=None, headers=None):
        if self.n:
            self.n -= 1
            raise KafkaTimeoutError("Failed to update metadata after 60.0 secs.")
        return super().send(topic, key=key, value=value, headers=headers)


def test_a_send_that_raises_keeps_its_claim_and_is_sent_on_the_next_flush(r):
    p = RaisingProducer(2)
    s = reject_sink(r, p)
    s.add(make_result(frame_id="f1", item_id="i1", decision=True))
    s.add(make_result(frame_id="f2", item_id="i2", decision=True))
    with pytest.raises(SinkError, match="send raised"):
        s.flush()
    assert s.pending == 2 and claim(r, "i1").startswith("f1|pending") and p.sent == []
    got = s.flush()
    assert sorted(c.item_id for c in got) == ["i1", "i2"] and s.pending == 0
    assert claim(r, "i1") == "f1|sent" and len(p.sent) == 2


def test_the_same_item_id_on_two_lines_is_rejected_on_each(r):
    p = Producer()
    s = reject_sink(r, p)
    s.add(make_result(frame_id="f1", item_id="tray-3", line_id="L1", decision=True))
    s.add(make_result(frame_id="f2", item_id="tray-3", line_id="L2", decision=True))
    got = s.flush()
    assert sorted(c.command_id for c in got) == ["L1/tray-3", "L2/tray-3"] and s.suppressed == 0
