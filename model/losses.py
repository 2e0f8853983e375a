"""GRD-Net losses (spec §4): contextual L1 + SSIM, feature matching, latent, BCE, focal + ROI."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim

from model.config import LossConfig


def contextual_loss(x: torch.Tensor, x_hat: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """``L_con = w_l1·L1(x, x̂) + w_ssim·(1 − SSIM(x, x̂))``; Gaussian window 11, σ 1.5."""
    x, x_hat = x.float(), x_hat.float()
    s = ssim(x, x_hat, data_range=1.0, size_average=True, win_size=cfg.ssim_window,
             win_sigma=cfg.ssim_sigma)
    return cfg.w_l1 * F.l1_loss(x_hat, x) + cfg.w_ssim * (1 - s).clamp_min(0)


def feature_loss(f_real: torch.Tensor, f_fake: torch.Tensor) -> torch.Tensor:
    """``L_adv = mean((f(x) − f(x̂))²)``; ``f_real`` is detached by the caller."""
    return F.mse_loss(f_fake.float(), f_real.float())


def latent_loss(z: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
    """``L_enc = mean((z − ẑ)²)``."""
    return F.mse_loss(z_hat.float(), z.float())


def discriminator_loss(real_logit: torch.Tensor, fake_logit: torch.Tensor) -> torch.Tensor:
    """BCE with real → 1 and fake (x̂ detached) → 0, averaged over both."""
    real = F.binary_cross_entropy_with_logits(real_logit.float(), torch.ones_like(real_logit.float()))
    fake = F.binary_cross_entropy_with_logits(fake_logit.float(),
                                              torch.zeros_like(fake_logit.float()))
    return 0.5 * (real + fake)


def focal_loss_logits(
    logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float | None = None
) -> torch.Tensor:
    """Binary focal loss (Lin et al., ICCV 2017) from logits; mean over pixels."""
    logits, target = logits.float(), target.float()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t).pow(gamma)
    if alpha is not None:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return loss.mean()


def focal_loss_prob(
    prob: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Binary focal loss on probabilities (clamped to [eps, 1 − eps]); mean over pixels."""
    p = prob.float().clamp(eps, 1 - eps)
    t = target.float()
    p_t = p * t + (1 - p) * (1 - t)
    loss = -torch.log(p_t) * (1 - p_t).pow(gamma)
    if alpha is not None:
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    return loss.mean()


def segmentation_loss(
    logits: torch.Tensor, mask: torch.Tensor, roi: torch.Tensor, cfg: LossConfig
) -> torch.Tensor:
    """Focal loss with ROI attention (spec §4).

    ``target`` mode: FL(M̂, M ⊙ R) — outside the ROI every pixel is a negative.
    ``prediction`` mode: FL(M̂ ⊙ R, M) — the map is masked, so the ROI is needed at inference.
    Shapes: logits, mask, roi (B, 1, S, S).
    """
    if cfg.roi_mode == "target":
        return focal_loss_logits(logits, mask * roi, cfg.focal_gamma, cfg.focal_alpha)
    return focal_loss_prob(torch.sigmoid(logits.float()) * roi, mask, cfg.focal_gamma,
                           cfg.focal_alpha)


class GeneratorLosses(NamedTuple):
    total: torch.Tensor
    adv: torch.Tensor
    con: torch.Tensor
    enc: torch.Tensor


def generator_loss(
    x: torch.Tensor, x_hat: torch.Tensor, z: torch.Tensor, z_hat: torch.Tensor,
    f_real: torch.Tensor, f_fake: torch.Tensor, cfg: LossConfig,
) -> GeneratorLosses:
    """``L_G = w_adv·L_adv + w_con·L_con + w_enc·L_enc`` (paper Eq. 3: 1, 50, 1)."""
    adv = feature_loss(f_real.detach(), f_fake)
    con = contextual_loss(x, x_hat, cfg)
    enc = latent_loss(z, z_hat)
    return GeneratorLosses(cfg.w_adv * adv + cfg.w_con * con + cfg.w_enc * enc, adv, con, enc)
