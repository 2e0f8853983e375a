"""``make_report``: collect a run from Prometheus, Redis, Kafka (and ground truth) and write it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from dashboards.report.collect import (
    GalleryItem,
    Prometheus,
    RunData,
    Window,
    collect_prometheus,
    fetch_frames,
    load_truth,
    original_id,
    read_results,
    score_against_truth,
    worst_defects,
)
from dashboards.report.render import overlay_png, write_report


def make_report(
    line: str,
    since: datetime,
    until: datetime,
    out: Path,
    *,
    prefix: str | None = None,
    truth_path: Path | None = None,
    prometheus_url: str | None = None,
    redis_client: Any = None,
    gallery_size: int = 12,
    frames_from_kafka: bool = True,
) -> Path:
    """Write the report of ``line`` over ``[since, until]`` to ``out``; returns ``index.html``.

    ``prefix`` is the Redis key prefix of the results (a replay served into its own namespace
    has its own); defaults to ``RedisSettings().key_prefix``.
    """
    import redis

    from dashboards.settings import PrometheusSettings
    from inference.settings import RedisSettings

    settings = RedisSettings()
    window = Window(line=line, since=since, until=until, prefix=prefix or settings.key_prefix)
    client = redis_client or redis.Redis(**settings.client_kwargs())
    try:
        results, notes = read_results(client, window)
        worst = worst_defects(client, results, window.prefix, gallery_size)
    finally:
        if redis_client is None:
            client.close()
    if not results:
        notes.append(f"No decision of line {line} in the Redis stream of namespace "
                     f"{window.prefix!r} between these times.")
    prom = Prometheus(prometheus_url or PrometheusSettings().url)
    topics = tuple(sorted({r.topic for r in results}))
    charts, totals, latency = collect_prometheus(prom, window, topics)

    truth_records = load_truth(truth_path) if truth_path else None
    truth = score_against_truth(results, truth_records) if truth_records is not None else None
    if frames_from_kafka:
        frames = fetch_frames(worst)
    else:
        frames = {r.frame_id: (None, "frame not fetched (--no-frames)") for r in worst}
    gallery = []
    for r in worst:
        image, note = frames.get(r.frame_id, (None, "frame not fetched"))
        t = (truth_records or {}).get(original_id(r.frame_id))
        label = "" if t is None else (t.defect_type if t.defect_kind in (None, t.defect_type)
                                      else f"{t.defect_type} ({t.defect_kind})")
        gallery.append(GalleryItem(r, overlay_png(image, r), note, label))
    data = RunData(window=window, results=results, charts=charts, prometheus_totals=totals,
                   prometheus_latency=latency, gallery=gallery, truth=truth, notes=notes)
    return write_report(data, out)
