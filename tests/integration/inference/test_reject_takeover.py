"""A reject sender dies after the broker stored its command but before marking its Redis claim
``sent``; another sender takes the stale claim over. Real Kafka and Redis: the taken-over command is
looked up on the rejects topic first, so the item gets exactly one record."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from inference.contracts import RejectCommand, Result, reject_claim_key, utcnow
from inference.sinks import DeliveredLookup, RejectSink, SinkError

from ..conftest import read_topic_records

TAKEOVER_S = 10.0


def make_result(frame_id: str, item_id: str) -> Result:
    """A reject decision of line L1 (what RejectSink turns into a command)."""
    now = utcnow()
    return Result(frame_id=frame_id, item_id=item_id, line_id="L1", camera_id="cam0", recipe="vials",
                  captured_at=now, decided_at=now, score=0.9, decision=True, threshold=0.5, roi_id="r",
                  topic="frames", partition=0, offset=0)


class Killed(BaseException):
    """The sender's process died here."""


@pytest.fixture
def producer(kafka_settings) -> Iterator[object]:
    from kafka import KafkaProducer

    p = KafkaProducer(**kafka_settings.client_kwargs(), acks="all", linger_ms=1, delivery_timeout_ms=5000,
                      request_timeout_ms=2500)
    yield p
    p.close(timeout=10)


def _sink(redis_client, producer, topic: str, prefix: str, clock, lookup) -> RejectSink:
    s = RejectSink(lambda: redis_client, producer, topic, prefix, claim_ttl_s=600, delivery_timeout_s=5.0,
                   takeover_s=TAKEOVER_S, clock=clock, delivered=lookup)
    s.setup()
    return s


def _records_of(kafka_settings, topic: str, item: str) -> list[RejectCommand]:
    recs = read_topic_records(kafka_settings, topic, expected=99, timeout_s=3.0)
    return [RejectCommand.from_kafka(r.value) for r in recs if r.key == item.encode()]


def _die_before_the_mark(sink: RejectSink) -> None:
    def killed(*args, **kwargs):
        raise Killed("sender died between the broker's ack and the sent mark")

    sink._scripts["mark"] = killed


def test_taken_over_claim_whose_command_was_delivered_is_not_sent_again(
    kafka_settings, topic_factory, redis_client, redis_prefix, producer
):
    topic = topic_factory(partitions=3)
    lookups = []
    a = _sink(redis_client, producer, topic, redis_prefix, time.time,
              DeliveredLookup(kafka_settings.client_kwargs(), topic))
    _die_before_the_mark(a)
    a.add(make_result(frame_id="fa", item_id="item-7"))
    with pytest.raises(Killed):
        a.flush()  # acked by the broker, never marked
    claim = redis_client.get(reject_claim_key(redis_prefix, "L1", "item-7")).decode()
    assert claim.startswith("fa|pending|"), claim

    # later (past takeover_s), another replica decides another frame of the same item
    lookup = DeliveredLookup(kafka_settings.client_kwargs(), topic)
    b = _sink(redis_client, producer, topic, redis_prefix, lambda: time.time() + TAKEOVER_S + 1,
              lambda cmd, since: lookups.append(since) or lookup(cmd, since))
    b.add(make_result(frame_id="fb", item_id="item-7"))
    assert [c.item_id for c in b.flush()] == ["item-7"]
    assert b.takeovers == 1 and b.found_delivered == 1 and b.resent == 0
    assert lookups == [pytest.approx(float(claim.split("|")[3]))]
    assert redis_client.get(reject_claim_key(redis_prefix, "L1", "item-7")) == b"fb|sent"
    b.close()

    got = _records_of(kafka_settings, topic, "item-7")
    assert [(c.command_id, c.frame_id) for c in got] == [("L1/item-7", "fa")], got


def test_taken_over_claim_whose_command_never_left_is_sent_once(
    kafka_settings, topic_factory, redis_client, redis_prefix, producer
):
    topic = topic_factory(partitions=3)
    # another item's command is on the topic: not mistaken for this one
    other = _sink(redis_client, producer, topic, redis_prefix, time.time, None)
    other.add(make_result(frame_id="f0", item_id="item-1"))
    other.flush()
    # sender A claimed item-8 and died before sending
    redis_client.set(reject_claim_key(redis_prefix, "L1", "item-8"), f"fa|pending|{time.time():.3f}", ex=600)
    lookup = DeliveredLookup(kafka_settings.client_kwargs(), topic)
    b = _sink(redis_client, producer, topic, redis_prefix, lambda: time.time() + TAKEOVER_S + 1, lookup)
    b.add(make_result(frame_id="fb", item_id="item-8"))
    assert [c.frame_id for c in b.flush()] == ["fb"]
    assert b.found_delivered == 0 and redis_client.get(reject_claim_key(redis_prefix, "L1", "item-8")) == b"fb|sent"
    b.close()
    assert [c.frame_id for c in _records_of(kafka_settings, topic, "item-8")] == ["fb"]


def test_unreachable_broker_for_the_lookup_sends_nothing_and_keeps_the_claim(
    kafka_settings, topic_factory, redis_client, redis_prefix, producer
):
    topic = topic_factory(partitions=1)
    redis_client.set(reject_claim_key(redis_prefix, "L1", "item-9"), f"fa|pending|{time.time():.3f}", ex=600)
    dead = DeliveredLookup({**kafka_settings.client_kwargs(), "bootstrap_servers": ["127.0.0.1:9"]}, topic,
                           timeout_s=2.0)
    b = _sink(redis_client, producer, topic, redis_prefix, lambda: time.time() + TAKEOVER_S + 1, dead)
    b.add(make_result(frame_id="fb", item_id="item-9"))
    with pytest.raises(SinkError, match="delivered lookup failed"):
        b.flush()
    assert b.lookup_failures == 1
    assert redis_client.get(reject_claim_key(redis_prefix, "L1", "item-9")).decode().startswith("fb|pending|")
    b.close()
    assert _records_of(kafka_settings, topic, "item-9") == []
