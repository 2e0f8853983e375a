"""Model configuration: every decision of ``grdnet-spec.md`` is a field here.

The config crosses process boundaries (it is stored in the artefact's ``model.json``), so it is a
pydantic model with ``extra="forbid"`` and an explicit ``schema_version``. Named profiles
(:data:`PROFILES`) give complete configs; :func:`make_config` builds one and applies overrides.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from model.errors import ConfigError

SCHEMA_VERSION = 1

NormKind = Literal["batch", "instance", "none"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True)


class GeneratorConfig(_Strict):
    """Residual encoder (E1) → decoder → encoder (E2); spec §2.1."""

    base: int = Field(64, ge=1, description="channels after the stem conv")
    max_channels: int = Field(512, ge=1, description="cap of the per-stage doubling")
    blocks_per_stage: int = Field(2, ge=1)
    bottom_size: int = Field(8, ge=1, description="spatial size where the encoder stops")
    bottleneck: Literal["crae", "drae"] = "crae"
    latent_channels: int = Field(32, ge=1, description="CRAE: z is latent_channels×8×8")
    dense_size: int = Field(2048, ge=1, description="DRAE: z is a vector of this size")
    decoder_blocks_per_stage: int = Field(1, ge=0, description="residual blocks after each up-step")
    out_kernel: Literal[1, 3] = Field(3, description="kernel of the decoder's output conv")


class DiscriminatorConfig(_Strict):
    """Residual encoder with a feature output and a linear real/fake head; spec §2.2."""

    base: int = Field(64, ge=1)
    max_channels: int = Field(512, ge=1)
    blocks_per_stage: int = Field(2, ge=1)


class SegmenterConfig(_Strict):
    """DRAEM-style U-Net Δ on concat(image, reconstruction); spec §2.3."""

    widths: list[int] = Field(default_factory=lambda: [64, 128, 256, 512, 512, 512], min_length=2)
    stem_stride: Literal[1, 2] = Field(
        1, description="2 = run the U-Net at half resolution and upsample the logits (decision)")
    up_kernel: Literal[1, 3] = Field(3, description="kernel of the conv after each upsampling")
    merge_convs: Literal[1, 2] = Field(2, description="convs after each skip concatenation")
    out_kernel: Literal[1, 3] = Field(3, description="kernel of the 1-channel output conv")
    prior_prob: float | None = Field(
        0.01, gt=0.0, lt=1.0,
        description="initial M̂ everywhere (output bias, Lin et al. 2017 focal-loss init); None = 0")


class AnomalyConfig(_Strict):
    """Synthetic defects; spec §3."""

    probability: float = Field(0.75, ge=0.0, le=1.0)
    perlin_min_exp: int = Field(
        2, ge=0,
        description="coarsest Perlin field 2^a cells (spec §3: 0). 2 = no blob wider than about a "
                    "quarter of the image: real defects are small, and half-image blobs teach little")
    perlin_max_exp: int = Field(5, ge=0)
    perlin_rotation_deg: float = 90.0
    perlin_threshold: float = 0.5
    min_area: int = Field(25, ge=0, description="redraw the Perlin mask below this many pixels")
    max_redraws: int = Field(20, ge=1)
    texture_dir: str | None = Field(None, description="folder of texture images (e.g. DTD)")
    self_texture_prob: float = Field(0.5, ge=0.0, le=1.0, description="else Perlin-shaped noise")
    n_photometric: int = Field(3, ge=0)
    beta_min: float = Field(0.5, ge=0.0, le=1.0)
    beta_max: float = Field(1.0, ge=0.0, le=1.0)
    noise_sigma_max: float = Field(0.05, ge=0.0)
    geo_rotation_deg: float = Field(
        0.0, ge=0.0,
        description="random rotation ±deg of good parts (spec §3: 90). Off by default: a rotated or "
                    "flipped part is itself a defect for many products; presets switch it on")
    hflip: bool = False
    vflip: bool = False
    roi_probability: float = Field(
        0.5, ge=0.0, le=1.0,
        description="share of defects confined to the ROI (dilated by roi_margin); 0 = spec §3 "
                    "(anywhere); no effect without an ROI. "
                    "For a narrow ROI (the vials' meniscus band) most unconfined defects fall outside it "
                    "and teach only 'ignore'; confining some gives the in-ROI positives")
    roi_margin: int = Field(2, ge=0, description="pixels the ROI is dilated by for confined defects")


class LossConfig(_Strict):
    """Loss weights and forms; spec §4."""

    w_adv: float = 1.0
    w_con: float = 50.0
    w_enc: float = 1.0
    w_l1: float = 1.0
    w_ssim: float = 1.0
    ssim_window: int = 11
    ssim_sigma: float = 1.5
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    roi_mode: Literal["target", "prediction"] = "target"


class TrainConfig(_Strict):
    """Optimisation defaults; spec §5."""

    lr: float = 1e-4
    lr_seg: float | None = Field(None, description="segmenter lr; None = lr")
    beta1: float = 0.5
    beta2: float = 0.999
    batch_size: int = Field(8, ge=1)
    epochs: int = Field(200, ge=1)
    steps: int | None = Field(None, ge=1, description="stop after this many steps (overrides epochs)")
    plateau_factor: float = math.exp(-0.1)
    plateau_patience: int = 3
    val_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    min_val_images: int = Field(6, ge=1)
    val_every_steps: int | None = Field(None, ge=1, description="None = once per epoch")
    seed: int = 0
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: bool = True


class ScoringConfig(_Strict):
    """Inference scoring and calibration; spec §6."""

    pool_kernel: int | None = Field(
        None, ge=1,
        description="η's mean-filter size (spec §6: 21 at 256 px). None = scale with the image: "
                    "the odd size nearest image_size × pool_fraction, at most min_defect_px")
    pool_fraction: float = Field(1 / 32, gt=0.0, le=1.0)
    min_defect_px: int | None = Field(
        None, ge=1, description="smallest defect that must be caught, in model pixels; caps the pool")
    target_false_reject: float = Field(0.005, ge=0.0, lt=1.0)
    pixel_false_positive: float = Field(0.001, ge=0.0, lt=1.0)
    pixel_floor: float = Field(0.1, ge=0.0, le=1.0, description="lowest allowed τ_px")
    threshold_method: Literal["empirical", "t_bound", "max"] = Field(
        "max", description="τ from the empirical quantile, a Student-t prediction bound, or the larger")


class InferenceConfig(_Strict):
    """Runtime and numeric mode of the Predictor."""

    backend: Literal["torch", "onnxruntime"] = Field(
        "torch", description="onnxruntime: the fp32 ONNX export (grdline export) on the CPU; "
        "Predictor(backend=...) overrides it")
    cpu_precision: Literal["auto", "fp32", "bf16"] = "auto"
    gpu_precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    channels_last: bool = True
    fuse_norm: bool = True
    bf16_max_score_diff: float = Field(
        0.01, ge=0.0, description="auto uses bf16 only if validation η moves less than this")


class GRDConfig(_Strict):
    """A complete GRD-Net configuration (networks, defects, losses, training, scoring)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    profile: str = "custom"
    image_size: int = Field(256, ge=8)
    #: How a frame of any shape maps into the square input (:mod:`model.geometry`): ``letterbox``
    #: keeps the aspect ratio (padding never scores); ``squash`` resizes each side to image_size.
    #: The default stays ``squash`` (what every artefact so far was trained with) until letterbox
    #: is measured over products and seeds: at the same size letterbox gives the shorter side fewer
    #: pixels, which may cost more than the aspect ratio gains on long, narrow parts.
    geometry: Literal["letterbox", "squash"] = "squash"
    channels: Literal[1, 3] = 3
    norm: NormKind = "batch"
    leaky_slope: float = 0.2
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = Field(default_factory=DiscriminatorConfig)
    segmenter: SegmenterConfig = Field(default_factory=SegmenterConfig)
    anomaly: AnomalyConfig = Field(default_factory=AnomalyConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)

    @model_validator(mode="after")
    def _check(self) -> GRDConfig:
        b = self.generator.bottom_size
        ratio = self.image_size / b
        if ratio < 2 or ratio != int(ratio) or (int(ratio) & (int(ratio) - 1)) != 0:
            raise ConfigError(
                f"image_size {self.image_size} must be bottom_size {b} times a power of two >= 2"
            )
        depth = len(self.segmenter.widths) - 1 + (self.segmenter.stem_stride == 2)
        if self.image_size % (2**depth) != 0:
            raise ConfigError(
                f"image_size {self.image_size} is not divisible by 2^{depth} (segmenter depth)"
            )
        if self.anomaly.beta_min > self.anomaly.beta_max:
            raise ConfigError("anomaly.beta_min must be <= anomaly.beta_max")
        if self.anomaly.perlin_min_exp > self.anomaly.perlin_max_exp:
            raise ConfigError("anomaly.perlin_min_exp must be <= anomaly.perlin_max_exp")
        if self.scoring.pool_kernel is not None and self.scoring.pool_kernel % 2 == 0:
            raise ConfigError("scoring.pool_kernel must be odd")
        return self

    @property
    def pool_kernel(self) -> int:
        """The mean-filter size of η: ``scoring.pool_kernel``, else scaled with the image size.

        A fixed 21 px (DRAEM's protocol at 256 px) is a third of a 64-px image and dilutes a small
        defect below the noise of good parts (image AUROC 0.68 against 1.0 with 3–9 px on the same
        maps); 1/32 of the image gives 3 px at 64, 5 at 128 and 9 at 256.
        """
        sc = self.scoring
        if sc.pool_kernel is not None:
            return sc.pool_kernel
        k = max(1, int(round(self.image_size * sc.pool_fraction)))
        k += 1 - k % 2  # odd, so the filter is centred
        if sc.min_defect_px is not None:
            k = min(k, sc.min_defect_px - (1 - sc.min_defect_px % 2))
        return k

    @property
    def n_stages(self) -> int:
        """Number of stride-2 encoder stages: log2(image_size / bottom_size)."""
        return int(round(math.log2(self.image_size / self.generator.bottom_size)))


