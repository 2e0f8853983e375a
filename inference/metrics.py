"""Metric names of the inference service (the one home of them) and their Ray recorders.

Every replica records through ``ray.util.metrics``; Ray's per-node metrics agent exports them on
the node's metrics port (``RAY_METRICS_PORT`` locally), so one Prometheus scrape job covers every
ingress and model replica. Ray prefixes application metrics with ``ray_`` and Prometheus naming
appends ``_total`` to counters and ``_bucket``/``_sum``/``_count`` to histograms:
:func:`prometheus_name` gives the name as scraped, which is what ``dashboards/`` queries.

Labels are the line and camera (plus a small fixed ``stage`` set, or the partition for lag);
never a frame or item id. Their values come from the frames, so :class:`LabelCap` bounds them: the
first ``limits.metric_label_values`` (line, camera) pairs keep their names, later ones are recorded
as ``other``.
"""

from __future__ import annotations

import threading
import time
import typing
from dataclasses import dataclass
from typing import Literal

from inference.contracts import Failsafe
from ingest.dlq import STAGE_DECODE, STAGE_INFERENCE, STAGE_VALIDATE

#: Prefix Ray puts before application metric names in its Prometheus export.
RAY_EXPORT_PREFIX = "ray_"

# --- names (what the code records) ---------------------------------------------------------------
FRAMES_CONSUMED = "grdline_frames_consumed"
FRAMES_INSPECTED = "grdline_frames_inspected"
FRAMES_DEFECTIVE = "grdline_frames_defective"
ITEMS_REJECTED = "grdline_items_rejected"
FRAMES_LATE = "grdline_frames_late"
FRAMES_DEAD_LETTERED = "grdline_frames_dead_lettered"
FRAMES_FAILSAFE = "grdline_frames_failsafe"
FRAMES_REDELIVERED = "grdline_frames_redelivered"
E2E_LATENCY = "grdline_e2e_latency_seconds"
STAGE_LATENCY = "grdline_stage_latency_seconds"
MODEL_LATENCY = "grdline_model_latency_seconds"
BATCH_SIZE = "grdline_batch_size"
CONSUMER_LAG = "grdline_consumer_lag"
INFLIGHT_FRAMES = "grdline_inflight_frames"
#: Redis ``INFO memory`` as sampled by each ingress replica (:mod:`inference.redis_memory`): bytes in
#: use and the ``maxmemory`` bound (0 = none). ``GrdlineRedisMemoryHigh`` divides the two.
REDIS_USED_MEMORY = "grdline_redis_used_memory_bytes"
REDIS_MAXMEMORY = "grdline_redis_maxmemory_bytes"
#: 1 per (line, camera) the app's config expects on its frames topic (``expected_cameras``), held
#: by every ingress replica while it lives: what ``GrdlineNoFramesConsumed`` compares the consumed
#: frames with, so a camera (or a whole topic) that delivers nothing is seen even with no series.
CAMERA_EXPECTED = "grdline_camera_expected"

# --- the reject station (issue 17; a process of its own, prometheus_client like ingest) --------
#: Counter of items the station fired its reject actuator for, labels ``line`` and ``reason``
#: (:data:`STATION_REASONS`); exported as :data:`STATION_FIRED_SERIES`. The station must record
#: under this name: ``GrdlineStationNoVerdict`` reads it.
STATION_FIRED = "grdline_station_fired"
STATION_FIRED_SERIES = STATION_FIRED + "_total"
STATION_LABELS = ("line", "reason")
#: ``reason``: the verdict said reject / no verdict was committed in time (positive release).
STATION_REJECT, STATION_NO_VERDICT = "reject", "no_verdict"
STATION_REASONS = (STATION_REJECT, STATION_NO_VERDICT)

