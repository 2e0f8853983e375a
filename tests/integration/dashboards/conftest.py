"""One short real run of the line per session, shared by the dashboard and report tests here.

Two simulated cameras publish through the real ingest publisher (its metrics served on the
ingest metrics port that the local Prometheus scrapes) to fresh Kafka topics for about fifteen
seconds; the Serve app (stand-in model: no compute, deterministic scores) decides into Redis
under this module's own prefix; a garbage record is dead-lettered and two frames arrive past their
deadline. The fixture returns once Prometheus' counters agree with what Redis holds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from inference.config import ServeAppConfig
from inference.contracts import result_key

from ..conftest import delete_topics
from ..inference.conftest import (  # noqa: F401 - serve_instance is a fixture used here
    running,
    serve_instance,
    split_threshold,
    standin_scores,
    wait_assigned,
    wait_for,
)

FRAMES_PER_CAMERA = 30
STREAM_SECONDS = 15.0


@dataclass(frozen=True)
class ShortRun:
    line: str
    prefix: str
    since: datetime
    until: datetime
    frame_ids: list[str]
    truth_path: Path
    cfg: ServeAppConfig
    records_sent: int
    #: the record that is no frame: dead-lettered, and rejected (its line and item can be read)
    unjudged_id: str


def _frames(line: str, run_id: str) -> list:
    from ingest.simulator import SimulatedCamera

    frames = []
    for c in range(2):
        cam = SimulatedCamera(line_id=line, camera_id=f"cam{c}", fps=None, defect_rate=0.3,
                              cosmetic_rate=0.15, seed=11, size=64, n_frames=FRAMES_PER_CAMERA,
                              run_id=run_id)
        try:
            frames.extend(cam)
        finally:
            cam.close()
    return frames


def _prometheus_sum(url: str, expr: str) -> float:
    import json
    import urllib.parse
    import urllib.request

    with urllib.request.urlopen(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}),
                                timeout=10) as r:
        return sum(float(x["value"][1]) for x in json.load(r)["data"]["result"])


@pytest.fixture(scope="session")
def short_run(serve_instance, kafka_settings, redis_settings, prometheus_url,  # noqa: F811
              tmp_path_factory) -> Iterator[ShortRun]:
    import redis
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    from inference import metrics as im
    from ingest import metrics as ingest_metrics
    from ingest.contract import FrameMeta, meta_to_headers
    from ingest.producer import FramePublisher
    from ingest.settings import INGEST_METRICS_PORT
    from ingest.simulator import SimulatorError
    from ingest.simulator.camera import TruthStore
    from ingest.topics import MAX_MESSAGE_BYTES

    uid = uuid.uuid4().hex[:8]
    prefix = f"test-report-{uid}"
    topics = {k: f"{k}-report-{uid}" for k in ("frames", "rejects", "dlq")}
    admin = KafkaAdminClient(**kafka_settings.client_kwargs())
    admin.create_topics([NewTopic(t, 2 if k == "frames" else 1, 1,
                                  topic_configs={"max.message.bytes": str(MAX_MESSAGE_BYTES)})
                         for k, t in topics.items()])
    admin.close()
    try:
        ingest_metrics.serve(INGEST_METRICS_PORT)
    except OSError:  # another process serves the port: camera panels then show its data only
        pass

    # A line of its own, so that its Prometheus series begin inside the run (Ray keeps exporting
    # the counters of a deleted app's replicas). The scene depends on the line's name, and at
    # 64 px the simulator now and then cannot place a bubble defect: then another name.
    for attempt in range(5):
        line = f"Lr{uid}{attempt}"
        try:
            frames = _frames(line, uid)
            break
        except SimulatorError:
            continue
    else:
        pytest.fail("the simulator could not render the short run's frames for 5 line names")
    frames.sort(key=lambda f: (f.item_id, f.camera_id))
    truth = TruthStore()
    for f in frames:
        truth.record(f)
    truth_path = tmp_path_factory.mktemp("truth") / "truth.jsonl"
    truth.dump_jsonl(truth_path)

    cfg = ServeAppConfig(
        app_name=f"report-{uid}", route_prefix=f"/report-{uid}",
        topics=topics, redis={"key_prefix": prefix},
        standin={"batch_latency_ms": 15, "threshold": split_threshold(standin_scores(frames)),
                 "pixel_threshold": 0.8},
        tuning={"max_batch_size": 8},
        model={"num_cpus": 0.5, "torch_threads": 1, "warmup_batches": 1},
        ingress={"group_id": f"g-report-{uid}", "session_timeout_ms": 6000,
                 "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 20_000, "num_cpus": 0.25,
                 "revoke_drain_timeout_s": 5.0},
    )
    client = redis.Redis(**redis_settings.client_kwargs())
    publisher = FramePublisher(kafka_settings, topics["frames"]).start()
    try:
        with running(cfg) as ingress:
            wait_assigned(ingress)  # else the first frames wait for the group join: seconds late
            since = datetime.now(UTC) - timedelta(seconds=2)
            late_ids = {frames[3].frame_id, frames[10].frame_id}
            pause = STREAM_SECONDS / len(frames)
            for i, f in enumerate(frames):
                meta = FrameMeta.from_captured(f, "png", deadline_ms=1 if f.frame_id in late_ids else None)
                # rendered up front: stamp the capture when it is sent, as a camera would
                meta = meta.model_copy(update={"captured_at": datetime.now(UTC)})
                publisher.publish(f.image, meta)
                if i == len(frames) // 2:  # a record that is no frame: dead-lettered and rejected
                    bad = FrameMeta.from_captured(f, "png").model_copy(
                        update={"frame_id": f"{f.frame_id}-bad"})
                    unjudged_id = bad.frame_id
                    publisher.send(b"not an image", meta_to_headers(bad), key=f.camera_id.encode(),
                                   frame_id=bad.frame_id, line_id=line, camera_id=f.camera_id)
                time.sleep(pause)
            publisher.flush(timeout=30)
            ids = [f.frame_id for f in frames]

            def decided() -> bool:  # the unjudged record included: its REJECT is a result too
                pipe = client.pipeline(transaction=False)
                for fid in [*ids, unjudged_id]:
                    pipe.exists(result_key(prefix, fid))
                return all(pipe.execute())

            wait_for(decided, 90, "every frame of the short run decided in Redis")
            sel = f'{{line="{line}"}}'
            decided_total = (f"sum({im.prometheus_name(im.FRAMES_INSPECTED)}{sel}) + "
                             f"sum({im.prometheus_name(im.FRAMES_LATE)}{sel})")
            consumed = f"sum({im.prometheus_name(im.FRAMES_CONSUMED)}{sel})"
            wait_for(lambda: _prometheus_sum(prometheus_url, decided_total) >= len(ids)
                     and _prometheus_sum(prometheus_url, consumed) >= len(ids) + 1,
                     120, "Prometheus counting every frame of the short run", interval_s=2.0)
            time.sleep(4)  # one more scrape of every gauge and histogram after the last frame
            until = datetime.now(UTC)
            yield ShortRun(line, prefix, since, until, ids, truth_path, cfg, len(ids) + 1, unjudged_id)
    finally:
        publisher.close()
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        delete_topics(kafka_settings, list(topics.values()))