def _paper() -> dict[str, Any]:
    return {
        "profile": "paper",
        "image_size": 256,
        "channels": 3,
        "generator": {"base": 64, "max_channels": 512},
        "discriminator": {"base": 64, "max_channels": 512},
        "segmenter": {"widths": [64, 128, 256, 512, 512, 512]},
    }


def _line() -> dict[str, Any]:
    # Light profile: 128 px, narrow full-resolution layers, a 3-level U-Net run at half resolution
    # with 1×1 up/out convs. Sized so a 2-core CPU serves tens of frames per second
    # (benchmarks/bench_model.py); wider low-resolution layers run closer to the conv peak.
    return {
        "profile": "line",
        "image_size": 128,
        "channels": 3,
        "generator": {"base": 16, "max_channels": 128, "blocks_per_stage": 1,
                      "decoder_blocks_per_stage": 0, "out_kernel": 1},
        "discriminator": {"base": 16, "max_channels": 128, "blocks_per_stage": 1},
        "segmenter": {"widths": [32, 64, 128], "stem_stride": 2, "up_kernel": 1,
                      "merge_convs": 1, "out_kernel": 1},
        "train": {"lr": 2e-4, "lr_seg": 1e-3},
    }


PROFILES: dict[str, Any] = {"paper": _paper, "line": _line}

