"""How a frame of any shape maps into the model's square input, and its maps back: one home.

``letterbox`` (``GRDConfig.geometry``; not yet the default, see there): the image is scaled by one factor, the longer
side to the model size S, and centred; the rest of the square is padded by replicating the edge
(a constant border would be a sharp synthetic edge the reconstruction has to learn). The padded
band is never part of the product: :func:`valid` marks it False and every ROI, ground-truth mask
and anomaly map is restricted to the valid part, so the padding can neither score nor hide a
defect. A 320×240 tyre keeps its aspect ratio and a thin crack along a long part keeps its width
relative to the part instead of being squeezed by the aspect ratio.

``squash`` (the default) resizes each side independently to S (what every artefact written before
the geometry setting existed was trained with).

Shrinking uses area interpolation, growing linear; masks and ROIs nearest neighbour, except
ground truth, which uses area coverage so a defect thinner than the scale factor cannot vanish.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

Geometry = Literal["letterbox", "squash"]


@dataclass(frozen=True)
class Fit:
    """Where an (H, W) frame lands in the (S, S) model input: an ``inner_h`` × ``inner_w`` block
    whose top-left corner is (``top``, ``left``)."""

    height: int
    width: int
    size: int
    inner_h: int
    inner_w: int
    top: int
    left: int

    @property
    def identity(self) -> bool:
        return (self.height, self.width) == (self.size, self.size)

    @property
    def scale(self) -> float:
        """Model pixels per frame pixel along the longer side (the letterbox's single factor)."""
        return max(self.inner_h / self.height, self.inner_w / self.width)


def fit(shape: tuple[int, int], size: int, geometry: Geometry) -> Fit:
    """The :class:`Fit` of a frame of ``shape`` (H, W) at model size ``size``."""
    h, w = int(shape[0]), int(shape[1])
    if h < 1 or w < 1:
        raise ValueError(f"empty frame of shape {shape}")
    if geometry == "squash":
        return Fit(h, w, size, size, size, 0, 0)
    if geometry != "letterbox":
        raise ValueError(f"unknown geometry {geometry!r} (letterbox or squash)")
    s = size / max(h, w)
    ih, iw = min(size, max(1, round(h * s))), min(size, max(1, round(w * s)))
    return Fit(h, w, size, ih, iw, (size - ih) // 2, (size - iw) // 2)


def _resize(a: np.ndarray, hw: tuple[int, int], interp: int | None) -> np.ndarray:
    if a.shape[:2] == hw:
        return a
    if interp is None:
        interp = cv2.INTER_AREA if (a.shape[0] > hw[0] or a.shape[1] > hw[1]) else cv2.INTER_LINEAR
    out = cv2.resize(a, (hw[1], hw[0]), interpolation=interp)
    if a.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


def _pad(a: np.ndarray, f: Fit, border: int, value: float = 0) -> np.ndarray:
    bottom, right = f.size - f.inner_h - f.top, f.size - f.inner_w - f.left
    if not (f.top or bottom or f.left or right):
        return a
    out = cv2.copyMakeBorder(a, f.top, bottom, f.left, right, border, value=value)
    if a.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


def image_to_model(image: np.ndarray, f: Fit) -> np.ndarray:
    """Frame (H, W[, C]) → (S, S[, C]) of the same dtype, edge-replicated padding."""
    return _pad(_resize(image, (f.inner_h, f.inner_w), None), f, cv2.BORDER_REPLICATE)


def region_to_model(region: np.ndarray | None, f: Fit) -> np.ndarray:
    """An ROI (H, W), nonzero = inside, or None (the whole frame) → bool (S, S), False in the padding."""
    if region is None:
        return valid(f)
    r = (np.asarray(region) != 0).astype(np.uint8)
    inner = cv2.resize(r, (f.inner_w, f.inner_h), interpolation=cv2.INTER_NEAREST) if r.shape != (
        f.inner_h, f.inner_w) else r
    return _pad(inner, f, cv2.BORDER_CONSTANT, 0) > 0


def truth_to_model(mask: np.ndarray, f: Fit) -> np.ndarray:
    """Ground truth (H, W) → bool (S, S): area coverage, so a thin defect cannot vanish."""
    m = np.asarray(mask).astype(np.float32)
    if m.shape != (f.inner_h, f.inner_w):
        m = cv2.resize(m, (f.inner_w, f.inner_h), interpolation=cv2.INTER_AREA)
    return _pad(m, f, cv2.BORDER_CONSTANT, 0) > 0


def valid(f: Fit) -> np.ndarray:
    """bool (S, S): True where the frame is, False in the letterbox padding."""
    v = np.zeros((f.size, f.size), bool)
    v[f.top:f.top + f.inner_h, f.left:f.left + f.inner_w] = True
    return v


def map_to_frame(m: np.ndarray, f: Fit) -> np.ndarray:
    """A model-size map (S, S) → frame resolution (H, W), linear interpolation, padding cropped."""
    inner = np.ascontiguousarray(m[f.top:f.top + f.inner_h, f.left:f.left + f.inner_w])
    if inner.shape == (f.height, f.width):
        return inner
    return cv2.resize(inner, (f.width, f.height), interpolation=cv2.INTER_LINEAR)
