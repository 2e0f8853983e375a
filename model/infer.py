"""Batched inference over in-memory datasets (training validation, calibration, evaluation)."""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np
import torch

from model.networks import GRDNet


class InferResult(NamedTuple):
    scores: np.ndarray  # float32 (N,)
    heat: np.ndarray  # float32 (N, S, S), ROI-filtered when ROIs were given
    x_hat: np.ndarray | None  # uint8 (N, S, S, C) reconstructions, when asked for


def autocast_ctx(device: torch.device, precision: str):
    """Autocast context for ``precision`` (``fp32`` → no autocast)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def run(
    net: GRDNet,
    images: np.ndarray,
    rois: np.ndarray | None = None,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    precision: str = "fp32",
    keep_recon: bool = False,
) -> InferResult:
    """``images`` uint8 (N, S, S, C), ``rois`` bool (N, S, S) or None → scores and maps."""
    device = torch.device(device)
    was_training = net.training
    net.eval()
    scores, heats, recons = [], [], []
    try:
        for s in range(0, len(images), batch_size):
            x = torch.from_numpy(images[s:s + batch_size]).to(device)
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
            r = None
            if rois is not None:
                r = torch.from_numpy(rois[s:s + batch_size]).to(device).float()[:, None]
            with autocast_ctx(device, precision):
                out = net.infer(x, r)
            scores.append(out.score.float().cpu().numpy())
            heats.append(out.heat[:, 0].float().cpu().numpy())
            if keep_recon:
                xr = (out.x_hat.float().clamp(0, 1) * 255).round().to(torch.uint8)
                recons.append(xr.permute(0, 2, 3, 1).cpu().numpy())
    finally:
        net.train(was_training)
    return InferResult(
        np.concatenate(scores).astype(np.float32),
        np.concatenate(heats).astype(np.float32),
        np.concatenate(recons) if keep_recon else None,
    )
