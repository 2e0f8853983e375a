"""Helpers for the inference integration tests: simulated frames on Kafka, the app on Serve, reads
of results (Redis), rejects and dead letters (Kafka). Real services only; unique names per test."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.config import ServeAppConfig
from inference.contracts import RejectCommand, Result, result_key

from ..conftest import read_topic_records

FRAME_SIZE = 64


def wait_for(cond: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.25,
             state: Callable[[], Any] | None = None) -> Any:
    """Poll ``cond`` until it returns something truthy; fail naming ``what`` after ``timeout_s``,
    with what ``state()`` reports then (e.g. the ingress' counters)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval_s)
    seen = f"; state: {state()!r}" if state is not None else ""
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r}){seen}")


def simulated_frames(cameras: int, per_camera: int, seed: int, defect_rate: float = 0.4, line: str = "L1",
                     run_id: str | None = None) -> list:
    """Frames of ``cameras`` cameras of one line (they see the same items), 64 px grayscale."""
    from ingest.simulator import SimulatedCamera

    run_id = run_id or uuid.uuid4().hex[:6]
    frames = []
    for c in range(cameras):
        cam = SimulatedCamera(line_id=line, camera_id=f"cam{c}", fps=None, defect_rate=defect_rate, seed=seed,
                              size=FRAME_SIZE, n_frames=per_camera, run_id=run_id)
        frames.extend(cam)
        cam.close()
    return frames


def encoded(frame, encoding: str = "png", deadline_ms: int | None = None) -> tuple[bytes, bytes, list]:
    from ingest.contract import FrameMeta, encode_frame

    meta = FrameMeta.from_captured(frame, encoding, deadline_ms=deadline_ms)
    value, headers = encode_frame(frame.image, meta)
    return frame.camera_id.encode(), value, headers


@pytest.fixture
def produce(kafka_settings) -> Iterator[Callable[..., None]]:
    """``produce(topic, [(key, value, headers), ...])`` — sent and acknowledged."""
    from kafka import KafkaProducer

    from ingest.topics import MAX_MESSAGE_BYTES

    producer = KafkaProducer(**kafka_settings.client_kwargs(), acks="all", linger_ms=5,
                             max_request_size=MAX_MESSAGE_BYTES)

    def send(topic: str, records: list[tuple[bytes | None, bytes, list]]) -> None:
        futures = [producer.send(topic, key=k, value=v, headers=h) for k, v, h in records]
        for f in futures:
            f.get(timeout=30)

    yield send
    producer.close()


def read_all(kafka_settings, topic: str, expected: int, timeout_s: float = 60.0, settle_s: float = 2.0) -> list:
    """Every record of ``topic`` from the start, waiting for ``expected`` and ``settle_s`` more (so a
    duplicate that arrives late is seen too)."""
    return read_topic_records(kafka_settings, topic, expected, timeout_s, settle_s)


def read_rejects(kafka_settings, topic: str, expected: int, **kw) -> list[RejectCommand]:
    return [RejectCommand.from_kafka(r.value) for r in read_all(kafka_settings, topic, expected, **kw)]


def results(redis_client, prefix: str, frame_ids) -> dict[str, Result]:
    """The stored results of ``frame_ids`` that exist."""
    pipe = redis_client.pipeline(transaction=False)
    ids = list(frame_ids)
    for fid in ids:
        pipe.hgetall(result_key(prefix, fid))
    return {fid: Result.from_redis(h) for fid, h in zip(ids, pipe.execute(), strict=True) if h}


def count_results(redis_client, prefix: str) -> int:
    return sum(1 for _ in redis_client.scan_iter(match=f"{prefix}:result:*", count=1000))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from model.artefact import save_untrained

    return save_untrained(tmp_path_factory.mktemp("model") / "tiny", profile="line", image_size=FRAME_SIZE,
                          channels=1, seed=0)


@pytest.fixture(scope="session")
def serve_instance(ray_session) -> Iterator[None]:
    """Serve without an HTTP proxy: the tests talk to deployments through handles."""
    from ray import serve

    serve.start(proxy_location="Disabled")
    yield


