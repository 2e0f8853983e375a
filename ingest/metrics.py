"""Prometheus metrics of the ingest processes (camera, replay, record): the one home of their names.

Labels are ``line`` and ``camera`` only (never a frame or item id). Counters are exported with the
``_total`` suffix that prometheus_client appends; :data:`METRIC_NAMES` lists the exported sample
names so that dashboards can import them instead of spelling them.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LABELS = ("line", "camera")

FRAMES_PUBLISHED = Counter(
    "grdline_ingest_frames_published", "Frames acknowledged by the broker (acks=all).", LABELS
)
BYTES_PUBLISHED = Counter(
    "grdline_ingest_bytes_published", "Encoded frame bytes acknowledged by the broker.", LABELS
)
PUBLISH_FAILURES = Counter(
    "grdline_ingest_publish_failures",
    "Frames the broker did not accept (oversize, timeout, error); each is logged with its frame id.",
    LABELS,
)
FRAMES_CAPTURED = Counter(
    "grdline_ingest_frames_captured", "Frames taken from a camera source and handed to the producer.", LABELS
)
FRAMES_BEHIND = Counter(
    "grdline_ingest_frames_behind_schedule",
    "Frames sent later than one frame interval after their slot at the target fps.",
    LABELS,
)
FRAMES_REPLAYED = Counter(
    "grdline_ingest_frames_replayed", "Frames republished by the replayer.", LABELS
)
FRAMES_RECORDED = Counter(
    "grdline_ingest_frames_recorded", "Frames written to a recording archive.", LABELS
)
PUBLISH_LATENCY = Histogram(
    "grdline_ingest_publish_latency_seconds",
    "Time from send() to the broker's acknowledgement.",
    LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

#: Exported sample names (what PromQL sees).
METRIC_NAMES: dict[str, str] = {
    "frames_published": "grdline_ingest_frames_published_total",
    "bytes_published": "grdline_ingest_bytes_published_total",
    "publish_failures": "grdline_ingest_publish_failures_total",
    "frames_captured": "grdline_ingest_frames_captured_total",
    "frames_behind_schedule": "grdline_ingest_frames_behind_schedule_total",
    "frames_replayed": "grdline_ingest_frames_replayed_total",
    "frames_recorded": "grdline_ingest_frames_recorded_total",
    "publish_latency": "grdline_ingest_publish_latency_seconds",
}


def serve(port: int, addr: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread (prometheus_client's server)."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=addr)
