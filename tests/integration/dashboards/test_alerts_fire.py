"""The alerts that see the line go quiet or scrap everything, provoked on the real stack: real
Kafka, Redis, Ray Serve (stand-in model) and the local Prometheus evaluating the rules.

Each test loads the production expressions (:func:`dashboards.alerts.alert_rules`) with short rate
windows and ``for:`` into the running Prometheus (an extra rule file, ``reload_prometheus``),
causes the fault, and measures the time from the fault to the alert firing (printed, and bounded
with a wide margin). The production windows add their own length on top: see /work/notes or the
README table. Faults:

(a) a line whose frames topic is misnamed (nobody writes to it) → ``GrdlineNoFramesConsumed`` for
    each expected camera;
(b) the model answers NaN for every frame (live reconfigure of the stand-in) →
    ``GrdlineFailsafeRatioHigh`` (reason ``model_failure``), while the cameras still deliver so
    ``GrdlineNoFramesConsumed`` stays silent for them;
(c) the Serve application deleted → ``GrdlineServeAppNotRunning``;
(d) one of two delivering cameras stops → ``GrdlineNoFramesConsumed`` for it alone;
(e) the frames topic deleted under a publishing camera → ``GrdlineCameraPublishFailing`` for it
    alone (its /metrics served on the ingest port that the local Prometheus scrapes).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import yaml

from dashboards.alerts import RULE_GROUP, alert_rules
from inference import metrics as im

from ..conftest import delete_topics
from ..inference.conftest import (  # noqa: F401 - app_config and serve_instance are fixtures
    app_config,
    serve_instance,
    simulated_frames,
    wait_assigned,
    wait_for,
)

#: Short windows for the tests (production: 5m / 2m and for: 1-2m). Ray exports counters about
#: every 10 s and the local Prometheus scrapes and evaluates every 2 s.
RATE_WINDOW, QUIET_WINDOW, HOLD = "30s", "30s", "4s"
#: Bound on fault → firing with these windows (measured well under it; 2 shared cores).
ALERT_BOUND_S = 150.0


def _get(prometheus_url: str, path: str, **params: str) -> dict:
    query = ("?" + urllib.parse.urlencode(params)) if params else ""
    with urllib.request.urlopen(f"{prometheus_url}{path}{query}", timeout=10) as r:
        return json.load(r)["data"]


def alert_states(prometheus_url: str, alert: str, **labels: str) -> list[str]:
    """States (pending/firing) of the active ``alert`` instances carrying ``labels``."""
    return [a["state"] for a in _get(prometheus_url, "/api/v1/alerts")["alerts"]
            if a["labels"].get("alertname") == alert
            and all(a["labels"].get(k) == v for k, v in labels.items())]


@pytest.fixture
def short_rules(stack, prometheus_url) -> Iterator:
    """``load(app_name)``: the production rules with short windows, as a rule group of its own in
    the running Prometheus; removed (and Prometheus reloaded) afterwards."""
    paths = []

    def load(app_name: str) -> None:
        doc = alert_rules(rate_window=RATE_WINDOW, quiet_window=QUIET_WINDOW, hold=HOLD, app_name=app_name)
        group = f"{RULE_GROUP}-test-{uuid.uuid4().hex[:8]}"
        doc["groups"][0]["name"] = group
        stack.PROMETHEUS_EXTRA_RULES.mkdir(parents=True, exist_ok=True)
        path = stack.PROMETHEUS_EXTRA_RULES / f"{group}.yml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        paths.append(path)
        stack.reload_prometheus()
        wait_for(lambda: any(g["name"] == group for g in _get(prometheus_url, "/api/v1/rules")["groups"]),
                 30, f"Prometheus loading rule group {group}")

    yield load
    for p in paths:
        p.unlink(missing_ok=True)
    stack.reload_prometheus()


def _wait_alert(prometheus_url: str, alert: str, t0: float, **labels: str) -> tuple[float, float]:
    """Seconds from ``t0`` to the alert pending and to it firing."""
    pending = None

    def firing() -> bool:
        nonlocal pending
        states = alert_states(prometheus_url, alert, **labels)
        if states and pending is None:
            pending = time.monotonic() - t0
        return "firing" in states

    wait_for(firing, ALERT_BOUND_S, f"{alert} firing for {labels}", interval_s=0.5)
    return pending, time.monotonic() - t0


class _Camera(threading.Thread):
    """Publishes ``frames`` in item order at ``fps`` (each stamped when sent)."""

    def __init__(self, kafka_settings, topic: str, frames: list, fps: float = 4.0) -> None:
        super().__init__(daemon=True)
        from kafka import KafkaProducer

        self._producer = KafkaProducer(**kafka_settings.client_kwargs(), acks="all", linger_ms=5)
        self._frames = sorted(frames, key=lambda f: (f.item_id, f.camera_id))
        self._topic, self._pause, self._halt = topic, 1.0 / fps, threading.Event()
        self.sent = 0
        self._closed = False

    def run(self) -> None:
        from ingest.contract import FrameMeta, encode_frame

        for f in self._frames:
            if self._halt.is_set():
                return
            meta = FrameMeta.from_captured(f, "png").model_copy(update={"captured_at": datetime.now(UTC)})
            value, headers = encode_frame(f.image, meta)
            self._producer.send(self._topic, key=f.camera_id.encode(), value=value, headers=headers)
            self.sent += 1
            time.sleep(self._pause)

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(10)
        if not self._closed:
            self._closed = True
            self._producer.close()


def _expected(line: str) -> list[dict[str, str]]:
    return [{"line": line, "camera": c} for c in ("cam0", "cam1")]


def test_a_misnamed_frames_topic_fires_no_frames_consumed(
    app_config, topic_factory, kafka_settings, prometheus_url, short_rules, serve_instance  # noqa: F811
):
    from ray import serve

    from inference.app import run

    uid = uuid.uuid4().hex[:8]
    line, misnamed = f"Lq{uid}", f"frames-misnamed-{uid}"  # no topic of that name is created
    cfg = app_config(topics={"frames": misnamed, "rejects": topic_factory(1, "rejects"),
                             "dlq": topic_factory(1, "dlq")},
                     standin={"batch_latency_ms": 5}, expected_cameras=_expected(line))
    short_rules(cfg.app_name)
    alert = "GrdlineNoFramesConsumed"
    assert not alert_states(prometheus_url, alert, line=line)
    try:
        run(cfg)  # the fault is there from the start: the ingress consumes a topic nobody writes
        t0 = time.monotonic()
        times = {cam: _wait_alert(prometheus_url, alert, t0, line=line, camera=cam, topic=misnamed)
                 for cam in ("cam0", "cam1")}
    finally:
        serve.delete(cfg.app_name, _blocking=True)
        delete_topics(kafka_settings, [misnamed])  # in case a metadata request auto-created it
    pending, firing = max(times.values(), key=lambda t: t[1])
    print(f"\n[alert timing] {alert}: app RUNNING on a misnamed topic -> pending {pending:.1f}s, "
          f"firing {firing:.1f}s (rules: quiet window {QUIET_WINDOW}, for {HOLD})")
    assert firing < ALERT_BOUND_S


def test_a_camera_that_stops_fires_no_frames_consumed_for_it_alone(
    app_config, kafka_settings, prometheus_url, short_rules, serve_instance  # noqa: F811
):
    from ray import serve

    from inference.app import run

    uid = uuid.uuid4().hex[:8]
    line = f"Ls{uid}"
    cfg = app_config(partitions=2, standin={"batch_latency_ms": 5}, tuning={"max_batch_size": 4},
                     expected_cameras=_expected(line))
    short_rules(cfg.app_name)
    alert = "GrdlineNoFramesConsumed"
    consumed = f'{im.prometheus_name(im.FRAMES_CONSUMED)}{{line="{line}",camera="cam1"}}'
    frames = simulated_frames(cameras=2, per_camera=300, seed=5, defect_rate=0.0, line=line)
    cam0, cam1 = (_Camera(kafka_settings, cfg.topics.frames, [f for f in frames if f.camera_id == c], fps=2.0)
                  for c in ("cam0", "cam1"))
    try:
        ingress = run(cfg)
        wait_assigned(ingress)
        cam0.start()
        cam1.start()
        wait_for(lambda: _get(prometheus_url, "/api/v1/query", query=consumed)["result"], 90,
                 "cam1's consumed frames in Prometheus", interval_s=1.0)
        time.sleep(float(QUIET_WINDOW.rstrip("s")))  # a full window of both cameras delivering
        assert not alert_states(prometheus_url, alert, line=line)
        cam1.stop()  # the fault: cam1 goes quiet, cam0 goes on
        t0 = time.monotonic()
        pending, firing = _wait_alert(prometheus_url, alert, t0, line=line, camera="cam1")
        assert not alert_states(prometheus_url, alert, line=line, camera="cam0"), "cam0 still delivers"
    finally:
        cam0.stop()
        cam1.stop()
        serve.delete(cfg.app_name, _blocking=True)
    print(f"\n[alert timing] {alert}: a delivering camera stops -> pending {pending:.1f}s, firing {firing:.1f}s "
          f"(rules: quiet window {QUIET_WINDOW}, for {HOLD})")
    assert firing < ALERT_BOUND_S


def test_a_model_answering_nan_fires_failsafe_ratio_high(
    app_config, kafka_settings, prometheus_url, short_rules, serve_instance  # noqa: F811
):
    from ray import serve

    from inference.app import run

    uid = uuid.uuid4().hex[:8]
    line = f"Ln{uid}"
    cfg = app_config(partitions=2, standin={"batch_latency_ms": 5, "threshold": 2.0},
                     tuning={"max_batch_size": 4}, expected_cameras=_expected(line))
    short_rules(cfg.app_name)
    ratio, quiet = "GrdlineFailsafeRatioHigh", "GrdlineNoFramesConsumed"
    consumed = f'sum({im.prometheus_name(im.FRAMES_CONSUMED)}{{line="{line}"}})'
    camera = _Camera(kafka_settings, cfg.topics.frames,
                     simulated_frames(cameras=2, per_camera=150, seed=5, defect_rate=0.0, line=line))
    try:
        ingress = run(cfg)
        wait_assigned(ingress)
        camera.start()
        # healthy first: frames counted in Prometheus, and neither alert active for the line
        wait_for(lambda: _get(prometheus_url, "/api/v1/query", query=consumed)["result"], 90,
                 "consumed frames of the line in Prometheus", interval_s=1.0)
        time.sleep(float(QUIET_WINDOW.rstrip("s")))  # a full quiet window of delivering cameras
        assert not alert_states(prometheus_url, ratio, line=line)
        assert not alert_states(prometheus_url, quiet, line=line)
        # the fault: every score NaN from now on (live, no restart)
        run(cfg.model_copy(update={"tuning": cfg.tuning.model_copy(update={"fault": "nan"})}))
        t0 = time.monotonic()
        pending, firing = _wait_alert(prometheus_url, ratio, t0, line=line, reason="model_failure")
        assert not alert_states(prometheus_url, quiet, line=line), "the cameras still deliver"
        stats = ingress.stats.remote().result()
    finally:
        camera.stop()
        serve.delete(cfg.app_name, _blocking=True)
    assert stats.get("failsafe_model_failure", 0) > 0
    print(f"\n[alert timing] {ratio}: model answers NaN -> pending {pending:.1f}s, firing {firing:.1f}s "
          f"(rules: rate window {RATE_WINDOW}, for {HOLD}; {camera.sent} frames sent)")
    assert firing < ALERT_BOUND_S


def test_a_deleted_serve_app_fires_serve_app_not_running(
    app_config, prometheus_url, short_rules, serve_instance  # noqa: F811
):
    from ray import serve

    from dashboards import promql as pq
    from inference.app import run

    cfg = app_config(partitions=1, standin={"batch_latency_ms": 5})
    short_rules(cfg.app_name)
    alert = "GrdlineServeAppNotRunning"
    status = f'{pq.SERVE_APP_STATUS}{{application="{cfg.app_name}"}}'
    try:
        run(cfg)
        wait_for(lambda: any(float(r["value"][1]) == pq.SERVE_APP_RUNNING
                             for r in _get(prometheus_url, "/api/v1/query", query=status)["result"]),
                 90, "the app's RUNNING status in Prometheus", interval_s=1.0)
        wait_for(lambda: not alert_states(prometheus_url, alert, application=cfg.app_name), 30,
                 f"{alert} inactive while the app runs", interval_s=1.0)
        t0 = time.monotonic()
        serve.delete(cfg.app_name, _blocking=True)  # the fault
        pending, firing = _wait_alert(prometheus_url, alert, t0, application=cfg.app_name)
    finally:
        serve.delete(cfg.app_name, _blocking=True)
    print(f"\n[alert timing] {alert}: app deleted -> pending {pending:.1f}s, firing {firing:.1f}s "
          f"(rules: for {HOLD})")
    assert firing < ALERT_BOUND_S


def test_a_camera_that_cannot_publish_fires_camera_publish_failing(
    topic_factory, kafka_settings, prometheus_url, short_rules  # noqa: F811
):
    """The frames topic is deleted under a running camera (cam0): its sends fail after the
    delivery timeout (5 s here; production 120 s) and are counted on the camera's /metrics, which
    the local Prometheus scrapes; cam1, publishing to a live topic, must not fire."""
    from ingest import metrics as ingest_metrics
    from ingest.contract import FrameMeta
    from ingest.producer import FramePublisher
    from ingest.settings import INGEST_METRICS_PORT

    try:
        ingest_metrics.serve(INGEST_METRICS_PORT)
    except OSError:  # this process serves it already (another test); checked below in any case
        pass
    uid = uuid.uuid4().hex[:8]
    line = f"Lp{uid}"
    doomed, live = topic_factory(1, "frames"), topic_factory(1, "frames")
    short_rules("unused")
    alert = "GrdlineCameraPublishFailing"
    fast_fail = {"max_block_ms": 2000, "delivery_timeout_ms": 5000, "request_timeout_ms": 3000}
    frames = {f"cam{c}": simulated_frames(cameras=1, per_camera=60, seed=9, defect_rate=0.0, line=line)
              for c in range(2)}
    failing = FramePublisher(kafka_settings, doomed, producer_kwargs=fast_fail).start()
    healthy = FramePublisher(kafka_settings, live, producer_kwargs=fast_fail).start()
    t0 = None
    try:
        for i in range(60):
            for cam, publisher in (("cam0", failing), ("cam1", healthy)):
                f = frames[cam][i]
                meta = FrameMeta.from_captured(f, "png").model_copy(
                    update={"camera_id": cam, "frame_id": f"{f.frame_id}-{cam}", "captured_at": datetime.now(UTC)})
                publisher.publish(f.image, meta)
            if i == 3:
                delete_topics(kafka_settings, [doomed])  # the fault
                t0 = time.monotonic()
            if t0 is not None and alert_states(prometheus_url, alert, line=line, camera="cam0"):
                break
            time.sleep(1.0)
        with urllib.request.urlopen(f"http://127.0.0.1:{INGEST_METRICS_PORT}/metrics", timeout=10) as r:
            exposed = r.read().decode()
        assert f'line="{line}"' in exposed, f"port {INGEST_METRICS_PORT} is served by another process"
        pending, firing = _wait_alert(prometheus_url, alert, t0, line=line, camera="cam0")
        assert not alert_states(prometheus_url, alert, line=line, camera="cam1")
    finally:
        healthy.close(timeout=15)
        failing.close(timeout=15)
    assert failing.failed > 0 and healthy.failed == 0
    print(f"\n[alert timing] {alert}: frames topic deleted under the camera -> pending {pending:.1f}s, "
          f"firing {firing:.1f}s (delivery timeout 5 s; rules: rate window {RATE_WINDOW}, for {HOLD})")
    assert firing < ALERT_BOUND_S
