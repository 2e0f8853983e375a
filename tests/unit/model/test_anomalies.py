import torch

from model.anomalies import AnomalyGenerator
from model.config import AnomalyConfig
from model.perlin import perlin_mask


def test_perlin_masks_binary_deterministic_min_area():
    a = [perlin_mask((64, 64), torch.Generator().manual_seed(s), min_area=25) for s in range(20)]
    b = [perlin_mask((64, 64), torch.Generator().manual_seed(s), min_area=25) for s in range(20)]
    for m1, m2 in zip(a, b, strict=True):
        assert torch.equal(m1, m2)
        assert set(torch.unique(m1).tolist()) <= {0.0, 1.0}
        assert m1.sum() >= 25
    assert not all(torch.equal(a[0], m) for m in a[1:])  # different seeds differ
    # a high threshold forces redraws and the fallback; the area bound still holds
    m = perlin_mask((32, 32), torch.Generator().manual_seed(0), threshold=0.95, min_area=40,
                    max_redraws=2)
    assert m.sum() >= 40


def test_texture_only_inside_mask_and_seeded():
    cfg = AnomalyConfig(probability=1.0, noise_sigma_max=0.0, geo_rotation_deg=0.0,
                        hflip=False, vflip=False)
    gen = AnomalyGenerator(cfg)
    x = torch.rand(6, 3, 64, 64)
    out = gen(x, torch.Generator().manual_seed(1))
    out2 = gen(x, torch.Generator().manual_seed(1))
    assert torch.equal(out.noisy, out2.noisy) and torch.equal(out.mask, out2.mask)
    assert torch.equal(out.clean, x)
    outside = out.mask.expand_as(x) == 0
    assert torch.equal(out.noisy[outside], x[outside])  # unchanged outside M
    assert (out.mask.flatten(1).sum(1) >= cfg.min_area).all()
    inside = ~outside
    assert (out.noisy[inside] - x[inside]).abs().mean() > 0.01  # something was pasted


def test_geometric_aug_moves_image_and_roi_together():
    cfg = AnomalyConfig(probability=0.0, noise_sigma_max=0.0, geo_rotation_deg=90.0, hflip=True,
                        vflip=True)
    gen = AnomalyGenerator(cfg)
    x = torch.zeros(4, 1, 32, 32)
    x[..., 4:12, 4:12] = 1.0
    roi = x.clone()
    out = gen(x, torch.Generator().manual_seed(3), roi)
    assert set(torch.unique(out.roi).tolist()) <= {0.0, 1.0}  # nearest: stays binary
    agree = ((out.clean > 0.5).float() == out.roi).float().mean()
    assert agree > 0.97
    assert not torch.equal(out.clean, x)


def test_textures_from_folder_are_used():
    cfg = AnomalyConfig(probability=1.0, noise_sigma_max=0.0, geo_rotation_deg=0.0,
                        hflip=False, vflip=False, n_photometric=0)
    tex = torch.full((1, 1, 32, 32), 0.5)
    gen = AnomalyGenerator(cfg, tex)
    x = torch.zeros(2, 1, 32, 32)
    out = gen(x, torch.Generator().manual_seed(0))
    m = out.mask.bool()
    vals = out.noisy[m]
    assert ((vals >= 0.25 - 1e-6) & (vals <= 0.5 + 1e-6)).all()  # β·0.5 with β ∈ [0.5, 1]


def test_roi_confined_defects_stay_in_the_dilated_roi():
    roi = torch.zeros(8, 1, 64, 64)
    roi[:, :, 30:34, :] = 1  # a thin band, like the vials' meniscus
    zone = roi.clone()
    zone[:, :, 28:36, :] = 1  # dilated by roi_margin=2
    common = dict(probability=1.0, noise_sigma_max=0.0, geo_rotation_deg=0.0, hflip=False, vflip=False)
    confined = AnomalyGenerator(AnomalyConfig(roi_probability=1.0, roi_margin=2, **common))
    out = confined(torch.rand(8, 1, 64, 64), torch.Generator().manual_seed(3), roi)
    assert (out.mask.flatten(1).sum(1) > 0).all()
    assert (out.mask * (1 - zone)).sum() == 0  # nothing outside the band ± margin
    free = AnomalyGenerator(AnomalyConfig(**common))  # spec default: anywhere
    out = free(torch.rand(8, 1, 64, 64), torch.Generator().manual_seed(3), roi)
    assert (out.mask * (1 - zone)).sum() > 0


def test_default_augmentation_keeps_good_parts_as_they_are():
    """A rotated or flipped part is a defect for many products: off unless a preset allows it."""
    gen = AnomalyGenerator(AnomalyConfig(probability=0.0, noise_sigma_max=0.0))
    x = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    out = gen(x, torch.Generator().manual_seed(3), None)
    assert torch.equal(out.clean, x)


def test_texture_crops_come_from_larger_textures():
    tex = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    cfg = AnomalyConfig(probability=1.0, noise_sigma_max=0.0, n_photometric=0, beta_min=1.0)
    gen = AnomalyGenerator(cfg, tex)
    x = torch.zeros(2, 1, 32, 32)
    out = gen(x, torch.Generator().manual_seed(2), None)
    m = out.mask.bool()
    assert m.any() and out.noisy.shape == x.shape
    # β = 1: inside the mask the defect is the texture crop itself
    assert out.noisy[m].std() > 0.1
