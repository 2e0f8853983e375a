"""Defects: where they go (sampling, from a numpy Generator) and how they look (painting).

Sampling and painting are split so that every camera of a line paints the *same* physical defect
on an item: :func:`sample_defect` draws a :class:`DefectParams` once per item, :func:`paint` is a
pure function of it. Painting works on the visibility layer ``v`` (``(S, S)`` or ``(S, S, C)``,
part coordinates, see :mod:`ingest.simulator.template`) in place, on a small patch around the
defect; shapes are drawn anti-aliased with sub-pixel precision (``cv2`` ``shift`` = 4 bits).

The ground-truth mask is *not* drawn here: the renderer derives it from the pixels that changed
(see :mod:`ingest.simulator.render`), so it is exact by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ingest.simulator.config import COSMETIC_KINDS
from ingest.simulator.errors import SimulatorError
from ingest.simulator.template import StripTemplate

_SHIFT = 4
_F = float(1 << _SHIFT)


@dataclass(frozen=True)
class DefectParams:
    """One physical defect in part coordinates (pixels). ``kind`` is what is painted."""

    kind: str  # particle | spot | scratch | crack | bubble | short_fill | dent | missing
    vial: int
    y: float
    x: float
    size: float  # radius (blobs, bubbles), length (scratch, crack), depth (dent, short fill)
    opacity: float
    angle: float  # radians
    seed: int  # shape details (polygon radii, crack walk)


def sample_defect(
    rng: np.random.Generator,
    tpl: StripTemplate,
    defect_type: str,
    levels: np.ndarray,
    inside_roi: bool,
    cosmetic_kind: str | None = None,
) -> DefectParams:
    """Draw a defect of ``defect_type`` (one of ``DEFECT_TYPES``, or a cosmetic kind).

    ``levels`` is the ``(S,)`` meniscus row of the item (:meth:`StripTemplate.level_row`).
    ``inside_roi`` places it in the meniscus band; otherwise on plastic or liquid well away from
    the ROI (``cosmetic_kind`` or a random one of ``COSMETIC_KINDS``).
    """
    u = tpl.unit
    seed = int(rng.integers(0, 2**31 - 1))
    angle = float(rng.uniform(0, np.pi))
    if not inside_roi:

        def cands_for(k: str) -> np.ndarray:
            return tpl.cand_liquid_out if k in ("particle", "bubble") else tpl.cand_plastic_out

        kinds = [k for k in COSMETIC_KINDS if len(cands_for(k))] or list(COSMETIC_KINDS)
        kind = cosmetic_kind or str(kinds[int(rng.integers(len(kinds)))])
        cands = cands_for(kind)
        if len(cands) == 0:
            raise SimulatorError(
                f"recipe {tpl.recipe.name!r} leaves no room outside its ROI for a cosmetic {kind}"
            )
        y, x = (float(c) for c in cands[int(rng.integers(len(cands)))])
        vial = int(tpl.col_vial[int(x)])
        return DefectParams(kind, vial, y, x, _size(rng, kind, u), _opacity(rng, kind), angle, seed)

    kind = {"deformed": "dent"}.get(defect_type, defect_type)
    if kind == "dent" and rng.random() < 0.25:
        kind = "missing"
    vial = int(rng.integers(len(tpl.centres)))
    cx = float(tpl.centres[vial])
    b0, b1 = tpl.band
    size = _size(rng, kind, u)
    if kind in ("particle", "bubble"):
        x = cx + float(rng.uniform(-0.62, 0.62)) * tpl.body_inner
        lev = float(levels[int(round(x))])
        lo = lev + size + 1.2 * u + 0.5
        if kind == "bubble":
            y = lo + float(rng.uniform(0, 2.0 * u))
        else:
            y = float(rng.uniform(lo, max(lo, b1 - size - 1.5)))
    elif kind in ("short_fill", "missing"):
        x, y = cx, tpl.fill_px
    else:  # spot, scratch, crack, dent: anywhere on the vial inside the band
        reach = 0.9 if kind == "spot" else 0.7
        x = cx + float(rng.uniform(-reach, reach)) * tpl.body_outer
        y = float(rng.uniform(b0 + 2, b1 - 2))
        if kind == "dent":
            x = cx
            angle = 1.0 if rng.random() < 0.5 else -1.0  # which wall is pushed in
    return DefectParams(kind, vial, y, x, size, _opacity(rng, kind), angle, seed)


def _size(rng: np.random.Generator, kind: str, u: float) -> float:
    lo, hi, floor = {
        "particle": (0.8, 2.2, 1.0),
        "spot": (1.2, 3.0, 1.1),
        "scratch": (7.0, 16.0, 5.0),
        "crack": (9.0, 20.0, 6.0),
        "bubble": (1.6, 4.0, 1.5),
        "short_fill": (14.0, 30.0, 5.0),
        "dent": (2.5, 5.5, 2.0),
        "missing": (0.0, 0.0, 0.0),
    }[kind]
    return max(floor, float(rng.uniform(lo, hi)) * u)


def _opacity(rng: np.random.Generator, kind: str) -> float:
    lo, hi = {
        "particle": (0.8, 0.95),
        "spot": (0.45, 0.8),
        "scratch": (0.35, 0.6),
        "crack": (0.55, 0.8),
        "bubble": (0.5, 0.75),
        "short_fill": (1.0, 1.0),
        "dent": (0.15, 0.3),
        "missing": (1, 1),
    }[kind]
    return float(rng.uniform(lo, hi))


def fills_for(params: DefectParams | None, fills: np.ndarray) -> np.ndarray:
    """Per-vial fill rows of the item once ``params`` is applied (a short fill lowers one)."""
    if params is None or params.kind != "short_fill":
        return fills
    out = fills.copy()
    out[params.vial] = out[params.vial] + params.size
    return out


def paint(v: np.ndarray, tpl: StripTemplate, p: DefectParams) -> None:
    """Paint defect ``p`` into visibility layer ``v`` (part coordinates), in place."""
    if p.kind == "short_fill":
        return  # a fill level, applied when the liquid is composed (see fills_for)
    rng = np.random.default_rng(p.seed)
    u = tpl.unit
    if p.kind == "missing":
        cover = tpl.vial_cover[p.vial]
        _blend(v, np.s_[:, :], cover, 1.0)
        return
    if p.kind == "dent":
        _dent(v, tpl, p)
        return
    reach = p.size + 3 if p.kind in ("particle", "spot", "bubble") else p.size / 2 + 4
    if p.kind == "bubble":
        reach = 3 * p.size + 3
    sl, oy, ox, h, w = _window(v, p.y, p.x, reach)
    cy, cx = p.y - oy, p.x - ox
    if p.kind in ("particle", "spot"):
        cov = _blob(h, w, cy, cx, p.size, p.angle, rng)
        if p.kind == "spot":
            cov = cv2.GaussianBlur(cov, (0, 0), 0.45 * max(u, 1.0))
        _darken(v, sl, cov * p.opacity, brown=p.kind == "spot")
    elif p.kind == "bubble":
        _bubble(v, sl, h, w, cy, cx, p.size, p.opacity, u)
        if rng.random() < 0.5:
            r2 = p.size * rng.uniform(0.45, 0.7)
            side = 1 if rng.random() < 0.5 else -1
            _bubble(
                v,
                sl,
                h,
                w,
                cy + rng.uniform(-0.5, 0.8) * p.size,
                cx + side * (p.size + r2 + 0.6),
                r2,
                p.opacity,
                u,
            )
    else:  # scratch or crack
        pts = (
            _scratch(cy, cx, p.size, p.angle, rng)
            if p.kind == "scratch"
            else _crack(cy, cx, p.size, p.angle, rng)
        )
        thick = 1 if p.kind == "scratch" or u < 1.5 else 2
        dark = np.zeros((h, w), np.uint8)
        glint = np.zeros((h, w), np.uint8)
        normal = np.array([-np.sin(p.angle), np.cos(p.angle)]) * 0.9 * max(u, 1.0)
        for line in pts:
            cv2.polylines(
                dark, [np.round(line * _F).astype(np.int32)], False, 255, thick, cv2.LINE_AA, _SHIFT
            )
            cv2.polylines(
                glint,
                [np.round((line + normal) * _F).astype(np.int32)],
                False,
                255,
                1,
                cv2.LINE_AA,
                _SHIFT,
            )
        cov_d = dark.astype(np.float32) / 255
        cov_g = glint.astype(np.float32) / 255 * (1 - cov_d)
        _darken(v, sl, cov_d * p.opacity)
        _brighten(v, sl, cov_g * (0.18 if p.kind == "crack" else 0.12))


def _window(v: np.ndarray, y: float, x: float, reach: float):
    s = v.shape[0]
    y0, x0 = max(int(y - reach), 0), max(int(x - reach), 0)
    y1, x1 = min(int(y + reach) + 2, s), min(int(x + reach) + 2, v.shape[1])
    return np.s_[y0:y1, x0:x1], y0, x0, y1 - y0, x1 - x0


def _blob(
    h: int, w: int, cy: float, cx: float, r: float, angle: float, rng: np.random.Generator
) -> np.ndarray:
    k = int(rng.integers(7, 12))
    t = np.sort(rng.uniform(0, 2 * np.pi, k))
    rad = r * rng.uniform(0.65, 1.25, k)
    aspect = rng.uniform(0.6, 1.0)
    px, py = rad * np.cos(t), rad * np.sin(t) * aspect
    ca, sa = np.cos(angle), np.sin(angle)
    pts = np.stack([cx + ca * px - sa * py, cy + sa * px + ca * py], axis=1)
    canvas = np.zeros((h, w), np.uint8)
    cv2.fillPoly(canvas, [np.round(pts * _F).astype(np.int32)], 255, cv2.LINE_AA, _SHIFT)
    if r < 1.6:  # a tiny particle: make sure its core is solid
        cv2.circle(
            canvas,
            (round(cx * _F), round(cy * _F)),
            round(0.8 * r * _F),
            255,
            -1,
            cv2.LINE_AA,
            _SHIFT,
        )
    return canvas.astype(np.float32) / 255


def _scratch(cy, cx, length, angle, rng) -> list[np.ndarray]:
    d = np.array([np.cos(angle), np.sin(angle)])
    nrm = np.array([-d[1], d[0]])
    c = np.array([cx, cy])
    p0, p2 = c - d * length / 2, c + d * length / 2
    p1 = c + nrm * length * rng.uniform(-0.25, 0.25)
    t = np.linspace(0, 1, 16)[:, None]
    curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    return [curve]


def _crack(cy, cx, length, angle, rng) -> list[np.ndarray]:
    n = int(rng.integers(6, 10))
    step = length / n
    heading = angle + rng.normal(0, 0.3, n).cumsum() * 0.6 + rng.normal(0, 0.5, n)
    steps = step * np.stack([np.cos(heading), np.sin(heading)], axis=1)
    walk = np.vstack([[0.0, 0.0], steps.cumsum(axis=0)])
    walk += np.array([cx, cy]) - walk.mean(axis=0)
    lines = [walk]
    if rng.random() < 0.7:
        j = int(rng.integers(2, n - 1))
        hb = heading[j] + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
        m = int(rng.integers(2, 4))
        bh = hb + rng.normal(0, 0.4, m)
        bsteps = 0.8 * step * np.stack([np.cos(bh), np.sin(bh)], axis=1)
        lines.append(walk[j] + np.vstack([[0.0, 0.0], bsteps.cumsum(axis=0)]))
    return lines


def _bubble(v, sl, h, w, cy, cx, r, opacity, u) -> None:
    ring = np.zeros((h, w), np.uint8)
    thick = max(1, round(0.45 * r))
    cv2.circle(
        ring, (round(cx * _F), round(cy * _F)), round(r * _F), 255, thick, cv2.LINE_AA, _SHIFT
    )
    core = np.zeros((h, w), np.uint8)
    cv2.circle(
        core,
        (round((cx - 0.25 * r) * _F), round((cy - 0.25 * r) * _F)),
        round(max(0.3 * r, 0.6) * _F),
        255,
        -1,
        cv2.LINE_AA,
        _SHIFT,
    )
    _darken(v, sl, ring.astype(np.float32) / 255 * opacity)
    _brighten(v, sl, core.astype(np.float32) / 255 * 0.3)


def _darken(v: np.ndarray, sl, a: np.ndarray, brown: bool = False) -> None:
    sub = v[sl]
    if v.ndim == 3:
        tint = np.array([0.92, 1.0, 1.06] if brown else [1.0, 1.0, 1.0], np.float32)
        sub *= 1 - np.clip(a[..., None] * tint, 0, 1)
    else:
        sub *= 1 - a


def _brighten(v: np.ndarray, sl, a: np.ndarray) -> None:
    v[sl] += a[..., None] if v.ndim == 3 else a


def _blend(v: np.ndarray, sl, cover: np.ndarray, value: float) -> None:
    c = cover[..., None] if v.ndim == 3 else cover
    v[sl] = v[sl] * (1 - c) + value * c


def _dent(v: np.ndarray, tpl: StripTemplate, p: DefectParams) -> None:
    """Push one wall of a vial inwards around row ``p.y`` (a Gaussian dent of depth ``p.size``)."""
    s = v.shape[0]
    half = float(tpl.centres[1] - tpl.centres[0]) / 2 if len(tpl.centres) > 1 else s / 10
    x0, x1 = max(int(p.x - half), 0), min(int(p.x + half) + 1, s)
    sigma_y = 3.0 * p.size
    y0, y1 = max(int(p.y - 3 * sigma_y), 0), min(int(p.y + 3 * sigma_y) + 1, s)
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    side = p.angle
    rel = (xs - p.x) / tpl.body_outer
    weight = np.clip(side * rel, 0, 1) * np.clip(
        (half - np.abs(xs - p.x)) / max(half - tpl.body_outer, 1.0), 0, 1
    )
    g = np.exp(-(((ys - p.y) / sigma_y) ** 2))
    shift = side * p.size * g * weight
    map_x = (xs + shift).astype(np.float32)
    map_y = np.broadcast_to(ys, map_x.shape).astype(np.float32)
    patch = np.ascontiguousarray(v[y0:y1, x0:x1])
    warped = cv2.remap(
        patch, map_x - x0, map_y - y0, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    crease = 1 - p.opacity * g * np.clip(side * rel, 0, 1) * (np.abs(rel) < 1.05)
    v[y0:y1, x0:x1] = warped * (crease[..., None] if v.ndim == 3 else crease)
