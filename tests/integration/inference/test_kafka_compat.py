"""The ingress' consumer group against the real broker: a rebalance that outlives ``poll`` is not
forgotten (:func:`inference.kafka_compat.keep_rejoin_pending`), and a fresh ingress joins once."""

from __future__ import annotations

import time
import uuid

from inference.kafka_compat import keep_rejoin_pending

from .conftest import encoded, simulated_frames, wait_for


def test_a_metadata_rebalance_that_outlives_poll_still_assigns_the_partitions(
    kafka_settings, topic_factory, produce, monkeypatch
):
    """kafka-python joins before it knows the topic (empty assignment), then rebalances when the
    metadata arrives. The leader's assignment for that second join is slowed past ``poll``'s timer
    here, as a loaded machine does now and then: without the patch the member stays in the group
    with no partitions for good; with it the join is sent again and the partitions arrive."""
    from kafka import ConsumerRebalanceListener, KafkaConsumer
    from kafka.coordinator.consumer import ConsumerCoordinator

    assert keep_rejoin_pending()
    assert keep_rejoin_pending()  # idempotent
    topic = topic_factory(3, "frames")
    produce(topic, [(b"k%d" % i, b"v%d" % i, []) for i in range(12)])
    slowed: list[float] = []
    assign = ConsumerCoordinator._perform_assignment

    def slow_assignment(self, *args, **kwargs):
        out = assign(self, *args, **kwargs)
        if not slowed and any(self._assignment_snapshot.get(topic, ())):
            slowed.append(time.monotonic())
            time.sleep(0.5)  # on kafka-python's IO thread: SyncGroup goes out after poll gave up
        return out

    monkeypatch.setattr(ConsumerCoordinator, "_perform_assignment", slow_assignment)

    class Events(ConsumerRebalanceListener):
        """Records the assignments the consumer is told of."""

        def __init__(self):
            self.assigned: list[list[int]] = []

        def on_partitions_revoked(self, revoked):
            pass

        def on_partitions_assigned(self, assigned):
            self.assigned.append(sorted(tp.partition for tp in assigned))

    events = Events()
    consumer = KafkaConsumer(**kafka_settings.client_kwargs(), group_id=f"g-{uuid.uuid4().hex[:8]}",
                             enable_auto_commit=False, auto_offset_reset="earliest", session_timeout_ms=6000,
                             heartbeat_interval_ms=1000, max_poll_interval_ms=20_000)
    got: list = []
    try:
        consumer.subscribe([topic], listener=events)

        def polled() -> bool:
            for records in consumer.poll(timeout_ms=100, max_records=16).values():
                got.extend(records)
            return len(got) >= 12

        wait_for(polled, 30, "the 12 records (partitions assigned after the slowed rebalance)", interval_s=0.0,
                 state=lambda: {"assigned": events.assigned, "slowed": bool(slowed)})
    finally:
        consumer.close(autocommit=False)
    # the path under test was taken: first an empty assignment, then the slowed one with partitions
    assert events.assigned[0] == [], events.assigned
    assert slowed, "no assignment with partitions was slowed"
    assert events.assigned[-1] == [0, 1, 2]
    assert sorted(r.value for r in got) == sorted(b"v%d" % i for i in range(12))


def test_a_fresh_ingress_consumer_joins_once_and_reads_every_frame(app_config, produce):
    """The frames topic's metadata is fetched before joining: one rebalance, not two."""
    from inference.consumer import FrameConsumer
    from inference.offsets import OffsetTracker

    cfg = app_config(partitions=3, standin={})
    frames = simulated_frames(cameras=3, per_camera=4, seed=5)
    produce(cfg.topics.frames, [encoded(f) for f in frames])
    delivered: list = []
    tracker = OffsetTracker()

    def deliver(polled: list) -> None:  # decided at once: the commits and the stop go through
        delivered.extend(polled)
        for f in polled:
            tracker.complete(f.ticket)

    consumer = FrameConsumer(cfg, tracker, deliver)
    consumer.start()
    try:
        wait_for(lambda: len(delivered) >= len(frames), 60, "every frame polled",
                 state=lambda: {"polled": len(delivered), "rebalances": consumer.rebalances,
                                "error": consumer.error})
        owned = sorted(tp.partition for tp in tracker.partitions())
        revokes = consumer.rebalances  # before the stop, which revokes once more
    finally:
        consumer.stop(10)
    assert consumer.error is None and not consumer.is_alive()
    assert revokes == 1  # the join's own prepare only: no second rebalance for the metadata
    assert owned == [0, 1, 2]
    assert sorted(f.meta.frame_id for f in delivered) == sorted(f.frame_id for f in frames)
    assert all(f.error is None for f in delivered)
