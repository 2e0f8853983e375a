"""Sinks with in-memory fakes: Redis layout, reject idempotency, failure handling."""

from __future__ import annotations

import pytest

from inference.contracts import RejectCommand, Result, reject_claim_key, result_key, stream_key
from inference.sinks import (
    ClaimBusy,
    DeadLetterIn,
    DeadLetterSink,
    RedisResultSink,
    RejectSink,
    SinkError,
)

from .fakes import FakeProducer, FakeRedis
from .test_contracts import make_result


@pytest.fixture
def redis_store():
    return FakeRedis()


NOW = 1_000_000.0


def reject_sink(r: FakeRedis, producer: FakeProducer, now: float = NOW) -> RejectSink:
    s = RejectSink(lambda: r, producer, "rejects.t", "p", claim_ttl_s=3600, send_timeout_s=5,
                   takeover_s=20, clock=lambda: now)
    s.setup()
    return s


def sent_items(producer: FakeProducer) -> list[str]:
    return [RejectCommand.from_kafka(m["value"]).item_id for m in producer.sent]


def test_result_sink_writes_hash_ttl_and_capped_stream(redis_store):
    sink = RedisResultSink(lambda: redis_store, "p", ttl_s=60, stream_maxlen=2)
    sink.setup()
    assert sink.flush() == 0
    for i in range(3):
        sink.add(make_result(frame_id=f"f{i}"))
    assert sink.flush() == 3
    h = redis_store.store[result_key("p", "f1")]
    assert Result.from_redis(h).frame_id == "f1"
    assert redis_store.ttl[result_key("p", "f1")] == 60
    stream = redis_store.streams[stream_key("p", "L1")]
    assert len(stream) == 2 and "mask_png" not in stream[0]
    assert sink.flush() == 0  # buffer cleared


def test_result_sink_keeps_buffer_when_redis_fails(redis_store):
    sink = RedisResultSink(lambda: redis_store, "p", ttl_s=60, stream_maxlen=10)
    sink.setup()
    sink.add(make_result())
    redis_store.fail_next_execute = True
    with pytest.raises(ConnectionError):
        sink.flush()
    assert sink.flush() == 1


def test_only_reject_decisions_become_commands(redis_store):
    prod = FakeProducer()
    s = reject_sink(redis_store, prod)
    s.add(make_result(decision=False))
    assert s.flush() == []
    assert prod.sent == []


def test_one_command_per_item_within_and_across_batches(redis_store):
    prod = FakeProducer()
    s = reject_sink(redis_store, prod)
    s.add(make_result(frame_id="a", item_id="i1", camera_id="cam0"))
    s.add(make_result(frame_id="b", item_id="i1", camera_id="cam1"))  # same item, other camera
    s.add(make_result(frame_id="c", item_id="i2"))
    sent = s.flush()
    assert [c.item_id for c in sent] == ["i1", "i2"]
    s.add(make_result(frame_id="d", item_id="i1"))  # a later frame of an already rejected item
    s.add(make_result(frame_id="a", item_id="i1"))  # a redelivery of the first frame
    assert s.flush() == []
    assert sent_items(prod) == ["i1", "i2"]
    assert redis_store.store[reject_claim_key("p", "i1")] == "a|sent"
    assert s.suppressed == 3


def test_redelivery_across_sink_instances_does_not_resend(redis_store):
    prod = FakeProducer()
    first = reject_sink(redis_store, prod)
    first.add(make_result(frame_id="a", item_id="i1"))
    first.flush()
    again = reject_sink(redis_store, prod)  # a restarted replica, same Redis
    again.add(make_result(frame_id="a", item_id="i1"))
    assert again.flush() == []
    assert sent_items(prod) == ["i1"]


def test_own_pending_claim_is_busy_until_takeover_then_sent(redis_store):
    key = reject_claim_key("p", "i1")
    redis_store.set(key, f"a|pending|{NOW - 5:.3f}", nx=True, ex=3600)  # another sender, 5 s ago
    prod = FakeProducer()
    s = reject_sink(redis_store, prod)
    s.add(make_result(frame_id="a", item_id="i1"))
    with pytest.raises(ClaimBusy, match="item i1 frame a"):
        s.flush()
    assert prod.sent == []
    # that sender finished meanwhile: the retry finds "sent" and sends nothing
    redis_store.store[key] = "a|sent"
    assert s.flush() == [] and prod.sent == []
    # a claim left by an attempt that died 30 s ago (> takeover): taken over and sent
    redis_store.store[key] = f"a|pending|{NOW - 30:.3f}"
    s.add(make_result(frame_id="a", item_id="i1"))
    assert [c.frame_id for c in s.flush()] == ["a"]
    assert redis_store.store[key] == "a|sent"


def test_other_frames_pending_claim_suppresses(redis_store):
    redis_store.set(reject_claim_key("p", "i9"), f"x|pending|{NOW - 999:.3f}", nx=True, ex=3600)
    prod = FakeProducer()
    s = reject_sink(redis_store, prod)
    s.add(make_result(frame_id="y", item_id="i9"))
    assert s.flush() == []  # frame x's offset stays uncommitted until its command is acked
    assert prod.sent == []


def test_takeover_must_outlast_a_send():
    with pytest.raises(ValueError, match="takeover_s"):
        RejectSink(lambda: None, None, "t", "p", 60, send_timeout_s=30, takeover_s=10)


def test_failed_send_releases_claim_raises_and_retry_sends_only_the_failed(redis_store):
    prod = FakeProducer()
    prod.fail_keys = {b"i2"}
    s = reject_sink(redis_store, prod)
    s.add(make_result(frame_id="a", item_id="i1"))
    s.add(make_result(frame_id="b", item_id="i2"))
    with pytest.raises(SinkError, match="item i2 frame b"):
        s.flush()
    assert reject_claim_key("p", "i2") not in redis_store.store  # released
    assert redis_store.store[reject_claim_key("p", "i1")] == "a|sent"
    prod.fail_keys = set()
    assert [c.item_id for c in s.flush()] == ["i2"]
    assert sent_items(prod) == ["i1", "i2"]


def test_dead_letters_carry_reason_and_coordinates():
    from ingest.dlq import parse_dead_letter

    prod = FakeProducer()
    s = DeadLetterSink(prod, "dlq.t")
    s.setup()
    s.add(DeadLetterIn(key=b"cam0", value=b"garbage", headers=[("frame_id", b"f9")], reason="value: bad",
                       stage="decode", topic="frames", partition=3, offset=17))
    assert s.flush() == 1
    m = prod.sent[0]
    assert m["topic"] == "dlq.t" and m["key"] == b"cam0" and m["value"] == b"garbage"
    dl = parse_dead_letter(m["value"], m["headers"], key=m["key"])
    assert (dl.reason, dl.stage, dl.topic, dl.partition, dl.offset) == ("value: bad", "decode", "frames", 3, 17)
    assert dl.headers == [("frame_id", b"f9")] and dl.frame_id == "f9"


def test_dead_letter_without_ack_raises():
    prod = FakeProducer()
    prod.fail_keys = {b"cam0"}
    s = DeadLetterSink(prod, "dlq.t")
    s.add(DeadLetterIn(key=b"cam0", value=b"x", headers=[], reason="r", stage="decode",
                       topic="frames", partition=0, offset=1))
    with pytest.raises(SinkError, match=r"frames\[0\]@1"):
        s.flush()