@pytest.fixture
def app_config(request, topic_factory, redis_prefix) -> Callable[..., ServeAppConfig]:
    """A ServeAppConfig on fresh topics (frames with ``partitions``), this test's Redis prefix, and a
    unique app name and consumer group."""

    def make(partitions: int = 3, **over: Any) -> ServeAppConfig:
        uid = uuid.uuid4().hex[:8]
        data: dict[str, Any] = {
            "app_name": f"t-{uid}",
            "route_prefix": f"/t-{uid}",
            "topics": {"frames": topic_factory(partitions, "frames"), "rejects": topic_factory(1, "rejects"),
                       "dlq": topic_factory(1, "dlq")},
            "redis": {"key_prefix": redis_prefix},
            "model": {"num_cpus": 0.5, "torch_threads": 1, "warmup_batches": 1},
        }
        ingress = {"group_id": f"g-{uid}", "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000,
                   "max_poll_interval_ms": 20_000, "num_cpus": 0.25, "revoke_drain_timeout_s": 5.0}
        ingress.update(over.pop("ingress", {}))
        data["ingress"] = ingress
        model = dict(data["model"])
        model.update(over.pop("model", {}))
        data["model"] = model
        data.update(over)
        return ServeAppConfig(**data)

    return make


@contextmanager
def running(cfg: ServeAppConfig) -> Iterator[Any]:
    """The app deployed on the session's Serve; deleted (gracefully) on exit. Yields the ingress handle."""
    from ray import serve

    from inference.app import run

    handle = run(cfg)
    try:
        yield handle
    finally:
        serve.delete(cfg.app_name, _blocking=True)


def health(handle: Any) -> str | None:
    """None when the deployment's ``check_health`` passes, else its error text (a red check)."""
    try:
        handle.check_health.remote().result(timeout_s=30)
        return None
    except Exception as exc:  # noqa: BLE001 - the red health check's message is what tests assert on
        return str(exc)


def serve_status(app: str, deployment: str | None = None) -> str:
    """The Serve status of ``app`` (or of one of its deployments): ``RUNNING``, ``UNHEALTHY``..."""
    from ray import serve

    a = serve.status().applications.get(app)
    if a is None:
        return "absent"
    s = a.status if deployment is None else a.deployments[deployment].status
    return str(getattr(s, "value", s))


def model_handle(cfg: ServeAppConfig) -> Any:
    from ray import serve

    return serve.get_deployment_handle("GRDNetModel", app_name=cfg.app_name)


def offline_scores(model_dir: Path, frames, roi_recipe: str = "vials") -> np.ndarray:
    """The bare Predictor's scores on the frames (decoded as the ingress would: PNG is lossless)."""
    from ingest.simulator import roi_mask_for_recipe
    from model.predictor import Predictor

    p = Predictor.load(model_dir, device="cpu")
    roi = roi_mask_for_recipe(roi_recipe, FRAME_SIZE)
    out = []
    for s in range(0, len(frames), 16):
        chunk = frames[s:s + 16]
        out.append(p.predict([f.image for f in chunk], [roi] * len(chunk)).scores)
    return np.concatenate(out)


def split_threshold(scores: np.ndarray) -> float:
    """A threshold in the widest gap among the middle scores: some frames either side, far from all."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(s)
    lo, hi = max(1, n // 5), min(n - 1, n - n // 5)
    gaps = s[lo:hi] - s[lo - 1:hi - 1]
    i = int(np.argmax(gaps)) + lo
    return float((s[i - 1] + s[i]) / 2)


def standin_scores(frames, roi_recipe: str = "vials") -> np.ndarray:
    """What the stand-in model scores (mean ROI brightness / 255), computed offline."""
    from inference.config import StandInModel
    from inference.standin import StandInPredictor
    from ingest.simulator import roi_mask_for_recipe

    p = StandInPredictor(StandInModel(batch_latency_ms=0))
    roi = roi_mask_for_recipe(roi_recipe, FRAME_SIZE)
    return p.predict([f.image for f in frames], [roi] * len(frames)).scores


def wait_assigned(ingress, replicas: int = 1, timeout_s: float = 60) -> None:
    """Until the ingress replicas together own the frames topic's partitions (group joined)."""

    def owned() -> bool:
        seen: dict[int, list] = {}
        for _ in range(4 * replicas):
            s = ingress.stats.remote().result()
            seen[s["pid"]] = s["partitions"]
        return len(seen) >= replicas and all(seen.values())

    wait_for(owned, timeout_s, "partitions assigned to every ingress replica")
