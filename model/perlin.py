"""2-D Perlin noise and the thresholded, rotated Perlin defect masks of spec §3.

Gradient noise after K. Perlin, "Improving noise", SIGGRAPH 2002 (quintic fade); masks as in
DRAEM (Zavrtanik et al., ICCV 2021): random lattice resolution 2^a × 2^b, random rotation,
threshold. All randomness comes from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _fade(t: torch.Tensor) -> torch.Tensor:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_2d(
    shape: tuple[int, int], res: tuple[int, int], gen: torch.Generator
) -> torch.Tensor:
    """Perlin noise of ``shape`` (H, W) with ``res`` (ry, rx) lattice cells; values ≈ [-0.7, 0.7].

    The field is computed on a grid that is a multiple of ``res`` and cropped to ``shape``.
    """
    h, w = shape
    ry, rx = res
    ch, cw = math.ceil(h / ry), math.ceil(w / rx)  # pixels per cell
    angles = 2 * math.pi * torch.rand(ry + 1, rx + 1, generator=gen)
    grads = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)  # (ry+1, rx+1, 2)
    ys = (torch.arange(ry * ch, dtype=torch.float32) + 0.5) / ch
    xs = (torch.arange(rx * cw, dtype=torch.float32) + 0.5) / cw
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    y0, x0 = yy.floor().long(), xx.floor().long()
    fy, fx = yy - y0, xx - x0

    def dot(dy: int, dx: int) -> torch.Tensor:
        g = grads[y0 + dy, x0 + dx]
        return g[..., 0] * (fx - dx) + g[..., 1] * (fy - dy)

    u, v = _fade(fx), _fade(fy)
    top = torch.lerp(dot(0, 0), dot(0, 1), u)
    bottom = torch.lerp(dot(1, 0), dot(1, 1), u)
    field = math.sqrt(2) * torch.lerp(top, bottom, v)
    return field[:h, :w]


def rotate(img: torch.Tensor, degrees: torch.Tensor, mode: str = "bilinear",
           padding: str = "reflection") -> torch.Tensor:
    """Rotate ``(B, C, H, W)`` images about their centres by ``degrees`` (B,)."""
    rad = degrees.to(img.device, torch.float32) * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)
    out = F.grid_sample(img.float(), grid, mode=mode, padding_mode=padding, align_corners=False)
    return out.to(img.dtype)


def perlin_mask(
    shape: tuple[int, int],
    gen: torch.Generator,
    *,
    min_exp: int = 0,
    max_exp: int = 5,
    rotation_deg: float = 90.0,
    threshold: float = 0.5,
    min_area: int = 25,
    max_redraws: int = 20,
) -> torch.Tensor:
    """One binary defect mask (H, W) float {0, 1} with at least ``min_area`` pixels set.

    Resolution 2^a × 2^b (a, b uniform in [min_exp, max_exp], capped so a cell is ≥ 2 px), rotation
    uniform in ±``rotation_deg``, threshold; redrawn while too small. After ``max_redraws`` failed
    draws the last field is thresholded at its ``min_area``-th largest value instead.
    """
    h, w = shape
    cap_y = max(0, int(math.log2(max(h // 2, 1))))
    cap_x = max(0, int(math.log2(max(w // 2, 1))))
    field = None
    for _ in range(max_redraws):
        a = int(torch.randint(min_exp, max_exp + 1, (1,), generator=gen))
        b = int(torch.randint(min_exp, max_exp + 1, (1,), generator=gen))
        res = (2 ** min(a, cap_y), 2 ** min(b, cap_x))
        field = perlin_2d(shape, res, gen)
        angle = (torch.rand(1, generator=gen) * 2 - 1) * rotation_deg
        field = rotate(field[None, None], angle)[0, 0]
        mask = (field > threshold).float()
        if mask.sum() >= min_area:
            return mask
    assert field is not None
    k = min(max(min_area, 1), h * w)
    kth = field.flatten().topk(k).values[-1]
    return (field >= kth).float()