#: What a product needs beyond the profile (``grdline train --preset NAME``; ``--set`` still wins).
#: ``vials``: upright strips, so a few degrees of rotation and horizontal flips only (spec §3:
#: "flips where the product allows"); most synthetic defects inside the narrow meniscus band, else
#: the segmenter mostly learns to ignore defects. (No Perlin field coarser than 4×4 and a pool
#: scaled with the image, 5 px at 128, were part of this preset and are now the defaults.)
#: Chosen on the vials validation split; see docs/evaluations/README.md for which split chose what.
PRESETS: dict[str, dict[str, Any]] = {
    "vials": {
        "anomaly": {"roi_probability": 0.7, "geo_rotation_deg": 5.0, "hflip": True},
    },
}


def _deep_update(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_update(out[k], v)
        else:
            out[k] = v
    return out


def make_config(profile: str = "line", preset: str | None = None, **overrides: Any) -> GRDConfig:
    """Return the named profile's config with a product ``preset`` (:data:`PRESETS`), then
    ``overrides`` (nested dicts merge) applied.

    >>> make_config("line", image_size=64, channels=1, train={"batch_size": 4}).image_size
    64
    """
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    data = _deep_update(PROFILES[profile](), PRESETS[preset] if preset else {})
    data = _deep_update(data, overrides)
    try:
        return GRDConfig.model_validate(data)
    except ConfigError:
        raise
    except ValueError as exc:  # pydantic ValidationError
        raise ConfigError(f"invalid config for profile {profile!r}: {exc}") from exc
