"""Render one part: compose the liquid, paint the defect, warp, blur, light, add sensor noise.

Per frame the work is a handful of whole-image operations on float32 arrays (one copy, a band of
rows for the meniscus, one ``warpAffine``, one ``GaussianBlur``, two multiply-adds for the light,
noise from a precomputed bank), so a 256×256 grayscale frame costs well under 5 ms on one core.

Randomness is split in two, so that several cameras of one line see the same physical item:

* :class:`ItemSpec` — the part: fill levels and the defect (drawn once per item);
* :class:`ViewSpec` — the camera's view of it: pose jitter, light, focus, noise offsets.

The defect mask is the set of pixels whose noise-free value changed by at least
``MASK_THRESHOLD`` gray levels between the part rendered with and without its defect, with the
same view; it is therefore exact for the image that is returned (noise aside).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import cv2
import numpy as np

from ingest.simulator.config import COSMETIC, DEFECT_TYPES, GOOD, Recipe, get_recipe
from ingest.simulator.defects import DefectParams, fills_for, paint, sample_defect
from ingest.simulator.errors import SimulatorError
from ingest.simulator.template import StripTemplate, build_template

#: A pixel belongs to the defect mask when the defect changes it by at least this many gray levels.
MASK_THRESHOLD = 6.0
_MAX_TRIES = 40


@dataclass(frozen=True)
class ItemSpec:
    """One physical part: ``fills`` (per-vial meniscus row, px) and its defect (or none)."""

    defect_type: str  # "good", one of DEFECT_TYPES, or COSMETIC
    fills: np.ndarray  # (n_vials,) float, the fill levels of this part (short fill applied)
    ref_fills: np.ndarray  # the fill levels it would have without its defect
    defect: DefectParams | None = None
    meniscus: np.ndarray | None = None  # (n_vials,) scale of the meniscus climb (wetting)
    density: float = 1.0  # how milky this part's plastic is (1 = nominal)


@dataclass(frozen=True)
class ViewSpec:
    """One camera's view of a part: pose, light, focus and noise."""

    tx: float
    ty: float
    angle_deg: float
    scale: float
    gain: float
    grad_x: float
    grad_y: float
    blur_sigma: float
    noise_y: int
    noise_x: int


@dataclass(frozen=True)
class RenderedPart:
    """A rendered frame and its ground truth (image coordinates).

    ``image``: uint8 ``(S, S)`` or ``(S, S, 3)`` (RGB); ``roi``: bool ``(S, S)``, the recipe ROI
    moved with the part; ``defect_mask``: bool ``(S, S)`` or ``None`` for a good part;
    ``reject``: the defect touches the ROI. ``meniscus`` (bool, only with ``debug=True``): the
    pixels of the meniscus lines.
    """

    image: np.ndarray
    roi: np.ndarray
    defect_mask: np.ndarray | None
    defect_type: str
    defect_kind: str | None
    reject: bool
    item: ItemSpec = field(repr=False)
    view: ViewSpec = field(repr=False)
    meniscus: np.ndarray | None = field(default=None, repr=False)

    def truth(self) -> dict:
        """The truth dict a camera attaches to a frame (keys per docs/interfaces.md)."""
        return {
            "defect_type": self.defect_type,
            "reject": self.reject,
            "defect_mask": self.defect_mask,
            "roi": self.roi,
            "defect_kind": self.defect_kind,
        }


@dataclass(frozen=True)
class _Optics:
    """A camera's fixed pattern: backlight texture and vignetting, dust, sensor noise bank."""

    light: np.ndarray  # (S, S) relative backlight, ~1
    light_x: np.ndarray  # light * x in [-1, 1]
    light_y: np.ndarray
    color: np.ndarray  # (C,) white balance of the light
    noise: np.ndarray  # (2S, 2S[, C]) standard normal


