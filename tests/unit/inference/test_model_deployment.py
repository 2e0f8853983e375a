"""The model deployment's batch logic, without a cluster (the stand-in predictor)."""

from __future__ import annotations

import asyncio

import numpy as np

from inference.config import ServeAppConfig
from inference.contracts import png_to_mask
from inference.model_deployment import GRDNetModel, ModelFailure, ModelReply, ModelRequest


def make_model(**tuning) -> object:
    cfg = ServeAppConfig(standin={"batch_latency_ms": 0, "threshold": 0.5}, tuning=tuning,
                         model={"warmup_batches": 1})
    return GRDNetModel.func_or_class(cfg)


def test_batch_replies_in_order_with_masks_at_frame_resolution():
    m = make_model(max_batch_size=4)
    bright = np.full((10, 12), 200, np.uint8)
    dark = np.zeros((8, 8), np.uint8)
    roi = np.zeros((10, 12), bool)
    roi[:, :6] = True
    out = m._predict_batch([ModelRequest("a", bright, roi), ModelRequest("b", dark)])
    assert [type(o) for o in out] == [ModelReply, ModelReply]
    a, b = out
    assert a.decision and not b.decision and a.batch_size == 2
    mask = png_to_mask(a.mask_png)
    assert mask.shape == (10, 12) and mask[:, :6].all() and not mask[:, 6:].any()
    assert a.defect_area == 60 and len(a.boxes) == 1
    assert a.model_version == "standin-1" and a.threshold == 0.5


def test_one_bad_item_does_not_fail_the_batch():
    m = make_model()
    good = np.full((8, 8), 10, np.uint8)
    bad = np.zeros((8, 8), np.uint8)
    bad_roi = np.zeros((3, 3), bool)  # wrong shape: the predictor raises for this item
    out = m._predict_batch([ModelRequest("g1", good), ModelRequest("bad", bad, bad_roi), ModelRequest("g2", good)])
    assert isinstance(out[0], ModelReply) and isinstance(out[2], ModelReply)
    assert isinstance(out[1], ModelFailure) and out[1].frame_id == "bad"


def test_reconfigure_changes_batching_and_threshold_live():
    m = make_model(max_batch_size=4)
    m.reconfigure({"max_batch_size": 32, "batch_wait_timeout_s": 0.2, "threshold": 0.01})
    assert m._tuning.max_batch_size == 32 and m._tuning.batch_wait_timeout_s == 0.2
    out = m._predict_batch([ModelRequest("a", np.full((8, 8), 10, np.uint8))])
    assert out[0].decision and out[0].threshold == 0.01


def test_frames_queued_behind_a_busy_model_leave_together_up_to_the_maximum():
    m = make_model(max_batch_size=8, batch_wait_timeout_s=0.0)
    m._predictor._latency_s = 0.05
    img = np.zeros((8, 8), np.uint8)

    async def go():
        first = asyncio.ensure_future(m.infer([ModelRequest("a0", img)]))
        await asyncio.sleep(0.01)
        # six calls of two frames arrive while the first batch runs
        rest = [asyncio.ensure_future(m.infer([ModelRequest(f"b{i}{j}", img) for j in range(2)])) for i in range(6)]
        return await first, await asyncio.gather(*rest)

    first, rest = asyncio.run(go())
    assert len(first) == 1 and [len(r) for r in rest] == [2] * 6
    assert rest[0][1].batch_size == 8 and rest[5][1].batch_size == 4
    s = m.stats()
    assert s["frames"] == 13 and s["batches"] == 3  # 1, then 8 (four calls), then the other 4


def test_a_partial_batch_waits_for_more_at_most_the_batch_wait_timeout():
    m = make_model(max_batch_size=8, batch_wait_timeout_s=0.3)
    img = np.zeros((8, 8), np.uint8)

    async def go():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        first = asyncio.ensure_future(m.infer([ModelRequest("a", img)]))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(m.infer([ModelRequest("b", img)]))  # joins the waiting batch
        a, b = await first, await second
        waited = loop.time() - t0
        full = [asyncio.ensure_future(m.infer([ModelRequest(f"c{i}", img) for i in range(4)])) for _ in range(2)]
        t1 = loop.time()
        c = await asyncio.gather(*full)
        return a, b, waited, c, loop.time() - t1

    a, b, waited, c, full_took = asyncio.run(go())
    assert a[0].batch_size == b[0].batch_size == 2
    assert 0.25 <= waited < 2.0  # held for the timeout (0.3 s after the first frame), not longer
    assert c[0][0].batch_size == 8 and full_took < 0.25  # a full batch leaves without waiting


def test_non_finite_scores_are_failures_and_repeated_bad_batches_fail_health():
    import pytest

    from inference.standin import StandInBatch

    m = make_model(max_batch_size=4)
    m._cfg = m._cfg.model_copy(update={"model": m._cfg.model.model_copy(update={"unhealthy_after_failures": 2})})
    real = m._predictor.predict

    def nan_predict(images, rois=None):
        out = real(images, rois)
        scores = out.scores.copy()
        scores[0] = np.nan
        return StandInBatch(scores, scores >= 0.5, out.masks, out.heatmaps)

    m._predictor.predict = nan_predict
    img = np.zeros((8, 8), np.uint8)

    async def batch():
        return await m.infer([ModelRequest("a", img), ModelRequest("b", img)])

    out = asyncio.run(batch())
    assert isinstance(out[0], ModelFailure) and "non-finite" in out[0].reason and isinstance(out[1], ModelReply)
    m.check_health()  # one bad batch: still healthy
    asyncio.run(batch())
    with pytest.raises(RuntimeError, match="consecutive bad batches"):
        m.check_health()
    m._predictor.predict = real
    asyncio.run(batch())
    m.check_health()  # a good batch resets the count


def test_a_deadline_tighter_than_two_full_batches_is_warned_about_at_start(caplog):
    import logging

    cfg = ServeAppConfig(standin={"batch_latency_ms": 60}, tuning={"max_batch_size": 4},
                         model={"warmup_batches": 1}, recipes={"vials": {"deadline_ms": 100}},
                         deadline={"default_deadline_ms": 5000})
    with caplog.at_level(logging.WARNING, logger="inference.model_deployment"):
        m = GRDNetModel.func_or_class(cfg)
        m.reconfigure({"max_batch_size": 4})
    assert m.stats()["full_batch_ms"] >= 55
    warned = [r.getMessage() for r in caplog.records if "full batch" in r.getMessage()]
    assert len(warned) == 1 and "vials 100 ms" in warned[0] and "(default)" not in warned[0]
