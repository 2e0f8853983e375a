"""Both health checks, every branch, each red one naming its cause: the pure checks
(:mod:`inference.health`) on scripted state, and ``LineIngress.check_health`` /
``GRDNetModel.check_health`` wired to them without a cluster."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from inference.checkpoint import Checkpoint
from inference.config import ServeAppConfig
from inference.health import IngressState, ModelState, Unhealthy, check_ingress, check_model
from inference.offsets import OffsetTracker

NOW = 10_000.0


def cfg(**over) -> ServeAppConfig:
    return ServeAppConfig(standin={}, **over)


@dataclass
class Consumer:
    """A consumer thread as the health check sees it: connected, alive, polling, holding partitions."""

    error: BaseException | None = None
    last_loop: float = NOW
    last_poll_ok: float = NOW
    connecting_since: float | None = NOW - 1
    connect_error: BaseException | None = None
    unassigned_since: float | None = None
    topic_partitions: int | None = 3
    connected: bool = True
    alive: bool = True

    def is_connected(self) -> bool:
        return self.connected

    def is_alive(self) -> bool:
        return self.alive


def state(c: Consumer | None = None, **over) -> IngressState:
    base = dict(consumer=c or Consumer(), sinks_failing_s=0.0, sinks_error=None, sink_task_ended=False,
                sink_task_error=None, oldest_inflight_s=0.0)
    base.update(over)
    return IngressState(**base)


def red(s: IngressState, c: ServeAppConfig | None = None, now: float = NOW) -> str:
    with pytest.raises(Unhealthy) as info:
        check_ingress(s, c or cfg(), now)
    return str(info.value)


# ------------------------------------------------------------------------------------ the ingress
def test_a_connected_polling_replica_holding_partitions_is_green():
    check_ingress(state(), cfg(), NOW)


def test_consumer_thread_failure_is_red_and_chains_the_error():
    boom = ValueError("boom")
    with pytest.raises(Unhealthy, match="consumer thread failed: ValueError") as info:
        check_ingress(state(Consumer(error=boom)), cfg(), NOW)
    assert info.value.__cause__ is boom


def test_kafka_unreachable_at_start_is_green_for_the_grace_then_red_naming_the_error():
    from kafka.errors import KafkaTimeoutError

    err = KafkaTimeoutError("Unable to bootstrap from ['kafka:9092']")
    c = Consumer(connected=False, connecting_since=NOW - 119, connect_error=err, unassigned_since=None)
    check_ingress(state(c), cfg(), NOW)  # default grace 120 s: still starting
    msg = red(state(c), cfg(), NOW + 2)
    assert "Kafka not reachable for 121s" in msg and "ingress.connect_grace_s" in msg and "Unable to bootstrap" in msg
    # nothing else is judged before the consumer is connected (no loop, no poll yet)
    stale = Consumer(connected=False, connecting_since=NOW - 5, last_loop=0.0, last_poll_ok=0.0, alive=True)
    check_ingress(state(stale, sinks_failing_s=1e6), cfg(), NOW)


def test_consumer_thread_that_exited_is_red_unless_the_replica_is_stopping():
    c = Consumer(alive=False)
    assert red(state(c)) == "consumer thread exited"
    check_ingress(state(c, stopping=True), cfg(), NOW)


def test_consumer_loop_stall_and_failing_polls_are_red():
    assert "consumer loop stalled for 61s" in red(state(Consumer(last_loop=NOW - 61)))
    assert "every poll failed for 61s" in red(state(Consumer(last_poll_ok=NOW - 61)))
    check_ingress(state(Consumer(last_loop=NOW - 59, last_poll_ok=NOW - 59)), cfg(), NOW)


def test_no_partition_of_a_missing_topic_is_red_after_the_bound():
    c = Consumer(unassigned_since=NOW - 121, topic_partitions=0)
    msg = red(state(c))
    assert f"no partition of {cfg().topics.frames!r} held for 121s" in msg
    assert "does not exist or has no partitions" in msg and "ingress.unassigned_unhealthy_s" in msg
    check_ingress(state(Consumer(unassigned_since=NOW - 119, topic_partitions=0)), cfg(), NOW)  # a rebalance


def test_no_partition_while_the_topic_has_enough_for_every_replica_is_a_stalled_join():
    c = Consumer(unassigned_since=NOW - 200, topic_partitions=2)
    msg = red(state(c), cfg(ingress={"num_replicas": 2}))
    assert "2 partition(s) for ingress.num_replicas 2: a stalled group join" in msg


def test_an_idle_standby_replica_beyond_the_partitions_stays_green():
    # three replicas, two partitions: one replica legitimately holds none
    check_ingress(state(Consumer(unassigned_since=NOW - 1000, topic_partitions=2)),
                  cfg(ingress={"num_replicas": 3}), NOW)
    # metadata not read yet: not judged on the count
    check_ingress(state(Consumer(unassigned_since=NOW - 1000, topic_partitions=None)), cfg(), NOW)


def test_sink_task_end_failing_sinks_and_an_old_inflight_frame_are_red():
    err = RuntimeError("sink bug")
    with pytest.raises(Unhealthy, match="sink task ended: RuntimeError\\('sink bug'\\)") as info:
        check_ingress(state(sink_task_ended=True, sink_task_error=err), cfg(), NOW)
    assert info.value.__cause__ is err
    assert red(state(sink_task_ended=True)) == "sink task ended: None"  # cancelled
    msg = red(state(sinks_failing_s=61, sinks_error=ConnectionRefusedError("redis down")))
    assert "sinks failing for 61s" in msg and "redis down" in msg
    msg = red(state(oldest_inflight_s=121))
    assert "oldest in-flight frame polled 121s ago" in msg and "ingress.max_inflight_age_s" in msg


def test_bounds_are_validated_naming_the_field():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unassigned_unhealthy_s .* must exceed max_poll_interval_ms"):
        cfg(ingress={"unassigned_unhealthy_s": 30})
    with pytest.raises(ValidationError, match="connect_grace_s"):
        cfg(ingress={"connect_grace_s": 0})
    with pytest.raises(ValidationError, match="model.max_queue_age_s .* deadline.default_bound_ms"):
        cfg(model={"max_queue_age_s": 5})
    with pytest.raises(ValidationError, match="model.max_batch_stall_s"):
        cfg(model={"max_batch_stall_s": 10}, deadline={"default_bound_ms": 20_000})
    c = cfg(deadline={"default_bound_ms": 2000})
    assert c.model_queue_age_bound_s() == 4.0 and c.model_stall_bound_s() == 4.0
    c = cfg(model={"max_queue_age_s": 40, "max_batch_stall_s": 50})
    assert c.model_queue_age_bound_s() == 40 and c.model_stall_bound_s() == 50


# ----------------------------------------------------------------- LineIngress.check_health wired
class _Sink:
    def __init__(self, fail: BaseException | None = None):
        self.fail = fail

    def setup(self):
        pass

    def add(self, x):
        pass

    def flush(self):
        if self.fail is not None:
            raise self.fail

    def close(self):
        pass


def _ingress(consumer: Consumer, flusher_done: BaseException | None = None, **over):
    """A ``LineIngress`` with its health inputs only (no loop, no Kafka): the real tracker and
    checkpoint, a scripted consumer and sink task."""
    from inference.ingress import LineIngress

    class Probe(LineIngress.func_or_class):
        def __del__(self):  # the real one is a coroutine (graceful shutdown): nothing to stop here
            pass

    ing = object.__new__(Probe)
    ing._cfg = cfg(**over)
    ing._consumer = consumer
    ing._tracker = OffsetTracker()
    ing._checkpoint = Checkpoint(_Sink(), _Sink(), _Sink(), ing._tracker.complete, sleep=lambda s: None)
    ing._stopping = False
    loop = asyncio.new_event_loop()
    fut = loop.create_future()
    if flusher_done is not None:
        fut.set_exception(flusher_done)
    ing._flusher = fut
    loop.close()
    return ing


def test_line_ingress_check_health_reads_its_consumer_tracker_checkpoint_and_sink_task():
    now = time.monotonic()
    live = Consumer(last_loop=now, last_poll_ok=now, connecting_since=now)
    _ingress(live).check_health()
    with pytest.raises(Unhealthy, match="sink task ended: ValueError"):
        _ingress(live, flusher_done=ValueError("x")).check_health()
    gone = Consumer(last_loop=now, last_poll_ok=now, connecting_since=now, unassigned_since=now - 500,
                    topic_partitions=0)
    with pytest.raises(Unhealthy, match="does not exist"):
        _ingress(gone).check_health()
    ing = _ingress(live)
    ing._checkpoint.failing_since = now - 100
    ing._checkpoint.last_error = OSError("kafka down")
    with pytest.raises(Unhealthy, match="sinks failing for 10\\ds: OSError\\('kafka down'\\)"):
        ing.check_health()


def test_line_ingress_check_health_red_on_an_old_inflight_frame_in_its_tracker():
    from kafka.structs import TopicPartition

    now = time.monotonic()
    ing = _ingress(Consumer(last_loop=now, last_poll_ok=now, connecting_since=now),
                   ingress={"max_inflight_age_s": 0.05})
    tp = TopicPartition("f", 0)
    ing._tracker.assign([tp])
    ing._tracker.add(tp, 0)
    time.sleep(0.1)
    with pytest.raises(Unhealthy, match="oldest in-flight frame polled"):
        ing.check_health()


# -------------------------------------------------------------------------------------- the model
def mstate(**over) -> ModelState:
    base = dict(bad_batches=0, last_problem="", queued=0, oldest_queued_at=None, running=0, last_progress=NOW)
    base.update(over)
    return ModelState(**base)


def test_model_green_when_idle_even_long_after_its_last_batch():
    check_model(mstate(last_progress=NOW - 10_000), cfg(), NOW)


def test_model_red_after_consecutive_bad_batches_naming_the_last_problem():
    with pytest.raises(Unhealthy, match="5 consecutive bad batches .*last: non-finite scores"):
        check_model(mstate(bad_batches=5, last_problem="non-finite scores"), cfg(), NOW)
    check_model(mstate(bad_batches=4), cfg(), NOW)


def test_model_red_when_no_batch_finished_while_requests_wait():
    with pytest.raises(Unhealthy, match="no batch finished for 61.0s while 8 request\\(s\\) wait "
                                        "\\(8 in the running batch; .*hung predict"):
        check_model(mstate(running=8, last_progress=NOW - 61), cfg(), NOW)
    with pytest.raises(Unhealthy, match="no batch finished .* while 3 request"):
        check_model(mstate(queued=3, oldest_queued_at=NOW - 1, last_progress=NOW - 61), cfg(), NOW)
    check_model(mstate(running=8, last_progress=NOW - 59), cfg(), NOW)


def test_model_red_when_the_oldest_queued_request_is_too_old():
    with pytest.raises(Unhealthy, match="oldest queued request waited 61.0s \\(bound model.max_queue_age_s 60s; 2 queued\\)"):
        check_model(mstate(queued=2, oldest_queued_at=NOW - 61, last_progress=NOW - 1), cfg(), NOW)
    check_model(mstate(queued=2, oldest_queued_at=NOW - 59, last_progress=NOW - 1), cfg(), NOW)


class _Hang:
    """Wraps a predictor: ``predict`` blocks until released (a stuck executor, a CUDA deadlock)."""

    def __init__(self, inner):
        self.inner, self.release = inner, threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, images, rois=None):
        self.release.wait(10)
        return self.inner.predict(images, rois)


def test_grdnet_model_check_health_sees_a_hung_predict_and_recovers():
    from inference.model_deployment import GRDNetModel, ModelRequest

    c = ServeAppConfig(standin={"batch_latency_ms": 0}, tuning={"max_batch_size": 4, "batch_wait_timeout_s": 0},
                       model={"warmup_batches": 0, "max_batch_stall_s": 1.0, "max_queue_age_s": 1.5},
                       deadline={"default_bound_ms": 100})
    m = GRDNetModel.func_or_class(c)
    m._last_progress -= 1000  # long idle: the stall clock starts only when work arrives
    hang = _Hang(m._predictor)
    m._predictor = hang
    img = np.zeros((8, 8), np.uint8)

    async def go():
        first = asyncio.ensure_future(m.infer([ModelRequest(f"a{i}", img) for i in range(4)]))
        await asyncio.sleep(0.05)
        m.check_health()  # the batch just started
        second = asyncio.ensure_future(m.infer([ModelRequest("b", img)]))
        await asyncio.sleep(1.1)
        with pytest.raises(Unhealthy, match="no batch finished for 1\\.\\ds while 5 request\\(s\\) wait "
                                            "\\(4 in the running batch"):
            m.check_health()
        m._last_progress = time.monotonic()  # as if a batch had just finished: the queue age is next
        await asyncio.sleep(0.6)
        with pytest.raises(Unhealthy, match="oldest queued request waited .*1 queued"):
            m.check_health()
        hang.release.set()
        return await first, await second

    first, second = asyncio.run(go())
    assert len(first) == 4 and len(second) == 1
    m.check_health()  # both batches finished: green again
