"""Cold start in any order, without a broker: the consumer thread retries creating its client with
backoff, the checkpoint's producer is created on first use, and the consumer tells the health
check which partitions it holds and what the metadata says of the frames topic."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError
from kafka.structs import TopicPartition

from inference.config import ServeAppConfig
from inference.consumer import FrameConsumer
from inference.lazy_producer import LazyProducer, ProducerUnavailable
from inference.offsets import OffsetTracker

from .test_consumer import FakeKafka


class _Stop:
    """Stands in for the thread's stop event: records the backoff waits, set after ``limit`` waits."""

    def __init__(self, limit: int = 100):
        self.waits: list[float] = []
        self.limit = limit

    def is_set(self) -> bool:
        return len(self.waits) >= self.limit

    def wait(self, s: float) -> bool:
        self.waits.append(s)
        return self.is_set()

    def set(self) -> None:
        self.limit = 0


def consumer(**ingress) -> FrameConsumer:
    cfg = ServeAppConfig(standin={}, ingress={"connect_backoff_max_s": 2.0, **ingress})
    return FrameConsumer(cfg, OffsetTracker(), lambda frames: None)


def test_consumer_retries_creating_its_client_with_backoff_until_kafka_answers(monkeypatch):
    c = consumer()
    fake = FakeKafka()
    attempts = [KafkaTimeoutError("Unable to bootstrap"), KafkaConnectionError(), OSError("refused"),
                KafkaTimeoutError("Unable to bootstrap"), fake]

    def open_():
        item = attempts.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    monkeypatch.setattr(c, "_open", open_)
    c._stop_evt = stop = _Stop()
    assert c._connect() is fake
    assert stop.waits == [0.5, 1.0, 2.0, 2.0]  # doubling, capped at connect_backoff_max_s
    assert c.connect_attempts == 4 and c.connect_error is None and c.connecting_since is not None


def test_consumer_keeps_the_last_connect_error_for_health_and_stops_when_asked(monkeypatch):
    c = consumer()
    err = KafkaTimeoutError("Unable to bootstrap from ['nowhere:9092']")
    monkeypatch.setattr(c, "_open", lambda: (_ for _ in ()).throw(err))
    c._stop_evt = _Stop(limit=3)
    assert c._connect() is None  # stopped while Kafka was still unreachable
    assert c.connect_error is err and c.connect_attempts == 3 and not c.is_connected()


def test_a_bug_while_creating_the_client_is_not_retried(monkeypatch):
    c = consumer()

    def bad():
        raise TypeError("unexpected keyword")

    monkeypatch.setattr(c, "_open", bad)
    c._stop_evt = _Stop()
    with pytest.raises(TypeError):
        c._connect()


def test_run_records_a_failure_after_connecting_only_through_error(monkeypatch):
    c = consumer()
    monkeypatch.setattr(c, "_open", lambda: (_ for _ in ()).throw(ValueError("bug")))
    c.run()
    assert isinstance(c.error, ValueError) and c.is_connected()  # ready is set so waiters wake


class _Cluster:
    def __init__(self, refreshed: int, parts: dict[str, set[int]]):
        self._last_successful_refresh_ms = refreshed
        self._parts = parts

    def partitions_for_topic(self, topic):
        return self._parts.get(topic)


def _step(c: FrameConsumer) -> None:
    c._step({"next_commit": 1e18, "next_lag": 1e18, "unassigned_since": 5.0, "next_warn": 1e18})


def test_the_consumer_reports_when_it_holds_no_partition_and_what_the_metadata_says():
    c = consumer()
    topic = c._cfg.topics.frames
    k = FakeKafka()
    k._cluster = _Cluster(0, {})
    c._consumer = k
    _step(c)
    assert c.unassigned_since == 5.0 and c.topic_partitions is None  # no metadata read yet
    k._cluster = _Cluster(1, {})
    _step(c)
    assert c.topic_partitions == 0  # read, and the topic is not in it: misnamed or deleted
    k._cluster = _Cluster(1, {topic: {0, 1, 2}})
    _step(c)
    assert c.topic_partitions == 3
    c._tracker.assign([TopicPartition(topic, 0)])
    _step(c)
    assert c.unassigned_since is None


def test_cached_partitions_without_a_cluster_attribute_is_unknown():
    c = consumer()
    c._consumer = SimpleNamespace()
    assert c._cached_partitions() is None


# ----------------------------------------------------------------------------------- the producer
class _Producer:
    def __init__(self):
        self.sent, self.closed = [], None

    def send(self, topic, **kw):
        self.sent.append((topic, kw))
        return "future"

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        self.closed = timeout


def test_lazy_producer_is_created_on_first_use_and_retried_after_a_failure():
    made: list = []
    outcomes = [KafkaTimeoutError("Unable to bootstrap"), None]

    def factory():
        o = outcomes.pop(0)
        if o is not None:
            raise o
        made.append(_Producer())
        return made[-1]

    p = LazyProducer(factory, name="rejects")
    assert not p.created and p.attempts == 0  # nothing reached at construction
    with pytest.raises(ProducerUnavailable, match="rejects not created: KafkaTimeoutError") as info:
        p.send("t", value=b"v")
    assert isinstance(info.value.__cause__, KafkaTimeoutError) and isinstance(p.last_error, KafkaTimeoutError)
    assert p.send("t", value=b"v") == "future" and p.created and p.attempts == 2 and p.last_error is None
    assert made[0].sent == [("t", {"value": b"v"})]
    p.close(timeout=3)
    assert made[0].closed == 3
    with pytest.raises(ProducerUnavailable, match="closed"):
        p.send("t", value=b"v")


def test_lazy_producer_warm_reports_instead_of_raising_and_close_before_use_is_a_no_op():
    p = LazyProducer(lambda: (_ for _ in ()).throw(KafkaConnectionError()))
    assert p.warm() is False and p.attempts == 1
    p.flush()
    p.close()
    ok = LazyProducer(_Producer)
    assert ok.warm() is True and ok.created


def test_the_checkpoint_reaches_no_server_when_opened(monkeypatch):
    """``open_checkpoint`` (what ``LineIngress.__init__`` calls) creates no Kafka client: with an
    unreachable broker it returns at once; the first flush that needs the producer fails and is
    retried by the checkpoint."""
    import time

    from inference.checkpoint import open_checkpoint

    cfg = ServeAppConfig(standin={}, kafka={"bootstrap_servers": "127.0.0.1:1"},
                         redis={"host": "127.0.0.1", "port": 1})
    t0 = time.monotonic()
    cp = open_checkpoint(cfg, lambda ticket: True)
    assert time.monotonic() - t0 < 2.0
    assert isinstance(cp.dlq._producer, LazyProducer) and not cp.dlq._producer.created
    cp.close()
