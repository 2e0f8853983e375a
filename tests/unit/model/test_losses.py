import pytest
import torch

from model.config import LossConfig, make_config
from model.losses import (
    contextual_loss,
    discriminator_loss,
    focal_loss_logits,
    focal_loss_prob,
    generator_loss,
    segmentation_loss,
)
from model.networks import GRDNet


def test_every_loss_finite_and_non_negative():
    torch.manual_seed(0)
    cfg = make_config("line", image_size=64, channels=3)
    net = GRDNet(cfg)
    x = torch.rand(2, 3, 64, 64)
    g = net.generator(x)
    rl, fr = net.discriminator(x)
    fl, ff = net.discriminator(g.x_hat)
    lg = generator_loss(x, g.x_hat, g.z, g.z_hat, fr, ff, cfg.loss)
    logits = net.segmenter(x, g.x_hat.detach())
    mask = (torch.rand(2, 1, 64, 64) > 0.9).float()
    roi = (torch.rand(2, 1, 64, 64) > 0.3).float()
    values = [*lg, discriminator_loss(rl, fl), contextual_loss(x, g.x_hat, cfg.loss)]
    for mode in ("target", "prediction"):
        values.append(segmentation_loss(logits, mask, roi, LossConfig(roi_mode=mode)))
    for v in values:
        v = v.detach()
        assert torch.isfinite(v) and float(v) >= 0
    # L_G weights of the paper: 1·adv + 50·con + 1·enc
    torch.testing.assert_close(lg.total, lg.adv + 50 * lg.con + lg.enc)
    lg.total.backward()  # differentiable


def test_contextual_loss_zero_for_identical_images():
    x = torch.rand(2, 1, 32, 32)
    assert float(contextual_loss(x, x, LossConfig())) == pytest.approx(0.0, abs=1e-5)


def test_focal_forms_agree_and_reduce_to_bce():
    logits = torch.randn(2, 1, 8, 8) * 3
    t = (torch.rand(2, 1, 8, 8) > 0.5).float()
    a = focal_loss_logits(logits, t, 2.0)
    b = focal_loss_prob(torch.sigmoid(logits), t, 2.0)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, t)
    torch.testing.assert_close(focal_loss_logits(logits, t, 0.0), bce)


def test_roi_target_mode_zeroes_targets_outside_roi():
    """target mode: a defect outside the ROI is a negative, so predicting 0 there is optimal."""
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 0:4, 0:4] = 1  # defect in the top-left quadrant
    roi = torch.zeros(1, 1, 8, 8)
    roi[..., :, 4:] = 1  # ROI = right half; defect entirely outside
    cfg = LossConfig(roi_mode="target")
    zero_pred = torch.full((1, 1, 8, 8), -20.0)
    defect_pred = zero_pred.clone()
    defect_pred[..., 0:4, 0:4] = 20.0
    # all-negative prediction is (near) perfect; marking the outside defect is penalised
    assert float(segmentation_loss(zero_pred, mask, roi, cfg)) < 1e-6
    assert float(segmentation_loss(defect_pred, mask, roi, cfg)) > 0.1
    # equals the plain focal loss against M ⊙ R = 0
    torch.testing.assert_close(segmentation_loss(defect_pred, mask, roi, cfg),
                               focal_loss_logits(defect_pred, torch.zeros_like(mask)))
    # prediction mode ignores what happens outside the ROI (M̂ ⊙ R there is 0 whatever M̂ is)
    pcfg = LossConfig(roi_mode="prediction")
    torch.testing.assert_close(segmentation_loss(zero_pred, mask, roi, pcfg),
                               segmentation_loss(defect_pred, mask, roi, pcfg))
