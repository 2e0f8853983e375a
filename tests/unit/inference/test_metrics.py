from __future__ import annotations

from inference import metrics as M


def test_every_name_is_prefixed_and_unique():
    names = [s.name for s in M.SPECS]
    assert len(names) == len(set(names))
    assert all(n.startswith("grdline_") for n in names)
    assert set(M.INGRESS_METRICS) | set(M.MODEL_METRICS) == set(names)


def test_labels_never_carry_frame_or_item_ids():
    for s in M.SPECS:
        assert not {"frame", "frame_id", "item", "item_id"} & set(s.tags)


def test_prometheus_names():
    assert M.prometheus_name(M.FRAMES_CONSUMED) == "ray_grdline_frames_consumed_total"
    assert M.prometheus_series(M.E2E_LATENCY) == (
        "ray_grdline_e2e_latency_seconds_bucket",
        "ray_grdline_e2e_latency_seconds_sum",
        "ray_grdline_e2e_latency_seconds_count",
    )
    assert M.prometheus_name(M.CONSUMER_LAG) == "ray_grdline_consumer_lag"
