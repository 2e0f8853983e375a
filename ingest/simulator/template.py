"""The precomputed product: optical layers of one BFS strip, its ROI and placement candidates.

The strip is modelled under a diffuse backlight. A pixel's value is ``light × V`` where ``V`` is the
part's *visibility*: ``exp(-µ·L)`` for a light path ``L`` through the plastic (thick at the walls of
a cylinder, so the silhouettes have dark rims), plus a little milky scatter, plus what the vial
interior does — an air-filled interior is nearly neutral, a liquid-filled one is a cylindrical
lens (bright core, dark sides). Two full layers are kept, ``v_air`` and ``v_liq``; per frame the
renderer picks between them below each vial's meniscus (see :mod:`ingest.simulator.render`).

Built once per (recipe, size, channels) at 2× resolution and area-downsampled (anti-aliasing).
Embossed marks use ``cv2.putText``; the plastic's surface variation is a high-passed copy of
scikit-image's bundled CC0 ``gravel`` photograph.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from ingest.simulator.config import Recipe, get_recipe
from ingest.simulator.errors import SimulatorError

_SS = 2  # supersampling factor of the template
_MIN_SIZE, _MAX_SIZE = 32, 2048


@dataclass(frozen=True)
class StripTemplate:
    """Everything about the product that does not change from part to part, in pixels.

    Arrays are ``(S, S)`` float32 (``(S, S, C)`` for the visibility layers when ``channels == 3``)
    in *part* coordinates: the nominal pose, before the per-frame jitter warp.
    """

    recipe: Recipe
    size: int
    channels: int
    v_air: np.ndarray  # visibility with air inside the vials
    v_liq: np.ndarray  # visibility with liquid inside the vials
    alpha: np.ndarray  # (S, S) plastic coverage in [0, 1]
    vial_cover: np.ndarray  # (n, S, S) coverage of each vial's silhouette (tab to bottom)
    col_vial: np.ndarray  # (S,) int, vial index of each column (nearest centre)
    col_dxr: np.ndarray  # (S,) float, (x - cx) / inner radius of the body
    col_interior: np.ndarray  # (S,) bool, column crosses the liquid of its vial
    centres: np.ndarray  # (n,) float, x of each vial axis
    body_outer: float  # outer half width of the body (px)
    body_inner: float  # inner half width (px)
    fill_px: float  # nominal meniscus bottom (px)
    tol_px: float
    men_px: float  # meniscus climb at the wall (px)
    band: tuple[int, int]  # rows [top, bottom) of the meniscus band
    body_rows: tuple[int, int]  # rows of the straight body [shoulder_bottom, body_bottom)
    roi: np.ndarray  # (S, S) bool, the recipe ROI in part coordinates
    roi_fixed: np.ndarray  # (S, S) bool, ROI widened by the jitter envelope (fixed camera ROI)
    roi_guard: np.ndarray  # (S, S) bool, where an outside-ROI defect must not reach
    jitter_px: tuple[float, float]  # max displacement (x, y) of any part pixel by the jitter
    cand_plastic_out: np.ndarray  # (K, 2) int (y, x): plastic, well away from the ROI
    cand_liquid_out: np.ndarray  # (K, 2) int (y, x): liquid below the ROI, away from it
    unit: float  # pixels per 1/256 of the image side

    def level_row(self, fills: np.ndarray, men: np.ndarray | None = None) -> np.ndarray:
        """``(S,)`` float: the meniscus y of every column for per-vial ``fills`` (huge outside),
        the climb at the wall scaled per vial by ``men`` (default 1)."""
        climb = self.men_px if men is None else self.men_px * men[self.col_vial]
        lev = fills[self.col_vial] - climb * np.abs(self.col_dxr) ** 2.2
        return np.where(self.col_interior, lev, 1e6).astype(np.float32)


def _profile(y: np.ndarray, st, s: float) -> np.ndarray:
    """Outer half width of a vial's round part (neck, shoulder, body, bottom) at rows ``y``."""
    tab1, neck1, sh1 = st.tab_bottom * s, st.neck_bottom * s, st.shoulder_bottom * s
    b1, rnd = st.body_bottom * s, st.bottom_round * s
    nk, bw = st.neck_half_width * s, st.body_half_width * s
    r = np.zeros_like(y)
    neck = (y >= tab1 - 0.01 * s) & (y < neck1)
    r[neck] = nk
    sh = (y >= neck1) & (y < sh1)
    t = (y[sh] - neck1) / (sh1 - neck1)
    r[sh] = nk + (bw - nk) * np.sqrt(np.clip(1.0 - (1.0 - t) ** 2, 0.0, 1.0))  # domed shoulder
    body = (y >= sh1) & (y < b1)
    r[body] = bw * (1.0 - 0.02 * (y[body] - sh1) / (b1 - sh1))
    bot = (y >= b1) & (y < b1 + rnd)
    r[bot] = 0.98 * bw * np.sqrt(np.clip(1.0 - ((y[bot] - b1) / rnd) ** 2, 0.0, 1.0))
    return r


