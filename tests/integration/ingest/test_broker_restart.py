"""The broker is restarted while cameras are publishing: after recovery every frame is on the topic
exactly once (idempotent producer, acks=all), none failed, each camera's order intact."""

from __future__ import annotations

import threading
import time
from collections import Counter

from ingest.camera import run_cameras
from ingest.contract import decode_meta
from ingest.producer import FramePublisher

PER_CAMERA = 1500
FPS = 150.0  # 10 s of sending per camera; the restart lands in the middle


def test_broker_restart_loses_and_duplicates_nothing(stack, kafka_settings, topic_factory, read_topic,
                                                    list_source, cameras):
    topic = topic_factory(partitions=2)
    cams = cameras(2, 2)
    sources = [list_source(cam, PER_CAMERA, size=32, seed=i) for i, cam in enumerate(cams)]
    publisher = FramePublisher(kafka_settings, topic).start()
    result: dict[str, object] = {}

    def cameras_thread() -> None:
        try:
            result["stats"] = run_cameras(sources, publisher, encoding="png", fps=FPS)
        except BaseException as exc:  # re-raised in the test body below
            result["error"] = exc

    sender = threading.Thread(target=cameras_thread, daemon=True)
    sender.start()
    deadline = time.monotonic() + 30
    while publisher.acked < 300:  # publishing is under way
        assert time.monotonic() < deadline, "publishing did not start"
        time.sleep(0.05)
    acked_before, sent_before = publisher.acked, publisher.sent
    stack.restart_kafka()  # SIGTERM, wait for exit, start again, wait until it answers
    sent_during = publisher.sent - sent_before
    sender.join(timeout=180)
    assert not sender.is_alive(), "cameras did not finish after the restart"
    assert "error" not in result, result.get("error")
    publisher.close(timeout=180)
    assert acked_before < 2 * PER_CAMERA  # the restart really happened mid-stream
    assert sent_during > 100, "the cameras should have kept sending while the broker was down"
    assert publisher.failed == 0, list(publisher.failures)[:5]
    assert publisher.acked == 2 * PER_CAMERA

    records = read_topic(topic, 2 * PER_CAMERA, timeout_s=120, settle_s=3.0)
    ids = Counter(decode_meta(r.headers).frame_id for r in records)
    duplicates = {k: n for k, n in ids.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} frames duplicated, e.g. {list(duplicates)[:5]}"
    assert len(ids) == 2 * PER_CAMERA == len(records)
    for cam in cams:
        seq = [int(decode_meta(r.headers).frame_id.rsplit("-", 1)[1])
               for r in sorted(records, key=lambda r: (r.partition, r.offset)) if r.key == cam.encode()]
        assert seq == list(range(PER_CAMERA))
