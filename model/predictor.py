"""Serving API: a batch of uint8 images (+ optional ROIs) → scores, decisions, masks, heat maps.

Contract: ``docs/interfaces.md`` (model/). The Predictor keeps only the inference path (E1,
decoder, segmenter) with BatchNorm folded into the convs, in channels_last layout, and picks a
numeric mode per device: autocast fp16/bf16 on CUDA; bf16 weights on a CPU with native bf16
(AVX512-BF16 / AMX), fp32 on other CPUs (emulated bf16 is ~10× slower there).

Backend (``inference.backend``, or the ``backend`` argument): ``torch`` (default) or
``onnxruntime`` — the fp32 ONNX export of the same path (:mod:`model.export`) on the CPU, with
the fp32 thresholds; pre- and post-processing (sigmoid, ROI, η) are the same code for both.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch

from model import geometry as geo
from model.artefact import ModelMeta, load
from model.blocks import fuse_norms
from model.errors import ModelError
from model.geometry import Geometry
from model.networks import GRDNet, InferenceNet, image_score


class PredictionBatch(NamedTuple):
    """Per-batch results; masks and heat maps are at each input's own resolution."""

    scores: np.ndarray  # float32 (B,)  η = max(avg_pool(M̂ ⊙ R))
    decisions: np.ndarray  # bool (B,)  η >= threshold
    masks: list[np.ndarray]  # bool (H_i, W_i), ROI-filtered, M̂ >= τ_px
    heatmaps: list[np.ndarray]  # float32 (H_i, W_i) in [0, 1], ROI-filtered


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` → CUDA if available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU executes bf16 matmuls natively (x86 ``avx512_bf16`` or ``amx_bf16``)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(
    meta_cfg_inference, device: torch.device, precision: str | None,
    calibration: dict | None = None,
) -> str:
    """Numeric mode name: ``fp32``, ``bf16`` or ``fp16``.

    ``auto`` serves a low precision only where τ was calibrated and checked in it
    (``calibration``, stored in the artefact by training): on CUDA the precision calibration chose,
    on a CPU bf16 with native bf16 hardware and ``bf16_ok``; otherwise fp32 (emulated bf16 is ~10×
    slower, and a τ fitted in fp32 does not hold in fp16).
    """
    cal = calibration or {}
    if device.type == "cuda":
        want = precision or meta_cfg_inference.gpu_precision
        if want == "auto":
            chosen = cal.get("precision", "fp32")
            if chosen == "bf16" and not torch.cuda.is_bf16_supported():
                chosen = "fp32"
            return chosen if chosen in _DTYPES else "fp32"
        return want
    want = precision or meta_cfg_inference.cpu_precision
    if want == "auto":
        return "bf16" if cpu_has_native_bf16() and bool(cal.get("bf16_ok", False)) else "fp32"
    if want == "fp16":
        raise ModelError("fp16 is not supported on CPU; use fp32 or bf16")
    return want


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _ort_precision(meta_cfg_inference, device: torch.device, precision: str | None) -> str:
    """The onnxruntime backend serves the fp32 export on the CPU; anything else is an error."""
    if device.type != "cpu":
        raise ModelError(f"inference.backend 'onnxruntime' runs on the CPU only, not {device}; "
                         "use inference.backend: torch on a GPU (autocast, CUDA graphs)")
    want = precision or meta_cfg_inference.cpu_precision
    if want not in ("auto", "fp32"):
        raise ModelError(f"inference.backend 'onnxruntime' runs the fp32 export; precision "
                         f"{want!r} needs inference.backend: torch")
    return "fp32"


def to_model_input(image: np.ndarray, size: int, channels: int, geometry: Geometry = "squash") -> np.ndarray:
    """uint8 (H, W) | (H, W, 1) | (H, W, 3) → uint8 (size, size, channels) (RGB assumed), placed
    by ``geometry`` (:mod:`model.geometry`; the Predictor passes its model's ``cfg.geometry``)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ModelError(f"images must be uint8 numpy arrays, got {getattr(image, 'dtype', type(image))}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        gray = True
    elif image.ndim == 3 and image.shape[2] == 3:
        gray = False
    else:
        raise ModelError(f"image shape {image.shape} is not (H, W), (H, W, 1) or (H, W, 3)")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ModelError(f"empty image of shape {image.shape}")
    if channels == 1 and not gray:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    image = geo.image_to_model(np.ascontiguousarray(image), geo.fit(image.shape[:2], size, geometry))
    if image.ndim == 2:
        image = image[:, :, None]
    if channels == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


def roi_to_model(roi: np.ndarray | None, shape: tuple[int, int], size: int,
                 geometry: Geometry = "squash") -> np.ndarray:
    """ROI (H, W) bool/uint8 of a frame of ``shape``, or None (the whole frame) → float32
    (size, size), nearest neighbour; 0 in letterbox padding."""
    r = None
    if roi is not None:
        r = np.asarray(roi)
        if r.ndim == 3 and r.shape[2] == 1:
            r = r[:, :, 0]
        if r.shape != shape:
            raise ModelError(f"ROI shape {r.shape} does not match image shape {shape}")
    return geo.region_to_model(r, geo.fit(shape, size, geometry)).astype(np.float32)


class Predictor:
    """Batch inference for serving (see module doc)."""

    def __init__(
        self,
        net: GRDNet,
        meta: ModelMeta,
        device: str | torch.device | None = None,
        precision: str | None = None,
        max_batch: int = 64,
        backend: str | None = None,
        onnx_model: bytes | str | Path | None = None,
    ) -> None:
        """``backend`` None = ``inference.backend`` of the config; ``onnx_model`` an export of
        ``net`` (``grdline export``) for the onnxruntime backend, None = export in memory now."""
        self.meta = meta
        cfg = meta.config
        self.device = pick_device(device)
        self.backend: str = backend or cfg.inference.backend
        self._ort = None
        if self.backend == "onnxruntime":
            self.precision = _ort_precision(cfg.inference, self.device, precision)
            from model.export import ort_forward

            self._ort = ort_forward(net, meta, onnx_model, torch.get_num_threads())
        elif self.backend == "torch":
            self.precision = resolve_precision(cfg.inference, self.device, precision,
                                               meta.calibration)
        else:
            raise ModelError(f"inference.backend {self.backend!r} is not one of "
                             "'torch', 'onnxruntime'")
        inet = InferenceNet(copy.deepcopy(net)).eval()
        if cfg.inference.fuse_norm:
            fuse_norms(inet)
        inet = inet.to(self.device)
        self._autocast = self.device.type == "cuda" and self.precision != "fp32"
        if not self._autocast:
            inet = inet.to(_DTYPES[self.precision])
        self._memory_format = (
            torch.channels_last if cfg.inference.channels_last else torch.contiguous_format
        )
        self.net = None if self._ort is not None else inet.to(memory_format=self._memory_format)
        self.max_batch = max_batch
        self.version: str = meta.version
        self.image_size: int = cfg.image_size
        self.geometry: Geometry = cfg.geometry
        self.channels: int = cfg.channels
        # thresholds calibrated in this precision where training recorded them (model.pipeline)
        th = meta.calibration.get("thresholds_by_precision", {}).get(self.precision)
        th = th or meta.thresholds.model_dump()
        self.threshold: float = float(th["image"])
        self.pixel_threshold: float = float(th["pixel"])

    @classmethod
    def load(
        cls, model_dir: str | Path, device: str | torch.device | None = None,
        precision: str | None = None, max_batch: int = 64, backend: str | None = None,
    ) -> Predictor:
        """Load an artefact directory (never unpickles); ``device=None`` = CUDA if available.

        ``backend`` None = the artefact's ``inference.backend``; ``onnxruntime`` uses
        ``<dir>/model.onnx`` when it was exported from these weights, else exports in memory.
        """
        net, meta = load(model_dir)
        onnx_model = None
        if (backend or meta.config.inference.backend) == "onnxruntime":
            from model.export import find_export

            onnx_model = find_export(model_dir, meta)
        return cls(net, meta, device=device, precision=precision, max_batch=max_batch,
                   backend=backend, onnx_model=onnx_model)

    def set_thresholds(self, image: float | None = None, pixel: float | None = None) -> None:
        """Change τ and/or τ_px live (serving reconfigure)."""
        if image is not None:
            self.threshold = float(image)
        if pixel is not None:
            self.pixel_threshold = float(pixel)

    @torch.inference_mode()
    def _forward(self, batch: np.ndarray, rois: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, S, S, C), float32 (B, S, S) → heat (B, S, S) float32, η (B,) on CPU."""
        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2)  # NHWC storage = channels_last (B, C, S, S)
        if self._memory_format is torch.contiguous_format:
            x = x.contiguous()
        dtype = torch.float32 if self._autocast else _DTYPES[self.precision]
        x = x.to(dtype) / 255.0
        ctx = (torch.autocast("cuda", dtype=_DTYPES[self.precision]) if self._autocast
               else contextlib.nullcontext())
        if self._ort is not None:
            logits = self._ort(x)
        else:
            with ctx:
                _, logits = self.net(x)
        heat = torch.sigmoid(logits.float())
        r = torch.from_numpy(rois).to(self.device)[:, None]
        heat = heat * r
        score = image_score(heat, self.meta.config.pool_kernel)
        return heat[:, 0].cpu(), score.cpu()

    def predict(
        self, images: Sequence[np.ndarray], rois: Sequence[np.ndarray | None] | None = None
    ) -> PredictionBatch:
        """Score a batch; see :class:`PredictionBatch`. ``rois`` nonzero = region of interest."""
        n = len(images)
        if rois is not None and len(rois) != n:
            raise ModelError(f"got {len(rois)} ROIs for {n} images")
        if n == 0:
            return PredictionBatch(np.zeros(0, np.float32), np.zeros(0, bool), [], [])
        S, C, G = self.image_size, self.channels, self.geometry
        shapes = [tuple(np.asarray(im).shape[:2]) for im in images]
        xs = np.stack([to_model_input(im, S, C, G) for im in images])
        roi_list = [None] * n if rois is None else list(rois)
        rs = np.stack([roi_to_model(r, shapes[i], S, G) for i, r in enumerate(roi_list)])
        heats, scores = [], []
        for s in range(0, n, self.max_batch):
            h, sc = self._forward(xs[s:s + self.max_batch], rs[s:s + self.max_batch])
            heats.append(h.numpy())
            scores.append(sc.numpy())
        heat_all = np.concatenate(heats)
        score_all = np.concatenate(scores).astype(np.float32)
        masks, heatmaps = [], []
        for i in range(n):
            hm = geo.map_to_frame(heat_all[i], geo.fit(shapes[i], S, G))
            hm = np.clip(hm, 0.0, 1.0).astype(np.float32)
            if roi_list[i] is not None:
                r = np.asarray(roi_list[i])
                r = (r[:, :, 0] if r.ndim == 3 else r) != 0
                hm = hm * r
            else:
                r = None
            m = hm >= self.pixel_threshold
            if r is not None:
                m &= r
            masks.append(m)
            heatmaps.append(hm.astype(np.float32))
        return PredictionBatch(score_all, score_all >= self.threshold, masks, heatmaps)
