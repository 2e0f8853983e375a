"""Rendering: determinism, exact defect masks, ROI placement, reject semantics."""

from __future__ import annotations

import numpy as np
import pytest

from ingest.simulator import (
    COSMETIC,
    DEFECT_TYPES,
    GOOD,
    SimulatorError,
    render_part,
    roi_mask_for_recipe,
)
from ingest.simulator.render import ItemSpec, get_renderer

SIZE = 128


def _good_twin(part):
    """The same item (without its defect) seen through the same view."""
    r = get_renderer("vials", part.image.shape[0], 1 if part.image.ndim == 2 else 3, 0)
    fills = part.item.ref_fills
    return r.render(
        ItemSpec(GOOD, fills, fills, None, part.item.meniscus, part.item.density), part.view
    )


def test_same_seed_same_pixels_different_seed_differs():
    a = render_part(np.random.default_rng(5), "particle", size=SIZE)
    b = render_part(np.random.default_rng(5), "particle", size=SIZE)
    c = render_part(np.random.default_rng(6), "particle", size=SIZE)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.defect_mask, b.defect_mask)
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_dtypes(channels):
    p = render_part(np.random.default_rng(0), "good", size=SIZE, channels=channels)
    assert p.image.dtype == np.uint8
    assert p.image.shape == ((SIZE, SIZE) if channels == 1 else (SIZE, SIZE, 3))
    assert p.roi.dtype == bool and p.roi.shape == (SIZE, SIZE)
    assert p.defect_mask is None and not p.reject and p.defect_type == GOOD
    # a real-looking frame: bright backlight, dark vial walls, noise (no flat regions)
    assert 150 < np.median(p.image) < 245 and p.image.min() < 100
    assert np.std(np.diff(p.image.astype(int)[5, 5:30])) > 0.5


@pytest.mark.parametrize("dtype", [*DEFECT_TYPES, COSMETIC])
def test_mask_nonempty_and_exactly_where_pixels_changed(dtype):
    rng = np.random.default_rng(11)
    for _ in range(4):
        part = render_part(rng, dtype, size=SIZE)
        twin = _good_twin(part)
        mask = part.defect_mask
        assert mask is not None and mask.any(), dtype
        diff = np.abs(part.image.astype(int) - twin.image.astype(int))
        # every clearly changed pixel is in the mask ...
        assert not (diff > 12)[~mask].any(), dtype
        # ... and the mask holds pixels that did change
        assert diff[mask].mean() >= 6, dtype
        assert (diff[mask] >= 3).mean() > 0.7, dtype


@pytest.mark.parametrize("dtype", DEFECT_TYPES)
def test_defect_types_inside_roi_are_rejects(dtype):
    rng = np.random.default_rng(3)
    for _ in range(5):
        part = render_part(rng, dtype, size=SIZE)
        assert part.reject and (part.defect_mask & part.roi).any()


def test_outside_roi_defects_never_overlap_roi_nor_fixed_roi():
    rng = np.random.default_rng(4)
    fixed = roi_mask_for_recipe("vials", SIZE)
    kinds = set()
    for _ in range(60):
        part = render_part(rng, COSMETIC, size=SIZE)
        kinds.add(part.defect_kind)
        assert not part.reject
        assert part.defect_mask.any()
        assert not (part.defect_mask & part.roi).any()
        assert not (part.defect_mask & fixed).any()
    assert kinds == {"spot", "scratch", "particle", "bubble"}


def test_roi_covers_the_meniscus_band_and_moves_with_the_part():
    rng = np.random.default_rng(8)
    fixed = roi_mask_for_recipe("vials", SIZE)
    rois = []
    for _ in range(12):
        part = render_part(rng, GOOD, size=SIZE, debug=True)
        assert part.meniscus is not None and part.meniscus.sum() > 5 * 10
        assert part.roi[part.meniscus].all()  # every meniscus pixel is in the ROI
        assert not (part.roi & ~fixed).any()  # the fixed ROI contains every per-part ROI
        # one band per vial, not the whole frame
        assert 0.02 < part.roi.mean() < 0.2
        rois.append(part.roi)
    assert any(not np.array_equal(rois[0], r) for r in rois[1:])  # jitter moves it


def test_short_fill_moves_the_meniscus_out_of_the_band():
    part = render_part(np.random.default_rng(2), "short_fill", size=SIZE, debug=True)
    vial = part.item.defect.vial
    assert part.item.fills[vial] > part.item.ref_fills[vial] + part.item.defect.size - 1e-3
    assert not part.roi[part.meniscus].all()


def test_other_recipes_define_other_rois():
    band = roi_mask_for_recipe("vials", SIZE)
    body = roi_mask_for_recipe("vials_body", SIZE)
    strip = roi_mask_for_recipe("vials_strip", SIZE)
    assert band.sum() < body.sum() < strip.sum()
    part = render_part(np.random.default_rng(1), COSMETIC, size=SIZE, recipe="vials_body")
    assert not part.reject and not (part.defect_mask & part.roi).any()


def test_bad_requests_raise():
    with pytest.raises(SimulatorError, match="unknown defect type"):
        render_part(np.random.default_rng(0), "dirt", size=SIZE)
    with pytest.raises(SimulatorError, match="unknown recipe"):
        roi_mask_for_recipe("ampoules", SIZE)
    with pytest.raises(SimulatorError, match="size"):
        render_part(np.random.default_rng(0), GOOD, size=8)
    with pytest.raises(SimulatorError, match="no room outside"):
        render_part(np.random.default_rng(0), COSMETIC, size=SIZE, recipe="vials_strip")