@functools.lru_cache(maxsize=32)
def _optics(size: int, channels: int, camera_key: int) -> _Optics:
    rng = np.random.default_rng([camera_key, size, channels, 0x0B17])
    s = size
    c = (np.arange(s, dtype=np.float32) + 0.5) / s * 2 - 1
    yy, xx = np.meshgrid(c, c, indexing="ij")
    coarse = rng.normal(0, 0.025, (4, 4)).astype(np.float32)
    smooth = cv2.resize(coarse, (s, s), interpolation=cv2.INTER_CUBIC)
    vignette = 1 - 0.10 * (xx**2 + yy**2)
    try:
        from skimage import data

        diffuser = cv2.resize(data.brick().astype(np.float32), (s, s), interpolation=cv2.INTER_AREA)
        diffuser = (diffuser - diffuser.mean()) / (diffuser.std() + 1e-6)
    except (ImportError, OSError, ValueError):
        diffuser = np.zeros((s, s), np.float32)
    light = vignette * (1 + smooth) * (1 + 0.006 * diffuser)
    dust = np.zeros((s, s), np.float32)
    for _ in range(int(rng.integers(2, 6))):
        cy, cx = rng.uniform(0, s, 2)
        cv2.circle(
            dust,
            (int(cx), int(cy)),
            max(1, int(rng.uniform(1, 3) * s / 256)),
            float(rng.uniform(0.04, 0.1)),
            -1,
            cv2.LINE_AA,
        )
    dust = cv2.GaussianBlur(dust, (0, 0), 1.2 * max(s / 256, 0.5))
    light = (light * (1 - dust)).astype(np.float32)
    color = (
        np.array([1.0], np.float32)
        if channels == 1
        else np.array([1.0, 0.985, 0.95], np.float32)
        * rng.uniform(0.98, 1.02, 3).astype(np.float32)
    )
    shape = (2 * s, 2 * s) if channels == 1 else (2 * s, 2 * s, channels)
    noise = rng.standard_normal(shape, dtype=np.float32)
    return _Optics(
        light, (light * xx).astype(np.float32), (light * yy).astype(np.float32), color, noise
    )