def _emboss_canvas(st, s: float, n: int) -> np.ndarray:
    """Embossed marks (tab numbers, a ring, the lot text) as a float32 (N, N) relief in [0, 1]."""
    canvas = np.zeros((n, n), np.uint8)
    k = n / s  # supersampled pixels per template pixel
    pitch = st.pitch * s
    x_first = s / 2 - (st.n_vials - 1) / 2 * pitch
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i in range(st.n_vials):
        cx = (x_first + i * pitch) * k
        label = str(i + 1)
        scale = 0.0022 * s * k
        thick = max(1, round(0.006 * s * k))
        (tw, th), _ = cv2.getTextSize(label, font, scale, thick)
        cy = (st.tab_top + 0.62 * (st.tab_bottom - st.tab_top)) * s * k
        cv2.putText(
            canvas,
            label,
            (round(cx - tw / 2), round(cy + th / 2)),
            font,
            scale,
            255,
            thick,
            cv2.LINE_AA,
        )
        ring_c = (round(cx), round((st.tab_top + 0.24 * (st.tab_bottom - st.tab_top)) * s * k))
        cv2.circle(
            canvas, ring_c, max(2, round(0.016 * s * k)), 255, max(1, thick // 2), cv2.LINE_AA
        )
    text = st.lot_text
    scale = 0.0016 * s * k
    thick = max(1, round(0.004 * s * k))
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    fy = 0.5 * (st.flange_top + st.flange_bottom) * s * k
    cv2.putText(
        canvas,
        text,
        (round(n / 2 - tw / 2), round(fy + th / 2)),
        font,
        scale,
        255,
        thick,
        cv2.LINE_AA,
    )
    relief = cv2.GaussianBlur(canvas.astype(np.float32) / 255.0, (0, 0), 0.7 * k)
    return relief


def _surface_texture(n: int) -> np.ndarray:
    """Zero-mean, unit-std surface variation from a real photograph (CC0, bundled offline)."""
    try:
        from skimage import data

        photo = data.gravel().astype(np.float32)
    except (ImportError, OSError, ValueError):  # no scikit-image: fall back to smoothed noise
        photo = np.random.default_rng(7).standard_normal((512, 512)).astype(np.float32)
        photo = cv2.GaussianBlur(photo, (0, 0), 3.0)
    photo = cv2.resize(photo, (n, n), interpolation=cv2.INTER_AREA)
    high = photo - cv2.GaussianBlur(photo, (0, 0), n / 64)
    return (high / (high.std() + 1e-6)).astype(np.float32)


def _down(a: np.ndarray, s: int) -> np.ndarray:
    return cv2.resize(a, (s, s), interpolation=cv2.INTER_AREA)


@functools.lru_cache(maxsize=16)
def build_template(recipe: str | Recipe, size: int, channels: int) -> StripTemplate:
    """Build (and cache) the template of ``recipe`` at ``size`` px with ``channels`` (1 or 3)."""
    rec = get_recipe(recipe)
    if not _MIN_SIZE <= size <= _MAX_SIZE:
        raise SimulatorError(f"size {size} out of range [{_MIN_SIZE}, {_MAX_SIZE}]")
    if channels not in (1, 3):
        raise SimulatorError(f"channels must be 1 or 3, got {channels}")
    st, s = rec.strip, float(size)
    n = size * _SS
    coords = (np.arange(n, dtype=np.float32) + 0.5) / _SS - 0.5  # template pixel coordinates
    yy, xx = np.meshgrid(coords, coords, indexing="ij")

    pitch = st.pitch * s
    x_first = s / 2 - (st.n_vials - 1) / 2 * pitch
    centres = x_first + pitch * np.arange(st.n_vials)
    idx = np.clip(np.rint((xx - x_first) / pitch), 0, st.n_vials - 1).astype(np.int32)
    dx = xx - centres[idx].astype(np.float32)
    adx = np.abs(dx)
    wall = st.wall * s
    r_out = _profile(yy, st, s)
    r_in = np.maximum(r_out - wall, 0.0)
    in_cyl = adx < r_out
    chord_in = 2 * np.sqrt(np.clip(r_in**2 - dx**2, 0, None))
    interior = chord_in > 0
    path = np.where(in_cyl, 2 * np.sqrt(np.clip(r_out**2 - dx**2, 0, None)) - chord_in, 0.0)

    # flat sheets: the twist-off tab (rounded top corners), the web between bodies, the flange
    tab_hw, cr = st.tab_half_width * s, 0.45 * st.tab_half_width * s
    ty0, ty1 = st.tab_top * s, st.tab_bottom * s
    corner_dy = np.clip(ty0 + cr - yy, 0, None)
    tab_reach = tab_hw - cr + np.sqrt(np.clip(cr**2 - corner_dy**2, 0, None))
    tab = (yy >= ty0) & (yy < ty1) & (adx < tab_reach) & (corner_dy < cr)
    span0 = centres[0] - st.body_half_width * s
    span1 = centres[-1] + st.body_half_width * s
    web = (
        (yy >= st.web_top * s)
        & (yy < (st.body_bottom + 0.6 * st.bottom_round) * s)
        & (xx >= span0)
        & (xx <= span1)
        & ~in_cyl
    )
    flange = (
        (yy >= st.flange_top * s)
        & (yy < st.flange_bottom * s)
        & (xx >= span0 - 0.012 * s)
        & (xx <= span1 + 0.012 * s)
    )
    sheet = (tab * 1.7 * wall + web * 0.9 * wall + flange * 2.2 * wall).astype(np.float32)
    path = (path + np.where(in_cyl, 0, sheet) + np.where(in_cyl & flange, sheet, 0)).astype(
        np.float32
    )
    solid = (path > 0).astype(np.float32)

    texture = _surface_texture(n)
    relief = _emboss_canvas(st, s, n)
    path = path * (1 + 0.06 * texture) + relief * 1.2 * wall * solid
    mu = 0.125 / wall
    scatter = 0.13 * (1 - np.exp(-path / (3 * wall)))
    rim = np.where(in_cyl, np.clip(adx / np.maximum(r_out, 1e-3), 0, 1) ** 10, 0.0)
    edges = cv2.GaussianBlur(solid, (0, 0), 0.6 * _SS)
    edge = np.abs(cv2.Sobel(edges, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(edges, cv2.CV_32F, 0, 1))
    edge = np.clip(edge / (edge.max() + 1e-6) * 1.6, 0, 1) * ~in_cyl
    shade = (1 - 0.45 * rim) * (1 - 0.45 * edge)
    # embossing relief: light from the upper left brightens one flank, darkens the other
    flank = np.roll(np.roll(relief, _SS, axis=0), _SS, axis=1) - relief
    seam = np.where(in_cyl, np.exp(-(((yy - st.shoulder_bottom * s) / (0.6)) ** 2)), 0.0)
    mids = (centres[:-1] + centres[1:]) / 2
    flash = np.zeros_like(xx)
    for m in mids:
        flash += np.exp(-(((xx - m) / 0.7) ** 2))
    flash *= web
    rn = np.where(interior, dx / np.maximum(r_in, 1e-3), 0.0)
    arn = np.abs(rn)
    ro = np.where(in_cyl, dx / np.maximum(r_out, 1e-3), 0.0)
    gloss = in_cyl * (
        0.09 * np.exp(-(((ro + 0.45) / 0.12) ** 2)) + 0.04 * np.exp(-(((ro - 0.58) / 0.07) ** 2))
    )
    f_air = np.where(interior, 1 - 0.22 * arn**6, 1.0)
    lens = (0.56 + 0.55 * np.exp(-((rn / 0.5) ** 2))) * (1 - 0.66 * arn**4)
    f_liq = np.where(interior, np.maximum(lens, 0.08), 1.0)
    extra = gloss + 0.22 * flank + 0.05 * flash - 0.07 * seam

    def layer(mu_c: float, f: np.ndarray) -> np.ndarray:
        v = np.exp(-mu_c * path) * shade * f + scatter + extra
        return _down(np.clip(v, 0.0, 1.3).astype(np.float32), size)

    if channels == 1:
        v_air, v_liq = layer(mu, f_air), layer(mu, f_liq)
    else:  # RGB: bluish-milky plastic, pale yellow liquid
        tint = (1.0, 0.965, 0.86)
        v_air = np.stack([layer(mu * m, f_air) for m in (1.06, 1.0, 0.93)], axis=-1)
        v_liq = np.stack(
            [
                layer(mu * m, np.where(interior, f_liq * t, 1.0))
                for m, t in zip((1.06, 1.0, 0.93), tint, strict=True)
            ],
            axis=-1,
        )

    alpha = np.clip(_down(solid, size), 0, 1)
    sil = in_cyl | (tab & (idx >= 0))
    vial_cover = np.stack(
        [_down((sil & (idx == i)).astype(np.float32), size) for i in range(st.n_vials)]
    )

    # per-column geometry at the meniscus (template resolution)
    cols = np.arange(size, dtype=np.float32)
    col_vial = np.clip(np.rint((cols - x_first) / pitch), 0, st.n_vials - 1).astype(np.int32)
    body_outer = (
        st.body_half_width
        * s
        * (1 - 0.02 * (st.fill_level - st.shoulder_bottom) / (st.body_bottom - st.shoulder_bottom))
    )
    body_inner = body_outer - wall
    col_dx = cols - centres[col_vial]
    col_dxr = np.clip(col_dx / body_inner, -1.0, 1.0).astype(np.float32)
    row = int(round(st.fill_level * s))
    differs = np.abs(v_liq[row] - v_air[row])
    col_interior = (differs.max(axis=-1) if differs.ndim == 2 else differs) > 1e-6

    fill_px, tol_px, men_px = st.fill_level * s, st.fill_tolerance * s, st.meniscus_height * s
    margin = rec.roi_margin * s
    band = (
        int(np.floor(fill_px - tol_px - 1.25 * men_px - margin)),  # 1.25: max climb
        int(np.ceil(fill_px + tol_px + margin)) + 1,
    )
    body_rows = (int(np.ceil(st.shoulder_bottom * s)), int(np.floor(st.body_bottom * s)))
    rows = np.arange(size)[:, None]
    in_band_rows = (rows >= band[0]) & (rows < band[1])
    silhouette = vial_cover.sum(0) > 0.5
    if rec.roi == "meniscus":
        roi = in_band_rows & (np.abs(col_dx) <= body_outer)[None, :]
    elif rec.roi == "body":
        roi = (
            silhouette & (rows >= body_rows[0]) & (rows < body_rows[1] + 0.6 * st.bottom_round * s)
        )
    else:
        roi = cv2.dilate((alpha > 0.5).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0

    sc = rec.scene
    rot = np.deg2rad(sc.rotation_deg)
    jx = sc.shift * s + sc.scale * s / 2 + np.sin(rot) * s / 2 * 0.1 + 1
    jy = sc.shift * s + sc.scale * s / 2 + np.sin(rot) * s / 2 + 1
    roi_fixed = _dilate(roi, jx, jy)
    blur_px = 3 * sc.blur_sigma[1] * max(size / 256, 0.5) + 1
    guard = _dilate(
        roi, jx + blur_px + rec.cosmetic_margin * s, jy + blur_px + rec.cosmetic_margin * s
    )

    border = int(0.04 * s)
    inside = np.zeros((size, size), bool)
    inside[border:-border, border:-border] = True
    plastic = (alpha > 0.9) & inside & ~guard
    cand_plastic_out = np.argwhere(plastic).astype(np.int32)
    low = np.zeros((size, size), bool)
    low[band[1] : int(st.body_bottom * s) - int(0.02 * s)] = True
    liquid_out = low & (np.abs(col_dxr) < 0.7)[None, :] & ~guard
    cand_liquid_out = np.argwhere(liquid_out).astype(np.int32)

    for a in (v_air, v_liq, alpha, vial_cover, roi):  # shared by every renderer: keep them intact
        a.setflags(write=False)
    return StripTemplate(
        recipe=rec,
        size=size,
        channels=channels,
        v_air=v_air,
        v_liq=v_liq,
        alpha=alpha,
        vial_cover=vial_cover,
        col_vial=col_vial,
        col_dxr=col_dxr,
        col_interior=col_interior,
        centres=centres.astype(np.float32),
        body_outer=float(body_outer),
        body_inner=float(body_inner),
        fill_px=fill_px,
        tol_px=tol_px,
        men_px=men_px,
        band=band,
        body_rows=body_rows,
        roi=roi,
        roi_fixed=roi_fixed,
        roi_guard=guard,
        jitter_px=(float(jx), float(jy)),
        cand_plastic_out=cand_plastic_out,
        cand_liquid_out=cand_liquid_out,
        unit=size / 256.0,
    )


def _dilate(mask: np.ndarray, rx: float, ry: float) -> np.ndarray:
    kx, ky = 2 * int(np.ceil(rx)) + 1, 2 * int(np.ceil(ry)) + 1
    return cv2.dilate(mask.astype(np.uint8), np.ones((ky, kx), np.uint8)) > 0
