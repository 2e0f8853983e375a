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


def test_label_values_are_capped_with_an_other_label():
    from inference.metrics import OTHER_LABEL, LabelCap

    cap = LabelCap(2)
    assert cap.tags("L1", "c0") == {"line": "L1", "camera": "c0"}
    assert cap.tags("L1", "c1") == {"line": "L1", "camera": "c1"}
    assert cap.tags("L1", "c2") == {"line": OTHER_LABEL, "camera": OTHER_LABEL}
    assert cap.tags("L1", "c0") == {"line": "L1", "camera": "c0"}  # known pairs keep their names


def test_roi_cache_is_bounded():
    from inference.config import ServeAppConfig
    from inference.roi import RoiProvider

    rois = RoiProvider(ServeAppConfig(standin={}, default_recipe={"roi": "none"}, limits={"roi_cache_size": 3}))
    for size in range(8, 20):
        rois.get("r", size, size)
    assert len(rois._cache) == 3
