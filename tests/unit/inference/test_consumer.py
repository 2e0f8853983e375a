"""The consumer thread's record handling with a scripted kafka-python stand-in: nothing a record
carries stops it, poll errors skip the bad record, commit errors are retried, re-assigned
partitions are sought back, the window is bounded in bytes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError
from kafka.structs import TopicPartition

from inference.config import ServeAppConfig
from inference.consumer import FrameConsumer, _Listener, locate_poll_failure
from inference.offsets import OffsetTracker
from ingest.contract import FrameMeta, encode_frame

TP = TopicPartition("frames", 0)


class FakeKafka:
    def __init__(self):
        self.polls: list = []  # each: dict batch, or an exception to raise
        self.positions: dict = {}
        self.seeks: list = []
        self.commits: list = []
        self.commit_errors: list = []
        self.answers: list = []
        self.defer = False
        self._fetcher = SimpleNamespace(_next_partition_records=None, _next_in_line_exception_metadata=None)
        self._paused: set = set()

    def poll(self, timeout_ms=0, max_records=None):
        item = self.polls.pop(0) if self.polls else {}
        if isinstance(item, BaseException):
            raise item
        return item

    def position(self, tp, timeout_ms=None):
        return self.positions.get(tp, 0)

    def seek(self, tp, offset):
        self.seeks.append((tp, offset))
        self.positions[tp] = offset

    def commit(self, offsets, timeout_ms=None):
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        self.commits.append({tp: o.offset for tp, o in offsets.items()})

    def commit_async(self, offsets, callback=None):
        """Answered at once, or (``defer``) when the test calls :meth:`answer` (a later poll)."""
        outcome = self.commit_errors.pop(0) if self.commit_errors else None
        if outcome is None:
            self.commits.append({tp: o.offset for tp, o in offsets.items()})
        if callback is not None:
            self.answers.append(lambda: callback(offsets, outcome))
            if not self.defer:
                self.answer()

    def answer(self):
        while self.answers:
            self.answers.pop(0)()

    def assignment(self):
        return {TP}

    def pause(self, *tps):
        self._paused.update(tps)

    def resume(self, *tps):
        self._paused.difference_update(tps)

    def paused(self):
        return set(self._paused)

    def highwater(self, tp):
        return None


def record(offset: int, value: bytes | None, headers) -> SimpleNamespace:
    return SimpleNamespace(offset=offset, key=b"cam0", value=value, headers=headers)


def good_record(offset: int) -> SimpleNamespace:
    from datetime import UTC, datetime

    meta = FrameMeta(line_id="L1", camera_id="cam0", frame_id=f"f{offset}", item_id="i1",
                     captured_at=datetime.now(UTC), encoding="png", width=8, height=8, channels=1, recipe="r")
    value, headers = encode_frame(np.zeros((8, 8), np.uint8), meta)
    return record(offset, value, headers)


@pytest.fixture
def setup():
    cfg = ServeAppConfig(standin={}, ingress={"inflight_window": 8, "inflight_max_bytes": 2048})
    tracker = OffsetTracker()
    tracker.assign([TP])
    got: list = []
    c = FrameConsumer(cfg, tracker, got.extend)
    c._consumer = FakeKafka()
    return c, tracker, got


def test_any_exception_while_decoding_a_record_becomes_its_error(setup, monkeypatch):
    c, tracker, got = setup
    import ingest.contract

    real = ingest.contract.decode_frame

    def explode(value, headers, **kw):
        if value == b"boom":
            raise OverflowError("date value out of range")
        return real(value, headers)

    monkeypatch.setattr(ingest.contract, "decode_frame", explode)
    c._consumer.polls = [{TP: [good_record(0), record(1, b"boom", []), record(2, None, None), good_record(3)]}]
    c._poll(100, 8)
    assert [f.offset for f in got] == [0, 1, 2, 3]
    assert got[0].error is None and got[0].meta.frame_id == "f0"
    assert isinstance(got[1].error, OverflowError)
    assert got[2].error is not None and got[2].value == b""
    assert got[3].error is None and tracker.in_flight() == 4


def test_poll_error_on_an_unparsable_record_skips_it_and_hands_over_a_stub(setup):
    c, tracker, got = setup
    k = c._consumer
    k._fetcher._next_partition_records = SimpleNamespace(topic_partition=TP, next_fetch_offset=5)
    k.positions[TP] = 5
    k.polls = [UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), {TP: [good_record(6)]}]
    c._poll(100, 8)
    assert k.seeks == [(TP, 6)]
    assert len(got) == 1 and got[0].offset == 5 and got[0].error is not None
    assert "unreadable by the Kafka client" in str(got[0].error) and got[0].value == b""
    c._poll(100, 8)
    assert [f.offset for f in got] == [5, 6] and c.skipped == 1


def test_poll_error_that_cannot_be_located_or_is_a_connection_error_skips_nothing(setup):
    c, tracker, got = setup
    k = c._consumer
    k.polls = [RuntimeError("no fetch in line")]
    c._poll(1, 8)
    k._fetcher._next_partition_records = SimpleNamespace(topic_partition=TP, next_fetch_offset=5)
    k.positions[TP] = 5
    k.polls = [KafkaConnectionError("broker down")]
    c._poll(1, 8)
    assert k.seeks == [] and got == [] and c.poll_errors == 2


def test_locate_requires_the_position_to_be_at_the_failed_record():
    k = FakeKafka()
    k._fetcher._next_partition_records = SimpleNamespace(topic_partition=TP, next_fetch_offset=5)
    k.positions[TP] = 3  # the records in line are not the next ones: not what failed
    assert locate_poll_failure(k) is None
    k.positions[TP] = 5
    assert locate_poll_failure(k) == (TP, 5)


def test_commit_errors_are_retried_not_fatal(setup):
    c, tracker, _ = setup
    t = tracker.add(TP, 0)
    tracker.complete(t)
    c._consumer.commit_errors = [KafkaTimeoutError("coordinator gone"), KafkaConnectionError("refused")]
    c.commit()
    c.commit()
    assert c.commit_errors == 2 and c._consumer.commits == []
    c.commit()
    assert c._consumer.commits == [{TP: 1}] and c.commits == 1


def test_one_commit_in_flight_and_an_unanswered_one_is_replaced(setup):
    c, tracker, _ = setup
    k = c._consumer
    k.defer = True
    tracker.complete(tracker.add(TP, 0))
    c.commit()
    assert k.commits == [{TP: 1}] and c.commits == 0  # sent, not answered yet: not marked
    tracker.complete(tracker.add(TP, 1))
    c.commit()
    assert k.commits == [{TP: 1}]  # one in flight: the poll loop does not queue another
    k.answer()
    assert c.commits == 1 and tracker.committable() == {TP: 2}
    c.commit()
    assert k.commits[-1] == {TP: 2}
    stale = list(k.answers)
    k.answers.clear()
    c._commit_sent = (c._commit_sent[0], c._commit_sent[1] - 60)  # unanswered past commit_timeout_ms
    tracker.complete(tracker.add(TP, 2))
    c.commit()
    assert c.commit_errors == 1 and k.commits[-1] == {TP: 3}
    pending = c._commit_sent
    stale[0]()  # the late answer still marks what it covered, and leaves the newer commit in flight
    assert c._commit_sent == pending and c.commits == 2
    k.answer()
    assert c._commit_sent is None and c.commits == 3 and tracker.committable() == {}


def test_shutdown_commit_waits_for_its_answer(setup):
    c, tracker, _ = setup
    c._consumer.defer = True
    tracker.complete(tracker.add(TP, 0))
    c.commit()  # async, unanswered
    tracker.complete(tracker.add(TP, 1))
    c.commit(sync=True)
    assert c._consumer.commits[-1] == {TP: 2} and c.commits == 1 and c.commit_errors == 0
    assert tracker.committable() == {}


def test_window_is_bounded_in_bytes_as_well_as_frames(setup):
    c, tracker, _ = setup
    tracker.add(TP, 0, nbytes=4096)  # one big frame fills the 2 KiB window
    c._step({"next_commit": 1e18, "next_lag": 1e18, "unassigned_since": 0, "next_warn": 1e18})
    assert c.paused and c._consumer.paused() == {TP}


def test_partition_re_assigned_to_this_member_is_sought_back_to_its_watermark(setup):
    c, tracker, _ = setup
    c._cfg = ServeAppConfig(standin={}, ingress={"revoke_drain_timeout_s": 0.0})
    for o in range(3):
        t = tracker.add(TP, 10 + o)
        if o == 0:
            tracker.complete(t)
    listener = _Listener(c)
    listener.on_partitions_revoked([TP])  # 11 and 12 dropped in flight
    assert c._consumer.commits == [{TP: 11}]
    c._consumer.positions[TP] = 13  # kafka-python keeps the position past the dropped frames
    listener.on_partitions_assigned([TP])
    assert c._consumer.seeks == [(TP, 11)]
    listener.on_partitions_revoked([TP])
    listener.on_partitions_assigned([TP])
    assert c._consumer.seeks == [(TP, 11)]  # nothing dropped the second time: no seek


class _NotUtf8(str):
    def encode(self, *args, **kwargs):
        return b"\xff\xfebad"


def test_a_non_utf8_header_key_is_read_by_the_patched_client_and_dead_lettered(setup):
    from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

    from inference.kafka_compat import tolerate_non_utf8_header_keys

    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    builder.append(0, timestamp=None, key=None, value=b"v0", headers=[("n", b"0")])
    builder.append(1, timestamp=None, key=None, value=b"v1", headers=[(_NotUtf8("x"), b"1")])
    builder.append(2, timestamp=None, key=None, value=b"v2", headers=[("n", b"2")])
    buf = bytes(builder.build())
    assert tolerate_non_utf8_header_keys()
    recs = list(DefaultRecordBatch(buf))
    assert [r.offset for r in recs] == [0, 1, 2]  # the batch is not lost behind the bad key
    c, tracker, got = setup
    c._consumer.polls = [{TP: [record(r.offset, r.value, r.headers) for r in recs]}]
    c._poll(100, 8)
    bad = got[1]
    assert bad.error is not None and "not valid UTF-8" in str(bad.error)
    assert bad.headers == [("\\xff\\xfebad", b"1")]  # writable again for the dead letter
    assert "UTF-8" not in str(got[0].error) and "UTF-8" not in str(got[2].error)