class Renderer:
    """Renders parts of one recipe at one size for one camera (fixed pattern ``camera_key``)."""

    def __init__(
        self,
        recipe: str | Recipe = "vials",
        size: int = 256,
        channels: int = 1,
        camera_key: int = 0,
    ) -> None:
        self.recipe = get_recipe(recipe)
        self.tpl: StripTemplate = build_template(self.recipe, size, channels)
        self.optics = _optics(size, channels, camera_key)
        self.size, self.channels = size, channels
        u = max(size / 256, 0.5)
        sc = self.recipe.scene
        self._sigma_range = (sc.blur_sigma[0] * u, sc.blur_sigma[1] * u)
        self._roi_u8 = self.tpl.roi.astype(np.uint8)
        self._roi_core = cv2.erode(self._roi_u8, np.ones((5, 5), np.uint8)) > 0

    # ------------------------------------------------------------------ sampling
    def sample_item(
        self, rng: np.random.Generator, defect_type: str = GOOD, cosmetic_kind: str | None = None
    ) -> ItemSpec:
        """Draw a part with ``defect_type``; the defect is re-drawn until it is visible and sits
        inside (defect types) or clear of (``COSMETIC``) the ROI, in part coordinates."""
        if defect_type not in (GOOD, COSMETIC, *DEFECT_TYPES):
            raise SimulatorError(
                f"unknown defect type {defect_type!r}; known: good, {COSMETIC}, "
                + ", ".join(DEFECT_TYPES)
            )
        tpl = self.tpl
        n = len(tpl.centres)
        fills = (
            tpl.fill_px
            + np.clip(rng.normal(0, tpl.tol_px / 2.5, n), -0.95 * tpl.tol_px, 0.95 * tpl.tol_px)
        ).astype(np.float32)
        men = rng.uniform(0.75, 1.25, n).astype(np.float32)
        density = float(rng.uniform(0.93, 1.07))
        if defect_type == GOOD:
            return ItemSpec(GOOD, fills, fills, None, men, density)
        inside = defect_type != COSMETIC
        v_ref = self.compose(fills, men, density)
        for _ in range(_MAX_TRIES):
            params = sample_defect(
                rng, tpl, defect_type, tpl.level_row(fills, men), inside, cosmetic_kind
            )
            if params.kind == "short_fill":
                params = _deepen_short_fill(params, tpl)
            item = ItemSpec(defect_type, fills_for(params, fills), fills, params, men, density)
            if self._acceptable(item, v_ref):
                return item
        raise SimulatorError(
            f"could not place a {defect_type} defect in {_MAX_TRIES} tries "
            f"(recipe {self.recipe.name!r}, size {self.size})"
        )

    def sample_view(self, rng: np.random.Generator) -> ViewSpec:
        """Draw one camera view (pose, light, focus, noise offsets)."""
        sc, s = self.recipe.scene, self.size
        lo, hi = sc.light
        return ViewSpec(
            tx=float(rng.uniform(-sc.shift, sc.shift) * s),
            ty=float(rng.uniform(-sc.shift, sc.shift) * s),
            angle_deg=float(rng.uniform(-sc.rotation_deg, sc.rotation_deg)),
            scale=float(1 + rng.uniform(-sc.scale, sc.scale)),
            gain=float(rng.uniform(lo, hi)),
            grad_x=float(rng.uniform(-sc.light_gradient, sc.light_gradient) / 2),
            grad_y=float(rng.uniform(-sc.light_gradient, sc.light_gradient) / 2),
            blur_sigma=float(rng.uniform(*self._sigma_range)),
            noise_y=int(rng.integers(0, s)),
            noise_x=int(rng.integers(0, s)),
        )

    def _acceptable(self, item: ItemSpec, v_ref: np.ndarray) -> bool:
        v = self.compose(item.fills, item.meniscus, item.density)
        paint(v, self.tpl, item.defect)
        diff = _absdiff(v, v_ref)
        sigma = self._sigma_range[1]
        peak = cv2.GaussianBlur(diff, (0, 0), sigma)
        if peak.max() * self.recipe.scene.light[0] * 0.8 < 3 * MASK_THRESHOLD:
            return False  # too faint to show after the camera blur
        touched = diff > 0.01
        if item.defect_type == COSMETIC:
            return not (touched & self.tpl.roi_fixed).any()
        return bool((diff > 0.05)[self._roi_core].any())

    # ------------------------------------------------------------------ rendering
    def compose(
        self,
        fills: np.ndarray,
        men: np.ndarray | None = None,
        density: float = 1.0,
        meniscus: list | None = None,
    ) -> np.ndarray:
        """Visibility layer (part coordinates) with liquid up to ``fills`` (per vial, px),
        meniscus climb scaled per vial by ``men`` and plastic opacity scaled by ``density``."""
        tpl = self.tpl
        lev = tpl.level_row(fills, men)
        w = 0.0055 * self.size + 0.3  # half thickness of the dark meniscus line
        live = lev[tpl.col_interior]
        r0 = max(int(np.floor(live.min())) - int(3 * w) - 2, 0)
        r1 = min(int(np.ceil(live.max() + tpl.men_px)) + int(4 * w) + 3, self.size)
        v = tpl.v_liq.copy()
        v[:r0] = tpl.v_air[:r0]
        d = np.arange(r0, r1, dtype=np.float32)[:, None] - lev[None, :]
        frac = np.clip(d + 0.5, 0, 1)
        air, liq = tpl.v_air[r0:r1], tpl.v_liq[r0:r1]
        ax = np.abs(tpl.col_dxr)
        inner = tpl.col_interior.astype(np.float32)
        dark = (0.38 + 0.45 * ax**2) * inner * np.exp(-(((d - 0.5 * w) / w) ** 2))
        glow = 0.14 * inner * (1 - ax**2) * np.exp(-(((d - 2.6 * w) / (0.9 * w)) ** 2))
        if v.ndim == 3:
            frac, dark, glow = frac[..., None], dark[..., None], glow[..., None]
        v[r0:r1] = (air + (liq - air) * frac) * (1 - dark) + glow
        if meniscus is not None:
            meniscus.append((r0, (np.abs(d) <= 1.0) & tpl.col_interior[None, :]))
        if density != 1.0:  # V' = 1 - (1 - V) * density
            v -= 1.0
            v *= density
            v += 1.0
        return v

    def matrix(self, view: ViewSpec) -> np.ndarray:
        c = (self.size - 1) / 2
        m = cv2.getRotationMatrix2D((c, c), view.angle_deg, view.scale)
        m[0, 2] += view.tx
        m[1, 2] += view.ty
        return m

    def _camera(self, v: np.ndarray, view: ViewSpec, m: np.ndarray) -> np.ndarray:
        """Noise-free float32 image: warp the part, blur (focus), multiply by the light."""
        s = self.size
        border = (1.0, 1.0, 1.0, 1.0)
        w = cv2.warpAffine(
            v, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=border
        )
        k = 2 * int(np.ceil(2.5 * view.blur_sigma)) + 1
        w = cv2.GaussianBlur(w, (k, k), view.blur_sigma)
        o = self.optics
        light = o.light * view.gain
        light += o.light_x * (view.gain * view.grad_x)
        light += o.light_y * (view.gain * view.grad_y)
        if self.channels == 1:
            w *= light
        else:
            w *= cv2.merge([light * float(c) for c in o.color])
        return w

    def _sensor(self, img: np.ndarray, view: ViewSpec) -> np.ndarray:
        """Add read and shot noise (from the camera's noise bank) and quantise to uint8."""
        s = self.size
        sc = self.recipe.scene
        noise = self.optics.noise[view.noise_y : view.noise_y + s, view.noise_x : view.noise_x + s]
        sigma = np.sqrt(img * sc.shot_noise + sc.read_noise**2)
        img += sigma * noise
        np.clip(img, 0, 255, out=img)
        img += 0.5
        return img.astype(np.uint8)

    def render(self, item: ItemSpec, view: ViewSpec, debug: bool = False) -> RenderedPart:
        """Render ``item`` as seen through ``view``, with its ground truth."""
        m = self.matrix(view)
        men: list | None = [] if debug else None
        v = self.compose(item.fills, item.meniscus, item.density, men)
        mask = None
        kind = None
        if item.defect is not None:
            kind = item.defect.kind
            v_ref = (
                v
                if item.fills is item.ref_fills
                else self.compose(item.ref_fills, item.meniscus, item.density)
            )
            v_def = v.copy() if v_ref is v else v
            paint(v_def, self.tpl, item.defect)
            clean = self._camera(v_def, view, m)
            ref = self._camera(v_ref, view, m)
            diff = _absdiff(clean, ref)
            mask = diff >= MASK_THRESHOLD
        else:
            clean = self._camera(v, view, m)
        s = self.size
        roi = (
            cv2.warpAffine(
                self._roi_u8,
                m,
                (s, s),
                flags=cv2.INTER_NEAREST,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            )
            > 0
        )
        reject = bool(mask is not None and (mask & roi).any())
        if item.defect_type == COSMETIC and reject:
            raise SimulatorError("internal: a cosmetic defect reached the ROI")
        meniscus = None
        if debug and men:
            r0, band = men[0]
            full = np.zeros((s, s), np.uint8)
            full[r0 : r0 + band.shape[0]] = band
            meniscus = cv2.warpAffine(full, m, (s, s), flags=cv2.INTER_NEAREST) > 0
        image = self._sensor(clean, view)
        return RenderedPart(image, roi, mask, item.defect_type, kind, reject, item, view, meniscus)


