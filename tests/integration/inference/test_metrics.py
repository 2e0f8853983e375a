"""Every metric the design names reaches Prometheus (through Ray's metrics export) after a run."""

from __future__ import annotations

import json
import urllib.request

from dashboards.grafana import all_queries
from inference import metrics as M
from ingest import metrics as ingest_metrics

from .conftest import (
    encoded,
    results,
    running,
    simulated_frames,
    split_threshold,
    standin_scores,
    wait_for,
)


def prometheus_names(url: str) -> set[str]:
    with urllib.request.urlopen(f"{url}/api/v1/label/__name__/values", timeout=10) as resp:
        return set(json.load(resp)["data"])


def prometheus_result(url: str, query: str) -> list[dict]:
    q = urllib.request.quote(query)
    with urllib.request.urlopen(f"{url}/api/v1/query?query={q}", timeout=10) as resp:
        return json.load(resp)["data"]["result"]


def prometheus_value(url: str, query: str) -> float:
    return sum(float(r["value"][1]) for r in prometheus_result(url, query))


def test_every_designed_metric_appears_in_prometheus(
    app_config, produce, redis_client, redis_prefix, serve_instance, prometheus_url
):
    frames = simulated_frames(cameras=2, per_camera=8, seed=9, line="Lm")
    threshold = split_threshold(standin_scores(frames))
    k, v, h = encoded(frames[0])
    garbage = (k, b"not an image", h)  # same frame id header; it is dead-lettered, never decided
    late = encoded(frames[1], deadline_ms=1)  # already late on arrival
    cfg = app_config(partitions=2, standin={"batch_latency_ms": 20, "threshold": threshold},
                     tuning={"max_batch_size": 4})
    records = [garbage] + [encoded(f) for f in frames[2:]] + [late]
    produce(cfg.topics.frames, records)
    ids = [f.frame_id for f in frames[1:]]
    with running(cfg):
        wait_for(lambda: len(results(redis_client, redis_prefix, ids)) == len(ids), 90, "decisions")
        wanted = {series for spec in M.SPECS for series in M.prometheus_series(spec.name)}
        wait_for(lambda: not (wanted - prometheus_names(prometheus_url)), 150,
                 "every grdline_ series in Prometheus", interval_s=2.0)
        # the line label is there and the counters count this run
        consumed = f'{M.prometheus_name(M.FRAMES_CONSUMED)}{{line="Lm"}}'
        wait_for(lambda: prometheus_value(prometheus_url, consumed) >= len(records), 60,
                 "consumed counter of this run", interval_s=2.0)
        # every latency stage of a frame, the sinks and the offset commit included, is recorded
        by_stage = f'count by (stage) ({M.prometheus_name(M.STAGE_LATENCY)}_count{{line="Lm"}})'
        seen: set[str] = set()

        def every_stage() -> bool:
            seen.update(r["metric"]["stage"] for r in prometheus_result(prometheus_url, by_stage))
            return seen >= set(M.STAGES)

        wait_for(every_stage, 60, f"every stage of {M.STAGE_LATENCY}", interval_s=2.0,
                 state=lambda: {"missing": sorted(set(M.STAGES) - seen)})
        # Every Grafana panel fed by the Serve app shows data from this run. (Panels fed by a
        # camera process read ingest metrics, which no camera serves in this test; their queries
        # are checked for validity in tests/integration/dashboards.)
        ingest_names = tuple(ingest_metrics.METRIC_NAMES.values())
        panels = [(t, q) for t, q in all_queries() if not any(n in q for n in ingest_names)]
        assert len(panels) >= 10
        empty: list[str] = []

        def every_panel_has_data() -> bool:
            empty[:] = [t for t, q in panels if not prometheus_result(prometheus_url, q)]
            return not empty

        try:
            wait_for(every_panel_has_data, 60, "data behind every Serve dashboard panel", 2.0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; panels without data: {empty}") from None
