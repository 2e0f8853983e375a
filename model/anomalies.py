"""Synthetic defects for training (spec §3), as a batch transform.

``AnomalyGenerator(cfg, textures)(x, roi, gen)`` takes clean images ``x (B, C, S, S)`` in [0, 1]
and ROIs ``(B, 1, S, S)``, applies the geometric augmentation to both, then for each image (with
probability ``cfg.probability``) pastes a texture N inside a Perlin mask M with opacity β, adds
Gaussian noise, and returns the clean target, the perturbed input and the masks. Textures come
from a configured folder (e.g. DTD), else from another good image of the batch (self-texture) or
from random colour noise shaped by a second Perlin field. Never pass test images as textures.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from model.config import AnomalyConfig
from model.perlin import perlin_2d, perlin_mask, rotate


class SyntheticBatch(NamedTuple):
    clean: torch.Tensor  # (B, C, S, S) geometric-augmented X (the reconstruction target)
    noisy: torch.Tensor  # (B, C, S, S) X_n: defect pasted + Gaussian noise
    mask: torch.Tensor  # (B, 1, S, S) {0, 1} defect mask M (zeros where no defect was drawn)
    roi: torch.Tensor  # (B, 1, S, S) {0, 1} ROI R after the same geometric augmentation


def _u(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(1, generator=gen))


def photometric(img: torch.Tensor, gen: torch.Generator, n: int) -> torch.Tensor:
    """Apply ``n`` distinct random photometric augmentations to one image ``(C, H, W)``."""
    ops = ["gamma", "multiply", "add", "invert", "solarize", "posterize", "autocontrast",
           "channels"]
    order = torch.randperm(len(ops), generator=gen).tolist()[:n]
    x = img
    for i in order:
        op = ops[i]
        if op == "gamma":
            x = x.clamp(1e-4, 1) ** _u(gen, 0.5, 2.0)
        elif op == "multiply":
            x = x * (0.8 + 0.4 * torch.rand(x.shape[0], 1, 1, generator=gen)).to(x)
        elif op == "add":
            x = x + _u(gen, -0.2, 0.2)
        elif op == "invert":
            x = 1 - x
        elif op == "solarize":
            t = _u(gen, 0.3, 0.9)
            x = torch.where(x > t, 1 - x, x)
        elif op == "posterize":
            levels = int(torch.randint(4, 17, (1,), generator=gen))
            x = torch.floor(x * levels) / levels
        elif op == "autocontrast":
            lo, hi = x.amin(), x.amax()
            x = (x - lo) / (hi - lo).clamp_min(1e-3)
        elif op == "channels" and x.shape[0] > 1:
            x = x[torch.randperm(x.shape[0], generator=gen).to(x.device)]
        x = x.clamp(0, 1)
    return x


class AnomalyGenerator:
    """Batch transform making synthetic defects; see the module doc."""

    def __init__(self, cfg: AnomalyConfig, textures: torch.Tensor | None = None) -> None:
        """``textures``: optional float (T, C, H, W) in [0, 1], at least the model size (a random
        crop per defect; :func:`model.data.load_textures` loads them at twice the size)."""
        self.cfg = cfg
        self.textures = textures

    def geometric(
        self, x: torch.Tensor, roi: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same random rotation (±geo_rotation_deg) and flips for images and ROIs (nearest)."""
        b = x.shape[0]
        c = self.cfg
        if c.geo_rotation_deg > 0:
            ang = (torch.rand(b, generator=gen) * 2 - 1) * c.geo_rotation_deg
            x = rotate(x, ang, "bilinear", "reflection")
            roi = rotate(roi, ang, "nearest", "reflection")
        if c.hflip:
            f = torch.rand(b, generator=gen) < 0.5
            x = torch.where(f.view(b, 1, 1, 1).to(x.device), x.flip(3), x)
            roi = torch.where(f.view(b, 1, 1, 1).to(x.device), roi.flip(3), roi)
        if c.vflip:
            f = torch.rand(b, generator=gen) < 0.5
            x = torch.where(f.view(b, 1, 1, 1).to(x.device), x.flip(2), x)
            roi = torch.where(f.view(b, 1, 1, 1).to(x.device), roi.flip(2), roi)
        return x, roi

    def _perlin(self, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
        c = self.cfg
        return perlin_mask(
            (h, w), gen, min_exp=c.perlin_min_exp, max_exp=c.perlin_max_exp,
            rotation_deg=c.perlin_rotation_deg, threshold=c.perlin_threshold,
            min_area=c.min_area, max_redraws=c.max_redraws,
        )[None]

    def _mask(self, h: int, w: int, roi: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """A Perlin mask ``(1, H, W)``; with probability ``roi_probability`` confined to the ROI
        dilated by ``roi_margin`` (redrawn until enough of it falls there; unconfined if never)."""
        c = self.cfg
        m = self._perlin(h, w, gen)
        if c.roi_probability <= 0 or float(torch.rand(1, generator=gen)) >= c.roi_probability:
            return m
        k = 2 * c.roi_margin + 1
        zone = torch.nn.functional.max_pool2d(roi.float().cpu()[None], k, stride=1, padding=c.roi_margin)[0]
        need = max(1, c.min_area // 4)
        for _ in range(c.max_redraws):
            confined = m * zone
            if float(confined.sum()) >= need:
                return confined
            m = self._perlin(h, w, gen)
        return m

    def _texture(self, x: torch.Tensor, i: int, gen: torch.Generator) -> torch.Tensor:
        c = self.cfg
        ch, h, w = x.shape[1:]
        if self.textures is not None and len(self.textures) > 0:
            t = self.textures[int(torch.randint(0, len(self.textures), (1,), generator=gen))]
            th, tw = t.shape[1:]
            if (th, tw) != (h, w):  # a random crop of the (larger) texture image
                if th < h or tw < w:
                    t = torch.nn.functional.interpolate(t[None], size=(h, w), mode="bilinear",
                                                        align_corners=False)[0]
                else:
                    y = int(torch.randint(0, th - h + 1, (1,), generator=gen))
                    xx = int(torch.randint(0, tw - w + 1, (1,), generator=gen))
                    t = t[:, y:y + h, xx:xx + w]
            t = t.to(x.device, x.dtype)
        elif float(torch.rand(1, generator=gen)) < c.self_texture_prob and x.shape[0] > 1:
            j = int(torch.randint(0, x.shape[0] - 1, (1,), generator=gen))
            j = j + 1 if j >= i else j  # another image of the batch
            t = x[j]
            k = int(torch.randint(0, 4, (1,), generator=gen))
            t = torch.rot90(t, k, dims=(1, 2))  # images are square (S, S)
        else:
            e = int(torch.randint(1, 5, (1,), generator=gen))
            shape_field = perlin_2d((h, w), (2**e, 2**e), gen).to(x.device)
            colour = torch.rand(ch, 1, 1, generator=gen).to(x)
            grain = torch.rand(ch, h, w, generator=gen).to(x)
            t = (colour + 0.5 * shape_field[None] + 0.2 * (grain - 0.5)).clamp(0, 1)
        return photometric(t, gen, c.n_photometric)

    def __call__(
        self,
        x: torch.Tensor,
        gen: torch.Generator,
        roi: torch.Tensor | None = None,
        geometric: bool = True,
    ) -> SyntheticBatch:
        """``x (B, C, S, S)`` in [0, 1] → :class:`SyntheticBatch` (all on ``x.device``)."""
        c = self.cfg
        b, ch, h, w = x.shape
        if roi is None:
            roi = torch.ones(b, 1, h, w, device=x.device, dtype=x.dtype)
        roi = roi.to(x.dtype)
        if geometric:
            x, roi = self.geometric(x, roi, gen)
        masks = torch.zeros(b, 1, h, w, device=x.device, dtype=x.dtype)
        noisy = x.clone()
        for i in range(b):
            if float(torch.rand(1, generator=gen)) >= c.probability:
                continue
            m = self._mask(h, w, roi[i], gen).to(x.device, x.dtype)
            tex = self._texture(x, i, gen) * m  # N ⊙ M: texture only inside the mask
            beta = _u(gen, c.beta_min, c.beta_max)
            xi = x[i]
            noisy[i] = (xi * (1 - m) + (1 - beta) * xi * m + beta * tex).clamp(0, 1)
            masks[i] = m
        sigma = torch.rand(b, 1, 1, 1, generator=gen) * c.noise_sigma_max
        noise = torch.randn(noisy.shape, generator=gen) * sigma
        noisy = (noisy + noise.to(x.device, x.dtype)).clamp(0, 1)
        return SyntheticBatch(x, noisy, masks, roi)