#: Values of the ``stage`` label of :data:`STAGE_LATENCY`, in a frame's order: the fields of
#: :class:`~inference.contracts.Timings` before the decision (those of ``MODEL_STAGES`` only for
#: frames the model answered), then ``sinks`` (decided → result, reject and dead letter confirmed)
#: and ``commit`` (confirmed → its offset committed).
DECISION_STAGES = ("produce", "kafka", "poll", "decode", "group")
MODEL_STAGES = ("wait", "model", "post", "reply")
STAGES = (*DECISION_STAGES, *MODEL_STAGES, "sinks", "commit")
#: Values of the ``stage`` label of :data:`FRAMES_DEAD_LETTERED`.
DLQ_STAGES = (STAGE_DECODE, STAGE_VALIDATE, STAGE_INFERENCE)
#: Values of the ``reason`` label of :data:`FRAMES_FAILSAFE` (``Result.failsafe``).
FAILSAFE_REASONS: tuple[str, ...] = typing.get_args(Failsafe)
#: Label value for line/camera pairs beyond :class:`LabelCap`'s limit.
OTHER_LABEL = "other"

LATENCY_BUCKETS_S = [
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0,
    2.0, 5.0, 10.0,
]
BATCH_BUCKETS = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256]

Kind = Literal["counter", "histogram", "gauge"]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    description: str
    tags: tuple[str, ...]


SPECS: tuple[MetricSpec, ...] = (
    MetricSpec(FRAMES_CONSUMED, "counter", "Frames polled from the frames topic.", ("line", "camera")),
    MetricSpec(FRAMES_INSPECTED, "counter", "Frames decided by the model in time.", ("line", "camera")),
    MetricSpec(FRAMES_DEFECTIVE, "counter", "Frames the model found defective.", ("line", "camera")),
    MetricSpec(ITEMS_REJECTED, "counter", "Reject commands sent (one per item).", ("line", "camera")),
    MetricSpec(FRAMES_LATE, "counter", "Frames not decided before their deadline.", ("line", "camera")),
    MetricSpec(
        FRAMES_DEAD_LETTERED, "counter", "Frames sent to the dead-letter topic.",
        ("line", "camera", "stage"),
    ),
    MetricSpec(
        FRAMES_FAILSAFE, "counter",
        "Frames decided without a model verdict (late, model failure, timeout) by the fail-safe policy.",
        ("line", "camera", "reason"),
    ),
    MetricSpec(
        FRAMES_REDELIVERED, "counter", "Frames polled again that already had a result (not re-decided).",
        ("line", "camera"),
    ),
    MetricSpec(E2E_LATENCY, "histogram", "Capture to decision, seconds.", ("line", "camera")),
    MetricSpec(
        STAGE_LATENCY, "histogram", "Per-stage latency (queue, decode, wait, model, sinks), seconds.",
        ("line", "camera", "stage"),
    ),
    MetricSpec(MODEL_LATENCY, "histogram", "Model time of one batch, seconds.", ()),
    MetricSpec(BATCH_SIZE, "histogram", "Frames per model batch.", ()),
    MetricSpec(CONSUMER_LAG, "gauge", "Frames behind the partition end.", ("topic", "partition")),
    MetricSpec(INFLIGHT_FRAMES, "gauge", "Frames polled and not yet committed (per ingress replica).", ()),
    MetricSpec(REDIS_USED_MEMORY, "gauge", "Redis used_memory (INFO memory), bytes.", ()),
    MetricSpec(REDIS_MAXMEMORY, "gauge", "Redis maxmemory (INFO memory), bytes; 0 = unbounded.", ()),
    MetricSpec(
        CAMERA_EXPECTED, "gauge", "1 per (line, camera) the config expects on the frames topic.",
        ("line", "camera", "topic"),
    ),
)
SPEC_BY_NAME = {s.name: s for s in SPECS}


def prometheus_name(name: str) -> str:
    """The series name Prometheus stores for ``name`` (counters ``…_total``, histograms' base)."""
    spec = SPEC_BY_NAME[name]
    base = RAY_EXPORT_PREFIX + name
    return base + "_total" if spec.kind == "counter" else base


def prometheus_series(name: str) -> tuple[str, ...]:
    """Every series name that one metric produces in Prometheus."""
    base = prometheus_name(name)
    if SPEC_BY_NAME[name].kind == "histogram":
        return (base + "_bucket", base + "_sum", base + "_count")
    return (base,)


