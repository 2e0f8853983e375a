"""The three GRD-Net networks (spec §2) and the inference path (spec §6).

* :class:`Generator` — residual E1 → decoder → E2 with separate weights; CRAE (conv, z = 32×8×8)
  or DRAE (dense, z ∈ R^2048) bottleneck.
* :class:`Discriminator` — the same residual encoder; last feature map for feature matching and a
  linear real/fake head.
* :class:`Segmenter` — DRAEM-style U-Net on concat(image, reconstruction), 1-channel logits.
* :class:`GRDNet` — holds the three; :meth:`GRDNet.infer` gives reconstruction, map and score.

Reference: N. Ferrari, M. Fraccaroli, E. Lamma, "GRD-Net", Int. J. Intelligent Systems 2023;
V. Zavrtanik et al., "DRAEM", ICCV 2021 (segmenter and scoring protocol).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from model.blocks import ConvUnit, ResidualBlock, UpResidualBlock
from model.config import GRDConfig


def encoder_widths(base: int, cap: int, n_stages: int) -> list[int]:
    """Channel width after the stem and after each stride-2 stage.

    The first stage keeps ``base`` and each later one doubles, up to ``cap`` (decision: keeps the
    full-resolution layers of the 256-px ``paper`` profile affordable).
    """
    return [min(base, cap)] + [min(base * 2 ** (i - 1), cap) for i in range(1, n_stages + 1)]


class ResidualEncoder(nn.Module):
    """Stem conv3×3 then ``n_stages`` stages of residual blocks (stride 2 in the first).

    ``(B, Cin, S, S) → (B, widths[-1], S/2^n, S/2^n)``.
    """

    def __init__(
        self, cin: int, base: int, cap: int, n_stages: int, blocks: int, *, norm: str, slope: float
    ) -> None:
        super().__init__()
        self.widths = encoder_widths(base, cap, n_stages)
        self.stem = ConvUnit(cin, self.widths[0], 3, 1, norm=norm, slope=slope)
        stages = []
        for i in range(n_stages):
            cin_i, cout_i = self.widths[i], self.widths[i + 1]
            layers = [ResidualBlock(cin_i, cout_i, 2, norm=norm, slope=slope)]
            layers += [ResidualBlock(cout_i, cout_i, 1, norm=norm, slope=slope)
                       for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)

    @property
    def out_channels(self) -> int:
        return self.widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class LatentEncoder(nn.Module):
    """Residual encoder + bottleneck: ``(B, C, S, S) → z`` of shape (B, 32, 8, 8) or (B, 2048)."""

    def __init__(self, cfg: GRDConfig) -> None:
        super().__init__()
        g = cfg.generator
        self.features = ResidualEncoder(
            cfg.channels, g.base, g.max_channels, cfg.n_stages, g.blocks_per_stage,
            norm=cfg.norm, slope=cfg.leaky_slope,
        )
        top = self.features.out_channels
        self.kind = g.bottleneck
        if g.bottleneck == "crae":
            self.proj: nn.Module = nn.Conv2d(top, g.latent_channels, 1)
        else:
            self.proj = nn.Sequential(
                nn.Flatten(1), nn.Linear(top * g.bottom_size**2, g.dense_size)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(x))


class Decoder(nn.Module):
    """Mirror of the encoder: latent → transposed-conv up-blocks → conv3×3 → sigmoid image."""

    def __init__(self, cfg: GRDConfig) -> None:
        super().__init__()
        g = cfg.generator
        norm, slope = cfg.norm, cfg.leaky_slope
        widths = encoder_widths(g.base, g.max_channels, cfg.n_stages)
        top = widths[-1]
        self.bottom = g.bottom_size
        self.top = top
        self.kind = g.bottleneck
        if g.bottleneck == "crae":
            self.inp: nn.Module = ConvUnit(g.latent_channels, top, 1, norm=norm, slope=slope,
                                           padding=0)
        else:
            self.inp = nn.Sequential(
                nn.Linear(g.dense_size, top * g.bottom_size**2), nn.LeakyReLU(slope, inplace=True)
            )
        stages = []
        for i in range(cfg.n_stages, 0, -1):
            layers: list[nn.Module] = [UpResidualBlock(widths[i], widths[i - 1], norm=norm,
                                                       slope=slope)]
            layers += [ResidualBlock(widths[i - 1], widths[i - 1], 1, norm=norm, slope=slope)
                       for _ in range(g.decoder_blocks_per_stage)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.out = nn.Conv2d(widths[0], cfg.channels, g.out_kernel, 1, g.out_kernel // 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.inp(z)
        if self.kind == "drae":
            h = h.view(z.shape[0], self.top, self.bottom, self.bottom)
        return torch.sigmoid(self.out(self.stages(h)))


class GeneratorOutput(NamedTuple):
    x_hat: torch.Tensor  # (B, C, S, S) in [0, 1]
    z: torch.Tensor  # E1(x): (B, 32, 8, 8) or (B, 2048)
    z_hat: torch.Tensor  # E2(x_hat), same shape as z


class Generator(nn.Module):
    """GANomaly-style generator: ``x → z = E1(x) → x̂ = D(z) → ẑ = E2(x̂)`` (separate E1/E2)."""

    def __init__(self, cfg: GRDConfig) -> None:
        super().__init__()
        self.e1 = LatentEncoder(cfg)
        self.decoder = Decoder(cfg)
        self.e2 = LatentEncoder(cfg)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S) → x̂ (B, C, S, S)``; the inference path (E2 is not needed)."""
        return self.decoder(self.e1(x))

    def forward(self, x: torch.Tensor) -> GeneratorOutput:
        z = self.e1(x)
        x_hat = self.decoder(z)
        return GeneratorOutput(x_hat, z, self.e2(x_hat))