def _absdiff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|a - b|``, the largest over channels for colour images."""
    d = cv2.absdiff(a, b)
    if d.ndim == 2:
        return d
    m = np.maximum(d[..., 0], d[..., 1])
    return np.maximum(m, d[..., 2], out=m)


def _deepen_short_fill(p: DefectParams, tpl: StripTemplate) -> DefectParams:
    """A short fill sits clearly below the tolerance (by at least ``size`` beyond the band)."""
    from dataclasses import replace

    return replace(p, size=float(tpl.tol_px + p.size))


@functools.lru_cache(maxsize=32)
def get_renderer(
    recipe: str = "vials", size: int = 256, channels: int = 1, camera_key: int = 0
) -> Renderer:
    """A cached :class:`Renderer` (templates are built once per recipe/size/channels)."""
    return Renderer(recipe, size, channels, camera_key)


def render_part(
    rng: np.random.Generator,
    defect_type: str = GOOD,
    *,
    recipe: str = "vials",
    size: int = 256,
    channels: int = 1,
    camera_key: int = 0,
    cosmetic_kind: str | None = None,
    debug: bool = False,
) -> RenderedPart:
    """Render one part with ``defect_type`` (``"good"``, a defect type, or
    ``"cosmetic_outside_roi"``), drawing the item and then the view from ``rng``."""
    r = get_renderer(recipe, size, channels, camera_key)
    item = r.sample_item(rng, defect_type, cosmetic_kind)
    return r.render(item, r.sample_view(rng), debug=debug)


def roi_mask_for_recipe(recipe: str | Recipe, size: int) -> np.ndarray:
    """The recipe's fixed ROI for a camera, bool ``(S, S)``: the ROI band widened by the largest
    pose jitter, so that it contains the per-part ROI of every frame."""
    return build_template(get_recipe(recipe), size, 1).roi_fixed.copy()