class LabelCap:
    """Bounded label values: the first ``limit`` (line, camera) pairs seen keep their names, later
    ones become :data:`OTHER_LABEL` (so a flood of odd camera ids cannot grow Prometheus series)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[tuple[str, str]] = set()

    def tags(self, line: str, camera: str) -> dict[str, str]:
        pair = (line, camera)
        if pair in self._seen:
            return {"line": line, "camera": camera}
        if len(self._seen) < self._limit:
            self._seen.add(pair)
            return {"line": line, "camera": camera}
        return {"line": OTHER_LABEL, "camera": OTHER_LABEL}


class Recorders:
    """The ``ray.util.metrics`` objects for a set of names; built inside a replica.

    One ``ray.util.metrics`` record costs tens of microseconds inside a busy replica (measured up
    to ~85 us), and a frame makes about ten of them: on the event loop that alone capped an ingress
    replica near 1 000 frames/s of CPU. So counters are summed locally and histogram observations
    buffered, gauges keep their last value, and a daemon thread hands them to Ray every
    ``flush_interval_s`` (Prometheus scrapes every few seconds anyway).
    """

    def __init__(self, names: tuple[str, ...], flush_interval_s: float = 1.0) -> None:
        from ray.util import metrics as rm

        self._m: dict[str, object] = {}
        for name in names:
            s = SPEC_BY_NAME[name]
            if s.kind == "counter":
                self._m[name] = rm.Counter(name, description=s.description, tag_keys=s.tags)
            elif s.kind == "gauge":
                self._m[name] = rm.Gauge(name, description=s.description, tag_keys=s.tags)
            else:
                bounds = BATCH_BUCKETS if name == BATCH_SIZE else LATENCY_BUCKETS_S
                self._m[name] = rm.Histogram(
                    name, description=s.description, boundaries=bounds, tag_keys=s.tags
                )
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._obs: list[tuple[str, float, tuple[tuple[str, str], ...]]] = []
        self._gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._held: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._interval = flush_interval_s
        self._thread = threading.Thread(target=self._loop, name="grdline-metrics", daemon=True)
        self._thread.start()

    def inc(self, name: str, value: float = 1.0, **tags: str) -> None:
        if value > 0:
            key = (name, tuple(sorted(tags.items())))
            with self._lock:
                self._counts[key] = self._counts.get(key, 0.0) + value

    def observe(self, name: str, value: float, **tags: str) -> None:
        with self._lock:
            self._obs.append((name, float(value), tuple(sorted(tags.items()))))

    def set(self, name: str, value: float, **tags: str) -> None:
        with self._lock:
            self._gauges[(name, tuple(sorted(tags.items())))] = float(value)

    def hold(self, name: str, value: float, **tags: str) -> None:
        """A gauge value handed to Ray again at every flush, for as long as this process lives
        (Ray's agent drops a gauge series that its worker stops reporting)."""
        with self._lock:
            self._held[(name, tuple(sorted(tags.items())))] = float(value)

    def flush(self) -> None:
        """Hand what accumulated to Ray (the flusher thread calls it; tests may too)."""
        with self._lock:
            counts, self._counts = self._counts, {}
            obs, self._obs = self._obs, []
            gauges, self._gauges = {**self._held, **self._gauges}, {}
        for (name, tags), value in gauges.items():
            self._m[name].set(value, tags=dict(tags) or None)
        for (name, tags), value in counts.items():
            self._m[name].inc(value, tags=dict(tags) or None)
        for name, value, tags in obs:
            self._m[name].observe(value, tags=dict(tags) or None)

    def _loop(self) -> None:
        while True:
            time.sleep(self._interval)
            self.flush()


INGRESS_METRICS = (
    FRAMES_CONSUMED, FRAMES_INSPECTED, FRAMES_DEFECTIVE, ITEMS_REJECTED, FRAMES_LATE,
    FRAMES_DEAD_LETTERED, FRAMES_FAILSAFE, FRAMES_REDELIVERED, E2E_LATENCY, STAGE_LATENCY,
    CONSUMER_LAG, INFLIGHT_FRAMES, CAMERA_EXPECTED, REDIS_USED_MEMORY, REDIS_MAXMEMORY,
)
MODEL_METRICS = (MODEL_LATENCY, BATCH_SIZE)


def hold_expected_cameras(m: Recorders, labels: LabelCap, cfg: object) -> None:
    """Export :data:`CAMERA_EXPECTED` for every ``cfg.expected_cameras`` pair (a
    :class:`~inference.config.ServeAppConfig`), reserving their names in ``labels`` first so their
    consumed counters never become ``other``. No pair configured: nothing to compare, so
    ``GrdlineNoFramesConsumed`` cannot watch this app, which is logged."""
    import logging

    if not cfg.expected_cameras:
        logging.getLogger(__name__).warning(
            "expected_cameras is empty: GrdlineNoFramesConsumed cannot see topic %s go quiet",
            cfg.topics.frames)
    for cam in cfg.expected_cameras:
        m.hold(CAMERA_EXPECTED, 1, topic=cfg.topics.frames, **labels.tags(cam.line, cam.camera))


def account(m: Recorders, labels: LabelCap, stats: dict, report: object, confirmed_at: float) -> None:
    """Record one confirmed checkpoint flush (:class:`~inference.checkpoint.FlushReport`; its
    outcomes confirmed at wall time ``confirmed_at``): per outcome the counters and latencies
    above, in ``m`` and the replica's ``stats`` counters."""
    for o in report.outcomes:
        tags = labels.tags(o.line, o.camera)
        if o.dead is not None:
            m.inc(FRAMES_DEAD_LETTERED, stage=o.dead.stage, **tags)
            stats["dead_lettered"] += 1
        r = o.result
        if r is None:
            continue
        if r.failsafe == "invalid_input":  # rejected unjudged: no latency stages to observe
            m.inc(FRAMES_FAILSAFE, reason=r.failsafe, **tags)
            stats[f"failsafe_{r.failsafe}"] += 1
            stats["replayed" if r.replay_of else "results"] += 1
            continue
        if not o.write_result:
            m.inc(FRAMES_REDELIVERED, **tags)
            stats["redelivered"] += 1
            continue
        t = r.timings_ms
        m.observe(E2E_LATENCY, t.total / 1000, **tags)
        for stage in DECISION_STAGES:
            m.observe(STAGE_LATENCY, getattr(t, stage) / 1000, stage=stage, **tags)
        m.observe(STAGE_LATENCY, max(0.0, confirmed_at - r.decided_at.timestamp()), stage="sinks", **tags)
        if o.inspected:
            m.inc(FRAMES_INSPECTED, **tags)
            for stage in MODEL_STAGES:
                m.observe(STAGE_LATENCY, getattr(t, stage) / 1000, stage=stage, **tags)
            stats["inspected"] += 1
            if r.decision:
                m.inc(FRAMES_DEFECTIVE, **tags)
                stats["defective"] += 1
        if r.failsafe is not None:
            m.inc(FRAMES_FAILSAFE, reason=r.failsafe, **tags)
            stats[f"failsafe_{r.failsafe}"] += 1
        if r.late:
            m.inc(FRAMES_LATE, **tags)
            stats["late"] += 1
        stats["replayed" if r.replay_of else "results"] += 1
    for cmd in report.sent:
        m.inc(ITEMS_REJECTED, **labels.tags(cmd.line_id, cmd.camera_id))
    stats["rejects_sent"] += len(report.sent)
    stats["completed"] += len(report.outcomes)


def account_commit(m: Recorders, labels: LabelCap, waits: list[tuple[object, float]]) -> None:
    """Record the ``commit`` stage: ``(label, seconds)`` per offset a commit covered (label
    ``(line, camera)``, or None for a record that never decoded)."""
    for tag, wait_s in waits:
        line, camera = tag if isinstance(tag, tuple) and len(tag) == 2 else ("unknown", "unknown")
        m.observe(STAGE_LATENCY, wait_s, stage="commit", **labels.tags(line, camera))


def thread_names() -> dict[int, str]:
    """Native thread id → Python thread name of this process (``stats()`` of the replicas: lets a
    benchmark attribute the process' CPU time per thread — Kafka client, Serve router, sinks…)."""
    return {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}