class Discriminator(nn.Module):
    """``(B, C, S, S) → (logit (B,), features (B, F, 8, 8))``."""

    def __init__(self, cfg: GRDConfig) -> None:
        super().__init__()
        d = cfg.discriminator
        self.features = ResidualEncoder(
            cfg.channels, d.base, d.max_channels, cfg.n_stages, d.blocks_per_stage,
            norm=cfg.norm, slope=cfg.leaky_slope,
        )
        self.head = nn.Linear(self.features.out_channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.head(f.mean(dim=(2, 3))).squeeze(1), f


def _convs(cin: int, cout: int, norm: str, n: int = 2, stride: int = 1) -> nn.Sequential:
    layers = [ConvUnit(cin, cout, 3, stride, norm=norm, act="relu")]
    layers += [ConvUnit(cout, cout, 3, norm=norm, act="relu") for _ in range(n - 1)]
    return nn.Sequential(*layers)


class Segmenter(nn.Module):
    """DRAEM-style U-Net Δ: ``concat(x, x̂) (B, 2C, S, S) → logits (B, 1, S, S)``.

    Encoder: double conv per level, max-pool between levels (widths from the config). Decoder:
    bilinear ×2 upsampling → conv, concatenation with the skip, conv(s). Sigmoid outside. With
    ``stem_stride`` 2 the first conv is strided and the logits are upsampled ×2 at the end.
    """

    def __init__(self, cfg: GRDConfig) -> None:
        super().__init__()
        sc = cfg.segmenter
        w = sc.widths
        norm = cfg.norm
        self.stem_stride = sc.stem_stride
        self.down = nn.ModuleList([_convs(2 * cfg.channels, w[0], norm, 2, sc.stem_stride)])
        self.down.extend(_convs(w[i - 1], w[i], norm) for i in range(1, len(w)))
        self.up_conv = nn.ModuleList(
            ConvUnit(w[i + 1], w[i], sc.up_kernel, norm=norm, act="relu")
            for i in range(len(w) - 1)
        )
        self.merge = nn.ModuleList(
            _convs(2 * w[i], w[i], norm, sc.merge_convs) for i in range(len(w) - 1)
        )
        self.out = nn.Conv2d(w[0], 1, sc.out_kernel, 1, sc.out_kernel // 2)
        if sc.prior_prob is not None:  # start "all normal" so focal loss need not push it down
            nn.init.constant_(self.out.bias, -math.log((1 - sc.prior_prob) / sc.prior_prob))

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, x_hat], dim=1)
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                h = F.max_pool2d(h, 2)
            h = block(h)
            skips.append(h)
        for i in range(len(self.merge) - 1, -1, -1):
            h = F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)
            h = self.up_conv[i](h)
            h = self.merge[i](torch.cat([h, skips[i]], dim=1))
        logits = self.out(h)
        if self.stem_stride == 2:
            logits = F.interpolate(logits, scale_factor=2.0, mode="bilinear", align_corners=False)
        return logits


def image_score(heat: torch.Tensor, kernel: int) -> torch.Tensor:
    """η = max over the map of a ``kernel``×``kernel`` mean filter (DRAEM protocol).

    ``heat (B, 1, S, S) → (B,)``.
    """
    pooled = F.avg_pool2d(heat.float(), kernel, stride=1, padding=kernel // 2)
    return pooled.flatten(1).amax(dim=1)


class Inference(NamedTuple):
    x_hat: torch.Tensor  # (B, C, S, S)
    heat: torch.Tensor  # (B, 1, S, S) in [0, 1], ROI-filtered when an ROI was given
    score: torch.Tensor  # (B,) float32


class GRDNet(nn.Module):
    """Generator, discriminator and segmenter of one GRD-Net model."""

    def __init__(self, cfg: GRDConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.generator = Generator(cfg)
        self.discriminator = Discriminator(cfg)
        self.segmenter = Segmenter(cfg)

    def infer(self, x: torch.Tensor, roi: torch.Tensor | None = None) -> Inference:
        """Spec §6: ``x̂ = G(x)``, ``M̂ = σ(Δ(x, x̂))``, ``M̂ ← M̂ ⊙ R``, ``η = max(avgpool(M̂))``.

        ``x (B, C, S, S)`` in [0, 1]; ``roi`` None or (B, 1, S, S) with 1 inside the ROI.
        """
        x_hat = self.generator.reconstruct(x)
        heat = torch.sigmoid(self.segmenter(x, x_hat).float())
        if roi is not None:
            heat = heat * roi.to(heat.dtype)
        return Inference(x_hat, heat, image_score(heat, self.cfg.pool_kernel))


class InferenceNet(nn.Module):
    """Only what serving needs (E1, decoder, segmenter), so it can be fused / cast on its own."""

    def __init__(self, net: GRDNet) -> None:
        super().__init__()
        self.e1 = net.generator.e1
        self.decoder = net.generator.decoder
        self.segmenter = net.segmenter

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (B, C, S, S) → (x̂ (B, C, S, S), logits (B, 1, S, S))``."""
        x_hat = self.decoder(self.e1(x))
        return x_hat, self.segmenter(x, x_hat)
